//! TLS for the listener: rustls on aws-lc-rs, TLS 1.2 and 1.3 only.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificate chain {path}: {reason}")]
    Cert { path: String, reason: String },
    #[error("cannot read the private key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("the certificate and key do not form a usable TLS identity: {0}")]
    Config(String),
    #[error("cannot make a self-signed certificate: {0}")]
    SelfSigned(String),
}

/// A certificate chain and key in PEM, as written for `--tls-self-signed`.
#[derive(Debug)]
pub struct SelfSigned {
    pub cert_pem: String,
    /// Private key PEM: written 0600, never logged.
    pub key_pem: secrecy::SecretString,
}

/// A self-signed certificate for `localhost`, `127.0.0.1` and `::1`.
pub fn self_signed() -> Result<SelfSigned, TlsError> {
    let names = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    let ck = rcgen::generate_simple_self_signed(names)
        .map_err(|e| TlsError::SelfSigned(e.to_string()))?;
    Ok(SelfSigned {
        cert_pem: ck.cert.pem(),
        key_pem: ck.signing_key.serialize_pem().into(),
    })
}

/// A server configuration from PEM bytes.
pub fn config_from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<ServerConfig>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Cert {
            path: "(given)".into(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Cert {
            path: "(given)".into(),
            reason: "no certificate in it".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Key {
        path: "(given)".into(),
        reason: e.to_string(),
    })?;
    build(certs, key)
}

/// A server configuration from PEM files.
pub fn config_from_files(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_pem = std::fs::read(cert).map_err(|e| TlsError::Cert {
        path: cert.display().to_string(),
        reason: e.to_string(),
    })?;
    let key_pem = std::fs::read(key).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        reason: e.to_string(),
    })?;
    config_from_pem(&cert_pem, &key_pem).map_err(|e| match e {
        TlsError::Cert { reason, .. } => TlsError::Cert {
            path: cert.display().to_string(),
            reason,
        },
        TlsError::Key { reason, .. } => TlsError::Key {
            path: key.display().to_string(),
            reason,
        },
        other => other,
    })
}

fn build(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
