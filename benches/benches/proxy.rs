//! Criterion benches of the proxy path, in one process on one thread:
//!
//! - `direct`: hyper-util's pooled client straight to the upstream (the floor);
//! - `gateway`: the same request through the gateway's router (route match,
//!   header rewriting, hyper-util's pooled client);
//! - `gateway_worker_pool`: the same with the per-worker pool;
//! - `upstream_service`: the `Upstream` service alone, without the router;
//! - `not_found_50_routes`: route matching over 50 routes that all miss,
//!   plus rendering the 404 problem (no I/O).
//!
//! `cargo bench -p tollgate-benches --bench proxy`

#![expect(
    clippy::expect_used,
    reason = "a bench that cannot set up should stop loudly"
)]

use std::{net::SocketAddr, time::Duration};

use axum::body::Body;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tollgate::{Gateway, Route, Upstream, proxy::PoolKind};
use tollgate_benches::{get, spawn_backend};
use tower::ServiceExt;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn gateway(backend: SocketAddr, pool: PoolKind) -> axum::Router {
    tollgate_benches::gateway(backend, pool, Route::prefix("/").name("all").to("backend"))
}

fn proxy_path(c: &mut Criterion) {
    let rt = runtime();
    let backend = rt.block_on(spawn_backend()).expect("backend");
    let mut group = c.benchmark_group("proxy");
    group.measurement_time(Duration::from_secs(5));

    let direct = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let url: http::Uri = format!("http://{backend}/users/12345")
        .parse()
        .expect("uri");
    group.bench_function("direct", |b| {
        b.to_async(&rt).iter(|| async {
            let res = direct.get(url.clone()).await.expect("direct");
            res.into_body().collect().await.expect("body").to_bytes()
        });
    });

    for (name, pool) in [
        ("gateway", PoolKind::HyperUtil),
        ("gateway_worker_pool", PoolKind::Worker),
    ] {
        let router = rt.block_on(async { gateway(backend, pool) });
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let res = router
                    .clone()
                    .oneshot(get("/users/12345"))
                    .await
                    .expect("gateway");
                res.into_body().collect().await.expect("body").to_bytes()
            });
        });
    }

    let upstream = rt.block_on(async {
        Upstream::builder("backend")
            .endpoint(format!("http://{backend}"))
            .build::<Body>()
            .expect("upstream")
    });
    group.bench_function("upstream_service", |b| {
        b.to_async(&rt).iter(|| async {
            let res = upstream
                .clone()
                .oneshot(get("/users/12345"))
                .await
                .expect("upstream");
            res.into_body().collect().await.expect("body").to_bytes()
        });
    });
    let no_timeout = rt.block_on(async {
        Upstream::builder("backend")
            .endpoint(format!("http://{backend}"))
            .response_timeout(None)
            .build::<Body>()
            .expect("upstream")
    });
    group.bench_function("upstream_service_no_timeout", |b| {
        b.to_async(&rt).iter(|| async {
            let res = no_timeout
                .clone()
                .oneshot(get("/users/12345"))
                .await
                .expect("upstream");
            res.into_body().collect().await.expect("body").to_bytes()
        });
    });
    group.finish();
}

fn routing(c: &mut Criterion) {
    let rt = runtime();
    let router = rt.block_on(async {
        let mut builder = Gateway::builder()
            .upstream(Upstream::builder("backend").endpoint("http://127.0.0.1:9"));
        for i in 0..50 {
            builder = builder.route(Route::prefix(format!("/api/service-{i}")).to("backend"));
        }
        builder.build().expect("gateway")
    });
    c.bench_function("routing/not_found_50_routes", |b| {
        b.to_async(&rt).iter(|| async {
            let res = router
                .clone()
                .oneshot(get("/api/nowhere/42"))
                .await
                .expect("router");
            assert_eq!(res.status(), 404);
        });
    });
}

criterion_group!(benches, proxy_path, routing);
criterion_main!(benches);
