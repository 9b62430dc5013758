//! The admin listener's router: liveness, readiness, metrics, the
//! effective configuration, taking the instance out of its load balancer
//! and reopening the log files.
//!
//! [`Admin`] builds an `axum::Router` with:
//!
//! | route          | answer                                                         |
//! |----------------|----------------------------------------------------------------|
//! | `GET /healthz` | `200 ok` while the process serves                              |
//! | `GET /readyz`  | `200` when every [`Health`] check is ready, else `503`; JSON `{"ready": bool, "checks": [{"name", "ready", "detail"}]}` |
//! | `GET /metrics` | the [`Metrics`] exposition (OpenMetrics text), when set        |
//! | `GET /config`  | the [`ConfigSnapshot`] as `application/json`, when set         |
//! | `GET /upstreams` | every upstream's endpoints: in or out, active health check, time left out, requests in flight (see [`Health::upstreams_json`]) |
//! | `POST /healthcheck/fail`, `POST /healthcheck/ok` | take the instance out of its load balancer and back ([`Health::set_draining`]): `/readyz` fails with a first check `draining` meanwhile; `200` JSON `{"draining": bool}`, logged and audited |
//! | `POST /reopen_logs` | reopens the log files after rotation, when set: `200` JSON `{"reopened": n}`, or a 500 problem+json (see [`Admin::reopen_logs`]) |
//!
//! The `POST` endpoints answer `403` problem+json to a request that a web
//! page sent (one with `Origin` or `Sec-Fetch-Site`), so a page on any site
//! cannot post a form to the listener on `127.0.0.1`.
//!
//! Anything else is a 404 problem+json. A part that was not given
//! (`metrics`, `config`, `reopen_logs`) is not routed, so it is a 404 too;
//! without [`health`](Admin::health), `/readyz` has no checks and answers
//! 200. A route asked with another method answers 405.
//!
//! The admin router belongs on a listener of its own that only operators
//! reach, bound to `127.0.0.1` (the loopback) unless a private network
//! needs more. The gateway's public listener does not serve it.
//!
//! ```no_run
//! use tokio::net::TcpListener;
//! use tollgate::{
//!     Gateway, Health, Route, Upstream,
//!     admin::{Admin, ConfigSnapshot},
//!     observe::{Metrics, ObserveLayer},
//! };
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let metrics = Metrics::new();
//! let health = Health::new();
//! let gateway = Gateway::builder()
//!     .upstream(Upstream::builder("users").endpoint("http://127.0.0.1:8081"))
//!     .route(Route::prefix("/api/users").to("users"))
//!     .observe(ObserveLayer::with_metrics(metrics.clone()))
//!     .health(health.clone())
//!     .build()?;
//! let admin = Admin::new()
//!     .metrics(metrics)
//!     .health(health)
//!     .config(ConfigSnapshot::new(serde_json::json!({ "listen": "0.0.0.0:8080" })))
//!     .router();
//!
//! let admin_listener = TcpListener::bind("127.0.0.1:9901").await?;
//! tokio::spawn(tollgate::serve(admin_listener, admin, tollgate::shutdown_signal()).into_future());
//! let public = TcpListener::bind("0.0.0.0:8080").await?;
//! tollgate::serve(public, gateway, tollgate::shutdown_signal()).await?;
//! # Ok(()) }
//! ```

use std::{fmt, io, sync::Arc};

use arc_swap::ArcSwap;
use axum::{
    Router,
    extract::{Request, State},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use tollgate_core::Problem;
use tollgate_observe::{Metrics, healthz, metrics_router};

use crate::Health;

/// Builds the admin router. See the [module docs](self) for the routes
/// and an example.
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct Admin {
    metrics: Option<Metrics>,
    health: Health,
    config: Option<ConfigSnapshot>,
    reopen_logs: Option<ReopenLogs>,
}

/// What `POST /reopen_logs` calls: the number of files reopened.
#[derive(Clone)]
struct ReopenLogs(Arc<dyn Fn() -> io::Result<usize> + Send + Sync>);

/// The effective configuration that `GET /config` serves: a cheap handle
/// (clones share it) on a JSON value that can be replaced at any time,
/// e.g. after a hot reload.
///
/// The admin router serves the value as it is: put an already redacted
/// value here (no secrets, keys or passwords). [`ConfigSnapshot::default`]
/// holds `{}`.
///
/// ```
/// use serde_json::json;
/// use tollgate::admin::ConfigSnapshot;
///
/// let snapshot = ConfigSnapshot::new(json!({ "upstreams": ["users"] }));
/// let served = snapshot.clone();
/// snapshot.set(json!({ "upstreams": ["users", "orders"] }));
/// assert_eq!(served.get()["upstreams"][1], "orders");
/// ```
#[derive(Clone)]
pub struct ConfigSnapshot {
    value: Arc<ArcSwap<Value>>,
}

// === impl Admin ===

impl Admin {
    /// An admin router with `/healthz`, a `/readyz` without checks and an
    /// empty `/upstreams`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `metrics` on `GET /metrics`.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Serves the checks of `health` on `GET /readyz`, the endpoints of
    /// its upstreams on `GET /upstreams`, and takes the instance out of
    /// its load balancer and back with `POST /healthcheck/fail` and
    /// `POST /healthcheck/ok` ([`Health::set_draining`]).
    pub fn health(mut self, health: Health) -> Self {
        self.health = health;
        self
    }

    /// Serves `config` on `GET /config`.
    pub fn config(mut self, config: ConfigSnapshot) -> Self {
        self.config = Some(config);
        self
    }

    /// Reopens the log files on `POST /reopen_logs` (Envoy's name for
    /// it), for log rotation: after `logrotate` renames the files, an
    /// operator or its `postrotate` script asks here, as it would send
    /// SIGUSR1 to nginx.
    ///
    /// `reopen` runs on tokio's blocking pool and returns how many files
    /// it reopened: the answer is `200` with `{"reopened": n}`. Its error
    /// is a 500 problem+json whose `detail` carries the error. The config
    /// server (`config::Server`) passes `Reloader::reopen_logs`; an
    /// application with its own writers passes them:
    ///
    /// ```
    /// use tollgate::{admin::Admin, observe::{AccessLogConfig, AccessLogWriter}};
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let access_log = AccessLogWriter::open(&AccessLogConfig::Stdout)?;
    /// let admin = Admin::new()
    ///     .reopen_logs(move || access_log.reopen_file().map(usize::from))
    ///     .router();
    /// # let _ = admin;
    /// # Ok(())
    /// # }
    /// ```
    pub fn reopen_logs<F>(mut self, reopen: F) -> Self
    where
        F: Fn() -> io::Result<usize> + Send + Sync + 'static,
    {
        self.reopen_logs = Some(ReopenLogs(Arc::new(reopen)));
        self
    }

    /// The router: serve it on its own listener on `127.0.0.1`.
    pub fn router(self) -> Router {
        let mut router = Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz).with_state(self.health.clone()))
            .route(
                "/healthcheck/fail",
                post(healthcheck_fail).with_state(self.health.clone()),
            )
            .route(
                "/healthcheck/ok",
                post(healthcheck_ok).with_state(self.health.clone()),
            )
            .route("/upstreams", get(upstreams).with_state(self.health));
        if let Some(config) = self.config {
            router = router.route("/config", get(config_json).with_state(config));
        }
        if let Some(reopen) = self.reopen_logs {
            router = router.route("/reopen_logs", post(reopen_logs).with_state(reopen));
        }
        if let Some(metrics) = self.metrics {
            router = router.merge(metrics_router(metrics));
        }
        router.fallback(not_found)
    }
}

async fn readyz(State(health): State<Health>) -> Response {
    let report = health.check().await;
    let status = if report.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, &report.to_json())
}

async fn healthcheck_fail(State(health): State<Health>, req: Request) -> Result<Response, Problem> {
    if let Some(refused) = from_a_page(&req) {
        return Err(refused);
    }
    Ok(set_draining(&health, true))
}

async fn healthcheck_ok(State(health): State<Health>, req: Request) -> Result<Response, Problem> {
    if let Some(refused) = from_a_page(&req) {
        return Err(refused);
    }
    Ok(set_draining(&health, false))
}

/// Refuses a `POST` that a web page sent: a browser marks its requests
/// with `Origin` (every cross-origin `POST`) or `Sec-Fetch-Site`, and a
/// page on any site could otherwise post a form to the admin listener on
/// `127.0.0.1` and drain the instance or reopen its logs. Operators'
/// tools (`curl`, scripts, probes) send neither.
fn from_a_page(req: &Request) -> Option<Problem> {
    let headers = req.headers();
    (headers.contains_key(header::ORIGIN) || headers.contains_key("sec-fetch-site")).then(|| {
        Problem::forbidden()
            .detail(
                "the admin listener refuses POST requests from web pages (Origin or Sec-Fetch-Site)",
            )
            .for_request(req)
    })
}

/// Takes the instance out or puts it back, logged and audited (an
/// operator's act); answers `{"draining": …}`.
fn set_draining(health: &Health, draining: bool) -> Response {
    health.set_draining(draining);
    let (outcome, what) = if draining {
        (
            "drained",
            "admin: readiness failed by POST /healthcheck/fail",
        )
    } else {
        (
            "undrained",
            "admin: readiness restored by POST /healthcheck/ok",
        )
    };
    tracing::info!("{what}");
    tollgate_core::audit::event(None, None, None, outcome, what);
    json_response(StatusCode::OK, &json!({ "draining": draining }))
}

async fn upstreams(State(health): State<Health>) -> Response {
    json_response(StatusCode::OK, &health.upstreams_json())
}

async fn config_json(State(config): State<ConfigSnapshot>) -> Response {
    json_response(StatusCode::OK, &config.get())
}

async fn reopen_logs(State(reopen): State<ReopenLogs>, req: Request) -> Result<Response, Problem> {
    if let Some(refused) = from_a_page(&req) {
        return Err(refused);
    }
    // Opening files blocks.
    let reopened = tokio::task::spawn_blocking(move || (reopen.0)()).await;
    let detail = match reopened {
        Ok(Ok(n)) => return Ok(json_response(StatusCode::OK, &json!({ "reopened": n }))),
        Ok(Err(err)) => format!("a log file could not be reopened: {err}"),
        Err(_) => "the log reopening task failed".to_owned(),
    };
    Err(Problem::internal().detail(detail).for_request(&req))
}

/// `value` as `application/json`, never cached.
fn json_response(status: StatusCode, value: &Value) -> Response {
    let json = HeaderValue::from_static("application/json");
    let no_store = HeaderValue::from_static("no-store");
    (
        status,
        [
            (header::CONTENT_TYPE, json),
            (header::CACHE_CONTROL, no_store),
        ],
        value.to_string(),
    )
        .into_response()
}

async fn not_found(req: Request) -> Problem {
    Problem::route_not_found().for_request(&req)
}

// === impl ConfigSnapshot ===

impl ConfigSnapshot {
    /// A snapshot holding `value`.
    #[must_use]
    pub fn new(value: Value) -> Self {
        Self {
            value: Arc::new(ArcSwap::from_pointee(value)),
        }
    }

    /// Replaces the value; every clone serves the new one.
    pub fn set(&self, value: Value) {
        self.value.store(Arc::new(value));
    }

    /// The current value.
    #[must_use]
    pub fn get(&self) -> Arc<Value> {
        self.value.load_full()
    }
}

impl Default for ConfigSnapshot {
    /// `{}`.
    fn default() -> Self {
        Self::new(Value::Object(serde_json::Map::new()))
    }
}

impl fmt::Debug for ReopenLogs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReopenLogs").finish_non_exhaustive()
    }
}

impl fmt::Debug for ConfigSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The value may be large; its size is enough here.
        let members = self.value.load().as_object().map(serde_json::Map::len);
        f.debug_struct("ConfigSnapshot")
            .field("members", &members)
            .finish()
    }
}
