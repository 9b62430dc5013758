//! `Serve::max_requests_per_connection` (`[server]
//! max_requests_per_connection`): an HTTP/1.1 connection closes after its
//! last request, whose response says `Connection: close`; an HTTP/2
//! connection gets `GOAWAY` after its last stream; a WebSocket upgrade on
//! the last request still upgrades. `Serve::max_connection_age` (`[server]
//! max_connection_age`) does the same once a connection is that old.

#![expect(clippy::unwrap_used, reason = "test helpers outside #[test] fns")]

use std::{future::IntoFuture, net::SocketAddr, time::Duration};

use axum::{Router, routing::get};
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};
use tokio_tungstenite::tungstenite::Message;
use tollgate::{
    Gateway, Route, Upstream,
    config::{ConfigFile, Server},
};
use tollgate_tests::{config_head_with, listener, read_head, spawn_upstream};

/// Safety bound: a bug fails the test instead of hanging it.
const BOUND: Duration = Duration::from_secs(10);

/// An upstream that answers `GET /x` with `x`, and a gateway to it (and
/// `/ws` to `ws`, when given) limited to `requests` per connection.
async fn gateway(requests: usize, ws: Option<SocketAddr>) -> SocketAddr {
    let up = spawn_upstream(Router::new().route("/x", get(|| async { "x" }))).await;
    let mut builder = Gateway::builder()
        .upstream(Upstream::builder("up").endpoint(format!("http://{up}")))
        .route(Route::prefix("/x").to("up"));
    if let Some(ws) = ws {
        builder = builder
            .upstream(Upstream::builder("ws").endpoint(format!("http://{ws}")))
            .route(Route::prefix("/ws").to("ws"));
    }
    let (listener, addr) = listener().await;
    tokio::spawn(
        tollgate::serve(listener, builder.build().unwrap(), std::future::pending())
            .max_requests_per_connection(requests)
            .into_future(),
    );
    addr
}

const GET_X: &[u8] = b"GET /x HTTP/1.1\r\nHost: gw\r\n\r\n";

/// Sends `GET /x` on `stream` and reads the answer: its head, lower-cased.
async fn get_x(stream: &mut TcpStream) -> String {
    stream.write_all(GET_X).await.unwrap();
    let (head, rest) = timeout(BOUND, read_head(stream)).await.unwrap().unwrap();
    // The body is `x`, in the head's read or the next one.
    if rest.is_empty() {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        assert_eq!(&byte, b"x");
    } else {
        assert_eq!(rest, b"x");
    }
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    head.to_ascii_lowercase()
}

/// Whether the server closes `stream` (EOF or reset) within the bound.
async fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        timeout(BOUND, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn an_http1_connection_closes_after_its_last_request() {
    let addr = gateway(3, None).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    for _ in 0..2 {
        let head = get_x(&mut stream).await;
        assert!(!head.contains("\r\nconnection: close"), "{head}");
    }
    let head = get_x(&mut stream).await;
    assert!(head.contains("\r\nconnection: close"), "{head}");
    assert!(closed(&mut stream).await);

    // A new connection gets its own three.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = get_x(&mut stream).await;
    assert!(!head.contains("\r\nconnection: close"), "{head}");
}

/// `requests` times `GET /x` on one HTTP/2 connection to `addr`, each a
/// 200; then the connection must end (`GOAWAY`, then the close once its
/// streams are done). Returns the client, for what follows.
async fn http2_gets_then_goaway(
    addr: SocketAddr,
    requests: usize,
) -> h2::client::SendRequest<bytes::Bytes> {
    let io = TcpStream::connect(addr).await.unwrap();
    let (mut client, conn) = h2::client::handshake(io).await.unwrap();
    let conn = tokio::spawn(conn);
    for _ in 0..requests {
        client = client.ready().await.unwrap();
        let req = Request::get(format!("http://{addr}/x")).body(()).unwrap();
        let (response, _) = client.send_request(req, true).unwrap();
        let response = timeout(BOUND, response).await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    // `Err` here: the connection did not end in time.
    timeout(BOUND, conn).await.unwrap().unwrap().unwrap();
    client
}

#[tokio::test]
async fn an_http2_connection_gets_goaway_after_its_last_stream() {
    let addr = gateway(3, None).await;
    let client = http2_gets_then_goaway(addr, 3).await;
    let refused = async {
        let mut client = client.ready().await?;
        let req = Request::get(format!("http://{addr}/x")).body(()).unwrap();
        let (response, _) = client.send_request(req, true)?;
        response.await
    };
    assert!(timeout(BOUND, refused).await.unwrap().is_err());
}

/// A `101` is never turned into a close: the last request may upgrade.
#[tokio::test]
async fn a_websocket_upgrade_on_the_last_request_upgrades() {
    let ws = tollgate_tests::spawn_ws_echo().await;
    let addr = gateway(1, Some(ws)).await;
    let io = TcpStream::connect(addr).await.unwrap();
    let (mut ws, res) = timeout(
        BOUND,
        tokio_tungstenite::client_async(format!("ws://{addr}/ws"), io),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert!(
        res.headers()
            .get("connection")
            .is_some_and(|v| v != "close")
    );
    ws.send(Message::text("hi")).await.unwrap();
    let echoed = timeout(BOUND, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(echoed, Message::text("hi"));
}

/// A config-file gateway with these `[server]` keys, sending every path to
/// an upstream that answers `GET /x`.
async fn config_server(keys: &str) -> Server {
    let up = spawn_upstream(Router::new().route("/x", get(|| async { "x" }))).await;
    let mut text = config_head_with(keys, "u", &format!("http://{up}"));
    text.push_str("[[routes]]\nprefix = \"/\"\nto = \"u\"\n");
    Server::start(ConfigFile::parse(&text).unwrap())
        .await
        .unwrap()
}

/// `server.max_requests_per_connection` reaches the listener.
#[tokio::test]
async fn the_limit_comes_from_the_config() {
    let server = config_server("max_requests_per_connection = 2\n").await;
    let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
    let head = get_x(&mut stream).await;
    assert!(!head.contains("\r\nconnection: close"), "{head}");
    let head = get_x(&mut stream).await;
    assert!(head.contains("\r\nconnection: close"), "{head}");
    assert!(closed(&mut stream).await);
    server.shutdown().await.unwrap();
}

/// An upstream with `GET /x` (`x` at once) and `GET /slow` (`slow` after
/// 1.5 s), behind a gateway whose connections live at most a second.
async fn aged_gateway() -> SocketAddr {
    let up = spawn_upstream(Router::new().route("/x", get(|| async { "x" })).route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            "slow"
        }),
    ))
    .await;
    let router = Gateway::builder()
        .upstream(Upstream::builder("up").endpoint(format!("http://{up}")))
        .route(Route::prefix("/").to("up"))
        .build()
        .unwrap();
    let (listener, addr) = listener().await;
    tokio::spawn(
        tollgate::serve(listener, router, std::future::pending())
            .max_connection_age(Duration::from_secs(1))
            .into_future(),
    );
    addr
}

/// An HTTP/1.1 connection idle at its age is not closed unannounced (a
/// request on its way would meet the close): the next response says
/// `Connection: close`, and the connection closes after it.
#[tokio::test]
async fn past_its_age_the_next_http1_response_closes_the_connection() {
    let addr = aged_gateway().await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    assert_past_age_the_next_response_closes(&mut stream).await;
}

/// On `stream`, a young connection: `GET /x` keeps it open; after its age
/// (1 s), the next `GET /x` is answered with `Connection: close` and the
/// connection ends.
async fn assert_past_age_the_next_response_closes(stream: &mut TcpStream) {
    let head = get_x(stream).await;
    assert!(!head.contains("\r\nconnection: close"), "{head}");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let head = get_x(stream).await;
    assert!(head.contains("\r\nconnection: close"), "{head}");
    assert!(closed(stream).await);
}

/// A response made after the age says `Connection: close`, and the
/// connection closes after it.
#[tokio::test]
async fn a_response_made_after_the_age_closes_the_connection() {
    let addr = aged_gateway().await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = timeout(BOUND, read_head(&mut stream))
        .await
        .unwrap()
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("\r\nconnection: close"),
        "{head}"
    );
    assert!(closed(&mut stream).await);
}

#[tokio::test]
async fn an_http2_connection_gets_goaway_at_its_age() {
    let addr = aged_gateway().await;
    http2_gets_then_goaway(addr, 1).await;
}

/// `server.max_connection_age` reaches the listener.
#[tokio::test]
async fn the_age_comes_from_the_config() {
    let server = config_server("max_connection_age = \"1s\"\n").await;
    let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
    assert_past_age_the_next_response_closes(&mut stream).await;
    server.shutdown().await.unwrap();
}
