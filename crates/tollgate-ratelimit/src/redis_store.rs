//! [`RedisStore`]: one quota shared by every gateway instance.

use std::{
    fmt,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use redis::{
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::{ClusterClient, ClusterConfig},
    cluster_async::ClusterConnection,
};
use tokio::time::Instant;
use tollgate_core::{ConfigError, ConfigErrorKind};

use crate::{
    quota::{MAX_WINDOWS, invalid, is_token},
    store::{Check, Decision, PingFuture, RateLimitStore, StoreError, StoreKey, WindowState},
};

/// GCRA for every window of a plan, atomically: the new theoretical
/// arrival times are written only when every window admits the request.
/// Time is Redis's (`TIME`), so the instances' clocks do not matter.
///
/// KEYS: one per window. ARGV: per window, the emission interval and the
/// burst's tolerance (`burst × interval`), in microseconds.
/// Returns `{allowed, retry_after_us, denied_by, r1, t1_us, r2, t2_us, …}`.
const GCRA_LUA: &str = r"
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000000 + tonumber(now[2])
local n = #KEYS
local tats = {}
local allowed, wait, denied = 1, 0, -1
for i = 1, n do
  local t = tonumber(ARGV[2 * i - 1])
  local tau = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  local over = tat + t - now - tau
  if over > 0 then
    allowed = 0
    if over > wait then wait = over; denied = i - 1 end
  end
  tats[i] = tat
end
local out = {allowed, wait, denied}
for i = 1, n do
  local t = tonumber(ARGV[2 * i - 1])
  local tau = tonumber(ARGV[2 * i])
  local tat = tats[i]
  if allowed == 1 then
    tat = tat + t
    redis.call('SET', KEYS[i], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
  end
  local remaining = math.floor((tau - (tat - now)) / t)
  if remaining < 0 then remaining = 0 end
  out[#out + 1] = remaining
  out[#out + 1] = tat - now
end
return out
";

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "tollgate:rl";

/// Rate-limit state in Redis, shared by every gateway instance that uses
/// the same Redis, prefix and layer names.
///
/// - One round trip per decision: a Lua script run with `EVALSHA` (loaded
///   again by itself after a Redis restart), deciding every window of the
///   plan atomically. Keys expire by themselves (`PX` = time until full).
/// - Redis Cluster ([`open_cluster`](Self::open_cluster)): a decision's
///   keys are `{prefix}:{<layer>\x1f<key>}:<window>`; the `{…}` hash tag
///   puts all windows of one key on one slot, so the script runs on the one
///   node that owns that slot.
/// - The connection is made on the first check (so a gateway starts while
///   Redis is down) and reconnects by itself: a `ConnectionManager` for one
///   Redis ([`open`](Self::open)), a cluster connection (slot map, `MOVED`
///   and `ASK` redirections) for a cluster.
/// - A decision that fails or takes longer than the
///   [timeout](Self::timeout) is a [`StoreError`]; the layer applies its
///   `StoreFailure` mode. After a failure, Redis is tried again at most
///   every [`retry_every`](Self::retry_every); meanwhile the failure mode
///   answers at once.
///
/// Clones share the connection.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    script: redis::Script,
    prefix: String,
    timeout: Duration,
    retry_every: Duration,
    epoch: Instant,
    /// Nanoseconds after `epoch` before which Redis is not tried.
    down_until: AtomicU64,
}

/// Where the decisions go. Both connections are made on the first check.
enum Backend {
    /// One Redis.
    Single {
        client: redis::Client,
        connection: OnceLock<ConnectionManager>,
    },
    /// Redis Cluster: the script goes to the node that owns the key's slot.
    Cluster {
        /// Boxed: much larger than a `redis::Client`.
        client: Box<ClusterClient>,
        connection: OnceLock<ClusterConnection>,
    },
}

// === impl RedisStore ===

impl RedisStore {
    /// A store for the Redis at `url` (`redis://host:port/db`). Nothing is
    /// connected until the first check.
    ///
    /// # Errors
    ///
    /// When the URL is not a Redis URL.
    pub fn open(url: &str) -> Result<Self, ConfigError> {
        let client = redis::Client::open(url).map_err(|e| {
            ConfigError::new(ConfigErrorKind::InvalidUrl, format!("redis URL: {e}"))
        })?;
        Ok(Self::with_backend(Backend::Single {
            client,
            connection: OnceLock::new(),
        }))
    }

    /// A store for the Redis Cluster reached through `nodes`
    /// (`redis://host:port` each; a few of the cluster's nodes are enough,
    /// the others are discovered). Nothing is connected until the first
    /// check.
    ///
    /// ```
    /// # use tollgate_ratelimit::RedisStore;
    /// let store = RedisStore::open_cluster([
    ///     "redis://10.0.0.1:6379",
    ///     "redis://10.0.0.2:6379",
    /// ])?;
    /// # Ok::<_, tollgate_core::ConfigError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// When there is no node or a node is not a Redis URL.
    pub fn open_cluster(
        nodes: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> Result<Self, ConfigError> {
        let nodes: Vec<String> = nodes.into_iter().map(|n| n.as_ref().to_owned()).collect();
        if nodes.is_empty() {
            return Err(invalid("a Redis Cluster needs at least one node URL"));
        }
        // Few, short retries: a decision has `timeout` in all, and an
        // outage is the failure mode's business, not a retry loop's.
        let client = ClusterClient::builder(nodes)
            .retries(2)
            .min_retry_wait(10)
            .max_retry_wait(100)
            .build()
            .map_err(|e| {
                ConfigError::new(
                    ConfigErrorKind::InvalidUrl,
                    format!("redis cluster node URL: {e}"),
                )
            })?;
        Ok(Self::with_backend(Backend::Cluster {
            client: Box::new(client),
            connection: OnceLock::new(),
        }))
    }

    fn with_backend(backend: Backend) -> Self {
        Self {
            inner: Arc::new(Inner {
                backend,
                script: redis::Script::new(GCRA_LUA),
                prefix: DEFAULT_PREFIX.into(),
                timeout: Duration::from_millis(250),
                retry_every: Duration::from_secs(1),
                epoch: Instant::now(),
                down_until: AtomicU64::new(0),
            }),
        }
    }

    fn configure(mut self, f: impl FnOnce(&mut Inner)) -> Self {
        f(Arc::make_mut(&mut self.inner));
        self
    }

    /// The key prefix (default [`DEFAULT_PREFIX`]; `A-Z a-z 0-9 - _ . :`).
    ///
    /// # Errors
    ///
    /// When the prefix is empty, longer than 64 bytes or has other characters.
    pub fn prefix(self, prefix: &str) -> Result<Self, ConfigError> {
        if !is_token(&prefix.replace(':', ".")) {
            return Err(invalid("a Redis prefix is 1 to 64 of A-Z a-z 0-9 - _ . :"));
        }
        let prefix = prefix.to_owned();
        Ok(self.configure(|i| i.prefix = prefix))
    }

    /// The longest a decision may take, connecting included (default
    /// 250 ms).
    #[must_use]
    pub fn timeout(self, timeout: Duration) -> Self {
        self.configure(|i| i.timeout = timeout)
    }

    /// How long after a failure Redis is left alone (default 1 s).
    #[must_use]
    pub fn retry_every(self, every: Duration) -> Self {
        self.configure(|i| i.retry_every = every)
    }

    /// The single-node connection, made on first use.
    fn manager(
        &self,
        client: &redis::Client,
        connection: &OnceLock<ConnectionManager>,
    ) -> Result<ConnectionManager, StoreError> {
        if let Some(m) = connection.get() {
            return Ok(m.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.inner.timeout))
            .set_response_timeout(Some(self.inner.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| StoreError::new(format!("redis: {:?}", e.kind())))?;
        Ok(connection.get_or_init(|| manager).clone())
    }

    /// The cluster connection, made on first use; it connects in the
    /// background and finds the slot map by itself.
    fn cluster(
        &self,
        client: &ClusterClient,
        connection: &OnceLock<ClusterConnection>,
    ) -> ClusterConnection {
        connection
            .get_or_init(|| {
                let config = ClusterConfig::new()
                    .set_connection_timeout(self.inner.timeout)
                    .set_response_timeout(self.inner.timeout);
                client.get_pending_async_connection_with_config(config)
            })
            .clone()
    }

    fn now_nanos(&self) -> u64 {
        u64::try_from(self.inner.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The keys and arguments of one decision.
    fn keys_and_args(&self, key: &StoreKey<'_>) -> (Vec<Vec<u8>>, Vec<u64>) {
        let mut keys = Vec::with_capacity(key.windows.len());
        let mut args = Vec::with_capacity(2 * key.windows.len());
        for window in key.windows {
            let mut k =
                Vec::with_capacity(self.inner.prefix.len() + key.scope.len() + key.key.len() + 32);
            k.extend_from_slice(self.inner.prefix.as_bytes());
            k.extend_from_slice(b":{");
            k.extend_from_slice(key.scope.as_bytes());
            k.push(0x1f);
            k.extend_from_slice(key.key);
            k.extend_from_slice(b"}:");
            k.extend_from_slice(window.id().as_bytes());
            keys.push(k);
            let quota = window.quota();
            let t = micros(quota.emission_interval()).max(1);
            args.push(t);
            args.push(t.saturating_mul(u64::from(quota.burst_size())));
        }
        (keys, args)
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Clone for Inner {
    /// The same settings, with a connection of its own.
    fn clone(&self) -> Self {
        Self {
            backend: self.backend.clone(),
            script: redis::Script::new(GCRA_LUA),
            prefix: self.prefix.clone(),
            timeout: self.timeout,
            retry_every: self.retry_every,
            epoch: self.epoch,
            down_until: AtomicU64::new(0),
        }
    }
}

impl Clone for Backend {
    /// The same client, not yet connected.
    fn clone(&self) -> Self {
        match self {
            Self::Single { client, .. } => Self::Single {
                client: client.clone(),
                connection: OnceLock::new(),
            },
            Self::Cluster { client, .. } => Self::Cluster {
                client: client.clone(),
                connection: OnceLock::new(),
            },
        }
    }
}

fn parse(reply: &[i64], windows: usize) -> Result<Decision, StoreError> {
    let bad = || StoreError::new("redis: unexpected script reply");
    let (&[allowed, wait, denied], rest) = reply.split_first_chunk::<3>().ok_or_else(bad)?;
    if rest.len() != 2 * windows || windows > MAX_WINDOWS {
        return Err(bad());
    }
    let mut states = [None; MAX_WINDOWS];
    for (slot, pair) in states.iter_mut().zip(rest.chunks_exact(2)) {
        *slot = Some(WindowState {
            remaining: u32::try_from(pair[0].max(0)).unwrap_or(u32::MAX),
            reset: Duration::from_micros(u64::try_from(pair[1].max(0)).unwrap_or(0)),
        });
    }
    if allowed == 1 {
        return Ok(Decision::allowed_array(states));
    }
    let wait = Duration::from_micros(u64::try_from(wait.max(0)).unwrap_or(0));
    let denied = usize::try_from(denied).unwrap_or(0);
    if let Some(Some(s)) = states.get_mut(denied) {
        s.remaining = 0;
    }
    Ok(Decision::denied(wait, denied, &states))
}

impl RateLimitStore for RedisStore {
    fn check(&self, key: &StoreKey<'_>) -> Check {
        let now = self.now_nanos();
        if now < self.inner.down_until.load(Ordering::Relaxed) {
            return Check::Ready(Err(StoreError::new("redis: unavailable, retrying later")));
        }
        // Both connections spawn their tasks on tokio: never outside it.
        if tokio::runtime::Handle::try_current().is_err() {
            return Check::Ready(Err(StoreError::new("redis: no tokio runtime")));
        }
        match &self.inner.backend {
            Backend::Single { client, connection } => match self.manager(client, connection) {
                Ok(manager) => self.decide(manager, key),
                Err(e) => Check::Ready(Err(e)),
            },
            Backend::Cluster { client, connection } => {
                self.decide(self.cluster(client, connection), key)
            }
        }
    }

    /// `PING` over the store's connection (made now when it is not yet),
    /// within the store's [timeout](Self::timeout). On a cluster, every
    /// primary must answer. A failed ping does not change what decisions
    /// do (the `retry_every` pause is theirs).
    fn ping(&self) -> Option<PingFuture> {
        let this = self.clone();
        Some(Box::pin(async move {
            if tokio::runtime::Handle::try_current().is_err() {
                return Err(StoreError::new("redis: no tokio runtime"));
            }
            match &this.inner.backend {
                Backend::Single { client, connection } => {
                    let manager = this.manager(client, connection)?;
                    this.ping_over(manager).await
                }
                Backend::Cluster { client, connection } => {
                    this.ping_over(this.cluster(client, connection)).await
                }
            }
        }))
    }
}

// === impl RedisStore (decisions) ===

impl RedisStore {
    /// One decision over `connection`, single node or cluster alike: the
    /// script (`EVALSHA`, loaded again on `NOSCRIPT`; on a cluster, on the
    /// node that owns the key's slot), the timeout and the failure
    /// bookkeeping.
    fn decide<C>(&self, mut connection: C, key: &StoreKey<'_>) -> Check
    where
        C: ConnectionLike + Send + 'static,
    {
        // Owned: the future outlives `key`.
        let (keys, args) = self.keys_and_args(key);
        let windows = key.windows.len();
        let this = self.clone();
        Check::Pending(Box::pin(async move {
            let mut invocation = this.inner.script.prepare_invoke();
            for k in keys {
                invocation.key(k);
            }
            for a in args {
                invocation.arg(a);
            }
            let result = tokio::time::timeout(
                this.inner.timeout,
                invocation.invoke_async::<Vec<i64>>(&mut connection),
            )
            .await;
            let reply = match result {
                Ok(Ok(reply)) => reply,
                Ok(Err(e)) => return Err(this.down(format!("redis: {:?}", e.kind()))),
                Err(_) => return Err(this.down("redis: timed out".into())),
            };
            this.inner.down_until.store(0, Ordering::Relaxed);
            parse(&reply, windows)
        }))
    }
}

// === impl RedisStore (pings) ===

impl RedisStore {
    async fn ping_over<C>(&self, mut connection: C) -> Result<(), StoreError>
    where
        C: ConnectionLike + Send,
    {
        let ping = redis::cmd("PING");
        match tokio::time::timeout(self.inner.timeout, ping.query_async::<()>(&mut connection))
            .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::new(format!("redis: {:?}", e.kind()))),
            Err(_) => Err(StoreError::new("redis: timed out")),
        }
    }
}

// === impl RedisStore (failures) ===

impl RedisStore {
    fn down(&self, message: String) -> StoreError {
        let until = self
            .now_nanos()
            .saturating_add(u64::try_from(self.inner.retry_every.as_nanos()).unwrap_or(u64::MAX));
        self.inner.down_until.store(until, Ordering::Relaxed);
        StoreError::new(message)
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cluster = matches!(self.inner.backend, Backend::Cluster { .. });
        f.debug_struct("RedisStore")
            .field("cluster", &cluster)
            .field("prefix", &self.inner.prefix)
            .field("timeout", &self.inner.timeout)
            .field("retry_every", &self.inner.retry_every)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Plan, Quota};

    /// Redis Cluster's hash tag: what lies between the first `{` and the
    /// next `}`, when that is not empty; else the whole key.
    fn hash_tag(key: &[u8]) -> &[u8] {
        if let Some(open) = key.iter().position(|&b| b == b'{')
            && let Some(len) = key[open + 1..].iter().position(|&b| b == b'}')
            && len > 0
        {
            return &key[open + 1..open + 1 + len];
        }
        key
    }

    #[test]
    fn all_windows_of_a_key_share_one_hash_tag() {
        let plan = Plan::new("p")
            .quota(Quota::per_second(5))
            .quota(Quota::per_minute(100))
            .quota(Quota::per_day(1000))
            .compile(&mut 0)
            .unwrap();
        let store = RedisStore::open_cluster(["redis://127.0.0.1:7000"]).unwrap();
        for key in [
            &b"alice"[..],
            b"",
            b"a}b{c",
            b"}",
            b"{x}",
            b"ip\x1f203.0.113.7",
        ] {
            let (keys, args) = store.keys_and_args(&StoreKey {
                scope: "layer",
                plan: "p",
                key,
                windows: &plan.windows,
            });
            assert_eq!(keys.len(), 3);
            assert_eq!(args.len(), 6);
            let tag = hash_tag(&keys[0]);
            assert!(tag.starts_with(b"layer\x1f"), "{:?}", keys[0]);
            for k in &keys {
                assert_eq!(hash_tag(k), tag, "{k:?}");
            }
        }
    }

    #[tokio::test]
    async fn ping_fails_when_nothing_listens() {
        // A port that was free a moment ago: nothing answers there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let store = RedisStore::open(&format!("redis://127.0.0.1:{port}/"))
            .unwrap()
            .timeout(Duration::from_millis(200));
        let ping = RateLimitStore::ping(&store).expect("a Redis store can be pinged");
        let err = ping.await.unwrap_err();
        assert!(err.to_string().starts_with("redis: "), "{err}");
    }

    #[test]
    fn open_cluster_checks_its_nodes() {
        let none: [&str; 0] = [];
        assert!(RedisStore::open_cluster(none).is_err());
        assert!(RedisStore::open_cluster(["not a url"]).is_err());
        let store = RedisStore::open_cluster(vec!["redis://127.0.0.1:7000".to_owned()]).unwrap();
        assert!(format!("{store:?}").contains("cluster: true"));
    }
}
