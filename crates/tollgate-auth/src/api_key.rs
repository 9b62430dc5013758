//! API keys: [`ApiKeyAuth`] over an [`ApiKeyStore`], with
//! [`MemoryApiKeyStore`] built in.

use std::{
    collections::HashMap,
    fmt,
    hash::BuildHasherDefault,
    sync::{Arc, RwLock},
};

use http::{HeaderName, request::Parts};
use subtle::ConstantTimeEq;
use tollgate_core::{AuthMethod, Identity};

use crate::{
    AuthError, Authenticator, CredentialSource, Scheme, Verdict, VerdictFuture,
    cache::{Digest32, digest},
    credential::Found,
};

/// The default header API keys are read from.
pub const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// The largest API key accepted, checked before hashing.
pub const MAX_API_KEY_LEN: usize = 256;

/// Who an API key belongs to.
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub struct Consumer {
    identity: Identity,
}

impl Consumer {
    /// A consumer named `name`.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self {
            identity: Identity::consumer(name).with_method(AuthMethod::ApiKey),
        }
    }

    /// Sets the rate-limit plan, e.g. `free` or `standard`.
    pub fn plan(mut self, plan: impl Into<Arc<str>>) -> Self {
        self.identity = self.identity.with_plan(plan);
        self
    }

    /// Sets the scopes.
    pub fn scopes<I: IntoIterator<Item = S>, S: Into<Arc<str>>>(mut self, scopes: I) -> Self {
        self.identity = self.identity.with_scopes(scopes);
        self
    }

    /// Sets the roles.
    pub fn roles<I: IntoIterator<Item = S>, S: Into<Arc<str>>>(mut self, roles: I) -> Self {
        self.identity = self.identity.with_roles(roles);
        self
    }

    /// The consumer's name.
    #[must_use]
    pub fn name(&self) -> &str {
        self.identity.consumer.as_deref().unwrap_or_default()
    }

    /// The identity requests with this consumer's keys get.
    #[must_use]
    pub fn identity(&self) -> &Identity {
        &self.identity
    }
}

/// The outcome of a store lookup.
#[non_exhaustive]
pub enum Lookup {
    /// The key belongs to this consumer.
    Found(Consumer),
    /// The key is unknown or revoked.
    NotFound,
    /// The store needs I/O (a database, a remote service).
    Pending(VerdictFuture),
}

impl fmt::Debug for Lookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Found(c) => f.debug_tuple("Found").field(&c.name()).finish(),
            Self::NotFound => f.write_str("NotFound"),
            Self::Pending(_) => f.write_str("Pending"),
        }
    }
}

/// Where API keys live. Implement it for a database or a remote service;
/// return [`Lookup::Pending`] only when I/O is needed.
pub trait ApiKeyStore: fmt::Debug + Send + Sync + 'static {
    /// Finds the consumer of `key`.
    fn lookup(&self, key: &str) -> Lookup;
}

/// API keys in memory, held as SHA-256 hashes and compared in constant
/// time. Keys can be added and revoked while the gateway runs; clones
/// share the same keys.
///
/// ```
/// use tollgate_auth::{Consumer, MemoryApiKeyStore};
///
/// let store = MemoryApiKeyStore::new();
/// store.insert("k-123", Consumer::new("mobile-app").plan("free"));
/// assert!(store.revoke("k-123"));
/// assert!(!store.revoke("k-123"));
/// ```
#[derive(Clone, Debug, Default)]
pub struct MemoryApiKeyStore {
    // Indexed by the first 8 bytes of the hash; the whole hash is then
    // compared in constant time. Lookups never compare the key itself.
    keys: Arc<RwLock<HashMap<u64, Vec<StoredKey>, BuildHasherDefault<PrefixHasher>>>>,
}

/// The bucket index is already 8 bytes of a SHA-256: uniformly spread and
/// not chosen by the client in any useful way, so hashing it again (SipHash
/// by default) would only cost time. No crate offers exactly this; it is
/// the identity on one `u64`.
#[derive(Default)]
struct PrefixHasher(u64);

impl std::hash::Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `HashMap<u64, _>`; fold anything
        // else in so the hasher stays correct if it ever is.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[derive(Clone)]
struct StoredKey {
    hash: Digest32,
    consumer: Consumer,
}

impl fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredKey")
            .field("consumer", &self.consumer.name())
            .finish_non_exhaustive()
    }
}

fn bucket(hash: &Digest32) -> u64 {
    let mut prefix = [0; 8];
    prefix.copy_from_slice(&hash[..8]);
    u64::from_le_bytes(prefix)
}

/// The audit event of a change to the keys (an admin action): the
/// consumer is the subject; the key never appears.
fn audit_key_change(consumer: &str, outcome: &str, reason: &str) {
    tollgate_core::audit::event(None, Some(consumer), None, outcome, reason);
}

impl MemoryApiKeyStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `key` for `consumer`, replacing an earlier owner of that key.
    ///
    /// An admin action: it emits an audit event (`key-added`, the
    /// consumer as the subject; never the key).
    pub fn insert(&self, key: &str, consumer: Consumer) {
        audit_key_change(consumer.name(), "key-added", "api key added");
        self.insert_hash(digest(key), consumer);
    }

    /// [`insert`](Self::insert) for keys loaded from configuration: the
    /// config build (and its reload) is audited once, not key by key.
    pub(crate) fn load(&self, key: &str, consumer: Consumer) {
        self.insert_hash(digest(key), consumer);
    }

    /// Adds a key given as the hex SHA-256 of its text, so the key itself
    /// need not appear in configuration. Audited as [`insert`](Self::insert) is.
    ///
    /// # Errors
    ///
    /// When `sha256_hex` is not 64 hex digits.
    pub fn insert_sha256_hex(
        &self,
        sha256_hex: &str,
        consumer: Consumer,
    ) -> Result<(), tollgate_core::ConfigError> {
        let name = consumer.name().to_owned();
        self.load_sha256_hex(sha256_hex, consumer)?;
        audit_key_change(&name, "key-added", "api key added");
        Ok(())
    }

    /// [`insert_sha256_hex`](Self::insert_sha256_hex) for configuration,
    /// not audited key by key.
    pub(crate) fn load_sha256_hex(
        &self,
        sha256_hex: &str,
        consumer: Consumer,
    ) -> Result<(), tollgate_core::ConfigError> {
        let hash = parse_hex(sha256_hex).ok_or_else(|| {
            tollgate_core::ConfigError::new(
                tollgate_core::ConfigErrorKind::InvalidValue,
                "an API key hash is 64 hex digits of SHA-256",
            )
        })?;
        self.insert_hash(hash, consumer);
        Ok(())
    }

    fn insert_hash(&self, hash: Digest32, consumer: Consumer) {
        let mut keys = self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entries = keys.entry(bucket(&hash)).or_default();
        entries.retain(|e| e.hash != hash);
        entries.push(StoredKey { hash, consumer });
    }

    /// Revokes `key`; whether it was known.
    pub fn revoke(&self, key: &str) -> bool {
        let hash = digest(key);
        let mut keys = self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(entries) = keys.get_mut(&bucket(&hash)) else {
            return false;
        };
        let Some(at) = entries.iter().position(|e| e.hash == hash) else {
            return false;
        };
        let removed = entries.swap_remove(at);
        if entries.is_empty() {
            keys.remove(&bucket(&hash));
        }
        drop(keys);
        audit_key_change(removed.consumer.name(), "key-revoked", "api key revoked");
        true
    }

    /// Revokes every key of the consumer named `name`; how many there were.
    pub fn revoke_consumer(&self, name: &str) -> usize {
        let mut keys = self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut removed = 0;
        keys.retain(|_, entries| {
            let before = entries.len();
            entries.retain(|e| e.consumer.name() != name);
            removed += before - entries.len();
            !entries.is_empty()
        });
        drop(keys);
        if removed > 0 {
            audit_key_change(name, "key-revoked", "consumer's api keys revoked");
        }
        removed
    }

    /// How many keys are stored.
    #[must_use]
    pub fn len(&self) -> usize {
        let keys = self
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        keys.values().map(Vec::len).sum()
    }

    /// Whether no key is stored.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn find(&self, key: &str) -> Option<Consumer> {
        let hash = digest(key);
        let keys = self
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entries = keys.get(&bucket(&hash))?;
        let mut found = None;
        // Every entry of the bucket is compared, in constant time each.
        for entry in entries {
            if bool::from(entry.hash.ct_eq(&hash)) {
                found = Some(entry.consumer.clone());
            }
        }
        found
    }
}

impl ApiKeyStore for MemoryApiKeyStore {
    fn lookup(&self, key: &str) -> Lookup {
        self.find(key).map_or(Lookup::NotFound, Lookup::Found)
    }
}

fn parse_hex(hex: &str) -> Option<Digest32> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = char::from(pair[0]).to_digit(16)?;
        let lo = char::from(pair[1]).to_digit(16)?;
        out[i] = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

/// Authenticates requests by API key, from `X-Api-Key` by default.
///
/// ```
/// use tollgate_auth::{ApiKeyAuth, Consumer, MemoryApiKeyStore};
///
/// let store = MemoryApiKeyStore::new();
/// store.insert("k-123", Consumer::new("partner").plan("standard").scopes(["orders:read"]));
/// let auth = ApiKeyAuth::new(store.clone());
/// // Revoke later, while serving: the store is shared.
/// store.revoke("k-123");
/// ```
#[derive(Clone, Debug)]
pub struct ApiKeyAuth {
    store: Arc<dyn ApiKeyStore>,
    sources: Vec<CredentialSource>,
}

impl ApiKeyAuth {
    /// Keys from `X-Api-Key`, looked up in `store`.
    pub fn new(store: impl ApiKeyStore) -> Self {
        Self {
            store: Arc::new(store),
            sources: vec![CredentialSource::Header(X_API_KEY)],
        }
    }

    /// Reads the key from another header (instead of `X-Api-Key`).
    #[must_use]
    pub fn header(mut self, name: HeaderName) -> Self {
        self.sources
            .retain(|s| !matches!(s, CredentialSource::Header(_)));
        self.sources.insert(0, CredentialSource::Header(name));
        self
    }

    /// Also reads the key from a query parameter. Query strings are logged
    /// by many proxies on the way: prefer a header.
    #[must_use]
    pub fn query(mut self, name: impl Into<String>) -> Self {
        self.sources.push(CredentialSource::Query(name.into()));
        self
    }
}

impl Authenticator for ApiKeyAuth {
    fn authenticate(&self, parts: &Parts) -> Verdict {
        for source in &self.sources {
            match source.find(&parts.headers, &parts.uri, MAX_API_KEY_LEN) {
                Found::Absent => {}
                Found::Invalid(AuthError::TooLarge) => {
                    return Verdict::Reject(AuthError::InvalidApiKey);
                }
                Found::Invalid(error) => return Verdict::Reject(error),
                Found::Present(key) => {
                    return match self.store.lookup(key) {
                        Lookup::Found(consumer) => Verdict::Accept(consumer.identity),
                        Lookup::NotFound => Verdict::Reject(AuthError::InvalidApiKey),
                        Lookup::Pending(future) => Verdict::Pending(future),
                    };
                }
            }
        }
        Verdict::Absent
    }

    fn credential_sources(&self) -> Vec<CredentialSource> {
        self.sources.clone()
    }

    fn scheme(&self) -> Scheme {
        Scheme::ApiKey
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_replaced_and_revoked() {
        let store = MemoryApiKeyStore::new();
        store.insert("a", Consumer::new("one").plan("free"));
        store.insert("b", Consumer::new("two"));
        assert_eq!(
            store.find("a").map(|c| c.name().to_owned()).as_deref(),
            Some("one")
        );
        assert!(store.find("c").is_none());
        store.insert("a", Consumer::new("three"));
        assert_eq!(store.len(), 2);
        assert_eq!(
            store.find("a").map(|c| c.name().to_owned()).as_deref(),
            Some("three")
        );
        assert_eq!(store.revoke_consumer("three"), 1);
        assert!(store.find("a").is_none());
        assert!(store.revoke("b"));
        assert!(store.is_empty());
    }

    #[test]
    fn keys_can_be_configured_by_hash() {
        let store = MemoryApiKeyStore::new();
        // SHA-256 of "abc".
        store
            .insert_sha256_hex(
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
                Consumer::new("hashed"),
            )
            .unwrap();
        assert!(store.find("abc").is_some());
        assert!(store.insert_sha256_hex("zz", Consumer::new("x")).is_err());
    }
}
