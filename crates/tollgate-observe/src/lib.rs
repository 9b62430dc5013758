//! Access logs, Prometheus metrics and the audit trail of the tollgate gateway.
//!
//! [`ObserveLayer`] writes one access-log line per request (as an event
//! on the tracing target `tollgate::access`, or straight to an
//! [`AccessLogWriter`]) and records the request metrics into a
//! [`Metrics`] registry, which [`admin_router`] serves as `GET /metrics`:
//!
//! ```
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use bytes::Bytes;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tollgate_observe::{Metrics, ObserveLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let metrics = Metrics::new();
//! let svc = ServiceBuilder::new()
//!     .layer(ObserveLayer::builder().metrics(metrics.clone()).build())
//!     .service_fn(|_req: Request<Full<Bytes>>| async {
//!         Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from("hi"))))
//!     });
//!
//! let res = svc.oneshot(Request::get("/users/1").body(Full::default())?).await?;
//! assert_eq!(res.status(), StatusCode::OK);
//! assert_eq!(metrics.in_flight(), 1); // until the body ends
//! drop(res);
//! assert_eq!(metrics.in_flight(), 0);
//! assert!(metrics.render().contains(
//!     r#"tollgate_requests_total{route="unmatched",method="GET",status="200"} 1"#
//! ));
//! # Ok(())
//! # }
//! ```
//!
//! # Access log
//!
//! One line per request, written when the response body ends or is
//! dropped (so `latency_ms` covers the whole response): an event on
//! target [`ACCESS_TARGET`], or, with [`ObserveBuilder::access_log`], the
//! same JSON line written straight to the writer. Its fields:
//!
//! | field          | value |
//! |----------------|-------|
//! | `request_id`   | the [`RequestId`](tollgate_core::RequestId) extension, when present |
//! | `trace_id`     | the W3C trace id from the `TraceContext` extension (set by `TraceparentLayer`, which must run before this layer) |
//! | `method`       | the request method |
//! | `path`         | the path; with the query only when [`ObserveBuilder::log_query`] is on |
//! | `route`        | the [`RouteName`](tollgate_core::RouteName), or `unmatched` |
//! | `status`       | the response status; 499 when the client left before the response, 500 when the inner service failed |
//! | `latency_ms`   | milliseconds from the request to the end of the response body (f64) |
//! | `client_ip`    | the [`ClientIp`](tollgate_core::ClientIp) extension, else the peer of [`ConnectionInfo`](tollgate_core::ConnectionInfo) |
//! | `subject`, `consumer` | from the [`Identity`](tollgate_core::Identity), when present |
//! | `user_agent`   | the `User-Agent` header |
//! | `problem_type` | the `type` of the [`Problem`](tollgate_core::Problem) in the response extensions |
//! | `bytes_in`     | the request `Content-Length`, or the body's exact size hint |
//! | `bytes_out`    | the response body bytes actually sent |
//! | `body_error`   | `true` when the response body failed mid-stream |
//!
//! No header value other than `User-Agent` is ever logged: `Authorization`,
//! `Cookie`, `Set-Cookie`, `X-Api-Key` and the rest never appear.
//! With the gateway, the line also carries `upstream`, `endpoint`,
//! `upstream_latency_ms` and `upstream_error` (see below).
//!
//! # Configuration
//!
//! [`ObserveConfig`] is the plain data of the layer and of the access-log
//! destination ([`AccessLogConfig`]: standard output or error, a file, or
//! off); with the `serde` feature it deserialises. The gateway opens an
//! [`AccessLogWriter`] from it and builds the layer with
//! [`ObserveConfig::builder`] and [`ObserveBuilder::access_log`], so the
//! layer writes each line to it directly: see [`ObserveConfig`] for the
//! exact calls. Without a writer the layer emits each line as a `tracing`
//! event of [`ACCESS_TARGET`] instead, for the application's subscriber
//! ([`AccessLogWriter::layer`] writes those to a destination).
//!
//! # Route, identity and upstream
//!
//! The route table, the auth layers and the proxy run *inside* this layer,
//! so what they learn never reaches it on the request. This layer puts a
//! [`Observed`](tollgate_core::Observed) slot into each request; the route
//! table records the route name in it, an auth layer the identity, and the
//! proxy the upstream call (upstream, endpoint, latency, error), which
//! feeds the access log and the `tollgate_upstream_*` metrics. Without a
//! slot entry, the route and identity are read from the response
//! extensions, then from the request as it was before the inner service.
//!
//! # Metrics
//!
//! See [`Metrics`] for the families and their labels.
//!
//! # OpenTelemetry
//!
//! With the cargo feature `otel`, each request also opens a server span
//! (once an `otel::OtlpExporter` layer exists, or when asked with
//! `ObserveBuilder::server_spans`), exported over OTLP and joined to the
//! caller's W3C trace. The default build does not depend on the
//! OpenTelemetry crates.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod admin;
pub mod audit;
mod body;
mod config;
pub mod future;
mod json_lines;
mod layer;
mod metrics;
#[cfg(feature = "otel")]
#[cfg_attr(docsrs, doc(cfg(feature = "otel")))]
pub mod otel;
mod record;
mod sensitive;
mod service;

pub use admin::{admin_router, healthz, metrics_router};
pub use body::ObserveBody;
pub use config::{AccessLogConfig, AccessLogLayer, AccessLogWriter, ObserveConfig};
pub use json_lines::JsonLines;
pub use layer::{ObserveBuilder, ObserveLayer};
pub use metrics::{
    CONTENT_TYPE, ConnectionError, ConnectionGuard, LATENCY_BUCKETS, Metrics, UNMATCHED,
};
pub use record::ACCESS_TARGET;
pub use sensitive::{SENSITIVE_HEADERS, sensitive_headers_layer};
pub use service::Observe;
#[doc(no_inline)]
pub use tollgate_core::UpstreamErrorKind;
