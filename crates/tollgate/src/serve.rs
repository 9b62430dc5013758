//! [`serve`]: run a router on a listener with HTTP/1.1 and HTTP/2 and a
//! graceful shutdown.

use std::{
    future::{Future, IntoFuture},
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use pin_project_lite::pin_project;
use std::convert::Infallible;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::watch,
    task::JoinSet,
};
use tollgate_core::{BoxError, body::ResponseBody};
use tollgate_core::{ConnectionInfo, Drain, Identity};
use tollgate_observe::{ConnectionError, ConnectionGuard, Metrics};
use tower::Service;

use crate::{
    Http2Settings,
    body_timeout::{self, Stall},
    head_deadline::{HeadClock, MarkEnd, Next},
    parse_error::ProblemOnParseError,
    proxy_protocol::ProxyProtocol,
    routing::CallNow,
    send_timeout::SendTimeout,
    tls::TlsConfig,
};

/// Serves `service` on `listener` until `shutdown` completes, then drains.
///
/// `service` is an `axum::Router` (what
/// [`build`](crate::GatewayBuilder::build) returns, merged with your
/// handlers or not), a [`GatewayService`](crate::GatewayService), or any
/// tower service of `Request<axum::body::Body>` that answers every request
/// itself.
///
/// Each connection speaks HTTP/1.1 or HTTP/2 (prior knowledge), chosen by
/// hyper-util's auto server; upgrades (WebSocket) are supported. Every
/// request carries a [`ConnectionInfo`] and the server's [`Drain`]. When
/// `shutdown` completes the listener is closed, in-flight requests,
/// HTTP/2 streams and upgraded connections get the drain time
/// ([`Serve::drain_timeout`], 30 s by default) to finish, and whatever is
/// left is then closed; see [`Serve::drain_timeout`].
///
/// ```no_run
/// # async fn run(router: axum::Router) -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// tollgate::serve(listener, router, tollgate::shutdown_signal())
///     .drain_timeout(std::time::Duration::from_secs(10))
///     .await
/// # }
/// ```
pub fn serve<S, B, F>(listener: TcpListener, service: S, shutdown: F) -> Serve<S, F>
where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    F: Future<Output = ()> + Send + 'static,
{
    Serve {
        listener,
        service,
        shutdown,
        drain_timeout: Duration::from_secs(30),
        timeouts: Timeouts {
            header_read: Duration::from_secs(30),
            body_read: Duration::from_secs(60),
            send: Duration::from_secs(60),
        },
        max_connections: DEFAULT_MAX_CONNECTIONS,
        header_limits: HeaderLimits::default(),
        max_requests: None,
        max_age: None,
        http2: Http2Settings::default(),
        tls: None,
        proxy_protocol: None,
        metrics: None,
    }
}

/// [`Serve::max_connections`]'s default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// The shortest [`Serve::max_connection_age`].
pub const MIN_CONNECTION_AGE: Duration = Duration::from_secs(1);

/// [`Serve::max_header_size`]'s default: 64 KiB.
pub const DEFAULT_MAX_HEADER_SIZE: usize = 64 * 1024;

/// [`Serve::max_headers`]'s default.
pub const DEFAULT_MAX_HEADERS: usize = 100;

/// The smallest [`Serve::max_header_size`]: hyper's smallest read buffer.
pub const MIN_MAX_HEADER_SIZE: usize = 8 * 1024;

/// An HTTP/1.1 listener's limits on request heads.
#[derive(Clone, Copy, Debug)]
struct HeaderLimits {
    size: usize,
    count: usize,
}

impl Default for HeaderLimits {
    fn default() -> Self {
        Self {
            size: DEFAULT_MAX_HEADER_SIZE,
            count: DEFAULT_MAX_HEADERS,
        }
    }
}

/// A server future; see [`serve`].
#[must_use = "a server does nothing unless awaited"]
pub struct Serve<S, F> {
    listener: TcpListener,
    service: S,
    shutdown: F,
    drain_timeout: Duration,
    timeouts: Timeouts,
    max_connections: usize,
    header_limits: HeaderLimits,
    max_requests: Option<usize>,
    max_age: Option<Duration>,
    http2: Http2Settings,
    tls: Option<TlsConfig>,
    proxy_protocol: Option<Arc<ProxyProtocol>>,
    metrics: Option<Metrics>,
}

impl<S, F> std::fmt::Debug for Serve<S, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serve")
            .field("listener", &self.listener)
            .field("drain_timeout", &self.drain_timeout)
            .field("timeouts", &self.timeouts)
            .field("max_connections", &self.max_connections)
            .field("header_limits", &self.header_limits)
            .field("max_requests", &self.max_requests)
            .field("max_age", &self.max_age)
            .field("http2", &self.http2)
            .field("tls", &self.tls)
            .field("proxy_protocol", &self.proxy_protocol)
            .finish_non_exhaustive()
    }
}

impl<S, F> Serve<S, F> {
    /// How long in-flight work may run after shutdown begins (default 30 s).
    ///
    /// When `shutdown` completes, the listener is closed at once: new
    /// connections are refused. Then, for up to this long:
    ///
    /// - an HTTP/1.1 request in progress runs to the end of its response,
    ///   after which the connection is closed (idle keep-alive connections
    ///   are closed at once);
    /// - an HTTP/2 connection gets a `GOAWAY`: streams already open run to
    ///   the end of their responses, new ones are refused;
    /// - an upgraded connection (a WebSocket) whose tunnel holds a
    ///   [`DrainGuard`](tollgate_core::DrainGuard) from the request's
    ///   [`Drain`] (the proxy's tunnels do) keeps passing data both ways;
    /// - TLS handshakes in progress finish and their connections are
    ///   treated as above.
    ///
    /// The future returns as soon as all of them are done. When the drain
    /// time is over first, the remaining connections are dropped (their
    /// sockets closed) and every tunnel is told to close: it shuts down both
    /// of its sides (TLS `close_notify` where there is TLS, then a TCP
    /// `FIN`), waiting at most a second for that. The future then returns.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// How long a client may take to send a request's headers (default
    /// 30 s), and how long a new connection may stay silent before its first
    /// request; slow or silent clients are disconnected. A PROXY protocol
    /// header and a TLS handshake, where there are, each get this long
    /// before it too.
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.header_read = timeout;
        self
    }

    /// How long a client may leave its request body waiting (default
    /// 60 s, nginx's `client_body_timeout`): while a layer or the proxy
    /// reads the body, each wait for the next data is bounded by it. A
    /// body that stalls that long ends in an error, the upstream request
    /// is abandoned, and the client gets a 408 problem (on HTTP/1.1 with
    /// `Connection: close`, as the rest of its body is still on the
    /// wire). Requests without a body are not affected.
    pub fn body_read_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.body_read = timeout;
        self
    }

    /// How long a write to the client may wait for the client to read
    /// (default 60 s, nginx's `send_timeout`): a client that stops reading
    /// a response (or, after an upgrade, its tunnel) for that long is
    /// disconnected, and the response's body, with its upstream request, is
    /// dropped. It bounds each wait, not the whole response.
    pub fn send_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.send = timeout;
        self
    }

    /// How many client connections may be open at once (default
    /// [`DEFAULT_MAX_CONNECTIONS`], 10,000): connections being served,
    /// TLS handshakes in progress, and upgraded connections (WebSockets)
    /// whose tunnel holds a [`DrainGuard`](tollgate_core::DrainGuard), as
    /// the proxy's tunnels do.
    ///
    /// At the limit the listener is not asked for more: new connections
    /// wait in the kernel's accept queue (the listener's backlog) until one
    /// of the open ones closes, and past the backlog the kernel stops
    /// answering their handshakes, so clients retry; this is nginx's
    /// `worker_connections` and HAProxy's `maxconn`. Keep it under the
    /// process's file-descriptor limit, leaving room for the upstream
    /// connections. A limit of 0 would serve nothing; it is taken as 1.
    pub fn max_connections(mut self, limit: usize) -> Self {
        self.max_connections = limit.max(1);
        self
    }

    /// How much of an HTTP/1.1 request head (request line and headers)
    /// the listener reads before refusing it, in bytes (default
    /// [`DEFAULT_MAX_HEADER_SIZE`], 64 KiB; Envoy's limit is 60 KiB).
    ///
    /// It is hyper's read-buffer limit: once hyper holds this much of a
    /// head without its end, the client gets a 431 problem and the
    /// connection is closed. hyper reads in blocks of up to this size and
    /// checks between reads, so a head that ends within the read that
    /// crosses the limit is still taken: heads up to twice the limit may
    /// pass, longer ones never do, and one connection never holds more
    /// than about twice it. With [`max_connections`](Self::max_connections)
    /// it bounds the memory a flood of large, slow heads can take: hyper's
    /// own default, about 400 KiB, allowed several GB at 10,000
    /// connections. It also caps how much response hyper queues for a
    /// slow client before waiting. At least [`MIN_MAX_HEADER_SIZE`]
    /// (8 KiB): a smaller value is taken as that. HTTP/2 has its own
    /// ([`Http2Settings::max_header_list_size`]).
    pub fn max_header_size(mut self, bytes: usize) -> Self {
        self.header_limits.size = bytes.max(MIN_MAX_HEADER_SIZE);
        self
    }

    /// How many headers an HTTP/1.1 request may have (default
    /// [`DEFAULT_MAX_HEADERS`], 100, hyper's); more get a 431 problem and
    /// the connection is closed. At least 1.
    pub fn max_headers(mut self, count: usize) -> Self {
        self.header_limits.count = count.max(1);
        self
    }

    /// How many requests one client connection may carry before it is
    /// closed gracefully (default: no limit; nginx's `keepalive_requests`,
    /// Envoy's `max_requests_per_connection`). Behind an L4 load balancer,
    /// keep-alive connections stay on the instance they first reached;
    /// recycling them lets clients spread again over instances added
    /// since. On HTTP/1.1 the last response carries `Connection: close`
    /// (except a `101` upgrade) and the connection closes after it; on
    /// HTTP/2 the connection gets `GOAWAY` once that many streams have
    /// opened, and the streams already open run to their end. At least 1.
    pub fn max_requests_per_connection(mut self, requests: usize) -> Self {
        self.max_requests = Some(requests.max(1));
        self
    }

    /// How long a client connection may stay open before it is closed
    /// gracefully (default: no limit; nginx's `keepalive_time`, Envoy's
    /// `max_connection_duration`, gRPC's `MAX_CONNECTION_AGE`). Request
    /// counts rarely recycle an HTTP/2 connection, which carries a
    /// client's every request; this does. Once the time is up, an
    /// HTTP/1.1 connection closes after the next response it makes, which
    /// says `Connection: close` (an idle one is left to its keep-alive
    /// end, the header read timeout, rather than closed unannounced), and
    /// an HTTP/2 connection gets `GOAWAY`, its open streams running to
    /// their end. The time counts from when the connection starts serving
    /// HTTP (after a PROXY header and a TLS handshake); upgraded
    /// connections (WebSockets) are not limited by it. At least
    /// [`MIN_CONNECTION_AGE`] (1 s): a shorter age would close new
    /// connections before their first request arrives; it is taken as
    /// that.
    pub fn max_connection_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age.max(MIN_CONNECTION_AGE));
        self
    }

    /// The HTTP/2 settings: concurrent streams, header list size, flow
    /// control windows, send buffer and keep-alive pings (default
    /// [`Http2Settings::default`]). Each value is taken into its valid
    /// range, given on its field.
    pub fn http2(mut self, settings: Http2Settings) -> Self {
        self.http2 = settings;
        self
    }

    /// Terminates TLS on every connection with `config`: certificates by
    /// SNI, ALPN `h2` and `http/1.1`, TLS 1.2 and 1.3, and client
    /// certificates when configured (see [`TlsConfig`]).
    ///
    /// Each handshake runs in its connection's task, bounded by the
    /// [header read timeout](Self::header_read_timeout), so a slow or silent
    /// client never holds up the accept loop. Requests carry a
    /// [`ConnectionInfo`] with `secure` set and, after a verified client
    /// certificate, an [`Identity`].
    pub fn tls(mut self, config: TlsConfig) -> Self {
        self.tls = Some(config);
        self
    }

    /// Counts the listener's connections in `metrics`:
    /// `tollgate_connections_open`, `tollgate_connections_total`, and
    /// `tollgate_connection_errors_total{reason}` for connections closed
    /// before a request (a bad PROXY header, a failed TLS handshake, no
    /// request head in time). `config::Server` passes the admin
    /// listener's metrics.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Reads HAProxy's PROXY protocol (version 1 or 2, as the peer sends
    /// it) at the start of every connection: for a listener behind an L4
    /// load balancer that does not keep client addresses.
    ///
    /// Every connection must begin with a header, within the
    /// [header read timeout](Self::header_read_timeout) and in at most
    /// [`MAX_PROXY_HEADER`](crate::MAX_PROXY_HEADER) bytes; one that does
    /// not is closed before anything else is read from it, and so is a
    /// connection from a peer outside
    /// [`ProxyProtocol::allow_from`]. The header's source address becomes
    /// [`ConnectionInfo::remote`] (the balancer's moves to
    /// [`ConnectionInfo::proxied_by`]): client IPs, rate-limit keys,
    /// `X-Forwarded-For` and the access log then name the client. A
    /// `LOCAL` header (the balancer's health check) or one without
    /// addresses leaves the peer's own. TLS, when there is TLS, begins
    /// after the header.
    pub fn proxy_protocol(mut self, proxy_protocol: ProxyProtocol) -> Self {
        self.proxy_protocol = Some(Arc::new(proxy_protocol));
        self
    }
}

impl<S, B, F> IntoFuture for Serve<S, F>
where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    F: Future<Output = ()> + Send + 'static,
{
    type Output = io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let Self {
                listener,
                service,
                shutdown,
                drain_timeout,
                timeouts,
                max_connections,
                header_limits,
                max_requests,
                max_age,
                http2,
                tls,
                proxy_protocol,
                metrics,
            } = self;
            let local = listener.local_addr().ok();
            let mut builder = auto::Builder::new(TokioExecutor::new());
            // No hyper header read timeout: each connection keeps its own
            // (`serve_connection`, `head_deadline`).
            builder
                .http1()
                .header_read_timeout(None)
                .keep_alive(true)
                .max_buf_size(header_limits.size)
                .max_headers(header_limits.count);
            http2.apply(&mut builder);
            // Every connection watches it, and shuts down gracefully once
            // it is true (or the server future is dropped).
            let (stop, _) = watch::channel(false);
            let drain = Drain::new();
            if let Some(metrics) = &metrics {
                metrics.track_tunnels(&drain);
            }
            let mut connections = JoinSet::new();
            let mut shutdown = std::pin::pin!(shutdown);
            let mut at_limit = false;

            loop {
                // Upgraded connections live in their tunnels' tasks, not in
                // `connections`; their guards count them.
                let open = connections.len() + drain.active();
                let full = open >= max_connections;
                if full && !at_limit {
                    tracing::warn!(
                        connections = open,
                        limit = max_connections,
                        "connection limit reached; new connections wait in the accept queue"
                    );
                }
                at_limit = full;
                let (stream, remote) = tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    Some(_) = connections.join_next(), if !connections.is_empty() => continue,
                    // A tunnel's end wakes nothing here: look again shortly.
                    () = tokio::time::sleep(LIMIT_RECHECK), if full => continue,
                    accepted = listener.accept(), if !full => match accepted {
                        Ok(conn) => conn,
                        Err(err) => {
                            // Out of file descriptors and the like: back off
                            // rather than spin.
                            tracing::warn!(error = %err, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                if let Err(err) = stream.set_nodelay(true) {
                    tracing::debug!(error = %err, "set_nodelay failed");
                }
                let mut info = ConnectionInfo::new(remote);
                if let Some(local) = local {
                    info = info.with_local(local);
                }
                let tracked = Tracked {
                    stop: stop.subscribe(),
                    drain: drain.clone(),
                    max_requests,
                    max_age,
                    open: metrics.as_ref().map(Metrics::connection_opened),
                    metrics: metrics.clone(),
                };
                // In the connection's own task: its PROXY header when the
                // listener reads them, then its TLS handshake when there is
                // TLS, then HTTP.
                let proxy_protocol = proxy_protocol.clone();
                let tls = tls.as_ref().map(TlsConfig::acceptor);
                let builder = builder.clone();
                let service = service.clone();
                let mut stream = stream;
                let mut stopped = tracked.stop.clone();
                connections.spawn(async move {
                    let info = match proxy_protocol {
                        Some(proxy_protocol) => {
                            // A header still on its way when the server
                            // stops is not waited for.
                            let accepted = tokio::select! {
                                info = proxy_protocol.accept(&mut stream, info, timeouts.header_read) => info,
                                _ = stopped.changed() => return,
                            };
                            let Some(info) = accepted else {
                                tracked.error(ConnectionError::ProxyProtocol);
                                return;
                            };
                            info
                        }
                        None => info,
                    };
                    match tls {
                        Some(acceptor) => {
                            crate::tls::accept(
                                acceptor, stream, info, builder, service, tracked, timeouts,
                            )
                            .await;
                        }
                        None => {
                            serve_connection(&builder, stream, info, None, service, tracked, timeouts)
                                .await;
                        }
                    }
                });
            }

            drop(listener);
            tracing::info!(
                connections = connections.len(),
                tunnels = drain.active(),
                "shutting down: draining"
            );
            stop.send_replace(true);
            // Connections first (TLS handshakes and PROXY headers in
            // progress included): a request still in flight may yet open a
            // tunnel, whose guard exists before its connection ends.
            let drained = tokio::time::timeout(drain_timeout, async {
                while connections.join_next().await.is_some() {}
                drain.idle().await;
            })
            .await;
            if drained.is_ok() {
                tracing::info!("drained");
            } else {
                tracing::warn!(
                    connections = connections.len(),
                    tunnels = drain.active(),
                    "drain time elapsed; closing the rest"
                );
            }
            drain.close();
            connections.shutdown().await;
            // Each tunnel bounds its own close; this bound only guards against
            // a guard held by work that never looks at it.
            if tokio::time::timeout(TUNNEL_CLOSE, drain.idle())
                .await
                .is_err()
            {
                tracing::warn!(
                    tunnels = drain.active(),
                    "tunnels still open after the close"
                );
            }
            Ok(())
        })
    }
}

/// How long, after the drain time, tunnels may take to close.
const TUNNEL_CLOSE: Duration = Duration::from_secs(2);

/// At the connection limit, how often the accept loop looks again for
/// tunnels that closed (a connection that closes wakes it at once).
const LIMIT_RECHECK: Duration = Duration::from_millis(50);

/// What ties one connection to the server's life: the server's stop (the
/// connection shuts down gracefully once it is true), the [`Drain`] for the
/// upgraded connections its requests open, and how many requests it may
/// carry and for how long ([`Serve::max_requests_per_connection`],
/// [`Serve::max_connection_age`]).
///
/// hyper-util's `GracefulShutdown` would watch the stop too, but it takes
/// the connection whole, and a connection that has used up its requests
/// must be able to shut itself down as well.
pub(crate) struct Tracked {
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) drain: Drain,
    pub(crate) max_requests: Option<usize>,
    pub(crate) max_age: Option<Duration>,
    /// Holds the connection in `tollgate_connections_open` (with
    /// [`Serve::metrics`]) until the connection's task ends.
    pub(crate) open: Option<ConnectionGuard>,
    pub(crate) metrics: Option<Metrics>,
}

impl Tracked {
    /// Counts the connection as closed before a request.
    pub(crate) fn error(&self, reason: ConnectionError) {
        if let Some(metrics) = &self.metrics {
            metrics.connection_error(reason);
        }
    }

    /// Counts a completed TLS handshake of `version`, and whether it
    /// resumed a session.
    pub(crate) fn tls_handshake(&self, version: &'static str, resumed: bool) {
        if let Some(metrics) = &self.metrics {
            metrics.tls_handshake(version);
            if resumed {
                metrics.tls_resumed_handshake(version);
            }
        }
    }
}

/// A listener's timeouts, as each connection keeps them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    /// [`Serve::header_read_timeout`]; also bounds a TLS handshake.
    pub(crate) header_read: Duration,
    /// [`Serve::body_read_timeout`].
    pub(crate) body_read: Duration,
    /// [`Serve::send_timeout`].
    pub(crate) send: Duration,
}

/// Serves one connection: the plain socket, or the decrypted TLS stream.
///
/// Every request gets `info`, the server's [`Drain`] and, when there is
/// one, `identity`.
pub(crate) fn serve_connection<I, S, B>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    info: ConnectionInfo,
    identity: Option<Identity>,
    service: S,
    tracked: Tracked,
    timeouts: Timeouts,
) -> impl Future<Output = ()> + Send + 'static
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let remote = info.remote;
    // The header read timeout (see `head_deadline`): each request head
    // must arrive within `header_read_timeout` of the connection becoming
    // idle, the auto server's protocol sniff included.
    let header_read_timeout = timeouts.header_read;
    let clock = Arc::new(HeadClock::new());
    let Tracked {
        mut stop,
        drain,
        max_requests,
        max_age,
        open,
        metrics,
    } = tracked;
    // Requests the connection may still carry; set to 0 when its age is up.
    let budget = (max_requests.is_some() || max_age.is_some())
        .then(|| Arc::new(AtomicUsize::new(max_requests.unwrap_or(usize::MAX))));
    let svc = ConnectionService {
        service,
        info,
        drain,
        identity,
        clock: Arc::clone(&clock),
        body_read_timeout: timeouts.body_read,
        budget: budget.clone(),
    };
    let conn = builder
        .serve_connection_with_upgrades(
            TokioIo::new(ProblemOnParseError::new(SendTimeout::new(
                io,
                timeouts.send,
            ))),
            svc,
        )
        .into_owned();
    async move {
        let _open = open;
        let mut conn = std::pin::pin!(conn);
        // Completes once the server stops (its one change: the receiver
        // was made before it), or its future is gone.
        let mut stopped = std::pin::pin!(async move {
            let _ = stop.changed().await;
        });
        // Told to shut down gracefully already: `stopped` is done with.
        let mut shutting_down = false;
        // `None` once it has fired; polled again only when it has (as
        // `timer` below), since the task's waker never changes.
        let mut age = max_age.map(|age| Box::pin(tokio::time::sleep(age)));
        let mut age_registered = false;
        // One timer for the connection's life; it looks at the clock only
        // when it fires, so a busy connection pays nothing per request
        // here.
        let mut timer = std::pin::pin!(tokio::time::sleep_until(
            clock.first_deadline(header_read_timeout)
        ));
        let mut timing = true;
        // Whether the timer holds this task's waker: then it is polled
        // again only once it has fired (`is_elapsed`, one atomic load),
        // not on every poll of the connection. The task, and so its
        // waker, is the same for the connection's life.
        let mut registered = false;
        let result = std::future::poll_fn(|cx| {
            loop {
                if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                    return Poll::Ready(Some(result));
                }
                if shutting_down {
                    break;
                }
                // Past its age, the connection's budget is spent: as nginx's
                // `keepalive_time` does, HTTP/1.1 closes after the next
                // response it makes, which says `Connection: close` (an
                // idle one is not closed unannounced, which a request
                // already on its way would meet); HTTP/2 says `GOAWAY`
                // just below.
                if let Some(timer) = age.as_mut()
                    && (!age_registered || timer.is_elapsed())
                {
                    age_registered = true;
                    if timer.as_mut().poll(cx).is_ready() {
                        tracing::debug!(%remote, "connection reached its maximum age");
                        if let Some(left) = &budget {
                            left.store(0, Ordering::Relaxed);
                        }
                        age = None;
                    }
                }
                // An HTTP/2 connection that has opened its last stream
                // (counted in `call`, within the poll above) or reached its
                // age says `GOAWAY`; HTTP/1.1 closes through its last
                // response's header.
                let spent = budget
                    .as_ref()
                    .is_some_and(|left| left.load(Ordering::Relaxed) == 0 && clock.is_http2());
                if !spent && stopped.as_mut().poll(cx).is_pending() {
                    break;
                }
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
                // Polled again, to act on it.
            }
            if timing && (!registered || timer.is_elapsed()) {
                registered = false;
                while timer.as_mut().poll(cx).is_ready() {
                    match clock.next(header_read_timeout) {
                        Next::At(deadline) => timer.as_mut().reset(deadline),
                        Next::TimedOut => return Poll::Ready(None),
                        Next::Stop => {
                            timing = false;
                            return Poll::Pending;
                        }
                    }
                }
                registered = true;
            }
            Poll::Pending
        })
        .await;
        match result {
            None => {
                tracing::debug!(%remote, "no request head within the header read timeout; closing");
                // An idle keep-alive connection closed is no error.
                if let Some(metrics) = metrics.as_ref().filter(|_| clock.unused()) {
                    metrics.connection_error(ConnectionError::HeaderTimeout);
                }
            }
            Some(Err(err)) => {
                tracing::debug!(error = %err, %remote, "connection ended with an error");
            }
            Some(Ok(())) => {}
        }
    }
}

/// A connection's service, as hyper calls it: every request gets the
/// connection's extensions and marks the connection's [`HeadClock`].
///
/// Written out rather than hyper-util's `TowerToHyperService` around
/// `map_request`/`map_response`: that clones the whole stack, closures'
/// captures included, and wraps the call in a `Oneshot` for every
/// request; this clones only `service` and calls it at once
/// ([`CallNow`]).
struct ConnectionService<S> {
    service: S,
    info: ConnectionInfo,
    drain: Drain,
    identity: Option<Identity>,
    clock: Arc<HeadClock>,
    body_read_timeout: Duration,
    /// Requests the connection may still carry, when it is limited.
    budget: Option<Arc<AtomicUsize>>,
}

impl<S, B> hyper::service::Service<Request<Incoming>> for ConnectionService<S>
where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible> + Clone,
{
    type Response = Response<MarkEnd<ResponseBody<B>>>;
    type Error = Infallible;
    type Future = ConnectionFuture<S>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        self.clock.head_read(req.version());
        // Counts the request; on HTTP/1.x its response looks at what is
        // left when it is ready (see `ConnectionFuture::budget`).
        let budget = self.budget.as_ref().and_then(|left| {
            let _ = left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            (req.version() < http::Version::HTTP_2).then(|| Arc::clone(left))
        });
        let extensions = req.extensions_mut();
        extensions.insert(self.info);
        extensions.insert(self.drain.clone());
        if let Some(identity) = &self.identity {
            extensions.insert(identity.clone());
        }
        let (req, stall) = body_timeout::watch(req, self.body_read_timeout);
        ConnectionFuture {
            call: CallNow::new(self.service.clone(), req),
            clock: Some(Arc::clone(&self.clock)),
            stall,
            budget,
        }
    }
}

pin_project! {
    /// The future of a [`ConnectionService`] call.
    struct ConnectionFuture<S>
    where
        S: Service<Request<Body>>,
    {
        #[pin]
        call: CallNow<S, Request<Body>>,
        // Handed to the response body; still here when the call is
        // dropped unfinished, which then ends the request on the clock.
        clock: Option<Arc<HeadClock>>,
        // Only for a request with a body.
        stall: Option<Stall>,
        // An HTTP/1.x connection's budget, when it has one: an answer made
        // once it is spent (the last request, or the connection's age up)
        // says `Connection: close`.
        budget: Option<Arc<AtomicUsize>>,
    }

    impl<S> PinnedDrop for ConnectionFuture<S>
    where
        S: Service<Request<Body>>,
    {
        fn drop(this: Pin<&mut Self>) {
            if let Some(clock) = this.project().clock.take() {
                clock.response_ended();
            }
        }
    }
}

impl<S, B> Future for ConnectionFuture<S>
where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible>,
{
    type Output = Result<Response<MarkEnd<ResponseBody<B>>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = ready!(this.call.poll(cx))?;
        // `None`: polled after completion, which hyper does not do.
        let Some(clock) = this.clock.take() else {
            return Poll::Pending;
        };
        let mut res = match this.stall.take() {
            Some(stall) => stall.answer(res),
            None => res.map(ResponseBody::inner),
        };
        let last = this
            .budget
            .as_ref()
            .is_some_and(|left| left.load(Ordering::Relaxed) == 0);
        if last && res.status() != http::StatusCode::SWITCHING_PROTOCOLS {
            res.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
        Poll::Ready(Ok(res.map(|body| MarkEnd::new(body, clock))))
    }
}

/// Completes on Ctrl-C or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use tokio::time::Instant;

    use super::*;

    const T: Duration = Duration::from_millis(300);

    /// A request dropped before its response (its connection closing under
    /// it) ends on the clock too: the connection is idle again, and its
    /// next head has the whole timeout from then.
    #[tokio::test(start_paused = true)]
    async fn a_request_dropped_unanswered_ends_on_the_clock() {
        let clock = Arc::new(HeadClock::new());
        let never = tower::service_fn(|_: Request<Body>| {
            std::future::pending::<Result<Response<Body>, Infallible>>()
        });
        clock.head_read(http::Version::HTTP_11);
        let mut call = Box::pin(ConnectionFuture {
            call: CallNow::new(never, Request::new(Body::empty())),
            clock: Some(Arc::clone(&clock)),
            stall: None,
            budget: None,
        });
        let mut cx = Context::from_waker(Waker::noop());
        assert!(call.as_mut().poll(&mut cx).is_pending());
        tokio::time::advance(T * 10).await;
        // In flight: never timed out.
        assert_eq!(clock.next(T), Next::At(Instant::now() + T));

        drop(call);
        let dropped = Instant::now();
        assert_eq!(clock.next(T), Next::At(dropped + T));
        tokio::time::advance(T).await;
        assert_eq!(clock.next(T), Next::TimedOut);
    }
}
