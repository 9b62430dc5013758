//! Endpoints of an upstream and how one is picked for each request.

use std::sync::{
    Arc, Mutex, PoisonError,
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
    /// Each endpoint in turn; with unequal weights, nginx's smooth
    /// weighted round robin: an endpoint of weight 3 gets three requests
    /// for each one of an endpoint of weight 1, spread out rather than in
    /// a row.
    RoundRobin,
    /// Power of two choices: pick two endpoints at random, send to the one
    /// with fewer outstanding requests. The default. With unequal weights
    /// the two are drawn in proportion to their weights and compared by
    /// outstanding requests per unit of weight, as Envoy's weighted least
    /// request.
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
    /// Its share of the traffic; 0 takes none.
    weight: u32,
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
    /// (when there is one) and is not out for a while. The same rule holds
    /// for an endpoint of weight 0, which gets no requests all the same.
    pub healthy: bool,
    /// Whether it passes its active health check; true without one.
    pub passing_health_check: bool,
    /// How much longer it is out, after a refused connection (`cooloff`)
    /// or failed responses (the passive check's `ejection_time`).
    pub out_for: Option<Duration>,
    /// Requests sent to it whose response head has not arrived yet.
    pub in_flight: usize,
    /// Its weight: its share of the traffic against the other endpoints'
    /// (1 unless set). An endpoint of weight 0 gets no requests, whether
    /// healthy or not.
    pub weight: u32,
}

/// The endpoints of one upstream and the balancing state.
#[derive(Debug)]
pub(crate) struct Endpoints {
    list: Box<[Endpoint]>,
    balance: Balance,
    next: AtomicUsize,
    /// The state of weighted balancing; `None` when every endpoint has the
    /// same weight, which takes the unweighted paths.
    weighted: Option<Weighted>,
    cooloff: Duration,
    epoch: Instant,
    /// The passive health check, when there is one.
    passive: Option<PassiveHealthCheck>,
    /// The upstream's name, for the log line of an ejection.
    upstream: Arc<str>,
}

/// What balancing endpoints of unequal weights needs.
#[derive(Debug)]
struct Weighted {
    /// Running sums of the weights, the last one the total: a number drawn
    /// below the total falls on an endpoint in proportion to its weight.
    cumulative: Box<[u64]>,
    /// Smooth weighted round robin's current weight of each endpoint
    /// (nginx's `current_weight`). Each pick reads and writes them all,
    /// under this lock, held for a loop over the endpoints.
    current: Mutex<Box<[i64]>>,
}

/// Counts a request as outstanding on an endpoint until dropped.
#[derive(Debug)]
pub(crate) struct InFlight {
    endpoints: Arc<Endpoints>,
    index: usize,
}

// === impl Endpoint ===

impl Endpoint {
    pub(crate) fn new(
        scheme: Scheme,
        authority: Authority,
        host: HeaderValue,
        weight: u32,
    ) -> Self {
        let label = format!("{scheme}://{authority}").into();
        Self {
            scheme,
            authority,
            host,
            label,
            weight,
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
    /// The endpoints of `list`; at least one has a weight above 0 (the
    /// upstream's build sees to it).
    pub(crate) fn new(list: Vec<Endpoint>, balance: Balance, cooloff: Duration) -> Self {
        let equal = list.windows(2).all(|pair| pair[0].weight == pair[1].weight);
        let weighted = (!equal).then(|| Weighted {
            cumulative: list
                .iter()
                .scan(0u64, |total, endpoint| {
                    *total += u64::from(endpoint.weight);
                    Some(*total)
                })
                .collect(),
            current: Mutex::new(vec![0; list.len()].into_boxed_slice()),
        });
        Self {
            list: list.into_boxed_slice(),
            balance,
            next: AtomicUsize::new(0),
            weighted,
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

    /// Whether at least one endpoint that takes traffic (a weight above
    /// 0) is in for readiness (see `is_ready`).
    pub(crate) fn any_ready(&self) -> bool {
        let now = self.now_ms();
        (0..self.list.len()).any(|i| self.list[i].weight > 0 && self.is_ready(i, now))
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
                    weight: endpoint.weight,
                }
            })
            .collect()
    }

    /// Whether at least one endpoint that takes traffic (a weight above
    /// 0) is in: passing its health check and not cooling off.
    pub(crate) fn any_up(&self) -> bool {
        let now = self.now_ms();
        (0..self.list.len()).any(|i| self.list[i].weight > 0 && self.is_up(i, now))
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
    /// all tried as if up. An endpoint of weight 0 is never picked.
    pub(crate) fn pick(self: &Arc<Self>) -> InFlight {
        let index = match (self.list.len(), &self.weighted) {
            (1, _) => 0,
            (len, None) => {
                let now = self.now_ms();
                let any_down = (0..len).any(|i| !self.is_up(i, now));
                let up = |i: usize| !any_down || self.is_up(i, now);
                match self.balance {
                    Balance::RoundRobin => self.pick_round_robin(len, up),
                    Balance::LeastRequest => self.pick_p2c(len, up),
                }
            }
            (_, Some(weighted)) => {
                let now = self.now_ms();
                let up = |i: usize| self.is_up(i, now);
                match self.balance {
                    Balance::RoundRobin => self.pick_smooth(weighted, up),
                    Balance::LeastRequest => self.pick_p2c_weighted(weighted, up),
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

    /// Smooth weighted round robin (nginx's `ngx_http_upstream_get_peer`):
    /// each endpoint that is up adds its weight to its current weight, the
    /// largest is picked and loses the total. The endpoints that are out
    /// keep their current weight until they are back; when all are out,
    /// all take part.
    fn pick_smooth(&self, weighted: &Weighted, up: impl Fn(usize) -> bool) -> usize {
        let mut current = weighted
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut step = |eligible: &dyn Fn(usize) -> bool| {
            let mut total = 0i64;
            let mut best: Option<usize> = None;
            for (i, endpoint) in self.list.iter().enumerate() {
                if endpoint.weight == 0 || !eligible(i) {
                    continue;
                }
                let weight = i64::from(endpoint.weight);
                current[i] += weight;
                total += weight;
                if best.is_none_or(|b| current[i] > current[b]) {
                    best = Some(i);
                }
            }
            let best = best?;
            current[best] -= total;
            Some(best)
        };
        step(&up).or_else(|| step(&|_| true)).unwrap_or_default()
    }

    /// Weighted power of two choices: two different endpoints drawn in
    /// proportion to their weights; the one with fewer outstanding
    /// requests per unit of weight wins (`load_b / weight_b < load_a /
    /// weight_a`, cross-multiplied).
    fn pick_p2c_weighted(&self, weighted: &Weighted, up: impl Fn(usize) -> bool) -> usize {
        let cumulative = &weighted.cumulative;
        let total = cumulative.last().copied().unwrap_or(0);
        let a = by_weight(cumulative, fastrand::u64(..total.max(1)));
        let weight = |i: usize| u64::from(self.list[i].weight);
        let rest = total - weight(a);
        if rest == 0 {
            // The only endpoint with a weight: no other choice.
            return a;
        }
        // A draw over the other endpoints' weights, stepping over `a`'s.
        let mut roll = fastrand::u64(..rest);
        let a_starts = cumulative[a] - weight(a);
        if roll >= a_starts {
            roll += weight(a);
        }
        let b = by_weight(cumulative, roll);
        let load = |i: usize| {
            u64::try_from(self.list[i].outstanding.load(Ordering::Relaxed)).unwrap_or(u64::MAX)
        };
        match (up(a), up(b)) {
            (true, true) => {
                if load(b).saturating_mul(weight(a)) < load(a).saturating_mul(weight(b)) {
                    b
                } else {
                    a
                }
            }
            (true, false) => a,
            (false, true) => b,
            // Both out: one of those that are in, by weight; none is, `a`.
            (false, false) => {
                let in_total: u64 = (0..self.list.len()).filter(|&i| up(i)).map(weight).sum();
                if in_total == 0 {
                    return a;
                }
                let mut roll = fastrand::u64(..in_total);
                for i in (0..self.list.len()).filter(|&i| up(i)) {
                    if roll < weight(i) {
                        return i;
                    }
                    roll -= weight(i);
                }
                a
            }
        }
    }
}

/// The index whose share of `cumulative` (running sums of weights) holds
/// `roll`, a number below the total: an endpoint (or split backend) drawn in
/// proportion to its weight, never one of weight 0.
pub(crate) fn by_weight(cumulative: &[u64], roll: u64) -> usize {
    cumulative
        .partition_point(|&sum| sum <= roll)
        .min(cumulative.len().saturating_sub(1))
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
        weighted(&vec![1; n], balance)
    }

    /// One endpoint of each weight of `weights`, in order.
    fn weighted(weights: &[u32], balance: Balance) -> Arc<Endpoints> {
        let list = weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| {
                let authority = format!("127.0.0.1:{}", 9000 + i);
                Endpoint::new(
                    Scheme::HTTP,
                    Authority::try_from(authority.as_str()).unwrap(),
                    HeaderValue::from_str(&authority).unwrap(),
                    weight,
                )
            })
            .collect();
        Arc::new(Endpoints::new(list, balance, Duration::from_secs(5)))
    }

    /// How many of `n` picks (each dropped at once) went to each endpoint.
    fn tally(eps: &Arc<Endpoints>, n: usize) -> Vec<usize> {
        let mut counts = vec![0; eps.len()];
        for _ in 0..n {
            counts[eps.pick().index] += 1;
        }
        counts
    }

    #[test]
    fn equal_weights_keep_the_unweighted_paths() {
        for balance in [Balance::RoundRobin, Balance::LeastRequest] {
            assert!(weighted(&[2, 2, 2], balance).weighted.is_none());
            assert!(weighted(&[1, 1, 0], balance).weighted.is_some());
        }
        let eps = weighted(&[7, 7, 7], Balance::RoundRobin);
        let picks: Vec<usize> = (0..6).map(|_| eps.pick().index).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn smooth_weighted_round_robin_gives_the_nginx_sequence() {
        let eps = weighted(&[5, 1, 1], Balance::RoundRobin);
        // nginx's own example: a a b a c a a, and again.
        let picks: Vec<usize> = (0..14).map(|_| eps.pick().index).collect();
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn weighted_p2c_draws_in_proportion_to_weight() {
        let eps = weighted(&[3, 1], Balance::LeastRequest);
        let counts = tally(&eps, 4000);
        // 3/4 expected: 3,000 of 4,000, with a standard deviation under 30;
        // between 0.65 and 0.85 of them.
        assert!((2_600..=3_400).contains(&counts[0]), "{counts:?}");
    }

    #[test]
    fn weighted_p2c_compares_outstanding_requests_per_weight() {
        let eps = weighted(&[3, 1], Balance::LeastRequest);
        // With two endpoints both are always drawn: the loads stay at 3:1
        // whenever the count is a multiple of 4 (ties go either way).
        let held: Vec<InFlight> = (0..8).map(|_| eps.pick()).collect();
        let heavy = held.iter().filter(|f| f.index == 0).count();
        assert_eq!(heavy, 6);
    }

    #[tokio::test(start_paused = true)]
    async fn a_weight_zero_endpoint_is_never_picked() {
        for balance in [Balance::RoundRobin, Balance::LeastRequest] {
            let eps = weighted(&[1, 0, 2], balance);
            assert_eq!(tally(&eps, 300)[1], 0, "{balance:?}");
            // Not even when every other endpoint is out, and it does not
            // make the upstream ready.
            eps.mark_down(0);
            eps.mark_down(2);
            assert!(!eps.any_up() && !eps.any_ready(), "{balance:?}");
            assert_eq!(tally(&eps, 300)[1], 0, "{balance:?}");
            // It is still in, health-wise.
            assert_eq!(eps.count_up(), 1);
            assert_eq!(eps.status()[1].weight, 0);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_weighted_endpoint_that_is_out_is_skipped() {
        for balance in [Balance::RoundRobin, Balance::LeastRequest] {
            let eps = weighted(&[5, 2, 1], balance);
            eps.mark_down(0);
            let counts = tally(&eps, 300);
            assert_eq!(counts[0], 0, "{balance:?}");
            // The others share its traffic as their weights say, 2 to 1:
            // exactly with round robin; about, at random (the standard
            // deviation is about 8).
            match balance {
                Balance::RoundRobin => assert_eq!(counts, [0, 200, 100]),
                _ => assert!((150..=250).contains(&counts[1]), "{counts:?}"),
            }
            tokio::time::advance(Duration::from_secs(6)).await;
            assert!(
                tally(&eps, 70)[0] > 0,
                "{balance:?}: back after the cool-off"
            );
        }
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
