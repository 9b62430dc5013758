//! Request ids, W3C trace context and trusted-proxy client IP resolution
//! for the tollgate gateway.
//!
//! Three layers, each usable alone in any tower stack:
//!
//! - [`RequestIdLayer`]: a UUID v7 id per request (or a trusted,
//!   well-formed incoming one) in the `X-Request-Id` header (configurable),
//!   the `RequestId` extension, the upstream request and the response.
//!   Its id generator, [`MakeUuidV7`], is a tower-http `MakeRequestId`.
//! - [`TraceparentLayer`]: W3C `traceparent`/`tracestate` propagated, or a
//!   new trace started, with a `TraceContext` extension.
//! - [`ClientIpLayer`]: the `ClientIp` extension, resolved once from the
//!   peer address and the trusted proxies; nothing else parses
//!   `X-Forwarded-For`.
//!
//! ```
//! use std::{convert::Infallible, net::SocketAddr};
//! use http::{Request, Response};
//! use tollgate_core::{ClientIp, ConnectionInfo, RequestId};
//! use tollgate_request_id::{ClientIpConfig, ClientIpLayer, RequestIdLayer, TraceparentLayer};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = ClientIpConfig::default();
//! config.trusted_proxies = vec!["10.0.0.0/8".into()];
//! let svc = ServiceBuilder::new()
//!     .layer(RequestIdLayer::x_request_id())
//!     .layer(TraceparentLayer::new())
//!     .layer(ClientIpLayer::from_config(&config)?)
//!     .service(service_fn(|req: Request<()>| async move {
//!         let client = req.extensions().get::<ClientIp>().map(|ip| ip.to_string());
//!         assert!(req.extensions().get::<RequestId>().is_some());
//!         Ok::<_, Infallible>(Response::new(client.unwrap_or_default()))
//!     }));
//!
//! let mut req = Request::get("/").header("x-forwarded-for", "198.51.100.4").body(())?;
//! req.extensions_mut().insert(ConnectionInfo::new("10.0.0.2:4000".parse::<SocketAddr>()?));
//! let mut svc = svc;
//! let res = svc.ready().await?.call(req).await?;
//! assert!(res.headers().contains_key("x-request-id"));
//! assert_eq!(res.body(), "198.51.100.4");
//! # Ok(()) }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

mod client_ip;
mod request_id;
mod trace;

pub use client_ip::{ClientIpConfig, ClientIpLayer, ForwardedSource, ResolveClientIp};
pub use request_id::{
    MAX_ID_LEN, MakeUuidV7, RequestIdConfig, RequestIdLayer, RequestIds, ResponseFuture,
    is_valid_id,
};
pub use trace::{Traceparent, TraceparentLayer};
