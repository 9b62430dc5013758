//! The demo's services and gateway, shared by `examples/demo.rs` and the
//! smoke test in `tests/`, so the demo can never rot silently.
//!
//! Three small in-process services (users, orders, products) run on
//! 127.0.0.1 ports picked by the OS; the gateway routes `/api/users/*`,
//! `/api/orders/*` and `/api/products/*` to them, and `/api/v2/users/*` to
//! the users service's v2 API. `/api/orders/*` needs a caller with the
//! `orders:read` scope, by JWT or API key ([`DemoAuth`] makes both), and
//! is rate-limited by plan (the API key's `free` plan allows 5 a minute);
//! the users service's internal fields never reach clients, and mobile
//! clients (`X-Client: mobile`) get a minimal payload;
//! `/api/products/*` is public. Later features add their layers in
//! [`gateway`].

use std::{
    net::SocketAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    Json, Router,
    extract::{OriginalUri, Path},
    http::HeaderMap,
    routing::get,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tollgate::{
    ConfigError, Gateway, GatewayBuilder, HealthCheck, Route, Upstream, UpstreamBuilder,
    auth::{
        ApiKeyAuth, AuthLayer, Consumer, IdentityHeaders, Issuer, JwtAuth, JwtKey,
        MemoryApiKeyStore, Requirement,
    },
    observe::{Metrics, ObserveLayer},
    ratelimit::{Key, Plan, Quota, RateLimitLayer},
    request_id::{ClientIpLayer, RequestIdLayer},
    transform::{BySelector, Classifier, ResponseRules, ResponseTransformLayer},
};

/// The demo API key's plan: a tiny quota, so a `curl` loop shows 429s.
pub(crate) const FREE_PER_MINUTE: u32 = 5;

/// Quotas per plan, keyed by the caller (API-key consumer, token subject,
/// else the client IP). The demo API key is on `free`; the demo token has
/// no plan and gets `standard`. Every answer carries the `RateLimit`
/// headers.
fn rate_limit() -> Result<RateLimitLayer, ConfigError> {
    RateLimitLayer::builder()
        .name("orders")
        .key(Key::consumer().or(Key::subject()).or(Key::client_ip()))
        .plan(Plan::new("free").quota(Quota::per_minute(FREE_PER_MINUTE).burst(FREE_PER_MINUTE)))
        .plan(Plan::new("standard").quota(Quota::per_minute(1000).burst(50)))
        .plan(Plan::unlimited("partner"))
        .default_plan("standard")
        .headers_on_allowed(true)
        .build()
}

/// What clients see of the users service: never its `internal_id` or
/// `debug_info`; mobile clients (`X-Client: mobile`) get only `id` and
/// `name`, others the rest too.
fn users_responses() -> Result<ResponseTransformLayer, ConfigError> {
    let web = ResponseRules::builder()
        .deny("/internal_id")
        .deny("/debug_info")
        .deny("/*/internal_id")
        .remove_server_headers()
        .build()?;
    let mobile = ResponseRules::builder()
        .allow("/id")
        .allow("/name")
        .remove_server_headers()
        .build()?;
    let classes = Classifier::new().header("x-client")?;
    Ok(ResponseTransformLayer::by_class(
        BySelector::by_class(classes)
            .class("mobile", mobile)
            .default(web),
    ))
}

/// The demo's issuer and audience.
const ISSUER: &str = "tollgate-demo";
const AUDIENCE: &str = "demo-api";

/// The demo's credentials: a fresh HS256 secret, a token signed with it,
/// and an API key, all random per run.
#[derive(Debug, Clone)]
pub(crate) struct DemoAuth {
    /// A JWT for subject `42` with scope `orders:read`, valid for a day.
    pub(crate) token: String,
    /// An API key of consumer `demo-app`, plan `free`, scope `orders:read`.
    pub(crate) api_key: String,
    secret: String,
}

impl DemoAuth {
    pub(crate) fn new() -> Result<Self, jsonwebtoken::errors::Error> {
        let random = |n: usize| -> String {
            std::iter::repeat_with(fastrand::alphanumeric)
                .take(n)
                .collect()
        };
        let secret = random(48);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        let claims = json!({
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "42",
            "scope": "orders:read profile",
            "iat": now,
            "exp": now + 24 * 3600,
        });
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )?;
        Ok(Self {
            token,
            api_key: format!("demo-{}", random(32)),
            secret,
        })
    }

    /// JWT or API key, `orders:read` required, the identity forwarded as
    /// `X-User-Id`/`X-Consumer`/`X-Scopes`.
    fn layer(&self) -> Result<AuthLayer, ConfigError> {
        Ok(self
            .methods()?
            .require_scopes(Requirement::all(["orders:read"])))
    }

    /// The same methods, optional: anonymous callers pass, a valid
    /// credential adds its identity headers, an invalid one is refused.
    fn optional_layer(&self) -> Result<AuthLayer, ConfigError> {
        Ok(self.methods()?.optional())
    }

    fn methods(&self) -> Result<AuthLayer, ConfigError> {
        let jwt = JwtAuth::builder()
            .issuer(
                Issuer::new(ISSUER)
                    .audience(AUDIENCE)
                    .key(JwtKey::hmac(&self.secret)),
            )
            .build()?;
        let keys = MemoryApiKeyStore::new();
        keys.insert(
            &self.api_key,
            Consumer::new("demo-app")
                .plan("free")
                .scopes(["orders:read"]),
        );
        Ok(AuthLayer::new(jwt)
            .or(ApiKeyAuth::new(keys))
            .forward_identity(IdentityHeaders::default()))
    }
}

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
            get(|| async { Json(json!([{"id": "1"}, {"id": "42"}])) }).post(create_user),
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
    // Each service answers the gateway's health checks.
    let healthz = || get(|| async { "ok" });
    Ok(Services {
        users: spawn(users.route("/healthz", healthz())).await?,
        orders: spawn(orders.route("/healthz", healthz())).await?,
        products: spawn(products.route("/healthz", healthz())).await?,
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
        "x_user_id": header("x-user-id"),
        "x_consumer": header("x-consumer"),
        "x_scopes": header("x-scopes"),
        "authorization_forwarded": headers.contains_key("authorization"),
    })
}

async fn user(Path(id): Path<String>, uri: OriginalUri, headers: HeaderMap) -> Json<Value> {
    Json(json!({
        "id": id,
        "name": format!("User {id}"),
        "seen": seen("users", &uri, &headers),
    }))
}

/// `POST /users`: echoes what the service received, with the internal
/// fields a real service might leak (`internal_id`, `debug_info`).
async fn create_user(uri: OriginalUri, headers: HeaderMap, body: axum::body::Bytes) -> Json<Value> {
    let sent: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Json(json!({
        "id": "123",
        "name": sent.get("name").cloned().unwrap_or(Value::Null),
        "internal_id": "db-7f3a-0042",
        "debug_info": {"shard": 7, "query_ms": 3},
        "received_body": sent,
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

/// The upstream `name` at `addr`, whose `/healthz` is probed every five
/// seconds (`GET /upstreams` on the admin listener shows the result).
fn upstream(name: &str, addr: SocketAddr) -> UpstreamBuilder {
    Upstream::builder(name)
        .endpoint(format!("http://{addr}"))
        .health_check(HealthCheck::new("/healthz").interval(Duration::from_secs(5)))
}

/// The demo gateway in front of `services`: request ids, trace context,
/// client IPs, an access-log line and metrics (into `metrics`) for every
/// request, then the routes; `/api/orders` checks `auth`'s credentials.
pub(crate) fn gateway(
    services: Services,
    metrics: &Metrics,
    auth: &DemoAuth,
) -> Result<GatewayBuilder, ConfigError> {
    Ok(Gateway::builder()
        .request_id(RequestIdLayer::x_request_id())
        .trace_context(true)
        .client_ip(ClientIpLayer::peer_only())
        .observe(ObserveLayer::with_metrics(metrics.clone()))
        .upstream(upstream("users", services.users))
        .upstream(upstream("orders", services.orders))
        .upstream(upstream("products", services.products))
        .route(
            Route::prefix("/api/users")
                .name("users")
                .replace_prefix("/users")
                .auth(auth.optional_layer()?)
                .transform_response(users_responses()?)
                .to("users"),
        )
        .route(
            Route::prefix("/api/orders")
                .name("orders")
                .replace_prefix("/orders")
                .auth(auth.layer()?)
                .rate_limit(rate_limit()?)
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
        ))
}

/// `curl` lines that show the demo working against `addr`, ready to paste.
pub(crate) fn curl_lines(addr: SocketAddr, auth: &DemoAuth) -> Vec<String> {
    let mut lines: Vec<String> = [
        "/api/users/42",
        "/api/v2/users/42",
        "/api/products/tea",
        "/api/orders/7",
        "/api/nowhere",
    ]
    .iter()
    .map(|path| format!("curl -s http://{addr}{path}"))
    .collect();
    lines.push(format!(
        "curl -s -H 'Authorization: Bearer {}' http://{addr}/api/orders/7",
        auth.token
    ));
    lines.push(format!(
        "curl -s -H 'X-Api-Key: {}' http://{addr}/api/orders/7",
        auth.api_key
    ));
    lines
}

/// A `curl` loop that runs the demo API key past its `free` quota: the
/// status and the `RateLimit` fields of each answer, 429 after five.
pub(crate) fn curl_loop_line(addr: SocketAddr, auth: &DemoAuth) -> String {
    format!(
        "for i in $(seq 8); do curl -s -o /dev/null -D - -H 'X-Api-Key: {}' http://{addr}/api/orders/7 | grep -iE '^(HTTP|ratelimit|retry-after)'; done",
        auth.api_key
    )
}
