//! The data plane end to end: real upstreams, a real gateway under
//! `tollgate::serve` and real clients, all on 127.0.0.1.
//!
//! Timeouts here are safety bounds only (`within`): a bug fails a test
//! instead of hanging it. Nothing asserts on speed.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "helpers outside #[test] fns fail the calling test by panicking"
)]

use std::{
    collections::{BTreeSet, HashMap},
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{Router, body::Body, extract::Request};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt, stream};
use http::{Method, StatusCode, header::HOST};
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::{Notify, mpsc},
};
use tokio_tungstenite::tungstenite::{Message, handshake::derive_accept_key, protocol::Role};
use tollgate::{
    Balance, Gateway, Protocol, Route, Upstream, UpstreamBuilder,
    core::{
        body::BoxBody,
        problem::{BAD_GATEWAY, GATEWAY_TIMEOUT, UPSTREAM_UNAVAILABLE},
    },
    proxy::ForwardedHeaders,
};
use tollgate_tests::{
    RunningGateway, assert_problem, body_bytes, body_json, client, echo_router, empty, full,
    listener, named_echo_router, read_head, spawn_gateway, spawn_raw_upstream, spawn_upstream,
};

/// How long any single wait may take before the test fails.
const SAFETY: Duration = Duration::from_secs(10);

// ===== helpers =====

/// Awaits `fut`, failing the test if it takes longer than [`SAFETY`].
async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(SAFETY, fut).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: nothing happened within {SAFETY:?}"),
    }
}

/// A builder for an upstream on the pool under test.
fn pooled(name: &str) -> UpstreamBuilder {
    Upstream::builder(name).pool(super::POOL)
}

fn upstream(name: &str, addr: SocketAddr) -> UpstreamBuilder {
    pooled(name).endpoint(format!("http://{addr}"))
}

/// A gateway sending every path to `upstream` (which must be called "up").
async fn gateway_to(upstream: UpstreamBuilder) -> RunningGateway {
    let router = Gateway::builder()
        .upstream(upstream)
        .route(Route::prefix("/").to("up"))
        .build()
        .unwrap();
    spawn_gateway(router).await
}

async fn get(gw: &RunningGateway, path: &str) -> http::Response<Incoming> {
    let req = http::Request::get(gw.url(path)).body(empty()).unwrap();
    within(&format!("GET {path}"), client().request(req))
        .await
        .unwrap()
}

/// Lower-case names and values of a raw HTTP/1 head, without the start line.
fn head_fields(head: &str) -> Vec<(String, String)> {
    head.split("\r\n")
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (name, value) = l.split_once(':').unwrap_or((l, ""));
            (name.trim().to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect()
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Writes `request` on `stream` and reads one response with a
/// Content-Length body: (head, body).
async fn raw_roundtrip(stream: &mut TcpStream, request: &[u8]) -> (String, Vec<u8>) {
    stream.write_all(request).await.unwrap();
    let (head, mut body) = within("response head", read_head(stream))
        .await
        .expect("a response head");
    let len: usize = field(&head_fields(&head), "content-length")
        .expect("a content-length")
        .parse()
        .unwrap();
    while body.len() < len {
        let mut chunk = [0u8; 4096];
        let n = within("response body", stream.read(&mut chunk))
            .await
            .unwrap();
        assert!(n > 0, "EOF inside the body");
        body.extend_from_slice(&chunk[..n]);
    }
    (head, body)
}

/// A raw upstream answering every request on a connection with `response`,
/// keeping the connection until the gateway closes it.
async fn raw_upstream_answering(response: &'static [u8]) -> SocketAddr {
    spawn_raw_upstream(move |mut stream| async move {
        while read_head(&mut stream).await.is_some() {
            if stream.write_all(response).await.is_err() {
                return;
            }
        }
    })
    .await
}

/// The header names an echo upstream saw.
fn header_names(echo: &Value) -> BTreeSet<String> {
    echo["headers"]
        .as_object()
        .expect("headers")
        .keys()
        .cloned()
        .collect()
}

/// A frame-by-frame body from a channel.
fn channel_body(rx: mpsc::Receiver<Bytes>) -> BoxBody {
    let frames = stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    BoxBody::new(StreamBody::new(frames))
}

/// Reads data frames off `body` until `want` bytes have arrived.
async fn read_exactly<B>(body: &mut B, want: usize) -> Vec<u8>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    let mut got = Vec::new();
    while got.len() < want {
        let frame = body
            .frame()
            .await
            .expect("the body ended early")
            .expect("body error");
        if let Ok(data) = frame.into_data() {
            got.extend_from_slice(&data);
        }
    }
    got
}

// ===== 1. hop-by-hop headers =====

#[tokio::test]
async fn hop_by_hop_request_headers_are_removed() {
    let up = spawn_upstream(echo_router()).await;
    let gw = gateway_to(upstream("up", up)).await;

    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    let (head, body) = raw_roundtrip(
        &mut stream,
        b"GET /hop HTTP/1.1\r\n\
          Host: gw.example\r\n\
          Connection: keep-alive, X-Secret\r\n\
          X-Secret: s3cret\r\n\
          Keep-Alive: timeout=5\r\n\
          Proxy-Connection: keep-alive\r\n\
          TE: gzip\r\n\
          Trailer: X-Checksum\r\n\
          Upgrade: foo\r\n\
          X-Kept: yes\r\n\
          \r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let echo: Value = serde_json::from_slice(&body).unwrap();
    let expected: BTreeSet<String> = [
        "host",
        "x-kept",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(header_names(&echo), expected, "{echo}");
    assert_eq!(echo["headers"]["x-kept"], serde_json::json!(["yes"]));
}

#[tokio::test]
async fn hop_by_hop_response_headers_are_removed() {
    let up = raw_upstream_answering(
        b"HTTP/1.1 200 OK\r\n\
          Connection: X-Internal\r\n\
          X-Internal: 1\r\n\
          Keep-Alive: timeout=5\r\n\
          Proxy-Connection: keep-alive\r\n\
          Trailer: X-Checksum\r\n\
          X-Kept: yes\r\n\
          Content-Length: 2\r\n\
          \r\n\
          ok",
    )
    .await;
    let gw = gateway_to(upstream("up", up)).await;

    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    let (head, body) = raw_roundtrip(
        &mut stream,
        b"GET /resp HTTP/1.1\r\nHost: gw.example\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(body, b"ok");
    let names: BTreeSet<String> = head_fields(&head).into_iter().map(|(n, _)| n).collect();
    let expected: BTreeSet<String> = ["content-length", "date", "x-kept"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(names, expected, "{head}");
}

// ===== 2. forwarding headers =====

async fn echo_through(upstream: UpstreamBuilder, extra: &[(&str, &str)]) -> Value {
    let gw = gateway_to(upstream).await;
    let mut req = http::Request::get(gw.url("/fwd")).header(HOST, "api.example.com");
    for (name, value) in extra {
        req = req.header(*name, *value);
    }
    let res = within("request", client().request(req.body(empty()).unwrap()))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    body_json(res).await
}

#[tokio::test]
async fn x_forwarded_headers_are_written_and_host_is_the_upstreams() {
    let up = spawn_upstream(echo_router()).await;
    let echo = echo_through(upstream("up", up), &[("x-forwarded-for", "1.2.3.4")]).await;
    let h = &echo["headers"];
    assert_eq!(
        h["x-forwarded-for"],
        serde_json::json!(["1.2.3.4, 127.0.0.1"])
    );
    assert_eq!(h["x-forwarded-proto"], serde_json::json!(["http"]));
    assert_eq!(
        h["x-forwarded-host"],
        serde_json::json!(["api.example.com"])
    );
    assert_eq!(h["host"], serde_json::json!([up.to_string()]));
    assert!(h.get("forwarded").is_none(), "{echo}");
}

#[tokio::test]
async fn preserve_host_keeps_the_clients_host() {
    let up = spawn_upstream(echo_router()).await;
    let echo = echo_through(upstream("up", up).preserve_host(true), &[]).await;
    let h = &echo["headers"];
    assert_eq!(h["host"], serde_json::json!(["api.example.com"]));
    assert_eq!(
        h["x-forwarded-host"],
        serde_json::json!(["api.example.com"])
    );
    assert_eq!(h["x-forwarded-for"], serde_json::json!(["127.0.0.1"]));
}

#[tokio::test]
async fn rfc7239_forwarded_element_is_appended() {
    let up = spawn_upstream(echo_router()).await;
    let mut fwd = ForwardedHeaders::default();
    fwd.forwarded = true;
    let echo = echo_through(
        upstream("up", up).forwarded(fwd),
        &[("forwarded", "for=1.2.3.4")],
    )
    .await;
    let h = &echo["headers"];
    assert_eq!(
        h["forwarded"],
        serde_json::json!(["for=1.2.3.4, for=127.0.0.1;proto=http;host=api.example.com"])
    );
    // The X-Forwarded-* defaults are still on.
    assert_eq!(h["x-forwarded-proto"], serde_json::json!(["http"]));
}

// ===== 3. encoded path and query =====

#[tokio::test]
async fn encoded_path_and_query_pass_byte_for_byte() {
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let up = spawn_raw_upstream(move |mut stream| {
        let tx = tx.clone();
        async move {
            while let Some((head, _)) = read_head(&mut stream).await {
                let line = head.lines().next().unwrap_or_default().to_owned();
                let _ = tx.send(line);
                if stream
                    .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    })
    .await;
    let router = Gateway::builder()
        .upstream(upstream("users", up))
        .route(
            Route::prefix("/api/users")
                .to("users")
                .replace_prefix("/users"),
        )
        .build()
        .unwrap();
    let gw = spawn_gateway(router).await;

    let res = get(
        &gw,
        "/api/users/a%2Fb%20c%3F/%E2%9C%93?q=%41%2B&x=1+2&empty=&flag",
    )
    .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let line = within("upstream request line", rx.recv()).await.unwrap();
    assert_eq!(
        line,
        "GET /users/a%2Fb%20c%3F/%E2%9C%93?q=%41%2B&x=1+2&empty=&flag HTTP/1.1"
    );
}

// ===== 4, 5. streaming =====

#[tokio::test(flavor = "multi_thread")]
async fn response_body_streams_chunk_by_chunk() {
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let rx = Arc::new(Mutex::new(Some(rx)));
    let up = spawn_upstream(Router::new().fallback(move || {
        let rx = rx.lock().unwrap().take();
        async move {
            let rx = rx.expect("a single request");
            Body::new(channel_body(rx))
        }
    }))
    .await;
    let gw = gateway_to(upstream("up", up)).await;

    tx.send(Bytes::from_static(b"first chunk;")).await.unwrap();
    let res = get(&gw, "/stream").await;
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.into_body();
    // The upstream sends the rest only once the client has the first chunk:
    // a gateway that buffered the body would wait here forever.
    let first = within("first chunk", read_exactly(&mut body, 12)).await;
    assert_eq!(first, b"first chunk;");
    tx.send(Bytes::from_static(b"second chunk")).await.unwrap();
    drop(tx);
    let rest = within("rest of the body", body.collect())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(&rest[..], b"second chunk");
}

#[tokio::test(flavor = "multi_thread")]
async fn request_body_streams_chunk_by_chunk() {
    let first_seen = Arc::new(Notify::new());
    let seen = Arc::clone(&first_seen);
    let up = spawn_upstream(Router::new().fallback(move |req: Request| {
        let seen = Arc::clone(&seen);
        async move {
            let mut body = req.into_body();
            let mut got = read_exactly(&mut body, 12).await;
            seen.notify_one();
            let rest = body.collect().await.unwrap().to_bytes();
            got.extend_from_slice(&rest);
            got
        }
    }))
    .await;
    let gw = gateway_to(upstream("up", up)).await;

    let (tx, rx) = mpsc::channel::<Bytes>(1);
    tx.send(Bytes::from_static(b"first chunk;")).await.unwrap();
    let req = http::Request::post(gw.url("/upload"))
        .body(channel_body(rx))
        .unwrap();
    let pending = tokio::spawn(client().request(req));
    // The client sends the rest only once the upstream has the first chunk.
    within("upstream sees the first chunk", first_seen.notified()).await;
    tx.send(Bytes::from_static(b"second chunk")).await.unwrap();
    drop(tx);
    let res = within("response", pending).await.unwrap().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(&body_bytes(res).await[..], b"first chunk;second chunk");
}

// ===== 6. large bodies, flat memory =====

static CHUNK: [u8; 64 * 1024] = [b'z'; 64 * 1024];

/// `remaining` bytes, generated 64 KiB at a time from one static buffer.
struct Repeat {
    remaining: u64,
}

impl http_body::Body for Repeat {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(CHUNK.len());
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&CHUNK[..n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// Counts the data bytes of `body`.
async fn count_bytes<B>(mut body: B) -> u64
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("body error").into_data() {
            total += data.len() as u64;
        }
    }
    total
}

/// This process's resident set size in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}

/// Samples the RSS every 10 ms while `fut` runs; returns its output and the
/// peak growth over the RSS before it started.
async fn peak_rss_growth<F: Future>(fut: F) -> (F::Output, u64) {
    let before = rss_bytes();
    let peak = Arc::new(AtomicU64::new(before));
    let sampler = {
        let peak = Arc::clone(&peak);
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_bytes(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let out = fut.await;
    sampler.abort();
    peak.fetch_max(rss_bytes(), Ordering::Relaxed);
    (out, peak.load(Ordering::Relaxed).saturating_sub(before))
}

/// An upstream that counts what is POSTed to it and answers the count, and
/// answers `GET /download/{n}` with `n` generated bytes.
fn bulk_router() -> Router {
    Router::new().fallback(|req: Request| async move {
        if req.method() == Method::POST {
            let n = count_bytes(req.into_body()).await;
            return Body::from(n.to_string());
        }
        let n: u64 = req
            .uri()
            .path()
            .rsplit('/')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        Body::new(Repeat { remaining: n })
    })
}

/// Streams `size` bytes up through the gateway and `size` bytes down, and
/// checks the counts and the memory growth.
async fn stream_large_bodies(size: u64) {
    const MIB: u64 = 1 << 20;
    let up = spawn_upstream(bulk_router()).await;
    let gw = gateway_to(upstream("up", up)).await;
    let client = client();
    let limit = Duration::from_secs(600);
    let started = tokio::time::Instant::now();

    let req = http::Request::post(gw.url("/upload"))
        .body(BoxBody::new(Repeat { remaining: size }))
        .unwrap();
    let (counted, up_growth) = peak_rss_growth(async {
        let res = tokio::time::timeout(limit, client.request(req))
            .await
            .expect("upload timed out")
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        String::from_utf8(body_bytes(res).await.to_vec()).unwrap()
    })
    .await;
    assert_eq!(counted, size.to_string());
    let upload = started.elapsed();

    let started = tokio::time::Instant::now();
    let req = http::Request::get(gw.url(&format!("/download/{size}")))
        .body(empty())
        .unwrap();
    let (received, down_growth) = peak_rss_growth(async {
        let res = tokio::time::timeout(limit, client.request(req))
            .await
            .expect("download timed out")
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["content-length"], size.to_string().as_str());
        tokio::time::timeout(limit, count_bytes(res.into_body()))
            .await
            .expect("download timed out")
    })
    .await;
    assert_eq!(received, size);
    let download = started.elapsed();

    eprintln!(
        "{} MiB up in {upload:?} (RSS +{} MiB), down in {download:?} (RSS +{} MiB)",
        size / MIB,
        up_growth / MIB,
        down_growth / MIB,
    );
    // The whole body would be `size`; a streaming gateway holds a few
    // buffers per hop.
    assert!(
        up_growth < 200 * MIB,
        "upload grew RSS by {up_growth} bytes"
    );
    assert!(
        down_growth < 200 * MIB,
        "download grew RSS by {down_growth} bytes"
    );
}

/// 1 GiB each way through two hyper hops (client → gateway → upstream).
/// About 1 s each way in a debug build, so the full size stays.
#[tokio::test(flavor = "multi_thread")]
async fn large_bodies_stream_with_flat_memory() {
    stream_large_bodies(1 << 30).await;
}

/// 4 GiB each way; run with
/// `cargo test --release -p tollgate-tests --test proxy large_bodies_4gib -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "4 GiB each way: run in release mode"]
async fn large_bodies_4gib_stream_with_flat_memory() {
    stream_large_bodies(4 << 30).await;
}

// ===== 7. upgrades =====

/// A WebSocket echo server on raw TCP.
async fn spawn_ws_echo() -> SocketAddr {
    spawn_raw_upstream(|stream| async move {
        let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
            return;
        };
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() || msg.is_binary() {
                if ws.send(msg).await.is_err() {
                    return;
                }
            } else if msg.is_close() {
                return;
            }
        }
    })
    .await
}

#[tokio::test]
async fn websocket_echo_through_the_gateway() {
    let up = spawn_ws_echo().await;
    let gw = gateway_to(upstream("up", up)).await;

    let (mut ws, res) = within(
        "handshake",
        tokio_tungstenite::connect_async(format!("ws://{}/ws", gw.addr)),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);

    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    for msg in [
        Message::text("hello through the gateway"),
        Message::binary(vec![0u8, 1, 2, 254, 255]),
        Message::binary(big),
        Message::text("✓ utf-8"),
    ] {
        ws.send(msg.clone()).await.unwrap();
        let echoed = within("echo", ws.next()).await.unwrap().unwrap();
        assert_eq!(echoed, msg);
    }
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn raw_upgrade_with_keep_alive_upgrade_connection_header() {
    let up = spawn_ws_echo().await;
    let gw = gateway_to(upstream("up", up)).await;

    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(
            format!(
                "GET /ws HTTP/1.1\r\n\
                 Host: gw.example\r\n\
                 Connection: keep-alive, Upgrade\r\n\
                 Upgrade: websocket\r\n\
                 Sec-WebSocket-Version: 13\r\n\
                 Sec-WebSocket-Key: {key}\r\n\
                 \r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let (head, rest) = within("101 head", read_head(&mut stream))
        .await
        .expect("a response head");
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(rest.is_empty());
    let fields = head_fields(&head);
    assert_eq!(
        field(&fields, "sec-websocket-accept"),
        Some(derive_accept_key(key.as_bytes()).as_str())
    );
    assert_eq!(field(&fields, "upgrade"), Some("websocket"));

    let mut ws =
        tokio_tungstenite::WebSocketStream::from_raw_socket(stream, Role::Client, None).await;
    ws.send(Message::text("over a raw upgrade")).await.unwrap();
    let echoed = within("echo", ws.next()).await.unwrap().unwrap();
    assert_eq!(echoed, Message::text("over a raw upgrade"));
}

// ===== 8, 9. upstream failures =====

/// A gateway with `bad` (named "bad") on `/bad` and a healthy echo on `/ok`.
async fn gateway_with_bad(bad: UpstreamBuilder) -> RunningGateway {
    let ok = spawn_upstream(echo_router()).await;
    let router = Gateway::builder()
        .upstream(bad)
        .upstream(upstream("ok", ok))
        .route(Route::prefix("/bad").to("bad"))
        .route(Route::prefix("/ok").to("ok"))
        .build()
        .unwrap();
    spawn_gateway(router).await
}

async fn assert_ok_route_works(gw: &RunningGateway) {
    for _ in 0..3 {
        let res = get(gw, "/ok/after").await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(body_json(res).await["uri"], "/ok/after");
    }
}

/// A port nothing listens on.
async fn closed_port() -> SocketAddr {
    let (listener, addr) = listener().await;
    drop(listener);
    addr
}

#[tokio::test]
async fn refused_upstream_is_502_upstream_unavailable() {
    let gw = gateway_with_bad(upstream("bad", closed_port().await)).await;
    let problem = assert_problem(get(&gw, "/bad/x").await, 502, UPSTREAM_UNAVAILABLE).await;
    assert_eq!(problem["instance"], "/bad/x");
    assert_ok_route_works(&gw).await;
}

/// An upstream "up" whose first endpoint refuses connections and whose
/// second answers (at the address returned), picked in turn, with
/// `retries`; the refusing one cools off for a millisecond only, so that
/// most requests pick it first.
async fn refused_then_echo(retries: u32) -> (UpstreamBuilder, SocketAddr) {
    let ok = spawn_upstream(named_echo_router("second")).await;
    let builder = pooled("up")
        .endpoint(format!("http://{}", closed_port().await))
        .endpoint(format!("http://{ok}"))
        .balance(Balance::RoundRobin)
        .cooloff(Duration::from_millis(1))
        .retries(retries);
    (builder, ok)
}

#[tokio::test]
async fn a_refused_connection_is_retried_on_another_endpoint() {
    // Without retries the request that picked the dead endpoint fails.
    let gw = gateway_to(refused_then_echo(0).await.0).await;
    assert_problem(get(&gw, "/x").await, 502, UPSTREAM_UNAVAILABLE).await;

    // With one, it goes to the other endpoint: every request is answered,
    // with the same path, query and headers, and `Host` the endpoint's.
    let (builder, ok) = refused_then_echo(1).await;
    let gw = gateway_to(builder).await;
    for i in 0..8 {
        let req = http::Request::get(gw.url(&format!("/x/{i}?q=1")))
            .header("x-trace", "kept")
            .body(empty())
            .unwrap();
        let res = within("a retried GET", client().request(req))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let echo = body_json(res).await;
        assert_eq!(echo["upstream"], "second", "{echo}");
        assert_eq!(echo["uri"], format!("/x/{i}?q=1"), "{echo}");
        assert_eq!(echo["headers"]["x-trace"][0], "kept", "{echo}");
        assert_eq!(echo["headers"]["host"][0], ok.to_string(), "{echo}");
        assert_eq!(echo["headers"]["x-forwarded-for"][0], "127.0.0.1", "{echo}");
    }
}

#[tokio::test]
async fn requests_with_a_body_and_exhausted_retries_are_not_retried() {
    // A body may already be on its way: a POST that picked the dead
    // endpoint is not sent again.
    let gw = gateway_to(refused_then_echo(3).await.0).await;
    let req = http::Request::post(gw.url("/x"))
        .body(full("a body"))
        .unwrap();
    let res = within("a POST", client().request(req)).await.unwrap();
    assert_problem(res, 502, UPSTREAM_UNAVAILABLE).await;

    // Every endpoint refuses: the retries end and the answer is a 502.
    let all_dead = pooled("up")
        .endpoint(format!("http://{}", closed_port().await))
        .endpoint(format!("http://{}", closed_port().await))
        .retries(5);
    let gw = gateway_to(all_dead).await;
    assert_problem(get(&gw, "/x").await, 502, UPSTREAM_UNAVAILABLE).await;
}

/// An `https://` endpoint whose listener accepts and at once closes every
/// connection, counting them: each attempt is a failed TLS handshake, a
/// connection failure.
async fn counting_handshake_failures() -> (String, Arc<AtomicU64>) {
    let accepted = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&accepted);
    let addr = spawn_raw_upstream(move |stream| {
        count.fetch_add(1, Ordering::SeqCst);
        async move { drop(stream) }
    })
    .await;
    (format!("https://{addr}"), accepted)
}

#[tokio::test]
async fn retries_stop_once_every_endpoint_is_out() {
    let (a, a_count) = counting_handshake_failures().await;
    let (b, b_count) = counting_handshake_failures().await;
    let gw = gateway_to(
        pooled("up")
            .endpoint(a)
            .endpoint(b)
            .balance(Balance::RoundRobin)
            .retries(5),
    )
    .await;
    assert_problem(get(&gw, "/x").await, 502, UPSTREAM_UNAVAILABLE).await;
    // One attempt per endpoint; then both cool off and retrying stops.
    let attempts = (
        a_count.load(Ordering::SeqCst),
        b_count.load(Ordering::SeqCst),
    );
    assert_eq!(attempts, (1, 1));
}

#[tokio::test]
async fn an_upgrade_whose_connection_failed_is_retried_and_tunnelled() {
    let ws = spawn_ws_echo().await;
    let gw = gateway_to(
        pooled("up")
            .endpoint(format!("http://{}", closed_port().await))
            .endpoint(format!("http://{ws}"))
            .balance(Balance::RoundRobin)
            .retries(1),
    )
    .await;
    // Round robin starts at the refusing endpoint.
    let (mut socket, res) = within(
        "a WebSocket handshake",
        tokio_tungstenite::connect_async(format!("ws://{}/ws", gw.addr)),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
    socket.send(Message::text("retried")).await.unwrap();
    let echoed = within("echo", socket.next()).await.unwrap().unwrap();
    assert_eq!(echoed, Message::text("retried"));
}

/// An upstream "up" whose first endpoint answers every request with 503
/// and whose second echoes, picked in turn.
async fn unavailable_then_echo() -> UpstreamBuilder {
    let unavailable = spawn_raw_upstream(|mut stream| async move {
        let _ = read_head(&mut stream).await;
        let _ = stream
            .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
            .await;
    })
    .await;
    let ok = spawn_upstream(named_echo_router("second")).await;
    pooled("up")
        .endpoint(format!("http://{unavailable}"))
        .endpoint(format!("http://{ok}"))
        .balance(Balance::RoundRobin)
}

#[tokio::test]
async fn a_retriable_status_sends_an_idempotent_request_to_another_endpoint() {
    // Without `retry_on_statuses`, the 503 stands.
    let gw = gateway_to(unavailable_then_echo().await.retries(1)).await;
    assert_eq!(
        get(&gw, "/x").await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );

    let gw = gateway_to(
        unavailable_then_echo()
            .await
            .retries(1)
            .retry_on_statuses([502, 503]),
    )
    .await;
    // A GET goes on to the second endpoint.
    let res = get(&gw, "/x").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body_json(res).await["upstream"], "second");
    // A POST is not idempotent: the next one, to the first endpoint again
    // by round robin, gets its 503.
    let _ = get(&gw, "/y").await;
    let req = http::Request::post(gw.url("/z")).body(empty()).unwrap();
    let res = within("a POST", client().request(req)).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn silent_upstream_is_504_gateway_timeout() {
    let up = spawn_raw_upstream(|mut stream| async move {
        // Read the request, never answer, hold the connection until the
        // gateway gives up on it.
        let _ = read_head(&mut stream).await;
        let mut sink = [0u8; 64];
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
    let bad = upstream("bad", up).response_timeout(Some(Duration::from_millis(300)));
    let gw = gateway_with_bad(bad).await;
    assert_problem(get(&gw, "/bad/slow").await, 504, GATEWAY_TIMEOUT).await;
    assert_ok_route_works(&gw).await;
}

#[tokio::test]
async fn garbage_from_upstream_is_502_bad_gateway() {
    let up = spawn_raw_upstream(|mut stream| async move {
        let _ = read_head(&mut stream).await;
        let _ = stream
            .write_all(b"SECRET-INTERNAL-GARBAGE \x00\x01\x02\r\n\r\n")
            .await;
    })
    .await;
    let gw = gateway_with_bad(upstream("bad", up)).await;
    let problem = assert_problem(get(&gw, "/bad/garbage").await, 502, BAD_GATEWAY).await;
    assert!(
        !problem.to_string().contains("SECRET-INTERNAL"),
        "upstream text leaked: {problem}"
    );
    assert_ok_route_works(&gw).await;
}

#[tokio::test]
async fn upstream_closing_without_answer_is_502_bad_gateway() {
    let up = spawn_raw_upstream(|mut stream| async move {
        let _ = read_head(&mut stream).await;
        // Dropped: closed without a byte of response.
    })
    .await;
    let gw = gateway_with_bad(upstream("bad", up)).await;
    assert_problem(get(&gw, "/bad/eof").await, 502, BAD_GATEWAY).await;
    assert_ok_route_works(&gw).await;
}

#[tokio::test]
async fn upstream_closing_mid_body_aborts_the_client_body() {
    let up = spawn_raw_upstream(|mut stream| async move {
        let _ = read_head(&mut stream).await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
            .await;
        // Closed 990 bytes short.
    })
    .await;
    let gw = gateway_with_bad(upstream("bad", up)).await;

    let res = get(&gw, "/bad/short").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-length"], "1000");
    let (got, outcome) = read_body(res).await;
    assert!(
        outcome.is_err(),
        "the body ended cleanly after {} bytes",
        got.len()
    );
    assert!(b"0123456789".starts_with(&got), "{got:?}");
    assert_ok_route_works(&gw).await;
}

/// Reads `res`'s body to its end or its error (within [`SAFETY`]): the
/// bytes, and how it ended.
async fn read_body(res: http::Response<Incoming>) -> (Vec<u8>, Result<(), hyper::Error>) {
    let mut body = res.into_body();
    let mut got = Vec::new();
    let outcome = within("body end", async {
        loop {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        got.extend_from_slice(&data);
                    }
                }
                Some(Err(err)) => return Err(err),
                None => return Ok(()),
            }
        }
    })
    .await;
    (got, outcome)
}

/// A gateway whose `/bad` upstream answers with a 10-byte body in 10
/// writes, `gap` apart, and then holds the connection open without the
/// rest when `stall`; its read timeout is 300 ms.
async fn trickling_gateway(gap: Duration, stall: bool) -> RunningGateway {
    let up = spawn_raw_upstream(move |mut stream| async move {
        let _ = read_head(&mut stream).await;
        let length = if stall { 100 } else { 10 };
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n");
        let _ = stream.write_all(head.as_bytes()).await;
        for byte in b"0123456789" {
            tokio::time::sleep(gap).await;
            let _ = stream.write_all(&[*byte]).await;
        }
        if stall {
            // Silent, connection open, until the gateway gives up on it.
            let mut rest = Vec::new();
            let _ = within("the gateway closes", stream.read_to_end(&mut rest)).await;
        }
    })
    .await;
    gateway_with_bad(upstream("bad", up).read_timeout(Some(Duration::from_millis(300)))).await
}

#[tokio::test]
async fn upstream_stalling_mid_body_is_cut_off_after_the_read_timeout() {
    let gw = trickling_gateway(Duration::from_millis(1), true).await;

    let res = get(&gw, "/bad/stall").await;
    assert_eq!(res.status(), StatusCode::OK);
    let (got, outcome) = read_body(res).await;
    assert!(
        outcome.is_err(),
        "the body ended cleanly after {} bytes",
        got.len()
    );
    assert_eq!(&got[..], b"0123456789");
    assert_ok_route_works(&gw).await;
}

/// The read timeout bounds each wait, not the whole body.
#[tokio::test]
async fn an_upstream_body_slow_but_steady_is_delivered_whole() {
    let gw = trickling_gateway(Duration::from_millis(100), false).await;

    let res = get(&gw, "/bad/steady").await;
    assert_eq!(res.status(), StatusCode::OK);
    let (got, outcome) = read_body(res).await;
    assert!(outcome.is_ok(), "{outcome:?}");
    assert_eq!(&got[..], b"0123456789");
}

// ===== 10. load balancing =====

async fn upstream_name(gw: &RunningGateway, path: &str) -> String {
    let res = get(gw, path).await;
    assert_eq!(res.status(), StatusCode::OK);
    body_json(res).await["upstream"]
        .as_str()
        .expect("an upstream name")
        .to_owned()
}

#[tokio::test]
async fn round_robin_spreads_evenly() {
    let mut addrs = Vec::new();
    for name in ["a", "b", "c"] {
        addrs.push(format!(
            "http://{}",
            spawn_upstream(named_echo_router(name)).await
        ));
    }
    let gw = gateway_to(pooled("up").endpoints(addrs).balance(Balance::RoundRobin)).await;

    let mut picks = Vec::new();
    for _ in 0..30 {
        picks.push(upstream_name(&gw, "/rr").await);
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for p in &picks {
        *counts.entry(p.as_str()).or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.values().all(|&n| n == 10), "{counts:?}");
    // And strictly in turn.
    for (i, p) in picks.iter().enumerate() {
        assert_eq!(p, &picks[i % 3], "{picks:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn least_request_avoids_a_slow_endpoint() {
    let fast = spawn_upstream(named_echo_router("fast")).await;
    let slow = spawn_upstream(Router::new().fallback(|| async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        axum::Json(serde_json::json!({ "upstream": "slow" }))
    }))
    .await;
    // Balance::LeastRequest (P2C) is the default.
    let gw = Arc::new(
        gateway_to(pooled("up").endpoints([format!("http://{fast}"), format!("http://{slow}")]))
            .await,
    );

    const WORKERS: usize = 8;
    const PER_WORKER: usize = 10;
    let mut tasks = Vec::new();
    for _ in 0..WORKERS {
        let gw = Arc::clone(&gw);
        tasks.push(tokio::spawn(async move {
            let mut slow = 0;
            for _ in 0..PER_WORKER {
                if upstream_name(&gw, "/p2c").await == "slow" {
                    slow += 1;
                }
            }
            slow
        }));
    }
    let mut slow = 0;
    for t in tasks {
        slow += within("workers", t).await.unwrap();
    }
    let total = WORKERS * PER_WORKER;
    // An even spread would send 40 of 80 to the slow endpoint.
    assert!(
        slow * 4 <= total,
        "the slow endpoint got {slow} of {total} requests"
    );
}

#[tokio::test]
async fn refusing_endpoint_is_cooled_off() {
    let healthy = spawn_upstream(named_echo_router("healthy")).await;
    let closed = closed_port().await;
    let gw = gateway_to(
        pooled("up")
            .endpoints([format!("http://{closed}"), format!("http://{healthy}")])
            .cooloff(Duration::from_secs(60)),
    )
    .await;

    // Until the refusing endpoint is picked once.
    let mut failed = false;
    for _ in 0..50 {
        let res = get(&gw, "/lb").await;
        if res.status() == StatusCode::BAD_GATEWAY {
            assert_problem(res, 502, UPSTREAM_UNAVAILABLE).await;
            failed = true;
            break;
        }
        assert_eq!(res.status(), StatusCode::OK);
    }
    assert!(failed, "the closed endpoint was never picked");
    for i in 0..30 {
        let res = get(&gw, "/lb").await;
        assert_eq!(
            res.status(),
            StatusCode::OK,
            "request {i} after the failure"
        );
        assert_eq!(body_json(res).await["upstream"], "healthy");
    }
}

// ===== 11. canary split =====

#[tokio::test]
async fn canary_split_by_weight_and_by_header() {
    let stable = spawn_upstream(named_echo_router("stable")).await;
    let canary = spawn_upstream(named_echo_router("canary")).await;
    let router = Gateway::builder()
        .upstream(upstream("stable", stable))
        .upstream(upstream("canary", canary))
        .route(
            Route::prefix("/")
                .split([("stable", 95), ("canary", 5)])
                .split_override_header("x-canary"),
        )
        .build()
        .unwrap();
    let gw = spawn_gateway(router).await;
    let client = client();

    let mut canaries = 0;
    for _ in 0..400 {
        match upstream_name(&gw, "/split").await.as_str() {
            "canary" => canaries += 1,
            "stable" => {}
            other => panic!("unexpected upstream {other}"),
        }
    }
    // Binomial(400, 0.05): mean 20, sd 4.4; outside 5..=40 has p < 1e-4.
    assert!(
        (5..=40).contains(&canaries),
        "{canaries} of 400 went to canary"
    );

    for forced in ["canary", "stable"] {
        for _ in 0..50 {
            let req = http::Request::get(gw.url("/split"))
                .header("x-canary", forced)
                .body(empty())
                .unwrap();
            let res = within("forced", client.request(req)).await.unwrap();
            assert_eq!(body_json(res).await["upstream"], forced);
        }
    }
}

// ===== 12. cancellation =====

/// An upstream that reports when it has read a request and when the
/// gateway then closes the connection, and never answers.
async fn spawn_observed_upstream() -> (SocketAddr, mpsc::UnboundedReceiver<&'static str>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let addr = spawn_raw_upstream(move |mut stream| {
        let tx = tx.clone();
        async move {
            if read_head(&mut stream).await.is_none() {
                return;
            }
            let _ = tx.send("request");
            let mut sink = [0u8; 64];
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            let _ = tx.send("closed");
        }
    })
    .await;
    (addr, rx)
}

#[tokio::test]
async fn client_disconnect_cancels_the_upstream_request() {
    let (up, mut events) = spawn_observed_upstream().await;
    let gw = gateway_to(upstream("up", up).response_timeout(None)).await;

    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(b"GET /wait HTTP/1.1\r\nHost: gw.example\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        within("upstream request", events.recv()).await,
        Some("request")
    );
    drop(stream);
    assert_eq!(
        within("upstream connection closed", events.recv()).await,
        Some("closed")
    );
}

#[tokio::test]
async fn dropped_client_future_cancels_the_upstream_request() {
    let (up, mut events) = spawn_observed_upstream().await;
    let gw = gateway_to(upstream("up", up).response_timeout(None)).await;

    let client = client();
    let req = http::Request::get(gw.url("/wait")).body(empty()).unwrap();
    let pending = tokio::spawn(client.request(req));
    assert_eq!(
        within("upstream request", events.recv()).await,
        Some("request")
    );
    pending.abort();
    assert!(pending.await.unwrap_err().is_cancelled());
    assert_eq!(
        within("upstream connection closed", events.recv()).await,
        Some("closed")
    );
}

// ===== 13. HTTP/2 upstream =====

#[tokio::test]
async fn http2_prior_knowledge_upstream() {
    let up = spawn_upstream(echo_router()).await;
    let gw = gateway_to(upstream("up", up).protocol(Protocol::Http2)).await;

    let req = http::Request::post(gw.url("/h2?x=1"))
        .body(full("over h2"))
        .unwrap();
    let res = within("request", client().request(req)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.version(),
        http::Version::HTTP_11,
        "client side stays h1"
    );
    let echo = body_json(res).await;
    assert_eq!(echo["version"], "HTTP/2.0", "{echo}");
    assert_eq!(echo["uri"], format!("http://{up}/h2?x=1"));
    assert_eq!(echo["body"], "over h2");
    assert!(echo["headers"].get("host").is_none(), "{echo}");
}

/// Sequential requests reuse one keep-alive upstream connection, whatever
/// the response body (empty, fixed, chunked), and an upstream that closes
/// an idle connection gets a fresh one on the next request.
#[tokio::test]
async fn upstream_connections_are_kept_alive_and_reused() {
    let connections = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&connections);
    let up = tollgate_tests::spawn_raw_upstream(move |mut stream| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut n = 0u32;
            while let Some((head, _)) = tollgate_tests::read_head(&mut stream).await {
                n += 1;
                let answer: &[u8] = if head.starts_with("GET /close") {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                } else {
                    match n % 3 {
                        0 => b"HTTP/1.1 204 No Content\r\n\r\n",
                        1 => b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
                        _ => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                    }
                };
                if stream.write_all(answer).await.is_err() {
                    return;
                }
                if head.starts_with("GET /close") {
                    // Close the idle connection without telling the client.
                    return;
                }
            }
        }
    })
    .await;
    let gw = gateway_to(upstream("up", up)).await;
    for i in 0..20 {
        let res = get(&gw, &format!("/keep/{i}")).await;
        assert!(res.status().is_success(), "{}", res.status());
        tollgate_tests::body_bytes(res).await;
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "one connection for 20 requests"
    );

    let res = get(&gw, "/close").await;
    assert_eq!(tollgate_tests::body_bytes(res).await, "ok");
    // Give the pool a moment to see the close, then go on: a fresh
    // connection serves the next requests.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..5 {
        let res = get(&gw, &format!("/after/{i}")).await;
        assert!(res.status().is_success(), "{}", res.status());
        tollgate_tests::body_bytes(res).await;
    }
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

/// `X-Forwarded-Proto` comes from the connection, never from the client:
/// an absolute-form `https://` target on a plain connection is still
/// `http`, and its authority (not `Host`) is the forwarded host.
#[tokio::test]
async fn x_forwarded_proto_cannot_be_forged_by_the_target() {
    let up = spawn_upstream(echo_router()).await;
    let gw = gateway_to(upstream("up", up)).await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    let (head, body) = raw_roundtrip(
        &mut stream,
        b"GET https://evil.example/x HTTP/1.1\r\nHost: other.example\r\nX-Forwarded-Proto: https\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let echo: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        echo["headers"]["x-forwarded-proto"],
        serde_json::json!(["http"]),
        "{echo}"
    );
    assert_eq!(
        echo["headers"]["x-forwarded-host"],
        serde_json::json!(["evil.example"]),
        "{echo}"
    );
    assert_eq!(echo["uri"], "/x", "{echo}");
}

/// The connect timeout bounds the TLS handshake too: an `https` endpoint
/// that accepts TCP but never answers the ClientHello is a 504 within the
/// connect timeout, not a hang until the response timeout.
#[tokio::test]
async fn connect_timeout_covers_a_stalled_tls_handshake() {
    let up = spawn_raw_upstream(|mut stream| async move {
        // Swallow the ClientHello and never answer.
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                return;
            }
        }
    })
    .await;
    let gw = gateway_to(
        pooled("up")
            .endpoint(format!("https://localhost:{}", up.port()))
            .connect_timeout(Duration::from_millis(300))
            .response_timeout(Some(Duration::from_secs(60))),
    )
    .await;
    let res = within("a 504", get(&gw, "/tls")).await;
    assert_problem(res, 504, GATEWAY_TIMEOUT).await;
}

/// A pooled connection idle for longer than the idle timeout is not
/// reused: the next request opens a new one.
#[tokio::test]
async fn idle_connections_expire() {
    let connections = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&connections);
    let up = spawn_raw_upstream(move |mut stream| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move {
            while tollgate_tests::read_head(&mut stream).await.is_some() {
                if stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    })
    .await;
    let gw = gateway_to(upstream("up", up).idle_timeout(Duration::from_millis(200))).await;
    for _ in 0..3 {
        tollgate_tests::body_bytes(get(&gw, "/a").await).await;
    }
    assert_eq!(connections.load(Ordering::SeqCst), 1, "reused while fresh");
    tokio::time::sleep(Duration::from_millis(600)).await;
    tollgate_tests::body_bytes(get(&gw, "/b").await).await;
    assert_eq!(
        connections.load(Ordering::SeqCst),
        2,
        "a new connection after the idle timeout"
    );
}

/// Serves one `200 ok` on each connection and reports, through `closed`,
/// when the gateway closes the connection; `then_close` makes the upstream
/// close its side first, a little after answering (when the connection is
/// idle in the pool).
async fn one_answer_upstream(then_close: bool) -> (SocketAddr, mpsc::UnboundedReceiver<()>) {
    let (closed, rx) = mpsc::unbounded_channel();
    let up = spawn_raw_upstream(move |mut stream| {
        let closed = closed.clone();
        async move {
            if tollgate_tests::read_head(&mut stream).await.is_none() {
                return;
            }
            if stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .is_err()
            {
                return;
            }
            if then_close {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if stream.shutdown().await.is_err() {
                    return;
                }
            }
            // Anything the gateway sends now is unexpected; its close ends
            // the read.
            let mut buf = [0u8; 1024];
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
            let _ = closed.send(());
        }
    })
    .await;
    (up, rx)
}

/// An idle pooled connection that the upstream closes is closed by the
/// gateway too, at once and without waiting for the next request: no
/// socket is left half closed.
#[tokio::test]
async fn an_idle_connection_the_upstream_closes_is_closed_without_a_request() {
    let (up, mut closed) = one_answer_upstream(true).await;
    let gw = gateway_to(upstream("up", up)).await;
    let res = get(&gw, "/once").await;
    assert_eq!(tollgate_tests::body_bytes(res).await, "ok");
    within("the gateway's close", closed.recv()).await;
}

/// An idle pooled connection is closed once the idle timeout passes, even
/// when no other request comes to the endpoint.
#[tokio::test]
async fn idle_connections_are_closed_on_time_without_a_request() {
    let (up, mut closed) = one_answer_upstream(false).await;
    let gw = gateway_to(upstream("up", up).idle_timeout(Duration::from_millis(200))).await;
    let res = get(&gw, "/once").await;
    assert_eq!(tollgate_tests::body_bytes(res).await, "ok");
    within("the gateway's close", closed.recv()).await;
}
