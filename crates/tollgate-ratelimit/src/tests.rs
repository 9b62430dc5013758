//! The layer end to end in one process, time from governor's fake clock.

use std::{
    convert::Infallible,
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use axum::Router;
use governor::clock::FakeRelativeClock;
use http::{HeaderName, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tollgate_core::{ClientIp, Identity, RouteName, body::ResponseBody, problem};
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

use crate::*;

type Res = Response<ResponseBody<String>>;

async fn ok(_: Request<()>) -> Result<Response<String>, Infallible> {
    Ok(Response::new("ok".into()))
}

fn fake(builder: RateLimitBuilder) -> (RateLimitLayer, FakeRelativeClock) {
    let clock = FakeRelativeClock::default();
    let layer = builder
        .memory(MemoryOptions::new().fake_clock(clock.clone()))
        .build()
        .unwrap();
    (layer, clock)
}

fn ip(last: u8) -> ClientIp {
    ClientIp(IpAddr::V4(Ipv4Addr::new(198, 51, 100, last)))
}

fn from(ip: ClientIp) -> Request<()> {
    let mut req = Request::get("/things").body(()).unwrap();
    req.extensions_mut().insert(ip);
    req
}

fn as_(identity: Identity) -> Request<()> {
    let mut req = from(ip(1));
    req.extensions_mut().insert(identity);
    req
}

async fn send<S>(svc: &mut S, req: Request<()>) -> Res
where
    S: Service<Request<()>, Response = Res, Error = Infallible>,
{
    svc.ready().await.unwrap().call(req).await.unwrap()
}

fn service(
    layer: &RateLimitLayer,
) -> impl Service<Request<()>, Response = Res, Error = Infallible> + Clone {
    ServiceBuilder::new().layer(layer.clone()).service_fn(ok)
}

/// Sends `n` requests and returns how many were admitted.
async fn admitted<S>(svc: &mut S, n: usize, req: impl Fn() -> Request<()>) -> usize
where
    S: Service<Request<()>, Response = Res, Error = Infallible>,
{
    let mut count = 0;
    for _ in 0..n {
        if send(svc, req()).await.status() == StatusCode::OK {
            count += 1;
        }
    }
    count
}

fn header(res: &Res, name: &str) -> String {
    res.headers()
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::test]
async fn burst_then_refill_at_the_sustained_rate() {
    let (layer, clock) = fake(RateLimitLayer::builder().quota(Quota::per_minute(100).burst(10)));
    let mut svc = service(&layer);
    assert_eq!(
        admitted(&mut svc, 15, || from(ip(1))).await,
        10,
        "the burst"
    );
    // One request every 600 ms.
    clock.advance(Duration::from_millis(599));
    assert_eq!(admitted(&mut svc, 1, || from(ip(1))).await, 0);
    clock.advance(Duration::from_millis(1));
    assert_eq!(admitted(&mut svc, 3, || from(ip(1))).await, 1);
    clock.advance(Duration::from_secs(6));
    assert_eq!(admitted(&mut svc, 20, || from(ip(1))).await, 10, "refilled");
    // Another key has its own bucket.
    assert_eq!(admitted(&mut svc, 20, || from(ip(2))).await, 10);
    let stats = layer.stats().snapshot();
    assert_eq!((stats.allowed, stats.rejected), (31, 28));
}

#[tokio::test]
async fn several_windows_apply_at_once() {
    let (layer, clock) = fake(
        RateLimitLayer::builder()
            .quota(Quota::per_second(2))
            .quota(Quota::per_minute(5)),
    );
    let mut svc = service(&layer);
    assert_eq!(admitted(&mut svc, 4, || from(ip(1))).await, 2, "per second");
    clock.advance(Duration::from_secs(1));
    assert_eq!(admitted(&mut svc, 4, || from(ip(1))).await, 2);
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        admitted(&mut svc, 1, || from(ip(1))).await,
        1,
        "per minute: 5 in all"
    );
    let res = send(&mut svc, from(ip(1))).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let problem = res.extensions().get::<tollgate_core::Problem>().unwrap();
    assert!(
        problem.detail_str().unwrap().contains("per 60 s"),
        "{problem}"
    );
    // The minute window refills one request every 12 s.
    clock.advance(Duration::from_secs(10));
    assert_eq!(admitted(&mut svc, 2, || from(ip(1))).await, 1);
}

#[tokio::test]
async fn rejection_is_a_429_problem_with_plan_headers_and_retry_after_rounded_up() {
    let (layer, _clock) = fake(
        RateLimitLayer::builder()
            .plan(Plan::new("free").quota(Quota::new(1, Duration::from_millis(2500))))
            .plan(Plan::new("standard").quota(Quota::per_minute(1000).burst(50))),
    );
    let mut svc = service(&layer);
    let free = || as_(Identity::consumer("acme").with_plan("free"));
    assert_eq!(send(&mut svc, free()).await.status(), StatusCode::OK);
    let res = send(&mut svc, free()).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert_eq!(res.headers()["retry-after"], "3", "2.5 s rounds up");
    assert_eq!(header(&res, "ratelimit-policy"), "\"free-2500ms\";q=1;w=3");
    assert_eq!(header(&res, "ratelimit"), "\"free-2500ms\";r=0;t=3");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["type"], problem::RATE_LIMITED);
    assert_eq!(json["status"], 429);
    assert_eq!(json["plan"], "free");
    assert_eq!(json["instance"], "/things");
    // Sub-second waits round up to 1, never 0.
    let standard = || as_(Identity::consumer("big").with_plan("standard"));
    assert_eq!(admitted(&mut svc, 50, standard).await, 50);
    let res = send(&mut svc, standard()).await;
    assert_eq!(res.headers()["retry-after"], "1");
    assert_eq!(header(&res, "ratelimit"), "\"standard-minute\";r=0;t=1");
}

#[tokio::test]
async fn headers_on_admitted_responses_only_when_configured() {
    let quota = Quota::per_minute(10).burst(3);
    let (quiet, _) = fake(RateLimitLayer::builder().quota(quota));
    let res = send(&mut service(&quiet), from(ip(1))).await;
    assert!(res.headers().get("ratelimit").is_none());
    let (loud, clock) = fake(
        RateLimitLayer::builder()
            .quota(quota)
            .headers_on_allowed(true),
    );
    let mut svc = service(&loud);
    let res = send(&mut svc, from(ip(1))).await;
    assert_eq!(
        header(&res, "ratelimit-policy"),
        "\"default-minute\";q=10;w=60"
    );
    assert_eq!(header(&res, "ratelimit"), "\"default-minute\";r=2;t=6");
    send(&mut svc, from(ip(1))).await;
    let res = send(&mut svc, from(ip(1))).await;
    assert_eq!(header(&res, "ratelimit"), "\"default-minute\";r=0;t=18");
    clock.advance(Duration::from_secs(18));
    let res = send(&mut svc, from(ip(1))).await;
    assert_eq!(header(&res, "ratelimit"), "\"default-minute\";r=2;t=6");
}

#[tokio::test]
async fn plans_come_from_the_identity_and_anonymous_gets_the_default_by_ip() {
    let (layer, _) = fake(
        RateLimitLayer::builder()
            .key(Key::consumer())
            .plan(Plan::new("anonymous").quota(Quota::per_minute(2)))
            .plan(Plan::new("free").quota(Quota::per_minute(3)))
            .plan(Plan::unlimited("partner"))
            .default_plan("anonymous"),
    );
    let mut svc = service(&layer);
    let partner = || as_(Identity::consumer("p").with_plan("partner"));
    assert_eq!(admitted(&mut svc, 100, partner).await, 100);
    let free = || as_(Identity::consumer("f").with_plan("free"));
    assert_eq!(admitted(&mut svc, 10, free).await, 3);
    // No identity: the default plan, keyed by the client IP (fallback).
    assert_eq!(admitted(&mut svc, 10, || from(ip(7))).await, 2);
    assert_eq!(admitted(&mut svc, 10, || from(ip(8))).await, 2);
    // An unknown plan name gets the default plan, keyed by its consumer.
    let odd = || as_(Identity::consumer("o").with_plan("gold"));
    assert_eq!(admitted(&mut svc, 10, odd).await, 2);
    let stats = layer.stats().snapshot();
    assert_eq!(stats.unlimited, 100);
    assert_eq!(stats.key_fallback, 20);
}

#[tokio::test]
async fn every_key_kind_separates_buckets() {
    let cases: Vec<(Key, Box<dyn Fn(u8) -> Request<()>>)> = vec![
        (
            Key::consumer(),
            Box::new(|n| as_(Identity::consumer(format!("c{n}")))),
        ),
        (
            Key::subject(),
            Box::new(|n| as_(Identity::subject(format!("s{n}")))),
        ),
        (Key::client_ip(), Box::new(|n| from(ip(n)))),
        (
            Key::header(HeaderName::from_static("x-api-key")),
            Box::new(|n| {
                let mut req = from(ip(1));
                req.headers_mut()
                    .insert("x-api-key", format!("k{n}").parse().unwrap());
                req
            }),
        ),
        (
            Key::route(),
            Box::new(|n| {
                let mut req = from(ip(1));
                req.extensions_mut().insert(RouteName::new(format!("r{n}")));
                req
            }),
        ),
        (
            Key::custom(|r| r.uri.query().map(str::to_owned)),
            Box::new(|n| {
                let mut req = from(ip(1));
                *req.uri_mut() = format!("/x?tenant={n}").parse().unwrap();
                req
            }),
        ),
        (
            Key::consumer().and(Key::route()),
            Box::new(|n| {
                let mut req = as_(Identity::consumer("same"));
                req.extensions_mut().insert(RouteName::new(format!("r{n}")));
                req
            }),
        ),
    ];
    for (i, (key, req)) in cases.into_iter().enumerate() {
        let (layer, _) = fake(
            RateLimitLayer::builder()
                .key(key)
                .on_missing_key(MissingKey::Reject)
                .quota(Quota::per_minute(2)),
        );
        let mut svc = service(&layer);
        assert_eq!(admitted(&mut svc, 5, || req(1)).await, 2, "case {i}");
        assert_eq!(
            admitted(&mut svc, 5, || req(2)).await,
            2,
            "case {i}: own bucket"
        );
    }
}

#[tokio::test]
async fn missing_or_huge_keys_are_rejected_or_fall_back_never_admitted_unchecked() {
    let key = || Key::header(HeaderName::from_static("x-api-key"));
    let huge = || {
        let mut req = from(ip(1));
        req.headers_mut()
            .insert("x-api-key", "k".repeat(MAX_KEY_LEN + 1).parse().unwrap());
        req
    };
    let (strict, _) = fake(
        RateLimitLayer::builder()
            .key(key())
            .on_missing_key(MissingKey::Reject)
            .quota(Quota::per_minute(2)),
    );
    let mut svc = service(&strict);
    for req in [huge(), from(ip(1))] {
        let res = send(&mut svc, req).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert_eq!(res.headers()["content-type"], "application/problem+json");
    }
    assert_eq!(strict.stats().snapshot().key_rejected, 2);
    // Fallback: huge keys are limited by the client IP, all together.
    let (lenient, _) = fake(
        RateLimitLayer::builder()
            .key(key())
            .quota(Quota::per_minute(2)),
    );
    let mut svc = service(&lenient);
    assert_eq!(admitted(&mut svc, 10, huge).await, 2);
    assert_eq!(
        lenient.memory_store().unwrap().len(),
        1,
        "one bucket, not ten"
    );
}

#[tokio::test]
async fn idle_keys_are_evicted() {
    let (layer, clock) = fake(RateLimitLayer::builder().quota(Quota::per_second(5)));
    let mut svc = service(&layer);
    for n in 0..200u8 {
        send(&mut svc, from(ip(n))).await;
    }
    let store = layer.memory_store().unwrap();
    assert_eq!(store.len(), 200);
    store.evict_idle();
    assert_eq!(store.len(), 200, "still recent");
    clock.advance(Duration::from_secs(1));
    send(&mut svc, from(ip(0))).await;
    send(&mut svc, from(ip(0))).await;
    store.evict_idle();
    assert_eq!(store.len(), 1, "only the active key is kept");
}

#[tokio::test(start_paused = true)]
async fn the_background_sweeper_evicts_without_being_asked() {
    let clock = FakeRelativeClock::default();
    let layer = RateLimitLayer::builder()
        .quota(Quota::per_second(5))
        .memory(
            MemoryOptions::new()
                .fake_clock(clock.clone())
                .evict_every(Duration::from_secs(10)),
        )
        .build()
        .unwrap();
    let mut svc = service(&layer);
    for n in 0..50u8 {
        send(&mut svc, from(ip(n))).await;
    }
    let store = layer.memory_store().unwrap().clone();
    assert_eq!(store.len(), 50);
    clock.advance(Duration::from_secs(5));
    for _ in 0..20 {
        tokio::time::advance(Duration::from_secs(1)).await;
        tokio::task::yield_now().await;
        if store.is_empty() {
            break;
        }
        // The sweep runs on the blocking pool: give it real time.
        tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(5)))
            .await
            .unwrap();
    }
    assert!(store.is_empty(), "{} keys left", store.len());
}

#[tokio::test]
async fn fits_axum_and_is_clone_send_sync() {
    fn assert_traits<T: Clone + Send + Sync + 'static>(_: &T) {}
    let layer = RateLimitLayer::per_key(Quota::per_second(1)).unwrap();
    assert_traits(&layer);
    let svc = ServiceBuilder::new().layer(layer.clone()).service_fn(ok);
    assert_traits(&svc);
    let concurrency = ConcurrencyLimitLayer::new(2).unwrap();
    let router: Router = Router::new()
        .route("/", axum::routing::get(|| async { "hi" }))
        .layer(layer)
        .layer(concurrency);
    let res = router.clone().oneshot(from_axum()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = router.oneshot(from_axum()).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
}

fn from_axum() -> Request<axum::body::Body> {
    let mut req = Request::get("/").body(axum::body::Body::empty()).unwrap();
    req.extensions_mut().insert(ip(3));
    req
}

#[tokio::test]
async fn concurrency_permit_is_held_until_the_body_ends() {
    let layer = ConcurrencyLimitLayer::new(1)
        .unwrap()
        .retry_after(Duration::from_millis(1500));
    let mut svc = layer.layer(service_fn(|_: Request<()>| async {
        Ok::<_, Infallible>(Response::new(http_body_util::Full::new(
            bytes::Bytes::from("x"),
        )))
    }));
    let first = call_unit(&mut svc).await;
    assert_eq!(layer.in_flight(), 1);
    let res = call_unit(&mut svc).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "2");
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let body = first.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"x");
    assert_eq!(layer.in_flight(), 0, "released at the end of the body");
    let res = call_unit(&mut svc).await;
    assert_eq!(res.status(), StatusCode::OK);
    drop(res);
    assert_eq!(layer.in_flight(), 0, "released when the body is dropped");
}

async fn call_unit<S, B>(svc: &mut S) -> Response<B>
where
    S: Service<Request<()>, Response = Response<B>, Error = Infallible>,
{
    svc.ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap()
}

#[tokio::test]
async fn never_pending_in_poll_ready() {
    let (layer, _) = fake(RateLimitLayer::builder().quota(Quota::per_minute(1)));
    let mut svc = service(&layer);
    for _ in 0..3 {
        let ready = futures_ready(&mut svc);
        assert!(
            ready,
            "poll_ready is the inner service's: always ready here"
        );
        svc.call(from(ip(1))).await.unwrap();
    }
}

fn futures_ready<S: Service<Request<()>>>(svc: &mut S) -> bool {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    svc.poll_ready(&mut cx).is_ready()
}

#[test]
fn config_errors_are_found_at_build() {
    let err = RateLimitLayer::builder().build().unwrap_err();
    assert_eq!(err.kind(), tollgate_core::ConfigErrorKind::Missing);
    let err = RateLimitLayer::builder()
        .quota(Quota::per_second(1))
        .default_plan("gold")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("gold"), "{err}");
    let err = RateLimitLayer::builder()
        .plan(Plan::new("a").quota(Quota::per_second(1)))
        .plan(Plan::new("a").quota(Quota::per_second(1)))
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), tollgate_core::ConfigErrorKind::Duplicate);
    assert!(
        RateLimitLayer::builder()
            .name("no spaces")
            .quota(Quota::per_second(1))
            .build()
            .is_err()
    );
    assert!(ConcurrencyLimitLayer::new(0).is_err());
}

#[cfg(feature = "serde")]
#[test]
fn config_deserialises_and_builds_like_the_builder() {
    let config: RateLimitConfig = serde_json::from_value(serde_json::json!({
        "name": "api",
        "key": [["consumer", "route"], ["client_ip"], [{"header": "x-api-key"}]],
        "on_missing_key": "reject",
        "plans": [
            {"name": "free", "quotas": [{"count": 100, "per": "minute", "burst": 10}, {"count": 1000, "per": "day"}]},
            {"name": "partner", "unlimited": true}
        ],
        "default_plan": "free",
        "headers_on_allowed": true,
        "on_store_error": {"local_fallback": {"instances": 3}},
        "evict_every_secs": 60
    }))
    .unwrap();
    assert_eq!(
        config.on_store_error,
        StoreFailure::LocalFallback { instances: 3 }
    );
    let layer = RateLimitLayer::try_from(&config).unwrap();
    assert_eq!(layer.name(), "api");
    let unknown =
        serde_json::from_value::<RateLimitConfig>(serde_json::json!({"plans": [], "burst": 1}));
    assert!(unknown.is_err(), "unknown fields are errors");
    let concurrency: ConcurrencyLimitConfig =
        serde_json::from_value(serde_json::json!({"max_in_flight": 8})).unwrap();
    assert!(ConcurrencyLimitLayer::try_from(&concurrency).is_ok());
}

#[cfg(all(feature = "serde", feature = "redis"))]
#[test]
fn redis_config_takes_a_url_or_cluster_nodes() {
    let build = |redis: serde_json::Value| {
        let config: RateLimitConfig = serde_json::from_value(serde_json::json!({
            "plans": [{"name": "free", "quotas": [{"count": 100, "per": "minute"}]}],
            "redis": redis,
        }))
        .unwrap();
        RateLimitLayer::try_from(&config)
    };
    assert!(build(serde_json::json!({"url": "redis://127.0.0.1:6379/"})).is_ok());
    let nodes = ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"];
    assert!(build(serde_json::json!({"cluster_nodes": nodes, "prefix": "gw"})).is_ok());
    let both = serde_json::json!({"url": "redis://127.0.0.1:6379/", "cluster_nodes": nodes});
    assert!(build(both).is_err(), "one or the other");
    assert!(build(serde_json::json!({})).is_err(), "neither");
    assert!(build(serde_json::json!({"cluster_nodes": ["nope"]})).is_err());
}
