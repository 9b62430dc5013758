//! The tollgate data plane: upstream services with pooled clients, load
//! balancing, streaming, upgrades and timeouts.
//!
//! An [`Upstream`] is a tower `Service` for one named backend. It forwards
//! requests to its endpoints through a pooled keep-alive [`Transport`]
//! (hyper-util's client by default, or the per-worker [`WorkerPool`]) with
//! both bodies streaming, and answers failures itself with RFC 9457
//! problems (502 for a refused, reset or garbled upstream, 504 for a slow
//! one), so its error type is `Infallible` and it drops straight into an
//! axum `Router`.
//!
//! ```
//! use axum::{Router, body::Body};
//! use tower::ServiceExt;
//! use tollgate_proxy::{PathRewrite, RewritePathLayer, Upstream};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let addr = listener.local_addr()?;
//! # tokio::spawn(async move {
//! #     let users = Router::new().route("/users/{id}", axum::routing::get(|| async { "user 42" }));
//! #     axum::serve(listener, users).await
//! # });
//! let users = Upstream::builder("users")
//!     .endpoint(format!("http://{addr}"))
//!     .build::<Body>()?;
//! let proxy = tower::ServiceBuilder::new()
//!     .layer(RewritePathLayer::new("/api/users", &PathRewrite::ReplacePrefix("/users".into()))?)
//!     .service(users);
//! // Every path the app does not handle itself goes through the proxy.
//! let app: Router = Router::new().fallback_service(proxy);
//!
//! let res = app
//!     .oneshot(http::Request::get("/api/users/42").body(Body::empty())?)
//!     .await?;
//! assert_eq!(res.status(), 200);
//! # Ok(()) }
//! ```
//!
//! [`RewritePath`] strips or replaces a route prefix (only at a segment
//! boundary) and [`WeightedSplit`] splits traffic between upstream groups
//! for canary releases.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod balance;
mod error;
mod headers;
mod health_check;
pub mod rewrite;
mod split;
pub mod transport;
mod upstream;
mod validate;
mod worker_pool;

pub use balance::{Balance, EndpointStatus};
pub use error::UpstreamErrorKind;
pub use headers::ForwardedHeaders;
pub use health_check::{HealthCheck, PassiveHealthCheck};
pub use rewrite::{PathRewrite, RewritePath, RewritePathLayer};
pub use split::WeightedSplit;
pub use transport::{
    HyperUtilPool, Pool, PoolBody, PoolFuture, PoolKind, Transport, TransportConfig, TransportError,
};
pub use upstream::{
    EndpointConfig, Protocol, ResponseFuture, Upstream, UpstreamBuilder, UpstreamConfig,
};
pub use validate::validate_request;
pub use worker_pool::{PooledBody, WorkerPool, WorkerPoolFuture};
