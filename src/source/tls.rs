//! TLS to sources: a rustls client for a `tcp://` engine or buildkitd, made from PEM files each
//! time the source is dialed (so renewed certificates are picked up on the next reconnect).

use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_rustls::TlsConnector;

use super::spec::{Endpoint, TlsFiles};
use super::SourceError;
use crate::certificate::{self, Role};

/// Opens TLS over `tcp` to `address` (`host:port`), offering `alpn`.
pub async fn connect(
    endpoint: &Endpoint,
    address: &str,
    files: &TlsFiles,
    alpn: &[&[u8]],
    tcp: TcpStream,
) -> Result<TlsStream<TcpStream>, SourceError> {
    let failed = |detail: String| SourceError::Tls { endpoint: endpoint.to_string(), detail };
    let mut config = client_config(files).map_err(failed)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host).trim_start_matches('[').trim_end_matches(']');
    let name = files.server_name.as_deref().unwrap_or(host);
    let name = ServerName::try_from(name.to_string()).map_err(|e| failed(format!("server name {name:?}: {e}")))?;
    TlsConnector::from(Arc::new(config)).connect(name, tcp).await.map_err(|e| match e.kind() {
        // What TLS itself refused (certificates, protocol) needs someone to act...
        std::io::ErrorKind::InvalidData => failed(match certificate::refused_v1(&e) {
            Some(v1) => v1.to_string(),
            None => format!("TLS handshake failed: {e}"),
        }),
        // ...a connection reset mid-handshake (an engine restarting) is retried as usual.
        _ => SourceError::from_io(endpoint, e),
    })
}

/// A client config trusting `files.ca`, presenting `files.cert` when given.
fn client_config(files: &TlsFiles) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    let pem = |path: &std::path::Path, e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    for cert in CertificateDer::pem_file_iter(&files.ca).map_err(|e| pem(&files.ca, &e))? {
        roots.add(cert.map_err(|e| pem(&files.ca, &e))?).map_err(|e| pem(&files.ca, &e))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no CA certificate in it", files.ca.display()));
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("{}: {e}", files.ca.display()))?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        // Not dangerous: it is webpki's verifier, its refusals only reworded.
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NamesV1(verifier)));
    match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| pem(cert, &e))?
                .collect::<Result<_, _>>()
                .map_err(|e| pem(cert, &e))?;
            // Checked here, so that the error names the file rather than what rustls says.
            if let Some(leaf) = chain.first() {
                certificate::require_v3(leaf, Role::Client, || cert.display().to_string())
                    .map_err(|e| e.to_string())?;
            }
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem(key, &e))?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| format!("{}: {e}", cert.display()))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// webpki's verification of the source's certificate, unchanged, except that a refusal of an
/// X.509 v1 certificate says which one, and how to re-issue it.
#[derive(Debug)]
struct NamesV1(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for NamesV1 {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, tokio_rustls::rustls::Error> {
        self.0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(|e| certificate::explain_refusal(e, end_entity, intermediates, Role::Server, "the source's"))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
