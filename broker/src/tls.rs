//! TLS to the upstream: rustls with the ring provider, the web roots
//! compiled in (nothing is read from the filesystem, which confinement
//! closes) plus, in a test configuration only, extra roots given as PEM.

use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use thiserror::Error;
use tokio_rustls::TlsConnector;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("the extra trust anchors are not valid PEM certificates")]
    ExtraRootsPem,
    #[error("an extra trust anchor is refused: {0}")]
    ExtraRoot(rustls::Error),
    #[error("the TLS configuration is refused: {0}")]
    Config(rustls::Error),
}

/// The connector every upstream connection uses.
pub fn connector(extra_roots_pem: Option<&[u8]>) -> Result<TlsConnector, TlsError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(pem) = extra_roots_pem {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<_, _>>()
            .map_err(|_| TlsError::ExtraRootsPem)?;
        if certs.is_empty() {
            return Err(TlsError::ExtraRootsPem);
        }
        for cert in certs {
            roots.add(cert).map_err(TlsError::ExtraRoot)?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}
