//! `tollgate::serve`: HTTP/1.1 and HTTP/2 on one listener, graceful
//! shutdown, the drain timeout and the header read timeout.

#![expect(
    clippy::expect_used,
    reason = "helpers outside #[test] fns fail the test with a message"
)]

use std::{net::SocketAddr, time::Duration};

use axum::{Router, routing::get};
use http::{Request, StatusCode, Version};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::{mpsc, oneshot},
    task::JoinHandle,
    time::timeout,
};
use tollgate::core::Drain;
use tollgate::{Gateway, Route, Upstream};
use tollgate_tests::{
    ClientBody, RunningGateway,
    auth_support::eventually,
    backend_support::{BIG_CHUNKS, Backend, CHUNK},
    body_bytes, body_json, client, echo_router, empty, forever, h2_client, raw_exchange,
    spawn_gateway, spawn_gateway_with_drain, spawn_upstream,
};

/// A server started here: its address, its stop and its task.
type Served = (
    SocketAddr,
    oneshot::Sender<()>,
    JoinHandle<std::io::Result<()>>,
);

/// Safety bound: a bug fails the test instead of hanging it.
const BOUND: Duration = Duration::from_secs(10);

/// A gateway router sending everything to the upstream at `addr`.
fn gateway_to(addr: SocketAddr) -> Router {
    Gateway::builder()
        .upstream(Upstream::builder("backend").endpoint(format!("http://{addr}")))
        .route(Route::prefix("/").to("backend"))
        .build()
        .expect("valid gateway")
}

/// The body the slow upstream sends: big enough to need several writes.
fn slow_body() -> String {
    "tollgate drains in-flight requests\n".repeat(8 * 1024)
}

/// An upstream that reports each request on the channel, then answers
/// `slow_body()` after 500 ms.
async fn slow_upstream() -> (SocketAddr, mpsc::Receiver<()>) {
    let (tx, rx) = mpsc::channel(8);
    let router = Router::new().route(
        "/slow",
        get(move || async move {
            let _ = tx.send(()).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            slow_body()
        }),
    );
    (spawn_upstream(router).await, rx)
}

/// An upstream that reports each request, then never answers.
async fn hung_upstream() -> (SocketAddr, mpsc::Receiver<()>) {
    let (tx, rx) = mpsc::channel(8);
    let router = Router::new().route(
        "/hang",
        get(move || async move {
            let _ = tx.send(()).await;
            forever().await
        }),
    );
    (spawn_upstream(router).await, rx)
}

/// `GET url` on a task, so that the test can shut the server down while the
/// request is in flight. Resolves to the status and the whole body.
fn spawn_get(
    client: Client<HttpConnector, ClientBody>,
    url: String,
) -> JoinHandle<Result<(StatusCode, Version, String), String>> {
    tokio::spawn(async move {
        let req = Request::get(url).body(empty()).map_err(|e| e.to_string())?;
        let res = client.request(req).await.map_err(|e| format!("{e:?}"))?;
        let (status, version) = (res.status(), res.version());
        let body = http_body_util::BodyExt::collect(res.into_body())
            .await
            .map_err(|e| format!("{e:?}"))?
            .to_bytes();
        Ok((status, version, String::from_utf8_lossy(&body).into_owned()))
    })
}

/// Waits (bounded) for the server task to resolve, and checks it did so
/// with `Ok`.
async fn assert_stops(gw: RunningGateway) {
    let result = timeout(BOUND, gw.task)
        .await
        .expect("the server stopped in time")
        .expect("the server task did not panic");
    assert!(result.is_ok(), "serve returned {result:?}");
}

/// GETs `url` with `client` and returns the response's version and the
/// echo upstream's JSON.
async fn echo_via(
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        tollgate_tests::ClientBody,
    >,
    url: String,
) -> (Version, serde_json::Value) {
    let req = Request::get(url).body(empty()).expect("request");
    let res = timeout(BOUND, client.request(req))
        .await
        .expect("in time")
        .expect("response");
    assert_eq!(res.status(), StatusCode::OK);
    let version = res.version();
    (version, body_json(res).await)
}

#[tokio::test]
async fn http2_and_http1_clients_share_one_listener() {
    let upstream = spawn_upstream(echo_router()).await;
    let mut gw = spawn_gateway(gateway_to(upstream)).await;

    let (version, seen) = echo_via(h2_client(), gw.url("/users/7?via=h2")).await;
    assert_eq!(version, Version::HTTP_2);
    assert_eq!(seen["uri"], "/users/7?via=h2");
    assert_eq!(seen["version"], "HTTP/1.1", "the upstream speaks HTTP/1.1");
    assert_eq!(seen["method"], "GET");

    let (version, seen) = echo_via(client(), gw.url("/users/8?via=h1")).await;
    assert_eq!(version, Version::HTTP_11);
    assert_eq!(seen["uri"], "/users/8?via=h1");
    assert_eq!(seen["version"], "HTTP/1.1");

    gw.shutdown();
    assert_stops(gw).await;
}

/// Starts a slow request with `client`, shuts the server down while it is
/// in flight, and checks the request still completes in full.
async fn in_flight_request_survives_shutdown(
    client: Client<HttpConnector, ClientBody>,
    version: Version,
) {
    let (upstream, mut arrived) = slow_upstream().await;
    let mut gw = spawn_gateway(gateway_to(upstream)).await;

    let in_flight = spawn_get(client, gw.url("/slow"));
    timeout(BOUND, arrived.recv())
        .await
        .expect("the request reached the upstream in time")
        .expect("upstream channel open");
    gw.shutdown();

    let (status, got_version, body) = timeout(BOUND, in_flight)
        .await
        .expect("the in-flight request finished in time")
        .expect("request task did not panic")
        .expect("the in-flight request completed");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got_version, version);
    assert_eq!(body.len(), slow_body().len());
    assert!(body == slow_body(), "the body was cut or changed");

    // The listener is closed: new connections are refused.
    let connect = timeout(BOUND, TcpStream::connect(gw.addr))
        .await
        .expect("connect attempt finished in time");
    assert!(
        connect.is_err(),
        "a new connection was accepted after shutdown"
    );
    assert_stops(gw).await;
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_http1_request_finish_then_refuses_connections() {
    in_flight_request_survives_shutdown(client(), Version::HTTP_11).await;
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_http2_request_finish_then_refuses_connections() {
    in_flight_request_survives_shutdown(h2_client(), Version::HTTP_2).await;
}

#[tokio::test]
async fn idle_connections_do_not_hold_up_shutdown() {
    let upstream = spawn_upstream(echo_router()).await;
    // A drain time far beyond the safety bound: only closing the idle
    // connections at once lets the server stop in time.
    let mut gw = spawn_gateway_with_drain(gateway_to(upstream), Duration::from_secs(600)).await;
    // Two connections that have not said which protocol they speak: one is
    // silent, one stalls inside the HTTP/2 preface.
    let silent = TcpStream::connect(gw.addr).await.expect("connect");
    let mut preface = TcpStream::connect(gw.addr).await.expect("connect");
    preface
        .write_all(b"PRI * HTTP/2.0\r\n")
        .await
        .expect("write");
    // Then keep-alive connections, HTTP/1.1 and HTTP/2. The server accepts
    // in order, so once these are served the two above are accepted too.
    let h1 = client();
    let h2 = h2_client();
    for c in [&h1, &h2] {
        let req = Request::get(gw.url("/x")).body(empty()).expect("request");
        let res = timeout(BOUND, c.request(req))
            .await
            .expect("in time")
            .expect("request");
        assert_eq!(res.status(), StatusCode::OK);
        body_bytes(res).await;
    }
    // The pooled connections are idle now, kept open by the clients.
    gw.shutdown();
    assert_stops(gw).await;
    drop((h1, h2, silent, preface));
}

#[tokio::test]
async fn the_drain_timeout_closes_requests_that_never_finish() {
    let (upstream, mut arrived) = hung_upstream().await;
    let mut gw = spawn_gateway_with_drain(gateway_to(upstream), Duration::from_millis(300)).await;

    let in_flight = spawn_get(client(), gw.url("/hang"));
    timeout(BOUND, arrived.recv())
        .await
        .expect("the request reached the upstream in time")
        .expect("upstream channel open");
    gw.shutdown();
    assert_stops(gw).await;

    let result = timeout(BOUND, in_flight)
        .await
        .expect("the client saw the connection close in time")
        .expect("request task did not panic");
    assert!(
        result.is_err(),
        "the hung request should fail when the drain time is up, got {result:?}"
    );
}

/// Runs `serve` with a 300 ms header read timeout in front of an echo
/// upstream; returns its address and a sender that shuts it down.
async fn serve_with_header_timeout() -> Served {
    serve_with_header_timeout_to(spawn_upstream(echo_router()).await).await
}

/// The same in front of the upstream at `upstream`.
async fn serve_with_header_timeout_to(upstream: SocketAddr) -> Served {
    serve_router(gateway_to(upstream), |serve| {
        serve.header_read_timeout(Duration::from_millis(300))
    })
    .await
}

/// The shutdown future of the servers started here.
type Stop = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Serves `router` on 127.0.0.1:0, set up by `configure`, until the
/// sender fires.
async fn serve_router(
    router: Router,
    configure: impl FnOnce(tollgate::Serve<Router, Stop>) -> tollgate::Serve<Router, Stop>,
) -> Served {
    let (listener, addr) = tollgate_tests::listener().await;
    let (tx, rx) = oneshot::channel::<()>();
    let stop: Stop = Box::pin(async move {
        let _ = rx.await;
    });
    let task = tokio::spawn(configure(tollgate::serve(listener, router, stop)).into_future());
    (addr, tx, task)
}

#[tokio::test]
async fn a_client_that_stalls_mid_head_is_disconnected() {
    let (addr, stop, task) = serve_with_header_timeout().await;

    for partial in [
        "GET /api/us",
        "GET /api/users HTTP/1.1\r\n",
        "GET /api/users HTTP/1.1\r\nHost: gw\r\nX-Slow: a",
    ] {
        // raw_exchange reads until the server closes (bounded by 10 s).
        let answer = raw_exchange(addr, partial.as_bytes()).await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{partial:?}: {answer}"
        );
    }

    // A client that sends its head in time is served.
    let answer = raw_exchange(
        addr,
        b"GET /ok HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");

    stop_server(stop, task).await;
}

/// Reads one response with a `content-length` body from a keep-alive
/// connection; returns its head.
async fn read_response(stream: &mut TcpStream) -> String {
    let (head, mut body) = timeout(BOUND, tollgate_tests::read_head(stream))
        .await
        .expect("answered in time")
        .expect("a response head");
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .and_then(|v| v.trim().parse().ok())
        })
        .expect("a response with a content-length");
    let mut chunk = vec![0u8; 16 * 1024];
    while body.len() < length {
        let n = timeout(BOUND, stream.read(&mut chunk))
            .await
            .expect("body in time")
            .expect("read");
        assert!(
            n > 0,
            "closed mid-body after {} of {length} bytes",
            body.len()
        );
        body.extend_from_slice(&chunk[..n]);
    }
    head
}

/// Sends `GET {path}` on a keep-alive connection; expects a 200.
async fn get_ok(stream: &mut TcpStream, path: &str) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: gw\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let head = read_response(stream).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "GET {path}: {head}");
}

/// Expects the server to close `stream` within 5 s (the header read
/// timeout is 300 ms), with no answer or a 408.
async fn assert_closed(stream: &mut TcpStream, what: &str) {
    let mut out = Vec::new();
    let read = timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    assert!(
        read.is_ok(),
        "{what} was still open 5 s later (header read timeout 300 ms)"
    );
    assert!(
        out.is_empty() || out.starts_with(b"HTTP/1.1 408"),
        "{what}: {out:?}"
    );
}

/// Shuts down a server started here; it must stop cleanly.
async fn stop_server(stop: oneshot::Sender<()>, task: JoinHandle<std::io::Result<()>>) {
    let _ = stop.send(());
    let result = timeout(BOUND, task)
        .await
        .expect("stopped in time")
        .expect("no panic");
    assert!(result.is_ok(), "{result:?}");
}

/// The header read timeout bounds heads only: a response that takes
/// longer than the timeout is delivered whole, and the connection then
/// serves the next request.
#[tokio::test]
async fn a_response_slower_than_the_header_timeout_is_not_cut_off() {
    let (upstream, _requests) = slow_upstream().await;
    let (addr, stop, task) = serve_with_header_timeout_to(upstream).await;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // Twice 500 ms before the upstream answers, under a 300 ms timeout.
    get_ok(&mut stream, "/slow").await;
    get_ok(&mut stream, "/slow").await;
    stop_server(stop, task).await;
}

/// On a keep-alive connection each request head has its own deadline:
/// requests spaced closer than the timeout are served for longer than the
/// timeout in all, and a later head that stalls is cut off. (A connection
/// keeps one timer for all its heads; one that did not count from each
/// response's end would close this connection after 300 ms.)
#[tokio::test]
async fn each_head_on_a_keep_alive_connection_has_its_own_deadline() {
    let (addr, stop, task) = serve_with_header_timeout().await;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // Five requests 150 ms apart, 750 ms in all, under a 300 ms timeout.
    for _ in 0..5 {
        get_ok(&mut stream, "/ok").await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // Then half a head, and nothing more: the connection is closed.
    stream
        .write_all(b"GET /ok HTTP/1.1\r\nHost: g")
        .await
        .expect("write");
    assert_closed(&mut stream, "a connection whose later head stalled").await;
    stop_server(stop, task).await;
}

/// The header read timeout is HTTP/1's: an HTTP/2 connection that has
/// started a request stays open past it, idle, and serves another stream
/// (hyper's keep-alive pings watch HTTP/2 connections instead).
#[tokio::test]
async fn an_idle_http2_connection_outlives_the_header_timeout() {
    let (addr, stop, task) = serve_with_header_timeout().await;
    let io = hyper_util::rt::TokioIo::new(TcpStream::connect(addr).await.expect("connect"));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .expect("h2 handshake");
    let conn = tokio::spawn(conn);
    for i in 0..2 {
        let req = Request::get(format!("http://{addr}/ok"))
            .body(empty())
            .expect("request");
        let res = timeout(BOUND, sender.send_request(req))
            .await
            .expect("answered in time")
            .unwrap_or_else(|err| panic!("stream {i} on the same connection: {err}"));
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.version(), Version::HTTP_2);
        // Idle for more than twice the 300 ms timeout.
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    assert!(!conn.is_finished(), "the HTTP/2 connection was closed");
    stop_server(stop, task).await;
}

/// A connection that sends nothing at all is the cheapest slowloris: the
/// header read timeout must cover it too.
#[tokio::test]
async fn a_client_that_connects_and_sends_nothing_is_disconnected() {
    let (addr, stop, task) = serve_with_header_timeout().await;

    let mut stream = TcpStream::connect(addr).await.expect("connect");
    assert_closed(&mut stream, "a silent connection").await;

    // Control: the same server answers a client that does send a request.
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /ok HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    timeout(BOUND, stream.read_to_end(&mut out))
        .await
        .expect("answered in time")
        .expect("read");
    assert!(out.starts_with(b"HTTP/1.1 200 "));

    stop_server(stop, task).await;
}

/// Sends `GET /ok` on `stream` and checks that no answer comes (and the
/// service is not called) for a while: the connection waits in the
/// accept queue.
async fn assert_waiting(stream: &mut TcpStream, backend: &Backend, served: usize) {
    stream
        .write_all(b"GET /ok HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .expect("write");
    let mut byte = [0u8; 1];
    let read = timeout(Duration::from_millis(300), stream.read(&mut byte)).await;
    assert!(read.is_err(), "answered past the limit: {read:?}");
    assert_eq!(backend.calls(), served);
}

/// At the limit, a new connection waits in the accept queue, unserved,
/// until an open one closes; then it is served, and the others go on.
#[tokio::test]
async fn at_the_connection_limit_new_connections_wait_until_one_closes() {
    let backend = Backend::new();
    let (addr, stop, task) = serve_router(backend.router(), |serve| serve.max_connections(2)).await;

    let mut first = TcpStream::connect(addr).await.expect("connect");
    get_ok(&mut first, "/ok").await;
    let mut second = TcpStream::connect(addr).await.expect("connect");
    get_ok(&mut second, "/ok").await;

    // The kernel completes the handshake (the backlog); the server does
    // not take the connection.
    let mut third = TcpStream::connect(addr).await.expect("connect");
    assert_waiting(&mut third, &backend, 2).await;

    drop(first);
    let head = read_response(&mut third).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(backend.calls(), 3);
    get_ok(&mut second, "/ok").await;
    get_ok(&mut third, "/ok").await;

    stop_server(stop, task).await;
}

/// An upgraded connection whose tunnel holds the server's drain guard
/// counts against the limit after its HTTP connection has handed it over,
/// until the tunnel ends.
#[tokio::test]
async fn an_upgraded_connection_counts_until_its_tunnel_ends() {
    let backend = Backend::new();
    let router = backend.router().route(
        "/tunnel",
        get(|mut req: Request<axum::body::Body>| async move {
            let guard = req
                .extensions()
                .get::<Drain>()
                .expect("serve puts the drain into every request")
                .guard();
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                // Holds the guard until the client closes its side.
                if let Ok(upgraded) = upgrade.await {
                    let mut io = hyper_util::rt::TokioIo::new(upgraded);
                    let mut sink = Vec::new();
                    let _ = timeout(BOUND, io.read_to_end(&mut sink)).await;
                }
                drop(guard);
            });
            http::Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "upgrade")
                .header("upgrade", "test")
                .body(axum::body::Body::empty())
                .expect("a valid response")
        }),
    );
    let (addr, stop, task) = serve_router(router, |serve| serve.max_connections(1)).await;

    let mut tunnel = TcpStream::connect(addr).await.expect("connect");
    tunnel
        .write_all(
            b"GET /tunnel HTTP/1.1\r\nHost: gw\r\nConnection: upgrade\r\nUpgrade: test\r\n\r\n",
        )
        .await
        .expect("write");
    let (head, _) = timeout(BOUND, tollgate_tests::read_head(&mut tunnel))
        .await
        .expect("answered in time")
        .expect("a response head");
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");

    let mut waiting = TcpStream::connect(addr).await.expect("connect");
    assert_waiting(&mut waiting, &backend, 0).await;

    drop(tunnel);
    let head = read_response(&mut waiting).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");

    stop_server(stop, task).await;
}

/// An upstream that reads `POST /upload` bodies and reports each read's
/// outcome: `Ok(length)` or `Err(())` when the body broke off.
async fn upload_upstream() -> (SocketAddr, mpsc::UnboundedReceiver<Result<usize, ()>>) {
    use http_body_util::BodyExt;
    let (tx, rx) = mpsc::unbounded_channel();
    let router = Router::new().route(
        "/upload",
        axum::routing::post(move |body: axum::body::Body| async move {
            let read = body.collect().await.map(|b| b.to_bytes().len());
            let _ = tx.send(read.as_ref().map(|n| *n).map_err(|_| ()));
            read.map(|n| n.to_string()).unwrap_or_default()
        }),
    );
    (spawn_upstream(router).await, rx)
}

/// A gateway with a 300 ms body read timeout in front of
/// [`upload_upstream`].
async fn upload_gateway() -> (Served, mpsc::UnboundedReceiver<Result<usize, ()>>) {
    let (upstream, reads) = upload_upstream().await;
    let served = serve_router(gateway_to(upstream), |serve| {
        serve.body_read_timeout(Duration::from_millis(300))
    })
    .await;
    (served, reads)
}

/// A client that stops sending its request body for longer than the body
/// read timeout gets a 408 problem with `Connection: close`, and the
/// upstream's request is dropped, not completed.
#[tokio::test]
async fn a_request_body_that_stalls_gets_408_and_the_upstream_request_is_dropped() {
    let ((addr, stop, task), mut reads) = upload_gateway().await;

    let answer = tollgate_tests::raw_exchange(
        addr,
        b"POST /upload HTTP/1.1\r\nHost: gw\r\nContent-Length: 100\r\n\r\nonly ten b",
    )
    .await;
    let (head, body) = answer.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 408 "), "{answer}");
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains("content-type: application/problem+json"),
        "{head}"
    );
    assert!(head.contains("connection: close"), "{head}");
    let problem: serde_json::Value = serde_json::from_str(body).expect("a problem");
    assert_eq!(problem["type"], "urn:tollgate:problem:request-timeout");
    assert_eq!(problem["instance"], "/upload");

    let read = timeout(BOUND, reads.recv())
        .await
        .expect("the upstream saw the body end");
    assert_eq!(read, Some(Err(())), "the upstream's body must break off");

    stop_server(stop, task).await;
}

/// The timeout bounds each wait, not the whole body: a body that keeps
/// coming, slower than the timeout in total, is delivered whole.
#[tokio::test]
async fn a_slow_but_steady_body_is_not_cut_off() {
    let ((addr, stop, task), mut reads) = upload_gateway().await;

    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: gw\r\nContent-Length: 10\r\n\r\n")
        .await
        .expect("write");
    // Ten bytes, one every 100 ms: a second in all, three timeouts long.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stream.write_all(b"x").await.expect("write");
    }
    let head = read_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let read = timeout(BOUND, reads.recv()).await.expect("read in time");
    assert_eq!(read, Some(Ok(10)));
    // The connection is still good for the next request.
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n\r\nok")
        .await
        .expect("write");
    let head = read_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");

    stop_server(stop, task).await;
}

/// Over HTTP/2 the stalled stream gets the 408, and the connection serves
/// the other streams.
#[tokio::test]
async fn a_stalled_http2_stream_gets_408_and_the_connection_goes_on() {
    let ((addr, stop, task), _reads) = upload_gateway().await;

    let io = TcpStream::connect(addr).await.expect("connect");
    let (client, conn) = h2::client::handshake(io).await.expect("h2 handshake");
    tokio::spawn(conn);
    // Sends `data`, and nothing more unless `end`; the response's head.
    let upload = |client: h2::client::SendRequest<bytes::Bytes>, data: &'static [u8], end: bool| async move {
        let mut client = client.ready().await.expect("ready");
        let req = Request::post(format!("http://{addr}/upload"))
            .body(())
            .expect("request");
        let (response, mut body) = client.send_request(req, false).expect("send");
        body.send_data(bytes::Bytes::from_static(data), end)
            .expect("data");
        let response = timeout(BOUND, response)
            .await
            .expect("answered in time")
            .expect("a response");
        (response, body)
    };
    let (response, _stalled) = upload(client.clone(), b"part", false).await;
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    assert!(response.headers().get("connection").is_none());
    let (response, _) = upload(client, b"whole", true).await;
    assert_eq!(response.status(), StatusCode::OK);

    stop_server(stop, task).await;
}

/// A client that stops reading a large response is disconnected once a
/// write has waited for the send timeout; the response body (and with it
/// anything upstream) is dropped, not left to wait forever.
#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_after_the_send_timeout() {
    // `/big` is 1 GiB, far more than the socket buffers.
    let backend = Backend::new();
    let router = backend.router();
    let (addr, stop, task) = serve_router(router, |serve| {
        serve.send_timeout(Duration::from_millis(300))
    })
    .await;

    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /big HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .expect("write");
    // ... and never read.
    eventually("the unread body is dropped", || {
        std::future::ready(backend.calls() == 1 && backend.in_flight() == 0)
    })
    .await;
    assert!(backend.produced() < BIG_CHUNKS * CHUNK.len());
    drop(stream);
    stop_server(stop, task).await;
}
