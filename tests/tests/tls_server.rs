//! TLS termination in `tollgate::serve`, with real rustls clients and
//! certificates made by rcgen: ALPN h1/h2 (and with `curl` when it is
//! installed), SNI, TLS versions, certificate and client CA reload (direct
//! and by SIGHUP), mTLS, the HTTPS redirect, HSTS, and upstream TLS with a
//! private CA and an SNI override on both pools.

#![expect(clippy::unwrap_used, reason = "test helpers outside #[test] fns")]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use axum::{Json, Router, extract::Request, routing::get};
use http::{StatusCode, header};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::ExtendedKeyUsagePurpose;
use rustls::{ProtocolVersion, pki_types::CertificateDer};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::client::TlsStream;
use tollgate::{
    ClientAuth, Gateway, Protocol, Route, TlsConfig, TlsVersion, Upstream,
    core::{AuthMethod, ConnectionInfo, Identity},
    proxy::PoolKind,
};
use tollgate_tests::{body_json, client, empty, listener, raw_exchange, spawn_gateway};

#[path = "common/tls.rs"]
mod tls;
use tls::{Ca, ClientSetup, Dir};

/// The SANs (DNS names) of the certificate the server presented.
fn presented_sans(stream: &TlsStream<TcpStream>) -> Vec<String> {
    let der = &stream.get_ref().1.peer_certificates().unwrap()[0];
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
            _ => None,
        })
        .collect()
}

/// One HTTP request on an established TLS stream, by the negotiated ALPN
/// protocol; the answer's JSON.
async fn get_json(stream: TlsStream<TcpStream>) -> Value {
    let mut sender = Sender::new(stream).await;
    sender.get_json("/").await
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<tollgate_tests::ClientBody>),
    H2(hyper::client::conn::http2::SendRequest<tollgate_tests::ClientBody>),
}

impl Sender {
    async fn new(stream: TlsStream<TcpStream>) -> Self {
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(stream);
        if h2 {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            Self::H2(sender)
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            Self::H1(sender)
        }
    }

    async fn try_get_json(&mut self, path: &str) -> hyper::Result<Value> {
        let res = match self {
            Self::H1(s) => {
                let req = http::Request::get(path)
                    .header(header::HOST, "gateway.test")
                    .body(empty())
                    .unwrap();
                s.send_request(req).await?
            }
            Self::H2(s) => {
                let req = http::Request::get(format!("https://gateway.test{path}"))
                    .body(empty())
                    .unwrap();
                s.send_request(req).await?
            }
        };
        let (parts, body) = res.into_parts();
        let body = body.collect().await?.to_bytes();
        assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&body));
        Ok(serde_json::from_slice(&body).unwrap())
    }

    async fn get_json(&mut self, path: &str) -> Value {
        self.try_get_json(path).await.unwrap()
    }
}

// === servers ===

/// Answers with what the request knows about its connection.
fn whoami() -> Router {
    Router::new().fallback(|req: Request| async move {
        let info = req.extensions().get::<ConnectionInfo>().copied();
        let identity = req.extensions().get::<Identity>();
        Json(json!({
            "version": format!("{:?}", req.version()),
            "secure": info.map(|i| i.secure),
            "subject": identity.and_then(|i| i.subject.as_deref()),
            "client_cert": identity.map(|i| i.method == Some(AuthMethod::ClientCertificate)),
            "cn": identity.and_then(|i| i.claims.as_ref()).and_then(|c| c.get("cn").cloned()),
        }))
    })
}

async fn spawn_tls(tls: TlsConfig, router: Router) -> SocketAddr {
    let (listener, addr) = listener().await;
    tokio::spawn(
        tollgate::serve(listener, router, std::future::pending())
            .header_read_timeout(Duration::from_secs(5))
            .tls(tls)
            .into_future(),
    );
    addr
}

/// A server with a `localhost` certificate from `ca` and `client_auth`.
async fn mtls_server(dir: &Dir, ca: &Ca, client_auth: ClientAuth) -> (SocketAddr, TlsConfig) {
    let (cert, key) = ca.server(&["localhost"]).write(dir, "server", ca);
    let tls = TlsConfig::builder()
        .certificate(cert, key)
        .client_auth(client_auth)
        .build()
        .unwrap();
    (spawn_tls(tls.clone(), whoami()).await, tls)
}

/// A server with one certificate for `localhost` from a fresh CA.
async fn simple_server(dir: &Dir) -> (SocketAddr, Ca) {
    let ca = Ca::new("test CA");
    let (cert, key) = ca.server(&["localhost"]).write(dir, "server", &ca);
    let tls = TlsConfig::builder().certificate(cert, key).build().unwrap();
    (spawn_tls(tls, whoami()).await, ca)
}

// === tests ===

#[tokio::test]
async fn https_speaks_h2_and_http1_by_alpn() {
    let dir = Dir::new();
    let (addr, ca) = simple_server(&dir).await;

    let stream = ClientSetup::trusting(&ca)
        .connect(addr, "localhost")
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let json = get_json(stream).await;
    assert_eq!(json["version"], "HTTP/2.0", "{json}");
    assert_eq!(json["secure"], true, "{json}");
    assert_eq!(json["subject"], Value::Null, "{json}");

    let stream = ClientSetup::trusting(&ca)
        .alpn(&[b"http/1.1"])
        .connect(addr, "localhost")
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let json = get_json(stream).await;
    assert_eq!(json["version"], "HTTP/1.1", "{json}");
    assert_eq!(json["secure"], true, "{json}");

    // No ALPN at all: the server sniffs HTTP/1.1.
    let stream = ClientSetup::trusting(&ca)
        .alpn(&[])
        .connect(addr, "localhost")
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), None);
    assert_eq!(get_json(stream).await["version"], "HTTP/1.1");
}

#[tokio::test]
async fn sni_chooses_the_certificate() {
    let dir = Dir::new();
    let ca = Ca::new("test CA");
    let (dc, dk) = ca.server(&["default.test"]).write(&dir, "default", &ca);
    let (ac, ak) = ca.server(&["api.test"]).write(&dir, "api", &ca);
    let (wc, wk) = ca.server(&["*.wild.test"]).write(&dir, "wild", &ca);
    let tls = TlsConfig::builder()
        .certificate(dc, dk)
        .sni_certificate("API.test", ac, ak)
        .sni_certificate("*.wild.test", wc, wk)
        .build()
        .unwrap();
    let addr = spawn_tls(tls, whoami()).await;

    // Verified against the CA: each name gets its own certificate.
    for (name, san) in [
        ("api.test", "api.test"),
        ("x.wild.test", "*.wild.test"),
        ("default.test", "default.test"),
    ] {
        let stream = ClientSetup::trusting(&ca)
            .connect(addr, name)
            .await
            .unwrap();
        assert_eq!(presented_sans(&stream), [san], "{name}");
        assert_eq!(get_json(stream).await["secure"], true);
    }
    // An unknown name, and no SNI at all (an IP address is never sent as
    // SNI), get the default.
    for name in ["unknown.test", "127.0.0.1"] {
        let stream = ClientSetup::any_cert().connect(addr, name).await.unwrap();
        assert_eq!(presented_sans(&stream), ["default.test"], "{name}");
    }
}

#[tokio::test]
async fn without_a_default_unknown_names_are_refused() {
    let dir = Dir::new();
    let ca = Ca::new("test CA");
    let (ac, ak) = ca.server(&["api.test"]).write(&dir, "api", &ca);
    let tls = TlsConfig::builder()
        .sni_certificate("api.test", ac, ak)
        .build()
        .unwrap();
    let addr = spawn_tls(tls, whoami()).await;
    assert!(
        ClientSetup::trusting(&ca)
            .connect(addr, "api.test")
            .await
            .is_ok()
    );
    assert!(
        ClientSetup::any_cert()
            .connect(addr, "other.test")
            .await
            .is_err()
    );
    assert!(
        ClientSetup::any_cert()
            .connect(addr, "127.0.0.1")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn only_tls_1_2_and_1_3_are_spoken() {
    let dir = Dir::new();
    let (addr, ca) = simple_server(&dir).await;
    for (version, expected) in [
        (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
    ] {
        let stream = ClientSetup::trusting(&ca)
            .versions(&[version])
            .connect(addr, "localhost")
            .await
            .unwrap();
        assert_eq!(stream.get_ref().1.protocol_version(), Some(expected));
        assert_eq!(get_json(stream).await["secure"], true);
    }

    // rustls clients cannot speak TLS 1.1; send a TLS 1.1 ClientHello by
    // hand, with ECDHE suites, groups and signature schemes the server has,
    // so that only the version is wrong.
    let mut hello = vec![0x03, 0x02]; // client_version TLS 1.1
    hello.extend_from_slice(&[7; 32]); // random
    hello.push(0); // no session id
    hello.extend_from_slice(&[0x00, 0x04, 0xc0, 0x2b, 0xc0, 0x2f]);
    hello.extend_from_slice(&[0x01, 0x00]); // null compression
    hello.extend_from_slice(&[
        0x00, 0x1a, // extensions
        0x00, 0x0d, 0x00, 0x06, 0x00, 0x04, 0x04, 0x03, 0x08, 0x04, // signature_algorithms
        0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x17, // supported_groups
        0x00, 0x0b, 0x00, 0x02, 0x01, 0x00, // ec_point_formats
    ]);
    let mut handshake = vec![0x01, 0x00, 0x00, u8::try_from(hello.len()).unwrap()];
    handshake.extend_from_slice(&hello);
    let mut record = vec![
        0x16,
        0x03,
        0x01,
        0x00,
        u8::try_from(handshake.len()).unwrap(),
    ];
    record.extend_from_slice(&handshake);

    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&record).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    // An alert record (0x15): fatal (2), protocol_version (70). Never a
    // ServerHello (a handshake record, 0x16).
    assert!(answer.len() >= 7, "{answer:?}");
    assert_eq!(answer[0], 0x15, "{answer:?}");
    assert_eq!(&answer[5..7], &[2, 70], "{answer:?}");
}

/// `min_version(TlsVersion::Tls13)` refuses TLS 1.2 clients and serves
/// TLS 1.3 ones; `[server.tls] min_version = "1.3"` does the same.
#[tokio::test]
async fn tls_1_3_only_refuses_tls_1_2() {
    let dir = Dir::new();
    let ca = Ca::new("1.3 CA");
    let (cert, key) = ca.server(&["localhost"]).write(&dir, "server", &ca);
    let tls = TlsConfig::builder()
        .certificate(&cert, &key)
        .min_version(TlsVersion::Tls13)
        .build()
        .unwrap();
    let addr = spawn_tls(tls, whoami()).await;

    let config_addr = {
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[server.tls]\nmin_version = \"1.3\"\n\
             certificates = [{{ cert_file = {cert:?}, key_file = {key:?} }}]\n\
             [admin]\nenabled = false\n"
        );
        let server =
            tollgate::config::Server::start(tollgate::config::ConfigFile::parse(&text).unwrap())
                .await
                .unwrap();
        let addr = server.local_addr();
        tokio::spawn(server.run_until(std::future::pending()));
        addr
    };

    for addr in [addr, config_addr] {
        only_tls_1_3(|| ClientSetup::trusting(&ca), addr).await;
    }
}

/// A TLS 1.2 handshake of `setup`'s client is refused with a
/// `protocol_version` alert, and a TLS 1.3 one is served.
async fn only_tls_1_3(setup: impl Fn() -> ClientSetup, addr: SocketAddr) -> TlsStream<TcpStream> {
    let refused = setup()
        .versions(&[&rustls::version::TLS12])
        .connect(addr, "localhost")
        .await;
    let err = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("ProtocolVersion"), "{err}");
    let stream = setup().connect(addr, "localhost").await.unwrap();
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(ProtocolVersion::TLSv1_3)
    );
    stream
}

/// A TLS server with a `localhost` certificate from a new CA, whose
/// handshake and header-read timeout is 300 ms.
async fn short_timeout_server(dir: &Dir) -> (SocketAddr, Ca) {
    let ca = Ca::new("test CA");
    let (cert, key) = ca.server(&["localhost"]).write(dir, "server", &ca);
    let tls = TlsConfig::builder().certificate(cert, key).build().unwrap();
    let (listener, addr) = listener().await;
    tokio::spawn(
        tollgate::serve(listener, whoami(), std::future::pending())
            .header_read_timeout(Duration::from_millis(300))
            .tls(tls)
            .into_future(),
    );
    (addr, ca)
}

/// Serves a real client on `addr` meanwhile, then expects the server to
/// close `stalled` (`what` it is, for the failure message).
async fn assert_closed_while_others_are_served(
    addr: SocketAddr,
    ca: &Ca,
    mut stalled: TcpStream,
    what: &str,
) {
    let stream = ClientSetup::trusting(ca)
        .connect(addr, "localhost")
        .await
        .unwrap();
    assert_eq!(get_json(stream).await["secure"], true);
    let mut buf = [0; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut buf)).await;
    assert!(read.is_ok(), "the {what} was not closed");
    assert_eq!(
        read.ok().and_then(Result::ok).unwrap_or(0),
        0,
        "the {what} got bytes"
    );
}

#[tokio::test]
async fn a_silent_client_is_dropped_after_the_handshake_timeout() {
    let dir = Dir::new();
    let (addr, ca) = short_timeout_server(&dir).await;
    let silent = TcpStream::connect(addr).await.unwrap();
    assert_closed_while_others_are_served(addr, &ca, silent, "silent connection").await;
}

#[tokio::test]
async fn plain_http_and_an_abandoned_handshake_on_the_tls_port_are_dropped() {
    let dir = Dir::new();
    let (addr, ca) = short_timeout_server(&dir).await;
    // Plain HTTP on the TLS port: no HTTP answer, the connection closes.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut answer))
        .await
        .expect("the plain connection was not closed")
        .ok();
    assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");

    // A handshake that starts and is abandoned: the first bytes of a
    // ClientHello record, then nothing.
    let mut abandoned = TcpStream::connect(addr).await.unwrap();
    abandoned
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    assert_closed_while_others_are_served(addr, &ca, abandoned, "abandoned handshake").await;
}

/// Writes a fresh `localhost` certificate to `server.pem`/`server.key`.
fn write_server_cert(dir: &Dir, ca: &Ca) -> (PathBuf, PathBuf, CertificateDer<'static>) {
    let leaf = ca.server(&["localhost"]);
    let (cert, key) = leaf.write(dir, "server", ca);
    (cert, key, leaf.der())
}

fn presented(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

#[tokio::test]
async fn reload_swaps_the_certificate_and_keeps_open_connections() {
    let dir = Dir::new();
    let ca = Ca::new("test CA");
    let (cert, key, mut first) = write_server_cert(&dir, &ca);
    let tls = TlsConfig::builder().certificate(cert, key).build().unwrap();
    let addr = spawn_tls(tls.clone(), whoami()).await;

    for alpn in [&b"http/1.1"[..], b"h2"] {
        let old = ClientSetup::trusting(&ca)
            .alpn(&[alpn])
            .connect(addr, "localhost")
            .await
            .unwrap();
        assert_eq!(presented(&old), first);
        assert_eq!(old.get_ref().1.alpn_protocol(), Some(alpn));
        let mut old = Sender::new(old).await;
        old.get_json("/before").await;

        let (_, _, second) = write_server_cert(&dir, &ca);
        tls.reload().unwrap();

        let new = ClientSetup::trusting(&ca)
            .connect(addr, "localhost")
            .await
            .unwrap();
        assert_eq!(presented(&new), second);
        assert_ne!(first, second);
        get_json(new).await;
        // The connection opened before the reload still works.
        assert_eq!(old.get_json("/after").await["secure"], true);
        first = second;
    }
}

#[tokio::test]
async fn a_failed_reload_keeps_the_old_certificate() {
    let dir = Dir::new();
    let ca = Ca::new("test CA");
    let (cert, key, first) = write_server_cert(&dir, &ca);
    let tls = TlsConfig::builder()
        .certificate(&cert, &key)
        .build()
        .unwrap();
    let addr = spawn_tls(tls.clone(), whoami()).await;

    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\ngarbage!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = tls.reload().unwrap_err();
    assert_eq!(err.kind(), tollgate::core::ConfigErrorKind::Tls);
    assert!(
        err.to_string().contains(&cert.display().to_string()),
        "{err}"
    );

    // A key that does not match the certificate is refused too.
    let other = ca.server(&["localhost"]);
    std::fs::write(
        &cert,
        format!("{}{}", ca.server(&["localhost"]).cert.pem(), ca.0.pem()),
    )
    .unwrap();
    std::fs::write(&key, other.key.serialize_pem()).unwrap();
    let err = tls.reload().unwrap_err();
    assert!(
        err.to_string().contains(&key.display().to_string()),
        "{err}"
    );

    std::fs::remove_file(&key).unwrap();
    let err = tls.reload().unwrap_err();
    assert!(
        err.to_string().contains(&key.display().to_string()),
        "{err}"
    );

    let stream = ClientSetup::trusting(&ca)
        .connect(addr, "localhost")
        .await
        .unwrap();
    assert_eq!(presented(&stream), first);
    get_json(stream).await;
}

#[tokio::test]
async fn build_errors_name_the_file() {
    let dir = Dir::new();
    let missing = dir.0.join("missing.pem");
    let err = TlsConfig::builder()
        .certificate(&missing, &missing)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("missing.pem"), "{err}");
    let empty = dir.write("empty.pem", "");
    let err = TlsConfig::builder()
        .certificate(&empty, &empty)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("empty.pem"), "{err}");
    assert!(TlsConfig::builder().build().is_err());
    let ca = Ca::new("test CA");
    let (cert, key) = ca.server(&["localhost"]).write(&dir, "s", &ca);
    let err = TlsConfig::builder()
        .certificate(&cert, &key)
        .client_auth(ClientAuth::required(&empty))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("empty.pem"), "{err}");
    let err = TlsConfig::builder()
        .sni_certificate("not a name", &cert, &key)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("not a name"), "{err}");

    // A CRL file that is missing, given in a config file: the error names
    // the key and the file.
    let clients = dir.write("clients.pem", &ca.0.pem());
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[server.tls]\n\
         certificates = [{{ cert_file = {cert:?}, key_file = {key:?} }}]\n\
         [server.tls.client_auth]\nca_file = {clients:?}\ncrl_files = [{missing:?}]\n"
    );
    let file = tollgate::config::ConfigFile::parse_with(&text, &|_| None).unwrap();
    let err = file.tls_config().unwrap_err().to_string();
    assert!(
        err.contains("server.tls: CRL file") && err.contains("missing.pem"),
        "{err}"
    );
}

/// `reload_on_sighup`: a SIGHUP sent to this very process (with the `kill`
/// command, no `unsafe`) reloads the certificates. The handler is installed
/// before the signal is sent, so the process is never at risk.
#[tokio::test]
async fn sighup_reloads_the_certificates() {
    let dir = Dir::new();
    let ca = Ca::new("test CA");
    let (cert, key, first) = write_server_cert(&dir, &ca);
    let tls = TlsConfig::builder().certificate(cert, key).build().unwrap();
    let task = tls.reload_on_sighup().unwrap();
    let addr = spawn_tls(tls, whoami()).await;
    let stream = ClientSetup::trusting(&ca)
        .connect(addr, "localhost")
        .await
        .unwrap();
    assert_eq!(presented(&stream), first);

    let (_, _, second) = write_server_cert(&dir, &ca);
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut seen = None;
    for _ in 0..100 {
        let stream = ClientSetup::trusting(&ca)
            .connect(addr, "localhost")
            .await
            .unwrap();
        seen = Some(presented(&stream));
        if seen.as_ref() == Some(&second) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, Some(second), "SIGHUP did not reload the certificate");
    task.abort();
}

#[tokio::test]
async fn mtls_required_verifies_and_sets_identity() {
    let dir = Dir::new();
    let ca = Ca::new("server CA");
    let clients = Ca::new("client CA");
    let stranger = Ca::new("other CA");
    let client_ca = dir.write("clients.pem", &clients.0.pem());
    let (addr, _) = mtls_server(&dir, &ca, ClientAuth::required(client_ca)).await;

    // A certificate from the client CA: the handler sees its subject.
    let alice = clients.leaf(
        &["alice.test"],
        "alice",
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let stream = ClientSetup::trusting(&ca)
        .with_cert(&alice, &clients)
        .connect(addr, "localhost")
        .await
        .unwrap();
    let mut sender = Sender::new(stream).await;
    for _ in 0..2 {
        let json = sender.get_json("/").await;
        assert_eq!(json["subject"], "CN=alice", "{json}");
        assert_eq!(json["cn"], "alice", "{json}");
        assert_eq!(json["client_cert"], true, "{json}");
    }

    // No certificate, or one from another CA: refused.
    let mallory = stranger.leaf(&["m.test"], "mallory", ExtendedKeyUsagePurpose::ClientAuth);
    assert!(refused(ClientSetup::trusting(&ca), addr).await);
    assert!(
        refused(
            ClientSetup::trusting(&ca).with_cert(&mallory, &stranger),
            addr
        )
        .await
    );
}

/// Whether a client set up with `setup` is refused. With TLS 1.3 the
/// client may finish its side of the handshake first; the refusal then
/// arrives as an alert on the first read.
async fn refused(setup: ClientSetup, addr: SocketAddr) -> bool {
    let Ok(stream) = setup.connect(addr, "localhost").await else {
        return true;
    };
    assert_eq!(
        stream.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "ALPN h2 was offered"
    );
    match hyper::client::conn::http2::handshake::<_, _, tollgate_tests::ClientBody>(
        TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    {
        Err(_) => true,
        Ok((mut s, conn)) => {
            tokio::spawn(conn);
            s.send_request(
                http::Request::get("https://localhost/")
                    .body(empty())
                    .unwrap(),
            )
            .await
            .is_err()
        }
    }
}

/// Client certificates revoked by a CRL are refused, others admitted; a
/// reload reads a new CRL; a CA with no CRL among the files makes its
/// certificates' status unknown, which is refused too.
#[tokio::test]
async fn mtls_refuses_revoked_client_certificates_and_reload_reads_a_new_crl() {
    let dir = Dir::new();
    let ca = Ca::new("server CA");
    let clients = Ca::new("client CA");
    let client_ca = dir.write("clients.pem", &clients.0.pem());
    let crl = dir.write("clients.crl.pem", &clients.crl(1, &[2]));
    let (addr, tls) = mtls_server(&dir, &ca, ClientAuth::required(&client_ca).crl_file(&crl)).await;
    let alice = clients.client_numbered("alice", 1);
    let bob = clients.client_numbered("bob", 2);
    let as_alice = || ClientSetup::trusting(&ca).with_cert(&alice, &clients);
    let as_bob = || ClientSetup::trusting(&ca).with_cert(&bob, &clients);

    let stream = as_alice().connect(addr, "localhost").await.unwrap();
    assert_eq!(get_json(stream).await["subject"], "CN=alice");
    assert!(refused(as_bob(), addr).await, "bob is revoked");

    // A new CRL revokes alice too and lets bob back in.
    std::fs::write(&crl, clients.crl(2, &[1])).unwrap();
    tls.reload().unwrap();
    let stream = as_bob().connect(addr, "localhost").await.unwrap();
    assert_eq!(get_json(stream).await["subject"], "CN=bob");
    assert!(refused(as_alice(), addr).await, "alice is revoked now");

    // A file that holds no CRL: the reload fails, naming it.
    std::fs::write(&crl, "not a CRL").unwrap();
    let err = tls.reload().unwrap_err().to_string();
    assert!(
        err.contains(&crl.display().to_string()) && err.contains("no X509 CRL"),
        "{err}"
    );
    // ... and the CRL in use stays: bob in, alice out.
    let stream = as_bob().connect(addr, "localhost").await.unwrap();
    assert_eq!(get_json(stream).await["subject"], "CN=bob");
    assert!(refused(as_alice(), addr).await, "alice is still revoked");

    // A CRL of another CA: nothing says whether bob's certificate is
    // revoked, so it is refused.
    let other = Ca::new("other CA");
    let unknown = dir.write("other.crl.pem", &other.crl(1, &[]));
    let (addr, _) = mtls_server(
        &dir,
        &ca,
        ClientAuth::required(&client_ca).crl_file(&unknown),
    )
    .await;
    assert!(refused(as_bob(), addr).await, "unknown status");
}

/// A client chain root → intermediate → leaf, with the intermediate's CRL
/// only: checking the whole chain refuses it (nothing tells whether the
/// intermediate is revoked), checking the leaf alone admits it; with the
/// root's CRL too, the whole chain passes, and a leaf the intermediate
/// revoked is refused either way.
#[tokio::test]
async fn crl_only_leaf_checks_the_clients_own_certificate_alone() {
    let dir = Dir::new();
    let ca = Ca::new("server CA");
    let root = Ca::new("client root");
    let issuing = root.intermediate("client issuing CA");
    let roots = dir.write("client-root.pem", &root.0.pem());
    let issuing_crl = dir.write("issuing.crl.pem", &issuing.crl(1, &[7]));
    let root_crl = dir.write("root.crl.pem", &root.crl(1, &[]));
    let alice = issuing.client_numbered("alice", 1);
    let mallory = issuing.client_numbered("mallory", 7);
    let as_alice = || ClientSetup::trusting(&ca).with_cert(&alice, &issuing);
    let as_mallory = || ClientSetup::trusting(&ca).with_cert(&mallory, &issuing);

    let whole_chain = ClientAuth::required(&roots).crl_file(&issuing_crl);
    let (addr, _) = mtls_server(&dir, &ca, whole_chain.clone()).await;
    assert!(
        refused(as_alice(), addr).await,
        "the intermediate's status is unknown"
    );

    let (addr, _) = mtls_server(&dir, &ca, whole_chain.crl_only_leaf(true)).await;
    let stream = as_alice().connect(addr, "localhost").await.unwrap();
    assert_eq!(get_json(stream).await["subject"], "CN=alice");
    assert!(refused(as_mallory(), addr).await, "mallory is revoked");

    let both = ClientAuth::required(&roots)
        .crl_file(&issuing_crl)
        .crl_file(&root_crl);
    let (addr, _) = mtls_server(&dir, &ca, both).await;
    let stream = as_alice().connect(addr, "localhost").await.unwrap();
    assert_eq!(get_json(stream).await["subject"], "CN=alice");
    assert!(refused(as_mallory(), addr).await, "mallory is revoked");
}

/// `reload` re-reads the client CA bundle: a certificate from a CA added to
/// the file is refused before and admitted after; a broken file keeps the
/// old bundle; a connection admitted before stays up when its CA is gone.
#[tokio::test]
async fn reload_rereads_the_client_ca_bundle() {
    let dir = Dir::new();
    let ca = Ca::new("server CA");
    let old_clients = Ca::new("old client CA");
    let new_clients = Ca::new("new client CA");
    let bundle = dir.write("clients.pem", &old_clients.0.pem());
    let (addr, tls) = mtls_server(&dir, &ca, ClientAuth::required(&bundle)).await;
    let alice = old_clients.leaf(&["a.test"], "alice", ExtendedKeyUsagePurpose::ClientAuth);
    let bob = new_clients.leaf(&["b.test"], "bob", ExtendedKeyUsagePurpose::ClientAuth);
    let as_alice = || ClientSetup::trusting(&ca).with_cert(&alice, &old_clients);
    let as_bob = || ClientSetup::trusting(&ca).with_cert(&bob, &new_clients);

    let stream = as_alice().connect(addr, "localhost").await.unwrap();
    let mut before = Sender::new(stream).await;
    assert_eq!(before.get_json("/").await["subject"], "CN=alice");
    assert!(refused(as_bob(), addr).await);

    // A broken bundle: the reload fails, naming the file; nothing changes.
    std::fs::write(&bundle, "not a certificate").unwrap();
    let err = tls.reload().unwrap_err();
    assert_eq!(err.kind(), tollgate::core::ConfigErrorKind::Tls);
    assert!(
        err.to_string().contains(&bundle.display().to_string()),
        "{err}"
    );
    assert!(refused(as_bob(), addr).await);

    // The new CA replaces the old one.
    std::fs::write(&bundle, new_clients.0.pem()).unwrap();
    tls.reload().unwrap();
    let stream = as_bob().connect(addr, "localhost").await.unwrap();
    assert_eq!(get_json(stream).await["subject"], "CN=bob");
    assert!(refused(as_alice(), addr).await);
    // Alice's connection, admitted before, stays up.
    assert_eq!(before.get_json("/after").await["subject"], "CN=alice");
}

/// Each certificate's `notAfter` is published as a gauge, and a reload
/// updates it; `config::Server` publishes it on its admin `/metrics`.
#[tokio::test]
async fn certificate_expiry_is_a_metric_and_follows_reloads() {
    let dir = Dir::new();
    let ca = Ca::new("expiry CA");
    let (cert, key) = ca
        .server_until(&["localhost"], (2031, 1, 2))
        .write(&dir, "default", &ca);
    let (api_cert, api_key) = ca
        .server_until(&["api.test"], (2030, 6, 1))
        .write(&dir, "api", &ca);
    let tls = TlsConfig::builder()
        .certificate(&cert, &key)
        .sni_certificate("api.test", &api_cert, &api_key)
        .build()
        .unwrap();
    let metrics = tollgate::observe::Metrics::new();
    tls.report_to(&metrics);
    let gauge = "tollgate_tls_certificate_expiry_timestamp_seconds";
    let out = metrics.render();
    // 2031-01-02 and 2030-06-01, midnight UTC.
    assert!(
        out.contains(&format!("{gauge}{{certificate=\"default\"}} 1925078400\n")),
        "{out}"
    );
    assert!(
        out.contains(&format!("{gauge}{{certificate=\"api.test\"}} 1906502400\n")),
        "{out}"
    );
    let expiry = tls.certificate_expiry();
    assert_eq!(expiry[0].0, "default");
    assert_eq!(
        expiry[0].1,
        std::time::UNIX_EPOCH + Duration::from_secs(1_925_078_400)
    );

    // A renewed default certificate, picked up by a reload.
    ca.server_until(&["localhost"], (2032, 1, 2))
        .write(&dir, "default", &ca);
    tls.reload().unwrap();
    let out = metrics.render();
    assert!(
        out.contains(&format!("{gauge}{{certificate=\"default\"}} 1956614400\n")),
        "{out}"
    );

    // The config file's server shows it on the admin listener.
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [server.tls]\ncertificates = [{{ cert_file = {cert:?}, key_file = {key:?} }}]\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n"
    );
    let server =
        tollgate::config::Server::start(tollgate::config::ConfigFile::parse(&text).unwrap())
            .await
            .unwrap();
    let admin = server.admin_addr().unwrap();
    let res = client()
        .request(
            http::Request::get(format!("http://{admin}/metrics"))
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.contains(&format!("{gauge}{{certificate=\"default\"}} 1956614400\n")),
        "{body}"
    );
    server.shutdown().await.unwrap();
}

/// Loading a certificate that has expired logs a warning naming it.
#[test]
fn an_expired_certificate_is_warned_about() {
    let dir = Dir::new();
    let ca = Ca::new("expired CA");
    let (cert, key) = ca
        .server_until(&["old.test"], (2020, 1, 1))
        .write(&dir, "old", &ca);
    let (capture, _guard) = tollgate_tests::observe_support::Capture::install();
    let tls = TlsConfig::builder()
        .sni_certificate("old.test", &cert, &key)
        .build()
        .unwrap();
    let warned: Vec<_> = capture
        .all()
        .into_iter()
        .filter(|e| e.get("message") == Some("TLS certificate has expired"))
        .collect();
    assert_eq!(warned.len(), 1, "{:?}", capture.all());
    assert_eq!(warned[0].get("certificate"), Some("old.test"));
    assert_eq!(tls.certificate_expiry()[0].0, "old.test");
}

/// The minimum version survives a client CA reload, which rebuilds the
/// rustls configuration.
#[tokio::test]
async fn tls_1_3_only_holds_across_a_client_ca_reload() {
    let dir = Dir::new();
    let ca = Ca::new("server CA");
    let clients = Ca::new("client CA");
    let bundle = dir.write("clients.pem", &clients.0.pem());
    let (cert, key) = ca.server(&["localhost"]).write(&dir, "server", &ca);
    let tls = TlsConfig::builder()
        .certificate(cert, key)
        .client_auth(ClientAuth::required(&bundle))
        .min_version(TlsVersion::Tls13)
        .build()
        .unwrap();
    let addr = spawn_tls(tls.clone(), whoami()).await;
    let alice = clients.leaf(&["a.test"], "alice", ExtendedKeyUsagePurpose::ClientAuth);
    tls.reload().unwrap();

    let stream = only_tls_1_3(
        || ClientSetup::trusting(&ca).with_cert(&alice, &clients),
        addr,
    )
    .await;
    assert_eq!(get_json(stream).await["subject"], "CN=alice");
}

/// `curl --http2` (and `--http1.1`) verifies the server against the CA
/// file and negotiates the protocol by ALPN. Skipped when `curl`, or its
/// HTTP/2 support, is missing.
#[tokio::test]
async fn curl_negotiates_http2_and_http1() {
    let version = match tokio::process::Command::new("curl")
        .arg("--version")
        .output()
        .await
    {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        _ => {
            eprintln!("note: curl is not on PATH; skipping the curl handshake test");
            return;
        }
    };
    if !version.contains("HTTP2") {
        eprintln!("note: this curl has no HTTP/2; skipping the curl handshake test");
        return;
    }
    let dir = Dir::new();
    let ca = Ca::new("curl CA");
    let (cert, key) = ca.server(&["gateway.test"]).write(&dir, "server", &ca);
    let ca_file = dir.write("ca.pem", &ca.0.pem());
    let tls = TlsConfig::builder().certificate(cert, key).build().unwrap();
    let addr = spawn_tls(tls, whoami()).await;
    let port = addr.port();

    for (flag, negotiated, seen) in [
        ("--http2", "2", "HTTP/2.0"),
        ("--http1.1", "1.1", "HTTP/1.1"),
    ] {
        let out = tokio::process::Command::new("curl")
            .args(["--silent", "--show-error", "--noproxy", "*", flag])
            .args(["--max-time", "30", "--write-out", "\n%{http_version}"])
            .arg("--cacert")
            .arg(&ca_file)
            .arg("--resolve")
            .arg(format!("gateway.test:{port}:127.0.0.1"))
            .arg(format!("https://gateway.test:{port}/curl"))
            .kill_on_drop(true)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "curl {flag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        let (body, version) = stdout.rsplit_once('\n').unwrap();
        assert_eq!(version, negotiated, "curl {flag}: {stdout}");
        let json: Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["version"], seen, "{json}");
        assert_eq!(json["secure"], true, "{json}");
    }
}

#[tokio::test]
async fn mtls_optional_admits_clients_without_a_certificate() {
    let dir = Dir::new();
    let ca = Ca::new("server CA");
    let clients = Ca::new("client CA");
    let client_ca = dir.write("clients.pem", &clients.0.pem());
    let (addr, _) = mtls_server(&dir, &ca, ClientAuth::optional(client_ca)).await;
    let stream = ClientSetup::trusting(&ca)
        .connect(addr, "localhost")
        .await
        .unwrap();
    let json = get_json(stream).await;
    assert_eq!(json["subject"], Value::Null, "{json}");
    let bob = clients.leaf(&["bob.test"], "bob", ExtendedKeyUsagePurpose::ClientAuth);
    let stream = ClientSetup::trusting(&ca)
        .with_cert(&bob, &clients)
        .connect(addr, "localhost")
        .await
        .unwrap();
    assert_eq!(get_json(stream).await["subject"], "CN=bob");
}

#[tokio::test]
async fn plain_http_is_redirected_to_https() {
    let (plain, addr) = listener().await;
    tokio::spawn(tollgate::redirect_to_https(plain, 8443, std::future::pending()).into_future());
    let res = client()
        .request(
            http::Request::post(format!("http://{addr}/a/b?c=d&e"))
                .header(header::HOST, "example.com:8080")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        res.headers()[header::LOCATION],
        "https://example.com:8443/a/b?c=d&e"
    );

    let raw = raw_exchange(
        addr,
        b"GET /x HTTP/1.1\r\nHost: -bad-.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
    assert!(raw.contains("application/problem+json"), "{raw}");

    let (plain, addr) = listener().await;
    tokio::spawn(tollgate::redirect_to_https(plain, 443, std::future::pending()).into_future());
    let res = client()
        .request(
            http::Request::get(format!("http://{addr}/"))
                .header(header::HOST, "example.com")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.headers()[header::LOCATION], "https://example.com/");
}

#[tokio::test]
async fn hsts_header_is_added_once() {
    let dir = Dir::new();
    let ca = Ca::new("test CA");
    let (cert, key) = ca.server(&["localhost"]).write(&dir, "server", &ca);
    let tls = TlsConfig::builder().certificate(cert, key).build().unwrap();
    let router = Router::new()
        .route("/plain", get(|| async { "ok" }))
        .route(
            "/own",
            get(|| async { ([(header::STRICT_TRANSPORT_SECURITY, "max-age=5")], "ok") }),
        )
        .layer(tollgate::hsts_layer(Duration::from_secs(31_536_000), true));
    let addr = spawn_tls(tls, router).await;
    let stream = ClientSetup::trusting(&ca)
        .alpn(&[b"http/1.1"])
        .connect(addr, "localhost")
        .await
        .unwrap();
    let Sender::H1(mut sender) = Sender::new(stream).await else {
        unreachable!()
    };
    for (path, expected) in [
        ("/plain", "max-age=31536000; includeSubDomains"),
        ("/own", "max-age=5"),
    ] {
        let res = sender
            .send_request(
                http::Request::get(path)
                    .header(header::HOST, "localhost")
                    .body(empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let values: Vec<_> = res
            .headers()
            .get_all(header::STRICT_TRANSPORT_SECURITY)
            .iter()
            .collect();
        assert_eq!(values, [expected], "{path}");
        res.into_body().collect().await.unwrap();
    }
}

/// An upstream behind a private CA whose certificate names only
/// `internal.example`, reached at `localhost`: the gateway trusts the CA
/// file and sends and verifies the overriding name, on both pools.
#[tokio::test]
async fn upstream_private_ca_and_sni_override_on_both_pools() {
    let dir = Dir::new();
    let (tls, ca_file) = tls::internal_upstream(&dir);
    let upstream = spawn_tls(tls, whoami()).await;

    let gateway = |pool: PoolKind, protocol: Protocol, name: Option<&str>| {
        let mut up = Upstream::builder("internal")
            .pool(pool)
            .protocol(protocol)
            .endpoint(format!("https://localhost:{}", upstream.port()))
            .ca_file(&ca_file);
        if let Some(name) = name {
            up = up.tls_server_name(name);
        }
        Gateway::builder()
            .upstream(up)
            .route(Route::prefix("/").to("internal"))
            .build()
            .unwrap()
    };
    for pool in [PoolKind::HyperUtil, PoolKind::Worker] {
        for (protocol, version) in [(Protocol::Auto, "HTTP/2.0"), (Protocol::Http1, "HTTP/1.1")] {
            let gw = spawn_gateway(gateway(pool, protocol, Some("internal.example"))).await;
            let res = client()
                .request(http::Request::get(gw.url("/x")).body(empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(res.status(), 200, "{pool:?} {protocol:?}");
            let json = body_json(res).await;
            assert_eq!(json["version"], version, "{pool:?} {json}");
            assert_eq!(json["secure"], true, "{pool:?} {json}");
        }
        // Without the override the certificate does not match `localhost`.
        let gw = spawn_gateway(gateway(pool, Protocol::Auto, None)).await;
        let res = client()
            .request(http::Request::get(gw.url("/x")).body(empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 502, "{pool:?}");
    }
}

#[test]
fn upstream_tls_settings_are_checked_at_build() {
    let dir = Dir::new();
    let bad = |up: tollgate::UpstreamBuilder| {
        Gateway::builder()
            .upstream(up)
            .route(Route::prefix("/").to("u"))
            .build()
            .unwrap_err()
            .to_string()
    };
    let missing: &Path = &dir.0.join("nope.pem");
    let err = bad(Upstream::builder("u")
        .endpoint("https://localhost:1")
        .ca_file(missing));
    assert!(err.contains("nope.pem"), "{err}");
    let empty = dir.write("empty.pem", "");
    let err = bad(Upstream::builder("u")
        .endpoint("https://localhost:1")
        .ca_file(&empty));
    assert!(err.contains("empty.pem"), "{err}");
    let err = bad(Upstream::builder("u")
        .endpoint("https://localhost:1")
        .tls_server_name("not a name"));
    assert!(err.contains("not a name"), "{err}");
    let err = bad(Upstream::builder("u")
        .endpoint("https://localhost:1")
        .client_certificate(&empty, &empty));
    assert!(
        err.contains("client_cert_file") && err.contains("empty.pem"),
        "{err}"
    );
    let err = bad(Upstream::builder("u")
        .endpoint("https://localhost:1")
        .client_certificate(missing, missing));
    assert!(err.contains("nope.pem"), "{err}");
    // A key that is not the certificate's.
    let ca = Ca::new("client CA");
    let (cert, _) = ca
        .leaf(&["a.test"], "a", ExtendedKeyUsagePurpose::ClientAuth)
        .write(&dir, "a", &ca);
    let (_, other_key) = ca
        .leaf(&["b.test"], "b", ExtendedKeyUsagePurpose::ClientAuth)
        .write(&dir, "b", &ca);
    let err = bad(Upstream::builder("u")
        .endpoint("https://localhost:1")
        .client_certificate(&cert, &other_key));
    assert!(
        err.contains("client_cert_file") && err.contains("a.pem"),
        "{err}"
    );
    // In a config file, the certificate without its key.
    let text = format!(
        "[[upstreams]]\nname = \"u\"\nendpoints = [\"https://localhost:1\"]\n\
         client_cert_file = {cert:?}\n"
    );
    let err = tollgate::config::ConfigFile::parse_with(&text, &|_| None)
        .and_then(|f| f.build().map(|_| ()))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "line 1: upstreams[0]: upstream \"u\": client_cert_file and client_key_file go together"
    );
}

/// Mutual TLS to an upstream that requires client certificates: the
/// gateway presents its own, on both pools and from a config file; without
/// one the upstream refuses the handshake and the client gets a 502; new
/// files and a reload rotate it.
#[tokio::test]
async fn the_gateway_presents_a_client_certificate_to_an_upstream() {
    let dir = Dir::new();
    let server_ca = Ca::new("upstream CA");
    let clients = Ca::new("gateway client CA");
    let client_ca = dir.write("gateway-clients.pem", &clients.0.pem());
    let (upstream, _) = mtls_server(&dir, &server_ca, ClientAuth::required(client_ca)).await;
    let server_ca_file = dir.write("upstream-ca.pem", &server_ca.0.pem());
    let (cert, key) = clients
        .leaf(
            &["gateway.test"],
            "gateway",
            ExtendedKeyUsagePurpose::ClientAuth,
        )
        .write(&dir, "gateway-client", &clients);
    let endpoint = format!("https://localhost:{}", upstream.port());

    let ask = |url: String| async move {
        let res = client()
            .request(http::Request::get(url).body(empty()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        (
            status,
            if status == 200 {
                body_json(res).await
            } else {
                Value::Null
            },
        )
    };
    for pool in [PoolKind::HyperUtil, PoolKind::Worker] {
        let gateway = |with_cert: bool| {
            let mut up = Upstream::builder("internal")
                .pool(pool)
                .endpoint(&endpoint)
                .ca_file(&server_ca_file);
            if with_cert {
                up = up.client_certificate(&cert, &key);
            }
            Gateway::builder()
                .upstream(up)
                .route(Route::prefix("/").to("internal"))
                .build()
                .unwrap()
        };
        let gw = spawn_gateway(gateway(true)).await;
        let (status, json) = ask(gw.url("/x")).await;
        assert_eq!(status, 200, "{pool:?}");
        assert_eq!(json["subject"], "CN=gateway", "{pool:?} {json}");
        let gw = spawn_gateway(gateway(false)).await;
        assert_eq!(ask(gw.url("/x")).await.0, 502, "{pool:?}");
    }

    // The active health check's probes present it too: without it, the
    // endpoint fails its probes.
    let probed = |with_cert: bool| {
        let mut up = Upstream::builder("internal")
            .endpoint(&endpoint)
            .ca_file(&server_ca_file)
            .health_check(
                tollgate::HealthCheck::new("/healthz")
                    .interval(Duration::from_millis(50))
                    .unhealthy_threshold(1),
            );
        if with_cert {
            up = up.client_certificate(&cert, &key);
        }
        up.build::<axum::body::Body>().unwrap()
    };
    let (with, without) = (probed(true), probed(false));
    tollgate_tests::auth_support::eventually("the probe without a certificate fails", || async {
        without.healthy_endpoint_count() == 0
    })
    .await;
    // Several rounds later, the one with the certificate still passes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(with.healthy_endpoint_count(), 1);
    assert!(with.endpoint_status()[0].passing_health_check);

    // The same from a config file.
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nenabled = false\n\n\
         [[upstreams]]\nname = \"internal\"\nendpoints = [\"{endpoint}\"]\n\
         ca_file = {server_ca_file:?}\nclient_cert_file = {cert:?}\nclient_key_file = {key:?}\n\n\
         [[routes]]\nprefix = \"/\"\nto = \"internal\"\n"
    );
    let server = tollgate::config::Server::start(
        tollgate::config::ConfigFile::parse_with(&text, &|_| None).unwrap(),
    )
    .await
    .unwrap();
    let (status, json) = ask(format!("http://{}/x", server.local_addr())).await;
    assert_eq!(status, 200);
    assert_eq!(json["subject"], "CN=gateway", "{json}");

    // Rotation: new files under the same names, then a reload (SIGHUP)
    // of the unchanged config builds the upstream again with them.
    clients
        .leaf(
            &["gateway.test"],
            "gateway-rotated",
            ExtendedKeyUsagePurpose::ClientAuth,
        )
        .write(&dir, "gateway-client", &clients);
    server
        .reloader()
        .reload_from(tollgate::config::ConfigFile::parse_with(&text, &|_| None).unwrap())
        .unwrap();
    let (status, json) = ask(format!("http://{}/x", server.local_addr())).await;
    assert_eq!(status, 200);
    assert_eq!(json["subject"], "CN=gateway-rotated", "{json}");
    server.shutdown().await.unwrap();
}
