//! [`Upstream`]: a tower `Service` for one named backend.

use std::{
    convert::Infallible,
    fmt,
    future::Future,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{
    HeaderValue, Request, Response, StatusCode, Uri, Version,
    header::HOST,
    uri::{Authority, PathAndQuery, Scheme},
};
use http_body::Body;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use pin_project_lite::pin_project;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use tokio::{
    io::AsyncWriteExt,
    time::{Duration, Sleep},
};
use tollgate_core::{
    BoxError, ClientIp, ConfigError, ConfigErrorKind, ConnectionInfo, Drain, DrainGuard, Observed,
    RequestId, UpstreamCall,
    body::{IdleTimeout, ResponseBody},
};
use tower::Service;

use crate::{
    balance::{Balance, Endpoint, EndpointStatus, Endpoints, InFlight},
    error::UpstreamErrorKind,
    headers::{self, ForwardedHeaders},
    health_check::{self, HealthCheck, PassiveHealthCheck},
    rewrite::OriginalPath,
    transport::{Pool, PoolKind, Transport, TransportConfig, TransportError},
};

/// The HTTP version spoken to an upstream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Protocol {
    /// HTTP/1.1 to `http://` endpoints; ALPN offers `h2` and `http/1.1` to
    /// `https://` endpoints. The default.
    #[default]
    Auto,
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only: prior knowledge (h2c) for `http://`, ALPN `h2` for `https://`.
    Http2,
}

/// The plain-data configuration of an [`Upstream`].
///
/// [`Upstream::try_from`] runs the same checks as [`UpstreamBuilder::build`].
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
#[non_exhaustive]
pub struct UpstreamConfig {
    /// The upstream's name, used by routes, logs and metrics.
    pub name: String,
    /// The endpoints: base URLs (`http://host:port` or
    /// `https://host:port`) with their weights. In a config file, each is a
    /// string (weight 1) or a table `{ url = "…", weight = 3 }`.
    pub endpoints: Vec<EndpointConfig>,
    /// How an endpoint is picked.
    #[cfg_attr(feature = "serde", serde(default))]
    pub balance: Balance,
    /// The HTTP version spoken to the endpoints.
    #[cfg_attr(feature = "serde", serde(default))]
    pub protocol: Protocol,
    /// The longest a connect (TCP and TLS handshake) may take. Default 5 s.
    #[cfg_attr(
        feature = "serde",
        serde(
            default = "defaults::connect_timeout",
            with = "tollgate_core::serde_util::duration"
        )
    )]
    pub connect_timeout: Duration,
    /// The longest to wait for the response headers once the request is
    /// sent. `None` waits forever. Default 30 s.
    #[cfg_attr(
        feature = "serde",
        serde(
            default = "defaults::response_timeout",
            with = "tollgate_core::serde_util::option_duration"
        )
    )]
    pub response_timeout: Option<Duration>,
    /// The longest the response body may wait for its next data once the
    /// headers are in (nginx's `proxy_read_timeout`, Kong's
    /// `read_timeout`). Past it the response is cut off: the client's
    /// connection is closed (HTTP/1.1) or its stream reset (HTTP/2), as the
    /// status has been sent. `None` waits forever. Default 60 s.
    #[cfg_attr(
        feature = "serde",
        serde(
            default = "defaults::read_timeout",
            with = "tollgate_core::serde_util::option_duration"
        )
    )]
    pub read_timeout: Option<Duration>,
    /// How long an idle pooled connection is kept. Default 90 s.
    #[cfg_attr(
        feature = "serde",
        serde(
            default = "defaults::idle_timeout",
            with = "tollgate_core::serde_util::duration"
        )
    )]
    pub idle_timeout: Duration,
    /// How long an endpoint that refused a connection is left out. Default 5 s.
    #[cfg_attr(
        feature = "serde",
        serde(
            default = "defaults::cooloff",
            with = "tollgate_core::serde_util::duration"
        )
    )]
    pub cooloff: Duration,
    /// The most idle connections kept per endpoint. Default 1024.
    #[cfg_attr(feature = "serde", serde(default = "defaults::max_idle_per_endpoint"))]
    pub max_idle_per_endpoint: usize,
    /// Which forwarding headers are written.
    #[cfg_attr(feature = "serde", serde(default))]
    pub forwarded: ForwardedHeaders,
    /// Which connection pool is used.
    #[cfg_attr(feature = "serde", serde(default))]
    pub pool: PoolKind,
    /// A PEM file of CA certificates that `https://` endpoints are verified
    /// against, instead of the Mozilla roots.
    #[cfg_attr(feature = "serde", serde(default))]
    pub ca_file: Option<PathBuf>,
    /// The TLS server name sent (SNI) to `https://` endpoints and that
    /// their certificates are verified against, instead of the endpoint's
    /// host. The `Host` header is not changed.
    #[cfg_attr(feature = "serde", serde(default))]
    pub tls_server_name: Option<String>,
    /// A PEM certificate chain presented to `https://` endpoints that ask
    /// for one (mutual TLS); with [`client_key_file`](Self::client_key_file).
    #[cfg_attr(feature = "serde", serde(default))]
    pub client_cert_file: Option<PathBuf>,
    /// The PEM private key of [`client_cert_file`](Self::client_cert_file).
    #[cfg_attr(feature = "serde", serde(default))]
    pub client_key_file: Option<PathBuf>,
    /// The active health check, when the endpoints are probed; see
    /// [`HealthCheck`].
    #[cfg_attr(feature = "serde", serde(default))]
    pub health_check: Option<HealthCheck>,
    /// The passive health check, when failed responses take endpoints out;
    /// see [`PassiveHealthCheck`].
    #[cfg_attr(feature = "serde", serde(default))]
    pub passive_health_check: Option<PassiveHealthCheck>,
    /// How many times a request whose connection failed (refused,
    /// unreachable, TLS handshake, connect timeout) is sent again to another
    /// endpoint. Only requests without a body are: the request never left,
    /// so any method is safe. Default 0.
    #[cfg_attr(feature = "serde", serde(default))]
    pub retries: u32,
    /// Response statuses on which an idempotent request without a body
    /// (`GET`, `HEAD`, `PUT`, `DELETE`, `OPTIONS`, `TRACE`) is also sent to
    /// another endpoint, within [`retries`](Self::retries): nginx's
    /// `proxy_next_upstream http_503`, Envoy's `retriable-status-codes`.
    /// Default none.
    #[cfg_attr(feature = "serde", serde(default))]
    pub retry_on_statuses: Vec<u16>,
}

/// One endpoint of an [`UpstreamConfig`]: its base URL and its weight.
///
/// In a config file an endpoint is a string, of weight 1, or a table
/// `{ url = "http://10.0.0.1:8080", weight = 3 }`, in any mix; a table
/// takes no other key.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointConfig {
    /// The base URL: `http://host:port` or `https://host:port`.
    pub url: String,
    /// Its share of the traffic against the other endpoints' weights, up
    /// to [`MAX_WEIGHT`](Self::MAX_WEIGHT); default 1. An endpoint of
    /// weight 0 is kept (health-checked, listed by
    /// [`Upstream::endpoint_status`]) but sent no request: how an endpoint
    /// is drained.
    pub weight: u32,
}

mod defaults {
    use tokio::time::Duration;

    pub(super) fn connect_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub(super) fn response_timeout() -> Option<Duration> {
        Some(Duration::from_secs(30))
    }
    pub(super) fn read_timeout() -> Option<Duration> {
        Some(Duration::from_secs(60))
    }
    pub(super) fn idle_timeout() -> Duration {
        Duration::from_secs(90)
    }
    pub(super) fn cooloff() -> Duration {
        Duration::from_secs(5)
    }
    pub(super) fn max_idle_per_endpoint() -> usize {
        1024
    }
}

/// Builds an [`Upstream`]; see [`Upstream::builder`].
#[derive(Clone, Debug)]
#[must_use]
pub struct UpstreamBuilder {
    config: UpstreamConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// A tower `Service` for one named backend with one or more endpoints.
///
/// It forwards each request to an endpoint picked by the [`Balance`]
/// policy, through a pooled keep-alive [`Transport`] (hyper-util's client
/// by default, or the [`WorkerPool`](crate::WorkerPool)), with both bodies
/// streaming. It removes hop-by-hop headers in both directions,
/// writes the forwarding headers, tunnels upgrades (WebSocket and any other
/// `Upgrade`) as raw bytes (drained on shutdown when the request carries
/// the server's [`Drain`]), and turns failures into problems: 502 when the
/// upstream refuses, resets or sends garbage, 504 when it is too slow. Its
/// error type is therefore [`Infallible`].
///
/// The request's path and query go to the upstream byte for byte; rewrite
/// them before with [`RewritePath`](crate::RewritePath).
///
/// See the [crate docs](crate) for an example.
pub struct Upstream<B, T = Pool<B>> {
    shared: Arc<Shared<T>>,
    /// How a request without a body is made again for a retry; `None` when
    /// the body type has no `Default` (or retries are off).
    replay: Option<Replay<B>>,
}

/// Makes a request without a body again, for a retry.
struct Replay<B> {
    is_empty: fn(&B) -> bool,
    empty: fn() -> B,
}

impl<B> Clone for Replay<B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B> Copy for Replay<B> {}

struct Shared<T> {
    name: Arc<str>,
    endpoints: Arc<Endpoints>,
    transport: T,
    version: Version,
    retries: u32,
    /// Sorted; empty when no status is retried.
    retry_on_statuses: Arc<[u16]>,
    response_timeout: Option<Duration>,
    read_timeout: Option<Duration>,
    forwarded: ForwardedHeaders,
}

pin_project! {
    /// The future of [`Upstream`]: the transport's future, bounded by the
    /// response timeout, with failures turned into problems. Nothing is
    /// boxed.
    pub struct ResponseFuture<F> {
        #[pin]
        sent: F,
        #[pin]
        deadline: Option<Sleep>,
        state: Option<Pending<F>>,
    }
}

/// Sends a request without a body again, to another endpoint than the one
/// given (whose connection failed): `None` when no attempt is left or every
/// endpoint is out.
type Retry<F> = Box<dyn FnMut(usize) -> Option<(F, InFlight)> + Send>;

/// What the future needs once the transport answers.
struct Pending<F> {
    name: Arc<str>,
    /// The observing layer's slot and when the request went out, when a
    /// layer outside observes the request.
    observed: Option<(Observed, tokio::time::Instant)>,
    in_flight: InFlight,
    client_upgrade: Option<OnUpgrade>,
    /// The server's drain, for the tunnel of an upgrade.
    drain: Option<Drain>,
    request_id: Option<RequestId>,
    client_path: PathAndQuery,
    read_timeout: Option<Duration>,
    /// Set for a request without a body to an upstream with retries.
    retry: Option<Retry<F>>,
    /// The statuses that send it again too, when it is idempotent.
    retry_on_statuses: Option<Arc<[u16]>>,
    /// How many times it was sent again.
    retried: u32,
}

// === impl UpstreamConfig ===

impl UpstreamConfig {
    /// A configuration with the defaults and no endpoints.
    #[must_use]
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            endpoints: Vec::new(),
            balance: Balance::default(),
            protocol: Protocol::default(),
            connect_timeout: defaults::connect_timeout(),
            response_timeout: defaults::response_timeout(),
            read_timeout: defaults::read_timeout(),
            idle_timeout: defaults::idle_timeout(),
            cooloff: defaults::cooloff(),
            max_idle_per_endpoint: defaults::max_idle_per_endpoint(),
            forwarded: ForwardedHeaders::default(),
            pool: PoolKind::default(),
            ca_file: None,
            tls_server_name: None,
            client_cert_file: None,
            client_key_file: None,
            health_check: None,
            passive_health_check: None,
            retries: 0,
            retry_on_statuses: Vec::new(),
        }
    }
}

// === impl EndpointConfig ===

impl EndpointConfig {
    /// The largest weight an endpoint may have. The balancers add weights
    /// up and multiply them by request counts; the bound keeps that far
    /// from overflowing.
    pub const MAX_WEIGHT: u32 = 1_000;

    /// An endpoint at `url` of weight 1.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self::weighted(url, 1)
    }

    /// An endpoint at `url` of weight `weight`.
    #[must_use]
    pub fn weighted(url: impl Into<String>, weight: u32) -> Self {
        Self {
            url: url.into(),
            weight,
        }
    }
}

/// Refuses a weight above [`EndpointConfig::MAX_WEIGHT`], saying why.
fn check_weight(weight: u32) -> Result<u32, String> {
    if weight > EndpointConfig::MAX_WEIGHT {
        return Err(format!(
            "{weight} is above the maximum weight, {}",
            EndpointConfig::MAX_WEIGHT
        ));
    }
    Ok(weight)
}

impl From<String> for EndpointConfig {
    fn from(url: String) -> Self {
        Self::new(url)
    }
}

impl From<&str> for EndpointConfig {
    fn from(url: &str) -> Self {
        Self::new(url)
    }
}

/// An endpoint in a config file: a URL string, or a table `{ url, weight }`.
#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for EndpointConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// The table form; its keys are checked one by one, so errors name
        /// them.
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            url: String,
            #[serde(default = "one", deserialize_with = "weight")]
            weight: u32,
        }

        fn one() -> u32 {
            1
        }

        fn weight<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
            check_weight(<u32 as serde::Deserialize>::deserialize(d)?)
                .map_err(serde::de::Error::custom)
        }

        struct Visitor;

        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = EndpointConfig;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an endpoint URL or a table { url, weight }")
            }

            fn visit_str<E: serde::de::Error>(self, url: &str) -> Result<Self::Value, E> {
                Ok(EndpointConfig::new(url))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                let table = <Table as serde::Deserialize>::deserialize(
                    serde::de::value::MapAccessDeserializer::new(map),
                )?;
                Ok(EndpointConfig::weighted(table.url, table.weight))
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}

// === impl UpstreamBuilder ===

impl UpstreamBuilder {
    /// Adds an endpoint base URL, `http://host:port` or `https://host:port`,
    /// of weight 1.
    pub fn endpoint(self, url: impl Into<String>) -> Self {
        self.weighted_endpoint(url, 1)
    }

    /// Adds an endpoint that gets `weight` shares of the traffic against
    /// the other endpoints' weights (nginx's `server … weight=N`, Kong's
    /// target weight, Envoy's `load_balancing_weight`). Both [`Balance`]
    /// policies honour it.
    ///
    /// A weight of 0 keeps the endpoint (it is health-checked and listed by
    /// [`Upstream::endpoint_status`]) but sends it nothing, even when every
    /// other endpoint is out: how an endpoint is drained. [`build`](Self::build)
    /// refuses a weight above [`EndpointConfig::MAX_WEIGHT`] and an upstream
    /// whose endpoints all have weight 0.
    ///
    /// ```
    /// # use tollgate_proxy::{Balance, Upstream};
    /// # fn main() -> Result<(), tollgate_core::ConfigError> {
    /// // Three requests of four to the larger machine; none to the one
    /// // being drained.
    /// let users = Upstream::builder("users")
    ///     .weighted_endpoint("http://10.0.0.1:8080", 3)
    ///     .weighted_endpoint("http://10.0.0.2:8080", 1)
    ///     .weighted_endpoint("http://10.0.0.3:8080", 0)
    ///     .balance(Balance::RoundRobin)
    ///     .build::<tollgate_core::body::BoxBody>()?;
    /// let weights: Vec<u32> = users.endpoint_status().iter().map(|e| e.weight).collect();
    /// assert_eq!(weights, [3, 1, 0]);
    /// # Ok(()) }
    /// ```
    pub fn weighted_endpoint(mut self, url: impl Into<String>, weight: u32) -> Self {
        self.config
            .endpoints
            .push(EndpointConfig::weighted(url, weight));
        self
    }

    /// Adds several endpoints, of weight 1.
    pub fn endpoints<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config
            .endpoints
            .extend(urls.into_iter().map(EndpointConfig::new));
        self
    }

    /// Sets the balancing policy (default: [`Balance::LeastRequest`]).
    pub fn balance(mut self, balance: Balance) -> Self {
        self.config.balance = balance;
        self
    }

    /// Sets the HTTP version spoken to the endpoints.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.config.protocol = protocol;
        self
    }

    /// Sets the connect timeout (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Sets the response-header timeout (default 30 s); `None` waits forever.
    pub fn response_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.response_timeout = timeout;
        self
    }

    /// Sets how long the response body may wait for its next data (default
    /// 60 s); `None` waits forever. See [`UpstreamConfig::read_timeout`].
    pub fn read_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.read_timeout = timeout;
        self
    }

    /// Sets how long idle pooled connections are kept (default 90 s).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.idle_timeout = timeout;
        self
    }

    /// Sets how long an endpoint that refused a connection is left out.
    pub fn cooloff(mut self, cooloff: Duration) -> Self {
        self.config.cooloff = cooloff;
        self
    }

    /// Sets the most idle connections kept per endpoint.
    pub fn max_idle_per_endpoint(mut self, max: usize) -> Self {
        self.config.max_idle_per_endpoint = max;
        self
    }

    /// Sets which forwarding headers are written.
    pub fn forwarded(mut self, forwarded: ForwardedHeaders) -> Self {
        self.config.forwarded = forwarded;
        self
    }

    /// Chooses the connection pool (default: [`PoolKind::HyperUtil`]).
    pub fn pool(mut self, pool: PoolKind) -> Self {
        self.config.pool = pool;
        self
    }

    /// Keeps the client's `Host` header instead of the endpoint's authority.
    pub fn preserve_host(mut self, preserve: bool) -> Self {
        self.config.forwarded.preserve_host = preserve;
        self
    }

    /// Uses this rustls configuration for `https://` endpoints, e.g. with a
    /// private CA. The default trusts the Mozilla roots (webpki-roots).
    pub fn tls_config(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Trusts the CA certificates in the PEM file `path` for `https://`
    /// endpoints, instead of the Mozilla roots. The file is read by
    /// [`build`](Self::build); it cannot be combined with
    /// [`tls_config`](Self::tls_config).
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.ca_file = Some(path.into());
        self
    }

    /// Sends `name` as the TLS server name (SNI) to `https://` endpoints and
    /// verifies their certificates against it, instead of the endpoint's
    /// host: for an endpoint reached by IP address or by an internal name
    /// that its certificate does not carry. The `Host` header still names
    /// the endpoint (see [`preserve_host`](Self::preserve_host)).
    pub fn tls_server_name(mut self, name: impl Into<String>) -> Self {
        self.config.tls_server_name = Some(name.into());
        self
    }

    /// Presents the certificate chain in `cert` (PEM) with its key in `key`
    /// to `https://` endpoints that ask for a client certificate (mutual
    /// TLS, nginx's `proxy_ssl_certificate`). The files are read by
    /// [`build`](Self::build); it cannot be combined with
    /// [`tls_config`](Self::tls_config).
    pub fn client_certificate(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.config.client_cert_file = Some(cert.into());
        self.config.client_key_file = Some(key.into());
        self
    }

    /// Probes every endpoint with `check`, taking the ones that fail it out
    /// of balancing until they pass again; see [`HealthCheck`]. The upstream
    /// must then be built inside a tokio runtime.
    pub fn health_check(mut self, check: HealthCheck) -> Self {
        self.config.health_check = Some(check);
        self
    }

    /// Leaves an endpoint out for a while after failed responses in a row;
    /// see [`PassiveHealthCheck`].
    pub fn passive_health_check(mut self, check: PassiveHealthCheck) -> Self {
        self.config.passive_health_check = Some(check);
        self
    }

    /// Sends a request whose connection failed (refused, unreachable, TLS
    /// handshake, connect timeout) to another endpoint, up to `retries`
    /// more times (default 0); see [`UpstreamConfig::retries`]. Only
    /// requests without a body are retried, and only by upstreams made
    /// with [`build`](Self::build) or [`Upstream::try_from`].
    pub fn retries(mut self, retries: u32) -> Self {
        self.config.retries = retries;
        self
    }

    /// Also retries an idempotent request without a body that got one of
    /// `statuses`, within [`retries`](Self::retries); see
    /// [`UpstreamConfig::retry_on_statuses`].
    pub fn retry_on_statuses(mut self, statuses: impl IntoIterator<Item = u16>) -> Self {
        self.config.retry_on_statuses = statuses.into_iter().collect();
        self
    }

    /// Checks the configuration and builds the upstream.
    ///
    /// # Errors
    ///
    /// When there is no endpoint, an endpoint URL is not an absolute
    /// `http`/`https` URL without path and query, an endpoint's weight is
    /// above [`EndpointConfig::MAX_WEIGHT`] or every weight is 0, or the
    /// name is empty;
    /// when the CA file cannot be read or holds no certificate, or the TLS
    /// server name is not a DNS name or IP address.
    ///
    /// `B` must have a `Default` (an empty body) for [`retries`](Self::retries).
    pub fn build<B>(self) -> Result<Upstream<B>, ConfigError>
    where
        B: Body<Data = Bytes> + Default + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let kind = self.config.pool;
        Upstream::from_parts(self.config, self.tls, |c| Pool::new(kind, c))
            .map(Upstream::with_replay)
    }

    /// Like [`build`](Self::build), with another [`Transport`] (connection
    /// pool), made from the upstream's connection settings.
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build), and whatever `make_transport` returns.
    ///
    /// It cannot [retry](Self::retries): a retry sends an empty body of
    /// `B`'s `Default`, which `build` asks for and this does not.
    pub fn build_with<B, T>(
        self,
        make_transport: impl FnOnce(&TransportConfig) -> Result<T, ConfigError>,
    ) -> Result<Upstream<B, T>, ConfigError>
    where
        T: Transport<B>,
    {
        if self.config.retries > 0 {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidValue,
                "retries need an upstream made by build() or try_from (build_with cannot retry)",
            )
            .context(format!("upstream \"{}\"", self.config.name)));
        }
        Upstream::from_parts(self.config, self.tls, make_transport)
    }
}

// === impl Upstream ===

impl Upstream<()> {
    /// A builder for an upstream called `name`.
    ///
    /// ```
    /// # use tollgate_proxy::{Balance, Upstream};
    /// # fn main() -> Result<(), tollgate_core::ConfigError> {
    /// let users = Upstream::builder("users")
    ///     .endpoint("http://127.0.0.1:9001")
    ///     .endpoint("http://127.0.0.1:9002")
    ///     .balance(Balance::RoundRobin)
    ///     .build::<tollgate_core::body::BoxBody>()?;
    /// assert_eq!(users.name(), "users");
    /// # Ok(()) }
    /// ```
    pub fn builder(name: impl Into<String>) -> UpstreamBuilder {
        UpstreamBuilder {
            config: UpstreamConfig::new(name),
            tls: None,
        }
    }
}

impl<B, T> Upstream<B, T>
where
    T: Transport<B>,
{
    fn from_parts(
        config: UpstreamConfig,
        tls: Option<Arc<rustls::ClientConfig>>,
        make_transport: impl FnOnce(&TransportConfig) -> Result<T, ConfigError>,
    ) -> Result<Self, ConfigError> {
        let place = format!("upstream \"{}\"", config.name);
        if config.name.is_empty() {
            return Err(ConfigError::new(
                ConfigErrorKind::Missing,
                "an upstream needs a name",
            ));
        }
        if config.endpoints.is_empty() {
            return Err(
                ConfigError::new(ConfigErrorKind::Missing, "has no endpoint").context(place),
            );
        }
        let zero = |what: &str| {
            ConfigError::new(
                ConfigErrorKind::InvalidValue,
                format!("{what} must be above 0"),
            )
            .context(&place)
        };
        if config.connect_timeout.is_zero() {
            return Err(zero("connect_timeout"));
        }
        if config.response_timeout.is_some_and(|t| t.is_zero()) {
            return Err(zero("response_timeout"));
        }
        if config.read_timeout.is_some_and(|t| t.is_zero()) {
            return Err(zero("read_timeout"));
        }
        if config.idle_timeout.is_zero() {
            return Err(zero("idle_timeout"));
        }
        if let Some(bad) = config
            .retry_on_statuses
            .iter()
            .find(|&&s| !(100..=599).contains(&s))
        {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidValue,
                format!("retry_on_statuses: {bad} is not an HTTP status"),
            )
            .context(&place));
        }
        if config.endpoints.iter().all(|e| e.weight == 0) {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidValue,
                "every endpoint has weight 0: at least one must take traffic",
            )
            .context(&place));
        }
        let mut list = Vec::with_capacity(config.endpoints.len());
        for EndpointConfig { url, weight } in &config.endpoints {
            let (scheme, authority) = parse_endpoint(url).map_err(|e| e.context(&place))?;
            let weight = check_weight(*weight).map_err(|why| {
                ConfigError::new(
                    ConfigErrorKind::InvalidValue,
                    format!("endpoint {url:?}: weight {why}"),
                )
                .context(&place)
            })?;
            // Health, balancing state and metrics are per endpoint: one
            // listed twice would share none of them, and report twice.
            if list
                .iter()
                .any(|e: &Endpoint| e.scheme == scheme && e.authority == authority)
            {
                return Err(ConfigError::new(
                    ConfigErrorKind::Duplicate,
                    format!("endpoint {url:?} is listed twice"),
                )
                .context(&place));
            }
            let host = HeaderValue::from_str(authority.as_str()).map_err(|_| {
                ConfigError::new(ConfigErrorKind::InvalidUrl, format!("bad host in {url:?}"))
                    .context(&place)
            })?;
            list.push(Endpoint::new(scheme, authority, host, weight));
        }
        let client_cert = match (&config.client_cert_file, &config.client_key_file) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            (None, None) => None,
            _ => {
                return Err(ConfigError::new(
                    ConfigErrorKind::Missing,
                    "client_cert_file and client_key_file go together",
                )
                .context(&place));
            }
        };
        let tls = match tls {
            Some(_) if config.ca_file.is_some() || client_cert.is_some() => {
                return Err(ConfigError::new(
                    ConfigErrorKind::InvalidValue,
                    "ca_file and client certificates cannot be combined with tls_config; \
                     put them in the tls_config",
                )
                .context(&place));
            }
            Some(tls) => tls,
            None => Arc::new(
                client_tls_config(config.ca_file.as_deref(), client_cert)
                    .map_err(|e| e.context(&place))?,
            ),
        };
        let tls_server_name = match &config.tls_server_name {
            Some(name) => Some(ServerName::try_from(name.clone()).map_err(|_| {
                ConfigError::new(
                    ConfigErrorKind::Tls,
                    format!("tls_server_name {name:?} is not a DNS name or IP address"),
                )
                .context(&place)
            })?),
            None => None,
        };
        let transport_config = TransportConfig {
            endpoints: list
                .iter()
                .map(|e: &Endpoint| (e.scheme.clone(), e.authority.clone()))
                .collect(),
            protocol: config.protocol,
            connect_timeout: config.connect_timeout,
            idle_timeout: config.idle_timeout,
            max_idle_per_endpoint: config.max_idle_per_endpoint,
            tls,
            tls_server_name,
        };
        let transport = make_transport(&transport_config).map_err(|e| e.context(&place))?;
        let name: Arc<str> = config.name.into();
        let mut endpoints = Endpoints::new(list, config.balance, config.cooloff);
        if let Some(check) = config.passive_health_check {
            check.validate().map_err(|e| e.context(&place))?;
            endpoints = endpoints.with_passive(Arc::clone(&name), check);
        }
        let endpoints = Arc::new(endpoints);
        let version = if config.protocol == Protocol::Http2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        if let Some(check) = &config.health_check {
            health_check::start(check, &name, &endpoints, version, &transport_config)
                .map_err(|e| e.context(&place))?;
        }

        Ok(Self {
            shared: Arc::new(Shared {
                name,
                endpoints,
                transport,
                version,
                retries: config.retries,
                retry_on_statuses: {
                    let mut statuses = config.retry_on_statuses.clone();
                    statuses.sort_unstable();
                    statuses.dedup();
                    statuses.into()
                },
                response_timeout: config.response_timeout,
                read_timeout: config.read_timeout,
                forwarded: config.forwarded,
            }),
            replay: None,
        })
    }

    /// Lets requests without a body be retried (see
    /// [`UpstreamConfig::retries`]).
    fn with_replay(mut self) -> Self
    where
        B: Body + Default,
    {
        if self.shared.retries > 0 && self.shared.endpoints.len() > 1 {
            self.replay = Some(Replay {
                is_empty: Body::is_end_stream,
                empty: B::default,
            });
        }
        self
    }

    /// The upstream's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Whether at least one endpoint is fit for readiness checks: of a
    /// weight above 0, not cooling off after a refused connection, and
    /// passing its [`HealthCheck`] when there is one. An endpoint out after failed
    /// responses ([`PassiveHealthCheck`]) still counts: an application
    /// error that makes every endpoint answer 500 is seen by every gateway
    /// instance, and failing them all would take the whole fleet away.
    #[must_use]
    pub fn is_healthy(&self) -> bool {
        self.shared.endpoints.any_ready()
    }

    /// Each endpoint (`scheme://host:port`) and whether requests may pick
    /// it (it passes its active check, is not cooling off and is not out
    /// after failed responses), in the configured order. An endpoint of
    /// weight 0 is reported by the same rule, though it gets no requests.
    pub fn endpoint_health(&self) -> impl Iterator<Item = (&str, bool)> + '_ {
        self.shared.endpoints.states()
    }

    /// Each endpoint's state, in the configured order: whether it is in,
    /// its active health check, how long it is still out, its requests in
    /// flight, its weight.
    #[must_use]
    pub fn endpoint_status(&self) -> Vec<EndpointStatus> {
        self.shared.endpoints.status()
    }

    /// How many endpoints requests may pick (see
    /// [`endpoint_health`](Self::endpoint_health)).
    #[must_use]
    pub fn healthy_endpoint_count(&self) -> usize {
        self.shared.endpoints.count_up()
    }

    /// The number of endpoints.
    #[must_use]
    pub fn endpoint_count(&self) -> usize {
        self.shared.endpoints.len()
    }
}

impl<B> TryFrom<UpstreamConfig> for Upstream<B>
where
    B: Body<Data = Bytes> + Default + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Error = ConfigError;

    fn try_from(config: UpstreamConfig) -> Result<Self, Self::Error> {
        let kind = config.pool;
        Self::from_parts(config, None, |c| Pool::new(kind, c)).map(Self::with_replay)
    }
}

impl<B, T> Clone for Upstream<B, T> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            replay: self.replay,
        }
    }
}

impl<B, T> fmt::Debug for Upstream<B, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.shared.name)
            .field("endpoints", &self.shared.endpoints)
            .field("version", &self.shared.version)
            .field("response_timeout", &self.shared.response_timeout)
            .field("forwarded", &self.shared.forwarded)
            .finish_non_exhaustive()
    }
}

impl<B, T> Service<Request<B>> for Upstream<B, T>
where
    B: Send + 'static,
    T: Transport<B>,
{
    type Response = Response<ResponseBody<IdleTimeout<T::Body>>>;
    type Error = Infallible;
    type Future = ResponseFuture<T::Future>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The pooled client has no back-pressure of its own: it connects on
        // demand.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        Shared::forward(&self.shared, req, self.replay)
    }
}

// === impl ResponseFuture ===

impl<F, RB> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RB>, TransportError>>,
{
    type Output = Result<Response<ResponseBody<IdleTimeout<RB>>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let result = loop {
            let result = match this.sent.as_mut().poll(cx) {
                Poll::Ready(result) => Some(result),
                Poll::Pending => match this.deadline.as_mut().as_pin_mut().map(|d| d.poll(cx)) {
                    Some(Poll::Ready(())) => None,
                    _ => return Poll::Pending,
                },
            };
            let sent = match (&result, this.state.as_mut()) {
                // A failed connection: the request never left, so it can go
                // to another endpoint.
                (Some(Err(err)), Some(pending)) if err.is_unsent() && pending.retry.is_some() => {
                    pending.in_flight.mark_down();
                    pending.retry(err, None)
                }
                // A status to retry on, for an idempotent request: the
                // response is dropped and the request goes to another
                // endpoint.
                (Some(Ok(res)), Some(pending)) if pending.retries_on(res.status()) => {
                    pending.retry(&res.status(), Some(res.status().as_u16()))
                }
                _ => None,
            };
            if let Some(sent) = sent {
                this.sent.set(sent);
                continue;
            }
            break result;
        };
        let Some(pending) = this.state.take() else {
            // Polled after completion.
            return Poll::Pending;
        };
        Poll::Ready(Ok(pending.finish(result)))
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

/// A transport error of these kinds happened while connecting (the
/// response timeout is applied here, not by the transport): the request
/// never left.
fn is_connect_failure(kind: UpstreamErrorKind) -> bool {
    matches!(
        kind,
        UpstreamErrorKind::Connect | UpstreamErrorKind::Timeout
    )
}

impl<F> Pending<F> {
    /// Whether a response of `status` sends the request to another
    /// endpoint.
    fn retries_on(&self, status: StatusCode) -> bool {
        // Set only beside `retry`.
        self.retry_on_statuses
            .as_ref()
            .is_some_and(|statuses| statuses.binary_search(&status.as_u16()).is_ok())
    }

    /// Sends the request to another endpoint after `why`, a failure of the
    /// endpoint now in flight (`status`, when it answered): the new
    /// transport future, or `None` when no try is left or no other
    /// endpoint is in.
    fn retry(&mut self, why: &dyn fmt::Display, status: Option<u16>) -> Option<F> {
        let (sent, in_flight) = (self.retry.as_mut()?)(self.in_flight.index())?;
        if status.is_some() {
            // Counted here: `finish` counts only the last response.
            self.in_flight.record(status);
        }
        tracing::debug!(
            upstream = %self.name,
            failed = %self.in_flight.endpoint().label,
            reason = %why,
            "retrying on another endpoint"
        );
        self.in_flight = in_flight;
        self.retried += 1;
        Some(sent)
    }

    /// The response to the client: the upstream's, cleaned, or a problem.
    /// `None` means the response timeout fired.
    fn finish<RB>(
        self,
        result: Option<Result<Response<RB>, TransportError>>,
    ) -> Response<ResponseBody<IdleTimeout<RB>>> {
        let endpoint = &self.in_flight.endpoint().label;
        if let Some((observed, sent_at)) = &self.observed {
            observed.set_upstream(
                UpstreamCall::new(
                    Arc::clone(&self.name),
                    Arc::clone(endpoint),
                    sent_at.elapsed(),
                    match &result {
                        Some(Ok(_)) => None,
                        Some(Err(err)) => Some(err.kind()),
                        None => Some(UpstreamErrorKind::Timeout),
                    },
                )
                .with_retries(self.retried),
            );
        }
        let error = match result {
            Some(Ok(mut res)) => {
                self.in_flight.record(Some(res.status().as_u16()));
                drop(self.in_flight);
                let upgrade = self.client_upgrade.is_some();
                let upgraded = res.status() == StatusCode::SWITCHING_PROTOCOLS;
                headers::remove_hop_by_hop(res.headers_mut(), upgraded && upgrade);
                if let (true, Some(client)) = (upgraded, self.client_upgrade) {
                    let guard = self.drain.as_ref().map(Drain::guard);
                    spawn_tunnel(client, hyper::upgrade::on(&mut res), self.name, guard);
                }
                let read_timeout = self.read_timeout;
                return res.map(|body| ResponseBody::inner(IdleTimeout::new(body, read_timeout)));
            }
            Some(Err(err)) => {
                let kind = err.kind();
                tracing::debug!(upstream = %self.name, %endpoint, error = %err, "upstream request failed");
                // A failed connection takes the endpoint out.
                if is_connect_failure(kind) {
                    self.in_flight.mark_down();
                } else {
                    self.in_flight.record(None);
                }
                kind
            }
            None => {
                tracing::debug!(upstream = %self.name, %endpoint, "upstream response timed out");
                self.in_flight.record(None);
                UpstreamErrorKind::Timeout
            }
        };
        let mut res = crate::error::problem(error, &self.name)
            .instance(self.client_path.path())
            .request_id(self.request_id.as_ref())
            .into_response();
        res.extensions_mut().insert(error);
        res
    }
}

impl<T> Shared<T> {
    fn forward<B>(
        this: &Arc<Self>,
        mut req: Request<B>,
        replay: Option<Replay<B>>,
    ) -> ResponseFuture<T::Future>
    where
        T: Transport<B>,
        B: 'static,
    {
        let upgrade = req.version() <= Version::HTTP_11 && headers::is_upgrade(req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let drain = if upgrade {
            req.extensions().get::<Drain>().cloned()
        } else {
            None
        };
        let request_id = req.extensions().get::<RequestId>().cloned();
        // The path the client sent, for the problem's `instance`: saved by
        // RewritePath when it changed it, else the request's own.
        let client_path = match req.extensions().get::<OriginalPath>() {
            Some(original) => original.0.clone(),
            None => req
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        };

        let observed = req
            .extensions()
            .get::<Observed>()
            .cloned()
            .map(|o| (o, tokio::time::Instant::now()));
        let in_flight = this.endpoints.pick();
        let host_is_endpoint = this.prepare(&mut req, in_flight.endpoint(), upgrade);
        let retry = replay
            .filter(|replay| (replay.is_empty)(req.body()))
            .map(|replay| this.retry(&req, replay, host_is_endpoint));
        let retry_on_statuses = (retry.is_some()
            && !this.retry_on_statuses.is_empty()
            && req.method().is_idempotent()
            && !upgrade)
            .then(|| Arc::clone(&this.retry_on_statuses));
        let sent = this.transport.send(in_flight.index(), req);
        ResponseFuture {
            sent,
            deadline: this.response_timeout.map(tokio::time::sleep),
            state: Some(Pending {
                name: Arc::clone(&this.name),
                observed,
                in_flight,
                client_upgrade,
                drain,
                request_id,
                client_path,
                read_timeout: this.read_timeout,
                retry,
                retry_on_statuses,
                retried: 0,
            }),
        }
    }

    /// Keeps what is needed to send `req` (prepared, without a body) again
    /// to other endpoints, at most `retries` times.
    fn retry<B>(
        self: &Arc<Self>,
        req: &Request<B>,
        replay: Replay<B>,
        host_is_endpoint: bool,
    ) -> Retry<T::Future>
    where
        T: Transport<B>,
        B: 'static,
    {
        let shared = Arc::clone(self);
        let (method, version, headers) =
            (req.method().clone(), req.version(), req.headers().clone());
        let path = path_of(req.uri());
        let mut left = self.retries;
        Box::new(move |failed| {
            left = left.checked_sub(1)?;
            if !shared.endpoints.any_up() {
                // Every endpoint is out (the failed one was just taken
                // out): `pick` would fall back to one of them.
                return None;
            }
            let in_flight = shared.endpoints.pick();
            if in_flight.index() == failed {
                return None;
            }
            let endpoint = in_flight.endpoint();
            let mut req = Request::new((replay.empty)());
            *req.method_mut() = method.clone();
            *req.version_mut() = version;
            *req.headers_mut() = headers.clone();
            if let Some(uri) = endpoint_uri(endpoint, path.clone()) {
                *req.uri_mut() = uri;
            }
            if host_is_endpoint {
                req.headers_mut().insert(HOST, endpoint.host.clone());
            }
            Some((shared.transport.send(in_flight.index(), req), in_flight))
        })
    }

    /// Points the request at `endpoint` and rewrites its headers. Returns
    /// whether `Host` is the endpoint's.
    fn prepare<B>(&self, req: &mut Request<B>, endpoint: &Endpoint, upgrade: bool) -> bool {
        // RFC 9112 §3.2.2: an absolute-form target's authority wins over
        // Host (and HTTP/2 carries it there).
        let client_host = req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .or_else(|| req.headers().get(HOST).cloned());
        let peer = req.extensions().get::<ConnectionInfo>().copied();
        // X-Forwarded-For and Forwarded list hops: each proxy appends the
        // address it got the request from, the peer. With trusted proxies in
        // front, the resolved ClientIp is further left in the chain already,
        // and appending it again would duplicate it. ClientIp is used only
        // when there is no connection (in-process calls).
        let client_ip = peer
            .map(|p| p.remote.ip())
            .or_else(|| req.extensions().get::<ClientIp>().map(|ip| ip.0));
        // From the connection only: a client can write any scheme into an
        // absolute-form target or HTTP/2's `:scheme`.
        let proto = if peer.is_some_and(|p| p.secure) {
            "https"
        } else {
            "http"
        };

        if let Some(uri) = endpoint_uri(endpoint, path_of(req.uri())) {
            *req.uri_mut() = uri;
        }
        *req.version_mut() = self.version;

        let fwd = self.forwarded;
        let headers = req.headers_mut();
        headers::remove_hop_by_hop(headers, upgrade);
        if fwd.x_forwarded_for
            && let Some(ip) = client_ip
        {
            headers::append_x_forwarded_for(headers, ip);
        }
        if fwd.x_forwarded_proto {
            headers.insert(headers::X_FORWARDED_PROTO, HeaderValue::from_static(proto));
        }
        if fwd.x_forwarded_host {
            match &client_host {
                Some(h) => headers.insert(headers::X_FORWARDED_HOST, h.clone()),
                None => headers.remove(headers::X_FORWARDED_HOST),
            };
        }
        if fwd.forwarded {
            headers::append_forwarded(headers, client_ip, proto, client_host.as_ref());
        }
        match (fwd.preserve_host, &client_host) {
            (true, Some(h)) => {
                headers.insert(HOST, h.clone());
                false
            }
            _ if self.version == Version::HTTP_2 => {
                // HTTP/2 carries the authority in the URI (`:authority`).
                headers.remove(HOST);
                false
            }
            _ => {
                headers.insert(HOST, endpoint.host.clone());
                true
            }
        }
    }
}

/// How long a closing tunnel may take to shut down its two sides.
const TUNNEL_SHUTDOWN: Duration = Duration::from_secs(1);

/// Copies bytes both ways between the client's and the upstream's upgraded
/// connections until either side closes, or, with a `guard`, until the
/// server's drain closes: then both sides are shut down (TLS
/// `close_notify`, TCP `FIN`) and dropped.
fn spawn_tunnel(
    client: OnUpgrade,
    upstream: OnUpgrade,
    name: Arc<str>,
    mut guard: Option<DrainGuard>,
) {
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(err) => {
                tracing::debug!(upstream = %name, error = %err, "upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        let closing = async {
            match &mut guard {
                Some(guard) => guard.closed().await,
                None => std::future::pending().await,
            }
        };
        let copied = tokio::select! {
            copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => Some(copied),
            () = closing => None,
        };
        match copied {
            Some(Ok(_)) => {}
            Some(Err(err)) => {
                tracing::debug!(upstream = %name, error = %err, "upgraded connection ended with an error");
            }
            None => {
                tracing::debug!(upstream = %name, "server drain over; closing the upgraded connection");
                let both = async {
                    let (c, u) = tokio::join!(client.shutdown(), upstream.shutdown());
                    if let Err(err) = c.and(u) {
                        tracing::debug!(upstream = %name, error = %err, "closing the upgraded connection failed");
                    }
                };
                if tokio::time::timeout(TUNNEL_SHUTDOWN, both).await.is_err() {
                    tracing::debug!(upstream = %name, "upgraded connection did not close in time; dropped");
                }
            }
        }
        // The guard goes last, once both sides are closed.
        drop(guard);
    });
}

/// The path and query of `uri`, `/` when it has none.
fn path_of(uri: &Uri) -> PathAndQuery {
    uri.path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"))
}

/// `path` on `endpoint`: `scheme://authority/path?query`.
fn endpoint_uri(endpoint: &Endpoint, path: PathAndQuery) -> Option<Uri> {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(endpoint.scheme.clone());
    parts.authority = Some(endpoint.authority.clone());
    parts.path_and_query = Some(path);
    Uri::from_parts(parts).ok()
}

fn parse_endpoint(url: &str) -> Result<(Scheme, Authority), ConfigError> {
    let bad = |why: &str| {
        ConfigError::new(
            ConfigErrorKind::InvalidUrl,
            format!("endpoint {url:?}: {why}"),
        )
    };
    let uri: Uri = url.parse().map_err(|_| bad("not a valid URL"))?;
    let scheme = uri
        .scheme()
        .cloned()
        .ok_or_else(|| bad("relative URL without a scheme"))?;
    if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
        return Err(bad("the scheme must be http or https"));
    }
    let authority = uri.authority().cloned().ok_or_else(|| bad("no host"))?;
    if authority.host().is_empty() {
        return Err(bad("no host"));
    }
    if authority.as_str().contains('@') {
        return Err(bad("user info is not allowed"));
    }
    if uri
        .path_and_query()
        .is_some_and(|pq| pq.as_str() != "/" && !pq.as_str().is_empty())
    {
        return Err(bad(
            "an endpoint has no path or query; rewrite the path on the route",
        ));
    }
    Ok((scheme, authority))
}

/// The TLS settings for `https://` endpoints, with aws-lc-rs: the CA
/// certificates of the PEM file `ca_file`, or the Mozilla roots
/// (webpki-roots); and the client certificate chain and key of the PEM
/// files `client`, when given.
fn client_tls_config(
    ca_file: Option<&Path>,
    client: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, ConfigError> {
    let tls = |message: String| ConfigError::new(ConfigErrorKind::Tls, message);
    let read = |key: &str, path: &Path| {
        std::fs::read(path).map_err(|e| tls(format!("{key} {}: {e}", path.display())))
    };
    let certs = |key: &str, path: &Path| -> Result<Vec<CertificateDer<'static>>, ConfigError> {
        let certs = CertificateDer::pem_slice_iter(&read(key, path)?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| tls(format!("{key} {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(tls(format!(
                "{key} {}: no CERTIFICATE in the file",
                path.display()
            )));
        }
        Ok(certs)
    };
    let roots = match ca_file {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certs("ca_file", path)? {
                roots
                    .add(cert)
                    .map_err(|e| tls(format!("ca_file {}: {e}", path.display())))?;
            }
            roots
        }
        None => rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(e.to_string()))?
        .with_root_certificates(roots);
    match client {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = certs("client_cert_file", cert)?;
            let key_der = PrivateKeyDer::from_pem_slice(&read("client_key_file", key)?)
                .map_err(|e| tls(format!("client_key_file {}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| tls(format!("client_cert_file {}: {e}", cert.display())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls_are_checked() {
        assert!(parse_endpoint("http://127.0.0.1:9000").is_ok());
        assert!(parse_endpoint("https://example.com/").is_ok());
        for bad in [
            "127.0.0.1:9000",
            "/relative",
            "ftp://example.com",
            "http://example.com/base",
            "http://example.com?q=1",
            "http://user:pw@example.com",
            "not a url",
        ] {
            let err = parse_endpoint(bad).unwrap_err();
            assert_eq!(err.kind(), ConfigErrorKind::InvalidUrl, "{bad}");
        }
    }

    #[test]
    fn zero_timeouts_are_refused() {
        let base = || Upstream::builder("u").endpoint("http://127.0.0.1:9");
        let err = base()
            .connect_timeout(Duration::ZERO)
            .build::<tollgate_core::body::BoxBody>()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "upstream \"u\": connect_timeout must be above 0"
        );
        let err = base()
            .response_timeout(Some(Duration::ZERO))
            .build::<tollgate_core::body::BoxBody>()
            .unwrap_err();
        assert_eq!(err.kind(), ConfigErrorKind::InvalidValue);
        assert!(
            base()
                .response_timeout(None)
                .build::<tollgate_core::body::BoxBody>()
                .is_ok()
        );
    }

    #[test]
    fn build_names_the_upstream_in_errors() {
        let err = Upstream::builder("users")
            .endpoint("users.internal")
            .build::<tollgate_core::body::BoxBody>()
            .unwrap_err();
        assert!(
            err.to_string().starts_with("upstream \"users\": endpoint"),
            "{err}"
        );
        let err = Upstream::builder("orders")
            .build::<tollgate_core::body::BoxBody>()
            .unwrap_err();
        assert_eq!(err.to_string(), "upstream \"orders\": has no endpoint");
    }

    #[test]
    fn weights_above_the_maximum_or_all_zero_are_refused() {
        let err = Upstream::builder("users")
            .endpoint("http://127.0.0.1:9001")
            .weighted_endpoint("http://127.0.0.1:9002", 1_001)
            .build::<tollgate_core::body::BoxBody>()
            .unwrap_err();
        assert_eq!(err.kind(), ConfigErrorKind::InvalidValue);
        assert_eq!(
            err.to_string(),
            "upstream \"users\": endpoint \"http://127.0.0.1:9002\": weight 1001 is above the maximum weight, 1000"
        );
        let err = Upstream::builder("users")
            .weighted_endpoint("http://127.0.0.1:9001", 0)
            .weighted_endpoint("http://127.0.0.1:9002", 0)
            .build::<tollgate_core::body::BoxBody>()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "upstream \"users\": every endpoint has weight 0: at least one must take traffic"
        );
        // The maximum itself, and weight 0 beside another, are fine.
        let users = Upstream::builder("users")
            .weighted_endpoint("http://127.0.0.1:9001", EndpointConfig::MAX_WEIGHT)
            .weighted_endpoint("http://127.0.0.1:9002", 0)
            .build::<tollgate_core::body::BoxBody>()
            .unwrap();
        let weights: Vec<u32> = users.endpoint_status().iter().map(|e| e.weight).collect();
        assert_eq!(weights, [1_000, 0]);
    }
}
