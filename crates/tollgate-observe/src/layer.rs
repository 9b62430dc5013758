use std::sync::Arc;

use tower::Layer;

use crate::{AccessLogWriter, Metrics, Observe};

/// Applies [`Observe`]: access log and metrics for every request.
///
/// See the [crate docs](crate) for an example.
#[derive(Clone, Debug)]
#[must_use]
pub struct ObserveLayer {
    /// Shared by every service and request record the layer makes.
    pub(crate) config: Arc<Config>,
}

/// Builds an [`ObserveLayer`]; nothing in it can be invalid, so
/// [`ObserveBuilder::build`] does not fail.
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct ObserveBuilder {
    config: Config,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Config {
    pub(crate) metrics: Option<Metrics>,
    pub(crate) access_log: Option<AccessLogWriter>,
    pub(crate) log_query: bool,
    /// `None`: open them when an [`OtlpExporter`](crate::otel::OtlpExporter)
    /// layer exists in this process.
    #[cfg(feature = "otel")]
    pub(crate) server_spans: Option<bool>,
}

impl Config {
    /// Whether this request opens a server span.
    #[cfg(feature = "otel")]
    pub(crate) fn server_spans(&self) -> bool {
        self.server_spans
            .unwrap_or_else(crate::otel::exporter_layer_made)
    }
}

// === impl ObserveLayer ===

impl ObserveLayer {
    /// Access log and metrics into `metrics`, without the query string in
    /// the log.
    pub fn with_metrics(metrics: Metrics) -> Self {
        Self::builder().metrics(metrics).build()
    }

    /// Access log only: no metrics are recorded.
    pub fn access_log_only() -> Self {
        Self::builder().build()
    }

    /// A builder, with no metrics and without the query string in the log.
    pub fn builder() -> ObserveBuilder {
        ObserveBuilder::default()
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe::new(inner, Arc::clone(&self.config))
    }
}

// === impl ObserveBuilder ===

impl ObserveBuilder {
    /// Records the metrics into `metrics` (by default none are recorded).
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.config.metrics = Some(metrics);
        self
    }

    /// Writes each request's access line straight to `writer`, instead
    /// of emitting it as a `tracing` event of
    /// [`ACCESS_TARGET`](crate::ACCESS_TARGET) for the subscriber to write.
    ///
    /// The line is the same one [`JsonLines`](crate::JsonLines) (and so
    /// [`AccessLogWriter::layer`]) makes of the event, and costs about a
    /// third as much: no subscriber dispatch, no per-layer filters, no
    /// field visitor. What the event path offers in exchange is the
    /// subscriber's choice: other layers (OpenTelemetry logs, a custom
    /// format) see no access events once a writer is set here.
    pub fn access_log(mut self, writer: AccessLogWriter) -> Self {
        self.config.access_log = Some(writer);
        self
    }

    /// Whether the access log's `path` includes the query string (default
    /// `false`: queries often carry personal data or tokens).
    pub fn log_query(mut self, log_query: bool) -> Self {
        self.config.log_query = log_query;
        self
    }

    /// Whether each request opens a server span for the OpenTelemetry
    /// export; see [`otel`](crate::otel).
    ///
    /// By default the spans are opened once an
    /// [`OtlpExporter::layer`](crate::otel::OtlpExporter::layer) has been
    /// made in the process, and not before: opening a span costs about
    /// 80 ns per request, for nothing when no OpenTelemetry layer is there
    /// to export it (which a subscriber cannot be asked). Set `true` when
    /// the OpenTelemetry layer comes from elsewhere (`tracing_opentelemetry`
    /// directly), `false` to never open them. Without a subscriber that
    /// wants the span, nothing is opened either way.
    #[cfg(feature = "otel")]
    #[cfg_attr(docsrs, doc(cfg(feature = "otel")))]
    pub fn server_spans(mut self, on: bool) -> Self {
        self.config.server_spans = Some(on);
        self
    }

    /// The layer.
    pub fn build(self) -> ObserveLayer {
        ObserveLayer {
            config: Arc::new(self.config),
        }
    }
}
