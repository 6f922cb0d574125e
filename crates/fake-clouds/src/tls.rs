//! Fakes that speak TLS under a name of their own, with certificates from a
//! CA made for the test: for the endpoints a plugin must reach by a private
//! name and verify against a CA it is given (AKS's identity bindings).

use std::sync::Arc;

use axum::Router;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::oneshot;

/// A certificate authority of the test's own.
pub struct TestCa {
    /// The CA's certificate, PEM: what the client is told to trust.
    pub certificate_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "fake-clouds test CA");
        let certificate = params.self_signed(&key).expect("CA certificate");
        TestCa { certificate_pem: certificate.pem(), issuer: rcgen::Issuer::new(params, key) }
    }

    /// A certificate for `name` and its key, both PEM.
    pub fn leaf(&self, name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let params = rcgen::CertificateParams::new(vec![name.to_string()]).expect("leaf params");
        let certificate = params.signed_by(&key, &self.issuer).expect("leaf certificate");
        (certificate.pem(), key.serialize_pem())
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

/// `router` served over TLS at `address` with `certificate` and `key` (PEM),
/// HTTP/1.1; stops when dropped.
#[derive(Debug)]
pub struct TlsServer {
    shutdown: Option<oneshot::Sender<()>>,
}

impl TlsServer {
    pub fn start(router: Router, address: &str, certificate: &str, key: &str) -> TlsServer {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(certificate.as_bytes()).collect::<Result<_, _>>().expect("certificate PEM");
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key PEM");
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .expect("server certificate");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let (_, shutdown) = crate::server::serve_at(address, |listener, mut stopped| async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = &mut stopped => return,
                };
                let Ok((stream, _)) = accepted else { continue };
                let (acceptor, router) = (acceptor.clone(), router.clone());
                tokio::spawn(async move {
                    // A client that refuses the certificate ends here.
                    let Ok(stream) = acceptor.accept(stream).await else { return };
                    let service = hyper_util::service::TowerToHyperService::new(router);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TlsServer { shutdown: Some(shutdown) }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}
