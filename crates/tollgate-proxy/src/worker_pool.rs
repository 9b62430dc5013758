//! [`WorkerPool`]: upstream connections held per endpoint, returned to the
//! pool by the response body itself, with no task or lookup per request.

use std::{
    collections::VecDeque,
    fmt,
    future::{Future, poll_fn},
    pin::Pin,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Waker},
};

use bytes::Bytes;
use http::{
    Request, Response, StatusCode, Uri,
    uri::{Authority, PathAndQuery, Scheme},
};
use http_body::{Body, Frame, SizeHint};
use hyper::{
    body::Incoming,
    client::conn::{http1, http2},
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use pin_project_lite::pin_project;
use rustls::pki_types::ServerName;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
    time::{Duration, Instant},
};
use tokio_rustls::TlsConnector;
use tollgate_core::{BoxError, ConfigError, ConfigErrorKind};

use crate::{
    error::{UpstreamErrorKind, classify_source},
    transport::{Transport, TransportConfig, TransportError},
    upstream::Protocol,
};

/// A connection pool that keeps upstream connections per endpoint and
/// reuses them without hyper-util's machinery: an HTTP/1.1 connection goes
/// back to its endpoint's idle list when the response body ends (the body
/// carries it), so there is no pool-key hashing and no task spawned per
/// request. HTTP/2 connections (prior knowledge, or `h2` by ALPN) are
/// shared by all requests to an endpoint.
///
/// Idle connections are closed once they have been idle for the idle
/// timeout: as connections come back to an endpoint, and by a task (one
/// per pool, spawned with the first request) that checks every idle
/// connection each half timeout, so an endpoint that no longer gets
/// requests keeps none open either.
///
/// Meant for one pool per worker thread (each worker builds its own
/// gateway, as the `proxy` example does), where the per-endpoint locks are
/// never contended; it is correct, only slower, when shared.
///
/// Select it with [`PoolKind::Worker`](crate::PoolKind::Worker).
pub struct WorkerPool<B> {
    shared: Arc<Shared<B>>,
}

struct Shared<B> {
    slots: Box<[Mutex<Slot<B>>]>,
    /// Whether the task that expires idle connections was spawned.
    expiring: AtomicBool,
    /// That task's waker, to end it with the pool.
    expirer: Mutex<Option<Waker>>,
    targets: Box<[Target]>,
    tls: TlsConnector,
    protocol: Protocol,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
}

struct Target {
    secure: bool,
    /// `host:port` to connect to.
    addr: Box<str>,
    server_name: Option<ServerName<'static>>,
}

struct Slot<B> {
    /// Oldest first: checkout takes the newest (warmest), expiry trims the
    /// oldest.
    idle: VecDeque<Idle<B>>,
    h2: Option<http2::SendRequest<B>>,
}

struct Idle<B> {
    sender: http1::SendRequest<B>,
    since: Instant,
}

enum Conn<B> {
    H1(http1::SendRequest<B>),
    H2(http2::SendRequest<B>),
}

pin_project! {
    /// The response body of [`WorkerPool`]: the upstream's body, which
    /// returns its HTTP/1.1 connection to the pool when it ends.
    pub struct PooledBody<B> {
        #[pin]
        inner: Incoming,
        give_back: Option<GiveBack<B>>,
    }
}

struct GiveBack<B> {
    shared: Arc<Shared<B>>,
    endpoint: usize,
    sender: http1::SendRequest<B>,
}

/// The response future of [`WorkerPool`].
pub type WorkerPoolFuture<B> =
    Pin<Box<dyn Future<Output = Result<Response<PooledBody<B>>, TransportError>> + Send>>;

// === impl WorkerPool ===

impl<B> WorkerPool<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    /// A pool for `config`'s endpoints.
    ///
    /// # Errors
    ///
    /// When an `https` endpoint's host is not a valid TLS server name.
    pub fn new(config: &TransportConfig) -> Result<Self, ConfigError> {
        let mut tls = (*config.tls).clone();
        tls.alpn_protocols = match config.protocol {
            Protocol::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Protocol::Http1 => vec![b"http/1.1".to_vec()],
            Protocol::Http2 => vec![b"h2".to_vec()],
        };
        let mut targets = Vec::with_capacity(config.endpoints.len());
        for (scheme, authority) in &config.endpoints {
            targets.push(target(scheme, authority, config.tls_server_name.as_ref())?);
        }
        let slots = targets
            .iter()
            .map(|_| {
                Mutex::new(Slot {
                    idle: VecDeque::new(),
                    h2: None,
                })
            })
            .collect();
        Ok(Self {
            shared: Arc::new(Shared {
                slots,
                expiring: AtomicBool::new(false),
                expirer: Mutex::new(None),
                targets: targets.into_boxed_slice(),
                tls: TlsConnector::from(Arc::new(tls)),
                protocol: config.protocol,
                connect_timeout: config.connect_timeout,
                idle_timeout: config.idle_timeout,
                max_idle: config.max_idle_per_endpoint,
            }),
        })
    }
}

fn target(
    scheme: &Scheme,
    authority: &Authority,
    server_name: Option<&ServerName<'static>>,
) -> Result<Target, ConfigError> {
    let secure = *scheme == Scheme::HTTPS;
    let port = authority
        .port_u16()
        .unwrap_or(if secure { 443 } else { 80 });
    let host = authority.host();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addr = if bare.contains(':') {
        format!("[{bare}]:{port}")
    } else {
        format!("{bare}:{port}")
    };
    let server_name = if !secure {
        None
    } else if let Some(name) = server_name {
        Some(name.clone())
    } else {
        Some(ServerName::try_from(bare.to_owned()).map_err(|_| {
            ConfigError::new(
                ConfigErrorKind::Tls,
                format!("{host:?} is not a valid TLS server name"),
            )
        })?)
    };
    Ok(Target {
        secure,
        addr: addr.into(),
        server_name,
    })
}

impl<B> Clone for WorkerPool<B> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<B> fmt::Debug for WorkerPool<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerPool")
            .field("endpoints", &self.shared.targets.len())
            .field("protocol", &self.shared.protocol)
            .finish_non_exhaustive()
    }
}

impl<B> Transport<B> for WorkerPool<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Body = PooledBody<B>;
    type Future = WorkerPoolFuture<B>;

    fn send(&self, endpoint: usize, req: Request<B>) -> Self::Future {
        Box::pin(Arc::clone(&self.shared).send(endpoint, req))
    }
}

// === impl Shared ===

impl<B> Shared<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    async fn send(
        self: Arc<Self>,
        endpoint: usize,
        mut req: Request<B>,
    ) -> Result<Response<PooledBody<B>>, TransportError> {
        // One retry, and only for a pooled connection that turned out to be
        // closed before the request went out on it.
        for _ in 0..2 {
            let (conn, reused) = match self.checkout(endpoint) {
                Some(conn) => (conn, true),
                // Boxed: connecting (TCP, TLS, handshake) is a large future
                // that would otherwise bloat every request's future.
                None => (Box::pin(self.connect(endpoint)).await?, false),
            };
            match conn {
                Conn::H2(mut sender) => {
                    return match sender.send_request(req).await {
                        Ok(res) => Ok(res.map(PooledBody::plain)),
                        Err(err) => Err(send_error(&err)),
                    };
                }
                Conn::H1(mut sender) => {
                    // HTTP/1.1 to an origin server takes the origin form
                    // (RFC 9112 §3.2.1); HTTP/2 keeps the absolute URI for
                    // its pseudo-headers, so it is restored for a retry.
                    let origin = origin_form(req.uri());
                    let absolute = std::mem::replace(req.uri_mut(), origin);
                    match sender.try_send_request(req).await {
                        Ok(res) => return Ok(self.wrap(endpoint, sender, res)),
                        Err(mut err) => match err.take_message() {
                            Some(mut unsent) if reused => {
                                *unsent.uri_mut() = absolute;
                                req = unsent;
                            }
                            _ => return Err(send_error(err.error())),
                        },
                    }
                }
            }
        }
        Err(TransportError::new(
            UpstreamErrorKind::Reset,
            "the upstream closed pooled connections before the request was sent",
        ))
    }

    /// An idle connection that is still open and ready, or the shared
    /// HTTP/2 connection.
    fn checkout(&self, endpoint: usize) -> Option<Conn<B>> {
        let mut slot = self.slots[endpoint].lock().ok()?;
        if let Some(h2) = &slot.h2 {
            if !h2.is_closed() {
                return Some(Conn::H2(h2.clone()));
            }
            slot.h2 = None;
        }
        let now = Instant::now();
        slot.expire(now, self.idle_timeout);
        let mut pending = Vec::new();
        let mut found = None;
        while let Some(idle) = slot.idle.pop_back() {
            if idle.sender.is_closed() {
                continue;
            }
            if idle.sender.is_ready() {
                found = Some(Conn::H1(idle.sender));
                break;
            }
            // Its last response just ended and hyper has not caught up yet.
            pending.push(idle);
        }
        slot.idle.extend(pending);
        found
    }

    fn wrap(
        self: &Arc<Self>,
        endpoint: usize,
        sender: http1::SendRequest<B>,
        res: Response<Incoming>,
    ) -> Response<PooledBody<B>> {
        // An upgraded connection belongs to the tunnel from now on.
        if res.status() == StatusCode::SWITCHING_PROTOCOLS {
            return res.map(PooledBody::plain);
        }
        self.expire_idle();
        let give_back = GiveBack {
            shared: Arc::clone(self),
            endpoint,
            sender,
        };
        if res.body().is_end_stream() {
            give_back.give_back();
            return res.map(PooledBody::plain);
        }
        res.map(|inner| PooledBody {
            inner,
            give_back: Some(give_back),
        })
    }

    /// Spawns, once per pool, the task that closes idle connections on
    /// time.
    fn expire_idle(self: &Arc<Self>) {
        if self.expiring.load(Ordering::Relaxed) || self.expiring.swap(true, Ordering::AcqRel) {
            return;
        }
        let period = (self.idle_timeout / 2).max(Duration::from_millis(100));
        tokio::spawn(expire_idle(Arc::downgrade(self), period));
    }

    async fn connect(&self, endpoint: usize) -> Result<Conn<B>, TransportError> {
        match tokio::time::timeout(self.connect_timeout, self.connect_now(endpoint)).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::unsent(
                UpstreamErrorKind::Timeout,
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
            )),
        }
    }

    async fn connect_now(&self, endpoint: usize) -> Result<Conn<B>, TransportError> {
        let target = &self.targets[endpoint];
        let connect_err = |e: std::io::Error| TransportError::unsent(UpstreamErrorKind::Connect, e);
        let tcp = TcpStream::connect(&*target.addr)
            .await
            .map_err(connect_err)?;
        tcp.set_nodelay(true).map_err(connect_err)?;
        match &target.server_name {
            Some(name) if target.secure => {
                let tls = self
                    .tls
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(connect_err)?;
                // With `Protocol::Http2` only h2 was offered; a server that
                // picks no ALPN protocol still gets h2, as with hyper-util.
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2")
                    || self.protocol == Protocol::Http2;
                self.handshake(endpoint, tls, h2).await
            }
            _ => {
                let h2 = self.protocol == Protocol::Http2;
                self.handshake(endpoint, tcp, h2).await
            }
        }
    }

    async fn handshake<T>(
        &self,
        endpoint: usize,
        io: T,
        h2: bool,
    ) -> Result<Conn<B>, TransportError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(io);
        let handshake_err = |e: hyper::Error| TransportError::unsent(UpstreamErrorKind::Connect, e);
        if h2 {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(handshake_err)?;
            tokio::spawn(async move {
                if let Err(err) = conn.await {
                    tracing::debug!(error = %err, "upstream h2 connection ended");
                }
            });
            if let Ok(mut slot) = self.slots[endpoint].lock() {
                slot.h2 = Some(sender.clone());
            }
            Ok(Conn::H2(sender))
        } else {
            let (sender, conn) = http1::handshake(io).await.map_err(handshake_err)?;
            tokio::spawn(async move {
                if let Err(err) = conn.with_upgrades().await {
                    tracing::debug!(error = %err, "upstream connection ended");
                }
            });
            Ok(Conn::H1(sender))
        }
    }
}

/// The path and query of `uri`, byte for byte.
fn origin_form(uri: &Uri) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = Some(
        uri.path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    );
    Uri::from_parts(parts).unwrap_or_default()
}

fn send_error(err: &hyper::Error) -> TransportError {
    let kind = classify_source(err);
    TransportError::new(kind, err.to_string())
}

/// Every `period`, drops the pool's connections idle past the idle timeout
/// (dropping the sender ends the connection's task, which closes it).
/// Holds the pool weakly, and ends with it.
async fn expire_idle<B>(shared: Weak<Shared<B>>, period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    poll_fn(move |cx| {
        let Some(shared) = shared.upgrade() else {
            return Poll::Ready(());
        };
        if let Ok(mut expirer) = shared.expirer.lock()
            && !expirer.as_ref().is_some_and(|w| w.will_wake(cx.waker()))
        {
            *expirer = Some(cx.waker().clone());
        }
        // Registers the next tick.
        while tick.poll_tick(cx).is_ready() {}
        let now = Instant::now();
        for slot in &shared.slots {
            if let Ok(mut slot) = slot.lock() {
                slot.expire(now, shared.idle_timeout);
            }
        }
        Poll::Pending
    })
    .await;
}

impl<B> Drop for Shared<B> {
    fn drop(&mut self) {
        // The expiring task, woken, finds the pool gone and ends.
        if let Some(waker) = self.expirer.get_mut().ok().and_then(Option::take) {
            waker.wake();
        }
    }
}

// === impl Slot ===

impl<B> Slot<B> {
    /// Drops the connections idle for longer than `timeout`, oldest first.
    fn expire(&mut self, now: Instant, timeout: Duration) {
        while self
            .idle
            .front()
            .is_some_and(|idle| idle.sender.is_closed() || now.duration_since(idle.since) > timeout)
        {
            self.idle.pop_front();
        }
    }
}

// === impl GiveBack ===

impl<B> GiveBack<B> {
    fn give_back(self) {
        if self.sender.is_closed() {
            return;
        }
        let Ok(mut slot) = self.shared.slots[self.endpoint].lock() else {
            return;
        };
        let now = Instant::now();
        // Connections idle past the timeout are closed as others come back,
        // so an endpoint in use never keeps stale ones.
        slot.expire(now, self.shared.idle_timeout);
        if slot.idle.len() < self.shared.max_idle {
            slot.idle.push_back(Idle {
                sender: self.sender,
                since: now,
            });
        }
    }
}

// === impl PooledBody ===

impl<B> PooledBody<B> {
    fn plain(inner: Incoming) -> Self {
        Self {
            inner,
            give_back: None,
        }
    }
}

impl<B> Body for PooledBody<B> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some(give_back) = this.give_back.take() {
                    give_back.give_back();
                }
            }
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => {
                if let Some(give_back) = this.give_back.take() {
                    give_back.give_back();
                }
            }
            // A broken body leaves the connection unusable: it is dropped.
            Poll::Ready(Some(Err(_))) => drop(this.give_back.take()),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> fmt::Debug for PooledBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledBody")
            .field("pooled", &self.give_back.is_some())
            .finish()
    }
}
