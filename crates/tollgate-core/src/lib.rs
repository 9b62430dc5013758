//! Shared vocabulary of the tollgate gateway layers: request extensions,
//! RFC 9457 problem+json errors and body types.
//!
//! Every tollgate layer talks to the others only through the types in this
//! crate, carried in request and response extensions:
//!
//! | extension          | set by                         | read by                                   |
//! |--------------------|--------------------------------|-------------------------------------------|
//! | [`RequestId`]      | request-id layer               | logs, problem bodies, the proxy           |
//! | [`ClientIp`]       | request-id layer               | rate-limit keys, the proxy, logs          |
//! | [`ConnectionInfo`] | the server (`tollgate::serve`) | client-IP resolution, `X-Forwarded-Proto` |
//! | [`Identity`]       | auth layers                    | scope checks, rate limits, transforms     |
//! | [`RouteName`]      | the gateway builder            | metrics labels, logs                      |
//!
//! A rejection is always a [`Problem`], rendered as `application/problem+json`:
//!
//! ```
//! use http::StatusCode;
//! use tollgate_core::{Problem, RequestId, problem};
//!
//! let problem = Problem::route_not_found()
//!     .detail("no route matches GET /nope")
//!     .instance("/nope")
//!     .request_id(Some(&RequestId::from_static("abc")));
//! let res = problem.into_response::<tollgate_core::body::BoxBody>();
//! assert_eq!(res.status(), StatusCode::NOT_FOUND);
//! assert_eq!(res.headers()["content-type"], "application/problem+json");
//! assert_eq!(
//!     res.extensions().get::<Problem>().map(Problem::type_uri),
//!     Some(problem::ROUTE_NOT_FOUND),
//! );
//! ```
//!
//! This crate does no I/O.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod body;
mod error;
mod extensions;
pub mod problem;

pub use error::{ConfigError, ConfigErrorKind};
pub use extensions::{ClientIp, ConnectionInfo, Identity, RequestId, RouteName};
pub use problem::Problem;

/// A type-erased error, as used by tower and hyper.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
