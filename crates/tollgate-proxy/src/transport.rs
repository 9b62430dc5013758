//! How an [`Upstream`](crate::Upstream) sends requests: a replaceable
//! connection pool.
//!
//! [`Transport`] is the seam. The default, [`HyperUtilPool`], is
//! hyper-util's pooled keep-alive client (the engine under reqwest): it
//! streams, exposes upgrades and adds no copies. A pool with other
//! trade-offs (per worker, per core, with its own reuse policy) plugs in
//! through [`UpstreamBuilder::build_with`](crate::UpstreamBuilder::build_with).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{
    Request, Response, Uri,
    uri::{Authority, Scheme},
};
use http_body::Body;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};
use pin_project_lite::pin_project;
use tokio::time::Duration;
use tollgate_core::BoxError;

use crate::{
    error::{UpstreamErrorKind, classify},
    upstream::Protocol,
};

/// Sends a request to the endpoint named by its absolute URI.
///
/// The request arrives ready to go: absolute URI (`scheme://authority/path`),
/// HTTP version chosen, headers rewritten. The transport owns connecting,
/// pooling and reuse, and reports failures as a [`TransportError`] of a
/// [`UpstreamErrorKind`], which the upstream turns into a 502 or 504.
pub trait Transport<B>: Clone + Send + Sync + 'static {
    /// The response body.
    type Body: Body<Data = Bytes> + Send + 'static;
    /// The response future.
    type Future: Future<Output = Result<Response<Self::Body>, TransportError>> + Send + 'static;

    /// Sends `req` to endpoint number `endpoint` of
    /// [`TransportConfig::endpoints`]; the request's URI names the same one.
    fn send(&self, endpoint: usize, req: Request<B>) -> Self::Future;
}

/// What a transport is built from: the connection settings of an upstream.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TransportConfig {
    /// The upstream's endpoints, in order.
    pub endpoints: Vec<(Scheme, Authority)>,
    /// The HTTP version to speak.
    pub protocol: Protocol,
    /// The longest a TCP connect plus TLS handshake may take.
    pub connect_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub idle_timeout: Duration,
    /// The most idle connections kept per endpoint.
    pub max_idle_per_endpoint: usize,
    /// The TLS settings for `https://` endpoints.
    pub tls: Arc<rustls::ClientConfig>,
    /// The TLS server name to send and verify instead of each endpoint's
    /// host, when one is set.
    pub tls_server_name: Option<rustls::pki_types::ServerName<'static>>,
}

/// A failed exchange with an upstream, classified.
#[derive(Debug)]
pub struct TransportError {
    kind: UpstreamErrorKind,
    source: BoxError,
    unsent: bool,
}

/// The default transport: hyper-util's pooled keep-alive client behind
/// rustls (aws-lc-rs), one pool per upstream.
pub struct HyperUtilPool<B> {
    client: Client<ConnectTimeout<HttpsConnector<HttpConnector>>, B>,
}

/// Bounds a whole connect, TCP and TLS handshake, by a timeout.
///
/// hyper-util's `HttpConnector` can bound the TCP connect only; the TLS
/// handshake that hyper-rustls runs after it would otherwise be bounded by
/// nothing but the response timeout.
#[derive(Clone, Debug)]
struct ConnectTimeout<C> {
    inner: C,
    timeout: Duration,
}

pin_project! {
    /// The future of [`HyperUtilPool`].
    pub struct HyperUtilFuture {
        #[pin]
        inner: hyper_util::client::legacy::ResponseFuture,
    }
}

// === impl TransportError ===

impl TransportError {
    /// An error of `kind` caused by `source`.
    pub fn new(kind: UpstreamErrorKind, source: impl Into<BoxError>) -> Self {
        Self {
            kind,
            source: source.into(),
            unsent: false,
        }
    }

    /// An error of `kind` caused by `source` while connecting: the request
    /// was not written, so the upstream may send it to another endpoint
    /// (see [`UpstreamBuilder::retries`](crate::UpstreamBuilder::retries)).
    pub fn unsent(kind: UpstreamErrorKind, source: impl Into<BoxError>) -> Self {
        Self {
            unsent: true,
            ..Self::new(kind, source)
        }
    }

    /// Whether the request was not written: the error happened while
    /// connecting.
    #[must_use]
    pub fn is_unsent(&self) -> bool {
        self.unsent
    }

    /// The kind of failure.
    #[must_use]
    pub fn kind(&self) -> UpstreamErrorKind {
        self.kind
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} error: {}", self.kind, self.source)
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

// === impl HyperUtilPool ===

impl<B> HyperUtilPool<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    /// A pool with `config`'s settings.
    #[must_use]
    pub fn new(config: &TransportConfig) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let mut tls = (*config.tls).clone();
        // hyper-rustls sets ALPN from the protocol below and panics on a
        // config that already has some.
        tls.alpn_protocols.clear();
        let mut https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        if let Some(name) = &config.tls_server_name {
            https = https.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(
                name.clone(),
            ));
        }
        let https = match config.protocol {
            Protocol::Auto => https.enable_all_versions().wrap_connector(http),
            Protocol::Http1 => https.enable_http1().wrap_connector(http),
            Protocol::Http2 => https.enable_http2().wrap_connector(http),
        };
        let connector = ConnectTimeout {
            inner: https,
            timeout: config.connect_timeout,
        };

        let mut client = Client::builder(TokioExecutor::new());
        client
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(config.idle_timeout)
            .pool_max_idle_per_host(config.max_idle_per_endpoint)
            .http2_only(config.protocol == Protocol::Http2)
            // A pooled connection that the upstream closed before the
            // request went out is retried on a fresh one.
            .retry_canceled_requests(true)
            // The upstream sets Host itself, from a value computed once.
            .set_host(false);
        Self {
            client: client.build(connector),
        }
    }
}

impl<B> Clone for HyperUtilPool<B> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
        }
    }
}

impl<B> fmt::Debug for HyperUtilPool<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HyperUtilPool").finish_non_exhaustive()
    }
}

impl<B> Transport<B> for HyperUtilPool<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Body = Incoming;
    type Future = HyperUtilFuture;

    fn send(&self, _endpoint: usize, req: Request<B>) -> Self::Future {
        HyperUtilFuture {
            inner: self.client.request(req),
        }
    }
}

impl Future for HyperUtilFuture {
    type Output = Result<Response<Incoming>, TransportError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx).map_err(|err| {
            let kind = classify(&err);
            if err.is_connect() {
                TransportError::unsent(kind, err)
            } else {
                TransportError::new(kind, err)
            }
        })
    }
}

impl fmt::Debug for HyperUtilFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HyperUtilFuture")
    }
}

// === impl ConnectTimeout ===

impl<C> tower::Service<Uri> for ConnectTimeout<C>
where
    C: tower::Service<Uri> + Send + 'static,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let connecting = self.inner.call(dst);
        let timeout = self.timeout;
        // Boxed: hyper-util needs an Unpin future, and connects are rare.
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(result) => result.map_err(Into::into),
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                )
                .into()),
            }
        })
    }
}

/// Which connection pool an upstream uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum PoolKind {
    /// hyper-util's pooled client ([`HyperUtilPool`]). The default.
    #[default]
    HyperUtil,
    /// Connections held per endpoint and returned by the response body
    /// ([`WorkerPool`](crate::WorkerPool)); made for one gateway per
    /// worker thread.
    Worker,
}

/// The transport an [`Upstream`](crate::Upstream) uses unless told
/// otherwise: the pool its [`PoolKind`] names.
pub enum Pool<B> {
    /// hyper-util's pooled client.
    HyperUtil(Box<HyperUtilPool<B>>),
    /// The per-worker pool.
    Worker(crate::WorkerPool<B>),
}

pin_project! {
    /// The response body of [`Pool`].
    pub struct PoolBody<B> {
        #[pin]
        kind: PoolBodyKind<B>,
    }
}

pin_project! {
    #[project = PoolBodyProj]
    enum PoolBodyKind<B> {
        HyperUtil { #[pin] body: Incoming },
        Worker { #[pin] body: crate::worker_pool::PooledBody<B> },
    }
}

pin_project! {
    /// The response future of [`Pool`].
    pub struct PoolFuture<B> {
        #[pin]
        kind: PoolFutureKind<B>,
    }
}

pin_project! {
    #[project = PoolFutureProj]
    enum PoolFutureKind<B> {
        HyperUtil { #[pin] inner: HyperUtilFuture },
        Worker { #[pin] inner: crate::worker_pool::WorkerPoolFuture<B> },
    }
}

impl<B> Future for PoolFuture<B> {
    type Output = Result<Response<PoolBody<B>>, TransportError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            PoolFutureProj::HyperUtil { inner } => inner.poll(cx).map(|r| {
                r.map(|res| {
                    res.map(|body| PoolBody {
                        kind: PoolBodyKind::HyperUtil { body },
                    })
                })
            }),
            PoolFutureProj::Worker { inner } => inner.poll(cx).map(|r| {
                r.map(|res| {
                    res.map(|body| PoolBody {
                        kind: PoolBodyKind::Worker { body },
                    })
                })
            }),
        }
    }
}

impl<B> fmt::Debug for PoolFuture<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PoolFuture")
    }
}

impl<B> Pool<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    /// The pool of `kind` for `config`.
    ///
    /// # Errors
    ///
    /// As [`WorkerPool::new`](crate::WorkerPool::new).
    pub fn new(
        kind: PoolKind,
        config: &TransportConfig,
    ) -> Result<Self, tollgate_core::ConfigError> {
        Ok(match kind {
            PoolKind::HyperUtil => Self::HyperUtil(Box::new(HyperUtilPool::new(config))),
            PoolKind::Worker => Self::Worker(crate::WorkerPool::new(config)?),
        })
    }
}

impl<B> Clone for Pool<B> {
    fn clone(&self) -> Self {
        match self {
            Self::HyperUtil(p) => Self::HyperUtil(p.clone()),
            Self::Worker(p) => Self::Worker(p.clone()),
        }
    }
}

impl<B> fmt::Debug for Pool<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HyperUtil(p) => p.fmt(f),
            Self::Worker(p) => p.fmt(f),
        }
    }
}

impl<B> Transport<B> for Pool<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Body = PoolBody<B>;
    type Future = PoolFuture<B>;

    fn send(&self, endpoint: usize, req: Request<B>) -> Self::Future {
        let kind = match self {
            Self::HyperUtil(p) => PoolFutureKind::HyperUtil {
                inner: p.send(endpoint, req),
            },
            Self::Worker(p) => PoolFutureKind::Worker {
                inner: p.send(endpoint, req),
            },
        };
        PoolFuture { kind }
    }
}

impl<B> Body for PoolBody<B> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        match self.project().kind.project() {
            PoolBodyProj::HyperUtil { body } => body.poll_frame(cx),
            PoolBodyProj::Worker { body } => body.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            PoolBodyKind::HyperUtil { body } => body.is_end_stream(),
            PoolBodyKind::Worker { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match &self.kind {
            PoolBodyKind::HyperUtil { body } => body.size_hint(),
            PoolBodyKind::Worker { body } => body.size_hint(),
        }
    }
}

impl<B> fmt::Debug for PoolBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            PoolBodyKind::HyperUtil { .. } => f.write_str("PoolBody::HyperUtil"),
            PoolBodyKind::Worker { body } => body.fmt(f),
        }
    }
}
