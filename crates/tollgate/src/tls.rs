//! HTTPS for [`serve`](crate::serve): [`TlsConfig`] (certificates by SNI,
//! ALPN, TLS 1.2 and 1.3, reload without restart, client certificates),
//! the plain-HTTP redirect ([`redirect_to_https`]) and the HSTS header
//! ([`hsts_layer`]).
//!
//! rustls with the aws-lc-rs provider does the cryptography; it is the only
//! provider tollgate uses.

use std::{
    collections::HashMap,
    convert::Infallible,
    fmt,
    future::{Future, Ready, ready},
    net::Ipv6Addr,
    path::{Path, PathBuf},
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use arc_swap::{ArcSwap, ArcSwapOption};
use axum::body::Body;
use bytes::Bytes;
use http::{
    HeaderValue, Request, Response, StatusCode,
    header::{CONTENT_LENGTH, HOST, LOCATION, STRICT_TRANSPORT_SECURITY},
    uri::Authority,
};
use hyper_util::{rt::TokioExecutor, server::conn::auto};
use rustls::{
    RootCertStore, ServerConfig,
    crypto::CryptoProvider,
    pki_types::{
        CertificateDer, CertificateRevocationListDer, DnsName, PrivateKeyDer, pem::PemObject,
    },
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tollgate_core::{AuthMethod, BoxError, ConfigError, ConfigErrorKind, ConnectionInfo, Identity};
use tollgate_observe::{ConnectionError, Metrics};
use tower::Service;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::serve::{Serve, Timeouts, Tracked, serve, serve_connection};

mod session;

pub use session::{DEFAULT_SESSION_CACHE, DEFAULT_SESSION_TIMEOUT};
use session::{KeyedTicketer, SessionSettings, TicketKeys, client_auth_binding};

/// The TLS settings of a listener: certificates chosen by SNI, ALPN `h2`
/// and `http/1.1`, TLS 1.2 and 1.3 only, and optionally client
/// certificates. Pass it to [`Serve::tls`].
///
/// Certificates, keys and the client CA bundle are read from PEM files
/// when it is built and again on every [`reload`](Self::reload), which
/// swaps them in atomically: handshakes that follow use the new ones,
/// established connections keep going. Clones share the certificates, so reloading one reloads all.
///
/// ```no_run
/// # async fn run(router: axum::Router) -> Result<(), Box<dyn std::error::Error>> {
/// use tollgate::{ClientAuth, TlsConfig};
///
/// let tls = TlsConfig::builder()
///     .certificate("/etc/tollgate/default.pem", "/etc/tollgate/default.key")
///     .sni_certificate("api.example.com", "/etc/tollgate/api.pem", "/etc/tollgate/api.key")
///     .client_auth(ClientAuth::optional("/etc/tollgate/clients-ca.pem"))
///     .build()?;
/// // `kill -HUP <pid>` re-reads the certificate and CA files.
/// tls.reload_on_sighup()?;
///
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
/// tollgate::serve(listener, router, tollgate::shutdown_signal())
///     .tls(tls)
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TlsConfig {
    shared: Arc<Shared>,
}

/// Builds a [`TlsConfig`]; see [`TlsConfig::builder`].
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct TlsConfigBuilder {
    files: CertFilesSet,
    client_auth: Option<ClientAuth>,
    min_version: TlsVersion,
    sessions: SessionSettings,
    cipher_suites: Option<Vec<String>>,
    key_exchange_groups: Option<Vec<String>>,
}

/// The oldest TLS version a listener accepts; see
/// [`TlsConfigBuilder::min_version`]. Versions before 1.2 are never
/// accepted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[non_exhaustive]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3 (the default).
    #[default]
    #[cfg_attr(feature = "serde", serde(rename = "1.2"))]
    Tls12,
    /// TLS 1.3 only.
    #[cfg_attr(feature = "serde", serde(rename = "1.3"))]
    Tls13,
}

/// Client-certificate (mutual TLS) settings: the CA bundle that client
/// certificates are verified against, whether a certificate is required,
/// and the certificate revocation lists (CRLs) that revoked ones are
/// refused by.
///
/// The CA bundle and the CRLs are read when the [`TlsConfig`] is built and
/// again on every [`TlsConfig::reload`]: publish a new CRL by replacing its
/// file and reloading (SIGHUP).
///
/// With CRLs, every certificate of a client's chain below the trust anchor
/// is checked, and a certificate whose issuer has no CRL among them is
/// refused, as with nginx's `ssl_crl` and Envoy's `crl`;
/// [`crl_only_leaf`](Self::crl_only_leaf) checks the client's own
/// certificate alone (Envoy's `only_verify_leaf_cert_crl`). A CRL past its
/// `nextUpdate` is still used: keep the files fresh.
///
/// The verified certificate becomes the connection's [`Identity`], put into
/// every request of that connection:
///
/// - `subject`: the certificate's subject distinguished name, formatted by
///   `x509-parser` with the attributes in certificate order, e.g.
///   `C=FR, O=Example, CN=alice`;
/// - `method`: [`AuthMethod::ClientCertificate`];
/// - `claims`: `dn` (the same name), `cn` (the first common name, when there
///   is one) and `serial` (hex, colon-separated).
///
/// An auth layer that authenticates the request later replaces it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct ClientAuth {
    ca_file: PathBuf,
    required: bool,
    crl_files: Vec<PathBuf>,
    crl_only_leaf: bool,
}

/// The plain-HTTP service that redirects every request to HTTPS; see
/// [`redirect_to_https`].
#[derive(Clone, Debug)]
pub struct RedirectToHttps {
    /// The port written into the `Location`; `None` for 443.
    port: Option<u16>,
}

struct Shared {
    files: CertFilesSet,
    client_auth: Option<ClientAuth>,
    min_version: TlsVersion,
    sessions: SessionSettings,
    /// The ticketer of `sessions.key_files` without client auth, kept
    /// across reloads (which swap its keys). With client auth each
    /// `ServerConfig` has its own, bound to the CA bundle and CRLs that
    /// config checks certificates with (see [`server_config`]).
    keyed: Option<Arc<KeyedTicketer>>,
    provider: Arc<CryptoProvider>,
    resolver: Arc<CertResolver>,
    /// Replaced whole when the client CA bundle is reloaded; each
    /// connection keeps the one it was accepted with.
    server: ArcSwap<ServerConfig>,
    /// Where the certificates' expiry goes; see [`TlsConfig::report_to`].
    metrics: ArcSwapOption<Metrics>,
}

/// The PEM files of every certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct CertFilesSet {
    default: Option<CertFiles>,
    /// Lower-case server name (or `*.suffix`) and its files.
    by_name: Vec<(String, CertFiles)>,
}

/// One certificate chain and its private key.
#[derive(Clone, Debug, PartialEq, Eq)]
struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
}

/// The loaded certificates; replaced whole on reload.
#[derive(Debug)]
struct CertSet {
    default: Option<Arc<CertifiedKey>>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the suffix after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// Each certificate's name (`default`, or its SNI name as given) and
    /// the `notAfter` of its leaf, in seconds since the Unix epoch.
    expiry: Vec<(String, i64)>,
}

/// How soon before its expiry a loaded certificate is warned about.
const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// Picks the certificate for a handshake from the current [`CertSet`].
#[derive(Debug)]
struct CertResolver {
    current: ArcSwap<CertSet>,
}

// === impl TlsConfigBuilder ===

impl TlsConfigBuilder {
    /// The default certificate: for clients that send no server name (SNI)
    /// or one that no [`sni_certificate`](Self::sni_certificate) matches.
    ///
    /// `cert` is a PEM file with the chain, leaf first; `key` a PEM file
    /// with its private key (PKCS#8, PKCS#1 or SEC1). Without a default, a
    /// handshake without a known name fails.
    pub fn certificate(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.files.default = Some(CertFiles {
            cert: cert.into(),
            key: key.into(),
        });
        self
    }

    /// A certificate for the server name `name` (`api.example.com`, or
    /// `*.example.com` for any one label in front of `example.com`),
    /// chosen by the client's SNI. Exact names win over wildcards; names
    /// are matched case-insensitively.
    pub fn sni_certificate(
        mut self,
        name: impl Into<String>,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Self {
        self.files.by_name.push((
            name.into().to_ascii_lowercase(),
            CertFiles {
                cert: cert.into(),
                key: key.into(),
            },
        ));
        self
    }

    /// Verifies client certificates (mutual TLS); see [`ClientAuth`].
    pub fn client_auth(mut self, client_auth: ClientAuth) -> Self {
        self.client_auth = Some(client_auth);
        self
    }

    /// The oldest TLS version accepted (default [`TlsVersion::Tls12`]);
    /// [`TlsVersion::Tls13`] refuses TLS 1.2 handshakes, as nginx's
    /// `ssl_protocols TLSv1.3` and Envoy's `tls_minimum_protocol_version`
    /// do. A client that offers only older versions gets a
    /// `protocol_version` alert.
    pub fn min_version(mut self, version: TlsVersion) -> Self {
        self.min_version = version;
        self
    }

    /// The cipher suites offered, by IANA name, instead of rustls's
    /// defaults for aws-lc-rs (all AES-GCM and ChaCha20-Poly1305 suites,
    /// ECDHE key exchange only): for TLS 1.3 `TLS_AES_128_GCM_SHA256`,
    /// `TLS_AES_256_GCM_SHA384`, `TLS_CHACHA20_POLY1305_SHA256`; for TLS
    /// 1.2 `TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256`,
    /// `TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384`,
    /// `TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256` and the same three
    /// with `ECDHE_RSA`. Only these are known: nothing weaker can be asked
    /// for. nginx's `ssl_ciphers`, Envoy's `cipher_suites`. A TLS 1.2 suite
    /// must match the certificate's key (`ECDSA` or `RSA`), else TLS 1.2
    /// clients find no suite in common.
    pub fn cipher_suites<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.cipher_suites = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// The key exchange groups offered, by name, most preferred first,
    /// instead of rustls's defaults (`X25519MLKEM768`, the post-quantum
    /// hybrid, then `X25519`, `secp256r1` and `secp384r1`): any of those
    /// and `secp256r1MLKEM768`, `MLKEM768`, `MLKEM1024`, matched without
    /// regard to case. nginx's `ssl_ecdh_curve`, Envoy's `ecdh_curves`.
    pub fn key_exchange_groups<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.key_exchange_groups = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// How many sessions the server keeps for resumption by session id
    /// (TLS 1.2) or by a ticket naming a kept session (TLS 1.3 without
    /// [`session_tickets`](Self::session_tickets)); the oldest go first
    /// (rustls's cache: a session resumed is not moved up). Default
    /// [`DEFAULT_SESSION_CACHE`] (20,480, OpenSSL's default); 0 keeps
    /// none, 1,000,000 at most (rustls allocates room for every session
    /// up front; more is refused by [`build`](Self::build)). Kept across certificate reloads; a reload
    /// with [`client_auth`](Self::client_auth) starts an empty one, so a
    /// session whose client certificate was checked against the old CA
    /// bundle or CRLs is not resumed.
    pub fn session_cache(mut self, sessions: usize) -> Self {
        self.sessions.cache = sessions;
        self
    }

    /// Session tickets (RFC 5077 for TLS 1.2, TLS 1.3's own): the server
    /// hands the client its session sealed under a key, and a returning
    /// client resumes without the certificate exchange and signature. On
    /// by default, with random keys made here and replaced every half
    /// [`session_timeout`](Self::session_timeout), so a ticket is good for
    /// the timeout at most; give shared keys with
    /// [`session_ticket_key_file`](Self::session_ticket_key_file) so that
    /// every instance resumes the others' sessions. `false` turns them off
    /// (sessions then resume through the [cache](Self::session_cache)
    /// alone).
    pub fn session_tickets(mut self, enabled: bool) -> Self {
        self.sessions.tickets = enabled;
        self
    }

    /// A file of 80 random bytes (`openssl rand 80 > ticket.key`, as for
    /// nginx's `ssl_session_ticket_key` and Envoy's `session_ticket_keys`)
    /// that session tickets are sealed with: give every instance behind a
    /// load balancer the same files and each resumes the others'
    /// sessions. The first file seals new tickets; every file opens them.
    /// Rotate by putting a new key first and keeping the previous one
    /// second for a timeout, then dropping it; the files are read again by
    /// every [`TlsConfig::reload`] (SIGHUP).
    ///
    /// Whoever holds a key can decrypt the sessions sealed under it, and
    /// the traffic of those sessions: keep the files as secret as private
    /// keys, and rotate them (forward secrecy lasts only as long as a key).
    pub fn session_ticket_key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.sessions.key_files.push(path.into());
        self
    }

    /// How long after it is issued a ticket or a session of the
    /// [session cache](Self::session_cache) may be resumed: default
    /// [`DEFAULT_SESSION_TIMEOUT`] (2 hours, OpenSSL's); from 1 second to
    /// 7 days (TLS 1.3's longest ticket lifetime). Older tickets and cached
    /// sessions are refused, and it is the lifetime told to clients with
    /// tickets. A resumption issues new tickets, so a client that comes
    /// back within each timeout keeps its session going: this bounds the
    /// time between two handshakes, not the time since the full one. With
    /// [`client_auth`](Self::client_auth), a resumed session whose client
    /// certificate has expired since is refused.
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.sessions.timeout = timeout;
        self
    }

    /// Reads every file and builds the configuration.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] of kind `Tls` naming the file at fault when a file
    /// cannot be read, holds no certificate or key, or a key does not match
    /// its certificate; of kind `Missing` when there is no certificate;
    /// of kind `InvalidValue` for a server name that is not a DNS name or
    /// given twice.
    pub fn build(self) -> Result<TlsConfig, ConfigError> {
        let Self {
            files,
            client_auth,
            min_version,
            sessions,
            cipher_suites,
            key_exchange_groups,
        } = self;
        sessions.check()?;
        if files.default.is_none() && files.by_name.is_empty() {
            return Err(ConfigError::new(
                ConfigErrorKind::Missing,
                "tls: no certificate; add one with `certificate`",
            ));
        }
        for (i, (name, _)) in files.by_name.iter().enumerate() {
            let bare = name.strip_prefix("*.").unwrap_or(name);
            if DnsName::try_from(bare).is_err() || bare.contains('*') {
                return Err(ConfigError::new(
                    ConfigErrorKind::InvalidValue,
                    format!("tls: {name:?} is not a DNS name"),
                ));
            }
            if files.by_name[..i].iter().any(|(other, _)| other == name) {
                return Err(ConfigError::new(
                    ConfigErrorKind::InvalidValue,
                    format!("tls: two certificates for {name:?}"),
                ));
            }
        }
        let provider = Arc::new(provider(
            cipher_suites.as_deref(),
            key_exchange_groups.as_deref(),
        )?);
        if min_version == TlsVersion::Tls13
            && !provider
                .cipher_suites
                .iter()
                .any(|suite| suite.version() == &rustls::version::TLS13)
        {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidValue,
                "tls: no cipher suite for TLS 1.3, the only version accepted",
            ));
        }
        let resolver = Arc::new(CertResolver {
            current: ArcSwap::from_pointee(load_set(&files, &provider)?),
        });
        let keyed = match client_auth {
            Some(_) => None,
            None => sessions.keyed_ticketer(Vec::new())?,
        };
        let server = server_config(
            &provider,
            client_auth.as_ref(),
            min_version,
            &resolver,
            &sessions,
            keyed.as_ref(),
        )?;
        Ok(TlsConfig {
            shared: Arc::new(Shared {
                files,
                client_auth,
                min_version,
                sessions,
                keyed,
                provider,
                resolver,
                server: ArcSwap::from_pointee(server),
                metrics: ArcSwapOption::empty(),
            }),
        })
    }
}

/// aws-lc-rs's provider for rustls, with only the cipher suites and key
/// exchange groups named, in that order, when they are.
fn provider(
    cipher_suites: Option<&[String]>,
    key_exchange_groups: Option<&[String]>,
) -> Result<CryptoProvider, ConfigError> {
    use rustls::crypto::aws_lc_rs::{ALL_CIPHER_SUITES, ALL_KX_GROUPS, default_provider};

    let mut provider = default_provider();
    if let Some(names) = cipher_suites {
        // IANA names: rustls writes the TLS 1.3 ones `TLS13_…`.
        let name_of = |suite: &rustls::SupportedCipherSuite| {
            let name = suite.suite().as_str().unwrap_or_default();
            name.strip_prefix("TLS13_")
                .map_or_else(|| name.to_owned(), |rest| format!("TLS_{rest}"))
        };
        provider.cipher_suites = pick(
            names,
            "cipher suite",
            ALL_CIPHER_SUITES,
            |suite, name| name_of(suite) == name,
            |suite| name_of(suite),
        )?;
    }
    if let Some(names) = key_exchange_groups {
        let name_of = |group: &&dyn rustls::crypto::SupportedKxGroup| {
            group.name().as_str().unwrap_or_default().to_owned()
        };
        provider.kx_groups = pick(
            names,
            "key exchange group",
            ALL_KX_GROUPS,
            |group, name| name_of(group).eq_ignore_ascii_case(name),
            name_of,
        )?;
    }
    Ok(provider)
}

/// The items of `all` that `names` name, in the order of `names`; an
/// error for a name that none has, one given twice, or none at all.
fn pick<T: Copy>(
    names: &[String],
    what: &str,
    all: &[T],
    is: impl Fn(&T, &str) -> bool,
    name_of: impl Fn(&T) -> String,
) -> Result<Vec<T>, ConfigError> {
    let invalid = |message: String| ConfigError::new(ConfigErrorKind::InvalidValue, message);
    if names.is_empty() {
        return Err(invalid(format!("tls: no {what} is given")));
    }
    let mut picked: Vec<T> = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let Some(item) = all.iter().find(|item| is(item, name)) else {
            let known: Vec<String> = all.iter().map(&name_of).collect();
            return Err(invalid(format!(
                "tls: unknown {what} {name:?}; known: {}",
                known.join(", ")
            )));
        };
        if names[..i].iter().any(|earlier| is(item, earlier)) {
            return Err(invalid(format!("tls: {what} {name:?} is given twice")));
        }
        picked.push(*item);
    }
    Ok(picked)
}

/// The contents of a [`ClientAuth`]'s CA bundle and CRL files, read once
/// per configuration: its client certificate verifier and the binding of
/// its session tickets ([`client_auth_binding`]) are made from the same
/// bytes, so a file that changes while it is read cannot give tickets
/// checked with one version the binding of another.
struct ClientAuthFiles {
    ca: Vec<u8>,
    crls: Vec<Vec<u8>>,
}

impl ClientAuthFiles {
    fn read(auth: &ClientAuth) -> Result<Self, ConfigError> {
        Ok(Self {
            ca: read_file(&auth.ca_file, "client CA file")?,
            crls: auth
                .crl_files
                .iter()
                .map(|path| read_file(path, "CRL file"))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// The rustls configuration: TLS 1.3 and, unless `min_version` says
/// otherwise, 1.2; ALPN `h2` and `http/1.1`; certificates from `resolver`,
/// the client CA bundle and CRLs of `client_auth` read from their files,
/// and a new session cache and ticketer. The ticketer of the key files is
/// `keyed` without client auth; with it, one of this configuration's own,
/// whose tickets are bound to the files read here: a handshake that this
/// configuration checks, even one that ends after a reload has replaced
/// it, gets tickets that the next configuration does not resume unless it
/// checks with the same files.
fn server_config(
    provider: &Arc<CryptoProvider>,
    client_auth: Option<&ClientAuth>,
    min_version: TlsVersion,
    resolver: &Arc<CertResolver>,
    sessions: &SessionSettings,
    keyed: Option<&Arc<KeyedTicketer>>,
) -> Result<ServerConfig, ConfigError> {
    let versions: &[&'static rustls::SupportedProtocolVersion] = match min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(Arc::clone(provider))
        .with_protocol_versions(versions)
        .map_err(|e| ConfigError::new(ConfigErrorKind::Tls, format!("tls: {e}")))?;
    let mut own = None;
    let builder = match client_auth {
        None => builder.with_no_client_auth(),
        Some(auth) => {
            let files = ClientAuthFiles::read(auth)?;
            own = sessions.keyed_ticketer(client_auth_binding(
                auth.required,
                auth.crl_only_leaf,
                &files.ca,
                &files.crls,
            ))?;
            let roots = load_roots(&auth.ca_file, &files.ca)?;
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider));
            let mut verifier = if auth.required {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            if !auth.crl_files.is_empty() {
                let mut crls = Vec::new();
                for (path, pem) in auth.crl_files.iter().zip(&files.crls) {
                    crls.extend(load_crls(path, pem)?);
                }
                verifier = verifier.with_crls(crls);
                if auth.crl_only_leaf {
                    verifier = verifier.only_check_end_entity_revocation();
                }
            }
            let verifier = verifier.build().map_err(|e| {
                ConfigError::new(
                    ConfigErrorKind::Tls,
                    format!("client CA file {}: {e}", auth.ca_file.display()),
                )
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut server = builder.with_cert_resolver(Arc::clone(resolver) as _);
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    sessions.apply(&mut server, own.as_ref().or(keyed))?;
    Ok(server)
}

// === impl ClientAuth ===

impl ClientAuth {
    /// Every client must present a certificate issued by a CA in `ca_file`
    /// (PEM); a handshake without one fails.
    pub fn required(ca_file: impl Into<PathBuf>) -> Self {
        Self {
            ca_file: ca_file.into(),
            required: true,
            crl_files: Vec::new(),
            crl_only_leaf: false,
        }
    }

    /// A client may present a certificate; when it does, it must be issued
    /// by a CA in `ca_file` (PEM). Clients without one connect with no
    /// [`Identity`].
    pub fn optional(ca_file: impl Into<PathBuf>) -> Self {
        Self {
            ca_file: ca_file.into(),
            required: false,
            ..Self::required(PathBuf::new())
        }
    }

    /// Refuses client certificates revoked by the CRLs in `path` (PEM,
    /// one or more `X509 CRL` blocks); call it once per file.
    pub fn crl_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.crl_files.push(path.into());
        self
    }

    /// Checks only the client's own certificate against the CRLs, not the
    /// intermediate CAs of its chain (default: the whole chain).
    pub fn crl_only_leaf(mut self, only_leaf: bool) -> Self {
        self.crl_only_leaf = only_leaf;
        self
    }
}

// === impl TlsConfig ===

impl TlsConfig {
    /// A builder; add at least one certificate.
    pub fn builder() -> TlsConfigBuilder {
        TlsConfigBuilder::default()
    }

    /// Reads the certificate and key files again, and the client CA bundle
    /// of the [`ClientAuth`] when there is one, and swaps them in
    /// atomically. New handshakes use them; established connections are not
    /// touched (a client admitted by a CA that is gone stays connected).
    ///
    /// On failure of any file the current certificates and CA bundle stay
    /// in use. Either way the outcome is logged and audited (`reloaded` or
    /// `rejected`, reason `tls reload: …`). It reads files, so call it off
    /// the async threads when that matters
    /// ([`reload_on_sighup`](Self::reload_on_sighup) does).
    ///
    /// # Errors
    ///
    /// As [`TlsConfigBuilder::build`], naming the file at fault.
    pub fn reload(&self) -> Result<(), ConfigError> {
        let shared = &self.shared;
        let loaded = load_set(&shared.files, &shared.provider).and_then(|set| {
            // The resolver is shared by the old and the new configuration:
            // the new one is built only to check the CA bundle, and swapped
            // in after the certificates. With it come an empty session
            // cache, new random ticket keys, and a ticketer of the key
            // files (read again) bound to the CA bundle and CRLs as read
            // now: sessions whose client certificate was checked under the
            // old files are not resumed.
            let server = match &shared.client_auth {
                Some(auth) => Some(server_config(
                    &shared.provider,
                    Some(auth),
                    shared.min_version,
                    &shared.resolver,
                    &shared.sessions,
                    None,
                )?),
                None => None,
            };
            // Without client auth, the key files are read again for the
            // ticketer the configuration keeps.
            let keys: Option<TicketKeys> = match &shared.keyed {
                Some(_) => Some(KeyedTicketer::load(&shared.sessions.key_files, Vec::new())?),
                None => None,
            };
            Ok((set, server, keys))
        });
        match loaded {
            Ok((set, server, keys)) => {
                shared.resolver.current.store(Arc::new(set));
                self.publish_expiry();
                if let (Some(keyed), Some(keys)) = (&shared.keyed, keys) {
                    keyed.install(keys);
                }
                let what = match server {
                    Some(server) => {
                        shared.server.store(Arc::new(server));
                        "certificates and client CA bundle reloaded"
                    }
                    None => "certificates reloaded",
                };
                tracing::info!("tls {what}");
                tollgate_core::audit::event(
                    None,
                    None,
                    None,
                    "reloaded",
                    &format!("tls reload: {what}"),
                );
                Ok(())
            }
            Err(err) => {
                tracing::warn!(error = %err, "tls reload failed; keeping the current certificates");
                tollgate_core::audit::event(
                    None,
                    None,
                    None,
                    "rejected",
                    &format!("tls reload: {err}"),
                );
                Err(err)
            }
        }
    }

    /// When each certificate expires: its name (`default`, or the SNI name
    /// it was added with) and its leaf's `notAfter`, for the certificates
    /// in use now.
    #[must_use]
    pub fn certificate_expiry(&self) -> Vec<(String, SystemTime)> {
        self.shared
            .resolver
            .current
            .load()
            .expiry
            .iter()
            .map(|(name, not_after)| {
                let at = u64::try_from(*not_after)
                    .map_or(UNIX_EPOCH, |secs| UNIX_EPOCH + Duration::from_secs(secs));
                (name.clone(), at)
            })
            .collect()
    }

    /// Publishes the certificates' expiry in `metrics`
    /// (`tollgate_tls_certificate_expiry_timestamp_seconds{certificate}`,
    /// see [`Metrics::set_tls_certificates`]) now and after every
    /// successful [`reload`](Self::reload), so an alert can fire before a
    /// certificate runs out. The last `metrics` given is the one kept.
    /// `config::Server` does this with the admin listener's metrics.
    pub fn report_to(&self, metrics: &Metrics) {
        self.shared.metrics.store(Some(Arc::new(metrics.clone())));
        self.publish_expiry();
    }

    fn publish_expiry(&self) {
        if let Some(metrics) = self.shared.metrics.load().as_ref() {
            let current = &self.shared.resolver.current;
            // A reload that swapped the set meanwhile publishes too, but
            // maybe before this: publish until the set published is the
            // one in use.
            loop {
                let set = current.load_full();
                metrics.set_tls_certificates(set.expiry.iter().map(|(n, t)| (n.as_str(), *t)));
                if Arc::ptr_eq(&set, &current.load()) {
                    break;
                }
            }
        }
    }

    /// Spawns a task that calls [`reload`](Self::reload) (certificates and
    /// client CA bundle) on every SIGHUP, for as long as the runtime runs
    /// (abort the handle to stop it).
    ///
    /// # Errors
    ///
    /// When the signal handler cannot be installed.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    #[cfg(unix)]
    pub fn reload_on_sighup(&self) -> std::io::Result<tokio::task::JoinHandle<()>> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = signal(SignalKind::hangup())?;
        let tls = self.clone();
        Ok(tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                let tls = tls.clone();
                // The outcome is logged and audited by `reload` itself.
                if let Err(err) = tokio::task::spawn_blocking(move || tls.reload()).await {
                    tracing::warn!(error = %err, "tls reload task failed");
                }
            }
        }))
    }

    /// An acceptor with the current configuration.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.shared.server.load_full())
    }
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("files", &self.shared.files)
            .field("client_auth", &self.shared.client_auth)
            .finish_non_exhaustive()
    }
}

// === impl CertSet ===

impl CertSet {
    fn pick(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = server_name else {
            return self.default.clone();
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.exact
            .get(&name)
            .or_else(|| {
                let (_, parent) = name.split_once('.')?;
                self.wildcard.get(parent)
            })
            .or(self.default.as_ref())
            .cloned()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load().pick(client_hello.server_name())
    }
}

fn tls_error(message: String) -> ConfigError {
    ConfigError::new(ConfigErrorKind::Tls, message)
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| tls_error(format!("{what} {}: {e}", path.display())))
}

/// Every certificate in a PEM file; at least one.
pub(crate) fn load_certs(
    path: &Path,
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    load_pem_blocks(path, what, "CERTIFICATE")
}

/// Every `label` block of a PEM file, parsed as `T`; at least one.
fn load_pem_blocks<T: PemObject>(
    path: &Path,
    what: &str,
    label: &str,
) -> Result<Vec<T>, ConfigError> {
    parse_pem_blocks(path, &read_file(path, what)?, what, label)
}

/// Every `label` block of `pem`, the contents of the file `path`, parsed
/// as `T`; at least one.
fn parse_pem_blocks<T: PemObject>(
    path: &Path,
    pem: &[u8],
    what: &str,
    label: &str,
) -> Result<Vec<T>, ConfigError> {
    let blocks = T::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(format!("{what} {}: {e}", path.display())))?;
    if blocks.is_empty() {
        return Err(tls_error(format!(
            "{what} {}: no {label} in the file",
            path.display()
        )));
    }
    Ok(blocks)
}

/// The client CA bundle in `pem`, the contents of the file `path`.
fn load_roots(path: &Path, pem: &[u8]) -> Result<RootCertStore, ConfigError> {
    let mut roots = RootCertStore::empty();
    for cert in parse_pem_blocks(path, pem, "client CA file", "CERTIFICATE")? {
        roots
            .add(cert)
            .map_err(|e| tls_error(format!("client CA file {}: {e}", path.display())))?;
    }
    Ok(roots)
}

/// Every CRL in `pem`, the contents of the file `path`; at least one.
fn load_crls(
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateRevocationListDer<'static>>, ConfigError> {
    parse_pem_blocks(path, pem, "CRL file", "X509 CRL")
}

fn load_key(files: &CertFiles, provider: &CryptoProvider) -> Result<CertifiedKey, ConfigError> {
    let chain = load_certs(&files.cert, "certificate file")?;
    let pem = read_file(&files.key, "key file")?;
    let key = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| tls_error(format!("key file {}: {e}", files.key.display())))?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        tls_error(format!(
            "key file {} with certificate file {}: {e}",
            files.key.display(),
            files.cert.display()
        ))
    })
}

fn load_set(files: &CertFilesSet, provider: &CryptoProvider) -> Result<CertSet, ConfigError> {
    let mut expiry = Vec::new();
    let default = match &files.default {
        Some(f) => {
            let key = load_key(f, provider)?;
            expiry.extend(not_after("default", f, &key));
            Some(Arc::new(key))
        }
        None => None,
    };
    let mut exact = HashMap::new();
    let mut wildcard = HashMap::new();
    for (name, f) in &files.by_name {
        let key = load_key(f, provider)?;
        expiry.extend(not_after(name, f, &key));
        let key = Arc::new(key);
        match name.strip_prefix("*.") {
            Some(suffix) => wildcard.insert(suffix.to_owned(), key),
            None => exact.insert(name.clone(), key),
        };
    }
    Ok(CertSet {
        default,
        exact,
        wildcard,
        expiry,
    })
}

/// The certificate's name and its leaf's `notAfter` (Unix seconds); a
/// warning when it has expired or expires within [`EXPIRY_WARNING`]. `None`
/// when the leaf does not parse as X.509 (rustls took it without parsing
/// it; a client would refuse it).
fn not_after(name: &str, files: &CertFiles, key: &CertifiedKey) -> Option<(String, i64)> {
    let leaf = key.cert.first()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let not_after = parsed.validity().not_after.timestamp();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let left = not_after.saturating_sub(now);
    let warn_within = i64::try_from(EXPIRY_WARNING.as_secs()).unwrap_or(i64::MAX);
    if left <= 0 {
        tracing::warn!(certificate = name, file = %files.cert.display(), "TLS certificate has expired");
    } else if left < warn_within {
        tracing::warn!(
            certificate = name,
            file = %files.cert.display(),
            days_left = left / 86_400,
            "TLS certificate expires soon"
        );
    }
    Some((name.to_owned(), not_after))
}

/// Whether the client certificate of a resumed session (`chain`, leaf
/// first; none without client auth) is within its validity dates now.
/// rustls checks them in the full handshake only, and a session renews
/// itself with each resumption (each one hands out new tickets), so a
/// certificate that has expired since would go on being accepted.
fn client_certificate_current(chain: Option<&[CertificateDer<'_>]>) -> bool {
    let Some(leaf) = chain.and_then(<[_]>::first) else {
        return true;
    };
    x509_parser::parse_x509_certificate(leaf.as_ref())
        .is_ok_and(|(_, cert)| cert.validity().is_valid())
}

/// The [`Identity`] of a verified client certificate; see [`ClientAuth`].
fn client_identity(cert: &CertificateDer<'_>) -> Option<Identity> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = parsed.subject();
    let dn = subject.to_string();
    let mut claims = serde_json::Map::new();
    claims.insert("dn".to_owned(), dn.clone().into());
    if let Some(cn) = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
    {
        claims.insert("cn".to_owned(), cn.into());
    }
    claims.insert("serial".to_owned(), parsed.raw_serial_as_string().into());
    let identity = if dn.is_empty() {
        Identity::default()
    } else {
        Identity::subject(dn)
    };
    Some(
        identity
            .with_method(AuthMethod::ClientCertificate)
            .with_claims(claims),
    )
}

/// Runs the TLS handshake of one accepted connection, bounded by
/// `timeout`, then serves it; the task [`Serve`] spawns per connection.
pub(crate) async fn accept<S, B>(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    info: ConnectionInfo,
    builder: auto::Builder<TokioExecutor>,
    service: S,
    tracked: Tracked,
    timeouts: Timeouts,
) where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let remote = info.remote;
    let stream = match tokio::time::timeout(timeouts.header_read, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            tracing::debug!(error = %err, %remote, "tls handshake failed");
            tracked.error(ConnectionError::TlsHandshake);
            return;
        }
        Err(_) => {
            tracing::debug!(%remote, "tls handshake timed out");
            tracked.error(ConnectionError::TlsHandshake);
            return;
        }
    };
    let session = stream.get_ref().1;
    let resumed = session.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    if resumed && !client_certificate_current(session.peer_certificates()) {
        tracing::debug!(%remote, "tls session resumed with an expired client certificate");
        tracked.error(ConnectionError::TlsHandshake);
        return;
    }
    tracked.tls_handshake(
        match session.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "1.2",
            _ => "other",
        },
        resumed,
    );
    let identity = session
        .peer_certificates()
        .and_then(<[_]>::first)
        .and_then(client_identity);
    // ALPN decides the protocol; without ALPN the auto server sniffs it.
    let builder = match session.alpn_protocol() {
        Some(b"h2") => builder.http2_only(),
        Some(b"http/1.1") => builder.http1_only(),
        _ => builder,
    };
    serve_connection(
        &builder,
        stream,
        info.with_secure(true),
        identity,
        service,
        tracked,
        timeouts,
    )
    .await;
}

// === redirect ===

/// Serves `listener` with plain HTTP, answering every request with a
/// `308 Permanent Redirect` to the same host, path and query over HTTPS on
/// `https_port` (left out of the URL when it is 443).
///
/// The host comes from the `Host` header (or the HTTP/2 `:authority`); it
/// must be a DNS name, an IPv4 address or a bracketed IPv6 address, else the
/// answer is a 400 problem. The returned [`Serve`] has the usual settings
/// (drain and header read timeouts).
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// let plain = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// tollgate::redirect_to_https(plain, 443, tollgate::shutdown_signal()).await
/// # }
/// ```
pub fn redirect_to_https<F>(
    listener: TcpListener,
    https_port: u16,
    shutdown: F,
) -> Serve<RedirectToHttps, F>
where
    F: Future<Output = ()> + Send + 'static,
{
    serve(listener, RedirectToHttps::new(https_port), shutdown)
}

impl RedirectToHttps {
    /// Redirects to `https_port` (443 is left out of the URL).
    #[must_use]
    pub fn new(https_port: u16) -> Self {
        Self {
            port: (https_port != 443).then_some(https_port),
        }
    }

    fn answer<B>(&self, req: &Request<B>) -> Response<Body> {
        match self.location(req) {
            Some(location) => {
                let mut res = Response::new(Body::empty());
                *res.status_mut() = StatusCode::PERMANENT_REDIRECT;
                res.headers_mut().insert(LOCATION, location);
                res.headers_mut()
                    .insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
                res
            }
            None => tollgate_core::Problem::bad_request()
                .detail("the request has no valid Host header")
                .for_request(req)
                .into_response::<Body>()
                .map(Body::new),
        }
    }

    fn location<B>(&self, req: &Request<B>) -> Option<HeaderValue> {
        let raw = match req.headers().get(HOST) {
            Some(value) => value.to_str().ok()?,
            None => req.uri().authority()?.as_str(),
        };
        if raw.contains('@') {
            return None;
        }
        let authority: Authority = raw.parse().ok()?;
        let host = authority.host();
        if !valid_host(host) {
            return None;
        }
        let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let url = match self.port {
            Some(port) => format!("https://{host}:{port}{path}"),
            None => format!("https://{host}{path}"),
        };
        HeaderValue::try_from(url).ok()
    }
}

/// A DNS name, an IPv4 address or a bracketed IPv6 address.
fn valid_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[') {
        return inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<Ipv6Addr>().is_ok());
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

impl<B> Service<Request<B>> for RedirectToHttps {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        ready(Ok(self.answer(&req)))
    }
}

// === hsts ===

/// A layer that adds `Strict-Transport-Security: max-age=…` (with
/// `; includeSubDomains` when asked) to every response that does not set
/// the header itself, so it is never duplicated.
///
/// Stack it on the HTTPS router; browsers ignore the header over plain
/// HTTP (RFC 6797), where [`redirect_to_https`] answers instead.
///
/// ```
/// # use std::time::Duration;
/// let app = axum::Router::<()>::new()
///     .layer(tollgate::hsts_layer(Duration::from_secs(31_536_000), true));
/// ```
pub fn hsts_layer(
    max_age: Duration,
    include_subdomains: bool,
) -> SetResponseHeaderLayer<HeaderValue> {
    let value = if include_subdomains {
        format!("max-age={}; includeSubDomains", max_age.as_secs())
    } else {
        format!("max-age={}", max_age.as_secs())
    };
    // Digits and ASCII only: the fallback is unreachable.
    let value = HeaderValue::try_from(value).unwrap_or(HeaderValue::from_static("max-age=0"));
    SetResponseHeaderLayer::if_not_present(STRICT_TRANSPORT_SECURITY, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(host: Option<&str>, uri: &str) -> Request<()> {
        let mut req = Request::get(uri);
        if let Some(host) = host {
            req = req.header(HOST, host);
        }
        req.body(()).unwrap()
    }

    #[test]
    fn redirect_location_keeps_host_path_and_query() {
        let r = RedirectToHttps::new(8443);
        let res = r.answer(&get(Some("example.com:8080"), "/a/b?c=d"));
        assert_eq!(res.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(res.headers()[LOCATION], "https://example.com:8443/a/b?c=d");
        let r = RedirectToHttps::new(443);
        let res = r.answer(&get(Some("[::1]:80"), "/"));
        assert_eq!(res.headers()[LOCATION], "https://[::1]/");
        let res = r.answer(&get(Some("Example.COM"), "/x"));
        assert_eq!(res.headers()[LOCATION], "https://Example.COM/x");
    }

    #[test]
    fn redirect_refuses_bad_hosts() {
        let r = RedirectToHttps::new(443);
        for host in [
            None,
            Some(""),
            Some("user@evil.example"),
            Some("a..b"),
            Some("-a.example"),
            Some("a b"),
            Some("[zz]"),
            Some("evil.example/path"),
        ] {
            let res = r.answer(&get(host, "/"));
            assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{host:?}");
            assert_eq!(res.headers()["content-type"], "application/problem+json");
        }
    }

    #[tokio::test]
    async fn hsts_value() {
        use tower::{Layer, ServiceExt, service_fn};
        for (subdomains, expected) in [
            (true, "max-age=60; includeSubDomains"),
            (false, "max-age=60"),
        ] {
            let svc = hsts_layer(Duration::from_secs(60), subdomains).layer(service_fn(
                |_: Request<()>| async { Ok::<_, Infallible>(Response::new(())) },
            ));
            let res = svc.oneshot(get(None, "/")).await.unwrap();
            assert_eq!(res.headers()[STRICT_TRANSPORT_SECURITY], expected);
        }
    }

    #[test]
    fn sni_pick_prefers_exact_then_wildcard_then_default() {
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let key = |name: &str| {
            let c = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
            let der = PrivateKeyDer::Pkcs8(c.signing_key.serialize_der().into());
            Arc::new(CertifiedKey::from_der(vec![c.cert.der().clone()], der, &provider).unwrap())
        };
        let (d, e, w) = (key("default"), key("a.example"), key("x.example"));
        let set = CertSet {
            default: Some(Arc::clone(&d)),
            exact: HashMap::from([("a.example".to_owned(), Arc::clone(&e))]),
            wildcard: HashMap::from([("example".to_owned(), Arc::clone(&w))]),
            expiry: Vec::new(),
        };
        let pick = |n| set.pick(n).unwrap();
        assert!(Arc::ptr_eq(&pick(Some("A.Example")), &e));
        assert!(Arc::ptr_eq(&pick(Some("b.example")), &w));
        assert!(Arc::ptr_eq(&pick(Some("b.c.example")), &d));
        assert!(Arc::ptr_eq(&pick(None), &d));
    }
}
