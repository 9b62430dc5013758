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
//! | [`Drain`]          | the server (`tollgate::serve`) | the proxy's upgrade tunnels               |
//! | [`Identity`]       | auth layers                    | scope checks, rate limits, transforms     |
//! | [`TraceContext`]   | request-id layer               | logs, the proxy (via `traceparent`)       |
//! | [`ParentSpanId`]   | request-id layer (valid incoming `traceparent`) | the OpenTelemetry export |
//! | [`RouteName`]      | the gateway builder            | metrics labels, logs                      |
//! | [`Observed`]       | the observe layer (a slot)     | filled by the route table and the proxy   |
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

pub mod audit;
pub mod body;
mod error;
mod extensions;
#[cfg(feature = "axum")]
mod extract;
mod hook;
pub mod problem;
#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
pub mod serde_util;

pub use error::{ConfigError, ConfigErrorKind};
pub use extensions::{
    AuthMethod, ClientIp, ConnectionInfo, Drain, DrainGuard, Identity, Observed, OriginalPath,
    ParentSpanId, RequestId, RouteName, TraceContext, UpstreamCall, UpstreamErrorKind,
};
pub use hook::{OnRequest, RequestHook};
pub use problem::Problem;

/// A type-erased error, as used by tower and hyper.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Defines `get_ref`, `get_mut` and `into_inner` for a middleware whose
/// wrapped service is the field `inner` of type `S`, as tower-http does.
///
/// ```
/// pub struct Wrap<S> {
///     inner: S,
/// }
///
/// impl<S> Wrap<S> {
///     tollgate_core::inner_service_accessors!();
/// }
///
/// let mut w = Wrap { inner: 1 };
/// *w.get_mut() += 1;
/// assert_eq!(*w.get_ref(), 2);
/// assert_eq!(w.into_inner(), 2);
/// ```
#[macro_export]
macro_rules! inner_service_accessors {
    () => {
        /// The inner service.
        pub fn get_ref(&self) -> &S {
            &self.inner
        }

        /// The inner service, mutably.
        pub fn get_mut(&mut self) -> &mut S {
            &mut self.inner
        }

        /// Unwraps the inner service.
        pub fn into_inner(self) -> S {
            self.inner
        }
    };
}
