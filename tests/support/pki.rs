//! Certificates made fresh for a test: a CA and PEM files issued by it, in a temporary
//! directory. No key is ever checked in.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;

/// A CA and PEM files issued by it, in a temporary directory that also holds the web config.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, in PEM.
pub struct Issued {
    pub cert: String,
    pub key: String,
}

impl Default for Pki {
    fn default() -> Pki {
        Pki::new()
    }
}

impl Pki {
    /// A new CA and an empty directory.
    pub fn new() -> Pki {
        Pki { dir: tempfile::tempdir().unwrap(), ca: ca("buildkit-exporter test CA") }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `content` to `name` in the directory, atomically (as a config manager would).
    pub fn write(&self, name: &str, content: &str) {
        write_atomically(&self.path(name), content);
    }

    /// Writes the CA, a server certificate for localhost, 127.0.0.1 and ::1, and a client
    /// certificate: ca.pem, server.pem, server-key.pem, client.pem, client-key.pem.
    pub fn write_all(&self) {
        self.write("ca.pem", &self.ca.pem());
        let server = issue(&self.ca, ExtendedKeyUsagePurpose::ServerAuth);
        self.write("server.pem", &server.cert);
        self.write("server-key.pem", &server.key);
        let client = issue(&self.ca, ExtendedKeyUsagePurpose::ClientAuth);
        self.write("client.pem", &client.cert);
        self.write("client-key.pem", &client.key);
    }

    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.ca.der().clone()
    }
}

pub fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

pub fn issue(ca: &CertifiedIssuer<'static, KeyPair>, usage: ExtendedKeyUsagePurpose) -> Issued {
    let names = match usage {
        ExtendedKeyUsagePurpose::ServerAuth => vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()],
        _ => Vec::new(),
    };
    let mut params = CertificateParams::new(names).unwrap();
    params.distinguished_name.push(DnType::CommonName, format!("{usage:?}"));
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    Issued { cert: cert.pem(), key: key.serialize_pem() }
}

pub fn write_atomically(path: &Path, content: &str) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, content).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}
