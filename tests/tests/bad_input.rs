//! Hostile input on the wire: malformed request lines, headers, framing
//! and paths, sent as raw bytes. Each one gets a 4xx problem+json — from
//! the router, or, where hyper refuses the bytes before the router, hyper's
//! answer turned into a problem by `serve()` — and never reaches the
//! upstream. The gateway keeps serving afterwards.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "helpers outside #[test] fns fail the calling test by panicking"
)]

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::Router;
use http::StatusCode;
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tollgate::{Gateway, Route, Upstream, core::problem::BAD_REQUEST};
use tollgate_tests::{
    RunningGateway, body_json, client, echo_router, empty, h2_client, raw_exchange, spawn_gateway,
    spawn_upstream,
};

/// A gateway sending every path to an echo upstream that counts requests.
async fn gateway() -> (RunningGateway, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&hits);
    let echo = echo_router().layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            counted.fetch_add(1, Ordering::SeqCst);
            next.run(req)
        },
    ));
    let up = spawn_upstream(Router::new().merge(echo)).await;
    let router = Gateway::builder()
        .upstream(Upstream::builder("up").endpoint(format!("http://{up}")))
        .route(Route::prefix("/").to("up"))
        .build()
        .unwrap();
    (spawn_gateway(router).await, hits)
}

/// The status code of a raw response.
fn status(raw: &str) -> u16 {
    raw.strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP/1.1 response: {raw:?}"))
}

/// The JSON body of a raw problem response (read to EOF).
fn problem(raw: &str) -> Value {
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head");
    assert!(
        head.to_ascii_lowercase()
            .contains("\r\ncontent-type: application/problem+json"),
        "{head}"
    );
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Sends `raw` on a fresh connection and asserts that the request hyper
/// refused before the router got the `expected` status as a problem+json,
/// and that the connection is closed.
async fn assert_refused_by_hyper(gw: &RunningGateway, raw: &[u8], expected: u16) {
    let answer = raw_exchange(gw.addr, raw).await;
    assert_eq!(
        status(&answer),
        expected,
        "{:?} got {answer:?}",
        String::from_utf8_lossy(raw)
    );
    // hyper refuses these before the router; serve() turns its bare
    // answer into a problem.
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    assert!(
        head.contains("content-type: application/problem+json"),
        "{answer}"
    );
    let problem: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"));
    assert_eq!(problem["status"], expected, "{answer}");
    assert!(
        problem["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("urn:tollgate:problem:")),
        "{answer}"
    );
}

/// The gateway still proxies, and the upstream has seen no request but
/// that one.
async fn assert_still_serving(gw: &RunningGateway, hits: &AtomicUsize) {
    assert_still_serving_after(gw, hits, 0).await;
}

/// The gateway still proxies, and the upstream has seen `earlier` requests
/// before that one.
async fn assert_still_serving_after(gw: &RunningGateway, hits: &AtomicUsize, earlier: usize) {
    let req = http::Request::get(gw.url("/fine")).body(empty()).unwrap();
    let res = tokio::time::timeout(Duration::from_secs(10), client().request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body_json(res).await["uri"], "/fine");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        earlier + 1,
        "the upstream saw a bad request"
    );
}

/// What one raw request got.
struct Outcome {
    request: String,
    answer: String,
    reached_upstream: bool,
}

impl Outcome {
    /// A 4xx that never reached the upstream; with `problem`, the gateway's
    /// own problem+json with a matching `status`.
    fn refused(&self, problem: bool) -> bool {
        let code = status(&self.answer);
        let is_problem = self
            .answer
            .split_once("\r\n\r\n")
            .and_then(|(_, body)| serde_json::from_str::<Value>(body).ok())
            .is_some_and(|p| p["status"] == code && p["type"].is_string());
        (400..500).contains(&code) && !self.reached_upstream && (is_problem || !problem)
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let head = self.answer.split("\r\n").next().unwrap_or_default();
        write!(
            f,
            "{:?} got {head:?}{}",
            self.request,
            if self.reached_upstream {
                " and reached the upstream"
            } else {
                ""
            }
        )
    }
}

/// Sends each of `raws` on its own connection (each must make the server
/// close it) and records what happened, so that one report names every
/// case that is not refused.
async fn send_each(gw: &RunningGateway, hits: &AtomicUsize, raws: &[&[u8]]) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for raw in raws {
        let before = hits.load(Ordering::SeqCst);
        let answer = raw_exchange(gw.addr, raw).await;
        outcomes.push(Outcome {
            request: String::from_utf8_lossy(raw).into_owned(),
            answer,
            reached_upstream: hits.load(Ordering::SeqCst) != before,
        });
    }
    outcomes
}

/// Fails with every outcome that is not refused.
fn assert_all_refused(outcomes: &[Outcome], problem: bool) {
    let accepted: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.refused(problem))
        .map(ToString::to_string)
        .collect();
    assert!(
        accepted.is_empty(),
        "{} of {} hostile requests were not refused:\n  {}",
        accepted.len(),
        outcomes.len(),
        accepted.join("\n  ")
    );
}

#[tokio::test]
async fn bad_request_lines_are_400() {
    let (gw, hits) = gateway().await;
    for raw in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET / FTP/1.1\r\nHost: x\r\n\r\n",
        b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    ] {
        assert_refused_by_hyper(&gw, raw, 400).await;
    }
    assert_still_serving(&gw, &hits).await;
}

#[tokio::test]
async fn invalid_header_bytes_are_400() {
    let (gw, hits) = gateway().await;
    for raw in [
        &b"GET / HTTP/1.1\r\nHost: x\r\nX-Bad: a\x00b\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Bad: a\x7fb\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Bad\x01: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nNo-Colon\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n: empty-name\r\n\r\n",
        // obs-fold (RFC 9112 5.2)
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n",
    ] {
        assert_refused_by_hyper(&gw, raw, 400).await;
    }
    assert_still_serving(&gw, &hits).await;
}

/// Sends a head made of `header_lines` while reading the answer, so that a
/// server that answers and closes early cannot make the write fail the test.
async fn send_huge_head(addr: SocketAddr, header_lines: Vec<u8>) -> String {
    let mut raw = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".to_vec();
    raw.extend_from_slice(&header_lines);
    raw.extend_from_slice(b"\r\n");
    send_large(addr, raw).await
}

/// Sends `raw` in pieces while reading the answer.
async fn send_large(addr: SocketAddr, raw: Vec<u8>) -> String {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        for piece in raw.chunks(16 * 1024) {
            if write.write_all(piece).await.is_err() {
                break;
            }
        }
        write
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read_all)
        .await
        .expect("the server did not close the connection within 10 s");
    drop(writer.await);
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn huge_header_blocks_are_431() {
    let (gw, hits) = gateway().await;
    // One header of 1 MiB.
    let mut one = b"X-Huge: ".to_vec();
    one.resize(one.len() + (1 << 20), b'a');
    one.extend_from_slice(b"\r\n");
    // 500 small headers of 1 KiB.
    let mut many = Vec::new();
    for i in 0..500 {
        many.extend_from_slice(format!("X-H{i}: {}\r\n", "b".repeat(1024)).as_bytes());
    }
    // More headers than hyper keeps (100), each tiny.
    let mut count = Vec::new();
    for i in 0..150 {
        count.extend_from_slice(format!("X-C{i}: c\r\n").as_bytes());
    }
    for lines in [one, many, count] {
        let answer = send_huge_head(gw.addr, lines).await;
        assert_eq!(status(&answer), 431, "{answer}");
        assert_eq!(
            problem(&answer)["type"],
            "urn:tollgate:problem:headers-too-large",
            "{answer}"
        );
    }
    assert_still_serving(&gw, &hits).await;
}

/// `n` header lines of `size` bytes each, `X-Hn: bbb…\r\n`.
fn header_lines(n: usize, size: usize) -> Vec<u8> {
    let mut lines = Vec::new();
    for i in 0..n {
        let name = format!("X-H{i}: ");
        let value = "b".repeat(size - name.len() - 2);
        lines.extend_from_slice(format!("{name}{value}\r\n").as_bytes());
    }
    lines
}

/// The default head limit is 64 KiB (hyper's own, about 400 KiB, let one
/// connection hold six times that): a 160 KiB head gets a 431 problem
/// and never reaches the upstream, a 60 KiB one is served. (hyper reads
/// in blocks of up to the limit and checks between reads, so only a head
/// over twice the limit is refused whatever its timing.)
#[tokio::test]
async fn heads_over_the_default_64_kib_are_431() {
    let (gw, hits) = gateway().await;
    let answer = send_huge_head(gw.addr, header_lines(40, 4096)).await;
    assert_eq!(status(&answer), 431, "{answer}");
    assert_eq!(
        problem(&answer)["type"],
        "urn:tollgate:problem:headers-too-large"
    );
    let answer = send_huge_head(gw.addr, header_lines(15, 4096)).await;
    assert_eq!(status(&answer), 200, "{answer}");
    assert_still_serving_after(&gw, &hits, 1).await;
}

/// [`gateway`]'s router on a listener with these head limits.
async fn gateway_with_head_limits(size: usize, count: usize) -> SocketAddr {
    let up = spawn_upstream(echo_router()).await;
    let router = Gateway::builder()
        .upstream(Upstream::builder("up").endpoint(format!("http://{up}")))
        .route(Route::prefix("/").to("up"))
        .build()
        .unwrap();
    let (listener, addr) = tollgate_tests::listener().await;
    tokio::spawn(
        tollgate::serve(listener, router, std::future::pending())
            .max_header_size(size)
            .max_headers(count)
            .into_future(),
    );
    addr
}

/// `Serve::max_header_size` and `Serve::max_headers` set the limits.
#[tokio::test]
async fn head_limits_are_set_on_the_listener() {
    let addr = gateway_with_head_limits(16 * 1024, 10).await;
    // Size: 40 KiB refused, 12 KiB served.
    let answer = send_huge_head(addr, header_lines(4, 10 * 1024)).await;
    assert_eq!(status(&answer), 431, "{answer}");
    let answer = send_huge_head(addr, header_lines(3, 4096)).await;
    assert_eq!(status(&answer), 200, "{answer}");
    // Count: `Host`, `Connection` and 9 more refused, and 8 more served.
    let answer = send_huge_head(addr, header_lines(9, 16)).await;
    assert_eq!(status(&answer), 431, "{answer}");
    assert_eq!(
        problem(&answer)["type"],
        "urn:tollgate:problem:headers-too-large"
    );
    let answer = send_huge_head(addr, header_lines(8, 16)).await;
    assert_eq!(status(&answer), 200, "{answer}");
}

#[tokio::test]
async fn conflicting_content_lengths_are_400() {
    let (gw, hits) = gateway().await;
    for raw in [
        &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"[..],
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    ] {
        assert_refused_by_hyper(&gw, raw, 400).await;
    }
    assert_still_serving(&gw, &hits).await;
}

#[tokio::test]
async fn transfer_encoding_other_than_chunked_is_400() {
    let (gw, hits) = gateway().await;
    for raw in [
        &b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        assert_refused_by_hyper(&gw, raw, 400).await;
    }
    assert_still_serving(&gw, &hits).await;
}

const SMUGGLE_CL_FIRST: &[u8] = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\
    Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
const SMUGGLE_TE_FIRST: &[u8] = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\
    Content-Length: 4\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

/// The request-smuggling shape, both framings at once. hyper takes
/// Transfer-Encoding alone and drops Content-Length before the router sees
/// it, as RFC 9112 §6.3 allows, then closes the connection; the router's own
/// check (`validate_request`) cannot see it. So what is asserted is that
/// nothing is smuggled: the body is framed by Transfer-Encoding alone, the upstream never sees the
/// Content-Length nor the pipelined request, and the connection is closed.
#[tokio::test]
async fn content_length_with_chunked_cannot_smuggle() {
    let (gw, hits) = gateway().await;
    for (i, raw) in [SMUGGLE_CL_FIRST, SMUGGLE_TE_FIRST].into_iter().enumerate() {
        // raw_exchange reads until the gateway closes the connection.
        let answer = raw_exchange(gw.addr, raw).await;
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
        assert!(!answer.contains("/smuggled"), "{answer}");
        if status(&answer) == 200 {
            let (_, body) = answer.split_once("\r\n\r\n").unwrap();
            let echo: Value = serde_json::from_str(body).unwrap();
            assert_eq!(echo["uri"], "/", "{echo}");
            assert_eq!(echo["body"], "", "{echo}");
            assert!(echo["headers"].get("content-length").is_none(), "{echo}");
        }
        assert!(hits.load(Ordering::SeqCst) <= i + 1);
    }
    let forwarded = hits.load(Ordering::SeqCst);
    assert_still_serving_after(&gw, &hits, forwarded).await;
}

/// RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request without a
/// Host, with more than one, or with an invalid one.
#[tokio::test]
async fn missing_duplicate_or_invalid_host_is_400() {
    let (gw, hits) = gateway().await;
    let outcomes = send_each(
        &gw,
        &hits,
        &[
            b"GET /nohost HTTP/1.1\r\nConnection: close\r\n\r\n",
            b"GET /twohosts HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n",
            b"GET /badhost HTTP/1.1\r\nHost: a b/c\r\nConnection: close\r\n\r\n",
            b"GET /badhost HTTP/1.1\r\nHost: a.example\x80\r\nConnection: close\r\n\r\n",
        ],
    )
    .await;
    assert_all_refused(&outcomes, true);
    for o in &outcomes {
        assert_eq!(status(&o.answer), 400, "{o}");
    }
    assert_still_serving(&gw, &hits).await;
}

#[tokio::test]
async fn absolute_form_junk_is_refused() {
    let (gw, hits) = gateway().await;
    for raw in [
        &b"GET http://[::1/x HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"GET http://exa mple.com/ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http://us\x01er@host/x HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http:///x HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http://host/\x7f HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET x/y HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        assert_refused_by_hyper(&gw, raw, 400).await;
    }
    // The asterisk form, which hyper accepts: the target is not a path.
    let answer = raw_exchange(
        gw.addr,
        b"GET * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&answer), 400, "{answer}");
    assert_eq!(problem(&answer)["type"], BAD_REQUEST, "{answer}");
    assert_still_serving(&gw, &hits).await;
}

/// The authority form is for CONNECT (RFC 9112 §3.2.3), and a reverse proxy
/// has no business tunnelling CONNECT to its upstreams: both get a problem,
/// and the upstream sees nothing.
#[tokio::test]
async fn authority_form_and_connect_are_refused() {
    let (gw, hits) = gateway().await;
    let outcomes = send_each(
        &gw,
        &hits,
        &[
            b"GET example.com:80 HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nConnection: close\r\n\r\n",
        ],
    )
    .await;
    assert_all_refused(&outcomes, true);
    assert_still_serving(&gw, &hits).await;
}

#[tokio::test]
async fn dot_segments_are_400_problems() {
    let (gw, hits) = gateway().await;
    for path in [
        "/a/../b",
        "/..",
        "/a/..",
        "/./a",
        "/a/%2e%2e/b",
        "/a/%2E%2e/b",
        "/a/.%2e/b",
        "/a/%2e./b",
        "/a/%2e/b",
        "/a/../b?q=1",
    ] {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let answer = raw_exchange(gw.addr, raw.as_bytes()).await;
        assert_eq!(status(&answer), 400, "{path}: {answer}");
        let p = problem(&answer);
        assert_eq!(p["type"], BAD_REQUEST, "{path}: {p}");
        assert_eq!(p["status"], 400, "{path}: {p}");
    }
    // Absolute form.
    let answer = raw_exchange(
        gw.addr,
        b"GET http://x/a/%2e%2e/b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(problem(&answer)["type"], BAD_REQUEST, "{answer}");
    // And over HTTP/2.
    let req = http::Request::get(gw.url("/a/%2e%2e/b"))
        .body(empty())
        .unwrap();
    let res = h2_client().request(req).await.unwrap();
    assert_eq!(res.version(), http::Version::HTTP_2);
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body_json(res).await["type"], BAD_REQUEST);
    assert_still_serving(&gw, &hits).await;
}

/// A request target longer than hyper accepts is 414, as a problem.
#[tokio::test]
async fn an_over_long_uri_is_414_problem() {
    // A URI over the `http` crate's 65,534 bytes. Under the default 64 KiB
    // head limit the head is too large before the URI is judged: 431.
    let mut raw = b"GET /".to_vec();
    raw.resize(raw.len() + 70_000, b'a');
    raw.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\n\r\n");
    let (gw, hits) = gateway().await;
    let answer = send_large(gw.addr, raw.clone()).await;
    assert_eq!(status(&answer), 431, "{answer}");
    assert_still_serving(&gw, &hits).await;

    let addr = gateway_with_head_limits(128 * 1024, 100).await;
    let answer = send_large(addr, raw).await;
    assert_eq!(status(&answer), 414, "{answer}");
    assert_eq!(
        problem(&answer)["type"],
        "urn:tollgate:problem:uri-too-long",
        "{answer}"
    );
}
