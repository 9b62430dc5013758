//! An embeddable API gateway for Rust: composable tower layers, a
//! [`Gateway`] builder and a server with graceful shutdown.
//!
//! `Gateway::builder()` registers upstreams by name and routes by path
//! prefix, host, method and header; [`GatewayBuilder::build`] checks the
//! whole configuration and returns an `axum::Router`, which you can merge
//! with your own handlers and run with [`serve`] (or `axum::serve`).
//!
//! ```
//! use axum::{Router, body::Body, routing::get};
//! use tollgate::{Gateway, Route, Upstream};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let users_addr = listener.local_addr()?;
//! # tokio::spawn(async move {
//! #     let users = Router::new().route("/users/{id}", get(|| async { "user 42" }));
//! #     axum::serve(listener, users).await
//! # });
//! let gateway = Gateway::builder()
//!     .upstream(Upstream::builder("users").endpoint(format!("http://{users_addr}")))
//!     .route(Route::prefix("/api/users").replace_prefix("/users").to("users"))
//!     .build()?;
//! let app = Router::new()
//!     .route("/hello", get(|| async { "handled here" }))
//!     .merge(gateway);
//!
//! let res = app.clone().oneshot(http::Request::get("/api/users/42").body(Body::empty())?).await?;
//! assert_eq!(res.status(), 200);
//! let res = app.oneshot(http::Request::get("/nowhere").body(Body::empty())?).await?;
//! assert_eq!(res.status(), 404);
//! assert_eq!(res.headers()["content-type"], "application/problem+json");
//! # Ok(()) }
//! ```
//!
//! Operators get their own listener on `127.0.0.1`: [`admin::Admin`]
//! serves `/healthz`, `/readyz` (the [`Health`] checks of the gateway built
//! last: remote keys, upstreams, Redis), `/metrics` and `/config`.
//!
//! # Crates
//!
//! | crate            | re-exported as | what it does                                         |
//! |------------------|----------------|------------------------------------------------------|
//! | `tollgate-core`  | [`core`]       | extensions, problem+json, body types, config errors  |
//! | `tollgate-proxy` | [`proxy`]      | upstreams, balancing, streaming, upgrades, timeouts  |
//! | `tollgate-request-id` | [`request_id`] | request ids, W3C trace context, client IP resolution |
//! | `tollgate-observe` | [`observe`] | access log, Prometheus metrics, admin router, audit trail |
//! | `tollgate-auth`  | [`auth`]       | JWT (JWKS, OIDC), API keys, introspection, scopes and roles |
//! | `tollgate-ratelimit` | [`ratelimit`] | GCRA quotas by key and plan, Redis store, in-flight limits |
//! | `tollgate-transform` | [`transform`] | header, path, query and JSON body rules, client classes, limits |
//!
//! # Features
//!
//! | feature | default | what it enables                                            |
//! |---------|---------|------------------------------------------------------------|
//! | `serde` | no      | `Deserialize` for the plain-data configs of every layer    |
//! | `otel`  | no      | OpenTelemetry: one server span per request exported over OTLP (`observe::otel`) |
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod admin;
mod body_timeout;
mod builder;
pub mod compression;
#[cfg(feature = "config")]
#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
pub mod config;
mod head_deadline;
mod health;
mod http2;
mod listen;
mod parse_error;
mod proxy_protocol;
mod routing;
mod send_timeout;
mod serve;
mod tls;

pub use builder::{Gateway, GatewayBuilder, Route};
pub use health::{Health, PROBE_TIMEOUT, Readiness, ReadinessCheck};
pub use http2::Http2Settings;
pub use listen::{DEFAULT_BACKLOG, ListenOptions};
pub use proxy_protocol::{MAX_PROXY_HEADER, ProxyProtocol, ProxyProtocolOthers};
pub use routing::{GatewayService, LayeredFuture, LayeredService, ResponseFuture};
pub use serve::{
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HEADER_SIZE, DEFAULT_MAX_HEADERS, MIN_CONNECTION_AGE,
    MIN_MAX_HEADER_SIZE, Serve, serve, shutdown_signal,
};
pub use tls::{
    ClientAuth, DEFAULT_SESSION_CACHE, DEFAULT_SESSION_TIMEOUT, RedirectToHttps, TlsConfig,
    TlsConfigBuilder, TlsVersion, hsts_layer, redirect_to_https,
};
#[doc(no_inline)]
pub use tollgate_core::{ConfigError, Problem};
#[doc(no_inline)]
pub use tollgate_proxy::{
    Balance, HealthCheck, PassiveHealthCheck, PathRewrite, Protocol, Upstream, UpstreamBuilder,
};

/// Authentication and authorization: JWT, API keys, introspection, scope
/// checks (`tollgate-auth`).
pub use tollgate_auth as auth;
/// The shared vocabulary: extensions, problems, bodies (`tollgate-core`).
pub use tollgate_core as core;
/// Access logs, metrics, the admin router and the audit trail
/// (`tollgate-observe`).
pub use tollgate_observe as observe;
/// The data plane (`tollgate-proxy`).
pub use tollgate_proxy as proxy;
/// Rate limits, plans, the Redis store and in-flight limits
/// (`tollgate-ratelimit`).
pub use tollgate_ratelimit as ratelimit;
/// Request ids, trace context and client IPs (`tollgate-request-id`).
pub use tollgate_request_id as request_id;
/// Request and response transforms, client classes, CORS and request
/// limits (`tollgate-transform`).
pub use tollgate_transform as transform;
