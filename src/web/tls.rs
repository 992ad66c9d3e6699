//! The rustls server configuration `tls_server_config` describes: the certificate and key, the
//! lowest protocol version, and the client-certificate policy with Go's semantics (which is what
//! exporter-toolkit users expect).

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme};
use tokio_rustls::TlsAcceptor;

use super::file::{ClientAuth, MinVersion, TlsServerConfig};
use super::Files;
use crate::certificate::{self, Role};

/// Builds the acceptor, reading the certificate, key and client CA files.
pub(super) fn acceptor(config: &TlsServerConfig, files: &mut Files<'_>) -> Result<TlsAcceptor, String> {
    let (Some(cert_file), Some(key_file)) = (&config.cert_file, &config.key_file) else {
        return Err("tls_server_config needs both cert_file and key_file".to_string());
    };
    // The provider is named rather than taken from the process default, which other parts of
    // the daemon (or a library) might install differently.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pem = files.read_named("tls_server_config.cert_file", cert_file)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls_server_config.cert_file {}: {e}", cert_file.display()))?;
    if chain.is_empty() {
        return Err(format!("tls_server_config.cert_file {}: no PEM certificate in it", cert_file.display()));
    }
    // Checked here, so that the error names the file rather than what rustls says.
    certificate::require_v3(&chain[0], Role::Server, || format!("tls_server_config.cert_file {}", cert_file.display()))
        .map_err(|e| e.to_string())?;
    let pem = files.read_named("tls_server_config.key_file", key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| format!("tls_server_config.key_file {}: no PEM private key in it ({e})", key_file.display()))?;

    let auth = config.client_auth_type.unwrap_or(ClientAuth::NoClientCert);
    let roots = match &config.client_ca_file {
        Some(path) => {
            let pem = files.read_named("tls_server_config.client_ca_file", path)?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| format!("tls_server_config.client_ca_file {}: {e}", path.display()))?;
                roots.add(cert).map_err(|e| format!("tls_server_config.client_ca_file {}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("tls_server_config.client_ca_file {}: no PEM certificate in it", path.display()));
            }
            Some(Arc::new(roots))
        }
        None => None,
    };
    let algorithms = provider.signature_verification_algorithms;
    let verifier: Arc<dyn ClientCertVerifier> = match (auth, roots) {
        (ClientAuth::NoClientCert, Some(_)) => {
            // As exporter-toolkit: a CA with no policy to use it is a mistake, not a default.
            return Err("tls_server_config.client_ca_file is set but client_auth_type is not: \
                        set client_auth_type (e.g. RequireAndVerifyClientCert)"
                .to_string());
        }
        (ClientAuth::NoClientCert, None) => WebPkiClientVerifier::no_client_auth(),
        (ClientAuth::RequestClientCert, _) => Arc::new(AnyClientCert { mandatory: false, algorithms }),
        (ClientAuth::RequireAnyClientCert, _) => Arc::new(AnyClientCert { mandatory: true, algorithms }),
        (ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert, None) => {
            return Err(format!("tls_server_config.client_auth_type {auth:?} needs client_ca_file"));
        }
        (ClientAuth::VerifyClientCertIfGiven, Some(roots)) => {
            WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?
        }
        (ClientAuth::RequireAndVerifyClientCert, Some(roots)) => {
            WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?
        }
    };
    // A client's v1 certificate is refused as rustls refuses it, but said to be v1.
    let verifier = match auth {
        ClientAuth::NoClientCert => verifier,
        _ => Arc::new(NamesV1(verifier)),
    };
    let versions: &[&rustls::SupportedProtocolVersion] = match config.min_version.unwrap_or(MinVersion::TLS12) {
        MinVersion::TLS12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinVersion::TLS13 => &[&rustls::version::TLS13],
    };
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| format!("tls_server_config: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| {
            format!("tls_server_config: cert_file {} and key_file {}: {e}", cert_file.display(), key_file.display())
        })?;
    // Only HTTP/1.1 is served; saying so keeps a client that prefers h2 from trying it.
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// `RequestClientCert` and `RequireAnyClientCert`: a certificate is asked for (and, if
/// `mandatory`, required) but not checked against any CA, as Go does. The client must still
/// prove it holds the certificate's key.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A client-certificate policy, unchanged, except that a refusal of an X.509 v1 certificate
/// (by webpki's chain check, or by the signature check, which parses the certificate too) says
/// which one, and how to re-issue it.
#[derive(Debug)]
struct NamesV1(Arc<dyn ClientCertVerifier>);

impl NamesV1 {
    fn explain(
        error: rustls::Error,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> rustls::Error {
        certificate::explain_refusal(error, end_entity, intermediates, Role::Client, "the client's")
    }
}

impl ClientCertVerifier for NamesV1 {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0
            .verify_client_cert(end_entity, intermediates, now)
            .map_err(|e| Self::explain(e, end_entity, intermediates))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss).map_err(|e| Self::explain(e, cert, &[]))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss).map_err(|e| Self::explain(e, cert, &[]))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
