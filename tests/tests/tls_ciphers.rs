//! The cipher suites and key exchange groups of the gateway's TLS
//! listener: rustls's defaults (with the post-quantum hybrid
//! `X25519MLKEM768` first), the lists set in code and in a config file,
//! and the errors for names that are not known. Real rustls clients whose
//! own suites and groups are chosen, against real listeners on 127.0.0.1.

#![expect(clippy::unwrap_used, reason = "test helpers outside #[test] fns")]

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::Router;
use rustls::{
    ClientConfig, RootCertStore, SupportedCipherSuite, SupportedProtocolVersion,
    crypto::{SupportedKxGroup, aws_lc_rs},
    pki_types::ServerName,
};
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, client::TlsStream};
use tollgate::{TlsConfig, TlsConfigBuilder};
use tollgate_tests::listener;

#[expect(dead_code, reason = "shared with tls_server.rs, which uses all of it")]
#[path = "common/tls.rs"]
mod tls;
use tls::{Ca, Dir};

const TLS13: &SupportedProtocolVersion = &rustls::version::TLS13;
const TLS12: &SupportedProtocolVersion = &rustls::version::TLS12;

async fn spawn(tls: TlsConfig) -> SocketAddr {
    let (listener, addr) = listener().await;
    tokio::spawn(
        tollgate::serve(listener, Router::new(), std::future::pending())
            .header_read_timeout(Duration::from_secs(5))
            .tls(tls)
            .into_future(),
    );
    addr
}

/// A `localhost` certificate (an ECDSA P-256 key) from `ca`, in `dir`.
fn builder(dir: &Dir, ca: &Ca) -> TlsConfigBuilder {
    let (cert, key) = ca.server(&["localhost"]).write(dir, "server", ca);
    TlsConfig::builder().certificate(cert, key)
}

/// A client of one TLS version offering only `suites` (all when empty)
/// and `groups` (rustls's defaults when empty).
async fn connect(
    ca: &Ca,
    addr: SocketAddr,
    version: &'static SupportedProtocolVersion,
    suites: &[SupportedCipherSuite],
    groups: &[&'static dyn SupportedKxGroup],
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut provider = aws_lc_rs::default_provider();
    if !suites.is_empty() {
        provider.cipher_suites = suites.to_vec();
    }
    if !groups.is_empty() {
        provider.kx_groups = groups.to_vec();
    }
    let mut roots = RootCertStore::empty();
    roots.add(ca.der()).unwrap();
    let config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

fn suite_of(stream: &TlsStream<TcpStream>) -> rustls::CipherSuite {
    stream
        .get_ref()
        .1
        .negotiated_cipher_suite()
        .unwrap()
        .suite()
}

fn group_of(stream: &TlsStream<TcpStream>) -> rustls::NamedGroup {
    stream
        .get_ref()
        .1
        .negotiated_key_exchange_group()
        .unwrap()
        .name()
}

/// Without settings, rustls's defaults: a client offering everything
/// gets the post-quantum hybrid key exchange.
#[tokio::test]
async fn the_defaults_include_the_post_quantum_hybrid() {
    let dir = Dir::new();
    let ca = Ca::new("cipher CA");
    let addr = spawn(builder(&dir, &ca).build().unwrap()).await;
    let stream = connect(&ca, addr, TLS13, &[], &[]).await.unwrap();
    assert_eq!(group_of(&stream), rustls::NamedGroup::X25519MLKEM768);
    let stream = connect(&ca, addr, TLS12, &[], &[]).await.unwrap();
    assert_eq!(group_of(&stream), rustls::NamedGroup::X25519);
}

/// Only the suites named are spoken, for TLS 1.3 and 1.2: a client that
/// offers others finds none in common.
#[tokio::test]
async fn only_the_cipher_suites_named_are_spoken() {
    use aws_lc_rs::cipher_suite as suite;

    let dir = Dir::new();
    let ca = Ca::new("cipher CA");
    let addr = spawn(
        builder(&dir, &ca)
            .cipher_suites([
                "TLS_AES_256_GCM_SHA384",
                "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            ])
            .build()
            .unwrap(),
    )
    .await;
    let stream = connect(&ca, addr, TLS13, &[], &[]).await.unwrap();
    assert_eq!(
        suite_of(&stream),
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384
    );
    let only_aes128 = [suite::TLS13_AES_128_GCM_SHA256];
    assert!(connect(&ca, addr, TLS13, &only_aes128, &[]).await.is_err());

    let stream = connect(&ca, addr, TLS12, &[], &[]).await.unwrap();
    assert_eq!(
        suite_of(&stream),
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
    );
    let only_gcm = [suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256];
    assert!(connect(&ca, addr, TLS12, &only_gcm, &[]).await.is_err());
}

/// Only the key exchange groups named are used: a client that offers
/// another group first is asked for one of them (TLS 1.3's
/// HelloRetryRequest), a client that offers none of them is refused.
#[tokio::test]
async fn only_the_key_exchange_groups_named_are_used() {
    use aws_lc_rs::kx_group;

    let dir = Dir::new();
    let ca = Ca::new("cipher CA");
    let addr = spawn(
        builder(&dir, &ca)
            .key_exchange_groups(["SECP384R1"])
            .build()
            .unwrap(),
    )
    .await;
    for version in [TLS13, TLS12] {
        let stream = connect(&ca, addr, version, &[], &[]).await.unwrap();
        assert_eq!(group_of(&stream), rustls::NamedGroup::secp384r1);
        let x25519 = [kx_group::X25519];
        assert!(connect(&ca, addr, version, &[], &x25519).await.is_err());
    }
}

/// The `[server.tls]` keys, and the errors: an unknown name (with the
/// known ones listed), a name given twice, an empty list, and TLS 1.2
/// suites alone where TLS 1.3 is the only version.
#[tokio::test]
async fn cipher_suites_and_groups_come_from_the_config() {
    let dir = Dir::new();
    let ca = Ca::new("cipher CA");
    let (cert, key) = ca.server(&["localhost"]).write(&dir, "server", &ca);
    let config = |extra: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[server.tls]\n\
             certificates = [{{ cert_file = {cert:?}, key_file = {key:?} }}]\n{extra}\n\
             [admin]\nenabled = false\n"
        )
    };
    let file = tollgate::config::ConfigFile::parse_with(
        &config(
            "cipher_suites = [\"TLS_CHACHA20_POLY1305_SHA256\"]\n\
             key_exchange_groups = [\"x25519\"]",
        ),
        &|_| None,
    )
    .unwrap();
    let server = tollgate::config::Server::start(file).await.unwrap();
    let stream = connect(&ca, server.local_addr(), TLS13, &[], &[])
        .await
        .unwrap();
    assert_eq!(
        suite_of(&stream),
        rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
    );
    assert_eq!(group_of(&stream), rustls::NamedGroup::X25519);
    server.shutdown().await.unwrap();

    for (extra, message) in [
        (
            "cipher_suites = [\"TLS_RSA_WITH_AES_128_CBC_SHA\"]",
            "line 3: server.tls: tls: unknown cipher suite \"TLS_RSA_WITH_AES_128_CBC_SHA\"; \
             known: TLS_AES_256_GCM_SHA384, TLS_AES_128_GCM_SHA256, \
             TLS_CHACHA20_POLY1305_SHA256, TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, \
             TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, \
             TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, \
             TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, \
             TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        ),
        (
            "key_exchange_groups = [\"X25519\", \"x25519\"]",
            "line 3: server.tls: tls: key exchange group \"x25519\" is given twice",
        ),
        (
            "key_exchange_groups = []",
            "line 3: server.tls: tls: no key exchange group is given",
        ),
        (
            "min_version = \"1.3\"\n\
             cipher_suites = [\"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256\"]",
            "line 3: server.tls: tls: no cipher suite for TLS 1.3, the only version \
             accepted",
        ),
    ] {
        let file = tollgate::config::ConfigFile::parse_with(&config(extra), &|_| None).unwrap();
        let err = file.tls_config().unwrap_err().to_string();
        assert_eq!(err, message);
    }
}
