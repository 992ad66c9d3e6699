//! X.509 certificates as users have them, against what rustls accepts. rustls (webpki) refuses an
//! X.509 v1 certificate, which is what `openssl x509 -req` makes without an extension file, as
//! an end-entity or an intermediate certificate (where a Go server, for one, takes a v1 client
//! certificate), and says so only as an opaque `UnsupportedCertVersion`. Such a certificate is
//! recognised here, from its DER when a file is read (so the error names the file before any
//! handshake) and from rustls' refusal of a peer's chain, and named in one line that says how to
//! re-issue it. A v1 certificate as a trust anchor, in a CA file, needs nothing: webpki reads v1
//! roots.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::{CertificateError, OtherError};

/// What a certificate is for, which decides what a v3 one needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A server's certificate: it must carry the names clients reach the server by.
    Server,
    /// A client's certificate.
    Client,
    /// A CA certificate between a certificate and the CA trusted.
    Intermediate,
}

impl Role {
    /// Where rustls refuses v1: a root is taken, so only an intermediate CA needs saying.
    fn refused_as(self) -> &'static str {
        match self {
            Role::Intermediate => " as an intermediate (a v1 root in a CA file is accepted)",
            Role::Server | Role::Client => "",
        }
    }

    /// The extensions of a v3 certificate for this role, one `echo` each into an `-extfile`: a
    /// server's names and purpose, a client's purpose, a CA's right to sign. (`echo` rather than
    /// `printf '..\n..'`: log lines escape a backslash, which would break the command copied.)
    fn extensions(self) -> &'static str {
        match self {
            Role::Server => "echo subjectAltName=DNS:HOST; echo extendedKeyUsage=serverAuth",
            Role::Client => "echo extendedKeyUsage=clientAuth",
            Role::Intermediate => "echo basicConstraints=critical,CA:TRUE; echo keyUsage=critical,keyCertSign,cRLSign",
        }
    }
}

/// An X.509 v1 certificate where rustls needs v3, and how to re-issue it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what}: an X.509 v1 certificate (no extensions), which rustls refuses{}; re-issue it as v3, e.g. \
     openssl x509 -req -in REQ.csr -CA CA.pem -CAkey CA-key.pem -CAcreateserial -days 365 -out CERT.pem \
     -extfile <({})",
    .role.refused_as(),
    .role.extensions()
)]
pub struct V1Certificate {
    /// Which certificate: its file, or its place in a peer's chain.
    pub what: String,
    /// What it is for.
    pub role: Role,
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
/// `[0] EXPLICIT`, which holds a TBSCertificate's version.
const VERSION_TAG: u8 = 0xa0;

/// The X.509 version `der` declares, 1 to 3; `None` when it does not begin as a certificate.
/// A TBSCertificate's version is `DEFAULT v1`, which DER leaves out: a v1 certificate has no
/// version element, and its serial number comes first.
fn version(der: &[u8]) -> Option<u8> {
    let (certificate, _) = element(der, SEQUENCE)?;
    let (tbs, _) = element(certificate, SEQUENCE)?;
    match *tbs.first()? {
        INTEGER => Some(1),
        VERSION_TAG => match element(element(tbs, VERSION_TAG)?.0, INTEGER)?.0 {
            [version @ 0..=2] => Some(version + 1),
            _ => None,
        },
        _ => None,
    }
}

/// The contents of the DER element at the start of `input`, which must be tagged `tag`, and
/// what follows it.
fn element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&first, rest) = input.split_first()?;
    if first != tag {
        return None;
    }
    let (&length, rest) = rest.split_first()?;
    let (length, rest) = match length {
        0..=0x7f => (usize::from(length), rest),
        // Long form, up to four length bytes (a certificate is never near 4 GiB).
        0x81..=0x84 => {
            let (bytes, rest) = rest.split_at_checked(usize::from(length & 0x7f))?;
            (bytes.iter().fold(0usize, |sum, &b| sum << 8 | usize::from(b)), rest)
        }
        _ => return None,
    };
    rest.split_at_checked(length)
}

/// Refuses `cert` when it is X.509 v1, naming it as `what` says.
pub fn require_v3(cert: &CertificateDer<'_>, role: Role, what: impl FnOnce() -> String) -> Result<(), V1Certificate> {
    match version(cert) {
        Some(1) => Err(V1Certificate { what: what(), role }),
        _ => Ok(()),
    }
}

/// Whether rustls refused a certificate for its version: webpki's `UnsupportedCertVersion`,
/// which rustls passes on only as an opaque [`CertificateError::Other`].
fn is_version_refusal(error: &rustls::Error) -> bool {
    match error {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(other))) => {
            matches!(other.downcast_ref::<webpki::Error>(), Some(webpki::Error::UnsupportedCertVersion))
        }
        _ => false,
    }
}

/// `error`, rustls' refusal of a peer's chain (`end_entity`, then `intermediates`), told as the
/// [`V1Certificate`] at fault when it is one; `whose` names the peer ("the source's"). Any
/// other refusal is returned as it is.
pub fn explain_refusal(
    error: rustls::Error,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    role: Role,
    whose: &str,
) -> rustls::Error {
    if !is_version_refusal(&error) {
        return error;
    }
    let chain = std::iter::once(end_entity).chain(intermediates);
    let v1 = match chain.enumerate().find(|(_, cert)| version(cert) == Some(1)) {
        Some((0, _)) => V1Certificate { what: format!("{whose} certificate"), role },
        Some((at, _)) => {
            V1Certificate { what: format!("certificate {} of {whose} chain", at + 1), role: Role::Intermediate }
        }
        None => return error,
    };
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(v1))))
}

/// The v1 certificate a failed TLS handshake was refused for, if that is why it failed.
pub fn refused_v1(error: &std::io::Error) -> Option<&V1Certificate> {
    match error.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(other))) => other.downcast_ref(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::PrivateKeyDer;
    use rustls::sign::CertifiedKey;

    use super::*;

    /// A self-signed X.509 v1 certificate, as `openssl x509 -req -signkey` makes it (its key
    /// was thrown away: only the version matters here).
    const V1_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBLjCB1QIUB7Vrgb5rt1WchUafa3PeuytcdLQwCgYIKoZIzj0EAwIwGjEYMBYG
A1UEAwwPeDUwOSB2MSBleGFtcGxlMB4XDTI2MTIwNDEyNDgyNVoXDTM2MTIwMTEy
NDgyNVowGjEYMBYGA1UEAwwPeDUwOSB2MSBleGFtcGxlMFkwEwYHKoZIzj0CAQYI
KoZIzj0DAQcDQgAEh3APx4n68gojcPo+Kyz8B5nQVjAW1GlnQ2bY+1aHoPLddJd4
Ykn8z6QZbdshDe461nIXs8FfQ+d9EfsSifCoczAKBggqhkjOPQQDAgNIADBFAiEA
umJOm0sHfeC33fYMgbvcNLPey3OqUWOLDO69vGj8J1ECIFPgF05ZFNiOgl+cKX39
mDnGj5VrZ8v1HbayXdm3sEcS
-----END CERTIFICATE-----
";

    fn v1() -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(V1_PEM.as_bytes()).unwrap()
    }

    /// A v3 certificate and its key, as rcgen makes them.
    fn v3() -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().self_signed(&key).unwrap();
        (cert.der().clone(), PrivateKeyDer::try_from(key.serialize_der()).unwrap())
    }

    #[test]
    fn the_version_is_read_from_the_der() {
        let v1 = v1();
        assert_eq!(version(&v1), Some(1));
        assert_eq!(version(&v3().0), Some(3));
        // Cut short anywhere, it is no certificate (and nothing reads past the end).
        for end in 0..v1.len() {
            assert_eq!(version(&v1[..end]), None, "the first {end} bytes");
        }
        assert_eq!(version(b"-----BEGIN CERTIFICATE-----"), None);
        // A TBSCertificate with an explicit version 2 (v3), then one with version 5.
        let explicit = |v: u8| [SEQUENCE, 9, SEQUENCE, 7, VERSION_TAG, 3, INTEGER, 1, v, INTEGER, 0];
        assert_eq!(version(&explicit(2)), Some(3));
        assert_eq!(version(&explicit(5)), None);
    }

    #[test]
    fn rustls_refuses_v1_as_recognised_here_but_takes_a_v1_root() {
        let provider = rustls::crypto::ring::default_provider();
        let (v3, key) = v3();
        let refused = CertifiedKey::from_der(vec![v1()], key.clone_key(), &provider).unwrap_err();
        assert!(is_version_refusal(&refused), "{refused:?}");
        assert!(CertifiedKey::from_der(vec![v3], key, &provider).is_ok());
        assert!(!is_version_refusal(&rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)));
        rustls::RootCertStore::empty().add(v1()).expect("a v1 root is a trust anchor like any other");
    }

    #[test]
    fn a_refused_chain_names_the_v1_certificate_in_it() {
        let told = |error: rustls::Error| {
            let io = std::io::Error::new(std::io::ErrorKind::InvalidData, error);
            refused_v1(&io).cloned()
        };
        let (v1, v3) = (v1(), v3().0);
        // What webpki's verifier says of a v1 server certificate.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(v3.clone()).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let refusal =
            verifier.verify_server_cert(&v1, &[], &name, &[], rustls::pki_types::UnixTime::now()).unwrap_err();
        let leaf = explain_refusal(refusal, &v1, &[], Role::Server, "the source's");
        let want = V1Certificate { what: "the source's certificate".into(), role: Role::Server };
        assert_eq!(told(leaf), Some(want));
        let refusal = || {
            let webpki = Arc::new(webpki::Error::UnsupportedCertVersion);
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(webpki)))
        };
        let middle = explain_refusal(refusal(), &v3, &[v3.clone(), v1.clone()], Role::Client, "the client's");
        let want = V1Certificate { what: "certificate 3 of the client's chain".into(), role: Role::Intermediate };
        assert_eq!(told(middle), Some(want));
        // Another refusal, or one with no v1 certificate to blame, is left as it is.
        let other = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        assert_eq!(explain_refusal(other.clone(), &v1, &[], Role::Server, "its"), other);
        assert!(told(explain_refusal(refusal(), &v3, &[], Role::Server, "its")).is_none());
    }

    #[test]
    fn the_message_is_one_line_saying_how_to_reissue() {
        let message = |role| V1Certificate { what: "/etc/certs/cert.pem".into(), role }.to_string();
        let client = message(Role::Client);
        assert_eq!(
            client,
            "/etc/certs/cert.pem: an X.509 v1 certificate (no extensions), which rustls refuses; re-issue it as \
             v3, e.g. openssl x509 -req -in REQ.csr -CA CA.pem -CAkey CA-key.pem -CAcreateserial -days 365 -out \
             CERT.pem -extfile <(echo extendedKeyUsage=clientAuth)"
        );
        let server = message(Role::Server);
        assert!(server.ends_with("<(echo subjectAltName=DNS:HOST; echo extendedKeyUsage=serverAuth)"), "{server}");
        let intermediate = message(Role::Intermediate);
        assert!(intermediate.contains("refuses as an intermediate (a v1 root in a CA file is accepted); "));
        let ca = "<(echo basicConstraints=critical,CA:TRUE; echo keyUsage=critical,keyCertSign,cRLSign)";
        assert!(intermediate.ends_with(ca), "{intermediate}");
        // One line, with nothing a log line would escape, so that the command can be copied from one.
        for role in [Role::Server, Role::Client, Role::Intermediate] {
            assert!(!message(role).contains(['\n', '\\', '"']), "{role:?}");
        }
    }
}
