//! OpenTelemetry export: one server span per request, sent over OTLP
//! (HTTP/protobuf) to a collector. Behind the cargo feature `otel`.
//!
//! [`OtlpExporter`] owns the tracer provider and its batch exporter, and
//! hands out the `tracing` layer ([`OtlpExporter::layer`]) that turns
//! spans into OpenTelemetry spans. With the feature on, the
//! [`ObserveLayer`](crate::ObserveLayer) opens one span per request on the
//! target [`SERVER_SPAN_TARGET`]:
//!
//! | | |
//! |---|---|
//! | name | `{method} {route}` (`GET users`), or `{method}` when no route matched |
//! | kind | server |
//! | attributes | `http.request.method`, `url.path`, `http.route` (the route *name*), `http.response.status_code`, `client.address`, `error.type` (on 5xx) |
//! | status | error for a 5xx response (or a failed inner service), unset otherwise |
//! | trace and parent | the request's W3C `traceparent` (the [`TraceContext`] and [`ParentSpanId`] extensions set by `TraceparentLayer`) |
//!
//! The span joins the caller's trace: its trace id is the incoming
//! `traceparent`'s, its parent the caller's span. The `traceparent` sent
//! upstream and the [`TraceContext`] extension (hence the access log's
//! `trace_id`) are rewritten to carry this span's id, so the upstream's
//! spans become its children. When the gateway started the trace (no valid
//! incoming `traceparent`), the exported span is a root and its trace id
//! replaces the one `TraceparentLayer` made up. `TraceparentLayer` must run
//! before the observe layer, as it must for the access log's `trace_id`.
//!
//! ```no_run
//! use tollgate_observe::otel::OtlpExporter;
//! use tracing_subscriber::prelude::*;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let otel = OtlpExporter::builder()
//!     .endpoint("http://127.0.0.1:4318") // the collector; `/v1/traces` is appended
//!     .service_name("edge-gateway")
//!     .build()?;
//! tracing_subscriber::registry().with(otel.layer()).init();
//! // ... run the gateway with an `ObserveLayer` ...
//! otel.shutdown()?; // flushes the spans not sent yet (dropping it does too)
//! # Ok(())
//! # }
//! ```
//!
//! Spans are batched and sent from a background thread with reqwest's
//! blocking client (rustls), so nothing of the export runs on the request
//! path but the hand-over to the batch queue.

use std::{
    borrow::Cow,
    error::Error,
    fmt,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use http::{HeaderName, HeaderValue, Request};
use opentelemetry::{
    Context, KeyValue, SpanId, TraceFlags, TraceId,
    trace::{SpanContext, Status, TraceContextExt, TraceState, TracerProvider as _},
};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::{
    Resource,
    trace::{SdkTracer, SdkTracerProvider},
};
use tollgate_core::{ClientIp, ConnectionInfo, ParentSpanId, RouteName, TraceContext};
use tracing::{Span, Subscriber};
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt};
use tracing_subscriber::registry::LookupSpan;

use crate::metrics::method_label;

/// Whether [`OtlpExporter::layer`] has been called in this process: the
/// observe layer's default for opening server spans. It is never reset, so
/// a process that dropped its exporter keeps opening spans (which the
/// subscriber then disables); that errs on the side of exporting.
static EXPORTER_LAYER_MADE: AtomicBool = AtomicBool::new(false);

/// Whether an exporter's layer has been made in this process.
pub(crate) fn exporter_layer_made() -> bool {
    EXPORTER_LAYER_MADE.load(Ordering::Relaxed)
}

/// The tracing target of the per-request server spans.
pub const SERVER_SPAN_TARGET: &str = "tollgate::http";

/// The name of the exporter's instrumentation scope.
const SCOPE: &str = "tollgate";

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Exports spans over OTLP/HTTP (protobuf) and hands out the `tracing`
/// layer that feeds it.
///
/// It is also the guard of the export: [`shutdown`](Self::shutdown) (or
/// dropping it) sends the spans still queued and stops the background
/// thread. Keep it alive as long as the gateway runs.
///
/// See the [module docs](self) for an example.
#[must_use = "dropping the exporter shuts the export down"]
pub struct OtlpExporter {
    provider: SdkTracerProvider,
}

/// Builds an [`OtlpExporter`].
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct OtlpExporterBuilder {
    endpoint: Option<String>,
    service_name: Option<String>,
    timeout: Option<Duration>,
}

/// An export that could not be set up, flushed or shut down.
#[derive(Debug)]
pub struct OtelError {
    kind: OtelErrorKind,
    source: Box<dyn Error + Send + Sync>,
}

/// What failed, in an [`OtelError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OtelErrorKind {
    /// The exporter could not be built (a bad endpoint, no HTTP client).
    Build,
    /// Queued spans could not be sent.
    Flush,
    /// The export could not be shut down (or already was).
    Shutdown,
}

/// The server span of one request: the `tracing` span and the
/// OpenTelemetry context it started.
pub(crate) struct ServerSpan {
    span: Span,
    cx: Context,
}

// === impl OtlpExporter ===

impl OtlpExporter {
    /// A builder: the collector endpoint from `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
    /// or `OTEL_EXPORTER_OTLP_ENDPOINT`, else `http://localhost:4318`, and the
    /// service name `tollgate`.
    pub fn builder() -> OtlpExporterBuilder {
        OtlpExporterBuilder::default()
    }

    /// The `tracing` layer that turns spans (the gateway's server spans
    /// and any span of your own) into OpenTelemetry spans for this export.
    pub fn layer<S>(&self) -> OpenTelemetryLayer<S, SdkTracer>
    where
        S: Subscriber + for<'span> LookupSpan<'span>,
    {
        EXPORTER_LAYER_MADE.store(true, Ordering::Relaxed);
        tracing_opentelemetry::layer().with_tracer(self.tracer())
    }

    /// A tracer of this export, for spans made with the OpenTelemetry API
    /// directly.
    pub fn tracer(&self) -> SdkTracer {
        self.provider.tracer(SCOPE)
    }

    /// The tracer provider, to register it globally or add processors.
    #[must_use]
    pub fn tracer_provider(&self) -> &SdkTracerProvider {
        &self.provider
    }

    /// Sends the spans that ended and are still queued, and waits for it.
    ///
    /// # Errors
    ///
    /// When the collector could not be reached or refused the spans.
    pub fn force_flush(&self) -> Result<(), OtelError> {
        self.provider
            .force_flush()
            .map_err(|e| OtelError::new(OtelErrorKind::Flush, e))
    }

    /// Sends what is queued and stops the export; spans that end later are
    /// dropped.
    ///
    /// # Errors
    ///
    /// When the last spans could not be sent, or the export was already
    /// shut down.
    pub fn shutdown(&self) -> Result<(), OtelError> {
        self.provider
            .shutdown()
            .map_err(|e| OtelError::new(OtelErrorKind::Shutdown, e))
    }
}

impl Drop for OtlpExporter {
    fn drop(&mut self) {
        // Already shut down is fine; a failed last export has no one to
        // report to.
        let _ = self.provider.shutdown();
    }
}

impl fmt::Debug for OtlpExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpExporter").finish_non_exhaustive()
    }
}

// === impl OtlpExporterBuilder ===

impl OtlpExporterBuilder {
    /// The collector's base URL, e.g. `http://127.0.0.1:4318`; spans go to
    /// its `/v1/traces`.
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// The `service.name` resource attribute (default `tollgate`).
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = Some(name.into());
        self
    }

    /// How long one export request may take (the exporter's default is
    /// 10 seconds).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The exporter, with a batch processor on its own thread.
    ///
    /// # Errors
    ///
    /// [`OtelErrorKind::Build`]: the endpoint is not a URL, or the HTTP
    /// client could not be built.
    pub fn build(self) -> Result<OtlpExporter, OtelError> {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary);
        if let Some(endpoint) = &self.endpoint {
            exporter = exporter.with_endpoint(traces_url(endpoint));
        }
        if let Some(timeout) = self.timeout {
            exporter = exporter.with_timeout(timeout);
        }
        let exporter = exporter
            .build()
            .map_err(|e| OtelError::new(OtelErrorKind::Build, e))?;
        let service_name = self.service_name.unwrap_or_else(|| SCOPE.to_owned());
        let provider = SdkTracerProvider::builder()
            .with_resource(Resource::builder().with_service_name(service_name).build())
            .with_batch_exporter(exporter)
            .build();
        Ok(OtlpExporter { provider })
    }
}

/// The OTLP/HTTP traces URL of a collector's base URL.
fn traces_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    }
}

// === impl OtelError ===

impl OtelError {
    fn new(kind: OtelErrorKind, source: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self {
            kind,
            source: source.into(),
        }
    }

    /// What failed.
    #[must_use]
    pub fn kind(&self) -> OtelErrorKind {
        self.kind
    }
}

impl fmt::Display for OtelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            OtelErrorKind::Build => "building the OTLP exporter failed",
            OtelErrorKind::Flush => "flushing the OTLP export failed",
            OtelErrorKind::Shutdown => "shutting the OTLP export down failed",
        };
        write!(f, "{what}: {}", self.source)
    }
}

impl Error for OtelError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.source)
    }
}

// === impl ServerSpan ===

impl ServerSpan {
    /// Opens the span of `req`, joined to the caller's trace, and points
    /// the request's [`TraceContext`] and `traceparent` at it. `None` when
    /// no subscriber wants the span.
    pub(crate) fn start<B>(req: &mut Request<B>) -> Option<Self> {
        let method = semconv_method(req.method());
        let ext = req.extensions();
        let client = ext
            .get::<ClientIp>()
            .map(|ip| ip.0)
            .or_else(|| ext.get::<ConnectionInfo>().map(|c| c.remote.ip()));
        let span = tracing::info_span!(
            target: SERVER_SPAN_TARGET,
            "request",
            otel.name = method,
            otel.kind = "server",
            http.request.method = method,
            url.path = req.uri().path(),
            client.address = client.map(tracing::field::display),
        );
        if span.is_disabled() {
            return None;
        }
        let trace = ext.get::<TraceContext>().copied();
        if let (Some(trace), Some(parent)) = (trace, ext.get::<ParentSpanId>()) {
            let remote = SpanContext::new(
                TraceId::from_bytes(trace.trace_id),
                SpanId::from_bytes(parent.0),
                TraceFlags::new(trace.flags),
                true,
                TraceState::default(),
            );
            // Fails only without an OpenTelemetry layer, checked below.
            let _ = span.set_parent(Context::new().with_remote_span_context(remote));
        }
        let cx = span.context();
        let started = cx.span().span_context().clone();
        if !started.is_valid() {
            // A subscriber without the OpenTelemetry layer: nothing exported.
            return None;
        }
        if trace.is_some() {
            let ours = TraceContext {
                trace_id: started.trace_id().to_bytes(),
                span_id: started.span_id().to_bytes(),
                flags: started.trace_flags().to_u8(),
            };
            if let Ok(value) = HeaderValue::from_bytes(&ours.traceparent_bytes()) {
                req.headers_mut().insert(TRACEPARENT, value);
            }
            req.extensions_mut().insert(ours);
        }
        Some(Self { span, cx })
    }

    /// The `tracing` span, entered while the inner service runs.
    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    /// Names the span after the route and records the outcome; the span
    /// ends when `self` is dropped.
    pub(crate) fn finish(self, method: &http::Method, route: Option<&RouteName>, status: u16) {
        let otel = self.cx.span();
        let method = semconv_method(method);
        match route {
            Some(route) => {
                otel.update_name(format!("{method} {route}"));
                otel.set_attribute(KeyValue::new("http.route", route.as_str().to_owned()));
            }
            None => otel.update_name(Cow::Borrowed(method)),
        }
        otel.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if status >= 500 {
            otel.set_attribute(KeyValue::new("error.type", status.to_string()));
            otel.set_status(Status::error(""));
        }
    }
}

/// The method as the HTTP semantic conventions want it: a known method's
/// name, else `_OTHER`.
fn semconv_method(method: &http::Method) -> &'static str {
    match method_label(method) {
        "other" => "_OTHER",
        known => known,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, atomic::AtomicUsize};

    use super::*;

    #[test]
    fn traces_url_appends_the_signal_path_once() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://127.0.0.1:4318/"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector/v1/traces"),
            "http://collector/v1/traces"
        );
    }

    #[test]
    fn unknown_methods_are_other() {
        assert_eq!(semconv_method(&http::Method::GET), "GET");
        let purge = http::Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(semconv_method(&purge), "_OTHER");
    }

    /// Counts the server spans opened.
    struct CountSpans(Arc<AtomicUsize>);

    impl<S: Subscriber> tracing_subscriber::Layer<S> for CountSpans {
        fn on_new_span(
            &self,
            attrs: &tracing::span::Attributes<'_>,
            _id: &tracing::span::Id,
            _ctx: tracing_subscriber::layer::Context<'_, S>,
        ) {
            if attrs.metadata().target() == SERVER_SPAN_TARGET {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    #[test]
    fn spans_are_opened_by_default_only_for_an_exporter_layer() {
        use tower::{Layer as _, Service as _};
        use tracing_subscriber::prelude::*;

        let opened = Arc::new(AtomicUsize::new(0));
        let subscriber = tracing_subscriber::registry().with(CountSpans(Arc::clone(&opened)));
        let _guard = tracing::subscriber::set_default(subscriber);
        let call = |layer: crate::ObserveLayer| {
            let mut svc = layer.layer(tower::service_fn(|_req: Request<String>| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
            }));
            drop(svc.call(Request::new(String::new())));
        };
        // No `OtlpExporter::layer` in this test binary: the default opens none.
        assert!(!exporter_layer_made());
        call(crate::ObserveLayer::access_log_only());
        assert_eq!(opened.load(Ordering::Relaxed), 0);
        // Asked for: opened for whatever OpenTelemetry layer is there.
        call(crate::ObserveLayer::builder().server_spans(true).build());
        assert_eq!(opened.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn no_subscriber_no_span() {
        let mut req = Request::get("/").body(()).unwrap();
        assert!(ServerSpan::start(&mut req).is_none());
        assert!(req.headers().get(TRACEPARENT).is_none());
    }
}
