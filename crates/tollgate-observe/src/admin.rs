//! The admin router: metrics and health endpoints.

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};

use crate::{Metrics, metrics::CONTENT_TYPE};

/// A router with `GET /metrics` (the exposition of `metrics`, in the
/// OpenMetrics text format) and `GET /healthz` (`200 ok`).
///
/// Serve it on its own listener, reachable only by operators (the facade
/// defaults to `127.0.0.1:9901`), or merge it into another router.
///
/// ```
/// # use tollgate_observe::{Metrics, admin_router};
/// # async fn run() -> std::io::Result<()> {
/// let metrics = Metrics::new();
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:9901").await?;
/// axum::serve(listener, admin_router(metrics)).await
/// # }
/// ```
pub fn admin_router(metrics: Metrics) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(healthz))
        .with_state(metrics)
}

async fn render_metrics(State(metrics): State<Metrics>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], metrics.render())
}

async fn healthz() -> &'static str {
    "ok"
}
