//! Certificates made fresh for a test: a CA and PEM files issued by it, in a temporary
//! directory; and, made by the openssl command as users make them, X.509 v1 certificates, which
//! rcgen cannot make. No key is ever checked in.

use std::path::{Path, PathBuf};
use std::process::Command;

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

    /// The CA's certificate and key, to issue certificates with [`openssl_issue`].
    pub fn ca_issued(&self) -> Issued {
        Issued { cert: self.ca.pem(), key: self.ca.key().serialize_pem() }
    }
}

/// A certificate for `name` made by `openssl x509 -req`, signed by `issuer` or else self-signed,
/// with the extensions in `extfile` (an `-extfile`'s text), if any. Without them, it is an X.509
/// v1 certificate, as that command makes one.
pub fn openssl_issue(issuer: Option<&Issued>, name: &str, extfile: Option<&str>) -> Issued {
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate().unwrap();
    std::fs::write(dir.path().join("req.csr"), request(&key, name)).unwrap();
    std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
    let mut openssl = Command::new("openssl");
    openssl.current_dir(dir.path()).args(["x509", "-req", "-in", "req.csr", "-days", "2", "-out", "cert.pem"]);
    match issuer {
        Some(issuer) => {
            std::fs::write(dir.path().join("ca.pem"), &issuer.cert).unwrap();
            std::fs::write(dir.path().join("ca-key.pem"), &issuer.key).unwrap();
            openssl.args(["-CA", "ca.pem", "-CAkey", "ca-key.pem", "-set_serial", "1"]);
        }
        None => _ = openssl.args(["-signkey", "key.pem"]),
    }
    if let Some(extensions) = extfile {
        std::fs::write(dir.path().join("ext.cnf"), extensions).unwrap();
        openssl.args(["-extfile", "ext.cnf"]);
    }
    let output = openssl.output().expect("the openssl command");
    assert!(output.status.success(), "openssl x509 -req: {}", String::from_utf8_lossy(&output.stderr));
    let cert = std::fs::read_to_string(dir.path().join("cert.pem")).unwrap();
    let want = if extfile.is_some() { "Version: 3 (0x2)" } else { "Version: 1 (0x0)" };
    assert!(openssl_text(&cert).contains(want), "openssl made no {want:?} certificate");
    Issued { cert, key: key.serialize_pem() }
}

/// Runs the openssl command `message` gives as an example (after "e.g. "), as a user would: with
/// a request for `key` (PEM) and `name`, `issuer`'s certificate and key as its `CA.pem` and
/// `CA-key.pem`, and `name` as its `HOST`; returns the certificate it made.
pub fn follow_reissue_hint(message: &str, issuer: &Issued, key: &str, name: &str) -> String {
    let command = message.trim_end().split_once("e.g. ").expect("an example command").1.replace("HOST", name);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("REQ.csr"), request(&KeyPair::from_pem(key).unwrap(), name)).unwrap();
    std::fs::write(dir.path().join("CA.pem"), &issuer.cert).unwrap();
    std::fs::write(dir.path().join("CA-key.pem"), &issuer.key).unwrap();
    let output = Command::new("bash").current_dir(dir.path()).args(["-c", &command]).output().expect("bash");
    assert!(output.status.success(), "{command}: {}", String::from_utf8_lossy(&output.stderr));
    std::fs::read_to_string(dir.path().join("CERT.pem")).expect("the command writes CERT.pem")
}

/// A certificate request (PEM) for `key`, with `name` as its common name.
fn request(key: &KeyPair, name: &str) -> String {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.serialize_request(key).unwrap().pem().unwrap()
}

/// What `openssl x509 -text` says of the PEM certificate `cert`.
fn openssl_text(cert: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert).unwrap();
    let output = Command::new("openssl")
        .current_dir(dir.path())
        .args(["x509", "-noout", "-text", "-in", "cert.pem"])
        .output()
        .expect("the openssl command");
    assert!(output.status.success(), "openssl x509 -text: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
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
