//! The declarative config file (feature `config`): the whole
//! [`Gateway::builder`](crate::Gateway::builder) as TOML.
//!
//! Every section mirrors a builder call and deserialises into the
//! layer's own plain-data config (`UpstreamConfig`, `RateLimitConfig`,
//! `RequestRulesConfig`, …), so the file and the code API cannot drift
//! apart. Unknown keys are errors; every error names the file, the line
//! and the key path:
//!
//! ```text
//! gateway.toml:14: routes[2].rate_limit.plans[0].quotas[0].per: unknown variant `fortnight`, expected one of `second`, `minute`, `hour`, `day`
//! ```
//!
//! Secrets stay out of the file: `"${NAME}"` inside a string value is
//! replaced with the environment variable `NAME` (`"${NAME:-default}"`
//! falls back; `"$${"` is a literal `${`). Expanded values are redacted
//! wherever the effective config is shown (`/config` on the admin
//! listener).
//!
//! ```
//! use tollgate::config::ConfigFile;
//!
//! let file = ConfigFile::parse(r#"
//!     [server]
//!     listen = "127.0.0.1:0"
//!
//!     [[upstreams]]
//!     name = "users"
//!     endpoints = ["http://127.0.0.1:3001"]
//!
//!     [[routes]]
//!     prefix = "/api/users"
//!     to = "users"
//!     rewrite = { replace_prefix = "/users" }
//! "#)?;
//! let router = file.gateway_builder()?.build()?;
//! # let _ = router;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The key-by-key reference is `docs/config.md`.

mod build;
mod redact;
mod server;
mod source;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    num::{NonZeroU32, NonZeroUsize},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use tollgate_auth::{AuthPolicyConfig, ProviderConfig};
use tollgate_observe::ObserveConfig;
use tollgate_proxy::{PathRewrite, UpstreamConfig};
use tollgate_ratelimit::{ConcurrencyLimitConfig, RateLimitConfig};
use tollgate_request_id::{ClientIpConfig, RequestIdConfig};
use tollgate_transform::{
    ByClassConfig, CorsConfig, HeaderLimitConfig, RequestRulesConfig, ResponseRulesConfig,
};

pub use build::BuildState;
pub use server::{ReloadableService, Reloader, Server};
pub use source::ConfigFileError;

/// The whole gateway: listeners, upstreams, routes and the policies in
/// front of them.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct GatewayConfig {
    /// The public listener.
    #[serde(default)]
    pub server: ServerConfig,
    /// The admin listener (`/healthz`, `/readyz`, `/metrics`, `/config`).
    #[serde(default)]
    pub admin: AdminConfig,
    /// Gives every request an id, forwarded and echoed.
    #[serde(default)]
    pub request_id: Option<RequestIdConfig>,
    /// Starts or continues a W3C trace (`traceparent`) for every request.
    #[serde(default)]
    pub trace_context: bool,
    /// Resolves the client IP behind trusted proxies.
    #[serde(default)]
    pub client_ip: Option<ClientIpConfig>,
    /// The access log and metrics.
    #[serde(default)]
    pub observe: Option<ObserveConfig>,
    /// The auth providers routes refer to by name.
    #[serde(default)]
    pub auth: AuthConfig,
    /// A rate limit in front of every route (after each route's auth).
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// The upstreams routes send requests to.
    #[serde(default)]
    pub upstreams: Vec<UpstreamConfig>,
    /// The routes, matched by host, longest prefix, then conditions.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

/// `[auth]`: the providers (JWT issuers, API keys, introspection) that
/// routes name in their `auth.providers`. Each is built once and shared
/// by every route that names it, so key sets and caches are too.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct AuthConfig {
    /// The providers by name: `[auth.providers.users]` with `type = "jwt"`,
    /// `"api_key"` or `"introspection"`.
    pub providers: BTreeMap<String, ProviderConfig>,
}

/// `[server]`: the public listener.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The address to listen on. Default `0.0.0.0:8080`.
    pub listen: SocketAddr,
    /// Sets `SO_REUSEPORT` on the public listener, the HTTPS redirect
    /// listener and the admin listener, so a new gateway can start on the
    /// same addresses before the old one stops (see [`ListenOptions`]).
    /// Default off.
    ///
    /// [`ListenOptions`]: crate::ListenOptions
    pub reuse_port: bool,
    /// The accept queue length of those listeners. Default 1024.
    pub backlog: NonZeroU32,
    /// How long in-flight requests get to finish on shutdown. Default 30 s.
    #[serde(with = "tollgate_core::serde_util::duration")]
    pub drain_timeout: Duration,
    /// How long the gateway keeps serving after a shutdown begins, with
    /// `/readyz` failing, before it stops accepting and drains, so load
    /// balancers stop sending it connections first (see
    /// [`Health::shutdown_after`]). Default 0 s.
    ///
    /// [`Health::shutdown_after`]: crate::Health::shutdown_after
    #[serde(with = "tollgate_core::serde_util::duration")]
    pub shutdown_delay: Duration,
    /// How long a client may take to send its request head (and, with
    /// TLS, its handshake). Default 30 s.
    #[serde(with = "tollgate_core::serde_util::duration")]
    pub header_read_timeout: Duration,
    /// How long a client may leave its request body waiting before it gets
    /// a 408 (see [`Serve::body_read_timeout`]). Default 60 s.
    ///
    /// [`Serve::body_read_timeout`]: crate::Serve::body_read_timeout
    #[serde(with = "tollgate_core::serde_util::duration")]
    pub body_read_timeout: Duration,
    /// How long a write to the client may wait for it to read before the
    /// client is disconnected (see [`Serve::send_timeout`]). Default 60 s.
    ///
    /// [`Serve::send_timeout`]: crate::Serve::send_timeout
    #[serde(with = "tollgate_core::serde_util::duration")]
    pub send_timeout: Duration,
    /// How many client connections may be open at once; past it new ones
    /// wait in the accept queue (see [`Serve::max_connections`]). Default
    /// 10,000.
    ///
    /// [`Serve::max_connections`]: crate::Serve::max_connections
    pub max_connections: NonZeroUsize,
    /// The largest HTTP/1.1 request head in bytes; past it, 431 (see
    /// [`Serve::max_header_size`]). Default 65,536; at least 8,192.
    ///
    /// [`Serve::max_header_size`]: crate::Serve::max_header_size
    #[serde(deserialize_with = "header_size")]
    pub max_header_size: usize,
    /// How many headers an HTTP/1.1 request may have; more, 431 (see
    /// [`Serve::max_headers`]). Default 100.
    ///
    /// [`Serve::max_headers`]: crate::Serve::max_headers
    pub max_headers: NonZeroUsize,
    /// How many requests one client connection may carry before it is
    /// closed gracefully (see [`Serve::max_requests_per_connection`]).
    /// Default: no limit.
    ///
    /// [`Serve::max_requests_per_connection`]: crate::Serve::max_requests_per_connection
    pub max_requests_per_connection: Option<NonZeroUsize>,
    /// How long one client connection may stay open before it is closed
    /// gracefully (see [`Serve::max_connection_age`]); `"none"` or unset:
    /// no limit.
    ///
    /// [`Serve::max_connection_age`]: crate::Serve::max_connection_age
    #[serde(deserialize_with = "connection_age")]
    pub max_connection_age: Option<Duration>,
    /// `[server.http2]`: concurrent streams, header list size, windows,
    /// send buffer and keep-alive pings (see [`Http2Settings`]).
    ///
    /// [`Http2Settings`]: crate::Http2Settings
    pub http2: crate::Http2Settings,
    /// TLS termination; without it the listener speaks plain HTTP.
    pub tls: Option<ServerTlsConfig>,
    /// `[server.proxy_protocol]`: every connection starts with a PROXY
    /// protocol header from an L4 balancer (see [`Serve::proxy_protocol`]);
    /// `allow_from` lists the balancers' networks. The HTTPS redirect
    /// listener reads it too.
    ///
    /// [`Serve::proxy_protocol`]: crate::Serve::proxy_protocol
    pub proxy_protocol: Option<crate::ProxyProtocol>,
}

/// `[server.tls]`: certificates, mTLS, redirect and HSTS.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ServerTlsConfig {
    /// The certificates: one without `server_names` is the default, the
    /// others are chosen by SNI.
    pub certificates: Vec<CertificateConfig>,
    /// Verifies client certificates against a CA bundle.
    #[serde(default)]
    pub client_auth: Option<ClientAuthConfig>,
    /// A plain-HTTP listener that redirects every request to HTTPS (308).
    #[serde(default)]
    pub redirect_http: Option<SocketAddr>,
    /// `Strict-Transport-Security` on every response.
    #[serde(default)]
    pub hsts: Option<HstsConfig>,
    /// Re-reads the certificate files on SIGHUP. Default true.
    #[serde(default = "yes")]
    pub reload_on_sighup: bool,
    /// The oldest TLS version accepted: `"1.2"` (the default) or `"1.3"`
    /// (see [`TlsConfigBuilder::min_version`]).
    ///
    /// [`TlsConfigBuilder::min_version`]: crate::TlsConfigBuilder::min_version
    #[serde(default)]
    pub min_version: crate::TlsVersion,
    /// The cipher suites offered, by IANA name (see
    /// [`TlsConfigBuilder::cipher_suites`]); rustls's defaults when unset.
    ///
    /// [`TlsConfigBuilder::cipher_suites`]: crate::TlsConfigBuilder::cipher_suites
    #[serde(default)]
    pub cipher_suites: Option<Vec<String>>,
    /// The key exchange groups offered, most preferred first (see
    /// [`TlsConfigBuilder::key_exchange_groups`]); rustls's defaults when
    /// unset.
    ///
    /// [`TlsConfigBuilder::key_exchange_groups`]: crate::TlsConfigBuilder::key_exchange_groups
    #[serde(default)]
    pub key_exchange_groups: Option<Vec<String>>,
    /// Sessions kept for resumption by id (see
    /// [`TlsConfigBuilder::session_cache`]); default 20,480, 0 for none,
    /// 1,000,000 at most.
    ///
    /// [`TlsConfigBuilder::session_cache`]: crate::TlsConfigBuilder::session_cache
    #[serde(default = "default_session_cache")]
    pub session_cache: usize,
    /// Session tickets (see [`TlsConfigBuilder::session_tickets`]).
    /// Default true.
    ///
    /// [`TlsConfigBuilder::session_tickets`]: crate::TlsConfigBuilder::session_tickets
    #[serde(default = "yes")]
    pub session_tickets: bool,
    /// Files of 80 random bytes that tickets are sealed with, shared by
    /// every instance; the first seals, all open (see
    /// [`TlsConfigBuilder::session_ticket_key_file`]). Re-read on reload.
    ///
    /// [`TlsConfigBuilder::session_ticket_key_file`]: crate::TlsConfigBuilder::session_ticket_key_file
    #[serde(default)]
    pub session_ticket_key_files: Vec<PathBuf>,
    /// How long after it is issued a ticket or cached session may be
    /// resumed (see
    /// [`TlsConfigBuilder::session_timeout`]). Default 2 hours.
    ///
    /// [`TlsConfigBuilder::session_timeout`]: crate::TlsConfigBuilder::session_timeout
    #[serde(
        default = "default_session_timeout",
        with = "tollgate_core::serde_util::duration"
    )]
    pub session_timeout: Duration,
}

fn default_session_cache() -> usize {
    crate::DEFAULT_SESSION_CACHE
}

fn default_session_timeout() -> Duration {
    crate::DEFAULT_SESSION_TIMEOUT
}

/// One certificate chain and its key, as PEM files.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CertificateConfig {
    /// The PEM chain, leaf first.
    pub cert_file: PathBuf,
    /// The PEM private key.
    pub key_file: PathBuf,
    /// The SNI names it serves (`api.example.com`, `*.example.com`); none
    /// makes it the default certificate.
    #[serde(default)]
    pub server_names: Vec<String>,
}

/// `[server.tls.client_auth]`: mutual TLS.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ClientAuthConfig {
    /// The PEM bundle of CAs client certificates must chain to.
    pub ca_file: PathBuf,
    /// Whether a client without a certificate is refused (default), or
    /// let in without the certificate identity.
    #[serde(default = "yes")]
    pub required: bool,
    /// PEM files of certificate revocation lists; revoked client
    /// certificates are refused (see [`ClientAuth`]). Re-read on reload.
    ///
    /// [`ClientAuth`]: crate::ClientAuth
    #[serde(default)]
    pub crl_files: Vec<PathBuf>,
    /// Checks only the client's own certificate against the CRLs, not its
    /// intermediate CAs. Default false.
    #[serde(default)]
    pub crl_only_leaf: bool,
}

/// `[server.tls.hsts]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct HstsConfig {
    /// `max-age`. Default one year.
    #[serde(default = "one_year", with = "tollgate_core::serde_util::duration")]
    pub max_age: Duration,
    /// `includeSubDomains`. Default false.
    #[serde(default)]
    pub include_subdomains: bool,
}

/// `[admin]`: the operators' listener.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct AdminConfig {
    /// Whether the admin listener runs. Default true.
    pub enabled: bool,
    /// Its address. Default `127.0.0.1:9901`: keep it off public networks.
    pub listen: SocketAddr,
}

/// `[[routes]]`: what a route matches, where it sends requests, and the
/// policies in front of its upstream.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RouteConfig {
    /// The name in logs, metrics and errors (default: the prefix).
    #[serde(default)]
    pub name: Option<String>,
    /// The path prefix, matched at a segment boundary.
    pub prefix: String,
    /// Only these hosts (`api.example.com`, `*.example.com`).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Only these methods.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Only requests with these headers and values.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Only requests that carry these headers, whatever their value.
    #[serde(default)]
    pub headers_present: Vec<String>,
    /// The upstream (by name). Exactly one of `to` and `split`.
    #[serde(default)]
    pub to: Option<String>,
    /// Weighted upstreams (a canary).
    #[serde(default)]
    pub split: Vec<SplitConfig>,
    /// With `split`: a header naming the upstream to use.
    #[serde(default)]
    pub split_override_header: Option<String>,
    /// How the path is rewritten: `"keep"`, `"strip_prefix"`,
    /// `{ replace_prefix = "/users" }` or `{ template = "/v2/{rest}" }`.
    #[serde(default)]
    pub rewrite: PathRewrite,
    /// The most requests in flight on this route.
    #[serde(default)]
    pub concurrency_limit: Option<ConcurrencyLimitConfig>,
    /// Response compression (gzip, brotli, zstd, deflate) for clients
    /// that accept it; see [`Compression`](crate::compression::Compression).
    #[serde(default)]
    pub compression: Option<crate::compression::Compression>,
    /// CORS, answered before auth.
    #[serde(default)]
    pub cors: Option<CorsConfig>,
    /// The most request-body bytes (413 past it).
    #[serde(default)]
    pub body_limit: Option<u64>,
    /// The most request headers and header bytes (431 past them).
    #[serde(default)]
    pub header_limit: Option<HeaderLimitConfig>,
    /// Authentication and authorization: the providers to try, required
    /// scopes and roles, identity headers.
    #[serde(default)]
    pub auth: Option<AuthPolicyConfig>,
    /// This route's own rate limit.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// Request rules: headers, path, query, JSON body.
    #[serde(default)]
    pub transform_request: Option<RequestRulesConfig>,
    /// Request rules chosen by client class (instead of `transform_request`).
    #[serde(default)]
    pub transform_request_by_class: Option<ByClassConfig<RequestRulesConfig>>,
    /// Response rules: headers, status, JSON fields.
    #[serde(default)]
    pub transform_response: Option<ResponseRulesConfig>,
    /// Response rules chosen by client class (instead of
    /// `transform_response`): a mobile and a web shape of one API.
    #[serde(default)]
    pub transform_response_by_class: Option<ByClassConfig<ResponseRulesConfig>>,
}

/// One weighted upstream of a split.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SplitConfig {
    /// The upstream's name.
    pub upstream: String,
    /// Its weight.
    pub weight: u32,
}

/// `server.max_header_size`: refused at its key under hyper's smallest
/// read buffer, where [`Serve::max_header_size`](crate::Serve::max_header_size)
/// would quietly raise it.
fn header_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let value = u64::deserialize(d)?;
    usize::try_from(value)
        .ok()
        .filter(|v| *v >= crate::MIN_MAX_HEADER_SIZE)
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{value} is under {} bytes",
                crate::MIN_MAX_HEADER_SIZE
            ))
        })
}

/// `server.max_connection_age`: refused at its key under a second, where
/// [`Serve::max_connection_age`](crate::Serve::max_connection_age) would
/// quietly raise it.
fn connection_age<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let age = tollgate_core::serde_util::option_duration::deserialize(d)?;
    match age {
        Some(age) if age < crate::MIN_CONNECTION_AGE => Err(serde::de::Error::custom(format!(
            "{age:?} is shorter than {:?}",
            crate::MIN_CONNECTION_AGE
        ))),
        _ => Ok(age),
    }
}

fn yes() -> bool {
    true
}

fn one_year() -> Duration {
    Duration::from_secs(365 * 24 * 3600)
}

impl ServerConfig {
    /// The socket settings of the public listener: `reuse_port` and
    /// `backlog`.
    #[must_use]
    pub fn listen_options(&self) -> crate::ListenOptions {
        crate::ListenOptions::new()
            .reuse_port(self.reuse_port)
            .backlog(self.backlog.get())
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            reuse_port: false,
            backlog: crate::ListenOptions::new().backlog,
            drain_timeout: Duration::from_secs(30),
            shutdown_delay: Duration::ZERO,
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            max_connections: NonZeroUsize::new(crate::DEFAULT_MAX_CONNECTIONS)
                .unwrap_or(NonZeroUsize::MIN),
            max_header_size: crate::DEFAULT_MAX_HEADER_SIZE,
            max_headers: NonZeroUsize::new(crate::DEFAULT_MAX_HEADERS).unwrap_or(NonZeroUsize::MIN),
            max_requests_per_connection: None,
            max_connection_age: None,
            http2: crate::Http2Settings::default(),
            tls: None,
            proxy_protocol: None,
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9901)),
        }
    }
}

/// A parsed config file: the [`GatewayConfig`] and the text it came from
/// (after `${ENV}` expansion), kept to place build errors on their lines
/// and to show the effective config with secrets redacted.
#[derive(Clone, Debug)]
pub struct ConfigFile {
    config: GatewayConfig,
    text: String,
    secrets: Vec<String>,
    file: Option<PathBuf>,
}

impl ConfigFile {
    /// Reads and parses `path`, expanding `${ENV}` from the process
    /// environment.
    ///
    /// # Errors
    ///
    /// The file cannot be read, is not TOML, names an unknown key, has a
    /// value of the wrong type, or uses an unset environment variable.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigFileError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigFileError::new("", format!("cannot read the file: {e}"))
                .in_file(Some(path.to_owned()))
        })?;
        Self::parse_with(&text, &|name| std::env::var(name).ok())
            .map(|mut file| {
                file.file = Some(path.to_owned());
                file
            })
            .map_err(|e| e.in_file(Some(path.to_owned())))
    }

    /// Parses a config from text, expanding `${ENV}` from the process
    /// environment.
    ///
    /// # Errors
    ///
    /// As [`load`](Self::load).
    pub fn parse(text: &str) -> Result<Self, ConfigFileError> {
        Self::parse_with(text, &|name| std::env::var(name).ok())
    }

    /// Parses a config from text, taking `${NAME}` values from `env`.
    ///
    /// # Errors
    ///
    /// As [`load`](Self::load).
    pub fn parse_with(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigFileError> {
        let expanded = source::expand_env(text, env)?;
        let deserializer = toml::de::Deserializer::parse(&expanded.text)
            .map_err(|e| source::toml_error(&expanded.text, &e))?;
        let config: GatewayConfig =
            serde_path_to_error::deserialize(deserializer).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let line = inner
                    .span()
                    .map(|span| source::line_of(&expanded.text, span.start))
                    .or_else(|| source::line_of_path(&expanded.text, &path));
                let path = if path == "." { String::new() } else { path };
                ConfigFileError::new(path, inner.message().trim_end().to_owned()).at_line(line)
            })?;
        Ok(Self {
            config,
            text: expanded.text,
            secrets: expanded.secrets,
            file: None,
        })
    }

    /// The parsed config.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// The file it was read from, if any.
    pub fn path(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The effective config as JSON, with secrets replaced by
    /// `"[redacted]"`: values that came from `${ENV}`, and the values of
    /// keys that hold secrets (`secret`, `client_secret`, `password`,
    /// `key`, `token`), and passwords in URLs.
    pub fn redacted(&self) -> serde_json::Value {
        redact::redacted(&self.text, &self.secrets)
    }

    /// An error of building the key at `path`, placed on its line.
    pub(crate) fn error_at(&self, path: &str, message: impl Into<String>) -> ConfigFileError {
        ConfigFileError::new(path, message)
            .at_line(source::line_of_path(&self.text, path))
            .in_file(self.file.clone())
    }
}
