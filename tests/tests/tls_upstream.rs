//! `https://` upstreams through rustls: ALPN h2 and HTTP/1.1, a private CA
//! through `tls_config`, and a 502 when the certificate is not trusted.

#![expect(clippy::unwrap_used, reason = "test helpers outside #[test] fns")]

use std::{sync::Arc, time::Duration};

use axum::Router;
use http::Request;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;
use tollgate::{Gateway, Protocol, Route, Upstream, proxy::PoolKind};
use tollgate_tests::{
    assert_problem, body_json, client, echo_router, empty, listener, spawn_gateway,
};
use tower::ServiceExt;

/// A TLS upstream for `localhost` with a fresh self-signed certificate,
/// offering ALPN `h2` and `http/1.1`. Returns its port and the certificate.
async fn spawn_tls_upstream(router: Router) -> (u16, CertificateDer<'static>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let (listener, addr) = listener().await;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let router = router.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let svc = TowerToHyperService::new(router.map_request(
                    |req: Request<hyper::body::Incoming>| req.map(axum::body::Body::new),
                ));
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr.port(), cert)
}

fn trusting(cert: CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

async fn gateway_to(
    port: u16,
    protocol: Protocol,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> tollgate_tests::RunningGateway {
    gateway_on(PoolKind::HyperUtil, port, protocol, tls).await
}

async fn gateway_on(
    pool: PoolKind,
    port: u16,
    protocol: Protocol,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> tollgate_tests::RunningGateway {
    let mut upstream = Upstream::builder("secure")
        .pool(pool)
        .endpoint(format!("https://localhost:{port}"))
        .protocol(protocol)
        .connect_timeout(Duration::from_secs(5));
    if let Some(tls) = tls {
        upstream = upstream.tls_config(tls);
    }
    let router = Gateway::builder()
        .upstream(upstream)
        .route(Route::prefix("/").to("secure"))
        .build()
        .unwrap();
    spawn_gateway(router).await
}

#[tokio::test]
async fn https_upstream_negotiates_h2_by_alpn() {
    let (port, cert) = spawn_tls_upstream(echo_router()).await;
    let gw = gateway_to(port, Protocol::Auto, Some(trusting(cert))).await;
    let res = client()
        .request(Request::get(gw.url("/tls/path?q=1")).body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let json = body_json(res).await;
    assert_eq!(json["version"], "HTTP/2.0", "{json}");
    assert!(
        json["uri"].as_str().unwrap().ends_with("/tls/path?q=1"),
        "{json}"
    );
}

#[tokio::test]
async fn https_upstream_speaks_http1_when_told() {
    let (port, cert) = spawn_tls_upstream(echo_router()).await;
    let gw = gateway_to(port, Protocol::Http1, Some(trusting(cert))).await;
    let res = client()
        .request(Request::get(gw.url("/one")).body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let json = body_json(res).await;
    assert_eq!(json["version"], "HTTP/1.1", "{json}");
    assert_eq!(json["uri"], "/one", "{json}");
    assert_eq!(
        json["headers"]["host"][0],
        format!("localhost:{port}"),
        "{json}"
    );
}

#[tokio::test]
async fn untrusted_upstream_certificate_is_502() {
    let (port, _cert) = spawn_tls_upstream(echo_router()).await;
    // Default roots (webpki) do not trust a self-signed certificate.
    let gw = gateway_to(port, Protocol::Auto, None).await;
    let res = client()
        .request(Request::get(gw.url("/x")).body(empty()).unwrap())
        .await
        .unwrap();
    let problem = assert_problem(res, 502, "urn:tollgate:problem:upstream-unavailable").await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        !detail.contains("certificate"),
        "5xx detail must not leak internals: {detail}"
    );
}

/// A `tls_config` that already carries ALPN protocols is accepted (its ALPN
/// is replaced by the upstream's protocol), not a panic at build time.
#[tokio::test]
async fn tls_config_with_alpn_already_set_is_accepted() {
    let (port, cert) = spawn_tls_upstream(echo_router()).await;
    let mut config = (*trusting(cert)).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let gw = gateway_to(port, Protocol::Auto, Some(Arc::new(config))).await;
    let res = client()
        .request(Request::get(gw.url("/alpn")).body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(body_json(res).await["version"], "HTTP/2.0");
}

/// The per-worker pool speaks TLS too: h2 by ALPN, HTTP/1.1 when told, and
/// a 502 for an untrusted certificate.
#[tokio::test]
async fn worker_pool_over_tls() {
    let (port, cert) = spawn_tls_upstream(echo_router()).await;
    for (protocol, version) in [(Protocol::Auto, "HTTP/2.0"), (Protocol::Http1, "HTTP/1.1")] {
        let gw = gateway_on(
            PoolKind::Worker,
            port,
            protocol,
            Some(trusting(cert.clone())),
        )
        .await;
        for i in 0..3 {
            let res = client()
                .request(
                    Request::get(gw.url(&format!("/w/{i}")))
                        .body(empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            let json = body_json(res).await;
            assert_eq!(json["version"], version, "{json}");
        }
    }
    let gw = gateway_on(PoolKind::Worker, port, Protocol::Auto, None).await;
    let res = client()
        .request(Request::get(gw.url("/x")).body(empty()).unwrap())
        .await
        .unwrap();
    assert_problem(res, 502, "urn:tollgate:problem:upstream-unavailable").await;
}
