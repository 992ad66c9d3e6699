//! Why a source cannot be watched right now: one error type for the source layer, each variant
//! saying in one sentence what to do, and whether retrying soon can help.

use std::time::Duration;

use tonic::Code;

use super::spec::Endpoint;

/// Why a source cannot be watched right now. All are retried; each says what to do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceError {
    /// Nothing listens at the address.
    #[error("no engine at {endpoint}: {detail} (is it running? set --source or DOCKER_HOST)")]
    Unreachable { endpoint: String, detail: String },
    /// The socket exists but this user may not open it.
    #[error("permission denied on {endpoint}: run as root or as a member of the socket's group (usually docker)")]
    PermissionDenied { endpoint: String },
    /// The engine refused the `/grpc` upgrade.
    #[error("{endpoint} refused the BuildKit /grpc upgrade with HTTP {status}: not a Docker Engine with BuildKit (23.0 or newer)?")]
    Upgrade { endpoint: String, status: u16 },
    /// The engine has no build-history API.
    #[error(
        "{endpoint} is too old: it has no BuildKit build-history API (needs Docker Engine 23.0+ or buildkitd 0.11+)"
    )]
    TooOld { endpoint: String },
    /// A message was larger than allowed.
    #[error("a message from {endpoint} is larger than --source.max-message-bytes: {detail}")]
    TooLarge { endpoint: String, detail: String },
    /// The connection or stream broke, or carried something that is not BuildKit's protocol.
    #[error("stream from {endpoint} failed: {detail}")]
    Protocol { endpoint: String, detail: String },
    /// The engine ended the history stream.
    #[error("{endpoint} closed the build-history stream")]
    Closed { endpoint: String },
    /// TLS to the source cannot be set up: its files, or the handshake.
    #[error("TLS to {endpoint} failed: {detail}")]
    Tls { endpoint: String, detail: String },
    /// A plaintext request reached a TLS port.
    #[error("{endpoint} answers with TLS: set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH (ca.pem, cert.pem, key.pem), or add ?ca=FILE&cert=FILE&key=FILE to the source")]
    NeedsTls { endpoint: String },
    /// A container builder's container is not running.
    #[error("{endpoint}: the builder's container is {status} (exit code {exit_code}); `docker buildx inspect --bootstrap` starts it again")]
    ContainerStopped { endpoint: String, status: String, exit_code: i64 },
    /// A container builder's container no longer exists (the builder is leaving the fleet).
    #[error("{endpoint}: the builder's container no longer exists")]
    ContainerGone { endpoint: String },
    /// Dialing, the `/grpc` upgrade or a link check got no answer in time.
    #[error("no answer from {endpoint} within {after:?} (engine frozen, or a hung proxy in between?)")]
    Timeout { endpoint: String, after: Duration },
}

impl SourceError {
    /// What failing to open or use the socket of `endpoint` means.
    pub(super) fn from_io(endpoint: &Endpoint, error: std::io::Error) -> SourceError {
        let endpoint = endpoint.to_string();
        match error.kind() {
            std::io::ErrorKind::PermissionDenied => SourceError::PermissionDenied { endpoint },
            _ => SourceError::Unreachable { endpoint, detail: error.to_string() },
        }
    }

    /// What a failed call or stream of `endpoint` means.
    pub(super) fn from_status(endpoint: &Endpoint, status: &tonic::Status) -> SourceError {
        let endpoint = endpoint.to_string();
        let detail = format!("{:?}: {}", status.code(), status.message());
        match status.code() {
            Code::Unimplemented => SourceError::TooOld { endpoint },
            Code::OutOfRange | Code::ResourceExhausted if status.message().contains("too large") => {
                SourceError::TooLarge { endpoint, detail: status.message().to_string() }
            }
            _ => SourceError::Protocol { endpoint, detail },
        }
    }

    /// Whether retrying soon is pointless (it needs someone to act): retry at the longest delay.
    pub fn needs_operator(&self) -> bool {
        matches!(
            self,
            SourceError::PermissionDenied { .. }
                | SourceError::TooOld { .. }
                | SourceError::Upgrade { .. }
                | SourceError::Tls { .. }
                | SourceError::NeedsTls { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unimplemented_means_too_old() {
        let endpoint = Endpoint::Docker(crate::source::spec::Transport::Unix("/x.sock".into()));
        let error = SourceError::from_status(&endpoint, &tonic::Status::unimplemented("unknown service"));
        assert!(matches!(error, SourceError::TooOld { .. }));
        assert!(error.to_string().contains("23.0"));
        let error = SourceError::from_io(&endpoint, std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        assert_eq!(
            error.to_string(),
            "permission denied on unix:///x.sock: run as root or as a member of the socket's group (usually docker)"
        );
    }
}
