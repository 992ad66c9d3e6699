//! A fake BuildKit Control server on a unix socket, replaying recorded real streams, or driven
//! message by message.
//!
//! Like BuildKit, it answers two kinds of `ListenBuildHistory` call: a live one (`active_only`),
//! which opens the next scripted connection and plays its live history messages at their
//! recorded pace (scaled by `speed`), then hangs open or fails; and a replay (`early_exit`),
//! which sends the connection's stored records at once and ends. A live `COMPLETE` is held back
//! until the build's `Status` stream, if one was asked for, has been sent in full, so replays
//! are deterministic. Every write RPC is refused and counted, so tests can assert the exporter
//! never calls one.
//!
//! A driven fake ([`FakeBuildkit::start_driven`]) plays no script: its live history stream and
//! each build's `Status` stream carry what the caller hands to its [`Driven`], when it hands it,
//! so that a benchmark can time a message from the moment it leaves.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard_buildkit_proto::moby::buildkit::v1::control_server::{Control, ControlServer};
use bollard_buildkit_proto::moby::buildkit::v1::*;
use tokio::net::UnixListener;
use tokio::sync::{mpsc, Notify};
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::fixture::{Line, Recorded};

/// How a scripted live history call ends once its messages are sent.
#[derive(Debug, Clone, Default)]
pub enum End {
    /// Stays open, sending nothing more.
    #[default]
    Hang,
    /// Fails with this status.
    Fail(Status),
}

/// One scripted connection: what its replay call and its live call get.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// What the replay call sends (the engine's stored records and running builds).
    pub replay: Vec<Line>,
    /// Live history messages with their recorded times.
    pub live: Vec<Line>,
    /// What the live call does after them.
    pub end: End,
}

/// What the fake serves.
#[derive(Debug, Clone, Default)]
pub struct Script {
    /// Connections in order; once used up, the last one repeats.
    pub connections: Vec<Connection>,
    /// `Status` messages by ref, with their recorded times.
    pub status: HashMap<String, Vec<Line>>,
    /// Replay speed: 10.0 plays ten times faster than recorded.
    pub speed: f64,
    /// When set, `ListenBuildHistory` fails at once with this status.
    pub refuse_history: Option<Status>,
    /// How many `Status` calls per ref break half-way (with an error) before one goes through.
    pub status_failures: usize,
    /// How far the fake's clock, as it tells it in BuildKit's `buildkit-current-timestamp`
    /// header, is ahead of the real one; `None` sends no header (BuildKit before 0.12).
    pub clock_ahead: Option<f64>,
}

impl Script {
    /// One connection playing every history message of `lines` live, then hanging open.
    pub fn from_recording(lines: &[Line], speed: f64) -> Script {
        let live: Vec<Line> = lines.iter().filter(|l| matches!(l.item, Recorded::History(_))).cloned().collect();
        Script {
            connections: vec![Connection { live, ..Default::default() }],
            status: status_by_ref(lines),
            speed,
            ..Default::default()
        }
    }
}

/// Groups the `Status` messages of a recording by ref.
pub fn status_by_ref(lines: &[Line]) -> HashMap<String, Vec<Line>> {
    let mut status: HashMap<String, Vec<Line>> = HashMap::new();
    for line in lines {
        if let Recorded::Status { reference, .. } = &line.item {
            status.entry(reference.clone()).or_default().push(line.clone());
        }
    }
    status
}

/// Counters a test can read while the fake runs.
#[derive(Debug, Default)]
pub struct Calls {
    /// Live history calls: one per connection.
    pub history: AtomicUsize,
    /// Replay history calls.
    pub replays: AtomicUsize,
    pub status: AtomicUsize,
    /// Solve, Prune, UpdateBuildHistory, Session: must stay 0.
    pub forbidden: AtomicUsize,
}

struct Fake {
    script: Script,
    /// Set for a driven fake, which plays no script.
    driven: Option<Arc<Driven>>,
    calls: Arc<Calls>,
    /// Refs whose `Status` stream has been sent in full.
    status_done: Arc<Mutex<HashSet<String>>>,
    /// Refs someone asked `Status` for.
    status_asked: Arc<Mutex<HashSet<String>>>,
    /// `Status` calls so far, by ref.
    status_calls: Mutex<HashMap<String, usize>>,
    progress: Arc<Notify>,
}

impl Fake {
    fn new(script: Script, driven: Option<Arc<Driven>>) -> (Fake, Arc<Calls>) {
        let calls = Arc::new(Calls::default());
        let fake = Fake {
            script,
            driven,
            calls: calls.clone(),
            status_done: Default::default(),
            status_asked: Default::default(),
            status_calls: Default::default(),
            progress: Arc::new(Notify::new()),
        };
        (fake, calls)
    }
}

/// A running fake.
pub struct FakeBuildkit {
    pub socket: PathBuf,
    pub calls: Arc<Calls>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeBuildkit {
    /// Serves `script` on a new socket in `dir`.
    pub async fn start(dir: &Path, script: Script) -> FakeBuildkit {
        FakeBuildkit::serve(dir, script, None)
    }

    /// Serves a driven fake on a new socket in `dir`; the [`Driven`] hands it what to send.
    pub async fn start_driven(dir: &Path) -> (FakeBuildkit, Arc<Driven>) {
        let driven = Arc::new(Driven::default());
        (FakeBuildkit::serve(dir, Script::default(), Some(driven.clone())), driven)
    }

    fn serve(dir: &Path, script: Script, driven: Option<Arc<Driven>>) -> FakeBuildkit {
        let socket = dir.join("buildkitd.sock");
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).expect("bind fake socket");
        let (fake, calls) = Fake::new(script, driven);
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(ControlServer::new(fake).max_encoding_message_size(256 * 1024 * 1024))
                .serve_with_incoming(UnixListenerStream::new(listener))
                .await
                .expect("fake server");
        });
        FakeBuildkit { socket, calls, task }
    }

    /// Serves `script` on a loopback TCP port with TLS, requiring a client certificate from
    /// `client_ca` (all PEM), as a standalone buildkitd set up for mTLS does; returns the fake
    /// and its `host:port`.
    pub async fn start_tls(script: Script, cert: &str, key: &str, client_ca: &str) -> (FakeBuildkit, String) {
        use tonic::transport::{Certificate, Identity, ServerTlsConfig};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind fake port");
        let address = listener.local_addr().unwrap().to_string();
        let (fake, calls) = Fake::new(script, None);
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(cert, key))
            .client_ca_root(Certificate::from_pem(client_ca));
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .tls_config(tls)
                .expect("fake TLS config")
                .add_service(ControlServer::new(fake).max_encoding_message_size(256 * 1024 * 1024))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .expect("fake server");
        });
        (FakeBuildkit { socket: PathBuf::new(), calls, task }, address)
    }

    /// The `--source` value reaching this fake.
    pub fn source(&self) -> String {
        format!("buildkitd+unix://{}", self.socket.display())
    }

    /// Stops serving: open streams break, new connections are refused.
    pub fn stop(self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.socket);
    }
}

type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;
type Tx<T> = mpsc::Sender<Result<T, Status>>;

/// The open streams of a driven fake: the daemon's live history call and its `Status` call of
/// each build.
#[derive(Default)]
pub struct Driven {
    live: Mutex<Option<Tx<BuildHistoryEvent>>>,
    status: Mutex<HashMap<String, Tx<StatusResponse>>>,
}

impl Driven {
    /// Hands `event` to the live history stream; returns the instant just before.
    pub fn history(&self, event: BuildHistoryEvent) -> Instant {
        let tx = self.live.lock().unwrap().clone().expect("the daemon's live history call");
        let at = Instant::now();
        tx.try_send(Ok(event)).expect("history stream open");
        at
    }

    /// Hands `message` to the `Status` stream of `reference`; returns the instant just before.
    pub fn status(&self, reference: &str, message: StatusResponse) -> Instant {
        let tx = self.status.lock().unwrap().get(reference).cloned().expect("a Status call for the build");
        let at = Instant::now();
        tx.try_send(Ok(message)).expect("Status stream open");
        at
    }

    /// Waits until the daemon has asked for the `Status` of `reference`.
    pub fn wait_status(&self, reference: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.status.lock().unwrap().contains_key(reference) {
            assert!(Instant::now() < deadline, "no Status call for {reference}");
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Ends the `Status` stream of `reference`, as BuildKit does when a build finishes.
    pub fn end_status(&self, reference: &str) {
        self.status.lock().unwrap().remove(reference);
    }

    /// A live history call: what [`Driven::history`] hands over, from now on.
    fn open_history(&self) -> Stream_<BuildHistoryEvent> {
        let (tx, rx) = mpsc::channel(1024);
        *self.live.lock().unwrap() = Some(tx);
        Box::pin(ReceiverStream::new(rx))
    }

    /// A `Status` call: what [`Driven::status`] hands over for `reference`.
    fn open_status(&self, reference: String) -> Stream_<StatusResponse> {
        let (tx, rx) = mpsc::channel(1024);
        self.status.lock().unwrap().insert(reference, tx);
        Box::pin(ReceiverStream::new(rx))
    }
}

/// A response carrying the fake's clock the way BuildKit sends its own: RFC 3339 in the engine's
/// zone (here UTC+1, to make the zone matter).
fn with_clock<T>(body: T, ahead: Option<f64>) -> Response<T> {
    let mut response = Response::new(body);
    if let Some(ahead) = ahead {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let engine = time::OffsetDateTime::from_unix_timestamp_nanos(((now + ahead) * 1e9) as i128)
            .unwrap()
            .to_offset(time::UtcOffset::from_hms(1, 0, 0).unwrap());
        let text = engine.format(&time::format_description::well_known::Rfc3339).unwrap();
        response.metadata_mut().insert("buildkit-current-timestamp", text.parse().unwrap());
    }
    response
}

fn delay(from: f64, to: f64, speed: f64) -> Duration {
    Duration::from_secs_f64(((to - from) / speed).clamp(0.0, 5.0))
}

#[tonic::async_trait]
impl Control for Fake {
    async fn listen_build_history(
        &self,
        request: Request<BuildHistoryRequest>,
    ) -> Result<Response<Self::ListenBuildHistoryStream>, Status> {
        let request = request.into_inner();
        if let Some(status) = &self.script.refuse_history {
            self.calls.history.fetch_add(1, Ordering::SeqCst);
            return Err(status.clone());
        }
        if let Some(driven) = &self.driven {
            // Nothing is stored to replay; the live call carries what the driver hands over.
            let stream = if request.early_exit { Box::pin(tokio_stream::empty()) } else { driven.open_history() };
            return Ok(Response::new(stream));
        }
        let connections = &self.script.connections;
        if request.early_exit {
            self.calls.replays.fetch_add(1, Ordering::SeqCst);
            // The replay of the connection whose live call came last.
            let n = self.calls.history.load(Ordering::SeqCst).saturating_sub(1);
            let replay = connections[n.min(connections.len() - 1)].replay.clone();
            let events = replay.into_iter().filter_map(|l| match l.item {
                Recorded::History(event) => Some(Ok(event)),
                _ => None,
            });
            return Ok(with_clock(Box::pin(tokio_stream::iter(events.collect::<Vec<_>>())), self.script.clock_ahead));
        }
        let n = self.calls.history.fetch_add(1, Ordering::SeqCst);
        let connection = connections[n.min(connections.len() - 1)].clone();
        let (tx, rx) = mpsc::channel(16);
        let speed = self.script.speed;
        let (done, asked, progress) = (self.status_done.clone(), self.status_asked.clone(), self.progress.clone());
        tokio::spawn(async move {
            let mut last = connection.live.first().map_or(0.0, |l| l.at);
            for line in connection.live {
                tokio::time::sleep(delay(last, line.at, speed)).await;
                last = line.at;
                let Recorded::History(event) = line.item else { continue };
                if event.r#type == BuildHistoryEventType::Complete as i32
                    && event.record.as_ref().is_some_and(|r| r.generation == 0)
                {
                    let reference = event.record.as_ref().map(|r| r.r#ref.clone()).unwrap_or_default();
                    // Hold the completion until the build's Status stream has been sent.
                    let wait = async {
                        loop {
                            let notified = progress.notified();
                            let asked_for = asked.lock().unwrap().contains(&reference);
                            if !asked_for || done.lock().unwrap().contains(&reference) {
                                return;
                            }
                            notified.await;
                        }
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(10), wait).await;
                }
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            match connection.end {
                End::Hang => tx.closed().await,
                End::Fail(status) => {
                    let _ = tx.send(Err(status)).await;
                }
            }
        });
        Ok(with_clock(Box::pin(ReceiverStream::new(rx)), self.script.clock_ahead))
    }

    type ListenBuildHistoryStream = Stream_<BuildHistoryEvent>;

    async fn status(&self, request: Request<StatusRequest>) -> Result<Response<Self::StatusStream>, Status> {
        self.calls.status.fetch_add(1, Ordering::SeqCst);
        let reference = request.into_inner().r#ref;
        if let Some(driven) = &self.driven {
            return Ok(Response::new(driven.open_status(reference)));
        }
        let Some(lines) = self.script.status.get(&reference).cloned() else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            return Err(Status::not_found("no such job"));
        };
        let call = {
            let mut calls = self.status_calls.lock().unwrap();
            let n = calls.entry(reference.clone()).or_default();
            *n += 1;
            *n
        };
        let breaks = call <= self.script.status_failures;
        let lines = if breaks { lines[..lines.len() / 2].to_vec() } else { lines };
        self.status_asked.lock().unwrap().insert(reference.clone());
        let (tx, rx) = mpsc::channel(16);
        let speed = self.script.speed;
        let (done, progress) = (self.status_done.clone(), self.progress.clone());
        tokio::spawn(async move {
            let mut last = lines.first().map_or(0.0, |l| l.at);
            for line in lines {
                tokio::time::sleep(delay(last, line.at, speed)).await;
                last = line.at;
                if let Recorded::Status { message, .. } = line.item {
                    if tx.send(Ok(message)).await.is_err() {
                        break;
                    }
                }
            }
            if breaks {
                let _ = tx.send(Err(Status::unknown("h2 protocol error: stream reset"))).await;
                return;
            }
            done.lock().unwrap().insert(reference);
            progress.notify_waiters();
        });
        Ok(with_clock(Box::pin(ReceiverStream::new(rx)), self.script.clock_ahead))
    }

    type StatusStream = Stream_<StatusResponse>;

    /// A cache of three records: regular (1 000 bytes, free), a cache mount in use (500)
    /// and a type BuildKit may add one day (7, free).
    async fn disk_usage(&self, _: Request<DiskUsageRequest>) -> Result<Response<DiskUsageResponse>, Status> {
        let record = |record_type: &str, size: i64, in_use: bool| UsageRecord {
            id: format!("{record_type}-{size}"),
            record_type: record_type.to_string(),
            size,
            in_use,
            ..UsageRecord::default()
        };
        let record =
            vec![record("regular", 1000, false), record("exec.cachemount", 500, true), record("future.kind", 7, false)];
        Ok(Response::new(DiskUsageResponse { record }))
    }

    type PruneStream = Stream_<UsageRecord>;

    async fn prune(&self, _: Request<PruneRequest>) -> Result<Response<Self::PruneStream>, Status> {
        self.calls.forbidden.fetch_add(1, Ordering::SeqCst);
        Err(Status::permission_denied("read-only test"))
    }

    async fn solve(&self, _: Request<SolveRequest>) -> Result<Response<SolveResponse>, Status> {
        self.calls.forbidden.fetch_add(1, Ordering::SeqCst);
        Err(Status::permission_denied("read-only test"))
    }

    type SessionStream = Stream_<BytesMessage>;

    async fn session(
        &self,
        _: Request<tonic::Streaming<BytesMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        self.calls.forbidden.fetch_add(1, Ordering::SeqCst);
        Err(Status::permission_denied("read-only test"))
    }

    /// One worker, for linux/amd64 and linux/arm64/v8.
    async fn list_workers(&self, _: Request<ListWorkersRequest>) -> Result<Response<ListWorkersResponse>, Status> {
        let platform = |architecture: &str, variant: &str| bollard_buildkit_proto::pb::Platform {
            architecture: architecture.to_string(),
            os: "linux".to_string(),
            variant: variant.to_string(),
            ..Default::default()
        };
        let worker = bollard_buildkit_proto::moby::buildkit::v1::types::WorkerRecord {
            id: "fake-worker".to_string(),
            platforms: vec![platform("amd64", ""), platform("arm64", "v8")],
            ..Default::default()
        };
        Ok(Response::new(ListWorkersResponse { record: vec![worker] }))
    }

    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        let version = bollard_buildkit_proto::moby::buildkit::v1::types::BuildkitVersion {
            package: "github.com/moby/buildkit".to_string(),
            version: "v0.13.2-fake".to_string(),
            revision: "fake".to_string(),
        };
        Ok(Response::new(InfoResponse { buildkit_version: Some(version) }))
    }

    async fn update_build_history(
        &self,
        _: Request<UpdateBuildHistoryRequest>,
    ) -> Result<Response<UpdateBuildHistoryResponse>, Status> {
        self.calls.forbidden.fetch_add(1, Ordering::SeqCst);
        Err(Status::permission_denied("read-only test"))
    }
}
