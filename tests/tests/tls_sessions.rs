//! TLS session resumption on the gateway's listener: the session cache,
//! session tickets with random keys, tickets sealed with key files that
//! several instances share (and their rotation by reload), the session
//! timeout, the client-auth rule (a CA or CRL reload ends resumption of
//! sessions checked under the old files), the metric, and the config
//! keys. Real rustls clients that keep their session store between
//! connections, against real listeners on 127.0.0.1.

#![expect(clippy::unwrap_used, reason = "test helpers outside #[test] fns")]

use std::{
    io,
    net::SocketAddr,
    path::PathBuf,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Waker},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{Json, Router, extract::Request};
use http::header;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, HandshakeKind, SupportedProtocolVersion, pki_types::ServerName};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::TlsConnector;
use tollgate::{ClientAuth, TlsConfig, TlsConfigBuilder, core::Identity, observe::Metrics};
use tollgate_tests::{empty, listener};

#[expect(dead_code, reason = "shared with tls_server.rs, which uses all of it")]
#[path = "common/tls.rs"]
mod tls;
use tls::{Ca, ClientSetup, Dir};

const TLS13: &SupportedProtocolVersion = &rustls::version::TLS13;
const TLS12: &SupportedProtocolVersion = &rustls::version::TLS12;

/// Answers with the client certificate's subject, when there is one.
fn whoami() -> Router {
    Router::new().fallback(|req: Request| async move {
        let identity = req.extensions().get::<Identity>();
        Json(json!({ "subject": identity.and_then(|i| i.subject.as_deref()) }))
    })
}

async fn spawn(tls: TlsConfig, metrics: &Metrics) -> SocketAddr {
    let (listener, addr) = listener().await;
    tokio::spawn(
        tollgate::serve(listener, whoami(), std::future::pending())
            .header_read_timeout(Duration::from_secs(5))
            .metrics(metrics.clone())
            .tls(tls)
            .into_future(),
    );
    addr
}

/// A client of one TLS version, HTTP/1.1, that keeps its sessions (in
/// rustls's default store) across the connections it makes.
fn client(ca: &Ca, version: &'static SupportedProtocolVersion) -> Arc<ClientConfig> {
    ClientSetup::trusting(ca)
        .alpn(&[b"http/1.1"])
        .versions(&[version])
        .config()
}

/// One connection and one request with `config`: whether the handshake
/// resumed a session, and the answer. The request makes a TLS 1.3 client
/// read the tickets that follow the handshake. `Err` when the handshake or
/// the request fails.
async fn visit(config: &Arc<ClientConfig>, addr: SocketAddr) -> Result<(bool, Value), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    visit_on(Arc::clone(config), tcp).await
}

/// [`visit`] over a connection made already.
async fn visit_on<IO>(config: Arc<ClientConfig>, io: IO) -> Result<(bool, Value), String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let name = ServerName::try_from("localhost").unwrap();
    let stream = TlsConnector::from(config)
        .connect(name, io)
        .await
        .map_err(|e| e.to_string())?;
    let resumed = stream.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::get("/")
        .header(header::HOST, "localhost")
        .body(empty())
        .unwrap();
    let res = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((resumed, serde_json::from_slice(&body).unwrap()))
}

/// Whether a second connection of one client resumes the first one's
/// session: the first on `first`, the second on `second`.
async fn resumes(
    ca: &Ca,
    version: &'static SupportedProtocolVersion,
    first: SocketAddr,
    second: SocketAddr,
) -> bool {
    let config = client(ca, version);
    let (resumed, _) = visit(&config, first).await.unwrap();
    assert!(!resumed, "a first connection is a full handshake");
    visit(&config, second).await.unwrap().0
}

/// A `localhost` certificate from `ca`, in `dir`.
fn builder(dir: &Dir, ca: &Ca) -> TlsConfigBuilder {
    let (cert, key) = ca.server(&["localhost"]).write(dir, "server", ca);
    TlsConfig::builder().certificate(cert, key)
}

/// A ticket key file of 80 random bytes.
fn key_file(dir: &Dir, name: &str) -> PathBuf {
    let path = dir.0.join(name);
    let bytes: Vec<u8> = std::iter::repeat_with(|| fastrand::u8(..))
        .take(80)
        .collect();
    std::fs::write(&path, bytes).unwrap();
    path
}

fn metric(metrics: &Metrics, line: &str) -> bool {
    metrics.render().lines().any(|l| l == line)
}

/// Holds a client's writes once it has read from the server, until
/// [`open`](Self::open): its second flight (certificate, Finished) waits,
/// mid-handshake, for the test to do something on the server.
#[derive(Default)]
struct Gate {
    read: AtomicBool,
    held: AtomicBool,
    open: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Gate {
    /// Until the client is held.
    async fn held(&self) {
        while !self.held.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
        if let Some(waker) = self.waker.lock().unwrap().take() {
            waker.wake();
        }
    }
}

/// A TCP stream whose writes a [`Gate`] holds.
struct Gated(TcpStream, Arc<Gate>);

impl AsyncRead for Gated {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.0).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.1.read.store(true, Ordering::SeqCst);
        }
        poll
    }
}

impl AsyncWrite for Gated {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let gate = Arc::clone(&self.1);
        if gate.read.load(Ordering::SeqCst) && !gate.open.load(Ordering::SeqCst) {
            *gate.waker.lock().unwrap() = Some(cx.waker().clone());
            gate.held.store(true, Ordering::SeqCst);
            if !gate.open.load(Ordering::SeqCst) {
                return Poll::Pending;
            }
        }
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A client of `version` with `leaf`'s certificate, trusting `ca`.
fn client_with_cert(
    ca: &Ca,
    leaf: &tls::Leaf,
    issuer: &Ca,
    version: &'static SupportedProtocolVersion,
) -> Arc<ClientConfig> {
    ClientSetup::trusting(ca)
        .alpn(&[b"http/1.1"])
        .versions(&[version])
        .with_cert(leaf, issuer)
        .config()
}

/// What the client-auth tests share: a server CA, a client CA in a file
/// with a CRL file revoking nothing, a ticket key file, and alice's
/// certificate (serial 1) from the client CA.
struct Mtls {
    dir: Dir,
    ca: Ca,
    clients: Ca,
    client_ca: PathBuf,
    crl: PathBuf,
    key: PathBuf,
    alice: tls::Leaf,
}

impl Mtls {
    fn new() -> Self {
        let dir = Dir::new();
        let clients = Ca::new("client CA");
        Self {
            ca: Ca::new("server CA"),
            client_ca: dir.write("clients.pem", &clients.0.pem()),
            crl: dir.write("clients.crl.pem", &clients.crl(1, &[])),
            key: key_file(&dir, "ticket.key"),
            alice: clients.client_numbered("alice", 1),
            clients,
            dir,
        }
    }

    /// A listener with `auth` whose sessions resume by tickets sealed
    /// with the key file alone (no session cache).
    fn keyed(&self, auth: ClientAuth) -> TlsConfig {
        builder(&self.dir, &self.ca)
            .session_cache(0)
            .session_ticket_key_file(&self.key)
            .client_auth(auth)
            .build()
            .unwrap()
    }

    /// Alice's client of `version`.
    fn alice(&self, version: &'static SupportedProtocolVersion) -> Arc<ClientConfig> {
        client_with_cert(&self.ca, &self.alice, &self.clients, version)
    }
}

// === tests ===

/// By default a returning client resumes (by ticket, and by the cache for
/// clients without tickets); with neither, every handshake is full. Each
/// setting is asserted for TLS 1.3 and 1.2, and the resumed handshakes are
/// counted.
#[tokio::test]
async fn a_returning_client_resumes_by_ticket_or_by_the_cache() {
    let dir = Dir::new();
    let ca = Ca::new("session CA");
    let metrics = Metrics::new();
    let default = spawn(builder(&dir, &ca).build().unwrap(), &metrics).await;
    let cache_only = spawn(
        builder(&dir, &ca).session_tickets(false).build().unwrap(),
        &Metrics::new(),
    )
    .await;
    let tickets_only = spawn(
        builder(&dir, &ca).session_cache(0).build().unwrap(),
        &Metrics::new(),
    )
    .await;
    let neither = spawn(
        builder(&dir, &ca)
            .session_tickets(false)
            .session_cache(0)
            .build()
            .unwrap(),
        &Metrics::new(),
    )
    .await;
    for version in [TLS13, TLS12] {
        let v = format!("{:?}", version.version);
        assert!(resumes(&ca, version, default, default).await, "{v}");
        assert!(resumes(&ca, version, cache_only, cache_only).await, "{v}");
        assert!(
            resumes(&ca, version, tickets_only, tickets_only).await,
            "{v}"
        );
        assert!(!resumes(&ca, version, neither, neither).await, "{v}");
    }
    for version in ["1.3", "1.2"] {
        assert!(
            metric(
                &metrics,
                &format!("tollgate_tls_handshakes_total{{version=\"{version}\"}} 2")
            ),
            "{}",
            metrics.render()
        );
        assert!(
            metric(
                &metrics,
                &format!("tollgate_tls_resumed_handshakes_total{{version=\"{version}\"}} 1")
            ),
            "{}",
            metrics.render()
        );
    }
}

/// A certificate reload (no client auth) keeps the sessions: clients
/// resume across it.
#[tokio::test]
async fn sessions_resume_across_a_certificate_reload() {
    let dir = Dir::new();
    let ca = Ca::new("session CA");
    let tls = builder(&dir, &ca).build().unwrap();
    let addr = spawn(tls.clone(), &Metrics::new()).await;
    for version in [TLS13, TLS12] {
        let config = client(&ca, version);
        assert!(!visit(&config, addr).await.unwrap().0);
        ca.server(&["localhost"]).write(&dir, "server", &ca);
        tls.reload().unwrap();
        assert!(
            visit(&config, addr).await.unwrap().0,
            "{:?}",
            version.version
        );
    }
}

/// Instances given the same key file resume each other's sessions by
/// ticket (no session cache: only the ticket can do it); an instance with
/// random keys, or with another key, does not. During a rotation the
/// previous key, listed second, still opens tickets.
#[tokio::test]
async fn instances_sharing_ticket_keys_resume_each_others_sessions() {
    let dir = Dir::new();
    let ca = Ca::new("session CA");
    let (old, new) = (key_file(&dir, "old.key"), key_file(&dir, "new.key"));
    let instance = async |keys: &[&PathBuf]| {
        let mut b = builder(&dir, &ca).session_cache(0);
        for key in keys {
            b = b.session_ticket_key_file(*key);
        }
        spawn(b.build().unwrap(), &Metrics::new()).await
    };
    let a = instance(&[&old]).await;
    let b = instance(&[&old]).await;
    let random = instance(&[]).await;
    let rotating = instance(&[&new, &old]).await;
    let new_only = instance(&[&new]).await;
    for version in [TLS13, TLS12] {
        let v = format!("{:?}", version.version);
        assert!(resumes(&ca, version, a, b).await, "{v}: same key");
        assert!(!resumes(&ca, version, a, random).await, "{v}: random keys");
        assert!(
            resumes(&ca, version, a, rotating).await,
            "{v}: old key second"
        );
        assert!(
            !resumes(&ca, version, a, new_only).await,
            "{v}: old key gone"
        );
        // The first key seals: the rotating instance's tickets open where
        // the new key is, not where only the old one is.
        assert!(
            resumes(&ca, version, rotating, new_only).await,
            "{v}: sealed with the new key"
        );
        assert!(
            !resumes(&ca, version, rotating, a).await,
            "{v}: not with the old one"
        );
    }
}

/// A reload reads the key files again: after the files rotate (the new
/// key first, the old one second) tickets made before still resume, and
/// new tickets are sealed with the new key. A key file that is not 80
/// bytes fails the reload, naming the file, and the keys in use stay.
#[tokio::test]
async fn a_reload_reads_the_ticket_key_files_again() {
    let dir = Dir::new();
    let ca = Ca::new("session CA");
    let (first, second) = (key_file(&dir, "first.key"), key_file(&dir, "second.key"));
    let old = std::fs::read(&first).unwrap();
    let tls = builder(&dir, &ca)
        .session_cache(0)
        .session_ticket_key_file(&first)
        .session_ticket_key_file(&second)
        .build()
        .unwrap();
    let addr = spawn(tls.clone(), &Metrics::new()).await;
    let before = client(&ca, TLS13);
    assert!(!visit(&before, addr).await.unwrap().0);

    // Rotate: a new key first, the old one second.
    let new = key_file(&dir, "new.key");
    std::fs::copy(&new, &first).unwrap();
    std::fs::write(&second, &old).unwrap();
    tls.reload().unwrap();
    assert!(
        visit(&before, addr).await.unwrap().0,
        "the old key still opens"
    );
    let new_only = spawn(
        builder(&dir, &ca)
            .session_cache(0)
            .session_ticket_key_file(&new)
            .build()
            .unwrap(),
        &Metrics::new(),
    )
    .await;
    assert!(
        resumes(&ca, TLS13, addr, new_only).await,
        "the new key seals"
    );

    // A key file cut short: refused, and the keys in use stay.
    std::fs::write(&first, &old[..79]).unwrap();
    let err = tls.reload().unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "session ticket key file {}: 79 bytes; it must hold exactly 80 random bytes \
             (`openssl rand 80`)",
            first.display()
        )
    );
    assert!(
        resumes(&ca, TLS13, addr, new_only).await,
        "the new key still seals"
    );
}

/// A session older than the session timeout is not resumed: by ticket,
/// with key files and with random keys (the client is told the timeout as
/// the ticket's lifetime, and the server refuses older tickets; that
/// refusal alone, for a client that offers one anyway, is `session.rs`'s
/// unit test `old_and_future_tickets_are_refused`), and from the session
/// cache, by session id (TLS 1.2) or by a ticket naming a cached session
/// (TLS 1.3).
#[tokio::test]
async fn sessions_older_than_the_session_timeout_are_not_resumed() {
    let dir = Dir::new();
    let ca = Ca::new("session CA");
    let key = key_file(&dir, "ticket.key");
    let keyed = spawn(
        builder(&dir, &ca)
            .session_cache(0)
            .session_ticket_key_file(&key)
            .session_timeout(Duration::from_secs(1))
            .build()
            .unwrap(),
        &Metrics::new(),
    )
    .await;
    let random = spawn(
        builder(&dir, &ca)
            .session_cache(0)
            .session_timeout(Duration::from_secs(1))
            .build()
            .unwrap(),
        &Metrics::new(),
    )
    .await;
    let cache = spawn(
        builder(&dir, &ca)
            .session_tickets(false)
            .session_timeout(Duration::from_secs(1))
            .build()
            .unwrap(),
        &Metrics::new(),
    )
    .await;
    let mut clients = Vec::new();
    for (addr, version) in [
        (keyed, TLS13),
        (random, TLS13),
        (cache, TLS13),
        (cache, TLS12),
    ] {
        // At once: resumed.
        assert!(resumes(&ca, version, addr, addr).await);
        let config = client(&ca, version);
        assert!(!visit(&config, addr).await.unwrap().0);
        clients.push((config, addr, version));
    }
    // Two seconds later (the issue time counts whole seconds): not.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    for (config, addr, version) in clients {
        let resumed = visit(&config, addr).await.unwrap().0;
        assert!(!resumed, "{addr} {:?}: too old", version.version);
    }
}

/// With client certificates, a session resumes with its identity; after a
/// reload that revokes the client's certificate, its session is not
/// resumed (which would skip the check) and the handshake is refused: by
/// ticket with random keys or key files, and by the session cache. With
/// key files, a reload that changes no client-auth file keeps resumption.
#[tokio::test]
async fn a_client_auth_reload_ends_resumption_of_sessions_checked_before_it() {
    let Mtls {
        dir,
        ca,
        clients,
        client_ca,
        crl,
        key,
        alice,
    } = Mtls::new();
    for (mode, keyed) in [
        ("random keys", false),
        ("key files", true),
        ("cache", false),
    ] {
        std::fs::write(&crl, clients.crl(1, &[])).unwrap();
        let mut b = builder(&dir, &ca).client_auth(ClientAuth::required(&client_ca).crl_file(&crl));
        if keyed {
            b = b.session_ticket_key_file(&key);
        }
        if mode == "cache" {
            b = b.session_tickets(false);
        }
        let tls = b.build().unwrap();
        let addr = spawn(tls.clone(), &Metrics::new()).await;
        let configs = [TLS13, TLS12].map(|version| {
            ClientSetup::trusting(&ca)
                .alpn(&[b"http/1.1"])
                .versions(&[version])
                .with_cert(&alice, &clients)
                .config()
        });
        for config in &configs {
            let (resumed, json) = visit(config, addr).await.unwrap();
            assert!(!resumed);
            assert_eq!(json["subject"], "CN=alice");
            let (resumed, json) = visit(config, addr).await.unwrap();
            assert!(resumed, "{mode}");
            assert_eq!(
                json["subject"], "CN=alice",
                "the identity survives resumption"
            );
        }
        if keyed {
            // Nothing changed in the client-auth files: still resumed.
            tls.reload().unwrap();
            for config in &configs {
                assert!(visit(config, addr).await.unwrap().0);
            }
        }
        // Alice's certificate is revoked now: her sessions do not resume,
        // and the full handshake refuses her.
        std::fs::write(&crl, clients.crl(2, &[1])).unwrap();
        tls.reload().unwrap();
        for config in &configs {
            let outcome = visit(config, addr).await;
            assert!(outcome.is_err(), "{mode}: {outcome:?}");
        }
    }
}

/// The `[server.tls]` keys: instances started from the same config with
/// a key file resume each other's sessions, `session_tickets = false`
/// with `session_cache = 0` resumes nothing, and bad values are refused
/// with their key.
#[tokio::test]
async fn session_settings_come_from_the_config() {
    let dir = Dir::new();
    let ca = Ca::new("session CA");
    let (cert, key) = ca.server(&["localhost"]).write(&dir, "server", &ca);
    let ticket_key = key_file(&dir, "ticket.key");
    let config = |extra: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[server.tls]\n\
             certificates = [{{ cert_file = {cert:?}, key_file = {key:?} }}]\n{extra}\n\
             [admin]\nenabled = false\n"
        )
    };
    let start = async |text: String| {
        let file = tollgate::config::ConfigFile::parse_with(&text, &|_| None).unwrap();
        let server = tollgate::config::Server::start(file).await.unwrap();
        let addr = server.local_addr();
        (server, addr)
    };
    let shared = config(&format!(
        "session_cache = 0\nsession_ticket_key_files = [{ticket_key:?}]\nsession_timeout = \"1h\""
    ));
    let (a, a_addr) = start(shared.clone()).await;
    let (b, b_addr) = start(shared).await;
    let (off, off_addr) = start(config("session_cache = 0\nsession_tickets = false")).await;
    for version in [TLS13, TLS12] {
        // No route: the answers are 404 problems, which will do.
        assert!(resumes(&ca, version, a_addr, b_addr).await);
        assert!(!resumes(&ca, version, off_addr, off_addr).await);
    }
    for server in [a, b, off] {
        server.shutdown().await.unwrap();
    }

    let short = dir.0.join("short.key");
    std::fs::write(&short, [7; 79]).unwrap();
    for (extra, message) in [
        (
            format!("session_ticket_key_files = [{short:?}]"),
            format!(
                "line 3: server.tls: session ticket key file {}: 79 bytes; it must hold exactly 80 \
                 random bytes (`openssl rand 80`)",
                short.display()
            ),
        ),
        (
            "session_timeout = \"0s\"".to_owned(),
            "line 3: server.tls: tls: session timeout 0ns is out of range (1s to 7 days)".to_owned(),
        ),
        (
            "session_cache = 100000000000".to_owned(),
            "line 3: server.tls: tls: a session cache of 100000000000 sessions is too large \
             (at most 1000000)"
                .to_owned(),
        ),
        (
            format!("session_tickets = false\nsession_ticket_key_files = [{ticket_key:?}]"),
            "line 3: server.tls: tls: session ticket key files are given but session tickets are off"
                .to_owned(),
        ),
    ] {
        let file = tollgate::config::ConfigFile::parse_with(&config(&extra), &|_| None).unwrap();
        let err = file.tls_config().unwrap_err().to_string();
        assert_eq!(err, message);
    }
    let err = tollgate::config::ConfigFile::parse_with(&config("session_tickets = 1"), &|_| None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("server.tls.session_tickets"), "{err}");
}

/// A handshake under way while a reload revokes its client's certificate:
/// the client's certificate and Finished reach the server after the
/// reload. The connection, accepted before, is checked with the files of
/// before and served; but the tickets it is given are bound to those
/// files, so they do not resume after the reload, where the client is
/// refused.
#[tokio::test]
async fn tickets_of_a_handshake_checked_before_a_client_auth_reload_do_not_resume_after_it() {
    let m = Mtls::new();
    for version in [TLS13, TLS12] {
        std::fs::write(&m.crl, m.clients.crl(1, &[])).unwrap();
        let tls = m.keyed(ClientAuth::required(&m.client_ca).crl_file(&m.crl));
        let addr = spawn(tls.clone(), &Metrics::new()).await;
        let config = m.alice(version);

        let gate = Arc::new(Gate::default());
        let tcp = TcpStream::connect(addr).await.unwrap();
        let held = tokio::spawn(visit_on(Arc::clone(&config), Gated(tcp, Arc::clone(&gate))));
        gate.held().await;
        std::fs::write(&m.crl, m.clients.crl(2, &[1])).unwrap();
        tls.reload().unwrap();
        gate.open();
        let (resumed, json) = held.await.unwrap().unwrap();
        assert!(!resumed);
        assert_eq!(json["subject"], "CN=alice", "accepted before the reload");

        let outcome = visit(&config, addr).await;
        assert!(outcome.is_err(), "{:?}: {outcome:?}", version.version);
    }
}

/// The client-auth files are read once per reload: the checks and the
/// binding of the tickets come from the same bytes. Here the CRL file
/// changes while a reload reads it (a pipe gives the CRL of before, then
/// one revoking alice): her tickets are bound to what her certificate was
/// checked with, and a later reload with the new CRL ends them.
#[cfg(unix)]
#[tokio::test]
async fn a_reload_binds_tickets_to_the_client_auth_files_it_checked_with() {
    use std::io::Write;

    let m = Mtls::new();
    let crl = &m.crl;
    let tls = m.keyed(ClientAuth::required(&m.client_ca).crl_file(crl));
    let addr = spawn(tls.clone(), &Metrics::new()).await;

    std::fs::remove_file(crl).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(crl)
        .status()
        .unwrap();
    assert!(made.success());
    // One CRL revoking alice: a CRL made again is signed again, and its
    // bytes differ.
    let revoked = m.clients.crl(2, &[1]);
    let (before, after) = (m.clients.crl(1, &[]), revoked.clone());
    let pipe = crl.clone();
    // Left blocked when the reload reads the file once; the test process
    // ends it.
    std::thread::spawn(move || {
        for contents in [before, after] {
            let mut writer = std::fs::OpenOptions::new().write(true).open(&pipe).unwrap();
            writer.write_all(contents.as_bytes()).unwrap();
            drop(writer);
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    let reloader = tls.clone();
    tokio::task::spawn_blocking(move || reloader.reload())
        .await
        .unwrap()
        .unwrap();
    std::fs::remove_file(crl).unwrap();
    std::fs::write(crl, &revoked).unwrap();

    let config = m.alice(TLS13);
    let (resumed, json) = visit(&config, addr).await.unwrap();
    assert!(!resumed);
    assert_eq!(
        json["subject"], "CN=alice",
        "checked with the CRL of before"
    );
    tls.reload().unwrap();
    let outcome = visit(&config, addr).await;
    assert!(outcome.is_err(), "{outcome:?}");
}

/// Instances that share key files and client-auth files but not the rule:
/// a session made without a certificate where one is optional does not
/// resume where one is required, and one whose CRLs were checked for the
/// leaf alone does not resume where the whole chain is checked.
#[tokio::test]
async fn a_session_resumes_only_under_the_client_auth_rule_it_was_made_by() {
    let m = Mtls::new();
    let instance = async |auth: ClientAuth| spawn(m.keyed(auth), &Metrics::new()).await;
    let optional = instance(ClientAuth::optional(&m.client_ca).crl_file(&m.crl)).await;
    let required = instance(ClientAuth::required(&m.client_ca).crl_file(&m.crl)).await;
    let leaf_only = instance(
        ClientAuth::required(&m.client_ca)
            .crl_file(&m.crl)
            .crl_only_leaf(true),
    )
    .await;
    for version in [TLS13, TLS12] {
        let v = format!("{:?}", version.version);
        let anonymous = client(&m.ca, version);
        let (_, json) = visit(&anonymous, optional).await.unwrap();
        assert_eq!(json["subject"], Value::Null);
        let outcome = visit(&anonymous, required).await;
        assert!(outcome.is_err(), "{v}: {outcome:?}");

        let config = m.alice(version);
        assert!(!visit(&config, leaf_only).await.unwrap().0);
        let (resumed, json) = visit(&config, required).await.unwrap();
        assert!(!resumed, "{v}: checked for the leaf alone");
        assert_eq!(json["subject"], "CN=alice");
    }
}

/// A resumed session skips the certificate check of a full handshake,
/// validity dates included: a session whose client certificate has
/// expired since is refused, by ticket and by the session cache, as the
/// full handshake is.
#[tokio::test]
async fn a_session_whose_client_certificate_has_expired_is_not_resumed() {
    let m = Mtls::new();
    let instance = async |tickets: bool| {
        let tls = builder(&m.dir, &m.ca)
            .session_tickets(tickets)
            .client_auth(ClientAuth::required(&m.client_ca))
            .build()
            .unwrap();
        spawn(tls, &Metrics::new()).await
    };
    let (tickets, cache) = (instance(true).await, instance(false).await);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let expires = now + Duration::from_secs(3);
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "alice");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.not_after = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(expires.as_secs());
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &m.clients.0).unwrap();
    let alice = tls::Leaf { cert, key };

    let mut configs = Vec::new();
    for addr in [tickets, cache] {
        for version in [TLS13, TLS12] {
            let config = client_with_cert(&m.ca, &alice, &m.clients, version);
            assert!(!visit(&config, addr).await.unwrap().0);
            assert!(visit(&config, addr).await.unwrap().0, "resumed while valid");
            configs.push((config, addr, version));
        }
    }
    let left = expires.saturating_sub(SystemTime::now().duration_since(UNIX_EPOCH).unwrap());
    tokio::time::sleep(left + Duration::from_millis(1_100)).await;
    for (config, addr, version) in configs {
        let outcome = visit(&config, addr).await;
        assert!(outcome.is_err(), "{:?}: {outcome:?}", version.version);
    }
}
