//! TLS session resumption: the server's session cache and its session
//! tickets, with keys made here and rotated, or read from files that every
//! instance behind a load balancer shares.
//!
//! rustls resumes sessions through two hooks: a `StoresServerSessions`
//! (its own bounded memory cache is used) and a `ProducesTickets`. Its
//! ticketer takes no key from outside, so several gateways could not
//! resume each other's sessions; [`KeyedTicketer`] is written here for
//! that, with aws-lc-rs's AES-256-GCM (random nonces) and HKDF-SHA256
//! doing the cryptography. Key files are 80 random bytes, the size nginx's
//! `ssl_session_ticket_key` and Envoy's `session_ticket_keys` take, so the
//! same `openssl rand 80` makes them; the ticket format is tollgate's own.

use std::{
    fmt,
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use arc_swap::ArcSwap;
use aws_lc_rs::{
    aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey},
    digest, hkdf,
    rand::{SecureRandom, SystemRandom},
};
use rustls::{
    ServerConfig, TicketRotator,
    crypto::GetRandomFailed,
    server::{
        NoServerSessionStorage, ProducesTickets, ServerSessionMemoryCache, StoresServerSessions,
    },
};
use tollgate_core::ConfigError;

use super::{read_file, tls_error};

/// The sessions the cache keeps by default: OpenSSL's and BoringSSL's
/// default server cache size.
pub const DEFAULT_SESSION_CACHE: usize = 20_480;

/// The most sessions the cache may keep: rustls allocates room for all of
/// them when it makes the cache (and again on each client-auth reload), so
/// a value past memory would abort the process.
const MAX_SESSION_CACHE: usize = 1_000_000;

/// How long a session may be resumed by default: two hours, OpenSSL's
/// default session timeout.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(2 * 3600);

/// The longest session timeout: seven days, the longest ticket lifetime
/// TLS 1.3 allows (RFC 8446, section 4.6.1).
const MAX_SESSION_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// The size of a ticket key file: a 16-byte key name and 64 bytes of key
/// material.
const KEY_FILE_LEN: usize = 80;
const NAME_LEN: usize = 16;
const TAG_LEN: usize = 16;
/// The issue time (Unix seconds, big-endian) put in front of the session
/// state by [`Timed`].
const ISSUED_LEN: usize = 8;
/// How far in the future a ticket's issue time may be (clocks of the
/// instances sharing a key differ a little).
const CLOCK_SKEW_SECS: u64 = 60;
const KEY_INFO: &[u8] = b"tollgate session ticket key";
/// What [`client_auth_binding`] hashes first.
const BINDING_CONTEXT: &[u8] = b"tollgate session ticket client auth binding\0";

/// How sessions are resumed; see [`TlsConfigBuilder::session_cache`],
/// [`session_tickets`], [`session_ticket_key_file`] and
/// [`session_timeout`].
///
/// [`TlsConfigBuilder::session_cache`]: crate::TlsConfigBuilder::session_cache
/// [`session_tickets`]: crate::TlsConfigBuilder::session_tickets
/// [`session_ticket_key_file`]: crate::TlsConfigBuilder::session_ticket_key_file
/// [`session_timeout`]: crate::TlsConfigBuilder::session_timeout
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SessionSettings {
    pub(crate) cache: usize,
    pub(crate) tickets: bool,
    pub(crate) key_files: Vec<PathBuf>,
    pub(crate) timeout: Duration,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            cache: DEFAULT_SESSION_CACHE,
            tickets: true,
            key_files: Vec::new(),
            timeout: DEFAULT_SESSION_TIMEOUT,
        }
    }
}

impl SessionSettings {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        if self.timeout < Duration::from_secs(1) || self.timeout > MAX_SESSION_TIMEOUT {
            return Err(ConfigError::new(
                tollgate_core::ConfigErrorKind::InvalidValue,
                format!(
                    "tls: session timeout {:?} is out of range (1s to 7 days)",
                    self.timeout
                ),
            ));
        }
        if self.cache > MAX_SESSION_CACHE {
            return Err(ConfigError::new(
                tollgate_core::ConfigErrorKind::InvalidValue,
                format!(
                    "tls: a session cache of {} sessions is too large (at most {MAX_SESSION_CACHE})",
                    self.cache
                ),
            ));
        }
        if !self.tickets && !self.key_files.is_empty() {
            return Err(ConfigError::new(
                tollgate_core::ConfigErrorKind::InvalidValue,
                "tls: session ticket key files are given but session tickets are off",
            ));
        }
        Ok(())
    }

    /// The ticketer for key files, when there are some, with its keys
    /// read; `binding` as for [`KeyedTicketer::load`].
    pub(crate) fn keyed_ticketer(
        &self,
        binding: Vec<u8>,
    ) -> Result<Option<Arc<KeyedTicketer>>, ConfigError> {
        if self.key_files.is_empty() {
            return Ok(None);
        }
        let keys = KeyedTicketer::load(&self.key_files, binding)?;
        Ok(Some(Arc::new(KeyedTicketer {
            keys: ArcSwap::from_pointee(keys),
        })))
    }

    /// Puts a new session cache and ticketer into `server`: `keyed` when
    /// there are key files, else one with random keys replaced every half
    /// timeout (rustls's `TicketRotator`); either way, tickets and cached
    /// sessions older than the timeout are refused ([`Timed`],
    /// [`TimedCache`]).
    pub(crate) fn apply(
        &self,
        server: &mut ServerConfig,
        keyed: Option<&Arc<KeyedTicketer>>,
    ) -> Result<(), ConfigError> {
        server.session_storage = if self.cache == 0 {
            Arc::new(NoServerSessionStorage {})
        } else {
            Arc::new(TimedCache {
                inner: ServerSessionMemoryCache::new(self.cache),
                timeout: self.timeout.as_secs(),
            })
        };
        if self.tickets {
            let inner: Arc<dyn ProducesTickets> = match keyed {
                Some(keyed) => Arc::clone(keyed) as _,
                None => Arc::new(
                    TicketRotator::new(timeout_secs(self.timeout).div_ceil(2), random_ticketer)
                        .map_err(|e| tls_error(format!("tls: session tickets: {e}")))?,
                ),
            };
            server.ticketer = Arc::new(Timed {
                inner,
                timeout: self.timeout.as_secs(),
            });
        } else if self.cache == 0 {
            // Without a ticketer, TLS 1.3 tickets name cache entries.
            server.send_tls13_tickets = 0;
        }
        Ok(())
    }
}

fn timeout_secs(timeout: Duration) -> u32 {
    u32::try_from(timeout.as_secs()).unwrap_or(u32::MAX)
}

/// What ties a ticket to the client-certificate check it was made under:
/// a SHA-256 of the rule (whether a certificate is `required`, whether
/// CRLs are checked for the leaf alone) and of the contents of the CA
/// bundle (`ca`) and CRL files (`crls`), so a ticket is not resumed where
/// its session would skip a check that a full handshake makes: after a CA
/// or CRL change, or on an instance sharing the key files whose rule is
/// stricter (a session made without a certificate where one is optional,
/// resumed where one is required).
pub(crate) fn client_auth_binding(
    required: bool,
    crl_only_leaf: bool,
    ca: &[u8],
    crls: &[Vec<u8>],
) -> Vec<u8> {
    let mut hash = digest::Context::new(&digest::SHA256);
    hash.update(BINDING_CONTEXT);
    hash.update(&[u8::from(required), u8::from(crl_only_leaf)]);
    for contents in std::iter::once(ca).chain(crls.iter().map(Vec::as_slice)) {
        hash.update(&(contents.len() as u64).to_be_bytes());
        hash.update(contents);
    }
    hash.finish().as_ref().to_vec()
}

/// Tickets that say when they were made: the issue time (Unix seconds)
/// goes in front of the session state, sealed with it by `inner`, and a
/// ticket older than `timeout` (or from more than a minute ahead) is not
/// opened. Key rotation alone would not bound the age: rustls's rotator
/// replaces keys only when it is next used.
#[derive(Debug)]
struct Timed {
    inner: Arc<dyn ProducesTickets>,
    timeout: u64,
}

/// The session cache, whose sessions carry their issue time as [`Timed`]
/// tickets do: one older than the timeout is not resumed. rustls's cache
/// keeps a session until newer ones push it out, however old it is.
#[derive(Debug)]
struct TimedCache {
    inner: Arc<ServerSessionMemoryCache>,
    timeout: u64,
}

/// Session tickets sealed with AES-256-GCM under named keys: the first key
/// seals, every key opens. A ticket is `name (16) | nonce (12) | sealed
/// plaintext | tag (16)`, with the key name and the client-auth binding as
/// additional data.
pub(crate) struct KeyedTicketer {
    keys: ArcSwap<TicketKeys>,
}

/// The keys of a [`KeyedTicketer`], read and not yet in use.
pub(crate) struct TicketKeys {
    keys: Vec<TicketKey>,
    binding: Vec<u8>,
}

struct TicketKey {
    name: [u8; NAME_LEN],
    key: RandomizedNonceKey,
}

impl KeyedTicketer {
    /// Reads the key files, each exactly 80 bytes: the key name, then the
    /// material its AES-256-GCM key is derived from (HKDF-SHA256).
    pub(crate) fn load(files: &[PathBuf], binding: Vec<u8>) -> Result<TicketKeys, ConfigError> {
        let mut keys: Vec<TicketKey> = Vec::with_capacity(files.len());
        for path in files {
            let what = "session ticket key file";
            let bytes = read_file(path, what)?;
            let Ok(bytes) = <[u8; KEY_FILE_LEN]>::try_from(bytes.as_slice()) else {
                return Err(tls_error(format!(
                    "{what} {}: {} bytes; it must hold exactly {KEY_FILE_LEN} random bytes \
                     (`openssl rand {KEY_FILE_LEN}`)",
                    path.display(),
                    bytes.len()
                )));
            };
            let (name, material) = bytes.split_at(NAME_LEN);
            let key = derive_key(name, material)
                .ok_or_else(|| tls_error(format!("{what} {}: no key", path.display())))?;
            if keys.iter().any(|k| k.name == key.name) {
                return Err(tls_error(format!(
                    "{what} {}: its key name (the first 16 bytes) is another file's",
                    path.display()
                )));
            }
            keys.push(key);
        }
        Ok(TicketKeys { keys, binding })
    }

    /// Puts keys read by [`load`](Self::load) in use: tickets are sealed
    /// and opened with them from now on.
    pub(crate) fn install(&self, keys: TicketKeys) {
        self.keys.store(Arc::new(keys));
    }
}

fn derive_key(name: &[u8], material: &[u8]) -> Option<TicketKey> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, name).extract(material);
    let mut key = [0; 32];
    prk.expand(&[KEY_INFO], hkdf::HKDF_SHA256)
        .ok()?
        .fill(&mut key)
        .ok()?;
    Some(TicketKey {
        name: name.try_into().ok()?,
        key: RandomizedNonceKey::new(&AES_256_GCM, &key).ok()?,
    })
}

/// A ticketer with one random key, for rustls's `TicketRotator`.
fn random_ticketer() -> Result<Box<dyn ProducesTickets>, GetRandomFailed> {
    let mut bytes = [0; KEY_FILE_LEN];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| GetRandomFailed)?;
    let (name, material) = bytes.split_at(NAME_LEN);
    let key = derive_key(name, material).ok_or(GetRandomFailed)?;
    Ok(Box::new(KeyedTicketer {
        keys: ArcSwap::from_pointee(TicketKeys {
            keys: vec![key],
            binding: Vec::new(),
        }),
    }))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn aad(name: &[u8], binding: &[u8]) -> Vec<u8> {
    [name, binding].concat()
}

/// `state` behind the time it is issued at (Unix seconds, big-endian).
fn stamp(state: &[u8]) -> Vec<u8> {
    let mut stamped = Vec::with_capacity(ISSUED_LEN + state.len());
    stamped.extend_from_slice(&now_secs().to_be_bytes());
    stamped.extend_from_slice(state);
    stamped
}

/// The state behind the issue time of `stamped`, unless it was issued
/// more than `timeout` seconds ago or more than [`CLOCK_SKEW_SECS`] ahead.
fn unstamp(stamped: &[u8], timeout: u64) -> Option<Vec<u8>> {
    let (issued, state) = stamped.split_at_checked(ISSUED_LEN)?;
    let issued = u64::from_be_bytes(issued.try_into().ok()?);
    let now = now_secs();
    if issued > now.saturating_add(CLOCK_SKEW_SECS) || now.saturating_sub(issued) > timeout {
        return None;
    }
    Some(state.to_vec())
}

impl ProducesTickets for Timed {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        u32::try_from(self.timeout).unwrap_or(u32::MAX)
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.inner.encrypt(&stamp(plain))
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        unstamp(&self.inner.decrypt(cipher)?, self.timeout)
    }
}

impl StoresServerSessions for TimedCache {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.inner.put(key, stamp(&value))
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        unstamp(&self.inner.get(key)?, self.timeout)
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        unstamp(&self.inner.take(key)?, self.timeout)
    }

    fn can_cache(&self) -> bool {
        self.inner.can_cache()
    }
}

impl ProducesTickets for KeyedTicketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        // `Timed`, around it, answers for the lifetime.
        0
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let keys = self.keys.load();
        let key = keys.keys.first()?;
        let mut sealed = Vec::with_capacity(plain.len() + TAG_LEN);
        sealed.extend_from_slice(plain);
        let nonce = key
            .key
            .seal_in_place_append_tag(Aad::from(aad(&key.name, &keys.binding)), &mut sealed)
            .ok()?;
        let mut ticket = Vec::with_capacity(NAME_LEN + NONCE_LEN + sealed.len());
        ticket.extend_from_slice(&key.name);
        ticket.extend_from_slice(nonce.as_ref());
        ticket.extend_from_slice(&sealed);
        Some(ticket)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        // Anything a client sends ends here: every length is checked.
        if cipher.len() < NAME_LEN + NONCE_LEN + TAG_LEN {
            return None;
        }
        let (name, rest) = cipher.split_at(NAME_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let keys = self.keys.load();
        let key = keys.keys.iter().find(|k| k.name == name)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = sealed.to_vec();
        let plain = key
            .key
            .open_in_place(nonce, Aad::from(aad(name, &keys.binding)), &mut buf)
            .ok()?;
        Some(plain.to_vec())
    }
}

impl fmt::Debug for KeyedTicketer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Key names only: never the keys.
        f.debug_struct("KeyedTicketer")
            .field("keys", &self.keys.load().keys.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticketer(keys: &[[u8; KEY_FILE_LEN]], binding: &[u8]) -> Arc<KeyedTicketer> {
        let keys = keys
            .iter()
            .map(|bytes| {
                let (name, material) = bytes.split_at(NAME_LEN);
                derive_key(name, material).unwrap()
            })
            .collect();
        Arc::new(KeyedTicketer {
            keys: ArcSwap::from_pointee(TicketKeys {
                keys,
                binding: binding.to_vec(),
            }),
        })
    }

    fn key(fill: u8) -> [u8; KEY_FILE_LEN] {
        let mut key = [fill; KEY_FILE_LEN];
        key[0] = fill.wrapping_add(1);
        key
    }

    #[test]
    fn a_ticket_opens_with_its_key_and_nothing_else() {
        let a = ticketer(&[key(1)], b"");
        let ticket = a.encrypt(b"session state").unwrap();
        assert_eq!(a.decrypt(&ticket).unwrap(), b"session state");
        // Two tickets of the same state differ (random nonces).
        assert_ne!(a.encrypt(b"session state").unwrap(), ticket);

        // The same key file on another instance opens it; rotation keeps
        // the old key second.
        let rotated = ticketer(&[key(2), key(1)], b"");
        assert_eq!(rotated.decrypt(&ticket).unwrap(), b"session state");
        let fresh = rotated.encrypt(b"later").unwrap();
        assert_eq!(
            &fresh[..NAME_LEN],
            &key(2)[..NAME_LEN],
            "the first key seals"
        );
        assert_eq!(
            a.decrypt(&fresh),
            None,
            "a ticket of a key it does not have"
        );

        // Another key, another binding: refused.
        assert_eq!(ticketer(&[key(3)], b"").decrypt(&ticket), None);
        assert_eq!(ticketer(&[key(1)], b"ca").decrypt(&ticket), None);
    }

    #[test]
    fn the_binding_covers_the_rule_and_each_file() {
        let ca = b"ca".to_vec();
        let crls = vec![b"crl".to_vec()];
        let base = client_auth_binding(true, false, &ca, &crls);
        assert_eq!(base.len(), 32);
        assert_eq!(base, client_auth_binding(true, false, &ca, &crls));
        for other in [
            client_auth_binding(false, false, &ca, &crls),
            client_auth_binding(true, true, &ca, &crls),
            client_auth_binding(true, false, b"cacrl", &[]),
            client_auth_binding(true, false, b"c", &[b"acrl".to_vec()]),
            client_auth_binding(true, false, &ca, &[b"cr".to_vec(), b"l".to_vec()]),
            client_auth_binding(true, false, &ca, &[]),
        ] {
            assert_ne!(other, base);
        }
    }

    #[test]
    fn hostile_tickets_are_refused() {
        let a = Timed {
            inner: ticketer(&[key(1)], b""),
            timeout: 3600,
        };
        let ticket = a.encrypt(b"state").unwrap();
        assert_eq!(a.decrypt(&ticket).unwrap(), b"state");
        for len in 0..ticket.len() {
            assert_eq!(a.decrypt(&ticket[..len]), None, "truncated to {len}");
        }
        for i in 0..ticket.len() {
            let mut bad = ticket.clone();
            bad[i] ^= 0x80;
            assert_eq!(a.decrypt(&bad), None, "byte {i} flipped");
        }
        let mut long = ticket;
        long.push(0);
        assert_eq!(a.decrypt(&long), None);
        assert_eq!(a.decrypt(&[0; 200]), None);
        // A ticket sealed by the right key around less than an issue time.
        let short = a.inner.encrypt(&[1, 2, 3]).unwrap();
        assert_eq!(a.decrypt(&short), None);
    }

    #[test]
    fn old_and_future_tickets_are_refused() {
        let inner = ticketer(&[key(1)], b"");
        let timed = Timed {
            inner: Arc::clone(&inner) as _,
            timeout: 3600,
        };
        let issued_at = |issued: u64| {
            let mut stamped = issued.to_be_bytes().to_vec();
            stamped.extend_from_slice(b"state");
            inner.encrypt(&stamped).unwrap()
        };
        let now = now_secs();
        assert_eq!(timed.decrypt(&issued_at(now - 3000)).unwrap(), b"state");
        assert_eq!(timed.decrypt(&issued_at(now + 30)).unwrap(), b"state");
        assert_eq!(
            timed.decrypt(&issued_at(now - 3700)),
            None,
            "past the timeout"
        );
        assert_eq!(
            timed.decrypt(&issued_at(now + 3600)),
            None,
            "from the future"
        );
        assert_eq!(timed.lifetime(), 3600);
    }

    #[test]
    fn settings_are_checked() {
        let ok = SessionSettings::default();
        assert!(ok.check().is_ok());
        let short = SessionSettings {
            timeout: Duration::from_millis(500),
            ..SessionSettings::default()
        };
        assert!(
            short
                .check()
                .unwrap_err()
                .to_string()
                .contains("out of range")
        );
        let long = SessionSettings {
            timeout: Duration::from_secs(8 * 24 * 3600),
            ..SessionSettings::default()
        };
        assert!(long.check().is_err());
        for (cache, ok) in [(MAX_SESSION_CACHE, true), (MAX_SESSION_CACHE + 1, false)] {
            let settings = SessionSettings {
                cache,
                ..SessionSettings::default()
            };
            assert_eq!(settings.check().is_ok(), ok, "{cache}");
        }
        let contradiction = SessionSettings {
            tickets: false,
            key_files: vec!["k".into()],
            ..SessionSettings::default()
        };
        assert!(
            contradiction
                .check()
                .unwrap_err()
                .to_string()
                .contains("tickets are off")
        );
    }
}
