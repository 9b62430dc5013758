//! Shared helpers for the cross-crate integration tests: real servers on
//! 127.0.0.1:0 and real clients.
//!
//! Every helper binds 127.0.0.1 only.

#![expect(
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the calling test by panicking, with a message"
)]

pub mod auth_support;
pub mod backend_support;
pub mod observe_support;
pub mod redis_support;

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use axum::{Json, Router, body::Body, extract::Request};
use bytes::Bytes;
use http::{HeaderMap, Response};
use http_body_util::BodyExt;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tollgate::core::body::BoxBody;

/// A client body: anything boxed.
pub type ClientBody = BoxBody;

/// Binds a listener on 127.0.0.1 with an OS-chosen port.
pub async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local_addr");
    (listener, addr)
}

/// Serves `router` (an upstream service) on 127.0.0.1:0 with `axum::serve`.
pub async fn spawn_upstream(router: Router) -> SocketAddr {
    let (listener, addr) = listener().await;
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// An upstream that answers every request with a JSON echo of what it got:
/// `{"method", "uri", "version", "headers": {name: [values]}, "body"}`.
pub fn echo_router() -> Router {
    Router::new().fallback(|req: Request| async move {
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Json(json!({
            "method": parts.method.as_str(),
            "uri": parts.uri.to_string(),
            "version": format!("{:?}", parts.version),
            "headers": headers_json(&parts.headers),
            "body": String::from_utf8_lossy(&body),
        }))
    })
}

/// Headers as `{name: [values...]}`.
pub fn headers_json(headers: &HeaderMap) -> Value {
    let mut map = serde_json::Map::new();
    for name in headers.keys() {
        let values: Vec<Value> = headers
            .get_all(name)
            .iter()
            .map(|v| Value::from(String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        map.insert(name.as_str().to_owned(), Value::Array(values));
    }
    Value::Object(map)
}

/// A gateway running under `tollgate::serve` on 127.0.0.1:0.
#[derive(Debug)]
pub struct RunningGateway {
    /// Where it listens.
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    /// The server task; resolves when the server has drained.
    pub task: JoinHandle<std::io::Result<()>>,
}

impl RunningGateway {
    /// `http://addr` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Begins the graceful shutdown.
    pub fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Runs `router` with `tollgate::serve` on 127.0.0.1:0, with `drain` as the
/// drain timeout.
pub async fn spawn_gateway_with_drain(router: Router, drain: Duration) -> RunningGateway {
    let (listener, addr) = listener().await;
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(
        tollgate::serve(listener, router, async move {
            let _ = rx.await;
        })
        .drain_timeout(drain)
        .into_future(),
    );
    RunningGateway {
        addr,
        shutdown: Some(tx),
        task,
    }
}

/// Runs `router` with `tollgate::serve` on 127.0.0.1:0.
pub async fn spawn_gateway(router: Router) -> RunningGateway {
    spawn_gateway_with_drain(router, Duration::from_secs(5)).await
}

/// An HTTP/1.1 client (hyper-util's pooled client).
pub fn client() -> Client<HttpConnector, ClientBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2 prior-knowledge (h2c) client.
pub fn h2_client() -> Client<HttpConnector, ClientBody> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// A body of fixed bytes.
pub fn full(bytes: impl Into<Bytes>) -> ClientBody {
    BoxBody::new(http_body_util::Full::new(bytes.into()))
}

/// An empty body.
pub fn empty() -> ClientBody {
    BoxBody::empty()
}

/// Collects a response body into bytes.
pub async fn body_bytes<B>(res: Response<B>) -> Bytes
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    res.into_body()
        .collect()
        .await
        .expect("collect body")
        .to_bytes()
}

/// Collects a response body as JSON.
pub async fn body_json<B>(res: Response<B>) -> Value
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let bytes = body_bytes(res).await;
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
}

/// Asserts that `res` is a problem+json with `status` and `type`, and
/// returns the parsed problem.
pub async fn assert_problem<B>(res: Response<B>, status: u16, type_uri: &str) -> Value
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    assert_eq!(res.status().as_u16(), status, "status");
    assert_eq!(
        res.headers()
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or("")),
        Some("application/problem+json"),
        "content-type"
    );
    let json = body_json(res).await;
    assert_eq!(json["type"], type_uri, "{json}");
    assert_eq!(json["status"], status, "{json}");
    json
}

/// Never completes; for handlers that must hang.
pub async fn forever() -> Infallible {
    std::future::pending().await
}

/// A request body for axum handlers.
pub type AxumBody = Body;

/// An upstream that says who it is: `{"upstream": name, "method", "uri",
/// "headers"}`, so routing tests can tell which upstream a route reached.
pub fn named_echo_router(name: &str) -> Router {
    let name: std::sync::Arc<str> = name.into();
    Router::new().fallback(move |req: Request| async move {
        Json(json!({
            "upstream": &*name,
            "method": req.method().as_str(),
            "uri": req.uri().to_string(),
            "headers": headers_json(req.headers()),
        }))
    })
}

/// Writes `raw` bytes to `addr` over plain TCP, then reads until the server
/// closes the connection (bounded by 10 s) and returns what it sent.
///
/// For requests a well-behaved client cannot send (raw dot-segments,
/// malformed or partial heads); `raw` should carry `Connection: close`.
pub async fn raw_exchange(addr: SocketAddr, raw: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(raw).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .expect("the server did not close the connection within 10 s")
        .expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

/// Serves raw TCP on 127.0.0.1:0 and hands each accepted connection to
/// `handler`: an upstream that misbehaves in ways a real HTTP server will
/// not (garbage, early close, forbidden headers, silence).
pub async fn spawn_raw_upstream<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (listener, addr) = listener().await;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(handler(stream));
        }
    });
    addr
}

/// A WebSocket upstream on 127.0.0.1:0 that echoes text messages.
pub async fn spawn_ws_echo() -> SocketAddr {
    use futures_util::{SinkExt, StreamExt};
    spawn_raw_upstream(|stream| async move {
        if let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await {
            while let Some(Ok(msg)) = ws.next().await {
                if msg.is_text() && ws.send(msg).await.is_err() {
                    break;
                }
            }
        }
    })
    .await
}

/// Reads an HTTP/1 message head, through the blank line, off `stream`.
///
/// Returns the head (lossy UTF-8) and any bytes read past it, or `None` when
/// the stream ends, fails or sends more than 1 MiB before the blank line.
pub async fn read_head<S>(stream: &mut S) -> Option<(String, Vec<u8>)>
where
    S: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Some((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        if buf.len() > 1 << 20 {
            return None;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The head of a test gateway's config file: the public listener on
/// 127.0.0.1:0, no admin listener, and one upstream `name` at `endpoint`;
/// append routes to it.
pub fn config_head(name: &str, endpoint: &str) -> String {
    config_head_with("", name, endpoint)
}

/// [`config_head`] with more `[server]` keys (`server`, one per line).
pub fn config_head_with(server: &str, name: &str, endpoint: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{server}\n[admin]\nenabled = false\n\n\
         [[upstreams]]\nname = \"{name}\"\nendpoints = [\"{endpoint}\"]\n"
    )
}

/// Sends `GET url` with `headers` through [`client`] and returns the
/// status, the response headers and the body as JSON.
///
/// # Panics
///
/// When the request cannot be built or sent: a test failure.
#[expect(clippy::expect_used, reason = "a test helper: failing is the point")]
pub async fn get_json(
    url: String,
    headers: &[(&str, &str)],
) -> (http::StatusCode, HeaderMap, Value) {
    let mut req = Request::get(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let res = client()
        .request(req.body(empty()).expect("request"))
        .await
        .expect("response");
    let (status, headers) = (res.status(), res.headers().clone());
    (status, headers, body_json(res).await)
}

/// [`get_json`] of a request that must succeed: the response headers and
/// the body as JSON.
///
/// # Panics
///
/// When the status is not 200: a test failure.
pub async fn get_ok_json(url: String, headers: &[(&str, &str)]) -> (HeaderMap, Value) {
    let (status, headers, body) = get_json(url, headers).await;
    assert_eq!(status, http::StatusCode::OK, "{body}");
    (headers, body)
}

/// The error of a config file that must be refused, by the parser or by the
/// build: `line N: key: message`.
///
/// # Panics
///
/// When the config parses and builds: a test failure.
#[expect(clippy::expect_used, reason = "a test helper: failing is the point")]
pub fn config_error(text: &str) -> String {
    tollgate::config::ConfigFile::parse_with(text, &|_| None)
        .and_then(|f| f.build().map(|_| ()))
        .expect_err("the config must be refused")
        .to_string()
}

/// [`config_error`] of a file with one upstream `users` (endpoint
/// `http://127.0.0.1:1`) and the lines `keys` in its table.
pub fn upstream_config_error(keys: &str) -> String {
    config_error(&format!(
        "[[upstreams]]\nname = \"users\"\nendpoints = [\"http://127.0.0.1:1\"]\n{keys}\n"
    ))
}
