//! Active health checks: each endpoint of an upstream is probed with an
//! HTTP request on an interval, and taken out of balancing after a run of
//! failed probes, until a run of good ones brings it back.
//!
//! This is what Kong's `healthchecks.active`, Envoy's `health_checks` and
//! Traefik's `healthCheck` do. It works beside the passive check every
//! upstream has (an endpoint that refuses a connection cools off): the
//! passive check notices a dead endpoint only when a client's request fails
//! on it, and lets it back in when the cool-off ends whether it recovered or
//! not; the active check notices without traffic, also notices an endpoint
//! that accepts connections but answers with errors or not at all, and keeps
//! it out until it answers well again.

use std::{
    fmt,
    sync::{Arc, Weak},
};

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, Uri, Version, header};
use http_body_util::Empty;
use tokio::time::{Duration, MissedTickBehavior};
use tollgate_core::{ConfigError, ConfigErrorKind};

use crate::{
    balance::Endpoints,
    transport::{HyperUtilPool, Transport, TransportConfig},
};

/// The active health check of an [`Upstream`](crate::Upstream): a `GET` of
/// `path` on every endpoint each `interval`.
///
/// A probe passes when the endpoint answers within `timeout` with one of
/// `expected_statuses` (any 2xx when the list is empty). An endpoint is
/// taken out after `unhealthy_threshold` failed probes in a row and put back
/// after `healthy_threshold` good ones in a row. Endpoints start in, and are
/// probed once right away.
///
/// Each probe opens its own connection (with the upstream's TLS settings,
/// CA file and TLS server name), sends `Host` as the upstream's requests do
/// and `Connection: close` over HTTP/1.1, and reads only the status: a probe
/// tests that the endpoint takes new connections, which a pooled one would
/// not show, and never holds a connection the traffic could use.
///
/// When every endpoint of an upstream is out, all are tried as if in (as
/// with the passive check), and readiness (`/readyz`) fails for it.
///
/// ```
/// # use std::time::Duration;
/// # use tollgate_proxy::{HealthCheck, Upstream};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tollgate_core::ConfigError> {
/// let users = Upstream::builder("users")
///     .endpoint("http://127.0.0.1:9001")
///     .endpoint("http://127.0.0.1:9002")
///     .health_check(
///         HealthCheck::new("/healthz")
///             .interval(Duration::from_secs(5))
///             .unhealthy_threshold(2),
///     )
///     .build::<tollgate_core::body::BoxBody>()?;
/// # drop(users); Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
#[non_exhaustive]
pub struct HealthCheck {
    /// The path (and query) probed, starting with `/`.
    pub path: String,
    /// How often every endpoint is probed. Default 10 s.
    #[cfg_attr(
        feature = "serde",
        serde(
            default = "defaults::interval",
            with = "tollgate_core::serde_util::duration"
        )
    )]
    pub interval: Duration,
    /// The longest a probe may take: connect, TLS handshake and response
    /// head together. Default 2 s.
    #[cfg_attr(
        feature = "serde",
        serde(
            default = "defaults::timeout",
            with = "tollgate_core::serde_util::duration"
        )
    )]
    pub timeout: Duration,
    /// Good probes in a row that put an endpoint back. Default 2.
    #[cfg_attr(feature = "serde", serde(default = "defaults::healthy_threshold"))]
    pub healthy_threshold: u32,
    /// Failed probes in a row that take an endpoint out. Default 3.
    #[cfg_attr(feature = "serde", serde(default = "defaults::unhealthy_threshold"))]
    pub unhealthy_threshold: u32,
    /// The statuses a good probe may have; empty (the default) takes any
    /// 2xx.
    #[cfg_attr(feature = "serde", serde(default))]
    pub expected_statuses: Vec<u16>,
    /// The `Host` sent, instead of the endpoint's `host:port` (for an
    /// endpoint that serves several virtual hosts).
    #[cfg_attr(feature = "serde", serde(default))]
    pub host: Option<String>,
    /// Headers added to every probe, name to value.
    #[cfg_attr(feature = "serde", serde(default))]
    pub headers: std::collections::BTreeMap<String, String>,
}

/// The passive health check of an [`Upstream`](crate::Upstream): an
/// endpoint whose responses fail `consecutive_failures` times in a row is
/// left out of balancing for `ejection_time`, with no probe sent.
///
/// A failure is a response whose status is in `failure_statuses` (500, 502,
/// 503 and 504 by default), a connection reset or protocol error after the
/// request went out, or no response head within the upstream's
/// `response_timeout`; any other response ends the run. (An endpoint that
/// refuses a connection is left out at once, for the upstream's `cooloff`,
/// with or without this.) This is Envoy's outlier detection
/// (`consecutive_5xx`) and Kong's `healthchecks.passive`; unlike an
/// [active check](HealthCheck) it needs traffic, and it puts the endpoint
/// back when the time is up whether or not it recovered, so the two work
/// well together.
///
/// When every endpoint is out, all are tried as if in: an application bug
/// that makes every endpoint answer 500 does not take the whole upstream
/// away.
///
/// ```
/// # use std::time::Duration;
/// # use tollgate_proxy::{PassiveHealthCheck, Upstream};
/// # fn main() -> Result<(), tollgate_core::ConfigError> {
/// let users = Upstream::builder("users")
///     .endpoint("http://127.0.0.1:9001")
///     .endpoint("http://127.0.0.1:9002")
///     .passive_health_check(
///         PassiveHealthCheck::new()
///             .consecutive_failures(5)
///             .ejection_time(Duration::from_secs(30)),
///     )
///     .build::<tollgate_core::body::BoxBody>()?;
/// # drop(users); Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct PassiveHealthCheck {
    /// Failed responses in a row that take an endpoint out. Default 5.
    pub consecutive_failures: u32,
    /// How long an endpoint is left out. Default 30 s.
    #[cfg_attr(feature = "serde", serde(with = "tollgate_core::serde_util::duration"))]
    pub ejection_time: Duration,
    /// The statuses that count as failures. Default 500, 502, 503, 504.
    pub failure_statuses: Vec<u16>,
}

impl Default for PassiveHealthCheck {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            ejection_time: Duration::from_secs(30),
            failure_statuses: vec![500, 502, 503, 504],
        }
    }
}

impl PassiveHealthCheck {
    /// Out after 5 failures in a row, for 30 s; 500, 502, 503 and 504 are
    /// failures.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets how many failed responses in a row take an endpoint out.
    #[must_use]
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.consecutive_failures = n;
        self
    }

    /// Sets how long an endpoint is left out.
    #[must_use]
    pub fn ejection_time(mut self, time: Duration) -> Self {
        self.ejection_time = time;
        self
    }

    /// Sets the statuses that count as failures.
    #[must_use]
    pub fn failure_statuses(mut self, statuses: impl IntoIterator<Item = u16>) -> Self {
        self.failure_statuses = statuses.into_iter().collect();
        self
    }

    /// Checks the settings; the error names the key.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |why: String| {
            ConfigError::new(ConfigErrorKind::InvalidValue, why).context("passive_health_check")
        };
        if self.consecutive_failures == 0 {
            return Err(invalid(
                "consecutive_failures must be at least 1".to_owned(),
            ));
        }
        if self.ejection_time.is_zero() {
            return Err(invalid("ejection_time must be above 0".to_owned()));
        }
        check_statuses("failure_statuses", &self.failure_statuses).map_err(invalid)
    }
}

/// Every status of `list` is one HTTP has.
fn check_statuses(key: &str, list: &[u16]) -> Result<(), String> {
    match list.iter().find(|&&s| !(100..=599).contains(&s)) {
        Some(bad) => Err(format!("{key}: {bad} is not an HTTP status")),
        None => Ok(()),
    }
}

mod defaults {
    use tokio::time::Duration;

    pub(super) fn interval() -> Duration {
        Duration::from_secs(10)
    }
    pub(super) fn timeout() -> Duration {
        Duration::from_secs(2)
    }
    pub(super) fn healthy_threshold() -> u32 {
        2
    }
    pub(super) fn unhealthy_threshold() -> u32 {
        3
    }
}

/// How a probe failed, for the log line of a change.
enum Failure {
    Status(StatusCode),
    Error(String),
    Timeout,
}

/// Consecutive results of one endpoint's probes.
#[derive(Clone, Copy, Debug, Default)]
struct Streak {
    good: u32,
    bad: u32,
}

/// What the probing task needs: nothing that keeps the upstream alive.
struct Prober {
    upstream: Arc<str>,
    endpoints: Weak<Endpoints>,
    /// Per endpoint: the probe's URI and `Host`.
    targets: Vec<(Uri, HeaderValue, Arc<str>)>,
    /// The headers of every probe, `User-Agent` included.
    headers: http::HeaderMap,
    version: Version,
    check: HealthCheck,
    client: HyperUtilPool<Empty<Bytes>>,
}

// === impl HealthCheck ===

impl HealthCheck {
    /// A check of `path` with the defaults: every 10 s, 2 s timeout, out
    /// after 3 failures, back after 2 successes, any 2xx.
    #[must_use]
    pub fn new(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            interval: defaults::interval(),
            timeout: defaults::timeout(),
            healthy_threshold: defaults::healthy_threshold(),
            unhealthy_threshold: defaults::unhealthy_threshold(),
            expected_statuses: Vec::new(),
            host: None,
            headers: std::collections::BTreeMap::new(),
        }
    }

    /// Sets how often every endpoint is probed.
    #[must_use]
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Sets the longest a probe may take.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets how many good probes in a row put an endpoint back.
    #[must_use]
    pub fn healthy_threshold(mut self, n: u32) -> Self {
        self.healthy_threshold = n;
        self
    }

    /// Sets how many failed probes in a row take an endpoint out.
    #[must_use]
    pub fn unhealthy_threshold(mut self, n: u32) -> Self {
        self.unhealthy_threshold = n;
        self
    }

    /// Sends `host` as the probes' `Host` instead of the endpoint's.
    #[must_use]
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// Adds a header to every probe.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Sets the statuses a good probe may have (empty: any 2xx).
    #[must_use]
    pub fn expected_statuses(mut self, statuses: impl IntoIterator<Item = u16>) -> Self {
        self.expected_statuses = statuses.into_iter().collect();
        self
    }

    /// Checks the settings and makes what every probe sends: its headers
    /// (`User-Agent`, then `headers`) and the `Host` that replaces the
    /// endpoint's, when set. The error names the key.
    fn validate(&self) -> Result<(http::HeaderMap, Option<HeaderValue>), ConfigError> {
        let invalid = |why: String| {
            ConfigError::new(ConfigErrorKind::InvalidValue, why).context("health_check")
        };
        if !self.path.starts_with('/') {
            return Err(invalid(format!("path {:?} must start with /", self.path)));
        }
        if self.path.parse::<http::uri::PathAndQuery>().is_err() {
            return Err(invalid(format!("path {:?} is not a valid path", self.path)));
        }
        for (key, value) in [("interval", self.interval), ("timeout", self.timeout)] {
            if value.is_zero() {
                return Err(invalid(format!("{key} must be above 0")));
            }
        }
        for (key, value) in [
            ("healthy_threshold", self.healthy_threshold),
            ("unhealthy_threshold", self.unhealthy_threshold),
        ] {
            if value == 0 {
                return Err(invalid(format!("{key} must be at least 1")));
            }
        }
        check_statuses("expected_statuses", &self.expected_statuses).map_err(invalid)?;
        let mut headers = http::HeaderMap::new();
        headers.insert(
            header::USER_AGENT,
            HeaderValue::from_static("tollgate-health-check"),
        );
        for (name, value) in &self.headers {
            let name = http::HeaderName::try_from(name.as_str())
                .map_err(|_| invalid(format!("headers: {name:?} is not a header name")))?;
            let value = HeaderValue::try_from(value.as_str())
                .map_err(|_| invalid(format!("headers.{name}: not a header value")))?;
            headers.insert(name, value);
        }
        let host = match &self.host {
            Some(host) => Some(
                HeaderValue::try_from(host.as_str())
                    .map_err(|_| invalid(format!("host {host:?} is not a header value")))?,
            ),
            None => None,
        };
        Ok((headers, host))
    }

    fn passes(&self, status: StatusCode) -> bool {
        if self.expected_statuses.is_empty() {
            status.is_success()
        } else {
            self.expected_statuses.contains(&status.as_u16())
        }
    }
}

/// Checks `check` and starts probing the endpoints, in a task that ends
/// when the last clone of the upstream is dropped.
pub(crate) fn start(
    check: &HealthCheck,
    upstream: &Arc<str>,
    endpoints: &Arc<Endpoints>,
    version: Version,
    transport: &TransportConfig,
) -> Result<(), ConfigError> {
    let (headers, host) = check.validate()?;
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
        ConfigError::new(
            ConfigErrorKind::InvalidValue,
            "endpoints are probed in the background: build inside a tokio runtime",
        )
        .context("health_check")
    })?;
    let mut targets = Vec::with_capacity(endpoints.len());
    for index in 0..endpoints.len() {
        let endpoint = endpoints.get(index);
        let uri = Uri::builder()
            .scheme(endpoint.scheme.clone())
            .authority(endpoint.authority.clone())
            .path_and_query(check.path.as_str())
            .build()
            .map_err(|e| {
                ConfigError::new(ConfigErrorKind::InvalidValue, e.to_string())
                    .context("health_check.path")
            })?;
        let host = host.clone().unwrap_or_else(|| endpoint.host.clone());
        targets.push((uri, host, Arc::clone(&endpoint.label)));
    }
    // Idle connections are never kept: every probe connects afresh.
    let mut probe_transport = transport.clone();
    probe_transport.max_idle_per_endpoint = 0;
    probe_transport.connect_timeout = probe_transport.connect_timeout.min(check.timeout);
    let prober = Prober {
        upstream: Arc::clone(upstream),
        endpoints: Arc::downgrade(endpoints),
        targets,
        headers,
        version,
        check: check.clone(),
        client: HyperUtilPool::new(&probe_transport),
    };
    runtime.spawn(prober.run());
    Ok(())
}

// === impl Prober ===

impl Prober {
    async fn run(self) {
        let mut streaks = vec![Streak::default(); self.targets.len()];
        let mut tick = tokio::time::interval(self.check.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.endpoints.strong_count() == 0 {
                return;
            }
            let results =
                futures_util::future::join_all((0..self.targets.len()).map(|i| self.probe(i)))
                    .await;
            let Some(endpoints) = self.endpoints.upgrade() else {
                return;
            };
            for (index, result) in results.into_iter().enumerate() {
                self.record(&endpoints, &mut streaks[index], index, result);
            }
        }
    }

    async fn probe(&self, index: usize) -> Result<(), Failure> {
        let (uri, host, _) = &self.targets[index];
        let mut req = Request::new(Empty::new());
        *req.uri_mut() = uri.clone();
        *req.version_mut() = self.version;
        let headers = req.headers_mut();
        headers.clone_from(&self.headers);
        headers.insert(header::HOST, host.clone());
        if self.version != Version::HTTP_2 {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        let sent = self.client.send(index, req);
        match tokio::time::timeout(self.check.timeout, sent).await {
            Err(_) => Err(Failure::Timeout),
            Ok(Err(err)) => Err(Failure::Error(err.to_string())),
            Ok(Ok(res)) if self.check.passes(res.status()) => Ok(()),
            Ok(Ok(res)) => Err(Failure::Status(res.status())),
        }
    }

    /// Counts a probe's result and moves the endpoint in or out when its
    /// streak reaches the threshold.
    fn record(
        &self,
        endpoints: &Endpoints,
        streak: &mut Streak,
        index: usize,
        result: Result<(), Failure>,
    ) {
        let label = &self.targets[index].2;
        let healthy = endpoints.is_healthy(index);
        match result {
            Ok(()) => {
                *streak = Streak {
                    good: streak.good.saturating_add(1),
                    bad: 0,
                };
                if !healthy && streak.good >= self.check.healthy_threshold {
                    endpoints.set_healthy(index, true);
                    tracing::info!(
                        upstream = %self.upstream,
                        endpoint = %label,
                        "endpoint passed its health check; back in"
                    );
                }
            }
            Err(failure) => {
                *streak = Streak {
                    good: 0,
                    bad: streak.bad.saturating_add(1),
                };
                if healthy && streak.bad >= self.check.unhealthy_threshold {
                    endpoints.set_healthy(index, false);
                    tracing::warn!(
                        upstream = %self.upstream,
                        endpoint = %label,
                        reason = %failure,
                        "endpoint failed its health check; taken out"
                    );
                }
            }
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status(status) => write!(f, "status {}", status.as_u16()),
            Self::Error(err) => f.write_str(err),
            Self::Timeout => f.write_str("timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_name_their_key() {
        let err = |c: HealthCheck| {
            c.validate()
                .map(|_| String::new())
                .unwrap_or_else(|e| e.to_string())
        };
        assert_eq!(
            err(HealthCheck::new("healthz")),
            "health_check: path \"healthz\" must start with /"
        );
        assert_eq!(
            err(HealthCheck::new("/h").interval(Duration::ZERO)),
            "health_check: interval must be above 0"
        );
        assert_eq!(
            err(HealthCheck::new("/h").timeout(Duration::ZERO)),
            "health_check: timeout must be above 0"
        );
        assert_eq!(
            err(HealthCheck::new("/h").healthy_threshold(0)),
            "health_check: healthy_threshold must be at least 1"
        );
        assert_eq!(
            err(HealthCheck::new("/h").unhealthy_threshold(0)),
            "health_check: unhealthy_threshold must be at least 1"
        );
        assert_eq!(
            err(HealthCheck::new("/h").expected_statuses([200, 1000])),
            "health_check: expected_statuses: 1000 is not an HTTP status"
        );
        assert_eq!(err(HealthCheck::new("/h?full=1")), "");
    }

    #[test]
    fn bad_passive_settings_name_their_key() {
        let err = |c: PassiveHealthCheck| {
            c.validate()
                .map(|()| String::new())
                .unwrap_or_else(|e| e.to_string())
        };
        assert_eq!(
            err(PassiveHealthCheck::new().consecutive_failures(0)),
            "passive_health_check: consecutive_failures must be at least 1"
        );
        assert_eq!(
            err(PassiveHealthCheck::new().ejection_time(Duration::ZERO)),
            "passive_health_check: ejection_time must be above 0"
        );
        assert_eq!(
            err(PassiveHealthCheck::new().failure_statuses([503, 99])),
            "passive_health_check: failure_statuses: 99 is not an HTTP status"
        );
        assert_eq!(err(PassiveHealthCheck::new()), "");
    }

    #[test]
    fn any_2xx_passes_unless_statuses_are_listed() {
        let any = HealthCheck::new("/h");
        assert!(any.passes(StatusCode::OK));
        assert!(any.passes(StatusCode::NO_CONTENT));
        assert!(!any.passes(StatusCode::FOUND));
        assert!(!any.passes(StatusCode::SERVICE_UNAVAILABLE));
        let listed = HealthCheck::new("/h").expected_statuses([200, 302]);
        assert!(listed.passes(StatusCode::FOUND));
        assert!(!listed.passes(StatusCode::NO_CONTENT));
    }
}
