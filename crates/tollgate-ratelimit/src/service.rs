//! [`RateLimit`]: the service, and the decision shared by its clones.

use std::{
    fmt,
    fmt::Write as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use http::{HeaderName, HeaderValue, Request, Response};
use tollgate_core::{Identity, Problem, RequestId, RouteName, audit};
use tower_service::Service;

use crate::{
    Key, MemoryStore, MissingKey, RateLimitStats, RateLimitStore, StoreFailure,
    future::ResponseFuture,
    key::KeyError,
    quota::{CompiledPlan, Window},
    stats::bump,
    store::{Check, CheckFuture, Decision, StoreError, StoreKey},
};

/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers).
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// How long a client is told to wait when the store failed closed.
const FAIL_CLOSED_RETRY: Duration = Duration::from_secs(1);

/// Rate limits in front of `S`: answers 429 problem+json, or calls `S`.
///
/// Never pending in `poll_ready` for its own sake: readiness is the inner
/// service's, and the decision is made in `call`. See the
/// [crate docs](crate) for an example.
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// Everything a layer decides with, shared by its services.
pub(crate) struct Shared {
    pub(crate) name: Arc<str>,
    pub(crate) key: Key,
    pub(crate) missing: MissingKey,
    pub(crate) plans: Box<[CompiledPlan]>,
    pub(crate) default_plan: usize,
    pub(crate) headers_on_allowed: bool,
    pub(crate) store: Arc<dyn RateLimitStore>,
    pub(crate) memory: Option<MemoryStore>,
    pub(crate) failure: StoreFailure,
    pub(crate) local: Option<(MemoryStore, Box<[Box<[Window]>]>)>,
    pub(crate) stats: RateLimitStats,
    pub(crate) outage: AtomicBool,
}

/// The header values added to an admitted response.
#[derive(Debug)]
pub(crate) struct RateHeaders {
    policy: HeaderValue,
    state: HeaderValue,
}

/// What to do with a request.
pub(crate) enum Outcome {
    Pass(Option<RateHeaders>),
    Reject(Problem),
}

/// After a store failure: a local decision, or the outcome itself.
enum Failed {
    Decided(Decision),
    Done(Outcome),
}

/// What `call` found: an outcome now, or a store to wait for.
enum Begin {
    Done(Outcome),
    Wait(CheckFuture, Vec<u8>, usize),
}

// === impl RateLimit ===

impl<S> RateLimit<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    /// A layer with one in-memory `quota` per key (identity, else client
    /// IP): [`RateLimitLayer::per_key`](crate::RateLimitLayer::per_key).
    ///
    /// # Errors
    ///
    /// When the quota is invalid.
    pub fn layer(quota: crate::Quota) -> Result<crate::RateLimitLayer, tollgate_core::ConfigError> {
        crate::RateLimitLayer::per_key(quota)
    }

    tollgate_core::inner_service_accessors!();
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for RateLimit<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone,
{
    type Response = Response<tollgate_core::body::ResponseBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        match self.shared.begin(&req) {
            Begin::Done(Outcome::Pass(headers)) => {
                ResponseFuture::call(self.inner.call(req), headers)
            }
            Begin::Done(Outcome::Reject(problem)) => ResponseFuture::reject(problem),
            Begin::Wait(check, key, plan) => {
                // The store must answer first: take the service that is
                // ready along, leave a clone.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::wait(check, inner, req, self.shared.clone(), key, plan)
            }
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for RateLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

// === impl Shared ===

impl Shared {
    fn plan_index<B>(&self, req: &Request<B>) -> usize {
        let Some(name) = req
            .extensions()
            .get::<Identity>()
            .and_then(|i| i.plan.as_deref())
        else {
            return self.default_plan;
        };
        self.plans
            .iter()
            .position(|p| *p.name == *name)
            .unwrap_or(self.default_plan)
    }

    pub(crate) fn check_key(&self, plan: &str, key: &[u8]) -> Check {
        let plan = self
            .plans
            .iter()
            .find(|p| *p.name == *plan)
            .or_else(|| self.plans.get(self.default_plan));
        match plan {
            Some(plan) if !plan.unlimited => self.store.check(&StoreKey {
                scope: &self.name,
                plan: &plan.name,
                key,
                windows: &plan.windows,
            }),
            _ => Check::Ready(Ok(Decision::allowed(&[]))),
        }
    }

    fn begin<B>(&self, req: &Request<B>) -> Begin {
        let plan_index = self.plan_index(req);
        let Some(plan) = self.plans.get(plan_index) else {
            return Begin::Done(Outcome::Reject(Problem::internal().for_request(req)));
        };
        if plan.unlimited {
            bump(&self.stats.counters().unlimited);
            return Begin::Done(Outcome::Pass(None));
        }
        let key = match self.key.make(req, self.missing) {
            Ok(key) => key,
            Err(err) => return Begin::Done(Outcome::Reject(self.key_rejected(err, req))),
        };
        if key.fell_back {
            bump(&self.stats.counters().key_fallback);
        }
        let store_key = StoreKey {
            scope: &self.name,
            plan: &plan.name,
            key: &key.bytes,
            windows: &plan.windows,
        };
        match self.store.check(&store_key) {
            Check::Ready(result) => Begin::Done(self.finish(result, plan_index, &key.bytes, req)),
            Check::Pending(check) => Begin::Wait(check, key.bytes, plan_index),
        }
    }

    /// Turns a store's answer into what happens to the request.
    pub(crate) fn finish<B>(
        &self,
        result: Result<Decision, StoreError>,
        plan_index: usize,
        key: &[u8],
        req: &Request<B>,
    ) -> Outcome {
        let Some(plan) = self.plans.get(plan_index) else {
            return Outcome::Reject(Problem::internal().for_request(req));
        };
        let decision = match result {
            Ok(decision) => {
                self.store_recovered(req);
                decision
            }
            Err(err) => match self.store_failed(&err, plan, key, req) {
                Failed::Decided(decision) => decision,
                Failed::Done(outcome) => return outcome,
            },
        };
        let counters = self.stats.counters();
        if decision.is_allowed() {
            bump(&counters.allowed);
            let headers = self
                .headers_on_allowed
                .then(|| headers(plan, &decision))
                .flatten();
            return Outcome::Pass(headers);
        }
        bump(&counters.rejected);
        let window = decision
            .denied_by()
            .and_then(|i| plan.windows.get(i))
            .or_else(|| plan.windows.first());
        let reason = window.map_or("quota", |w| w.id());
        audit_event(req, "rate-limited", reason);
        let mut problem = Problem::rate_limited()
            .detail(window.map_or_else(
                || "quota exceeded".to_owned(),
                |w| {
                    format!(
                        "quota of {} requests per {} s exceeded (plan {})",
                        w.quota().count(),
                        w.quota().period().as_secs_f64(),
                        plan.name
                    )
                },
            ))
            .retry_after(decision.retry_after())
            .member("plan", plan.name.to_string())
            .for_request(req);
        if let Some(h) = headers(plan, &decision) {
            problem = problem
                .header(RATELIMIT_POLICY, h.policy)
                .header(RATELIMIT, h.state);
        }
        Outcome::Reject(problem)
    }

    /// Applies the failure mode: a decision to go on with, or the outcome.
    fn store_failed<B>(
        &self,
        err: &StoreError,
        plan: &CompiledPlan,
        key: &[u8],
        req: &Request<B>,
    ) -> Failed {
        let counters = self.stats.counters();
        bump(&counters.store_errors);
        let mode = self.failure.as_str();
        if !self.outage.swap(true, Ordering::AcqRel) {
            bump(&counters.outages);
            tracing::warn!(
                target: "tollgate::ratelimit",
                limiter = %self.name,
                error = %err,
                mode,
                "rate-limit store unavailable"
            );
            audit_event(req, "store-unavailable", mode);
        }
        match self.failure {
            StoreFailure::FailOpen => {
                bump(&counters.fail_open);
                Failed::Done(Outcome::Pass(None))
            }
            StoreFailure::LocalFallback { .. } => {
                let local = self.local.as_ref().and_then(|(store, plans)| {
                    let windows = plans.get(self.plan_position(plan))?;
                    let key = StoreKey {
                        scope: &self.name,
                        plan: &plan.name,
                        key,
                        windows,
                    };
                    store.decide(&key).ok()
                });
                match local {
                    Some(decision) => {
                        bump(&counters.local_fallback);
                        Failed::Decided(decision)
                    }
                    None => Failed::Done(self.fail_closed(plan, req)),
                }
            }
            StoreFailure::FailClosed => Failed::Done(self.fail_closed(plan, req)),
        }
    }

    fn plan_position(&self, plan: &CompiledPlan) -> usize {
        self.plans
            .iter()
            .position(|p| std::ptr::eq(p, plan))
            .unwrap_or(self.default_plan)
    }

    fn fail_closed<B>(&self, plan: &CompiledPlan, req: &Request<B>) -> Outcome {
        bump(&self.stats.counters().fail_closed);
        audit_event(req, "rate-limit-unavailable", "fail-closed");
        Outcome::Reject(
            Problem::service_unavailable()
                .detail("rate limits cannot be checked right now")
                .retry_after(FAIL_CLOSED_RETRY)
                .member("plan", plan.name.to_string())
                .for_request(req),
        )
    }

    fn store_recovered<B>(&self, req: &Request<B>) {
        if self.outage.load(Ordering::Relaxed) && self.outage.swap(false, Ordering::AcqRel) {
            tracing::info!(
                target: "tollgate::ratelimit",
                limiter = %self.name,
                "rate-limit store available again"
            );
            audit_event(req, "store-recovered", &self.name);
        }
    }

    fn key_rejected<B>(&self, err: KeyError, req: &Request<B>) -> Problem {
        bump(&self.stats.counters().key_rejected);
        let (reason, detail) = match err {
            KeyError::Missing => ("missing-key", "the request has no rate-limit key"),
            KeyError::Invalid => (
                "invalid-key",
                "the request's rate-limit key is too long or not printable",
            ),
        };
        audit_event(req, "denied", reason);
        Problem::bad_request()
            .detail(detail)
            .member("reason", reason)
            .for_request(req)
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("name", &self.name)
            .field("key", &self.key)
            .field("missing", &self.missing)
            .field("plans", &self.plans)
            .field("store", &self.store)
            .field("failure", &self.failure)
            .finish_non_exhaustive()
    }
}

// === impl RateHeaders ===

impl RateHeaders {
    /// Appends both fields (a layer further out appends its own).
    pub(crate) fn apply(self, headers: &mut http::HeaderMap) {
        headers.append(RATELIMIT_POLICY, self.policy);
        headers.append(RATELIMIT, self.state);
    }
}

/// `RateLimit-Policy` and `RateLimit` for `decision`:
/// `"free-minute";r=9;t=6` per known window, `t` in whole seconds rounded up.
fn headers(plan: &CompiledPlan, decision: &Decision) -> Option<RateHeaders> {
    let policy = plan.policy.clone()?;
    let mut state = String::with_capacity(32 * plan.windows.len());
    for (i, window) in plan.windows.iter().enumerate() {
        let Some(s) = decision.state(i) else { continue };
        if !state.is_empty() {
            state.push_str(", ");
        }
        let reset = s.reset.as_secs() + u64::from(s.reset.subsec_nanos() > 0);
        let _ = write!(state, "\"{}\";r={};t={}", window.id(), s.remaining, reset);
    }
    let state = HeaderValue::try_from(state).ok()?;
    Some(RateHeaders { policy, state })
}

fn audit_event<B>(req: &Request<B>, outcome: &str, reason: &str) {
    let ext = req.extensions();
    let identity = ext.get::<Identity>();
    let subject = identity.and_then(|i| i.subject.as_deref().or(i.consumer.as_deref()));
    audit::event(
        ext.get::<RequestId>(),
        subject,
        ext.get::<RouteName>().map(RouteName::as_str),
        outcome,
        reason,
    );
}
