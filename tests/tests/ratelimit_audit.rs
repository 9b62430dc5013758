//! A rate-limit rejection's audit event, captured on the test's thread
//! (`observe_support::Capture`), in a test binary of its own, apart from
//! the Redis tests of `ratelimit.rs`.

use std::{
    convert::Infallible,
    net::{IpAddr, Ipv4Addr},
};

use http::{Request, Response};
use tollgate::core::{ClientIp, Identity, RequestId, RouteName};
use tollgate_ratelimit::{Plan, Quota, RateLimitLayer};
use tollgate_tests::observe_support::Capture;
use tower::{ServiceBuilder, ServiceExt};

async fn ok(_: Request<()>) -> Result<Response<String>, Infallible> {
    Ok(Response::new("ok".into()))
}

#[tokio::test]
async fn a_rejection_is_audited_with_its_request_subject_route_and_window() {
    let (capture, _guard) = Capture::install();
    let limit = RateLimitLayer::builder()
        .plan(Plan::new("free").quota(Quota::per_minute(100).burst(1)))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new().layer(limit).service_fn(ok);
    let req = |id: &'static str| {
        let mut req = Request::get("/api").body(()).unwrap();
        let ext = req.extensions_mut();
        ext.insert(ClientIp(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7))));
        ext.insert(Identity::subject("alice"));
        ext.insert(RequestId::from_static(id));
        ext.insert(RouteName::new("api"));
        req
    };
    assert_eq!(svc.clone().oneshot(req("r-1")).await.unwrap().status(), 200);
    assert_eq!(svc.clone().oneshot(req("r-2")).await.unwrap().status(), 429);

    let events = capture.events(tollgate::core::audit::TARGET);
    assert_eq!(events.len(), 1, "only the rejection: {events:?}");
    let event = &events[0];
    assert_eq!(event.get("outcome"), Some("rate-limited"));
    assert_eq!(event.get("reason"), Some("free-minute"));
    assert_eq!(event.get("subject"), Some("alice"));
    assert_eq!(event.get("route"), Some("api"));
    assert_eq!(event.get("request_id"), Some("r-2"));
}
