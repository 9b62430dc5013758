//! The demo's services and gateway, shared by `examples/demo.rs` and the
//! smoke test in `tests/`, so the demo can never rot silently.
//!
//! Three small in-process services (users, orders, products) run on
//! 127.0.0.1 ports picked by the OS; the gateway routes `/api/users/*`,
//! `/api/orders/*` and `/api/products/*` to them, and `/api/v2/users/*` to
//! the users service's v2 API. Later features add their layers in
//! [`gateway`].

use std::net::SocketAddr;

use axum::{
    Json, Router,
    extract::{OriginalUri, Path},
    http::HeaderMap,
    routing::get,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tollgate::{
    Gateway, GatewayBuilder, Route, Upstream,
    observe::{Metrics, ObserveLayer},
    request_id::{ClientIpLayer, RequestIdLayer},
};

/// Where the demo services listen.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Services {
    pub(crate) users: SocketAddr,
    pub(crate) orders: SocketAddr,
    pub(crate) products: SocketAddr,
}

/// Starts the three demo services on 127.0.0.1, each on its own port.
pub(crate) async fn start_services() -> std::io::Result<Services> {
    let users = Router::new()
        .route(
            "/users",
            get(|| async { Json(json!([{"id": "1"}, {"id": "42"}])) }),
        )
        .route("/users/{id}", get(user))
        .route("/v2/users/{id}", get(user_v2));
    let orders = Router::new()
        .route(
            "/orders",
            get(|| async { Json(json!([{"id": "7", "user": "42"}])) }),
        )
        .route("/orders/{id}", get(order));
    let products = Router::new()
        .route(
            "/products",
            get(|| async { Json(json!([{"sku": "tea"}, {"sku": "cup"}])) }),
        )
        .route("/products/{sku}", get(product));
    Ok(Services {
        users: spawn(users).await?,
        orders: spawn(orders).await?,
        products: spawn(products).await?,
    })
}

async fn spawn(router: Router) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(addr)
}

/// What every demo service echoes: which service answered, the path it
/// saw, and the forwarding headers it got.
fn seen(service: &str, uri: &OriginalUri, headers: &HeaderMap) -> Value {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    json!({
        "service": service,
        "path": uri.0.to_string(),
        "host": header("host"),
        "x_forwarded_for": header("x-forwarded-for"),
        "x_forwarded_proto": header("x-forwarded-proto"),
        "x_forwarded_host": header("x-forwarded-host"),
        "x_request_id": header("x-request-id"),
        "traceparent": header("traceparent"),
    })
}

async fn user(Path(id): Path<String>, uri: OriginalUri, headers: HeaderMap) -> Json<Value> {
    Json(json!({
        "id": id,
        "name": format!("User {id}"),
        "seen": seen("users", &uri, &headers),
    }))
}

async fn user_v2(Path(id): Path<String>, uri: OriginalUri, headers: HeaderMap) -> Json<Value> {
    Json(json!({
        "id": id,
        "display_name": format!("User {id}"),
        "api_version": 2,
        "seen": seen("users", &uri, &headers),
    }))
}

async fn order(Path(id): Path<String>, uri: OriginalUri, headers: HeaderMap) -> Json<Value> {
    Json(
        json!({"id": id, "user": "42", "total_cents": 1250, "seen": seen("orders", &uri, &headers)}),
    )
}

async fn product(Path(sku): Path<String>, uri: OriginalUri, headers: HeaderMap) -> Json<Value> {
    Json(json!({"sku": sku, "price_cents": 450, "seen": seen("products", &uri, &headers)}))
}

/// The demo gateway in front of `services`: request ids, trace context,
/// client IPs, an access-log line and metrics (into `metrics`) for every
/// request, then the routes.
pub(crate) fn gateway(services: Services, metrics: &Metrics) -> GatewayBuilder {
    Gateway::builder()
        .request_id(RequestIdLayer::x_request_id())
        .trace_context(true)
        .client_ip(ClientIpLayer::peer_only())
        .observe(ObserveLayer::with_metrics(metrics.clone()))
        .upstream(Upstream::builder("users").endpoint(format!("http://{}", services.users)))
        .upstream(Upstream::builder("orders").endpoint(format!("http://{}", services.orders)))
        .upstream(Upstream::builder("products").endpoint(format!("http://{}", services.products)))
        .route(
            Route::prefix("/api/users")
                .name("users")
                .replace_prefix("/users")
                .to("users"),
        )
        .route(
            Route::prefix("/api/orders")
                .name("orders")
                .replace_prefix("/orders")
                .to("orders"),
        )
        .route(
            Route::prefix("/api/products")
                .name("products")
                .replace_prefix("/products")
                .to("products"),
        )
        .route(
            Route::prefix("/api/v2/users")
                .name("users-v2")
                .replace_prefix("/v2/users")
                .to("users"),
        )
}

/// `curl` lines that show the demo working against `addr`.
pub(crate) fn curl_lines(addr: SocketAddr) -> Vec<String> {
    [
        "/api/users/42",
        "/api/v2/users/42",
        "/api/orders/7",
        "/api/products/tea",
        "/api/nowhere",
    ]
    .iter()
    .map(|path| format!("curl -s http://{addr}{path}"))
    .collect()
}
