//! The pass-through cost of a route whose transform rules never touch the
//! body (issue #6), measured where a user pays it: a gateway route that
//! forwards to a real upstream on 127.0.0.1 through the per-worker pool,
//! with and without the rules, the response read to its end.
//!
//! - `small/*`: the harness backend's 194-byte JSON answer;
//! - `64KiB/*`: its 64 KiB `application/octet-stream` answer, which body
//!   rules never read (not JSON).
//!
//! Each size runs its `without_layer` and `header_rules` rows twice, in
//! the order without, with, without, with: the two rows of a pair are
//! the same work, so their difference is this run's noise (a row's place
//! in the run moves it by up to 2 µs), against which the pairs are
//! compared. `transform_response`'s
//! `pass_through` rows measure the same layer alone, to the instruction.
//!
//! `cargo bench -p tollgate-benches --bench transform_route`

#![expect(
    clippy::expect_used,
    reason = "a bench that cannot set up should stop loudly"
)]

use std::{net::SocketAddr, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::BodyExt;
use tollgate::{Route, proxy::PoolKind};
use tollgate_benches::{get, spawn_backend};
use tollgate_transform::{
    RequestRules, RequestTransformLayer, ResponseRules, ResponseTransformLayer,
};
use tower::ServiceExt;

/// What a route does to the messages it forwards.
#[derive(Clone, Copy)]
enum Rules {
    /// No transform layer.
    None,
    /// Request and response header rules and a status map: nothing reads
    /// the body.
    Headers,
    /// Response body rules (a deny-list) on a route whose upstream
    /// answers a body they never read, plus the header rules.
    BodyNotRead,
}

fn gateway(backend: SocketAddr, rules: Rules) -> axum::Router {
    let mut route = Route::prefix("/").name("all").to("backend");
    if !matches!(rules, Rules::None) {
        let request = RequestRules::builder()
            .set_header("x-gateway", "tollgate")
            .remove_header("cookie")
            .build()
            .expect("request rules");
        let mut response = ResponseRules::builder()
            .remove_server_headers()
            .set_header("cache-control", "no-store")
            .map_status(404, 410);
        if matches!(rules, Rules::BodyNotRead) {
            response = response.deny("/internal_id").deny("/items/*/cost_price");
        }
        route = route
            .transform_request(RequestTransformLayer::new(request))
            .transform_response(ResponseTransformLayer::new(
                response.build().expect("response rules"),
            ));
    }
    tollgate_benches::gateway(backend, PoolKind::Worker, route)
}

fn route(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let backend = rt.block_on(spawn_backend()).expect("backend");
    let mut group = c.benchmark_group("transform_route");
    group.measurement_time(Duration::from_secs(5));

    let without = ("without_layer", Rules::None);
    let again = ("without_layer_again", Rules::None);
    let headers = ("header_rules", Rules::Headers);
    let headers_again = ("header_rules_again", Rules::Headers);
    let body_not_read = ("body_rules_not_read", Rules::BodyNotRead);
    for (size, path, rows) in [
        (
            "small",
            "/users/12345",
            &[without, headers, again, headers_again][..],
        ),
        (
            "64KiB",
            "/big",
            &[without, headers, again, headers_again, body_not_read][..],
        ),
    ] {
        for &(name, rules) in rows {
            let router = rt.block_on(async { gateway(backend, rules) });
            // The route answers, and its rules ran, before it is timed.
            let res = rt
                .block_on(router.clone().oneshot(get(path)))
                .expect("route");
            assert!(res.status().is_success(), "{size}/{name}: {}", res.status());
            assert_eq!(
                res.headers().contains_key("cache-control"),
                !matches!(rules, Rules::None),
                "{size}/{name}",
            );
            group.bench_function(format!("{size}/{name}"), |b| {
                b.to_async(&rt).iter(|| async {
                    let res = router.clone().oneshot(get(path)).await.expect("route");
                    res.into_body().collect().await.expect("body").to_bytes()
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, route);
criterion_main!(benches);
