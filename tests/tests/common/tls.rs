//! TLS helpers shared by `tls_server.rs` and `shutdown.rs`: certificates
//! made by rcgen, written to a temporary directory, and rustls clients.

use std::{path::PathBuf, sync::Arc};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::{
    ClientConfig, DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime},
};
use std::net::SocketAddr;
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, client::TlsStream};

// === certificates and files ===

/// A temporary directory, removed on drop.
pub(crate) struct Dir(pub(crate) PathBuf);

impl Dir {
    pub(crate) fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "tollgate-tls-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub(crate) fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) struct Ca(pub(crate) CertifiedIssuer<'static, KeyPair>);

pub(crate) struct Leaf {
    pub(crate) cert: rcgen::Certificate,
    pub(crate) key: KeyPair,
}

/// The parameters of a CA certificate called `name`.
fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

impl Ca {
    pub(crate) fn new(name: &str) -> Self {
        Self(CertifiedIssuer::self_signed(ca_params(name), KeyPair::generate().unwrap()).unwrap())
    }

    pub(crate) fn der(&self) -> CertificateDer<'static> {
        self.0.der().clone()
    }

    /// An intermediate CA called `name`, issued by this one.
    pub(crate) fn intermediate(&self, name: &str) -> Self {
        let mut params = ca_params(name);
        params.serial_number = Some(rcgen::SerialNumber::from(1000u64));
        let key = KeyPair::generate().unwrap();
        Self(CertifiedIssuer::signed_by(params, key, &self.0).unwrap())
    }

    pub(crate) fn leaf(&self, sans: &[&str], cn: &str, usage: ExtendedKeyUsagePurpose) -> Leaf {
        let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.0).unwrap();
        Leaf { cert, key }
    }

    /// A client certificate for `cn` with serial number `serial`, to
    /// revoke by.
    pub(crate) fn client_numbered(&self, cn: &str, serial: u64) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.0).unwrap();
        Leaf { cert, key }
    }

    /// A CRL of this CA (PEM) revoking the certificates numbered `serials`.
    pub(crate) fn crl(&self, number: u64, serials: &[u64]) -> String {
        let params = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2025, 1, 1),
            next_update: rcgen::date_time_ymd(2099, 1, 1),
            crl_number: rcgen::SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|&serial| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from(serial),
                    revocation_time: rcgen::date_time_ymd(2025, 6, 1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        params.signed_by(&self.0).unwrap().pem().unwrap()
    }

    pub(crate) fn server(&self, sans: &[&str]) -> Leaf {
        self.leaf(sans, sans[0], ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A server certificate valid until midnight UTC of `(year, month, day)`.
    pub(crate) fn server_until(&self, sans: &[&str], (year, month, day): (i32, u8, u8)) -> Leaf {
        let names: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, sans[0]);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_after = rcgen::date_time_ymd(year, month, day);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.0).unwrap();
        Leaf { cert, key }
    }
}

/// A server config for an upstream behind a private CA whose certificate
/// names only `internal.example`, and the CA's file for the gateway to
/// trust.
pub(crate) fn internal_upstream(dir: &Dir) -> (tollgate::TlsConfig, PathBuf) {
    let ca = Ca::new("internal CA");
    let (cert, key) = ca.server(&["internal.example"]).write(dir, "upstream", &ca);
    let ca_file = dir.write("internal-ca.pem", &ca.0.pem());
    let tls = tollgate::TlsConfig::builder()
        .certificate(cert, key)
        .build()
        .unwrap();
    (tls, ca_file)
}

impl Leaf {
    /// Writes `{stem}.pem` (leaf + CA chain) and `{stem}.key`.
    pub(crate) fn write(&self, dir: &Dir, stem: &str, ca: &Ca) -> (PathBuf, PathBuf) {
        let chain = format!("{}{}", self.cert.pem(), ca.0.pem());
        (
            dir.write(&format!("{stem}.pem"), &chain),
            dir.write(&format!("{stem}.key"), &self.key.serialize_pem()),
        )
    }

    pub(crate) fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    pub(crate) fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }
}

// === clients ===

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Accepts any server certificate (signatures are still checked), to see
/// which certificate the server picks for names it does not carry.
#[derive(Debug)]
pub(crate) struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// How a test client is set up.
pub(crate) struct ClientSetup {
    trust: Option<CertificateDer<'static>>,
    alpn: Vec<&'static [u8]>,
    versions: Vec<&'static rustls::SupportedProtocolVersion>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
}

impl ClientSetup {
    pub(crate) fn trusting(ca: &Ca) -> Self {
        Self {
            trust: Some(ca.der()),
            alpn: vec![b"h2", b"http/1.1"],
            versions: vec![&rustls::version::TLS13, &rustls::version::TLS12],
            identity: None,
        }
    }

    pub(crate) fn any_cert() -> Self {
        Self {
            trust: None,
            ..Self::trusting(&Ca::new("unused"))
        }
    }

    pub(crate) fn alpn(mut self, alpn: &[&'static [u8]]) -> Self {
        self.alpn = alpn.to_vec();
        self
    }

    pub(crate) fn versions(
        mut self,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Self {
        self.versions = versions.to_vec();
        self
    }

    pub(crate) fn with_cert(mut self, leaf: &Leaf, ca: &Ca) -> Self {
        self.identity = Some((vec![leaf.der(), ca.der()], leaf.key_der()));
        self
    }

    pub(crate) fn config(self) -> Arc<ClientConfig> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&self.versions)
            .unwrap();
        let builder = match self.trust {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(ca).unwrap();
                builder.with_root_certificates(roots)
            }
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(provider()))),
        };
        let mut config = match self.identity {
            Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    pub(crate) async fn connect(
        self,
        addr: SocketAddr,
        name: &str,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from(name.to_owned()).unwrap();
        TlsConnector::from(self.config()).connect(name, tcp).await
    }
}
