//! The data plane end to end on hyper-util's pooled client, the default
//! pool. The cases are shared with `proxy_worker_pool.rs`.

use tollgate::proxy::PoolKind;

const POOL: PoolKind = PoolKind::HyperUtil;

#[path = "common/proxy_cases.rs"]
mod cases;

/// A retry sends an empty body of the body type's `Default`, which
/// `build_with` does not ask for: retries there are refused at build, not
/// silently ignored.
#[test]
fn build_with_refuses_retries() {
    let err = tollgate::Upstream::builder("users")
        .endpoint("http://127.0.0.1:9001")
        .endpoint("http://127.0.0.1:9002")
        .retries(1)
        .build_with(|config| {
            Ok(tollgate::proxy::HyperUtilPool::<axum::body::Body>::new(
                config,
            ))
        })
        .map(|_| ())
        .expect_err("refused")
        .to_string();
    assert_eq!(
        err,
        "upstream \"users\": retries need an upstream made by build() or try_from (build_with cannot retry)"
    );
}
