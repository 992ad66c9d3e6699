//! The YAML shape of the web configuration file, as Prometheus' exporter-toolkit defines it, and
//! the checks of what it says that need no other file. Keys this daemon does not implement are errors,
//! not silently ignored: a security setting that is written down but not applied is worse than
//! a daemon that refuses to start.

use std::collections::BTreeMap;
use std::path::PathBuf;

use hyper::header::{HeaderName, HeaderValue};
use serde::Deserialize;

/// The file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    pub tls_server_config: Option<TlsServerConfig>,
    #[serde(default)]
    pub basic_auth_users: BTreeMap<String, String>,
    http_server_config: Option<HttpServerConfig>,
}

/// `tls_server_config`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TlsServerConfig {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub client_auth_type: Option<ClientAuth>,
    pub client_ca_file: Option<PathBuf>,
    pub min_version: Option<MinVersion>,
}

/// `client_auth_type`: Go's `tls.ClientAuthType` names, which exporter-toolkit uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(super) enum ClientAuth {
    /// No client certificate is asked for.
    NoClientCert,
    /// One is asked for; any, or none, is accepted.
    RequestClientCert,
    /// One is required; any is accepted (exporter-toolkit also calls it `RequireClientCert`).
    #[serde(alias = "RequireClientCert")]
    RequireAnyClientCert,
    /// One is asked for; none is accepted, but one given must chain to `client_ca_file`.
    VerifyClientCertIfGiven,
    /// One chaining to `client_ca_file` is required.
    RequireAndVerifyClientCert,
}

/// `min_version`. TLS 1.0 and 1.1 are not offered: rustls does not speak them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(super) enum MinVersion {
    TLS12,
    TLS13,
}

/// `http_server_config`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpServerConfig {
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// Headers `http_server_config.headers` may not set: they describe the message itself, the
/// connection, or the authentication the daemon does, and a wrong value would break them.
const RESERVED_HEADERS: &[&str] = &[
    "connection",
    "content-encoding",
    "content-length",
    "content-type",
    "date",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "vary",
    "www-authenticate",
];

/// Parses the file's text; an empty file (or one with only comments) is valid and changes
/// nothing.
pub(super) fn parse(text: &str) -> Result<File, String> {
    serde_norway::from_str(text).map_err(|e| e.to_string())
}

impl File {
    /// The extra response headers, checked: names and values valid, none the daemon sets itself.
    pub(super) fn headers(&self) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
        let mut headers = Vec::new();
        for (name, value) in self.http_server_config.iter().flat_map(|c| &c.headers) {
            let key = format!("http_server_config.headers.{name}");
            let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("{key}: not a header name"))?;
            if RESERVED_HEADERS.contains(&header.as_str()) {
                return Err(format!("{key}: the daemon sets this header itself"));
            }
            let value = HeaderValue::from_str(value).map_err(|_| format!("{key}: not a valid header value"))?;
            headers.push((header, value));
        }
        Ok(headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_errors() {
        for (text, says) in [
            ("tls_server_config:\n  cert_file: a\n  cipher_suites: [x]\n", "unknown field `cipher_suites`"),
            ("basic_auth_user:\n  a: b\n", "unknown field `basic_auth_user`"),
            ("http_server_config:\n  http2: false\n", "unknown field `http2`"),
            ("tls_server_config:\n  client_auth_type: Always\n", "unknown variant `Always`"),
            ("tls_server_config:\n  min_version: TLS11\n", "unknown variant `TLS11`"),
            ("- a\n", "invalid type"),
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.contains(says), "{text:?}: {error}");
        }
    }

    #[test]
    fn an_empty_file_changes_nothing() {
        for text in ["", "# nothing yet\n", "basic_auth_users:\n"] {
            let file = parse(text).unwrap();
            assert!(file.tls_server_config.is_none() && file.basic_auth_users.is_empty(), "{text:?}");
        }
    }

    #[test]
    fn every_toolkit_client_auth_type_parses() {
        for (name, want) in [
            ("NoClientCert", ClientAuth::NoClientCert),
            ("RequestClientCert", ClientAuth::RequestClientCert),
            ("RequireAnyClientCert", ClientAuth::RequireAnyClientCert),
            ("RequireClientCert", ClientAuth::RequireAnyClientCert),
            ("VerifyClientCertIfGiven", ClientAuth::VerifyClientCertIfGiven),
            ("RequireAndVerifyClientCert", ClientAuth::RequireAndVerifyClientCert),
        ] {
            let file = parse(&format!("tls_server_config:\n  client_auth_type: {name}\n")).unwrap();
            assert_eq!(file.tls_server_config.unwrap().client_auth_type, Some(want));
        }
    }

    #[test]
    fn headers_are_checked() {
        let build = |text: &str| parse(text).unwrap().headers();
        let headers = build("http_server_config:\n  headers:\n    Strict-Transport-Security: max-age=31536000\n");
        assert_eq!(headers.unwrap()[0].0.as_str(), "strict-transport-security");
        for (text, says) in [
            ("http_server_config:\n  headers:\n    Content-Length: 5\n", "sets this header itself"),
            ("http_server_config:\n  headers:\n    WWW-Authenticate: None\n", "sets this header itself"),
            ("http_server_config:\n  headers:\n    'bad name': x\n", "not a header name"),
            ("http_server_config:\n  headers:\n    X-Test: \"a\\nb\"\n", "not a valid header value"),
        ] {
            let error = build(text).unwrap_err();
            assert!(error.contains(says), "{text:?}: {error}");
        }
    }
}
