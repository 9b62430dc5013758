//! [`Health`]: the readiness probes of the gateway that was built last.

use std::{fmt, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use axum::body::Body;
use serde_json::{Value, json};
use tollgate_auth::AuthLayer;
use tollgate_proxy::Upstream;
use tollgate_ratelimit::RateLimitLayer;

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
/// | `upstream <name>`     | [`Upstream::is_healthy`]: an endpoint is not cooling off |
/// | `redis <layer>`       | the rate limit's store answers `PING` within its timeout (and [`PROBE_TIMEOUT`]) |
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
        let checks = futures_util::future::join_all(probes.iter().map(Probe::run)).await;
        Readiness { checks }
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
                let n = upstream.endpoint_count();
                format!("no healthy endpoint: all {n} cooling off after refused connections")
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
    /// The check's name: `auth <route>`, `upstream <name>` or
    /// `redis <layer>`.
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
