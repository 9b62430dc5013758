//! A bounded cache of verdicts keyed by the token, so an expensive check
//! (an RS256 signature, an introspection round trip) is paid once per
//! token, not once per request.
//!
//! The key is the token itself, compared in full, as Envoy's JWT cache
//! does: hashing every token with SHA-256 on every hit cost more than the
//! rest of the lookup together (about 250 ns for an RS256 token), and a
//! shorter or non-cryptographic hash could let a forged token collide with
//! a cached one. The map's hasher is ahash with per-process random keys.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use sha2::{Digest, Sha256};
use tollgate_core::Identity;

use crate::AuthError;

pub(crate) type Digest32 = [u8; 32];

pub(crate) fn digest(credential: &str) -> Digest32 {
    digest_bytes(credential.as_bytes())
}

pub(crate) fn digest_bytes(bytes: &[u8]) -> Digest32 {
    Sha256::digest(bytes).into()
}

/// Seconds since the Unix epoch, as JWT claims count time.
pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[derive(Clone, Debug)]
struct Entry {
    verdict: Result<Identity, AuthError>,
    /// Unix seconds after which the entry must not be used.
    until: u64,
    /// The key-set generation the verdict was reached with: when the keys
    /// change (a key is rotated out), older verdicts no longer count.
    generation: u64,
}

/// Verdicts with a time-to-live and a size bound (quick_cache evicts the
/// least useful entries past it, S3-FIFO). Expiry is checked on read.
#[derive(Clone)]
pub(crate) struct VerdictCache {
    entries: Arc<quick_cache::sync::Cache<Box<str>, Arc<Entry>>>,
    ttl: Duration,
}

impl std::fmt::Debug for VerdictCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerdictCache")
            .field("entries", &self.entries.len())
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl VerdictCache {
    pub(crate) fn new(max_entries: u64, ttl: Duration) -> Self {
        let capacity = usize::try_from(max_entries).unwrap_or(usize::MAX).max(1);
        Self {
            entries: Arc::new(quick_cache::sync::Cache::new(capacity)),
            ttl,
        }
    }

    /// A cached verdict still valid now, reached with the keys of
    /// `generation`.
    pub(crate) fn get(&self, token: &str, generation: u64) -> Option<Result<Identity, AuthError>> {
        let entry = self.entries.get(token)?;
        if now_unix() < entry.until && entry.generation == generation {
            Some(entry.verdict.clone())
        } else {
            self.entries.remove(token);
            None
        }
    }

    /// Caches `verdict` until `min(expires, now + ttl)`.
    pub(crate) fn insert(
        &self,
        token: &str,
        verdict: Result<Identity, AuthError>,
        expires: Option<u64>,
        ttl: Option<Duration>,
        generation: u64,
    ) {
        let ttl = ttl.unwrap_or(self.ttl).min(self.ttl);
        let mut until = now_unix().saturating_add(ttl.as_secs().max(1));
        if let Some(exp) = expires {
            until = until.min(exp);
        }
        if until > now_unix() {
            self.entries.insert(
                token.into(),
                Arc::new(Entry {
                    verdict,
                    until,
                    generation,
                }),
            );
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_with_the_token_and_the_size_is_bounded() {
        let cache = VerdictCache::new(100, Duration::from_secs(60));
        cache.insert(
            "token",
            Ok(Identity::subject("a")),
            Some(now_unix() + 30),
            None,
            0,
        );
        assert!(cache.get("token", 0).is_some());
        assert!(cache.get("token2", 0).is_none());
        // Verdicts reached with older keys do not count.
        assert!(cache.get("token", 1).is_none());
        // Already expired: not cached at all.
        cache.insert(
            "old",
            Ok(Identity::subject("b")),
            Some(now_unix() - 1),
            None,
            0,
        );
        assert!(cache.get("old", 0).is_none());
        for i in 0..1_000 {
            cache.insert(&i.to_string(), Err(AuthError::Inactive), None, None, 0);
        }
        assert!(cache.len() <= 100, "{}", cache.len());
    }
}
