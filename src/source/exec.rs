//! Reaching the BuildKit of a buildx container builder, the way buildx itself does: by running
//! `buildctl dial-stdio` in the builder's container through the engine's exec API, and speaking
//! gRPC over that process's stdin and stdout. It is the only exec this daemon makes, and it only
//! reads: `dial-stdio` relays bytes to the buildkitd socket inside the container.
//!
//! Before each exec the container is inspected: a stopped builder is down with that reason
//! rather than with a failed exec, and its process (host PID and start time) tells a restarted
//! container from a broken link. After a link failed, the container says whether the builder is
//! leaving ([`aftermath`]).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::Docker;
use hyper::body::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_stream::Stream;
use tracing::debug;

use super::peer::Peer;
use super::spec::Transport;
use super::SourceError;

/// The command buildx runs in a container builder to reach its BuildKit.
const DIAL: [&str; 2] = ["buildctl", "dial-stdio"];

/// What `dial-stdio` prints on stdout, as bytes; stderr goes to the debug log.
type Output = Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;

/// The byte stream to a container builder's BuildKit: the exec's stdout to read, its stdin to
/// write.
pub(super) struct ExecIo {
    output: Output,
    input: Pin<Box<dyn AsyncWrite + Send>>,
    /// Bytes of the last stdout frame not read yet.
    pending: Bytes,
}

/// Opens the byte stream to the BuildKit in `container`, reached through `docker`; `address`
/// names the source in errors.
pub(super) async fn dial(docker: &Docker, container: &str, address: &str) -> Result<(ExecIo, Peer), SourceError> {
    let peer = running(docker, container, address).await?;
    let failed = |error: bollard::errors::Error| SourceError::Protocol {
        endpoint: address.to_string(),
        detail: format!("`{}` in the container failed: {error}", DIAL.join(" ")),
    };
    let options = CreateExecOptions {
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        cmd: Some(DIAL.to_vec()),
        ..Default::default()
    };
    let exec = docker.create_exec(container, options).await.map_err(failed)?;
    match docker.start_exec(&exec.id, Some(StartExecOptions::default())).await.map_err(failed)? {
        StartExecResults::Attached { output, input } => Ok((ExecIo { output, input, pending: Bytes::new() }, peer)),
        StartExecResults::Detached => unreachable!("the exec is started attached"),
    }
}

/// The process of `container`, if it runs; else why the builder is down.
async fn running(docker: &Docker, container: &str, address: &str) -> Result<Peer, SourceError> {
    let endpoint = address.to_string();
    let inspected = match docker.inspect_container(container, None).await {
        Ok(inspected) => inspected,
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
            return Err(SourceError::ContainerGone { endpoint })
        }
        Err(error) => return Err(SourceError::Unreachable { endpoint, detail: error.to_string() }),
    };
    let state = inspected.state.unwrap_or_default();
    if state.running != Some(true) {
        let status = state.status.map(|s| s.to_string()).unwrap_or_else(|| "not running".into());
        return Err(SourceError::ContainerStopped { endpoint, status, exit_code: state.exit_code.unwrap_or(0) });
    }
    let pid = state.pid.and_then(|pid| i32::try_from(pid).ok()).unwrap_or(0);
    Ok(Peer::container(pid, state.started_at.as_deref().unwrap_or("")))
}

/// How long a container builder whose link failed may take to be removed before it is said to
/// be down: `docker buildx rm` stops the container, then removes it (about 10 ms later, measured
/// with the engine's events), and a plain `docker stop` looks the same until then. A link that
/// failed while the container runs is also said 3 s late.
const LEAVING_GRACE: Duration = Duration::from_secs(3);
/// How often the container is inspected meanwhile.
const LEAVING_POLL: Duration = Duration::from_millis(100);

/// What a container builder's container says after its link failed.
pub(super) enum Aftermath {
    /// It no longer exists: the builder is leaving the fleet.
    Gone,
    /// It stayed stopped: why the builder is down.
    Stopped(SourceError),
    /// It runs, or the engine does not say: the link's own failure stands.
    Unknown,
}

/// Whether `container` (the source at `address`) is being removed: [`Aftermath::Gone`] as soon
/// as the engine no longer has it; otherwise what it is after [`LEAVING_GRACE`]. Not sooner: a
/// container being stopped still runs for a moment after its BuildKit closed the link.
pub(super) async fn aftermath(engine: &Transport, container: &str, address: &str, timeout: Duration) -> Aftermath {
    let Ok(docker) = super::engine::client(engine, timeout) else { return Aftermath::Unknown };
    let deadline = tokio::time::Instant::now() + LEAVING_GRACE;
    loop {
        let state = running(&docker, container, address).await;
        if let Err(SourceError::ContainerGone { .. }) = state {
            return Aftermath::Gone;
        }
        if tokio::time::Instant::now() >= deadline {
            return match state {
                Err(stopped @ SourceError::ContainerStopped { .. }) => Aftermath::Stopped(stopped),
                _ => Aftermath::Unknown,
            };
        }
        tokio::time::sleep(LEAVING_POLL).await;
    }
}

impl AsyncRead for ExecIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        while self.pending.is_empty() {
            match std::task::ready!(self.output.as_mut().poll_next(cx)) {
                Some(Ok(LogOutput::StdOut { message } | LogOutput::Console { message })) => self.pending = message,
                Some(Ok(LogOutput::StdErr { message })) => {
                    debug!(stderr = %String::from_utf8_lossy(&message).trim_end(), "buildctl dial-stdio");
                }
                Some(Ok(LogOutput::StdIn { .. })) => {}
                Some(Err(error)) => return Poll::Ready(Err(io::Error::other(error))),
                // The process ended: end of stream.
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = buf.remaining().min(self.pending.len());
        let chunk = self.pending.split_to(n);
        buf.put_slice(&chunk);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ExecIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        self.input.as_mut().poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.input.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.input.as_mut().poll_shutdown(cx)
    }
}
