//! [`RateLimitLayer`] and its builder.

use std::{fmt, sync::Arc};

use tollgate_core::{ConfigError, ConfigErrorKind};
use tower_layer::Layer;

use crate::{
    Key, MemoryOptions, MemoryStore, MissingKey, Plan, Quota, RateLimit, RateLimitStats,
    RateLimitStore,
    quota::{CompiledPlan, Window, invalid, is_token},
    service::Shared,
};

/// The name a layer gets when none is set.
pub const DEFAULT_NAME: &str = "default";

/// The plan a bare [`RateLimitBuilder::quota`] goes into.
pub const DEFAULT_PLAN: &str = "default";

/// Applies [`RateLimit`]: GCRA quotas by key and plan, answering 429
/// problem+json. See the [crate docs](crate) for an example.
///
/// A layer value owns its counters, and its clones share them:
///
/// - **Per route:** build one layer per route and put it on that route
///   (`MethodRouter::layer` or `Router::route_layer`), or key one shared
///   layer by [`Key::route`] as well.
/// - **Global:** put one layer on the whole router; every route then
///   counts against the same quotas.
///
/// Both can be stacked; each answers for itself. With a shared store
/// (Redis), give every layer its own [`name`](RateLimitBuilder::name):
/// the name separates their keys in the store, and identical layers in
/// several gateway instances share one quota through it.
#[derive(Clone, Debug)]
#[must_use]
pub struct RateLimitLayer {
    shared: Arc<Shared>,
}

/// Builds a [`RateLimitLayer`]; [`build`](Self::build) checks everything.
#[derive(Clone)]
#[must_use]
pub struct RateLimitBuilder {
    name: String,
    key: Key,
    missing: MissingKey,
    plans: Vec<Plan>,
    default_plan: Option<String>,
    headers_on_allowed: bool,
    store: Option<Arc<dyn RateLimitStore>>,
    memory: MemoryOptions,
    failure: StoreFailure,
}

/// What a layer does when its store cannot decide (Redis unreachable,
/// timed out). Each case is logged (`tracing` warn on
/// `tollgate::ratelimit` when an outage begins, info when it ends),
/// audited (`store-unavailable` / `store-recovered`, and every 503) and
/// counted in [`RateLimitStats`]. Recovery is automatic: the store is
/// tried again and the first success ends the outage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(rename_all = "snake_case", deny_unknown_fields)
)]
#[non_exhaustive]
pub enum StoreFailure {
    /// Admit the request unchecked, and count it (`fail_open`).
    FailOpen,
    /// Answer 503 problem+json with `Retry-After: 1`.
    FailClosed,
    /// Decide with in-memory limits at each quota ÷ `instances` (count and
    /// burst, at least 1): with `instances` gateways behind a balancer,
    /// the sum stays near the shared quota.
    LocalFallback {
        /// How many gateway instances share the quota.
        instances: u32,
    },
}

impl Default for StoreFailure {
    /// Local limits for one instance.
    fn default() -> Self {
        Self::LocalFallback { instances: 1 }
    }
}

impl StoreFailure {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::FailOpen => "fail-open",
            Self::FailClosed => "fail-closed",
            Self::LocalFallback { .. } => "local-fallback",
        }
    }
}

// === impl RateLimitLayer ===

impl RateLimitLayer {
    /// A builder: keyed by the identity, else the client IP; no plans yet.
    pub fn builder() -> RateLimitBuilder {
        RateLimitBuilder {
            name: DEFAULT_NAME.into(),
            key: Key::default(),
            missing: MissingKey::default(),
            plans: Vec::new(),
            default_plan: None,
            headers_on_allowed: false,
            store: None,
            memory: MemoryOptions::new(),
            failure: StoreFailure::default(),
        }
    }

    /// One quota for everyone, keyed by the identity, else the client IP,
    /// in memory.
    ///
    /// # Errors
    ///
    /// When the quota is invalid (a zero count, burst or period).
    pub fn per_key(quota: Quota) -> Result<Self, ConfigError> {
        Self::builder().quota(quota).build()
    }

    /// The counters of this layer and its clones.
    #[must_use]
    pub fn stats(&self) -> RateLimitStats {
        self.shared.stats.clone()
    }

    /// The in-memory store, when it is the layer's store.
    #[must_use]
    pub fn memory_store(&self) -> Option<&MemoryStore> {
        self.shared.memory.as_ref()
    }

    /// Decides for `key` under `plan` (the default plan when unknown)
    /// without a request, as the layer would: for benches and custom
    /// middleware. Store failures are returned as they are, without the
    /// failure mode.
    pub fn check_key(&self, plan: &str, key: &[u8]) -> crate::Check {
        self.shared.check_key(plan, key)
    }

    /// The layer's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Pings the layer's store, for a readiness check: `None` for the
    /// in-memory store (nothing to reach), else a future that resolves to
    /// `Ok(())` when the store answered (`PING` for `RedisStore`, within
    /// the store's timeout). See
    /// [`RateLimitStore::ping`]; the failure mode is not applied.
    ///
    /// ```
    /// # use tollgate_ratelimit::{Quota, RateLimitLayer};
    /// let in_memory = RateLimitLayer::per_key(Quota::per_second(10))?;
    /// assert!(in_memory.ping().is_none());
    /// # Ok::<_, tollgate_core::ConfigError>(())
    /// ```
    #[must_use]
    pub fn ping(&self) -> Option<crate::PingFuture> {
        self.shared.store.ping()
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(inner, self.shared.clone())
    }
}

// === impl RateLimitBuilder ===

impl RateLimitBuilder {
    /// Names the layer (`A-Z a-z 0-9 - _ .`): it prefixes its keys in a
    /// shared store and appears in logs. Default [`DEFAULT_NAME`].
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// What requests are keyed by (default: identity, else client IP).
    pub fn key(mut self, key: Key) -> Self {
        self.key = key;
        self
    }

    /// What happens when the key is missing or invalid (default: fall back
    /// to the identity, then the client IP).
    pub fn on_missing_key(mut self, missing: MissingKey) -> Self {
        self.missing = missing;
        self
    }

    /// Adds a plan. Requests whose `Identity.plan` names it get its quotas.
    pub fn plan(mut self, plan: Plan) -> Self {
        self.plans.push(plan);
        self
    }

    /// Adds a quota to the plan named [`DEFAULT_PLAN`], creating it.
    pub fn quota(mut self, quota: Quota) -> Self {
        match self.plans.iter_mut().find(|p| p.name() == DEFAULT_PLAN) {
            Some(plan) => *plan = plan.clone().quota(quota),
            None => self.plans.push(Plan::new(DEFAULT_PLAN).quota(quota)),
        }
        self
    }

    /// The plan of anonymous requests and of unknown plan names (default:
    /// the plan named [`DEFAULT_PLAN`], else the first plan).
    pub fn default_plan(mut self, name: impl Into<String>) -> Self {
        self.default_plan = Some(name.into());
        self
    }

    /// Sends `RateLimit-Policy` and `RateLimit` on admitted responses too
    /// (they are always sent on 429s). Default `false`.
    pub fn headers_on_allowed(mut self, on: bool) -> Self {
        self.headers_on_allowed = on;
        self
    }

    /// Uses `store` instead of the in-memory one (e.g. `RedisStore`).
    pub fn store(mut self, store: impl RateLimitStore) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// Options of the in-memory store: the primary one, or the local
    /// fallback of another store.
    pub fn memory(mut self, options: MemoryOptions) -> Self {
        self.memory = options;
        self
    }

    /// What to do when the store fails (default: local limits for one
    /// instance). The in-memory store never fails.
    pub fn on_store_error(mut self, failure: StoreFailure) -> Self {
        self.failure = failure;
        self
    }

    /// Checks the configuration and builds the layer.
    ///
    /// # Errors
    ///
    /// When there is no plan, a plan or the name is invalid, two plans
    /// share a name, the default plan is unknown, the key is empty, or
    /// `LocalFallback` has 0 instances.
    pub fn build(self) -> Result<RateLimitLayer, ConfigError> {
        let context = format!("rate limit {:?}", self.name);
        self.check().map_err(|e| e.context(&context))?;
        let mut next = 0;
        let mut plans = Vec::with_capacity(self.plans.len());
        for plan in &self.plans {
            if plans.iter().any(|p: &CompiledPlan| *p.name == *plan.name()) {
                return Err(ConfigError::new(
                    ConfigErrorKind::Duplicate,
                    format!("plan {:?} is defined twice", plan.name()),
                )
                .context(&context));
            }
            plans.push(plan.compile(&mut next).map_err(|e| e.context(&context))?);
        }
        let default_plan = match &self.default_plan {
            Some(name) => plans
                .iter()
                .position(|p| *p.name == **name)
                .ok_or_else(|| {
                    ConfigError::new(
                        ConfigErrorKind::Missing,
                        format!("the default plan {name:?} is not defined"),
                    )
                    .context(&context)
                })?,
            None => plans
                .iter()
                .position(|p| &*p.name == DEFAULT_PLAN)
                .unwrap_or(0),
        };
        let windows: Vec<Window> = plans
            .iter()
            .flat_map(|p| p.windows.iter().cloned())
            .collect();
        let (store, memory): (Arc<dyn RateLimitStore>, _) = match self.store {
            Some(store) => (store, None),
            None => {
                let memory = self.memory.build(&windows);
                (Arc::new(memory.clone()), Some(memory))
            }
        };
        let local = match (self.failure, &memory) {
            (StoreFailure::LocalFallback { instances }, None) => {
                let local_plans: Box<[Box<[Window]>]> = plans
                    .iter()
                    .map(|p| {
                        p.windows
                            .iter()
                            .map(|w| w.with_quota(w.quota().divided(instances)))
                            .collect()
                    })
                    .collect();
                let all: Vec<Window> = local_plans.iter().flat_map(|p| p.iter().cloned()).collect();
                Some((self.memory.build(&all), local_plans))
            }
            _ => None,
        };
        Ok(RateLimitLayer {
            shared: Arc::new(Shared {
                name: self.name.into(),
                key: self.key,
                missing: self.missing,
                plans: plans.into_boxed_slice(),
                default_plan,
                headers_on_allowed: self.headers_on_allowed,
                store,
                memory,
                failure: self.failure,
                local,
                stats: RateLimitStats::default(),
                outage: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    fn check(&self) -> Result<(), ConfigError> {
        if !is_token(&self.name) {
            return Err(invalid("a name is 1 to 64 characters of A-Z a-z 0-9 - _ ."));
        }
        if self.plans.is_empty() {
            return Err(ConfigError::new(
                ConfigErrorKind::Missing,
                "no quota: add a plan or a quota",
            ));
        }
        if self.key.is_empty() {
            return Err(ConfigError::new(
                ConfigErrorKind::Missing,
                "the key has no part",
            ));
        }
        if self.failure == (StoreFailure::LocalFallback { instances: 0 }) {
            return Err(invalid("local fallback needs at least 1 instance"));
        }
        Ok(())
    }
}

impl fmt::Debug for RateLimitBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitBuilder")
            .field("name", &self.name)
            .field("key", &self.key)
            .field("missing", &self.missing)
            .field("plans", &self.plans)
            .field("default_plan", &self.default_plan)
            .field("headers_on_allowed", &self.headers_on_allowed)
            .field("store", &self.store)
            .field("failure", &self.failure)
            .finish_non_exhaustive()
    }
}
