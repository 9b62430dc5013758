//! Graceful shutdown of `tollgate::serve`, mostly with TLS: an in-flight
//! HTTP/1.1 request, HTTP/2 streams on one connection and WebSocket tunnels
//! through the proxy are drained; new connections are refused; what is
//! left when the drain time ends is closed and the server future returns.
//!
//! Timeouts here are hang guards only (`within`): a bug fails a test
//! instead of hanging it. Nothing asserts on speed.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "helpers outside #[test] fns fail the calling test by panicking"
)]

use std::{future::Future, net::SocketAddr, time::Duration};

use axum::{Router, routing::get};
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode, Version, header::HOST};
use hyper::{
    body::Incoming,
    client::conn::{http1, http2},
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
};
use tokio_tungstenite::{WebSocketStream, tungstenite::Message};
use tollgate::{Gateway, Route, TlsConfig, Upstream};
use tollgate_tests::{body_bytes, empty, listener, spawn_raw_upstream, spawn_upstream};

#[expect(dead_code, reason = "shared with tls_server.rs, which uses all of it")]
#[path = "common/tls.rs"]
mod tls;
use tls::{Ca, ClientSetup, Dir};

/// How long any single wait may take before the test fails.
const SAFETY: Duration = Duration::from_secs(30);

/// A drain time no test reaches: the server must return because the work
/// is done, not because the time is up.
const LONG_DRAIN: Duration = Duration::from_secs(600);

/// A drain time that does run out, long enough for a few echoes first.
const SHORT_DRAIN: Duration = Duration::from_secs(5);

// === helpers ===

/// Awaits `fut`, failing the test if it takes longer than [`SAFETY`].
async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(SAFETY, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing happened within {SAFETY:?}"))
}

/// The body of `/slow`.
fn slow_body() -> String {
    "tollgate drains in-flight requests\n".repeat(4 * 1024)
}

/// An upstream whose `/slow` reports each request it receives on the
/// returned receiver, then answers [`slow_body`] once the sender is set to
/// `true`.
async fn slow_upstream() -> (SocketAddr, mpsc::UnboundedReceiver<()>, watch::Sender<bool>) {
    let (entered, entered_rx) = mpsc::unbounded_channel();
    let (release, release_rx) = watch::channel(false);
    let router = Router::new().route(
        "/slow",
        get(move || {
            let entered = entered.clone();
            let mut release = release_rx.clone();
            async move {
                let _ = entered.send(());
                let _ = release.wait_for(|go| *go).await;
                slow_body()
            }
        }),
    );
    (spawn_upstream(router).await, entered_rx, release)
}

/// A WebSocket echo upstream on raw TCP; the receiver gets a message each
/// time one of its connections has ended.
async fn ws_echo_upstream() -> (SocketAddr, mpsc::UnboundedReceiver<()>) {
    let (ended, ended_rx) = mpsc::unbounded_channel();
    let addr = spawn_raw_upstream(move |stream| {
        let ended = ended.clone();
        async move {
            if let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await {
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            }
            let _ = ended.send(());
        }
    })
    .await;
    (addr, ended_rx)
}

/// `/slow` to `app`, `/ws` to `ws`.
fn gateway(app: SocketAddr, ws: SocketAddr) -> Router {
    Gateway::builder()
        .upstream(Upstream::builder("app").endpoint(format!("http://{app}")))
        .upstream(Upstream::builder("ws").endpoint(format!("http://{ws}")))
        .route(Route::prefix("/slow").to("app"))
        .route(Route::prefix("/ws").to("ws"))
        .build()
        .unwrap()
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A gateway under `tollgate::serve`, with TLS (a `localhost` certificate
/// from a fresh CA) or without.
struct Served {
    addr: SocketAddr,
    tls: Option<(Ca, Dir)>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Served {
    async fn spawn(router: Router, drain: Duration, tls: bool) -> Self {
        let (listener, addr) = listener().await;
        let (tx, rx) = oneshot::channel::<()>();
        let serve = tollgate::serve(listener, router, async move {
            let _ = rx.await;
        })
        .drain_timeout(drain);
        let (serve, tls) = if tls {
            let dir = Dir::new();
            let ca = Ca::new("test CA");
            let (cert, key) = ca.server(&["localhost"]).write(&dir, "server", &ca);
            let config = TlsConfig::builder().certificate(cert, key).build().unwrap();
            (serve.tls(config), Some((ca, dir)))
        } else {
            (serve, None)
        };
        Self {
            addr,
            tls,
            shutdown: Some(tx),
            task: tokio::spawn(serve.into_future()),
        }
    }

    /// A new connection, with TLS and `alpn` when the gateway has TLS.
    async fn open(&self, alpn: &[&'static [u8]]) -> std::io::Result<Box<dyn Io>> {
        Ok(match &self.tls {
            Some((ca, _)) => Box::new(
                ClientSetup::trusting(ca)
                    .alpn(alpn)
                    .connect(self.addr, "localhost")
                    .await?,
            ),
            None => Box::new(TcpStream::connect(self.addr).await?),
        })
    }

    /// Begins the shutdown and waits until new connections are refused.
    async fn shut_down(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        within("new connections are refused", async {
            loop {
                match TcpStream::connect(self.addr).await {
                    Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused => break,
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
        .await;
    }

    /// Waits for the server future to return, and checks it returned `Ok`.
    async fn stopped(self) {
        within("the server returns", self.task)
            .await
            .expect("the server task panicked")
            .expect("the server failed");
    }
}

async fn echo<S: Io>(ws: &mut WebSocketStream<S>, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
    let echoed = within("echo", ws.next()).await.unwrap().unwrap();
    assert_eq!(echoed, Message::text(text));
}

/// A WebSocket through the gateway, over TLS (`wss`) or not.
async fn open_ws(served: &Served) -> WebSocketStream<Box<dyn Io>> {
    let io = served.open(&[b"http/1.1"]).await.unwrap();
    let scheme = if served.tls.is_some() { "wss" } else { "ws" };
    let url = format!("{scheme}://localhost:{}/ws", served.addr.port());
    let (ws, res) = within("handshake", tokio_tungstenite::client_async(url, io))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws
}

/// `GET /slow` on one new connection: `streams` concurrent HTTP/2 streams
/// with ALPN `h2`, one HTTP/1.1 request with `http/1.1`. Returns once the
/// upstream has received every request.
async fn slow_in_flight(
    served: &Served,
    entered: &mut mpsc::UnboundedReceiver<()>,
    alpn: &'static [u8],
    streams: usize,
) -> Vec<JoinHandle<hyper::Result<Response<Incoming>>>> {
    let io = TokioIo::new(served.open(&[alpn]).await.unwrap());
    let pending: Vec<_> = if alpn == b"h2" {
        let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await.unwrap();
        tokio::spawn(conn);
        (0..streams)
            .map(|_| {
                let mut sender = sender.clone();
                let req = Request::get("https://localhost/slow")
                    .body(empty())
                    .unwrap();
                tokio::spawn(async move { sender.send_request(req).await })
            })
            .collect()
    } else {
        assert_eq!(streams, 1, "HTTP/1.1 carries one request at a time");
        let (mut sender, conn) = http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        let req = Request::get("/slow")
            .header(HOST, "localhost")
            .body(empty())
            .unwrap();
        vec![tokio::spawn(async move { sender.send_request(req).await })]
    };
    for _ in 0..streams {
        within("the request reaches the upstream", entered.recv()).await;
    }
    pending
}

/// Every response is a 200 of `version` with the whole [`slow_body`].
async fn assert_complete(
    pending: Vec<JoinHandle<hyper::Result<Response<Incoming>>>>,
    version: Version,
) {
    for res in pending {
        let res = within("a response", res).await.unwrap().unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.version(), version);
        assert_eq!(body_bytes(res).await, slow_body());
    }
}

/// A TLS gateway with fresh upstreams and [`LONG_DRAIN`], and the
/// `entered` and `release` ends of its [`slow_upstream`].
async fn slow_tls_gateway() -> (Served, mpsc::UnboundedReceiver<()>, watch::Sender<bool>) {
    let (app, entered, release) = slow_upstream().await;
    let (ws, _) = ws_echo_upstream().await;
    let served = Served::spawn(gateway(app, ws), LONG_DRAIN, true).await;
    (served, entered, release)
}

// === tests ===

#[tokio::test]
async fn an_in_flight_http1_request_over_tls_completes() {
    let (mut served, mut entered, release) = slow_tls_gateway().await;
    let pending = slow_in_flight(&served, &mut entered, b"http/1.1", 1).await;

    served.shut_down().await;
    assert!(
        !served.task.is_finished(),
        "returned with a request in flight"
    );
    release.send_replace(true);
    assert_complete(pending, Version::HTTP_11).await;
    served.stopped().await;
}

#[tokio::test]
async fn http2_streams_in_flight_over_tls_all_complete() {
    let (mut served, mut entered, release) = slow_tls_gateway().await;
    let pending = slow_in_flight(&served, &mut entered, b"h2", 5).await;

    served.shut_down().await;
    release.send_replace(true);
    assert_complete(pending, Version::HTTP_2).await;
    served.stopped().await;
}

#[tokio::test]
async fn new_connections_are_refused_once_shutdown_begins() {
    let (mut served, mut entered, release) = slow_tls_gateway().await;
    // A request in flight keeps the server draining.
    let pending = slow_in_flight(&served, &mut entered, b"h2", 1).await;

    served.shut_down().await;
    for alpn in [&b"h2"[..], b"http/1.1"] {
        assert!(served.open(&[alpn]).await.is_err());
    }
    assert!(
        !served.task.is_finished(),
        "returned with a request in flight"
    );
    release.send_replace(true);
    assert_complete(pending, Version::HTTP_2).await;
    served.stopped().await;
}

/// Echoes before and during the drain, then the drain time runs out: the
/// client and the upstream both see the tunnel end, and the server returns.
async fn websocket_is_drained_then_closed(tls: bool) {
    let (app, _, _release) = slow_upstream().await;
    let (ws_addr, mut ended) = ws_echo_upstream().await;
    let mut served = Served::spawn(gateway(app, ws_addr), SHORT_DRAIN, tls).await;
    let mut ws = open_ws(&served).await;
    echo(&mut ws, "before the shutdown").await;

    served.shut_down().await;
    echo(&mut ws, "during the drain").await;
    echo(&mut ws, "still during the drain").await;
    assert!(!served.task.is_finished(), "returned with a tunnel open");

    // The tunnel carries bytes, not frames: the end is the end of the
    // stream, without a close frame.
    let next = within("the tunnel closes", ws.next()).await;
    assert!(matches!(next, None | Some(Err(_))), "{next:?}");
    within("the upstream sees the close", ended.recv()).await;
    served.stopped().await;
}

#[tokio::test]
async fn websocket_over_tls_echoes_during_the_drain_then_is_closed() {
    websocket_is_drained_then_closed(true).await;
}

#[tokio::test]
async fn websocket_over_plain_http_echoes_during_the_drain_then_is_closed() {
    websocket_is_drained_then_closed(false).await;
}

#[tokio::test]
async fn a_websocket_closed_during_the_drain_lets_the_server_return() {
    let (app, _, _release) = slow_upstream().await;
    let (ws_addr, mut ended) = ws_echo_upstream().await;
    let mut served = Served::spawn(gateway(app, ws_addr), LONG_DRAIN, true).await;
    let mut ws = open_ws(&served).await;

    served.shut_down().await;
    echo(&mut ws, "during the drain").await;
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = within("the close handshake", ws.next()).await {}
    drop(ws);
    within("the upstream sees the close", ended.recv()).await;
    // Far before the drain time: nothing is left to wait for.
    served.stopped().await;
}
