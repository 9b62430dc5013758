//! The per-request cost of request ids, trace context, client IP
//! resolution, the access log and the metrics together, against the same
//! inner service alone (issue #3: under 1 µs with logging sent to a sink).
//!
//! The inner service answers at once, so the difference between the rows
//! is what the layers add. Access-log lines are formatted as JSON by
//! `tollgate::observe::JsonLines` and written to `io::sink`.
//!
//! `cargo bench -p tollgate-benches --bench observe`
//!
//! Each iteration is one call of [`iteration`], which is never inlined, so
//! callgrind gives the instructions of exactly one request: its inclusive
//! cost divided by its number of calls (see docs/benchmarks.md).

#![expect(
    clippy::expect_used,
    reason = "a bench that cannot set up should stop loudly"
)]

use std::{convert::Infallible, fmt::Debug, net::SocketAddr};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::{Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use tollgate::{
    core::{ConnectionInfo, RouteName},
    observe::{JsonLines, Metrics, ObserveLayer},
    request_id::{ClientIpLayer, RequestIdLayer, TraceparentLayer},
};
use tollgate_benches::SMALL_BODY;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use tracing_subscriber::layer::SubscriberExt;

/// The request head's text, as hyper holds it: one shared buffer that the
/// path and the header values are slices of, so cloning one (as the access
/// log's record does) is a reference count, not a copy. Built from `&str`
/// instead, each first clone would copy the value into a new allocation,
/// which a request served by hyper never does.
const HEAD: &str = "/users/12345bench.localcriterion203.0.113.9";

/// A slice of `head`, as a header value.
fn value(head: &Bytes, range: std::ops::Range<usize>) -> http::HeaderValue {
    http::HeaderValue::from_maybe_shared(head.slice(range)).expect("header value")
}

/// With `--features mimalloc`, the allocator the gateway binaries use.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[inline(never)]
fn request(head: &Bytes) -> Request<Full<Bytes>> {
    let uri = http::Uri::from_maybe_shared(head.slice(0..12)).expect("uri");
    let mut req = Request::get(uri)
        .header("host", value(head, 12..23))
        .header("user-agent", value(head, 23..32))
        .header("x-forwarded-for", value(head, 32..43))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let peer: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
    req.extensions_mut().insert(ConnectionInfo::new(peer));
    req.extensions_mut().insert(RouteName::new("users"));
    req
}

/// One request through `svc`, its response body collected. Every layer
/// here answers on the first poll, so the future is polled once, without
/// a waker to wake (inside the bench's runtime all the same).
#[inline(never)]
fn iteration<S, B>(svc: &S, head: &Bytes) -> Bytes
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
    S::Error: Debug,
    B: Body<Data = Bytes>,
    B::Error: Debug,
{
    svc.clone()
        .oneshot(request(head))
        .then(|res| res.expect("response").into_body().collect())
        .now_or_never()
        .expect("answered at once")
        .expect("body")
        .to_bytes()
}

/// Answers as an upstream does: a body and its `Content-Type` (so the
/// response's header map exists before a layer adds to it, as it does for
/// a proxied response).
async fn inner(_req: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut res = Response::new(Full::new(Bytes::from_static(SMALL_BODY)));
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(res)
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

    // Shared from its first slice on, as hyper's read buffer is.
    let head = Bytes::from(HEAD.as_bytes().to_vec());
    assert_eq!(request(&head).uri().path(), "/users/12345");
    let mut group = c.benchmark_group("observe");
    let bare = service_fn(inner);
    group.bench_function("bare", |b| {
        b.to_async(&rt).iter(|| async { iteration(&bare, &head) });
    });

    // A row: `layers` (outermost first) over the inner service.
    macro_rules! row {
        ($name:literal, $($layer:expr),+ $(,)?) => {{
            let svc = ServiceBuilder::new()
                $(.layer($layer))+
                .service(service_fn(inner));
            group.bench_function($name, |b| {
                b.to_async(&rt).iter(|| async { iteration(&svc, &head) });
            });
        }};
    }
    row!(
        "request_id_trace_client_ip_log_metrics",
        RequestIdLayer::x_request_id(),
        TraceparentLayer::new(),
        ClientIpLayer::peer_only(),
        ObserveLayer::with_metrics(Metrics::new()),
    );
    // Exactly the combination issue #3 names: request id, access log and
    // metrics, without trace context and client IP.
    row!(
        "request_id_log_metrics",
        RequestIdLayer::x_request_id(),
        ObserveLayer::with_metrics(Metrics::new()),
    );
    // The same without the OpenTelemetry server span, which this build
    // opens (the `otel` feature is on) even though no OpenTelemetry layer
    // is installed to export it.
    row!(
        "request_id_log_metrics_no_span",
        RequestIdLayer::x_request_id(),
        ObserveLayer::builder()
            .metrics(Metrics::new())
            .server_spans(false)
            .build(),
    );
    // One layer at a time, to see where the cost is.
    row!("request_id_only", RequestIdLayer::x_request_id());
    row!("trace_only", TraceparentLayer::new());
    row!("client_ip_only", ClientIpLayer::peer_only());
    row!("observe_only", ObserveLayer::with_metrics(Metrics::new()));
    row!("access_log_only", ObserveLayer::access_log_only());
    group.finish();
}

criterion_group!(benches, observe);
criterion_main!(benches);
