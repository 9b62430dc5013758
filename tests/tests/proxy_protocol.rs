//! HAProxy's PROXY protocol on `tollgate::serve` (`Serve::proxy_protocol`,
//! `[server.proxy_protocol]`): versions 1 and 2 from a raw client, with
//! TLS after the header, with `curl --haproxy-protocol` where it is
//! installed, and the refusals: no header, a bad one, a silent peer and a
//! peer not allowed.

#![expect(clippy::unwrap_used, reason = "test helpers outside #[test] fns")]

use std::{
    future::IntoFuture,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use axum::{Json, Router, extract::Request};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};
use tollgate::{
    Gateway, ProxyProtocol, ProxyProtocolOthers, Route, TlsConfig, Upstream,
    config::{ConfigFile, Server},
    core::ConnectionInfo,
};
use tollgate_tests::{
    auth_support::CountingUpstream, config_head_with, echo_router, listener, read_head,
    spawn_upstream,
};

#[expect(dead_code, reason = "shared with tls_server.rs, which uses all of it")]
#[path = "common/tls.rs"]
mod tls;
use tls::{Ca, ClientSetup, Dir};

/// Safety bound: a bug fails the test instead of hanging it.
const BOUND: Duration = Duration::from_secs(10);

/// What the server knew of the connection: `remote`, `proxied_by` and
/// `secure` from its `ConnectionInfo`.
fn whoami() -> Router {
    Router::new().fallback(|req: Request| async move {
        let info = req.extensions().get::<ConnectionInfo>().copied().unwrap();
        Json(json!({
            "remote": info.remote.to_string(),
            "proxied_by": info.proxied_by.map(|a| a.to_string()),
            "secure": info.secure,
        }))
    })
}

async fn spawn(
    router: Router,
    proxy_protocol: ProxyProtocol,
    tls: Option<TlsConfig>,
) -> SocketAddr {
    let (listener, addr) = listener().await;
    let mut serve = tollgate::serve(listener, router, std::future::pending())
        .header_read_timeout(Duration::from_millis(500))
        .proxy_protocol(proxy_protocol);
    if let Some(tls) = tls {
        serve = serve.tls(tls);
    }
    tokio::spawn(serve.into_future());
    addr
}

/// A version 2 header: PROXY (or LOCAL) over TCP; IPv4 addresses when both
/// are, IPv6 otherwise.
fn v2(proxy: bool, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    fn v6(ip: IpAddr) -> Ipv6Addr {
        match ip {
            IpAddr::V4(ip) => ip.to_ipv6_mapped(),
            IpAddr::V6(ip) => ip,
        }
    }
    let (family, mut addresses) = match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (0x11, [s.octets(), d.octets()].concat()),
        (s, d) => (0x21, [v6(s).octets(), v6(d).octets()].concat()),
    };
    addresses.extend_from_slice(&source.port().to_be_bytes());
    addresses.extend_from_slice(&destination.port().to_be_bytes());
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.push(if proxy { 0x21 } else { 0x20 });
    out.push(family);
    out.extend_from_slice(&u16::try_from(addresses.len()).unwrap().to_be_bytes());
    out.extend_from_slice(&addresses);
    out
}

/// Sends `request` on `stream` and reads the JSON body of the answer.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, request: &[u8]) -> Value {
    stream.write_all(request).await.unwrap();
    let (head, mut body) = timeout(BOUND, read_head(stream)).await.unwrap().unwrap();
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    timeout(BOUND, stream.read_to_end(&mut body))
        .await
        .unwrap()
        .unwrap();
    serde_json::from_slice(&body).unwrap()
}

const GET: &[u8] = b"GET /who HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n";

/// On a new connection to `addr`, a v1 header for 203.0.113.7 and [`GET`]
/// in one write; the head of the answer.
async fn proxied_head(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut bytes = b"PROXY TCP4 203.0.113.7 192.0.2.1 52000 443\r\n".to_vec();
    bytes.extend_from_slice(GET);
    stream.write_all(&bytes).await.unwrap();
    timeout(BOUND, read_head(&mut stream))
        .await
        .unwrap()
        .unwrap()
        .0
}

/// Whether the server closed `stream` without a byte of answer.
async fn closed_unanswered(stream: &mut TcpStream) -> bool {
    let mut got = Vec::new();
    match timeout(BOUND, stream.read_to_end(&mut got)).await {
        Ok(Ok(_)) => got.is_empty(),
        // A reset is a close too.
        Ok(Err(_)) => true,
        Err(_) => false,
    }
}

#[tokio::test]
async fn a_v1_header_names_the_client_and_the_request_in_the_same_write_is_served() {
    let addr = spawn(whoami(), ProxyProtocol::new(), None).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let local = stream.local_addr().unwrap();
    let mut bytes = b"PROXY TCP4 203.0.113.7 192.0.2.1 52000 443\r\n".to_vec();
    bytes.extend_from_slice(GET);
    let who = exchange(&mut stream, &bytes).await;
    assert_eq!(
        who,
        json!({"remote": "203.0.113.7:52000", "proxied_by": local.to_string(), "secure": false})
    );
}

#[tokio::test]
async fn a_v2_header_names_the_client_v4_and_v6() {
    let addr = spawn(whoami(), ProxyProtocol::new(), None).await;
    for (source, destination) in [
        ("198.51.100.20:40000", "192.0.2.1:80"),
        ("[2001:db8::20]:40000", "[2001:db8::1]:80"),
    ] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(&v2(
                true,
                source.parse().unwrap(),
                destination.parse().unwrap(),
            ))
            .await
            .unwrap();
        let who = exchange(&mut stream, GET).await;
        assert_eq!(who["remote"], source);
        assert_eq!(who["proxied_by"], stream.local_addr().unwrap().to_string());
    }
}

/// A balancer's health check (`LOCAL`) speaks for itself.
#[tokio::test]
async fn a_local_header_leaves_the_peers_own_address() {
    let addr = spawn(whoami(), ProxyProtocol::new(), None).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let local = stream.local_addr().unwrap();
    let mut bytes = v2(false, "10.9.9.9:1".parse().unwrap(), addr);
    bytes.extend_from_slice(GET);
    let who = exchange(&mut stream, &bytes).await;
    assert_eq!(
        who,
        json!({"remote": local.to_string(), "proxied_by": null, "secure": false})
    );
}

/// Through the gateway, the header's client is the one the upstream
/// hears of in `X-Forwarded-For`.
#[tokio::test]
async fn the_upstream_hears_of_the_headers_client() {
    let upstream = spawn_upstream(echo_router()).await;
    let router = Gateway::builder()
        .upstream(Upstream::builder("echo").endpoint(format!("http://{upstream}")))
        .route(Route::prefix("/").to("echo"))
        .build()
        .unwrap();
    let addr = spawn(router, ProxyProtocol::new(), None).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut bytes = b"PROXY TCP6 2001:db8::7 2001:db8::1 52000 443\r\n".to_vec();
    bytes.extend_from_slice(GET);
    let echo = exchange(&mut stream, &bytes).await;
    assert_eq!(echo["headers"]["x-forwarded-for"], json!(["2001:db8::7"]));
}

/// TLS begins after the header: the handshake and the request are
/// served, with the header's client.
#[tokio::test]
async fn tls_follows_the_header() {
    let dir = Dir::new();
    let ca = Ca::new("proxy protocol CA");
    let (cert, key) = ca.server(&["localhost"]).write(&dir, "server", &ca);
    let tls = TlsConfig::builder().certificate(cert, key).build().unwrap();
    let addr = spawn(whoami(), ProxyProtocol::new(), Some(tls)).await;

    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let local = tcp.local_addr().unwrap();
    tcp.write_all(&v2(
        true,
        "192.0.2.44:50000".parse().unwrap(),
        "192.0.2.1:443".parse().unwrap(),
    ))
    .await
    .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let config = ClientSetup::trusting(&ca).alpn(&[b"http/1.1"]).config();
    let mut stream = timeout(
        BOUND,
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .unwrap()
    .unwrap();
    let who = exchange(&mut stream, GET).await;
    assert_eq!(
        who,
        json!({"remote": "192.0.2.44:50000", "proxied_by": local.to_string(), "secure": true})
    );
}

/// A connection that does not start with a header is closed before a
/// byte of it reaches a service: a plain request, a TLS ClientHello, a
/// bad header, one cut short, and a peer that says nothing at all (after
/// the header read timeout).
#[tokio::test]
async fn connections_without_a_good_header_are_closed_and_nothing_is_forwarded() {
    let upstream = CountingUpstream::start().await;
    let router = Gateway::builder()
        .upstream(Upstream::builder("count").endpoint(format!("http://{}", upstream.addr)))
        .route(Route::prefix("/").to("count"))
        .build()
        .unwrap();
    let addr = spawn(router, ProxyProtocol::new(), None).await;
    for bytes in [
        GET,
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
        b"PROXY TCP4 203.0.113.7 192.0.2.1 99999 443\r\nGET / HTTP/1.1\r\n\r\n",
        b"PROXY TCP4 203.0.113.7",
        b"",
    ] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        assert!(
            closed_unanswered(&mut stream).await,
            "{:?} was answered",
            String::from_utf8_lossy(bytes)
        );
    }
    assert_eq!(upstream.hits(), 0);

    // The listener still serves a good one.
    let head = proxied_head(addr).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(upstream.hits(), 1);
}

/// Only the peers in `allow_from` may connect at all.
#[tokio::test]
async fn peers_outside_allow_from_are_closed_even_with_a_good_header() {
    let mut bytes = b"PROXY TCP4 203.0.113.7 192.0.2.1 52000 443\r\n".to_vec();
    bytes.extend_from_slice(GET);

    let elsewhere = ProxyProtocol::new().allow_from(["10.0.0.0/8".parse().unwrap()]);
    let addr = spawn(whoami(), elsewhere, None).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may close before the write lands.
    let _ = stream.write_all(&bytes).await;
    assert!(closed_unanswered(&mut stream).await);

    let here = ProxyProtocol::new().allow_from(["127.0.0.0/8".parse().unwrap()]);
    let addr = spawn(whoami(), here, None).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let who = exchange(&mut stream, &bytes).await;
    assert_eq!(who["remote"], "203.0.113.7:52000");
}

/// `[server.proxy_protocol]` reaches the listener.
#[tokio::test]
async fn the_proxy_protocol_comes_from_the_config() {
    let upstream = spawn_upstream(echo_router()).await;
    let mut text = config_head_with(
        "[server.proxy_protocol]\nallow_from = [\"127.0.0.1\", \"10.0.0.0/8\"]\n",
        "u",
        &format!("http://{upstream}"),
    );
    text.push_str("[[routes]]\nprefix = \"/\"\nto = \"u\"\n");
    let server = Server::start(ConfigFile::parse(&text).unwrap())
        .await
        .unwrap();
    let addr = server.local_addr();

    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut bytes = b"PROXY TCP4 203.0.113.9 192.0.2.1 52000 80\r\n".to_vec();
    bytes.extend_from_slice(GET);
    let echo = exchange(&mut stream, &bytes).await;
    assert_eq!(echo["headers"]["x-forwarded-for"], json!(["203.0.113.9"]));

    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(GET).await.unwrap();
    assert!(closed_unanswered(&mut stream).await);
    server.shutdown().await.unwrap();
}

/// `curl --haproxy-protocol` (version 1, with curl's own addresses) is
/// served, and plain `curl` is not. Skipped when `curl` is not installed.
#[tokio::test]
async fn curl_with_haproxy_protocol_is_served() {
    if tokio::process::Command::new("curl")
        .arg("--version")
        .output()
        .await
        .is_err()
    {
        eprintln!("note: curl is not on PATH; skipping the curl PROXY protocol test");
        return;
    }
    let addr = spawn(whoami(), ProxyProtocol::new(), None).await;
    let curl = |proxy: bool| {
        let mut command = tokio::process::Command::new("curl");
        command.args(["-sS", "--max-time", "5"]);
        if proxy {
            command.arg("--haproxy-protocol");
        }
        command.arg(format!("http://{addr}/who")).output()
    };
    let out = curl(true).await.unwrap();
    assert!(out.status.success(), "{out:?}");
    let who: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        who["remote"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{who}"
    );
    assert!(who["proxied_by"].is_string(), "{who}");

    let out = curl(false).await.unwrap();
    assert!(!out.status.success(), "served without a header: {out:?}");
}

/// A header still on its way is not waited for on shutdown: the server
/// returns long before the header read timeout would have closed it.
#[tokio::test]
async fn shutdown_does_not_wait_for_a_header_still_arriving() {
    let (listener, addr) = listener().await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tollgate::serve(listener, whoami(), async move {
            let _ = stopped.await;
        })
        .header_read_timeout(Duration::from_secs(60))
        .drain_timeout(Duration::from_secs(60))
        .proxy_protocol(ProxyProtocol::new())
        .into_future(),
    );
    let mut silent = TcpStream::connect(addr).await.unwrap();
    silent.write_all(b"PROXY TCP4 ").await.unwrap();
    // Accepted and reading: a good connection beside it is served.
    let mut good = TcpStream::connect(addr).await.unwrap();
    let mut bytes = b"PROXY TCP4 203.0.113.7 192.0.2.1 52000 443\r\n".to_vec();
    bytes.extend_from_slice(GET);
    exchange(&mut good, &bytes).await;

    stop.send(()).unwrap();
    timeout(BOUND, server)
        .await
        .expect("the server returns without waiting for the header")
        .unwrap()
        .unwrap();
    assert!(closed_unanswered(&mut silent).await);
}

/// HTTP/2 (prior knowledge) after the header: every stream of the
/// connection carries the header's client.
#[tokio::test]
async fn http2_follows_the_header() {
    let addr = spawn(whoami(), ProxyProtocol::new(), None).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let local = tcp.local_addr().unwrap();
    tcp.write_all(&v2(
        true,
        "[2001:db8::44]:50000".parse().unwrap(),
        "[2001:db8::1]:80".parse().unwrap(),
    ))
    .await
    .unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    for _ in 0..2 {
        client = client.ready().await.unwrap();
        let req = http::Request::get(format!("http://{addr}/who"))
            .body(())
            .unwrap();
        let (response, _) = client.send_request(req, true).unwrap();
        let response = timeout(BOUND, response).await.unwrap().unwrap();
        assert_eq!(response.status(), http::StatusCode::OK);
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.data().await {
            bytes.extend_from_slice(&chunk.unwrap());
        }
        let who: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            who,
            json!({"remote": "[2001:db8::44]:50000", "proxied_by": local.to_string(), "secure": false})
        );
    }
}

/// With `others = direct`, a peer outside `allow_from` is served without a
/// header, under its own address, and a header it sends is not read.
#[tokio::test]
async fn peers_outside_allow_from_can_be_served_directly() {
    let proxy_protocol = ProxyProtocol::new()
        .allow_from(["10.0.0.0/8".parse().unwrap()])
        .others(ProxyProtocolOthers::Direct);
    let addr = spawn(whoami(), proxy_protocol, None).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let local = stream.local_addr().unwrap();
    let who = exchange(&mut stream, GET).await;
    assert_eq!(
        who,
        json!({"remote": local.to_string(), "proxied_by": null, "secure": false})
    );

    // A header from such a peer claims nothing: it is a bad request line.
    let head = proxied_head(addr).await;
    assert!(head.starts_with("HTTP/1.1 400 "), "{head}");

    // `[server.proxy_protocol] others = "direct"` is the same.
    let file = ConfigFile::parse(
        "[server.proxy_protocol]\nallow_from = [\"10.0.0.0/8\"]\nothers = \"direct\"\n",
    )
    .unwrap();
    let parsed = file.config().server.proxy_protocol.clone().unwrap();
    assert_eq!(
        parsed,
        ProxyProtocol::new()
            .allow_from(["10.0.0.0/8".parse().unwrap()])
            .others(ProxyProtocolOthers::Direct)
    );
}
