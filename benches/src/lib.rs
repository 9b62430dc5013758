//! Shared helpers for the criterion benches: a small upstream on
//! 127.0.0.1:0 that answers like the load harness's backend.

use std::net::SocketAddr;

use axum::{Router, body::Body};
use bytes::Bytes;
use http::Request;
use tollgate::{Gateway, Route, Upstream, proxy::PoolKind};

/// The 194-byte JSON body the load harness's backend sends for `/users/{id}`.
pub const SMALL_BODY: &[u8] = br#"{"id":12345,"name":"user-12345","email":"user-12345@example.com","plan":"free","created":"2026-01-01T00:00:00Z","tags":["a","b","c"],"active":true,"score":42.5,"region":"eu-west"}"#;

/// Starts the bench upstream on 127.0.0.1:0 in the current runtime:
/// `/users/{id}` answers [`SMALL_BODY`], `/big` 64 KiB.
///
/// # Errors
///
/// When binding 127.0.0.1:0 fails.
pub async fn spawn_backend() -> std::io::Result<SocketAddr> {
    let big = Bytes::from(vec![b'x'; 64 * 1024]);
    let router = Router::new()
        .route(
            "/users/{id}",
            axum::routing::get(|| async { Bytes::from_static(SMALL_BODY) }),
        )
        .route(
            "/big",
            axum::routing::get(move || async move { big.clone() }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(addr)
}

/// A gateway with one upstream, `backend`, at `addr` through `pool`, and
/// one route, `route`, which must send to it.
///
/// # Panics
///
/// When the gateway does not build: a bench that cannot set up stops.
#[expect(
    clippy::expect_used,
    reason = "a bench that cannot set up should stop loudly"
)]
pub fn gateway(addr: SocketAddr, pool: PoolKind, route: Route) -> Router {
    Gateway::builder()
        .upstream(
            Upstream::builder("backend")
                .endpoint(format!("http://{addr}"))
                .pool(pool),
        )
        .route(route)
        .build()
        .expect("gateway")
}

/// `GET uri` as the benches send it. Never inlined, so under callgrind its
/// number of calls is a bench's number of iterations.
///
/// # Panics
///
/// When `uri` is not a valid request target.
#[must_use]
#[inline(never)]
#[expect(
    clippy::expect_used,
    reason = "a bench that cannot set up should stop loudly"
)]
pub fn get(uri: &str) -> Request<Body> {
    Request::get(uri)
        .header("host", "bench.local")
        .header("user-agent", "criterion")
        .body(Body::empty())
        .expect("request")
}
