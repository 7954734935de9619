//! TLS at the front door (rustls with ring): TLS 1.2 and 1.3 only, the
//! server certificate the engine hands over (and may replace while running),
//! and client certificates from the local CA, required, optional or off per
//! listener.
//!
//! A client that sends an IP address as SNI (OpenSSL-based ones do, given
//! `-h 127.0.0.1`) is served like one that sends none: rustls ignores such a
//! name and there is a single certificate anyway, whose SANs hold the
//! addresses.

use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use serde::{Deserialize, Serialize};
use tokio_rustls::TlsAcceptor;

use crate::error::BrokerError;

/// Whether a TLS listener asks clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientCerts {
    /// Every client must present a certificate from the local CA.
    Required,
    /// A client may present one (it is then its identity), or log in with a
    /// password.
    #[default]
    Optional,
    /// Certificates are not asked for.
    Off,
}

/// The certificates a TLS listener serves with.
#[derive(Clone)]
pub struct TlsMaterial {
    /// The server certificate, then its CA (PEM).
    pub chain_pem: String,
    /// The server's private key (PEM). Never logged.
    pub key_pem: String,
    /// The CA client certificates must come from (PEM).
    pub client_ca_pem: String,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsMaterial { .. }")
    }
}

/// The acceptor of one listener, replaceable while clients connect.
pub(crate) struct Acceptor {
    mode: ClientCerts,
    current: RwLock<TlsAcceptor>,
}

impl Acceptor {
    pub(crate) fn new(material: &TlsMaterial, mode: ClientCerts) -> Result<Acceptor, BrokerError> {
        Ok(Acceptor {
            mode,
            current: RwLock::new(acceptor(material, mode)?),
        })
    }

    /// The acceptor for the next connection.
    pub(crate) fn get(&self) -> TlsAcceptor {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Serves new connections with `material` (connections already open
    /// keep theirs).
    pub(crate) fn replace(&self, material: &TlsMaterial) -> Result<(), BrokerError> {
        let next = acceptor(material, self.mode)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = next;
        Ok(())
    }
}

fn acceptor(material: &TlsMaterial, mode: ClientCerts) -> Result<TlsAcceptor, BrokerError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| BrokerError::Tls(format!("{what}: {e}"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = CertificateDer::pem_slice_iter(material.chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("the server certificate is not PEM", &e))?;
    if chain.is_empty() {
        return Err(BrokerError::Tls(
            "the server certificate PEM holds no certificate".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(material.key_pem.as_bytes())
        .map_err(|e| bad("the server key is not a PEM private key", &e))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| bad("TLS setup", &e))?;
    let builder = match mode {
        ClientCerts::Off => builder.with_no_client_auth(),
        ClientCerts::Optional | ClientCerts::Required => {
            let verifier = client_verifier(&material.client_ca_pem, mode, provider)?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| bad("the server certificate and key do not fit together", &e))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn client_verifier(
    ca_pem: &str,
    mode: ClientCerts,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, BrokerError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| BrokerError::Tls(format!("the client CA is not PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| BrokerError::Tls(format!("the client CA cannot be used: {e}")))?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let builder = if mode == ClientCerts::Optional {
        builder.allow_unauthenticated()
    } else {
        builder
    };
    builder
        .build()
        .map_err(|e| BrokerError::Tls(format!("client certificates: {e}")))
}
