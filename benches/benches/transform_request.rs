//! Request transforms (issue #6): five header rules (set from a template,
//! add, remove, rename, set a literal) through the whole layer around an
//! inner service that answers at once (target under 300 ns), and a JSON
//! edit of a 1 KiB request body.
//!
//! `cargo bench -p tollgate-benches --bench transform_request`
//!
//! `no_rules` is the layer with an empty rule set: its fixed cost, which
//! `header_rules_5` includes.
//!
//! Each iteration of `bare`, `no_rules` and `header_rules_5` is one call of
//! [`iteration`], which is never inlined, so callgrind gives the
//! instructions of exactly one request: its inclusive cost divided by its
//! number of calls (see docs/benchmarks.md).

#![expect(
    clippy::expect_used,
    reason = "a bench that cannot set up should stop loudly"
)]

use std::{convert::Infallible, hint::black_box};

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use serde_json::json;
use tollgate::core::Identity;
use tollgate_transform::{RequestBody, RequestRules, RequestTransformLayer};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

fn header_rules() -> RequestRules {
    RequestRules::builder()
        .set_header("x-user-id", "{identity.subject}")
        .add_header("x-gateway", "tollgate")
        .remove_header("cookie")
        .rename_header("x-old", "x-new")
        .set_header("x-env", "prod")
        .build()
        .expect("rules")
}

#[inline(never)]
fn header_request() -> Request<Full<Bytes>> {
    let mut req = Request::get("/api/users?page=2")
        .header("cookie", "session=abc")
        .header("x-old", "value")
        .header("accept", "application/json")
        .body(Full::default())
        .expect("request");
    req.extensions_mut().insert(Identity::subject("user-123"));
    req
}

fn json_body() -> Bytes {
    let items: Vec<_> = (0..12)
        .map(|i| json!({"id": i, "name": format!("item-{i}"), "qty": i * 3}))
        .collect();
    let mut doc = json!({
        "user": {"name": "Ann", "password": "s3cret", "mail": "ann@example.com"},
        "debug": {"trace": true},
        "items": items,
    });
    let len = serde_json::to_vec(&doc).expect("json").len();
    doc["pad"] = "x".repeat(1024usize.saturating_sub(len + 9)).into();
    Bytes::from(serde_json::to_vec(&doc).expect("json"))
}

/// One request through `svc`, built here as every header row sends it.
/// Every service here answers on the first poll, so the future is polled
/// once (inside the bench's runtime all the same).
#[inline(never)]
fn iteration<S, R>(svc: &S) -> R
where
    S: Service<Request<Full<Bytes>>, Response = R, Error = Infallible> + Clone,
{
    let res = svc
        .clone()
        .oneshot(header_request())
        .now_or_never()
        .expect("answered at once");
    black_box(res.expect("response"))
}

/// One request through `svc`.
async fn call<S, B, R>(mut svc: S, req: Request<B>) -> R
where
    S: Service<Request<B>, Response = R, Error = Infallible>,
{
    let res = svc.ready().await.expect("ready").call(req).await;
    black_box(res.expect("response"))
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("transform_request");

    // The same inner service without the layer: what `header_rules_5`
    // adds is the difference between the two rows.
    let bare = service_fn(|req: Request<Full<Bytes>>| async move {
        Ok::<_, Infallible>(Response::new(req.headers().len()))
    });
    group.bench_function("bare", |b| {
        b.to_async(&rt).iter(|| async { iteration(&bare) });
    });

    let svc = ServiceBuilder::new()
        .layer(RequestTransformLayer::new(header_rules()))
        .service(service_fn(
            |req: Request<RequestBody<Full<Bytes>>>| async move {
                Ok::<_, Infallible>(Response::new(req.headers().len()))
            },
        ));
    group.bench_function("header_rules_5", |b| {
        b.to_async(&rt).iter(|| async { iteration(&svc) });
    });

    let empty = RequestRules::builder().build().expect("rules");
    let no_rules = ServiceBuilder::new()
        .layer(RequestTransformLayer::new(empty))
        .service(service_fn(
            |req: Request<RequestBody<Full<Bytes>>>| async move {
                Ok::<_, Infallible>(Response::new(req.headers().len()))
            },
        ));
    group.bench_function("no_rules", |b| {
        b.to_async(&rt).iter(|| async { iteration(&no_rules) });
    });

    let body = json_body();
    assert!((1000..=1024).contains(&body.len()), "{}", body.len());
    let json = RequestRules::builder()
        .json_remove("/user/password")
        .json_rename("/user/mail", "/user/email")
        .json_set("/meta/caller", "{identity.subject}")
        .json_remove("/debug")
        .build()
        .expect("rules");
    let svc = ServiceBuilder::new()
        .layer(RequestTransformLayer::new(json))
        .service(service_fn(
            |req: Request<RequestBody<Full<Bytes>>>| async move {
                let body = req.into_body().collect().await.map(|b| b.to_bytes().len());
                Ok::<_, Infallible>(Response::new(body.unwrap_or_default()))
            },
        ));
    group.throughput(criterion::Throughput::Bytes(body.len() as u64));
    group.bench_function("json_edit_1kib", |b| {
        b.to_async(&rt).iter_batched(
            || {
                let mut req = Request::post("/users")
                    .header("content-type", "application/json")
                    .header("content-length", body.len())
                    .body(Full::new(body.clone()))
                    .expect("request");
                req.extensions_mut().insert(Identity::subject("user-123"));
                req
            },
            |req| call(svc.clone(), req),
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
