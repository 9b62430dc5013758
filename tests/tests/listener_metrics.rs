//! `Serve::metrics`: `tollgate_connections_open`, `tollgate_connections_total`
//! and `tollgate_connection_errors_total{reason}` for connections closed
//! before a request (a bad PROXY header, a failed TLS handshake, no request
//! head in time), read from the exposition; and `config::Server` on its
//! admin `/metrics`.

#![expect(clippy::unwrap_used, reason = "test helpers outside #[test] fns")]

use std::{future::IntoFuture, net::SocketAddr, time::Duration};

use axum::{Router, routing::get};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};
use tollgate::{ProxyProtocol, TlsConfig, observe::Metrics};
use tollgate_tests::{
    auth_support::eventually,
    listener,
    observe_support::{parse_exposition, value},
    read_head,
};

#[expect(dead_code, reason = "shared with tls_server.rs, which uses all of it")]
#[path = "common/tls.rs"]
mod tls;
use tls::{Ca, ClientSetup, Dir};

const BOUND: Duration = Duration::from_secs(10);
const GET: &[u8] = b"GET /x HTTP/1.1\r\nHost: gw\r\n\r\n";

fn app() -> Router {
    Router::new().route("/x", get(|| async { "x" }))
}

/// The sample `name{labels}` of `metrics`, 0 when absent.
fn sample(metrics: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(&parse_exposition(&metrics.render()), name, labels).unwrap_or(0.0)
}

fn errors(metrics: &Metrics, reason: &str) -> f64 {
    sample(
        metrics,
        "tollgate_connection_errors_total",
        &[("reason", reason)],
    )
}

/// Sends `GET /x` and reads the head of the answer.
async fn get_x(stream: &mut TcpStream) -> String {
    stream.write_all(GET).await.unwrap();
    timeout(BOUND, read_head(stream)).await.unwrap().unwrap().0
}

/// Whether the server closes `stream` within the bound.
async fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match timeout(BOUND, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn open_and_accepted_connections_are_counted() {
    let metrics = Metrics::new();
    let (listener, addr) = listener().await;
    tokio::spawn(
        tollgate::serve(listener, app(), std::future::pending())
            .metrics(metrics.clone())
            .into_future(),
    );
    let mut first = TcpStream::connect(addr).await.unwrap();
    let mut second = TcpStream::connect(addr).await.unwrap();
    assert!(get_x(&mut first).await.starts_with("HTTP/1.1 200 "));
    assert!(get_x(&mut second).await.starts_with("HTTP/1.1 200 "));
    assert_eq!(sample(&metrics, "tollgate_connections_total", &[]), 2.0);
    assert_eq!(sample(&metrics, "tollgate_connections_open", &[]), 2.0);

    drop(first);
    drop(second);
    eventually("both connections leave the gauge", || async {
        sample(&metrics, "tollgate_connections_open", &[]) == 0.0
    })
    .await;
    assert_eq!(sample(&metrics, "tollgate_connections_total", &[]), 2.0);
}

/// A silent connection is an error; a keep-alive connection closed idle
/// after serving is not.
#[tokio::test]
async fn a_connection_without_a_request_is_a_header_timeout() {
    let metrics = Metrics::new();
    let (listener, addr) = listener().await;
    tokio::spawn(
        tollgate::serve(listener, app(), std::future::pending())
            .header_read_timeout(Duration::from_millis(300))
            .metrics(metrics.clone())
            .into_future(),
    );
    let mut served = TcpStream::connect(addr).await.unwrap();
    assert!(get_x(&mut served).await.starts_with("HTTP/1.1 200 "));
    let mut silent = TcpStream::connect(addr).await.unwrap();
    assert!(closed(&mut silent).await);
    assert!(closed(&mut served).await);
    assert_eq!(errors(&metrics, "header_timeout"), 1.0);
}

#[tokio::test]
async fn a_bad_proxy_header_and_a_failed_handshake_are_counted() {
    let dir = Dir::new();
    let ca = Ca::new("metrics CA");
    let (cert, key) = ca.server(&["localhost"]).write(&dir, "server", &ca);
    let tls = TlsConfig::builder().certificate(cert, key).build().unwrap();
    let metrics = Metrics::new();
    let spawn = |proxy: bool, tls: Option<TlsConfig>| {
        let metrics = metrics.clone();
        async move {
            let (listener, addr) = listener().await;
            let mut serve = tollgate::serve(listener, app(), std::future::pending())
                .header_read_timeout(Duration::from_secs(5))
                .metrics(metrics);
            if proxy {
                serve = serve.proxy_protocol(ProxyProtocol::new());
            }
            if let Some(tls) = tls {
                serve = serve.tls(tls);
            }
            tokio::spawn(serve.into_future());
            addr
        }
    };
    let proxied: SocketAddr = spawn(true, None).await;
    let mut stream = TcpStream::connect(proxied).await.unwrap();
    stream.write_all(GET).await.unwrap();
    assert!(closed(&mut stream).await);

    let secure: SocketAddr = spawn(false, Some(tls)).await;
    let mut stream = TcpStream::connect(secure).await.unwrap();
    stream.write_all(GET).await.unwrap();
    assert!(closed(&mut stream).await);

    eventually("both errors counted", || async {
        errors(&metrics, "proxy_protocol") == 1.0 && errors(&metrics, "tls_handshake") == 1.0
    })
    .await;
    assert_eq!(errors(&metrics, "header_timeout"), 0.0);
    assert_eq!(sample(&metrics, "tollgate_connections_total", &[]), 2.0);
}

/// `config::Server` counts its public listener on the admin `/metrics`.
#[tokio::test]
async fn the_config_server_reports_its_connections() {
    use tollgate::config::{ConfigFile, Server};

    let up = tollgate_tests::spawn_upstream(app()).await;
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [[upstreams]]\nname = \"u\"\nendpoints = [\"http://{up}\"]\n\n\
         [[routes]]\nprefix = \"/\"\nto = \"u\"\n"
    );
    let server = Server::start(ConfigFile::parse(&text).unwrap())
        .await
        .unwrap();
    let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
    assert!(get_x(&mut stream).await.starts_with("HTTP/1.1 200 "));
    let mut admin = TcpStream::connect(server.admin_addr().unwrap())
        .await
        .unwrap();
    admin
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = Vec::new();
    timeout(BOUND, admin.read_to_end(&mut body))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("\ntollgate_connections_total 1\n"), "{text}");
    assert!(text.contains("\ntollgate_connections_open 1\n"), "{text}");
    server.shutdown().await.unwrap();
}

/// Completed TLS handshakes are counted by version.
#[tokio::test]
async fn tls_handshakes_are_counted_by_version() {
    let dir = Dir::new();
    let ca = Ca::new("versions CA");
    let (cert, key) = ca.server(&["localhost"]).write(&dir, "server", &ca);
    let tls = TlsConfig::builder().certificate(cert, key).build().unwrap();
    let metrics = Metrics::new();
    let (listener, addr) = listener().await;
    tokio::spawn(
        tollgate::serve(listener, app(), std::future::pending())
            .tls(tls)
            .metrics(metrics.clone())
            .into_future(),
    );
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let stream = ClientSetup::trusting(&ca)
            .versions(&[version])
            .connect(addr, "localhost")
            .await
            .unwrap();
        drop(stream);
    }
    let handshakes = |version: &str| {
        sample(
            &metrics,
            "tollgate_tls_handshakes_total",
            &[("version", version)],
        )
    };
    eventually("both handshakes counted", || async {
        handshakes("1.2") == 1.0 && handshakes("1.3") == 1.0
    })
    .await;
}

/// A PROXY header still arriving when the server stops is no error.
#[tokio::test]
async fn a_header_cut_short_by_shutdown_is_no_error() {
    let metrics = Metrics::new();
    let (listener, addr) = listener().await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tollgate::serve(listener, app(), async move {
            let _ = stopped.await;
        })
        .proxy_protocol(ProxyProtocol::new())
        .metrics(metrics.clone())
        .into_future(),
    );
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"PROXY TCP4 ").await.unwrap();
    eventually("the connection is open", || async {
        sample(&metrics, "tollgate_connections_open", &[]) == 1.0
    })
    .await;
    stop.send(()).unwrap();
    timeout(BOUND, server).await.unwrap().unwrap().unwrap();
    assert!(closed(&mut stream).await);
    assert_eq!(errors(&metrics, "proxy_protocol"), 0.0);
    assert_eq!(sample(&metrics, "tollgate_connections_open", &[]), 0.0);
}

/// An upgraded connection leaves `tollgate_connections_open` when its
/// tunnel takes over and is counted in `tollgate_tunnels_open` until the
/// tunnel ends.
#[tokio::test]
async fn a_websocket_tunnel_is_counted_while_it_runs() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tollgate::{Gateway, Route, Upstream};

    let ws = tollgate_tests::spawn_ws_echo().await;
    let router = Gateway::builder()
        .upstream(Upstream::builder("ws").endpoint(format!("http://{ws}")))
        .route(Route::prefix("/ws").to("ws"))
        .build()
        .unwrap();
    let metrics = Metrics::new();
    let (listener, addr) = listener().await;
    tokio::spawn(
        tollgate::serve(listener, router, std::future::pending())
            .metrics(metrics.clone())
            .into_future(),
    );
    assert_eq!(sample(&metrics, "tollgate_tunnels_open", &[]), 0.0);
    let io = TcpStream::connect(addr).await.unwrap();
    let (mut client, _) = timeout(
        BOUND,
        tokio_tungstenite::client_async(format!("ws://{addr}/ws"), io),
    )
    .await
    .unwrap()
    .unwrap();
    client.send(Message::text("hi")).await.unwrap();
    assert_eq!(
        timeout(BOUND, client.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap(),
        Message::text("hi")
    );
    eventually(
        "the tunnel is counted and the connection is not",
        || async {
            sample(&metrics, "tollgate_tunnels_open", &[]) == 1.0
                && sample(&metrics, "tollgate_connections_open", &[]) == 0.0
        },
    )
    .await;

    client.close(None).await.unwrap();
    drop(client);
    eventually("the tunnel has ended", || async {
        sample(&metrics, "tollgate_tunnels_open", &[]) == 0.0
    })
    .await;
}
