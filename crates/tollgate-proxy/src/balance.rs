//! Endpoints of an upstream and how one is picked for each request.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
};

use http::{
    HeaderValue,
    uri::{Authority, Scheme},
};
use tokio::time::{Duration, Instant};

use crate::health_check::PassiveHealthCheck;

/// How an [`Upstream`](crate::Upstream) picks an endpoint for a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Balance {
    /// Each endpoint in turn.
    RoundRobin,
    /// Power of two choices: pick two endpoints at random, send to the one
    /// with fewer outstanding requests. The default.
    #[default]
    LeastRequest,
}

/// One endpoint of an upstream: where to connect, how busy it is, whether
/// it is cooling off after refusing a connection, and whether it passes its
/// active health check.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) scheme: Scheme,
    pub(crate) authority: Authority,
    /// The `Host` header value, computed once.
    pub(crate) host: HeaderValue,
    /// `scheme://authority`, for logs.
    pub(crate) label: Arc<str>,
    outstanding: AtomicUsize,
    /// Milliseconds since `Endpoints::epoch` until which the endpoint is out;
    /// 0 when it is in.
    down_until_ms: AtomicU64,
    /// False while the active health check has it out; always true without
    /// one.
    healthy: AtomicBool,
    /// Failed responses in a row, for the passive health check.
    failures: AtomicU32,
    /// Milliseconds since `Endpoints::epoch` until which the passive health
    /// check has it out; 0 when it does not. Apart from `down_until_ms`:
    /// readiness ignores it (see [`Endpoints::any_ready`]).
    ejected_until_ms: AtomicU64,
}

/// The state of one endpoint of an upstream, as
/// [`Upstream::endpoint_status`](crate::Upstream::endpoint_status) reports
/// it (and the admin listener's `GET /upstreams`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointStatus {
    /// `scheme://host:port`.
    pub endpoint: Arc<str>,
    /// Whether requests may pick it: it passes its active health check
    /// (when there is one) and is not out for a while.
    pub healthy: bool,
    /// Whether it passes its active health check; true without one.
    pub passing_health_check: bool,
    /// How much longer it is out, after a refused connection (`cooloff`)
    /// or failed responses (the passive check's `ejection_time`).
    pub out_for: Option<Duration>,
    /// Requests sent to it whose response head has not arrived yet.
    pub in_flight: usize,
}

/// The endpoints of one upstream and the balancing state.
#[derive(Debug)]
pub(crate) struct Endpoints {
    list: Box<[Endpoint]>,
    balance: Balance,
    next: AtomicUsize,
    cooloff: Duration,
    epoch: Instant,
    /// The passive health check, when there is one.
    passive: Option<PassiveHealthCheck>,
    /// The upstream's name, for the log line of an ejection.
    upstream: Arc<str>,
}

/// Counts a request as outstanding on an endpoint until dropped.
#[derive(Debug)]
pub(crate) struct InFlight {
    endpoints: Arc<Endpoints>,
    index: usize,
}

// === impl Endpoint ===

impl Endpoint {
    pub(crate) fn new(scheme: Scheme, authority: Authority, host: HeaderValue) -> Self {
        let label = format!("{scheme}://{authority}").into();
        Self {
            scheme,
            authority,
            host,
            label,
            outstanding: AtomicUsize::new(0),
            down_until_ms: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
        }
    }
}

// === impl Endpoints ===

impl Endpoints {
    pub(crate) fn new(list: Vec<Endpoint>, balance: Balance, cooloff: Duration) -> Self {
        Self {
            list: list.into_boxed_slice(),
            balance,
            next: AtomicUsize::new(0),
            cooloff,
            epoch: Instant::now(),
            passive: None,
            upstream: Arc::from(""),
        }
    }

    /// Counts the responses of upstream `upstream` for `check`.
    pub(crate) fn with_passive(mut self, upstream: Arc<str>, check: PassiveHealthCheck) -> Self {
        self.passive = Some(check);
        self.upstream = upstream;
        self
    }

    pub(crate) fn get(&self, index: usize) -> &Endpoint {
        &self.list[index]
    }

    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn is_up(&self, index: usize, now_ms: u64) -> bool {
        self.is_ready(index, now_ms)
            && self.list[index].ejected_until_ms.load(Ordering::Relaxed) <= now_ms
    }

    /// In for readiness: passing the active check and not cooling off after
    /// a refused connection. A passive ejection does not count: when an
    /// application error makes every endpoint answer 500, every gateway
    /// instance sees it, and failing readiness would take them all away.
    fn is_ready(&self, index: usize, now_ms: u64) -> bool {
        let endpoint = &self.list[index];
        endpoint.healthy.load(Ordering::Relaxed)
            && endpoint.down_until_ms.load(Ordering::Relaxed) <= now_ms
    }

    /// Whether at least one endpoint is in for readiness (see
    /// `is_ready`).
    pub(crate) fn any_ready(&self) -> bool {
        let now = self.now_ms();
        (0..self.list.len()).any(|i| self.is_ready(i, now))
    }

    /// Whether the active health check has endpoint `index` in.
    pub(crate) fn is_healthy(&self, index: usize) -> bool {
        self.list[index].healthy.load(Ordering::Relaxed)
    }

    /// Puts endpoint `index` in or takes it out, for the active health
    /// check.
    pub(crate) fn set_healthy(&self, index: usize, healthy: bool) {
        self.list[index].healthy.store(healthy, Ordering::Relaxed);
    }

    /// How many endpoints are in: passing their health check and not
    /// cooling off.
    pub(crate) fn count_up(&self) -> usize {
        let now = self.now_ms();
        (0..self.list.len()).filter(|&i| self.is_up(i, now)).count()
    }

    /// Each endpoint's label and whether it is in.
    pub(crate) fn states(&self) -> impl Iterator<Item = (&str, bool)> + '_ {
        let now = self.now_ms();
        (0..self.list.len()).map(move |i| (&*self.list[i].label, self.is_up(i, now)))
    }

    /// Each endpoint's state, for operators.
    pub(crate) fn status(&self) -> Vec<EndpointStatus> {
        let now = self.now_ms();
        self.list
            .iter()
            .enumerate()
            .map(|(i, endpoint)| {
                let until = endpoint
                    .down_until_ms
                    .load(Ordering::Relaxed)
                    .max(endpoint.ejected_until_ms.load(Ordering::Relaxed));
                EndpointStatus {
                    endpoint: Arc::clone(&endpoint.label),
                    healthy: self.is_up(i, now),
                    passing_health_check: endpoint.healthy.load(Ordering::Relaxed),
                    out_for: (until > now).then(|| Duration::from_millis(until - now)),
                    in_flight: endpoint.outstanding.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// Whether at least one endpoint is in: passing its health check and
    /// not cooling off.
    pub(crate) fn any_up(&self) -> bool {
        let now = self.now_ms();
        (0..self.list.len()).any(|i| self.is_up(i, now))
    }

    /// Takes an endpoint out for the cool-off period.
    pub(crate) fn mark_down(&self, index: usize) {
        self.out_until(&self.list[index].down_until_ms, self.cooloff);
    }

    /// Stores in `until` the time `time` from now.
    fn out_until(&self, until: &AtomicU64, time: Duration) {
        let at = self
            .now_ms()
            .saturating_add(u64::try_from(time.as_millis()).unwrap_or(u64::MAX))
            .max(1);
        until.store(at, Ordering::Relaxed);
    }

    /// Counts a response of endpoint `index` for the passive health check:
    /// `None` is a failure without a response (a reset, a protocol error, a
    /// response timeout).
    pub(crate) fn record(&self, index: usize, status: Option<u16>) {
        let Some(check) = &self.passive else { return };
        let endpoint = &self.list[index];
        let failed = status.is_none_or(|s| check.failure_statuses.contains(&s));
        if !failed {
            // Most responses: a read, and no write unless a run ends.
            if endpoint.failures.load(Ordering::Relaxed) != 0 {
                endpoint.failures.store(0, Ordering::Relaxed);
            }
            return;
        }
        let run = endpoint.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if run >= check.consecutive_failures {
            endpoint.failures.store(0, Ordering::Relaxed);
            self.out_until(&endpoint.ejected_until_ms, check.ejection_time);
            tracing::warn!(
                upstream = %self.upstream,
                endpoint = %endpoint.label,
                failures = run,
                ejection_time = ?check.ejection_time,
                "endpoint failed responses in a row; taken out"
            );
        }
    }

    /// Picks an endpoint. Endpoints cooling off or failing their health
    /// check are skipped unless every endpoint is, in which case they are
    /// all tried as if up.
    pub(crate) fn pick(self: &Arc<Self>) -> InFlight {
        let index = match self.list.len() {
            1 => 0,
            len => {
                let now = self.now_ms();
                let any_down = (0..len).any(|i| !self.is_up(i, now));
                let up = |i: usize| !any_down || self.is_up(i, now);
                match self.balance {
                    Balance::RoundRobin => self.pick_round_robin(len, up),
                    Balance::LeastRequest => self.pick_p2c(len, up),
                }
            }
        };
        self.list[index].outstanding.fetch_add(1, Ordering::Relaxed);
        InFlight {
            endpoints: Arc::clone(self),
            index,
        }
    }

    fn pick_round_robin(&self, len: usize, up: impl Fn(usize) -> bool) -> usize {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..len)
            .map(|k| start.wrapping_add(k) % len)
            .find(|&i| up(i))
            .unwrap_or(start % len)
    }

    fn pick_p2c(&self, len: usize, up: impl Fn(usize) -> bool) -> usize {
        let a = fastrand::usize(..len);
        let mut b = fastrand::usize(..len - 1);
        if b >= a {
            b += 1;
        }
        let load = |i: usize| self.list[i].outstanding.load(Ordering::Relaxed);
        match (up(a), up(b)) {
            (true, true) => {
                if load(b) < load(a) {
                    b
                } else {
                    a
                }
            }
            (true, false) => a,
            (false, true) => b,
            // Both cooling off: fall back to the first endpoint that is up.
            (false, false) => (0..len).find(|&i| up(i)).unwrap_or(a),
        }
    }
}

// === impl InFlight ===

impl InFlight {
    pub(crate) fn endpoint(&self) -> &Endpoint {
        self.endpoints.get(self.index)
    }

    pub(crate) fn mark_down(&self) {
        self.endpoints.mark_down(self.index);
    }

    /// See [`Endpoints::record`].
    pub(crate) fn record(&self, status: Option<u16>) {
        self.endpoints.record(self.index, status);
    }

    pub(crate) fn index(&self) -> usize {
        self.index
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoints.list[self.index]
            .outstanding
            .fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(n: usize, balance: Balance) -> Arc<Endpoints> {
        let list = (0..n)
            .map(|i| {
                let authority = format!("127.0.0.1:{}", 9000 + i);
                Endpoint::new(
                    Scheme::HTTP,
                    Authority::try_from(authority.as_str()).unwrap(),
                    HeaderValue::from_str(&authority).unwrap(),
                )
            })
            .collect();
        Arc::new(Endpoints::new(list, balance, Duration::from_secs(5)))
    }

    #[test]
    fn round_robin_visits_every_endpoint_in_turn() {
        let eps = endpoints(3, Balance::RoundRobin);
        let picks: Vec<usize> = (0..6).map(|_| eps.pick().index).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn p2c_prefers_the_less_loaded_endpoint() {
        let eps = endpoints(2, Balance::LeastRequest);
        let held: Vec<InFlight> = (0..5).map(|_| eps.pick()).collect();
        let busy = held.iter().filter(|f| f.index == 0).count();
        // With two endpoints, P2C always compares both: loads never differ by more than one.
        assert!(busy == 2 || busy == 3, "{busy}");
        drop(held);
        assert_eq!(eps.list[0].outstanding.load(Ordering::Relaxed), 0);
        assert_eq!(eps.list[1].outstanding.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn endpoints_cooling_off_are_skipped_then_return() {
        let eps = endpoints(2, Balance::RoundRobin);
        eps.mark_down(0);
        for _ in 0..4 {
            assert_eq!(eps.pick().index, 1);
        }
        tokio::time::advance(Duration::from_secs(6)).await;
        let picks: Vec<usize> = (0..4).map(|_| eps.pick().index).collect();
        assert!(picks.contains(&0), "{picks:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn all_down_still_picks_one() {
        let eps = endpoints(2, Balance::LeastRequest);
        eps.mark_down(0);
        eps.mark_down(1);
        assert!(!eps.any_up());
        let _ = eps.pick();
    }

    #[tokio::test(start_paused = true)]
    async fn endpoints_failing_their_health_check_stay_out_past_the_cooloff() {
        let eps = endpoints(3, Balance::LeastRequest);
        eps.set_healthy(1, false);
        assert_eq!(eps.count_up(), 2);
        tokio::time::advance(Duration::from_secs(60)).await;
        for _ in 0..50 {
            assert_ne!(eps.pick().index, 1);
        }
        eps.mark_down(0);
        assert_eq!(eps.count_up(), 1);
        for _ in 0..20 {
            assert_eq!(eps.pick().index, 2);
        }
        eps.set_healthy(1, true);
        assert_eq!(eps.count_up(), 2);
        let picks: Vec<usize> = (0..50).map(|_| eps.pick().index).collect();
        assert!(picks.contains(&1), "{picks:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn failed_responses_in_a_row_take_an_endpoint_out_for_the_ejection_time() {
        let list = Arc::try_unwrap(endpoints(2, Balance::RoundRobin)).unwrap();
        let check = PassiveHealthCheck::new()
            .consecutive_failures(3)
            .ejection_time(Duration::from_secs(30));
        let eps = list.with_passive(Arc::from("users"), check);
        // A success ends a run.
        for status in [Some(503), None, Some(200), Some(500), Some(502)] {
            eps.record(1, status);
        }
        assert_eq!(eps.count_up(), 2);
        // A status that is not a failure status is a success (404 here).
        eps.record(1, Some(404));
        for _ in 0..2 {
            eps.record(1, Some(504));
        }
        assert_eq!(eps.count_up(), 2);
        eps.record(1, None);
        assert_eq!(eps.count_up(), 1, "the third failure in a row");
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(eps.count_up(), 1);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(eps.count_up(), 2, "back after the ejection time");
        // The run starts over.
        eps.record(1, Some(503));
        assert_eq!(eps.count_up(), 2);
    }

    #[test]
    fn without_a_passive_check_responses_are_not_counted() {
        let eps = endpoints(2, Balance::RoundRobin);
        for _ in 0..100 {
            eps.record(0, Some(503));
        }
        assert_eq!(eps.count_up(), 2);
        assert_eq!(eps.list[0].failures.load(Ordering::Relaxed), 0);
    }
}
