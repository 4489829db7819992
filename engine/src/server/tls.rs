//! TLS on the protocol port (rustls with the `ring` provider, through tokio-rustls).
//!
//! [`server_config`] reads the PEM files named by `tls_cert_file`, `tls_key_file` and
//! `tls_client_ca_file` once, at start, and refuses anything it cannot use with one line
//! naming the key. [`accept`] runs one connection's TLS handshake, bounded by
//! [`TLS_HANDSHAKE_TIMEOUT`]: a client that connects and never finishes it loses its slot
//! then, instead of holding one of `connections_max` forever.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::shutdown::Shutdown;
use crate::config::ConfigError;

/// Longest a TLS handshake may take, from accept to the first byte of the settled protocol.
/// A handshake is two round trips; ten seconds covers any real network and a loaded host.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The rustls configuration of the listener: `cert_file` (the chain, leaf first) and
/// `key_file` (its private key), and when `client_ca_file` is given, client certificates
/// required and verified against the CAs in it. Every failure names its config key.
pub(crate) fn server_config(
    cert_file: &Path,
    key_file: &Path,
    client_ca_file: Option<&Path>,
) -> Result<Arc<ServerConfig>, ConfigError> {
    let certs = read_certificates("tls_cert_file", cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|error| {
        file_error("tls_key_file", key_file, &pem_reason(&error, "private key"))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| file_error("tls_cert_file", cert_file, &error.to_string()))?;
    let builder = match client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certificates("tls_client_ca_file", ca_file)? {
                roots.add(cert).map_err(|error| {
                    file_error("tls_client_ca_file", ca_file, &error.to_string())
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|error| file_error("tls_client_ca_file", ca_file, &error.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    // Also checks that the key belongs to the certificate.
    let config = builder.with_single_cert(certs, key).map_err(|error| {
        file_error(
            "tls_key_file",
            key_file,
            &format!("cannot be used with the certificate of tls_cert_file: {error}"),
        )
    })?;
    Ok(Arc::new(config))
}

/// Every CERTIFICATE block of a PEM file; at least one.
fn read_certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| file_error(key, path, &pem_reason(&error, "certificate")))?;
    if certs.is_empty() {
        return Err(file_error(
            key,
            path,
            "no CERTIFICATE block in the PEM file",
        ));
    }
    Ok(certs)
}

/// What went wrong reading a PEM file, in words that fit after the file name.
fn pem_reason(error: &rustls_pki_types::pem::Error, what: &str) -> String {
    use rustls_pki_types::pem::Error;
    match error {
        Error::Io(error) => format!("cannot read: {error}"),
        Error::NoItemsFound => format!("no {what} found in the PEM file"),
        other => format!("not a valid PEM {what}: {other:?}"),
    }
}

fn file_error(key: &str, path: &Path, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        value: format!("{:?}", path.display().to_string()),
        reason: reason.replace('\n', " "),
    }
}

/// The TLS handshake of one accepted connection, bounded by [`TLS_HANDSHAKE_TIMEOUT`] and
/// abandoned at shutdown. `None` when it failed (counted, logged at debug: scanners and
/// plaintext clients make this common and harmless).
pub(crate) async fn accept(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    peer: Option<SocketAddr>,
    shutdown: &mut Shutdown,
) -> Option<TlsStream<TcpStream>> {
    let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
    let reason = tokio::select! {
        finished = handshake => match finished {
            Ok(Ok(stream)) => return Some(stream),
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("not done within {} s", TLS_HANDSHAKE_TIMEOUT.as_secs()),
        },
        () = shutdown.recv() => return None,
    };
    tracing::debug!(?peer, reason, "TLS handshake failed; connection closed");
    crate::metrics::tls_handshake_failed();
    None
}
