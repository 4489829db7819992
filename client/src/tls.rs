//! TLS for the client (rustls with the `ring` provider): which CAs to trust, which name
//! the server's certificate must carry, and optionally a client certificate for servers
//! that require one (`tls_client_ca_file`).

use std::path::Path;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::ClientError;

/// How to reach a server over TLS. Built from PEM data or files; cheap to clone.
#[derive(Clone)]
pub struct TlsOptions {
    roots: Arc<RootCertStore>,
    /// Verified against the server certificate's names (a DNS name or an IP address).
    server_name: ServerName<'static>,
    config: Arc<ClientConfig>,
    client_identity: bool,
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("server_name", &self.server_name)
            .field("trusted_cas", &self.roots.len())
            .field("client_certificate", &self.client_identity)
            .finish()
    }
}

impl TlsOptions {
    /// Trust the CA certificates in `ca_pem` (every CERTIFICATE block; at least one) and
    /// expect a server certificate for `server_name` (a DNS name, or an IP address, which
    /// the certificate must then list as such).
    pub fn new(ca_pem: &[u8], server_name: &str) -> Result<TlsOptions, ClientError> {
        let mut roots = RootCertStore::empty();
        for cert in certificates(ca_pem, "CA certificates")? {
            roots
                .add(cert)
                .map_err(|error| invalid(format!("CA certificate: {error}")))?;
        }
        let server_name = ServerName::try_from(server_name.to_string()).map_err(|_| {
            invalid(format!(
                "TLS server name {server_name:?}: not a DNS name or IP address"
            ))
        })?;
        let roots = Arc::new(roots);
        let config = builder()?
            .with_root_certificates(Arc::clone(&roots))
            .with_no_client_auth();
        Ok(TlsOptions {
            roots,
            server_name,
            config: Arc::new(config),
            client_identity: false,
        })
    }

    /// [`TlsOptions::new`] with the CA certificates read from a PEM file.
    pub fn from_ca_file(
        ca_file: impl AsRef<Path>,
        server_name: &str,
    ) -> Result<TlsOptions, ClientError> {
        let ca_file = ca_file.as_ref();
        let pem = read(ca_file)?;
        TlsOptions::new(&pem, server_name).map_err(|error| in_file(ca_file, error))
    }

    /// Present this certificate chain (leaf first) and its private key to the server.
    pub fn with_client_identity(
        self,
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<TlsOptions, ClientError> {
        let certs = certificates(cert_pem, "client certificate")?;
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|error| invalid(format!("client private key: {error:?}")))?;
        let config = builder()?
            .with_root_certificates(Arc::clone(&self.roots))
            .with_client_auth_cert(certs, key)
            .map_err(|error| invalid(format!("client certificate and key: {error}")))?;
        Ok(TlsOptions {
            config: Arc::new(config),
            client_identity: true,
            ..self
        })
    }

    /// [`TlsOptions::with_client_identity`] with both read from PEM files.
    pub fn with_client_identity_files(
        self,
        cert_file: impl AsRef<Path>,
        key_file: impl AsRef<Path>,
    ) -> Result<TlsOptions, ClientError> {
        let (cert_file, key_file) = (cert_file.as_ref(), key_file.as_ref());
        let (cert_pem, key_pem) = (read(cert_file)?, read(key_file)?);
        self.with_client_identity(&cert_pem, &key_pem)
            .map_err(|error| {
                invalid(format!(
                    "{} / {}: {error}",
                    cert_file.display(),
                    key_file.display()
                ))
            })
    }

    pub(crate) fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(Arc::clone(&self.config))
    }

    pub(crate) fn server_name(&self) -> ServerName<'static> {
        self.server_name.clone()
    }
}

fn builder() -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| invalid(format!("TLS: {error}")))
}

fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| invalid(format!("{what}: not valid PEM: {error:?}")))?;
    if certs.is_empty() {
        return Err(invalid(format!(
            "{what}: no CERTIFICATE block in the PEM data"
        )));
    }
    Ok(certs)
}

fn read(path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|error| invalid(format!("{}: {error}", path.display())))
}

fn in_file(path: &Path, error: ClientError) -> ClientError {
    match error {
        ClientError::InvalidArgument { reason } => invalid(format!("{}: {reason}", path.display())),
        other => other,
    }
}

fn invalid(reason: String) -> ClientError {
    ClientError::InvalidArgument { reason }
}
