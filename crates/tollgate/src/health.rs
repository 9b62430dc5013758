//! [`Health`]: the readiness probes of the gateway that was built last.

use std::{
    fmt,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use axum::body::Body;
use serde_json::{Value, json};
use tollgate_auth::AuthLayer;
use tollgate_observe::Metrics;
use tollgate_proxy::Upstream;
use tollgate_ratelimit::RateLimitLayer;

/// The name of the check that fails once a shutdown has begun
/// ([`Health::begin_shutdown`]).
const SHUTDOWN_CHECK: &str = "shutdown";

/// The name of the check that fails while an operator has the instance
/// out ([`Health::set_draining`]).
const DRAINING_CHECK: &str = "draining";

/// The longest a readiness check waits for one probe (a Redis `PING`).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// A handle on the readiness probes of a gateway, for `/readyz`.
///
/// Give the same handle to [`GatewayBuilder::health`](crate::GatewayBuilder::health):
/// each successful `build()` (or `build_service()`) replaces the probes
/// with those of the gateway it built, so a hot reload that builds a new
/// gateway with the same handle swaps them, and a failed build leaves the
/// old ones. Clones share the probes; [`check`](Self::check) runs them.
///
/// The probes, by check name:
///
/// | name                  | ready when                                         |
/// |-----------------------|----------------------------------------------------|
/// | `auth <route>`        | the route's [`AuthLayer::is_ready`]: keys loaded    |
/// | `upstream <name>`     | [`Upstream::is_healthy`]: an endpoint passes its health check (when there is one) and is not cooling off |
/// | `redis <layer>`       | the rate limit's store answers `PING` within its timeout (and [`PROBE_TIMEOUT`]) |
/// | `shutdown`            | never: present (first) once [`begin_shutdown`](Self::begin_shutdown) was called |
/// | `draining`            | never: present (first) while [`set_draining`](Self::set_draining) has the instance out |
///
/// Every upstream of the gateway is checked, and every rate limit whose
/// store can be pinged ([`RateLimitLayer::ping`]: Redis, not memory),
/// once per layer name (the gateway-wide limit counts once).
///
/// ```
/// use tollgate::{Gateway, Health, Route, Upstream};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let health = Health::new();
/// assert!(health.check().await.is_ready()); // nothing built: no probes
///
/// let _gateway = Gateway::builder()
///     .upstream(Upstream::builder("users").endpoint("http://127.0.0.1:8081"))
///     .route(Route::prefix("/api/users").to("users"))
///     .health(health.clone())
///     .build()?;
/// let report = health.check().await;
/// assert_eq!(report.checks()[0].name(), "upstream users");
/// assert!(report.is_ready()); // no connection was refused yet
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct Health {
    probes: Arc<ArcSwap<Vec<Probe>>>,
    shutting_down: Arc<AtomicBool>,
    draining: Arc<AtomicBool>,
}

/// One probe: a check name and what it asks.
#[derive(Clone)]
pub(crate) struct Probe {
    name: String,
    kind: ProbeKind,
}

#[derive(Clone)]
enum ProbeKind {
    Auth(AuthLayer),
    Upstream(Upstream<Body>),
    Store(RateLimitLayer),
}

/// The probes of one gateway, gathered while it is built.
#[derive(Debug, Default)]
pub(crate) struct Probes(Vec<Probe>);

/// The layers of one route that have probes, kept by the route's builder.
#[derive(Clone, Debug, Default)]
pub(crate) struct RouteProbes {
    pub(crate) auth: Option<AuthLayer>,
    pub(crate) rate_limit: Option<RateLimitLayer>,
}

/// The result of [`Health::check`]: ready when every check is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readiness {
    checks: Vec<ReadinessCheck>,
}

/// One check of a [`Readiness`] report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadinessCheck {
    name: String,
    ready: bool,
    detail: Option<String>,
}

// === impl Health ===

impl Health {
    /// A handle with no probes (ready) until a gateway is built with it.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs every probe, at once, and reports. A probe that needs the
    /// network (Redis) gets at most [`PROBE_TIMEOUT`]; the others answer
    /// without waiting.
    pub async fn check(&self) -> Readiness {
        let probes = self.probes.load_full();
        let mut checks = futures_util::future::join_all(probes.iter().map(Probe::run)).await;
        // The instance's own state comes first: shutdown, then draining.
        let own = [
            (self.is_shutting_down(), SHUTDOWN_CHECK, "shutting down"),
            (
                self.is_draining(),
                DRAINING_CHECK,
                "taken out of the load balancer by an operator",
            ),
        ];
        let failing = own
            .into_iter()
            .filter(|(on, _, _)| *on)
            .map(|(_, name, detail)| ReadinessCheck {
                name: name.to_owned(),
                ready: false,
                detail: Some(detail.to_owned()),
            });
        checks.splice(0..0, failing);
        Readiness { checks }
    }

    /// From now on every [`check`](Self::check) is not ready, with a
    /// first check named `shutdown`: the instance is going away, and a
    /// load balancer polling `/readyz` should stop sending it new
    /// connections. Nothing else changes; the server keeps serving until
    /// its own shutdown. There is no way back: a new process starts ready.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    /// Whether [`begin_shutdown`](Self::begin_shutdown) was called.
    #[must_use]
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// Takes the instance out of its load balancer (`true`) or puts it
    /// back (`false`) without stopping it: while out, every
    /// [`check`](Self::check) is not ready, with a first check named
    /// `draining`, so a balancer polling `/readyz` stops sending new
    /// connections; the instance keeps serving whatever still comes, and
    /// nothing else changes. For maintenance, or to look at one instance
    /// under no load. The admin listener's `POST /healthcheck/fail` and
    /// `POST /healthcheck/ok` call it (Envoy's endpoints). It does not undo
    /// [`begin_shutdown`](Self::begin_shutdown), and a new process starts
    /// in.
    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Relaxed);
    }

    /// Whether [`set_draining`](Self::set_draining) has the instance out.
    #[must_use]
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// A shutdown future for [`serve`](crate::serve) that lets load
    /// balancers notice first: when `signal` completes it fails readiness
    /// ([`begin_shutdown`](Self::begin_shutdown)), keeps serving for
    /// `delay` (set it to a few of the balancer's health-check intervals),
    /// then completes, and the server stops accepting and drains. Traefik's
    /// `requestAcceptGraceTimeout`, Envoy's failing health check before a
    /// drain; `[server] shutdown_delay` in the config file.
    ///
    /// ```no_run
    /// # async fn run(router: axum::Router, health: tollgate::Health) -> std::io::Result<()> {
    /// use std::time::Duration;
    ///
    /// let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
    /// let shutdown = health.shutdown_after(tollgate::shutdown_signal(), Duration::from_secs(5));
    /// tollgate::serve(listener, router, shutdown).await
    /// # }
    /// ```
    pub fn shutdown_after<F>(
        &self,
        signal: F,
        delay: Duration,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let health = self.clone();
        async move {
            signal.await;
            health.begin_shutdown();
            if !delay.is_zero() {
                tracing::info!(
                    ?delay,
                    "shutting down: readiness fails now; still serving until the delay is over"
                );
                tokio::time::sleep(delay).await;
            }
        }
    }

    /// Reports the endpoints of the upstreams this handle checks (those of
    /// the gateway built last with it) as
    /// `tollgate_upstream_endpoint_healthy{upstream, endpoint}` on
    /// `metrics`, read at each scrape: 1 while an endpoint passes its
    /// health check and is not cooling off, else 0 (see
    /// [`Metrics::track_endpoint_health`]). The last `metrics` given
    /// reports; `config::Server` does this with the admin listener's.
    pub fn report_to(&self, metrics: &Metrics) {
        let this = self.clone();
        metrics.track_endpoint_health(move |emit| {
            for upstream in this.upstreams() {
                for (endpoint, healthy) in upstream.endpoint_health() {
                    emit(upstream.name(), endpoint, healthy);
                }
            }
        });
    }

    /// The endpoints of the upstreams this handle checks (those of the
    /// gateway built last with it), for the admin listener's
    /// `GET /upstreams`: `{"upstreams": [{"name", "healthy_endpoints",
    /// "endpoints": [{"endpoint", "healthy", "passing_health_check",
    /// "out_for_ms", "in_flight", "weight"}]}]}`, with `out_for_ms` present
    /// only while the endpoint is out for a while (see
    /// [`Upstream::endpoint_status`]). An endpoint of `"weight": 0` gets no
    /// requests, healthy or not.
    #[must_use]
    pub fn upstreams_json(&self) -> Value {
        let upstreams: Vec<Value> = self
            .upstreams()
            .iter()
            .map(|upstream| {
                let endpoints: Vec<Value> = upstream
                    .endpoint_status()
                    .into_iter()
                    .map(|e| {
                        let mut json = json!({
                            "endpoint": &*e.endpoint,
                            "healthy": e.healthy,
                            "passing_health_check": e.passing_health_check,
                            "in_flight": e.in_flight,
                            "weight": e.weight,
                        });
                        if let (Some(out_for), Some(map)) = (e.out_for, json.as_object_mut()) {
                            let ms = u64::try_from(out_for.as_millis()).unwrap_or(u64::MAX);
                            map.insert("out_for_ms".into(), Value::from(ms));
                        }
                        json
                    })
                    .collect();
                json!({
                    "name": upstream.name(),
                    "healthy_endpoints": upstream.healthy_endpoint_count(),
                    "endpoints": endpoints,
                })
            })
            .collect();
        json!({ "upstreams": upstreams })
    }

    /// The upstreams this handle checks, in the order they were registered.
    fn upstreams(&self) -> Vec<Upstream<Body>> {
        self.probes
            .load()
            .iter()
            .filter_map(|probe| match &probe.kind {
                ProbeKind::Upstream(upstream) => Some(upstream.clone()),
                _ => None,
            })
            .collect()
    }

    /// Replaces the probes (after a successful build).
    pub(crate) fn set(&self, probes: Probes) {
        self.probes.store(Arc::new(probes.0));
    }
}

impl fmt::Debug for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let probes = self.probes.load();
        f.debug_struct("Health")
            .field(
                "probes",
                &probes.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            )
            .field("shutting_down", &self.is_shutting_down())
            .field("draining", &self.is_draining())
            .finish()
    }
}

// === impl Probes ===

impl Probes {
    pub(crate) fn upstream(&mut self, upstream: &Upstream<Body>) {
        let name = format!("upstream {}", upstream.name());
        self.push(name, ProbeKind::Upstream(upstream.clone()));
    }

    /// The probes of a route's layers; `route` is its display name.
    pub(crate) fn route(&mut self, route: &str, layers: &RouteProbes) {
        if let Some(auth) = &layers.auth {
            // Not merged by name: two routes may share one and differ in auth.
            self.push(format!("auth {route}"), ProbeKind::Auth(auth.clone()));
        }
        if let Some(limit) = &layers.rate_limit {
            self.rate_limit(limit);
        }
    }

    /// A rate limit whose store can be pinged, once per layer name (the
    /// name separates a layer's keys in the store, so one name is one
    /// quota: the same layer on several routes, or the gateway-wide one).
    pub(crate) fn rate_limit(&mut self, layer: &RateLimitLayer) {
        let name = format!("redis {}", layer.name());
        if layer.ping().is_some() && !self.0.iter().any(|p| p.name == name) {
            self.push(name, ProbeKind::Store(layer.clone()));
        }
    }

    fn push(&mut self, name: String, kind: ProbeKind) {
        self.0.push(Probe { name, kind });
    }
}

impl fmt::Debug for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

// === impl Probe ===

impl Probe {
    async fn run(&self) -> ReadinessCheck {
        let failure: Option<String> = match &self.kind {
            ProbeKind::Auth(auth) => (!auth.is_ready()).then(|| "keys not loaded".to_owned()),
            ProbeKind::Upstream(upstream) => (!upstream.is_healthy()).then(|| {
                // Endpoints of weight 0 take no traffic: their health does
                // not make the upstream ready.
                let endpoints = upstream.endpoint_status();
                let n = endpoints.iter().filter(|e| e.weight > 0).count();
                let drained = match endpoints.len() - n {
                    0 => String::new(),
                    d => format!(" ({d} more of weight 0 take no traffic)"),
                };
                format!(
                    "no healthy endpoint: all {n} failing their health check or cooling off after a refused connection{drained}"
                )
            }),
            ProbeKind::Store(layer) => match layer.ping() {
                None => None,
                Some(ping) => match tokio::time::timeout(PROBE_TIMEOUT, ping).await {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(_) => Some("redis: timed out".to_owned()),
                },
            },
        };
        ReadinessCheck {
            name: self.name.clone(),
            ready: failure.is_none(),
            detail: failure,
        }
    }
}

// === impl Readiness ===

impl Readiness {
    /// Whether every check is ready (true when there is none).
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.checks.iter().all(|c| c.ready)
    }

    /// The checks: upstreams in the order they were registered, the
    /// gateway-wide rate limit, then the routes in the order they were
    /// added (auth, then rate limit).
    #[must_use]
    pub fn checks(&self) -> &[ReadinessCheck] {
        &self.checks
    }

    /// The check called `name`.
    #[must_use]
    pub fn check(&self, name: &str) -> Option<&ReadinessCheck> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// The report as `/readyz` serves it:
    /// `{"ready": bool, "checks": [{"name", "ready", "detail"}]}`, where
    /// `detail` says why a check is not ready and is absent otherwise.
    #[must_use]
    pub fn to_json(&self) -> Value {
        let checks: Vec<Value> = self
            .checks
            .iter()
            .map(|c| {
                let mut check = json!({ "name": c.name, "ready": c.ready });
                if let (Some(detail), Some(map)) = (&c.detail, check.as_object_mut()) {
                    map.insert("detail".into(), Value::from(detail.as_str()));
                }
                check
            })
            .collect();
        json!({ "ready": self.is_ready(), "checks": checks })
    }
}

// === impl ReadinessCheck ===

impl ReadinessCheck {
    /// The check's name: `auth <route>`, `upstream <name>`,
    /// `redis <layer>`, or `shutdown` once
    /// [`Health::begin_shutdown`] was called.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether it is ready.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Why it is not ready (`None` when it is).
    #[must_use]
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use std::task::{Context, Poll, Waker};

    use super::*;

    /// Readiness fails when the signal comes, not before, and the future
    /// completes only once the delay is over.
    #[tokio::test(start_paused = true)]
    async fn shutdown_after_fails_readiness_then_waits_the_delay() {
        let health = Health::new();
        let (signal, signalled) = tokio::sync::oneshot::channel::<()>();
        let mut shutdown = Box::pin(health.shutdown_after(
            async move {
                let _ = signalled.await;
            },
            Duration::from_secs(5),
        ));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(shutdown.as_mut().poll(&mut cx).is_pending());
        assert!(health.check().await.is_ready());

        signal.send(()).unwrap_or_default();
        assert!(shutdown.as_mut().poll(&mut cx).is_pending());
        let report = health.check().await;
        assert!(!report.is_ready());
        assert_eq!(report.checks()[0].name(), "shutdown");
        assert_eq!(report.checks()[0].detail(), Some("shutting down"));

        tokio::time::advance(Duration::from_millis(4_900)).await;
        assert!(shutdown.as_mut().poll(&mut cx).is_pending());
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(shutdown.as_mut().poll(&mut cx), Poll::Ready(()));
    }
}
