//! The admin router: metrics and health endpoints.

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};

use crate::{Metrics, metrics::CONTENT_TYPE};

/// A router with `GET /metrics` (the exposition of `metrics`, in the
/// OpenMetrics text format) and `GET /healthz` (`200 ok`).
///
/// Serve it on its own listener, reachable only by operators (the facade
/// defaults to `127.0.0.1:9901`), or merge it into another router. The
/// facade's `tollgate::admin::Admin` adds `/readyz` and `/config`.
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
    metrics_router(metrics).route("/healthz", get(healthz))
}

/// A router with `GET /metrics` only: the exposition of `metrics`, in the
/// OpenMetrics text format ([`CONTENT_TYPE`]). [`admin_router`] is this
/// plus `/healthz`.
pub fn metrics_router(metrics: Metrics) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .with_state(metrics)
}

async fn render_metrics(State(metrics): State<Metrics>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], metrics.render())
}

/// The liveness answer: `200 ok`.
pub async fn healthz() -> &'static str {
    "ok"
}
