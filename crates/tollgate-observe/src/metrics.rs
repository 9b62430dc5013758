//! The Prometheus registry of the gateway.

use std::{
    cell::RefCell,
    collections::HashMap,
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use http::Method;
use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};
use rustc_hash::FxBuildHasher;
use tollgate_core::RouteName;
use tollgate_core::{Problem, UpstreamErrorKind, problem};

/// The `Content-Type` of [`Metrics::render`]'s output: the OpenMetrics text
/// format, which Prometheus scrapes natively.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The label value for a request that no route matched.
pub const UNMATCHED: &str = "unmatched";

/// Bucket bounds of the latency histograms, in seconds: 0.5 ms to 10 s.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The metrics of one gateway, in their own Prometheus registry.
///
/// There is no global recorder: two gateways (or two tests) in one process
/// each own a `Metrics` and never see each other's counts. Cloning is cheap
/// and shares the registry.
///
/// | metric                                               | type      | labels                  | recorded by |
/// |------------------------------------------------------|-----------|-------------------------|-------------|
/// | `tollgate_requests_total`                            | counter   | `route, method, status` | [`ObserveLayer`](crate::ObserveLayer) |
/// | `tollgate_request_duration_seconds`                  | histogram | `route`                 | [`ObserveLayer`](crate::ObserveLayer) |
/// | `tollgate_in_flight_requests`                        | gauge     |                         | [`ObserveLayer`](crate::ObserveLayer) |
/// | `tollgate_rejections_total`                          | counter   | `type`                  | [`ObserveLayer`](crate::ObserveLayer), for every response carrying a [`Problem`](tollgate_core::Problem) |
/// | `tollgate_auth_failures_total`                       | counter   | `reason`                | [`ObserveLayer`](crate::ObserveLayer), for 401, 403 and 503 answers of the auth layer (`expired`, `bad_signature` …) |
/// | `tollgate_rate_limited_total`                        | counter   | `plan`                  | [`ObserveLayer`](crate::ObserveLayer), for 429 answers of the rate limiter |
/// | `tollgate_upstream_duration_seconds`                 | histogram | `upstream`              | [`Metrics::record_upstream`] |
/// | `tollgate_upstream_errors_total`                     | counter   | `upstream, kind`        | [`Metrics::record_upstream_error`] |
/// | `tollgate_upstream_retries_total`                    | counter   | `upstream`              | [`Metrics::record_upstream_retries`]: retries, each a send to another endpoint after a failed connection (a request retried twice counts 2) |
/// | `tollgate_connections_open`                          | gauge     |                         | [`Metrics::connection_opened`]: client connections accepted and not closed yet, TLS handshakes included (upgraded connections leave it once their tunnel takes over) |
/// | `tollgate_tunnels_open`                              | gauge     |                         | [`Metrics::track_tunnels`]: upgraded connections (WebSockets) whose tunnel runs, read at each scrape |
/// | `tollgate_connections_total`                         | counter   |                         | [`Metrics::connection_opened`]: client connections accepted |
/// | `tollgate_connection_errors_total`                   | counter   | `reason`                | [`Metrics::connection_error`]: connections closed before a request, by reason (`proxy_protocol`, `tls_handshake`, `header_timeout`) |
/// | `tollgate_tls_handshakes_total`                      | counter   | `version`               | [`Metrics::tls_handshake`]: TLS handshakes completed, by protocol version (`1.2`, `1.3`) |
/// | `tollgate_tls_resumed_handshakes_total`              | counter   | `version`               | [`Metrics::tls_resumed_handshake`]: those of them that resumed a session (a ticket or the session cache) instead of a full handshake |
/// | `tollgate_tls_certificate_expiry_timestamp_seconds`  | gauge     | `certificate`           | [`Metrics::set_tls_certificates`]: each served certificate's `notAfter` as a Unix time, `certificate` being `default` or its SNI name |
/// | `tollgate_upstream_endpoint_healthy`                 | gauge     | `upstream, endpoint`    | [`Metrics::track_endpoint_health`]: 1 while an endpoint is in balancing (passing its health check, not cooling off), else 0; read at each scrape |
///
/// The [`ObserveLayer`](crate::ObserveLayer) calls
/// [`Metrics::record_upstream`] and [`Metrics::record_upstream_error`] when a
/// request ends, from the upstream call the proxy recorded in the
/// [`Observed`](tollgate_core::Observed) slot. A labelled family is absent
/// from the exposition until its first sample (prometheus-client leaves it
/// out).
///
/// Label cardinality is bounded: `route` is the route's configured name (or
/// `unmatched`), never the raw path; `method` is a standard method name or
/// `other`; `status` is the numeric code.
///
/// See the [crate docs](crate) for an example.
#[derive(Clone)]
#[must_use]
pub struct Metrics {
    inner: Arc<Inner>,
}

/// Holds one connection in `tollgate_connections_open`; see
/// [`Metrics::connection_opened`].
#[derive(Debug)]
#[must_use = "the connection counts as open only while the guard lives"]
pub struct ConnectionGuard {
    open: Gauge,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// `tollgate_tunnels_open`, counted when scraped: the guards of the
/// [`Drain`](tollgate_core::Drain)s given to [`Metrics::track_tunnels`].
/// A collector, because a tunnel's end passes through nothing of this
/// crate's that could lower a gauge.
#[derive(Debug, Default)]
struct Tunnels(std::sync::Mutex<Vec<tollgate_core::Drain>>);

impl prometheus_client::collector::Collector for Tunnels {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), fmt::Error> {
        use prometheus_client::{encoding::EncodeMetric, metrics::gauge::ConstGauge};
        let drains = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let open: usize = drains.iter().map(tollgate_core::Drain::active).sum();
        let gauge = ConstGauge::new(i64::try_from(open).unwrap_or(i64::MAX));
        let metric = encoder.encode_descriptor(
            "tollgate_tunnels_open",
            "Upgraded connections (WebSockets) whose tunnel runs",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(metric)
    }
}

/// What [`Metrics::track_endpoint_health`] reads at each scrape.
type EndpointHealthSource = dyn Fn(&mut dyn FnMut(&str, &str, bool)) + Send + Sync;

/// `tollgate_upstream_endpoint_healthy`, read from the source set last.
#[derive(Default)]
struct EndpointHealth(std::sync::Mutex<Option<Arc<EndpointHealthSource>>>);

impl fmt::Debug for EndpointHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointHealth").finish_non_exhaustive()
    }
}

impl prometheus_client::collector::Collector for EndpointHealth {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), fmt::Error> {
        use prometheus_client::{
            encoding::EncodeMetric,
            metrics::{MetricType, gauge::ConstGauge},
        };
        let source = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let Some(source) = source else { return Ok(()) };
        let mut samples = Vec::new();
        source(&mut |upstream, endpoint, healthy| {
            samples.push((upstream.to_owned(), endpoint.to_owned(), healthy));
        });
        if samples.is_empty() {
            return Ok(());
        }
        let mut family = encoder.encode_descriptor(
            "tollgate_upstream_endpoint_healthy",
            "1 while an upstream endpoint is in balancing (passing its health check, not cooling off)",
            None,
            MetricType::Gauge,
        )?;
        for (upstream, endpoint, healthy) in &samples {
            let labels = [
                ("upstream", upstream.as_str()),
                ("endpoint", endpoint.as_str()),
            ];
            let metric = family.encode_family(&labels)?;
            ConstGauge::new(i64::from(*healthy)).encode(metric)?;
        }
        Ok(())
    }
}

/// Why a connection was closed before a request; see
/// [`Metrics::connection_error`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionError {
    /// No good PROXY protocol header, or a peer not allowed to send one.
    ProxyProtocol,
    /// The TLS handshake failed or timed out, or it resumed a session
    /// whose client certificate has expired.
    TlsHandshake,
    /// No request head within the header read timeout.
    HeaderTimeout,
}

impl ConnectionError {
    /// The `reason` label.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ProxyProtocol => "proxy_protocol",
            Self::TlsHandshake => "tls_handshake",
            Self::HeaderTimeout => "header_timeout",
        }
    }
}

struct Inner {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    in_flight: Gauge,
    rejections: Family<RejectionLabels, Counter>,
    auth_failures: Family<ReasonLabels, Counter>,
    rate_limited: Family<PlanLabels, Counter>,
    upstream_duration: Family<UpstreamLabels, Histogram, fn() -> Histogram>,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    upstream_retries: Family<UpstreamLabels, Counter>,
    connections_open: Gauge,
    connections: Counter,
    connection_errors: Family<ConnectionErrorLabels, Counter>,
    tls_handshakes: Family<TlsVersionLabels, Counter>,
    tls_resumed: Family<TlsVersionLabels, Counter>,
    certificates: Family<CertificateLabels, Gauge>,
    /// The `certificate` labels set last, to remove the ones that go.
    certificate_names: std::sync::Mutex<Vec<String>>,
    /// The drains whose tunnels `tollgate_tunnels_open` counts.
    tunnels: Arc<Tunnels>,
    /// What `tollgate_upstream_endpoint_healthy` reads.
    endpoint_health: Arc<EndpointHealth>,
    unmatched: RouteLabel,
    /// Tells this registry's entries in the per-thread [`HANDLES`] apart.
    id: u64,
}

/// The request counter and the duration histogram of one route, method
/// and status: clones of the family members, sharing their counts.
struct RequestHandles {
    requests: Counter,
    duration: Histogram,
}

/// The [`RequestHandles`] this thread has used, by registry, method and
/// status, then by route name.
///
/// Looking a label set up in a `Family` hashes it with SipHash under the
/// family's read lock, twice per request (counter and histogram); this
/// cache hashes a short key with FxHash and takes no lock. Its keys are
/// bounded like the labels are (configured route names, standard methods,
/// status codes); past [`MAX_CACHED`] entries it starts over, so entries
/// of dropped registries do not pile up.
#[derive(Default)]
struct HandleCache {
    by_key: HashMap<
        (u64, &'static str, u16),
        HashMap<Box<str>, RequestHandles, FxBuildHasher>,
        FxBuildHasher,
    >,
    len: usize,
}

/// The most [`RequestHandles`] one thread keeps.
const MAX_CACHED: usize = 1024;

thread_local! {
    static HANDLES: RefCell<HandleCache> = RefCell::new(HandleCache::default());
}

/// The id of the next [`Metrics::new`].
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A route name as a label value, without copying it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct RouteLabel(RouteName);

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: RouteLabel,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route: RouteLabel,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RejectionLabels {
    r#type: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: Arc<str>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PlanLabels {
    plan: Arc<str>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: Arc<str>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ConnectionErrorLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TlsVersionLabels {
    version: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CertificateLabels {
    certificate: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UpstreamErrorLabels {
    upstream: Arc<str>,
    kind: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

// === impl Metrics ===

impl Metrics {
    /// A new registry with every tollgate metric family registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let in_flight = Gauge::default();
        let rejections = Family::<RejectionLabels, Counter>::default();
        let auth_failures = Family::<ReasonLabels, Counter>::default();
        let rate_limited = Family::<PlanLabels, Counter>::default();
        let upstream_duration =
            Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let upstream_errors = Family::<UpstreamErrorLabels, Counter>::default();
        let upstream_retries = Family::<UpstreamLabels, Counter>::default();
        let certificates = Family::<CertificateLabels, Gauge>::default();
        let connections_open = Gauge::default();
        let connections = Counter::default();
        let connection_errors = Family::<ConnectionErrorLabels, Counter>::default();
        let tunnels = Arc::new(Tunnels::default());
        registry.register_collector(Box::new(Arc::clone(&tunnels)));
        let endpoint_health = Arc::new(EndpointHealth::default());
        registry.register_collector(Box::new(Arc::clone(&endpoint_health)));
        let tls_handshakes = Family::<TlsVersionLabels, Counter>::default();
        let tls_resumed = Family::<TlsVersionLabels, Counter>::default();

        registry.register(
            "tollgate_requests",
            "Requests answered, by route, method and status",
            requests.clone(),
        );
        registry.register_with_unit(
            "tollgate_request_duration",
            "Time from receiving a request to the end of its response body, by route",
            Unit::Seconds,
            duration.clone(),
        );
        registry.register(
            "tollgate_in_flight_requests",
            "Requests received whose response has not ended yet",
            in_flight.clone(),
        );
        registry.register(
            "tollgate_rejections",
            "Responses the gateway answered itself with a problem, by problem type",
            rejections.clone(),
        );
        registry.register(
            "tollgate_auth_failures",
            "Requests the auth layer refused or could not check, by reason",
            auth_failures.clone(),
        );
        registry.register(
            "tollgate_rate_limited",
            "Requests refused by a rate limit, by plan",
            rate_limited.clone(),
        );
        registry.register_with_unit(
            "tollgate_upstream_duration",
            "Time of upstream calls, by upstream",
            Unit::Seconds,
            upstream_duration.clone(),
        );
        registry.register(
            "tollgate_upstream_errors",
            "Failed upstream calls, by upstream and kind",
            upstream_errors.clone(),
        );
        registry.register(
            "tollgate_upstream_retries",
            "Retries (sends to another endpoint after a failed connection), by upstream",
            upstream_retries.clone(),
        );
        registry.register(
            "tollgate_connections_open",
            "Client connections accepted and not closed yet, TLS handshakes included",
            connections_open.clone(),
        );
        registry.register(
            "tollgate_connections",
            "Client connections accepted",
            connections.clone(),
        );
        registry.register(
            "tollgate_connection_errors",
            "Client connections closed before a request, by reason",
            connection_errors.clone(),
        );
        registry.register(
            "tollgate_tls_handshakes",
            "TLS handshakes completed, by protocol version",
            tls_handshakes.clone(),
        );
        registry.register(
            "tollgate_tls_resumed_handshakes",
            "TLS handshakes that resumed a session, by protocol version",
            tls_resumed.clone(),
        );
        registry.register_with_unit(
            "tollgate_tls_certificate_expiry_timestamp",
            "When each served TLS certificate expires (its notAfter, Unix time), by certificate",
            Unit::Seconds,
            certificates.clone(),
        );

        Self {
            inner: Arc::new(Inner {
                registry,
                requests,
                duration,
                in_flight,
                rejections,
                auth_failures,
                rate_limited,
                upstream_duration,
                upstream_errors,
                upstream_retries,
                connections_open,
                connections,
                connection_errors,
                tls_handshakes,
                tls_resumed,
                certificates,
                certificate_names: std::sync::Mutex::default(),
                tunnels,
                endpoint_health,
                unmatched: RouteLabel(RouteName::new(UNMATCHED)),
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            }),
        }
    }

    /// The exposition in the OpenMetrics text format (see [`CONTENT_TYPE`]),
    /// ending with `# EOF`.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        if encode(&mut out, &self.inner.registry).is_err() {
            out.clear();
        }
        out
    }

    /// The current value of `tollgate_in_flight_requests`.
    #[must_use]
    pub fn in_flight(&self) -> i64 {
        self.inner.in_flight.get()
    }

    /// Counts a client connection accepted
    /// (`tollgate_connections_total`) and holds it in
    /// `tollgate_connections_open` until the guard is dropped.
    /// `tollgate::serve` calls it for every connection when given
    /// `Serve::metrics`.
    pub fn connection_opened(&self) -> ConnectionGuard {
        self.inner.connections.inc();
        self.inner.connections_open.inc();
        ConnectionGuard {
            open: self.inner.connections_open.clone(),
        }
    }

    /// Counts the tunnels of `drain` (upgraded connections, whose guards
    /// it hands out) in `tollgate_tunnels_open`, read at each scrape.
    /// `tollgate::serve` calls it with its drain when given
    /// `Serve::metrics`; with the connections in
    /// `tollgate_connections_open`, that is what `max_connections` counts.
    pub fn track_tunnels(&self, drain: &tollgate_core::Drain) {
        self.inner
            .tunnels
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(drain.clone());
    }

    /// Counts a connection closed before a request
    /// (`tollgate_connection_errors_total{reason}`): `proxy_protocol` (no
    /// good PROXY header, or a peer not allowed), `tls_handshake` (failed
    /// or timed out), `header_timeout` (no request head in time).
    pub fn connection_error(&self, reason: ConnectionError) {
        let labels = ConnectionErrorLabels {
            reason: reason.as_str(),
        };
        self.inner.connection_errors.get_or_create(&labels).inc();
    }

    /// Counts a completed TLS handshake of `version` (`1.2`, `1.3`) into
    /// `tollgate_tls_handshakes_total{version}`: how many clients still
    /// speak TLS 1.2, before requiring 1.3. `tollgate::serve` calls it
    /// when given `Serve::metrics`.
    pub fn tls_handshake(&self, version: &'static str) {
        let labels = TlsVersionLabels { version };
        self.inner.tls_handshakes.get_or_create(&labels).inc();
    }

    /// Counts a TLS handshake of `version` that resumed a session, in
    /// `tollgate_tls_resumed_handshakes_total{version}` (besides
    /// [`tls_handshake`](Self::tls_handshake)): its ratio to all
    /// handshakes is the resumption rate, which shared session ticket
    /// keys keep up across instances. `tollgate::serve` calls it when
    /// given `Serve::metrics`.
    pub fn tls_resumed_handshake(&self, version: &'static str) {
        let labels = TlsVersionLabels { version };
        self.inner.tls_resumed.get_or_create(&labels).inc();
    }

    /// Reads `tollgate_upstream_endpoint_healthy{upstream, endpoint}` from
    /// `source` at each scrape: it calls its argument once per endpoint
    /// with `(upstream, endpoint, healthy)`. A later call replaces the
    /// source. `tollgate::Health::report_to` sets it to the upstreams of
    /// the gateway last built with that `Health`, which the config server
    /// does for its own; alert on
    /// `sum by (upstream) (tollgate_upstream_endpoint_healthy) == 0`.
    pub fn track_endpoint_health(
        &self,
        source: impl Fn(&mut dyn FnMut(&str, &str, bool)) + Send + Sync + 'static,
    ) {
        *self
            .inner
            .endpoint_health
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(source));
    }

    /// Sets `tollgate_tls_certificate_expiry_timestamp_seconds`: one
    /// sample per served certificate, named `default` or by its SNI name,
    /// at its `notAfter` in seconds since the Unix epoch. Certificates not
    /// in `certificates` (gone in a reload) are removed once the new
    /// values are in, so a scrape never sees none. It holds one TLS
    /// listener's certificates: a second listener reporting to the same
    /// `Metrics` replaces the first one's. A TLS listener's
    /// `tollgate::TlsConfig::report_to` calls it when its certificates
    /// are loaded and reloaded; alert on
    /// `tollgate_tls_certificate_expiry_timestamp_seconds - time() < 14 * 86400`.
    pub fn set_tls_certificates<'a>(&self, certificates: impl IntoIterator<Item = (&'a str, i64)>) {
        let family = &self.inner.certificates;
        // Held throughout, so two calls never interleave their samples.
        let mut names = self
            .inner
            .certificate_names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut now = Vec::new();
        for (name, not_after) in certificates {
            let labels = CertificateLabels {
                certificate: name.to_owned(),
            };
            family.get_or_create(&labels).set(not_after);
            now.push(labels.certificate);
        }
        for gone in names.iter().filter(|name| !now.contains(name)) {
            family.remove(&CertificateLabels {
                certificate: gone.clone(),
            });
        }
        *names = now;
    }

    /// Records one upstream call of `duration` into
    /// `tollgate_upstream_duration_seconds{upstream}` (the
    /// [`ObserveLayer`](crate::ObserveLayer) does, from the proxy's
    /// record).
    pub fn record_upstream(&self, upstream: impl Into<Arc<str>>, duration: Duration) {
        let labels = UpstreamLabels {
            upstream: upstream.into(),
        };
        self.inner
            .upstream_duration
            .get_or_create(&labels)
            .observe(duration.as_secs_f64());
    }

    /// Counts one failed upstream call into
    /// `tollgate_upstream_errors_total{upstream,kind}` (the
    /// [`ObserveLayer`](crate::ObserveLayer) does, from the proxy's
    /// record).
    pub fn record_upstream_error(&self, upstream: impl Into<Arc<str>>, kind: UpstreamErrorKind) {
        let labels = UpstreamErrorLabels {
            upstream: upstream.into(),
            kind: kind.as_str(),
        };
        self.inner.upstream_errors.get_or_create(&labels).inc();
    }

    /// Adds `retries`, the sends of one request to other endpoints after
    /// failed connections, to
    /// `tollgate_upstream_retries_total{upstream}` (the
    /// [`ObserveLayer`](crate::ObserveLayer) does, from the proxy's
    /// record).
    pub fn record_upstream_retries(&self, upstream: impl Into<Arc<str>>, retries: u32) {
        let labels = UpstreamLabels {
            upstream: upstream.into(),
        };
        self.inner
            .upstream_retries
            .get_or_create(&labels)
            .inc_by(u64::from(retries));
    }

    pub(crate) fn request_started(&self) {
        self.inner.in_flight.inc();
    }

    pub(crate) fn request_finished(&self, done: &Finished<'_>) {
        let inner = &*self.inner;
        inner.in_flight.dec();
        let method = method_label(done.method);
        let record = |handles: &RequestHandles| {
            handles.duration.observe(done.elapsed.as_secs_f64());
            handles.requests.inc();
        };
        let cached = HANDLES.try_with(|cache| {
            let Ok(mut cache) = cache.try_borrow_mut() else {
                return false;
            };
            let key = (inner.id, method, done.status);
            let route = done.route.map_or(UNMATCHED, RouteName::as_str);
            if let Some(handles) = cache.by_key.get(&key).and_then(|routes| routes.get(route)) {
                record(handles);
                return true;
            }
            let handles = self.request_handles(done.route, method, done.status);
            record(&handles);
            if cache.len >= MAX_CACHED {
                cache.by_key.clear();
                cache.len = 0;
            }
            cache
                .by_key
                .entry(key)
                .or_default()
                .insert(route.into(), handles);
            cache.len += 1;
            true
        });
        if !cached.unwrap_or(false) {
            // The thread is exiting or the cache is in use: the families.
            record(&self.request_handles(done.route, method, done.status));
        }
        if let Some(r#type) = done.problem_type {
            inner
                .rejections
                .get_or_create(&RejectionLabels { r#type })
                .inc();
            if let Some(label) = done.problem_label {
                if r#type == problem::RATE_LIMITED {
                    let plan = PlanLabels { plan: label.into() };
                    inner.rate_limited.get_or_create(&plan).inc();
                } else {
                    let reason = ReasonLabels {
                        reason: label.into(),
                    };
                    inner.auth_failures.get_or_create(&reason).inc();
                }
            }
        }
    }
}

impl Metrics {
    /// The family members of one route, method and status, created when
    /// they are new.
    fn request_handles(
        &self,
        route: Option<&RouteName>,
        method: &'static str,
        status: u16,
    ) -> RequestHandles {
        let inner = &*self.inner;
        let route = route.map_or_else(|| inner.unmatched.clone(), |r| RouteLabel(r.clone()));
        let duration = inner
            .duration
            .get_or_create(&RouteLabels {
                route: route.clone(),
            })
            .clone();
        let requests = inner
            .requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status,
            })
            .clone();
        RequestHandles { requests, duration }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

/// What the layer knows when a request is finished.
pub(crate) struct Finished<'a> {
    pub(crate) route: Option<&'a RouteName>,
    pub(crate) method: &'a Method,
    pub(crate) status: u16,
    pub(crate) elapsed: Duration,
    pub(crate) problem_type: Option<&'static str>,
    pub(crate) problem_label: Option<&'a str>,
}

/// The label a rejection adds to its own counter: the `reason` member of
/// an auth failure, the `plan` member of a rate-limit rejection. Both are
/// names from the gateway's code and configuration, so their number is
/// bounded.
pub(crate) fn problem_label(problem: &Problem) -> Option<&str> {
    match problem.type_uri() {
        problem::UNAUTHORIZED | problem::FORBIDDEN | problem::AUTH_UNAVAILABLE => {
            problem.member_value("reason")
        }
        problem::RATE_LIMITED => problem.member_value("plan"),
        _ => None,
    }
}

/// The `method` label: a standard method's name, or `other`.
pub(crate) fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

// === impl RouteLabel ===

impl EncodeLabelValue for RouteLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), fmt::Error> {
        EncodeLabelValue::encode(&self.0.as_str(), encoder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_methods_are_other() {
        assert_eq!(method_label(&Method::GET), "GET");
        let purge = Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(method_label(&purge), "other");
    }

    #[test]
    fn registries_are_independent() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.request_started();
        assert_eq!(a.in_flight(), 1);
        assert_eq!(b.in_flight(), 0);
    }

    #[test]
    fn upstream_families_are_declared_and_recordable() {
        let metrics = Metrics::new();
        let text = metrics.render();
        assert!(
            !text.contains("tollgate_upstream"),
            "empty families are left out"
        );
        metrics.record_upstream("users", Duration::from_millis(3));
        metrics.record_upstream_error("users", UpstreamErrorKind::Timeout);
        let text = metrics.render();
        assert!(text.contains("tollgate_upstream_duration_seconds_count{upstream=\"users\"} 1"));
        assert!(
            text.contains("tollgate_upstream_errors_total{upstream=\"users\",kind=\"timeout\"} 1")
        );
        assert!(text.contains("# TYPE tollgate_upstream_duration_seconds histogram"));
        assert!(text.contains("# UNIT tollgate_upstream_duration_seconds seconds"));
        assert!(text.ends_with("# EOF\n"));
    }

    fn finish(metrics: &Metrics, route: Option<&RouteName>, status: u16) {
        metrics.request_started();
        metrics.request_finished(&Finished {
            route,
            method: &Method::GET,
            status,
            elapsed: Duration::from_millis(2),
            problem_type: None,
            problem_label: None,
        });
    }

    #[test]
    fn cached_handles_count_into_their_own_registry() {
        let a = Metrics::new();
        let b = Metrics::new();
        // Equal names in different allocations are one series.
        finish(&a, Some(&RouteName::new("users")), 200);
        finish(&a, Some(&RouteName::new("users")), 200);
        finish(&a, Some(&RouteName::new("users")), 404);
        finish(&a, None, 404);
        finish(&b, Some(&RouteName::new("users")), 200);
        let text = a.render();
        assert!(
            text.contains(
                "tollgate_requests_total{route=\"users\",method=\"GET\",status=\"200\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "tollgate_requests_total{route=\"users\",method=\"GET\",status=\"404\"} 1"
            )
        );
        assert!(text.contains(
            "tollgate_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"} 1"
        ));
        assert!(text.contains("tollgate_request_duration_seconds_count{route=\"users\"} 3"));
        assert_eq!(a.in_flight(), 0);
        let text = b.render();
        assert!(
            text.contains(
                "tollgate_requests_total{route=\"users\",method=\"GET\",status=\"200\"} 1"
            )
        );
        assert!(text.contains("tollgate_request_duration_seconds_count{route=\"users\"} 1"));
    }

    #[test]
    fn a_full_cache_starts_over() {
        let metrics = Metrics::new();
        for i in 0..(MAX_CACHED + 10) {
            finish(&metrics, Some(&RouteName::new(format!("r{i}"))), 200);
        }
        finish(&metrics, Some(&RouteName::new("r0")), 200);
        let text = metrics.render();
        assert!(
            text.contains("tollgate_requests_total{route=\"r0\",method=\"GET\",status=\"200\"} 2")
        );
        assert!(HANDLES.with(|cache| cache.borrow().len) <= MAX_CACHED);
    }

    #[test]
    fn certificate_expiry_follows_the_last_set() {
        let metrics = Metrics::new();
        metrics.set_tls_certificates([("default", 1_925_164_800), ("api.test", 1_906_502_400)]);
        let out = metrics.render();
        assert!(
            out.contains("# TYPE tollgate_tls_certificate_expiry_timestamp_seconds gauge"),
            "{out}"
        );
        assert!(out.contains("tollgate_tls_certificate_expiry_timestamp_seconds{certificate=\"default\"} 1925164800\n"), "{out}");
        assert!(out.contains("tollgate_tls_certificate_expiry_timestamp_seconds{certificate=\"api.test\"} 1906502400\n"), "{out}");

        metrics.set_tls_certificates([("default", 1_956_700_800)]);
        let out = metrics.render();
        assert!(
            out.contains("{certificate=\"default\"} 1956700800\n"),
            "{out}"
        );
        assert!(!out.contains("api.test"), "{out}");
    }
}
