//! The data plane end to end on the per-worker pool (`PoolKind::Worker`):
//! the same cases as `proxy.rs`.

use tollgate::proxy::PoolKind;

const POOL: PoolKind = PoolKind::Worker;

#[path = "common/proxy_cases.rs"]
mod cases;

/// The task that closes the pool's idle connections on time ends with the
/// pool: a dropped upstream leaves no task behind.
#[tokio::test]
async fn the_pools_expiring_task_ends_with_the_pool() {
    use std::time::Duration;

    use http::Request;
    use tollgate::Upstream;
    use tollgate_tests::{body_bytes, echo_router, spawn_upstream};
    use tower::ServiceExt;

    let up = spawn_upstream(echo_router()).await;
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let upstream = Upstream::builder("up")
        .pool(POOL)
        .endpoint(format!("http://{up}"))
        .build::<http_body_util::Full<bytes::Bytes>>()
        .expect("an upstream");
    let req = Request::get(format!("http://{up}/x"))
        .body(http_body_util::Full::default())
        .expect("a request");
    let Ok(res) = upstream.clone().oneshot(req).await;
    assert!(res.status().is_success(), "{}", res.status());
    body_bytes(res).await;
    // The connection's task and the pool's.
    assert!(metrics.num_alive_tasks() >= before + 2, "no task started");
    // Both have run and wait now.
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(upstream);
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while metrics.num_alive_tasks() > before {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "{} tasks left, {before} before",
        metrics.num_alive_tasks()
    );
}
