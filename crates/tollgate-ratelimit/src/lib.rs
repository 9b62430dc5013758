//! Rate limits, quotas and concurrency limits for the tollgate gateway:
//! GCRA in memory or in Redis, plans, `RateLimit` headers.
//!
//! - [`RateLimitLayer`]: quotas by [`Key`] (consumer, subject, client IP,
//!   header, route, closure, or a combination) and by [`Plan`] (read from
//!   `Identity.plan`; anonymous requests get the default plan, keyed by
//!   IP). Over a quota it answers 429 problem+json with `Retry-After`
//!   (whole seconds, rounded up) and the `RateLimit-Policy` / `RateLimit`
//!   fields of draft-ietf-httpapi-ratelimit-headers; it never waits in
//!   `poll_ready`.
//! - Stores ([`RateLimitStore`]): [`MemoryStore`] (default, `governor`,
//!   idle keys evicted in the background) and `RedisStore` (feature
//!   `redis`, on by default: one quota for every gateway instance), with a
//!   [`StoreFailure`] mode for when Redis is down.
//! - [`ConcurrencyLimitLayer`]: a maximum of requests in flight, 503
//!   problem+json past it.
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode};
//! use tollgate_core::Identity;
//! use tollgate_ratelimit::{Key, Plan, Quota, RateLimitLayer};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let limit = RateLimitLayer::builder()
//!     .key(Key::consumer().or(Key::client_ip()))
//!     .plan(Plan::new("free").quota(Quota::per_minute(100).burst(2)))
//!     .plan(Plan::new("standard").quota(Quota::per_minute(1000).burst(50)))
//!     .plan(Plan::unlimited("partner"))
//!     .default_plan("free")
//!     .headers_on_allowed(true)
//!     .build()?;
//! let mut svc = ServiceBuilder::new().layer(limit).service(service_fn(|_: Request<()>| async {
//!     Ok::<_, Infallible>(Response::new(String::from("ok")))
//! }));
//!
//! let request = || {
//!     let mut req = Request::new(());
//!     req.extensions_mut().insert(Identity::consumer("acme").with_plan("free"));
//!     req
//! };
//! let res = svc.ready().await?.call(request()).await?;
//! assert_eq!(res.status(), StatusCode::OK);
//! assert_eq!(res.headers()["ratelimit-policy"], "\"free-minute\";q=100;w=60");
//! assert_eq!(res.headers()["ratelimit"], "\"free-minute\";r=1;t=1");
//! svc.ready().await?.call(request()).await?;
//! let res = svc.ready().await?.call(request()).await?;
//! assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
//! assert_eq!(res.headers()["content-type"], "application/problem+json");
//! assert_eq!(res.headers()["retry-after"], "1");
//! # Ok(()) }
//! ```
//!
//! A layer value owns its counters: see [`RateLimitLayer`] for per-route
//! and global limits, and `docs/ratelimit.md` for failure modes, overshoot
//! and memory.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod concurrency;
mod config;
mod future;
mod key;
mod layer;
mod memory;
mod quota;
#[cfg(feature = "redis")]
mod redis_store;
mod service;
mod stats;
mod store;

pub use concurrency::{ConcurrencyFuture, ConcurrencyLimit, ConcurrencyLimitLayer, PermitBody};
pub use config::{
    ConcurrencyLimitConfig, KeyPartConfig, Per, PlanConfig, QuotaConfig, RateLimitConfig,
    RedisConfig,
};
pub use future::ResponseFuture;
pub use key::{CustomKey, Key, KeyPart, KeyRequest, MAX_KEY_LEN, MissingKey};
pub use layer::{DEFAULT_NAME, DEFAULT_PLAN, RateLimitBuilder, RateLimitLayer, StoreFailure};
pub use memory::{DEFAULT_EVICT_EVERY, MemoryOptions, MemoryStore};
pub use quota::{MAX_WINDOWS, Plan, Quota, Window};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis_store::{DEFAULT_PREFIX, RedisStore};
pub use service::{RATELIMIT, RATELIMIT_POLICY, RateLimit};
pub use stats::{RateLimitStats, StatsSnapshot};
pub use store::{
    Check, CheckFuture, Decision, PingFuture, RateLimitStore, StoreError, StoreKey, WindowState,
};

#[cfg(test)]
mod tests;
