//! The per-request cost of request ids, trace context, client IP
//! resolution, the access log and the metrics together, against the same
//! inner service alone (issue #3: under 1 µs with logging sent to a sink).
//!
//! The inner service answers at once, so the difference between the rows
//! is what the layers add. Access-log lines are formatted as JSON by
//! `tollgate::observe::JsonLines` and written to `io::sink`.
//!
//! `cargo bench -p tollgate-benches --bench observe`

#![expect(
    clippy::expect_used,
    reason = "a bench that cannot set up should stop loudly"
)]

use std::{convert::Infallible, net::SocketAddr};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tollgate::{
    core::{ConnectionInfo, RouteName},
    observe::{JsonLines, Metrics, ObserveLayer},
    request_id::{ClientIpLayer, RequestIdLayer, TraceparentLayer},
};
use tollgate_benches::SMALL_BODY;
use tower::{ServiceBuilder, ServiceExt, service_fn};
use tracing_subscriber::layer::SubscriberExt;

fn request() -> Request<Full<Bytes>> {
    let mut req = Request::get("/users/12345")
        .header("host", "bench.local")
        .header("user-agent", "criterion")
        .header("x-forwarded-for", "203.0.113.9")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let peer: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
    req.extensions_mut().insert(ConnectionInfo::new(peer));
    req.extensions_mut().insert(RouteName::new("users"));
    req
}

async fn inner(_req: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(SMALL_BODY))))
}

fn observe(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Access-log lines formatted by tollgate's JSON-lines layer and written
    // to a sink.
    let subscriber = tracing_subscriber::registry().with(JsonLines::new(std::io::sink));
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut group = c.benchmark_group("observe");
    let bare = service_fn(inner);
    group.bench_function("bare", |b| {
        b.to_async(&rt).iter(|| async {
            let res = bare.oneshot(request()).await.expect("response");
            res.into_body().collect().await.expect("body").to_bytes()
        });
    });

    let stacked = ServiceBuilder::new()
        .layer(RequestIdLayer::x_request_id())
        .layer(TraceparentLayer::new())
        .layer(ClientIpLayer::peer_only())
        .layer(ObserveLayer::with_metrics(Metrics::new()))
        .service(service_fn(inner));
    group.bench_function("request_id_trace_client_ip_log_metrics", |b| {
        b.to_async(&rt).iter(|| async {
            let res = stacked.clone().oneshot(request()).await.expect("response");
            res.into_body().collect().await.expect("body").to_bytes()
        });
    });
    // One layer at a time, to see where the cost is.
    macro_rules! alone {
        ($name:literal, $layer:expr) => {{
            let svc = ServiceBuilder::new()
                .layer($layer)
                .service(service_fn(inner));
            group.bench_function($name, |b| {
                b.to_async(&rt).iter(|| async {
                    let res = svc.clone().oneshot(request()).await.expect("response");
                    res.into_body().collect().await.expect("body").to_bytes()
                });
            });
        }};
    }
    alone!("request_id_only", RequestIdLayer::x_request_id());
    alone!("trace_only", TraceparentLayer::new());
    alone!("client_ip_only", ClientIpLayer::peer_only());
    alone!("observe_only", ObserveLayer::with_metrics(Metrics::new()));
    alone!("access_log_only", ObserveLayer::access_log_only());
    group.finish();
}

criterion_group!(benches, observe);
criterion_main!(benches);
