use tower::Layer;

use crate::{Metrics, Observe};

/// Applies [`Observe`]: access log and metrics for every request.
///
/// See the [crate docs](crate) for an example.
#[derive(Clone, Debug)]
#[must_use]
pub struct ObserveLayer {
    pub(crate) config: Config,
}

/// Builds an [`ObserveLayer`]; nothing in it can be invalid, so
/// [`ObserveBuilder::build`] does not fail.
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct ObserveBuilder {
    config: Config,
}

#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) metrics: Option<Metrics>,
    pub(crate) log_query: bool,
    #[cfg(feature = "otel")]
    pub(crate) server_spans: bool,
}

#[cfg_attr(
    not(feature = "otel"),
    expect(clippy::derivable_impls, reason = "spans default to on with `otel`")
)]
impl Default for Config {
    fn default() -> Self {
        Self {
            metrics: None,
            log_query: false,
            #[cfg(feature = "otel")]
            server_spans: true,
        }
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
        Observe::new(inner, self.config.clone())
    }
}

// === impl ObserveBuilder ===

impl ObserveBuilder {
    /// Records the metrics into `metrics` (by default none are recorded).
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.config.metrics = Some(metrics);
        self
    }

    /// Whether the access log's `path` includes the query string (default
    /// `false`: queries often carry personal data or tokens).
    pub fn log_query(mut self, log_query: bool) -> Self {
        self.config.log_query = log_query;
        self
    }

    /// Whether each request opens a server span for the OpenTelemetry
    /// export (default `true`); see [`otel`](crate::otel). Without a
    /// subscriber that wants the span, nothing is opened either way.
    #[cfg(feature = "otel")]
    #[cfg_attr(docsrs, doc(cfg(feature = "otel")))]
    pub fn server_spans(mut self, on: bool) -> Self {
        self.config.server_spans = on;
        self
    }

    /// The layer.
    pub fn build(self) -> ObserveLayer {
        ObserveLayer {
            config: self.config,
        }
    }
}
