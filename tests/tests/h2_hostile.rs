//! Hostile HTTP/2 clients against `tollgate::serve`: rapid reset, too many
//! concurrent streams, oversized and flooded header blocks (CONTINUATION,
//! HPACK references, malformed streams) and a client that stalls flow
//! control. Each one gets a 431, a stream reset, a GOAWAY or a closed
//! connection, never a hang; the work it asked for stays bounded, and the
//! server keeps serving other clients.
//!
//! The well-behaved side is mostly hyper-util's client; the hostile side is the
//! `h2` crate used as a raw client, or frames written by hand over the
//! socket where `h2` will not misbehave (CONTINUATION without an end, HPACK
//! references, requests without a path). Timeouts are hang guards only:
//! nothing asserts on speed.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "helpers outside #[test] fns fail the calling test by panicking"
)]

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    time::Duration,
};

use bytes::Bytes;
use h2::Reason;
use http::{Request, StatusCode};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{
        TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    task::JoinHandle,
    time::{sleep, timeout},
};
use tollgate::TlsConfig;
use tollgate_tests::{
    RunningGateway,
    auth_support::eventually,
    backend_support::{BIG_CHUNKS, Backend, CHUNK},
    body_bytes, empty, h2_client, listener, spawn_gateway,
};

#[expect(dead_code, reason = "shared with tls_server.rs, which uses all of it")]
#[path = "common/tls.rs"]
mod tls;

/// Hang guard: a bug fails the test instead of hanging it.
const BOUND: Duration = Duration::from_secs(10);

// The HTTP/2 limits `serve` sets by default (`Http2Settings::default()`
// and the fixed limits of `crates/tollgate/src/http2.rs`).
const MAX_CONCURRENT_STREAMS: u32 = 200;
const MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;
const MAX_LOCAL_ERROR_RESETS: usize = 1024;
const INITIAL_WINDOW: u32 = 1024 * 1024;
const MAX_FRAME_SIZE: u32 = 16 * 1024;
const MAX_SEND_BUF_SIZE: usize = 400 * 1024;
/// Left at h2's default, the RFC's (hyper-util has no setter for it).
const HEADER_TABLE_SIZE: u32 = 4096;

/// `serve` with `backend` on 127.0.0.1:0, cleartext (h2c by prior
/// knowledge, or HTTP/1.1).
async fn server(backend: &Backend) -> RunningGateway {
    spawn_gateway(backend.router()).await
}

/// A well-behaved HTTP/2 client gets `ok` from a fresh connection.
async fn assert_serves_others(gw: &RunningGateway) {
    let req = Request::get(gw.url("/fine")).body(empty()).unwrap();
    let res = timeout(BOUND, h2_client().request(req))
        .await
        .expect("another client was answered in time")
        .expect("another client got a response");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.version(), http::Version::HTTP_2);
    assert_eq!(&body_bytes(res).await[..], b"ok");
}

/// `get path` for the `h2` client, on `authority`.
fn h2_get(authority: &str, path: &str) -> Request<()> {
    Request::get(format!("http://{authority}{path}"))
        .body(())
        .unwrap()
}

// === raw frames ===

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;
const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One frame off the wire.
#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

impl Frame {
    /// The error code of a RST_STREAM or GOAWAY.
    fn error_code(&self) -> u32 {
        let at = if self.kind == GOAWAY { 4 } else { 0 };
        u32::from_be_bytes(self.payload[at..at + 4].try_into().unwrap())
    }
}

/// A frame's bytes.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    assert!(len < 1 << 24);
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK integer with an `n`-bit prefix, `first` holding the flag bits
/// (RFC 7541 §5.1).
fn hpack_int(first: u8, n: u32, mut value: usize, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | u8::try_from(value).unwrap());
        return;
    }
    out.push(first | u8::try_from(max).unwrap());
    value -= max;
    while value >= 128 {
        out.push(u8::try_from(value % 128).unwrap() | 0x80);
        value /= 128;
    }
    out.push(u8::try_from(value).unwrap());
}

/// An HPACK string literal, not Huffman-coded.
fn hpack_str(s: &[u8], out: &mut Vec<u8>) {
    hpack_int(0, 7, s.len(), out);
    out.extend_from_slice(s);
}

/// A literal field without indexing whose name is static-table entry `name`.
fn literal_indexed_name(name: usize, value: &[u8], out: &mut Vec<u8>) {
    hpack_int(0x00, 4, name, out);
    hpack_str(value, out);
}

/// The header block of `GET path` on `localhost` (`:method GET`,
/// `:scheme http`, `:path`, `:authority`).
fn request_block(path: &str) -> Vec<u8> {
    let mut out = vec![0x82, 0x86];
    literal_indexed_name(4, path.as_bytes(), &mut out);
    literal_indexed_name(1, b"localhost", &mut out);
    out
}

/// The `n`th client stream id (1, 3, 5, …).
fn stream_id(n: usize) -> u32 {
    u32::try_from(2 * n + 1).unwrap()
}

/// A raw HTTP/2 connection: the reading half, and the server's SETTINGS.
struct Raw {
    read: OwnedReadHalf,
    buf: Vec<u8>,
    settings: BTreeMap<u16, u32>,
}

impl Raw {
    /// Connects, sends the preface and empty SETTINGS, reads the server's
    /// SETTINGS and acknowledges them. Returns the writing half too.
    async fn connect(addr: SocketAddr) -> (Self, OwnedWriteHalf) {
        let (read, mut write) = TcpStream::connect(addr).await.unwrap().into_split();
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        write.write_all(&hello).await.unwrap();
        let mut raw = Self {
            read,
            buf: Vec::new(),
            settings: BTreeMap::new(),
        };
        let first = timeout(BOUND, raw.next())
            .await
            .expect("server SETTINGS in time")
            .expect("server SETTINGS");
        assert_eq!((first.kind, first.flags), (SETTINGS, 0), "{first:?}");
        for pair in first.payload.chunks_exact(6) {
            let id = u16::from_be_bytes([pair[0], pair[1]]);
            let value = u32::from_be_bytes([pair[2], pair[3], pair[4], pair[5]]);
            raw.settings.insert(id, value);
        }
        write
            .write_all(&frame(SETTINGS, ACK, 0, &[]))
            .await
            .unwrap();
        (raw, write)
    }

    /// Checks the server's SETTINGS for each `(id, value)` of `want`.
    fn assert_settings(&self, want: &[(u16, u32)]) {
        for (id, value) in want {
            assert_eq!(
                self.settings.get(id),
                Some(value),
                "setting {id:#x}: {:?}",
                self.settings
            );
        }
    }

    /// The next frame, or `None` once the server has closed (or reset) the
    /// connection.
    async fn next(&mut self) -> Option<Frame> {
        loop {
            if self.buf.len() >= 9 {
                let len = usize::from(self.buf[0]) << 16
                    | usize::from(self.buf[1]) << 8
                    | usize::from(self.buf[2]);
                if self.buf.len() >= 9 + len {
                    let rest = self.buf.split_off(9 + len);
                    let bytes = std::mem::replace(&mut self.buf, rest);
                    return Some(Frame {
                        kind: bytes[3],
                        flags: bytes[4],
                        stream: u32::from_be_bytes(bytes[5..9].try_into().unwrap()) & 0x7fff_ffff,
                        payload: bytes[9..].to_vec(),
                    });
                }
            }
            self.buf.reserve(16 * 1024);
            match self.read.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Reads frames until the server closes the connection, keeping the
    /// GOAWAY and the stream resets; fails the test after [`BOUND`].
    async fn until_closed(&mut self, what: &str) -> Ending {
        let mut ending = Ending::default();
        let read_all = async {
            while let Some(frame) = self.next().await {
                match frame.kind {
                    GOAWAY => ending.goaway = Some(frame.error_code()),
                    RST_STREAM => {
                        ending.resets.insert(frame.stream, frame.error_code());
                    }
                    _ => {}
                }
            }
        };
        timeout(BOUND, read_all)
            .await
            .unwrap_or_else(|_| panic!("{what}: the connection was still open after {BOUND:?}"));
        ending
    }
}

/// How a raw connection ended.
#[derive(Debug, Default)]
struct Ending {
    /// The error code of the server's GOAWAY, if one came.
    goaway: Option<u32>,
    /// The streams the server reset, with their error codes.
    resets: BTreeMap<u32, u32>,
}

/// Writes `frames` on a task, in batches, until done or the server closes;
/// resolves to the number of frames written.
fn write_frames(
    mut write: OwnedWriteHalf,
    frames: impl Iterator<Item = Vec<u8>> + Send + 'static,
) -> JoinHandle<(usize, OwnedWriteHalf)> {
    tokio::spawn(async move {
        let mut written = 0;
        let mut batch = Vec::new();
        let mut frames = frames.peekable();
        while frames.peek().is_some() {
            batch.clear();
            let mut count = 0;
            for frame in frames.by_ref().take(64) {
                batch.extend_from_slice(&frame);
                count += 1;
            }
            if write.write_all(&batch).await.is_err() {
                break;
            }
            written += count;
        }
        (written, write)
    })
}

// === tests ===

/// The limits `serve` sets are the ones it advertises in its SETTINGS.
#[tokio::test]
async fn the_server_advertises_its_http2_limits() {
    let backend = Backend::new();
    let gw = server(&backend).await;
    let (raw, _write) = Raw::connect(gw.addr).await;
    raw.assert_settings(&[
        (SETTINGS_MAX_CONCURRENT_STREAMS, MAX_CONCURRENT_STREAMS),
        (SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST_SIZE),
        (SETTINGS_INITIAL_WINDOW_SIZE, INITIAL_WINDOW),
    ]);
    let settings = &raw.settings;
    // RFC defaults, which h2 may leave out.
    for (id, default) in [
        (SETTINGS_MAX_FRAME_SIZE, MAX_FRAME_SIZE),
        (SETTINGS_HEADER_TABLE_SIZE, HEADER_TABLE_SIZE),
    ] {
        assert_eq!(
            *settings.get(&id).unwrap_or(&default),
            default,
            "{settings:?}"
        );
    }
}

/// What a rapid-reset client achieved.
#[derive(Debug)]
struct RapidReset {
    /// Streams opened and reset before the server stopped it.
    opened: usize,
    /// How the connection ended.
    ended: Result<(), h2::Error>,
}

/// How many streams a rapid-reset client opens and cancels at most.
const RAPID_RESETS: usize = 10_000;

/// The rapid-reset attack (CVE-2023-44487) on `io`: opens streams and
/// cancels each at once, up to [`RAPID_RESETS`] of them or until the server stops
/// it, then waits (bounded) for the connection to end.
async fn rapid_reset<T>(io: T, authority: &str) -> RapidReset
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut client, conn) = h2::client::handshake(io).await.expect("h2 handshake");
    let conn = tokio::spawn(conn);
    let mut opened = 0;
    let attack = async {
        while opened < RAPID_RESETS && !conn.is_finished() {
            client = match client.ready().await {
                Ok(client) => client,
                Err(_) => break,
            };
            let Ok((response, mut stream)) = client.send_request(h2_get(authority, "/"), false)
            else {
                break;
            };
            stream.send_reset(Reason::CANCEL);
            drop(response);
            opened += 1;
            if opened % 16 == 0 {
                tokio::task::yield_now().await;
            }
        }
    };
    timeout(BOUND, attack)
        .await
        .expect("the attack loop ended in time");
    let ended = timeout(BOUND, conn)
        .await
        .unwrap_or_else(|_| {
            panic!("the server neither sent GOAWAY nor closed after {opened} reset streams")
        })
        .expect("the client connection task did not panic");
    RapidReset { opened, ended }
}

/// Checks a rapid reset's outcome: the server ended the connection with
/// GOAWAY (or closed it under the client's writes) before the attack's
/// end, and called the backend for at most half of the streams.
fn assert_stopped(attack: &RapidReset, calls: usize) {
    assert!(
        attack.opened < RAPID_RESETS,
        "the server let all {} streams be opened and reset",
        attack.opened
    );
    // `Ok` would be the client closing once the attack was over.
    match &attack.ended {
        Err(err) if err.is_go_away() => {
            assert_eq!(err.reason(), Some(Reason::ENHANCE_YOUR_CALM), "{err:?}");
        }
        // The server closed while the client was still writing.
        Err(err) if err.is_io() => {}
        ended => panic!("the connection ended with {ended:?}"),
    }
    assert!(
        calls <= attack.opened / 2,
        "the backend was called for {calls} of {} reset streams",
        attack.opened
    );
}

/// Rapid reset: the server ends the connection (GOAWAY ENHANCE_YOUR_CALM
/// once `max_pending_accept_reset_streams`, 20, streams were reset before
/// it took them up), most streams never reach the backend, and another
/// client is served during and after the attack.
#[tokio::test]
async fn rapid_reset_ends_in_goaway_and_others_are_served() {
    let backend = Backend::new();
    let gw = server(&backend).await;
    let authority = gw.addr.to_string();
    let io = TcpStream::connect(gw.addr).await.unwrap();
    let others = async {
        let mut served = 0;
        for _ in 0..5 {
            assert_serves_others(&gw).await;
            served += 1;
            sleep(Duration::from_millis(5)).await;
        }
        served
    };
    let (attack, served) = tokio::join!(rapid_reset(io, &authority), others);
    assert_stopped(&attack, backend.calls() - served);
    assert_serves_others(&gw).await;
}

/// The same attack over TLS with ALPN `h2`.
#[tokio::test]
async fn rapid_reset_over_tls_ends_in_goaway() {
    let dir = tls::Dir::new();
    let ca = tls::Ca::new("test CA");
    let (cert, key) = ca.server(&["localhost"]).write(&dir, "server", &ca);
    let config = TlsConfig::builder().certificate(cert, key).build().unwrap();
    let backend = Backend::new();
    let (listener, addr) = listener().await;
    tokio::spawn(
        tollgate::serve(listener, backend.router(), std::future::pending())
            .tls(config)
            .into_future(),
    );
    let stream = tls::ClientSetup::trusting(&ca)
        .connect(addr, "localhost")
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let attack = rapid_reset(stream, "localhost").await;
    assert_stopped(&attack, backend.calls());

    // A well-behaved TLS client is still served.
    let stream = tls::ClientSetup::trusting(&ca)
        .connect(addr, "localhost")
        .await
        .unwrap();
    let (client, conn) = h2::client::handshake(stream).await.unwrap();
    tokio::spawn(conn);
    let (response, _) = client
        .ready()
        .await
        .unwrap()
        .send_request(h2_get("localhost", "/fine"), true)
        .unwrap();
    let response = timeout(BOUND, response).await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// Streams that reached the backend and are then reset by the client have
/// their backend work dropped: nothing keeps running for a cancelled
/// stream, and the connection serves on.
#[tokio::test]
async fn reset_streams_cancel_their_backend_work() {
    const STREAMS: usize = 50;
    let backend = Backend::new();
    let gw = server(&backend).await;
    let authority = gw.addr.to_string();
    let io = TcpStream::connect(gw.addr).await.unwrap();
    let (mut client, conn) = h2::client::handshake(io).await.unwrap();
    let conn = tokio::spawn(conn);
    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        client = client.ready().await.unwrap();
        let (response, stream) = client
            .send_request(h2_get(&authority, "/held"), false)
            .unwrap();
        streams.push((response, stream));
    }
    eventually("every held request reaches the backend", || {
        std::future::ready(backend.in_flight() == STREAMS)
    })
    .await;
    for (_, stream) in &mut streams {
        stream.send_reset(Reason::CANCEL);
    }
    eventually("the backend work of reset streams is dropped", || {
        std::future::ready(backend.in_flight() == 0)
    })
    .await;
    assert_eq!(backend.calls(), STREAMS);
    // The same connection still serves.
    let (response, _) = client
        .ready()
        .await
        .unwrap()
        .send_request(h2_get(&authority, "/fine"), true)
        .unwrap();
    let response = timeout(BOUND, response).await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!conn.is_finished());
}

/// A client that ignores SETTINGS and opens more streams than
/// `max_concurrent_streams`: the extra ones are refused (REFUSED_STREAM)
/// without reaching the backend, and the accepted ones complete.
#[tokio::test]
async fn streams_over_the_concurrency_limit_are_refused() {
    const EXTRA: usize = 20;
    let max = usize::try_from(MAX_CONCURRENT_STREAMS).unwrap();
    let backend = Backend::new();
    let gw = server(&backend).await;
    let (mut raw, write) = Raw::connect(gw.addr).await;
    let block = request_block("/held");
    let writer = write_frames(
        write,
        (0..max + EXTRA)
            .map(move |n| frame(HEADERS, END_HEADERS | END_STREAM, stream_id(n), &block)),
    );

    // The streams past the limit are refused, whatever the order.
    let refused: BTreeSet<u32> = (max..max + EXTRA).map(stream_id).collect();
    let mut resets = BTreeMap::new();
    let read_resets = async {
        while resets.len() < EXTRA {
            let frame = raw.next().await.expect("the connection stays open");
            if frame.kind == RST_STREAM {
                resets.insert(frame.stream, frame.error_code());
            }
            assert_ne!(frame.kind, GOAWAY, "{frame:?}");
        }
    };
    timeout(BOUND, read_resets)
        .await
        .expect("the extra streams were refused in time");
    assert_eq!(resets.keys().copied().collect::<BTreeSet<_>>(), refused);
    assert!(
        resets
            .values()
            .all(|code| *code == u32::from(Reason::REFUSED_STREAM)),
        "{resets:?}"
    );
    eventually("the accepted streams reach the backend", || {
        std::future::ready(backend.in_flight() == max)
    })
    .await;
    assert_eq!(backend.calls(), max, "only the accepted streams are called");
    let (written, _write) = writer.await.unwrap();
    assert_eq!(written, max + EXTRA);

    // Released, every accepted stream completes with a 200.
    backend.open_gate();
    let mut status: BTreeMap<u32, u8> = BTreeMap::new();
    let mut ended = BTreeSet::new();
    let read_responses = async {
        while ended.len() < max {
            let frame = raw.next().await.expect("the connection stays open");
            assert!(!refused.contains(&frame.stream), "{frame:?}");
            match frame.kind {
                // `:status: 200` is static-table entry 8 (RFC 7541).
                HEADERS => {
                    status.insert(frame.stream, frame.payload[0]);
                }
                RST_STREAM | GOAWAY => panic!("{frame:?}"),
                _ => {}
            }
            if matches!(frame.kind, HEADERS | DATA) && frame.flags & END_STREAM != 0 {
                ended.insert(frame.stream);
            }
        }
    };
    timeout(BOUND, read_responses)
        .await
        .expect("the accepted streams completed in time");
    assert_eq!(status.len(), max);
    assert!(status.values().all(|first| *first == 0x88), "{status:?}");
    assert_serves_others(&gw).await;
}

/// A header list over `max_header_list_size` (16 KiB) but within h2's
/// tolerance gets a 431 on its stream; the connection and the server serve
/// on, and the backend never sees it.
#[tokio::test]
async fn an_oversized_header_list_gets_431() {
    let backend = Backend::new();
    let gw = server(&backend).await;
    let authority = gw.addr.to_string();
    let io = TcpStream::connect(gw.addr).await.unwrap();
    let (client, conn) = h2::client::handshake(io).await.unwrap();
    let conn = tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();

    let mut req = h2_get(&authority, "/");
    req.headers_mut()
        .insert("x-big", "a".repeat(24 * 1024).parse().unwrap());
    let (response, _) = client.send_request(req, true).unwrap();
    match timeout(BOUND, response).await.expect("answered in time") {
        Ok(response) => {
            assert_eq!(
                response.status(),
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            );
        }
        Err(err) => assert!(err.is_reset(), "{err:?}"),
    }
    assert_eq!(backend.calls(), 0);

    // The same connection serves the next request.
    let mut client = client.ready().await.unwrap();
    let (response, _) = client
        .send_request(h2_get(&authority, "/fine"), true)
        .unwrap();
    let response = timeout(BOUND, response).await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!conn.is_finished());
    assert_serves_others(&gw).await;
}

/// Header lists far over the limit, sent by a real encoder: one 1 MiB
/// value (a HEADERS frame and many CONTINUATIONs) and 5,000 small headers.
/// Each ends its connection (GOAWAY, or a reset) and never reaches the
/// backend; the server serves on.
#[tokio::test]
async fn header_lists_far_over_the_limit_are_refused() {
    let backend = Backend::new();
    let gw = server(&backend).await;
    let authority = gw.addr.to_string();
    let huge = {
        let mut req = h2_get(&authority, "/");
        req.headers_mut()
            .insert("x-huge", "a".repeat(1024 * 1024).parse().unwrap());
        req
    };
    let many = {
        let mut req = h2_get(&authority, "/");
        for i in 0..5_000 {
            req.headers_mut().insert(
                http::HeaderName::try_from(format!("x-h{i}")).unwrap(),
                http::HeaderValue::from_static("v"),
            );
        }
        req
    };
    for (what, req) in [("one 1 MiB header", huge), ("5,000 headers", many)] {
        let io = TcpStream::connect(gw.addr).await.unwrap();
        let (client, conn) = h2::client::handshake(io).await.unwrap();
        let conn = tokio::spawn(conn);
        let mut client = client.ready().await.unwrap();
        let (response, _) = client.send_request(req, true).unwrap();
        match timeout(BOUND, response)
            .await
            .unwrap_or_else(|_| panic!("{what}: no answer in time"))
        {
            Ok(response) => assert_eq!(
                response.status(),
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "{what}"
            ),
            Err(err) => assert!(
                err.is_go_away() || err.is_reset() || err.is_io(),
                "{what}: {err:?}"
            ),
        }
        let ended = timeout(BOUND, conn)
            .await
            .unwrap_or_else(|_| panic!("{what}: the connection was still open"))
            .unwrap();
        assert!(ended.is_err(), "{what}: ended with {ended:?}");
        assert_eq!(backend.calls(), 0, "{what}");
    }
    assert_serves_others(&gw).await;
}

/// CONTINUATION floods (the 2024 advisories, RUSTSEC-2024-0332): a HEADERS
/// frame without END_HEADERS followed by up to a million CONTINUATION
/// frames that never end the block, small or empty. The server must give
/// up on the block (GOAWAY or close) rather than collect it or spin on it.
#[tokio::test]
async fn continuation_floods_are_cut_off() {
    const FLOOD: usize = 1_000_000;
    let backend = Backend::new();
    let gw = server(&backend).await;
    // One literal header per frame, or nothing at all.
    let mut small = Vec::new();
    literal_indexed_name(32, b"a=b", &mut small); // `cookie`
    for (what, fragment) in [
        ("small CONTINUATIONs", small),
        ("empty CONTINUATIONs", Vec::new()),
    ] {
        let (mut raw, write) = Raw::connect(gw.addr).await;
        let head = frame(HEADERS, END_STREAM, 1, &request_block("/"));
        let frames = std::iter::once(head).chain(std::iter::repeat_n(
            frame(CONTINUATION, 0, 1, &fragment),
            FLOOD,
        ));
        let writer = write_frames(write, frames);
        let ending = raw.until_closed(what).await;
        drop(writer.await.unwrap());
        if let Some(code) = ending.goaway {
            assert_ne!(code, u32::from(Reason::NO_ERROR), "{what}: {ending:?}");
        }
        assert_eq!(backend.calls(), 0, "{what}");
    }
    assert_serves_others(&gw).await;
}

/// An HPACK bomb: one 4 KB header put in the dynamic table, then referenced
/// 4,000 times with one byte each (8 KB on the wire, 16 MB decoded). The
/// server stops decoding at its limit and ends the connection.
#[tokio::test]
async fn an_hpack_bomb_is_cut_off() {
    let backend = Backend::new();
    let gw = server(&backend).await;
    let mut block = request_block("/");
    // Literal with incremental indexing, new name: dynamic entry 62.
    block.push(0x40);
    hpack_str(b"x-bomb", &mut block);
    hpack_str(&[b'a'; 4000], &mut block);
    block.extend(std::iter::repeat_n(0x80 | 62, 4000));
    let (mut raw, mut write) = Raw::connect(gw.addr).await;
    write
        .write_all(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &block))
        .await
        .unwrap();
    let ending = raw.until_closed("an HPACK bomb").await;
    assert!(
        ending.goaway.is_some_and(|code| code != 0) || ending.resets.contains_key(&1),
        "{ending:?}"
    );
    assert_eq!(backend.calls(), 0);
    assert_serves_others(&gw).await;
}

/// Streams the server has to reset itself, for malformed requests (no
/// `:scheme`, no `:path`) and for streams past the concurrency limit,
/// count toward `max_local_error_reset_streams` (1,024, RUSTSEC-2024-0003;
/// MadeYouReset, CVE-2025-8671, is the same shape): past it the connection
/// gets GOAWAY, and none of them reaches the backend.
#[tokio::test]
async fn a_flood_of_malformed_streams_ends_in_goaway() {
    const FLOOD: usize = 5_000;
    let backend = Backend::new();
    let gw = server(&backend).await;
    let (mut raw, write) = Raw::connect(gw.addr).await;
    let writer = write_frames(
        write,
        (0..FLOOD).map(|n| frame(HEADERS, END_HEADERS | END_STREAM, stream_id(n), &[0x82])),
    );
    let ending = raw.until_closed("malformed streams").await;
    let (written, _) = writer.await.unwrap();
    assert_eq!(
        ending.goaway,
        Some(u32::from(Reason::ENHANCE_YOUR_CALM)),
        "{written} streams written, {} reset, then {:?}",
        ending.resets.len(),
        ending.goaway
    );
    assert!(
        ending.resets.len() <= MAX_LOCAL_ERROR_RESETS,
        "{} streams reset before GOAWAY",
        ending.resets.len()
    );
    // Malformed streams are reset with PROTOCOL_ERROR; while their resets
    // wait to be written they still count as open, so later streams may
    // be refused instead.
    let allowed = [Reason::PROTOCOL_ERROR, Reason::REFUSED_STREAM].map(u32::from);
    assert!(
        ending.resets.values().all(|code| allowed.contains(code)),
        "{ending:?}"
    );
    assert_eq!(backend.calls(), 0);
    assert_serves_others(&gw).await;
}

/// Waits until `counter` has not moved for a second (it must have moved
/// first); returns its value. Fails if it is still moving after [`BOUND`].
async fn settled(what: &str, counter: impl Fn() -> usize) -> usize {
    eventually(what, || std::future::ready(counter() > 0)).await;
    let mut last = counter();
    let mut quiet = 0;
    for _ in 0..100 {
        sleep(Duration::from_millis(100)).await;
        let now = counter();
        if now == last {
            quiet += 1;
            if quiet == 10 {
                return now;
            }
        } else {
            (last, quiet) = (now, 0);
        }
    }
    panic!("{what}: still growing after {BOUND:?} ({last} bytes)");
}

/// Stalled flow control, two ways, on a route with a 1 GiB body.
///
/// A client that never sends WINDOW_UPDATE (the `h2` client never releases
/// capacity unless told to) holds the server to its 64 KiB window: the
/// backend body is pulled no further than that and a few chunks.
///
/// A client that opens a 2 GiB window and then stops reading the socket
/// is held by the per-stream send buffer (`max_send_buf_size`, 400 KiB)
/// plus what the kernel's socket buffers take: far from the whole body.
///
/// Either way another client is served meanwhile, and the body is dropped
/// once the client goes. (Left alone, the second client is closed by the
/// keep-alive ping, 20 s + 20 s: about 40 s when tried, too long to wait
/// for here.)
#[tokio::test]
async fn a_client_that_stalls_flow_control_holds_bounded_memory() {
    let backend = Backend::new();
    let gw = server(&backend).await;
    let authority = gw.addr.to_string();
    let big = CHUNK.len() * BIG_CHUNKS;

    // 1. Never a WINDOW_UPDATE.
    let io = TcpStream::connect(gw.addr).await.unwrap();
    let (client, conn) = h2::client::handshake(io).await.unwrap();
    let conn = tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let (response, _) = client
        .send_request(h2_get(&authority, "/big"), true)
        .unwrap();
    let response = timeout(BOUND, response).await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let pulled = settled("the stalled body", || backend.produced()).await;
    assert!(
        pulled <= 65_535 + 4 * CHUNK.len(),
        "{pulled} bytes of the body were pulled for a 64 KiB window"
    );
    assert_serves_others(&gw).await;
    drop(response);
    conn.abort();
    eventually("the stalled body is dropped when its client goes", || {
        std::future::ready(backend.in_flight() == 0)
    })
    .await;

    // 2. A huge window, then the socket is no longer read.
    let before = backend.produced();
    let io = TcpStream::connect(gw.addr).await.unwrap();
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(i32::MAX.unsigned_abs())
        .initial_connection_window_size(i32::MAX.unsigned_abs())
        .handshake::<_, Bytes>(io)
        .await
        .unwrap();
    let mut conn = Box::pin(conn);
    let mut client = client.ready().await.unwrap();
    let (response, _) = client
        .send_request(h2_get(&authority, "/big"), true)
        .unwrap();
    // Drive the connection until the response head is in, then stop.
    let response = tokio::select! {
        response = response => response.unwrap(),
        ended = &mut conn => panic!("the connection ended: {ended:?}"),
        () = sleep(BOUND) => panic!("no response head in time"),
    };
    assert_eq!(response.status(), StatusCode::OK);
    let pulled = settled("the unread body", || backend.produced() - before).await;
    // The socket buffers of loopback may take tens of MiB; the body is
    // 1 GiB.
    assert!(
        pulled < 128 * 1024 * 1024,
        "{pulled} bytes of a {big}-byte body were pulled for a client that stopped reading \
         (send buffer {MAX_SEND_BUF_SIZE})"
    );
    assert_serves_others(&gw).await;
    // Once the client goes, the server drops the body.
    drop(conn);
    eventually("the unread body is dropped when its client goes", || {
        std::future::ready(backend.in_flight() == 0)
    })
    .await;
}

/// An HTTP/2 slowloris: a header block that never ends, on a connection
/// that has served nothing yet, is closed by the header read timeout.
#[tokio::test]
async fn a_header_block_that_never_ends_is_closed_by_the_header_read_timeout() {
    let backend = Backend::new();
    let (listener, addr) = listener().await;
    tokio::spawn(
        tollgate::serve(listener, backend.router(), std::future::pending())
            .header_read_timeout(Duration::from_millis(300))
            .into_future(),
    );
    let (mut raw, mut write) = Raw::connect(addr).await;
    write
        .write_all(&frame(HEADERS, END_STREAM, 1, &request_block("/")))
        .await
        .unwrap();
    raw.until_closed("a header block without END_HEADERS").await;
    assert_eq!(backend.calls(), 0);
}

/// Settings of one's own (`Serve::http2`) are the ones advertised, and
/// enforced: a header list under the default limit but over this one is
/// refused.
#[tokio::test]
async fn http2_settings_of_ones_own_are_advertised_and_enforced() {
    let backend = Backend::new();
    let mut http2 = tollgate::Http2Settings::default();
    http2.max_concurrent_streams = 50;
    http2.max_header_list_size = 8 * 1024;
    http2.initial_stream_window_size = 128 * 1024;
    let (listener, addr) = listener().await;
    tokio::spawn(
        tollgate::serve(listener, backend.router(), std::future::pending())
            .http2(http2)
            .into_future(),
    );
    let (raw, _write) = Raw::connect(addr).await;
    raw.assert_settings(&[
        (SETTINGS_MAX_CONCURRENT_STREAMS, 50),
        (SETTINGS_MAX_HEADER_LIST_SIZE, 8 * 1024),
        (SETTINGS_INITIAL_WINDOW_SIZE, 128 * 1024),
    ]);

    let io = TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let mut req = h2_get(&addr.to_string(), "/");
    req.headers_mut()
        .insert("x-big", "a".repeat(12 * 1024).parse().unwrap());
    match client.send_request(req, true) {
        Ok((response, _)) => match timeout(BOUND, response).await.expect("answered in time") {
            Ok(response) => assert_eq!(
                response.status(),
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            ),
            Err(err) => assert!(err.is_reset(), "{err:?}"),
        },
        // The client itself may hold to the advertised limit.
        Err(err) => assert!(err.to_string().contains("header"), "{err}"),
    }
    assert_eq!(backend.calls(), 0);
}

/// `[server.http2]` in the config file reaches the listener.
#[tokio::test]
async fn http2_settings_come_from_the_config_file() {
    use tollgate::config::{ConfigFile, Server};
    let text = "[server]\nlisten = \"127.0.0.1:0\"\n\n[server.http2]\n\
                max_concurrent_streams = 64\ninitial_stream_window_size = 262144\n\n\
                [admin]\nenabled = false\n";
    let server = Server::start(ConfigFile::parse(text).unwrap())
        .await
        .unwrap();
    let (raw, write) = Raw::connect(server.local_addr()).await;
    raw.assert_settings(&[
        (SETTINGS_MAX_CONCURRENT_STREAMS, 64),
        (SETTINGS_INITIAL_WINDOW_SIZE, 262_144),
    ]);
    drop((raw, write));
    server.shutdown().await.unwrap();
}
