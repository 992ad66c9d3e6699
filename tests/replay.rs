//! The daemon against a fake BuildKit replaying streams recorded from real builds
//! (tests/fixtures, made by tests/record.rs): exact, fast, and diffed against golden files.

use std::sync::Arc;
use std::time::Duration;

use bollard_buildkit_proto::moby::buildkit::v1::BuildHistoryEventType;
use testkit::fake::{status_by_ref, Connection, End, FakeBuildkit, Script};
use testkit::fixture::{self, Line, Recorded};
use testkit::metrics::{finished_builds, sample, samples};
use testkit::{assert_golden, eventually, Daemon};

/// The build-arg value of the recorded builds (see tests/record.rs).
const MARKER: &str = "fixture-marker-5e3c7";
const SPEED: f64 = 20.0;

fn history(lines: &[Line]) -> Vec<Line> {
    lines.iter().filter(|l| matches!(l.item, Recorded::History(_))).cloned().collect()
}

fn event_type(line: &Line) -> Option<(BuildHistoryEventType, String, i32)> {
    let Recorded::History(event) = &line.item else { return None };
    let record = event.record.as_ref()?;
    Some((BuildHistoryEventType::try_from(event.r#type).ok()?, record.r#ref.clone(), record.generation))
}

/// Refs in the order their builds started.
fn started_refs(lines: &[Line]) -> Vec<String> {
    lines
        .iter()
        .filter_map(event_type)
        .filter(|(t, ..)| *t == BuildHistoryEventType::Started)
        .map(|(_, r, _)| r)
        .collect()
}

async fn start(lines_dir: &tempfile::TempDir, script: Script) -> (FakeBuildkit, Daemon) {
    let fake = FakeBuildkit::start(lines_dir.path(), script).await;
    let daemon = Daemon::start(&[&fake.source()], |_| {}).await;
    (fake, daemon)
}

/// Builds counted as finished, all names and results.
fn all_finished(metrics: &str) -> f64 {
    samples(metrics, "buildkit_builds_completed_total", &[]).iter().map(|(_, v)| v).sum()
}

/// Families left out of golden files: `process_*` describes the test process, and the facts
/// read in the background (versions, workers, cache) arrive at a time of their own; they have
/// a test of their own.
const UNSTABLE: [&str; 6] = [
    "process_",
    "buildkit_cache_",
    "buildkit_worker_info",
    "buildkit_exporter_source_info",
    "buildkit_cache_reclaimable",
    "buildkit_cache_records",
];

/// `/metrics` with values that depend on the wall clock replaced, and without [`UNSTABLE`]
/// families.
fn stable(metrics: &str) -> String {
    metrics
        .lines()
        .filter(|l| {
            let family = l.strip_prefix("# HELP ").or_else(|| l.strip_prefix("# TYPE ")).unwrap_or(l);
            !UNSTABLE.iter().any(|prefix| family.starts_with(prefix))
        })
        .map(|l| match l.strip_prefix("buildkit_build_elapsed_seconds{") {
            Some(rest) => format!("buildkit_build_elapsed_seconds{{{} <elapsed>", rest.rsplit_once(' ').unwrap().0),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[tokio::test]
async fn recorded_builds_give_the_golden_metrics() {
    let lines = fixture::recorded();
    let dir = tempfile::tempdir().unwrap();
    let (fake, daemon) = start(&dir, Script::from_recording(&lines, SPEED)).await;
    eventually(Duration::from_secs(30), "four builds counted", || async {
        let m = daemon.metrics().await;
        (all_finished(&m) == 4.0).then_some(m)
    })
    .await;
    // The second COMPLETE of every build has been replayed too by now; nothing more is counted.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics = daemon.metrics().await;
    assert_eq!(
        sample(&metrics, "buildkit_builds_completed_total", &[("name", "ml-base"), ("result", "succeeded")]),
        Some(2.0)
    );
    // A build that fails before export never says its tag: it stays unknown.
    assert_eq!(
        sample(&metrics, "buildkit_builds_completed_total", &[("name", "unknown"), ("result", "failed")]),
        Some(1.0)
    );
    assert_eq!(finished_builds(&metrics, "team/multi"), 1.0);
    assert_eq!(sample(&metrics, "buildkit_builds_started_total", &[]), Some(4.0));
    assert!(!metrics.contains(MARKER));
    // The process collector: the daemon's own memory, CPU and descriptors.
    assert!(sample(&metrics, "process_resident_memory_bytes", &[]).is_some_and(|bytes| bytes > 1e6));
    assert!(sample(&metrics, "process_open_fds", &[]).is_some_and(|fds| fds > 0.0));
    assert_golden("replay.metrics", &stable(&metrics));
    assert_eq!(fake.calls.forbidden.load(std::sync::atomic::Ordering::SeqCst), 0);
    daemon.stop().await;
    fake.stop();
}

#[tokio::test]
async fn a_build_in_progress_gives_the_golden_metrics() {
    let lines = fixture::recorded();
    let first = started_refs(&lines)[0].clone();
    // History stops right after the first build started; its progress stops half-way.
    let history: Vec<Line> = history(&lines)
        .into_iter()
        .take_while(|l| event_type(l).is_some_and(|(t, r, _)| !(t == BuildHistoryEventType::Complete && r == first)))
        .filter(|l| event_type(l).is_some_and(|(_, r, _)| r == first))
        .collect();
    let mut status = status_by_ref(&lines);
    let progress = status.remove(&first).unwrap();
    let half = progress.len() / 2;
    status.clear();
    status.insert(first.clone(), progress[..half].to_vec());
    let script = Script {
        connections: vec![Connection { live: history, ..Default::default() }],
        status,
        speed: SPEED,
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let (fake, daemon) = start(&dir, script).await;
    let metrics = eventually(Duration::from_secs(20), "half the progress applied", || async {
        let m = daemon.metrics().await;
        let step = sample(&m, "buildkit_build_current_step", &[("ref", &first)])?;
        // Progress is applied once the status stream is done; compare twice to be sure.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let again = daemon.metrics().await;
        (sample(&again, "buildkit_build_current_step", &[("ref", &first)]) == Some(step)).then_some(again)
    })
    .await;
    assert_eq!(sample(&metrics, "buildkit_build_steps", &[("ref", &first)]), Some(15.0));
    assert_eq!(sample(&metrics, "buildkit_builds_running", &[]), Some(1.0));
    assert!(!metrics.contains(MARKER));
    assert_golden("in-progress.metrics", &stable(&metrics));
    daemon.stop().await;
    fake.stop();
}

#[tokio::test]
async fn history_replayed_at_startup_seeds_and_counts_nothing() {
    let lines = fixture::recorded();
    // What a new listener gets: every stored build as COMPLETE.
    let replay: Vec<Line> = history(&lines)
        .into_iter()
        .filter(|l| event_type(l).is_some_and(|(t, _, g)| t == BuildHistoryEventType::Complete && g == 0))
        .map(|l| Line { at: 0.0, ..l })
        .collect();
    let script = Script {
        connections: vec![Connection { replay, ..Default::default() }],
        status: status_by_ref(&lines),
        speed: SPEED,
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let (fake, daemon) = start(&dir, script).await;
    let metrics = eventually(Duration::from_secs(20), "names learned from history", || async {
        let m = daemon.metrics().await;
        (samples(&m, "buildkit_build_last_completion_time_seconds", &[]).len() == 2).then_some(m)
    })
    .await;
    assert!(samples(&metrics, "buildkit_builds_completed_total", &[]).is_empty(), "{metrics}");
    assert_eq!(sample(&metrics, "buildkit_builds_started_total", &[]), Some(0.0));
    assert!(sample(
        &metrics,
        "buildkit_build_last_completion_time_seconds",
        &[("name", "ml-base"), ("result", "succeeded")]
    )
    .is_some());
    assert!(sample(
        &metrics,
        "buildkit_build_last_completion_time_seconds",
        &[("name", "team/multi"), ("result", "succeeded")]
    )
    .is_some());
    assert_golden("history.metrics", &stable(&metrics));
    daemon.stop().await;
    fake.stop();
}

#[tokio::test]
async fn a_build_finishing_during_a_disconnect_is_counted_once() {
    let lines = fixture::recorded();
    let first = started_refs(&lines)[0].clone();
    let all = history(&lines);
    let until_started: Vec<Line> = all
        .iter()
        .filter(|l| event_type(l).is_some_and(|(t, r, _)| t == BuildHistoryEventType::Started && r == first))
        .cloned()
        .collect();
    // After reconnecting: the replay holds every generation of every completed build.
    let replay: Vec<Line> = all
        .iter()
        .filter(|l| event_type(l).is_some_and(|(t, ..)| t == BuildHistoryEventType::Complete))
        .map(|l| Line { at: 0.0, ..l.clone() })
        .collect();
    let mut status = status_by_ref(&lines);
    let progress = status.remove(&first).unwrap();
    let mut partial = std::collections::HashMap::new();
    partial.insert(first.clone(), progress[..progress.len() / 3].to_vec());
    let script = Script {
        connections: vec![
            Connection {
                live: until_started,
                end: End::Fail(tonic::Status::unknown("h2 protocol error: connection reset")),
                ..Default::default()
            },
            Connection {
                replay: replay.clone(),
                end: End::Fail(tonic::Status::unavailable("engine restarting")),
                ..Default::default()
            },
            Connection { replay, ..Default::default() },
        ],
        status: partial,
        speed: SPEED,
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let (fake, daemon) = start(&dir, script).await;
    eventually(Duration::from_secs(30), "third connection up", || async {
        let m = daemon.metrics().await;
        let up = sample(&m, "buildkit_exporter_source_up", &[]) == Some(1.0);
        (up && fake.calls.history.load(std::sync::atomic::Ordering::SeqCst) >= 3).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let metrics = daemon.metrics().await;
    assert_eq!(
        sample(&metrics, "buildkit_builds_completed_total", &[("name", "ml-base"), ("result", "succeeded")]),
        Some(1.0),
        "{metrics}"
    );
    let counted: Vec<_> =
        samples(&metrics, "buildkit_builds_completed_total", &[]).into_iter().filter(|(_, v)| *v > 0.0).collect();
    assert_eq!(counted.len(), 1, "older builds are history: {counted:?}");
    assert_eq!(sample(&metrics, "buildkit_builds_started_total", &[]), Some(1.0));
    assert_eq!(sample(&metrics, "buildkit_exporter_source_reconnects_total", &[]), Some(2.0));
    assert_eq!(sample(&metrics, "buildkit_builds_running", &[]), Some(0.0));
    daemon.stop().await;
    fake.stop();
}

#[tokio::test]
async fn an_engine_without_the_history_api_is_reported_down() {
    let script = Script {
        connections: vec![Connection::default()],
        status: Default::default(),
        speed: SPEED,
        refuse_history: Some(tonic::Status::unimplemented("unknown method ListenBuildHistory")),
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let (fake, daemon) = start(&dir, script).await;
    eventually(Duration::from_secs(5), "a history call", || async {
        (fake.calls.history.load(std::sync::atomic::Ordering::SeqCst) >= 1).then_some(())
    })
    .await;
    let (status, metrics) = daemon.get("/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(sample(&metrics, "buildkit_exporter_source_up", &[]), Some(0.0));
    daemon.stop().await;
    fake.stop();
}

#[tokio::test]
async fn several_sources_are_told_apart_by_builder() {
    let lines = fixture::recorded();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let fake_a = FakeBuildkit::start(dir_a.path(), Script::from_recording(&lines, SPEED)).await;
    let down = dir_b.path().join("nothing.sock");
    let sources = [format!("ci={}", fake_a.source()), format!("laptop=buildkitd+unix://{}", down.display())];
    let daemon = Daemon::start(&[&sources[0], &sources[1]], |_| {}).await;
    let metrics = eventually(Duration::from_secs(30), "builds of one source counted", || async {
        let m = daemon.metrics().await;
        (sample(&m, "buildkit_builds_started_total", &[("builder", "ci")]) == Some(4.0)
            && finished_builds(&m, "ml-base") == 2.0)
            .then_some(m)
    })
    .await;
    assert_eq!(sample(&metrics, "buildkit_exporter_source_up", &[("builder", "ci")]), Some(1.0));
    assert_eq!(sample(&metrics, "buildkit_exporter_source_up", &[("builder", "laptop")]), Some(0.0));
    assert_eq!(sample(&metrics, "buildkit_builds_started_total", &[("builder", "laptop")]), Some(0.0));
    assert!(samples(&metrics, "buildkit_builds_completed_total", &[("builder", "laptop")]).is_empty());
    let (_, list) = daemon.get("/api/v1/builds").await;
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let builds = list["builds"].as_array().unwrap();
    assert!(!builds.is_empty() && builds.iter().all(|b| b["builder"] == "ci"), "{list}");
    // The list says which source is down, and why, in one line.
    let laptop = list["sources"].as_array().unwrap().iter().find(|s| s["builder"] == "laptop").unwrap().clone();
    assert_eq!(laptop["up"], false, "{laptop}");
    let reason = laptop["reason"].as_str().unwrap_or_else(|| panic!("no reason: {laptop}"));
    assert!(reason.contains("nothing.sock") && !reason.contains('\n'), "{reason}");
    assert_eq!(list["sources"].as_array().unwrap().iter().find(|s| s["builder"] == "ci").unwrap()["up"], true);
    daemon.stop().await;
    drop(dir_b);
    fake_a.stop();
}

#[tokio::test]
async fn a_status_stream_that_breaks_is_reopened() {
    let lines = fixture::recorded();
    let script = Script { status_failures: 2, ..Script::from_recording(&lines, SPEED) };
    let dir = tempfile::tempdir().unwrap();
    let (fake, daemon) = start(&dir, script).await;
    let metrics = eventually(Duration::from_secs(40), "four builds counted", || async {
        let m = daemon.metrics().await;
        (all_finished(&m) == 4.0).then_some(m)
    })
    .await;
    // Every step seen, through the third Status stream of each build.
    let steps: f64 = samples(&metrics, "buildkit_steps_total", &[("name", "ml-base")]).iter().map(|(_, v)| v).sum();
    assert_eq!(steps, 30.0);
    assert_eq!(sample(&metrics, "buildkit_exporter_source_up", &[]), Some(1.0));
    assert!(fake.calls.status.load(std::sync::atomic::Ordering::SeqCst) >= 12);
    daemon.stop().await;
    fake.stop();
}

#[tokio::test]
async fn an_engine_clock_minutes_ahead_gives_true_times() {
    let lines = fixture::recorded();
    let first = started_refs(&lines)[0].clone();
    let started = history(&lines)
        .into_iter()
        .find(|l| event_type(l).is_some_and(|(t, r, _)| t == BuildHistoryEventType::Started && r == first))
        .unwrap();
    let Recorded::History(event) = &started.item else { unreachable!() };
    let created = event.record.as_ref().unwrap().created_at.unwrap();
    // The engine's clock is five minutes ahead, and by it the build started 20 s ago.
    let ahead = 300.0;
    let by = testkit::metrics_now() + ahead - 20.0 - (created.seconds as f64 + f64::from(created.nanos) / 1e9);
    let mut status = status_by_ref(&lines);
    let progress: Vec<Line> = status.remove(&first).unwrap().iter().map(|l| l.shifted(by)).collect();
    let half = progress.len() / 2;
    let script = Script {
        connections: vec![Connection { live: vec![started.shifted(by)], ..Default::default() }],
        status: [(first.clone(), progress[..half].to_vec())].into(),
        speed: SPEED,
        clock_ahead: Some(ahead),
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let (fake, daemon) = start(&dir, script).await;
    let metrics = eventually(Duration::from_secs(20), "the build's progress", || async {
        let m = daemon.metrics().await;
        (sample(&m, "buildkit_build_current_step", &[("ref", &first)])? > 1.0).then_some(m)
    })
    .await;
    let now = testkit::metrics_now();
    let labels = [("ref", first.as_str())];
    let elapsed = sample(&metrics, "buildkit_build_elapsed_seconds", &labels).unwrap();
    assert!((19.0..60.0).contains(&elapsed), "elapsed {elapsed} s, not off by the engine's 300 s");
    let start_time = sample(&metrics, "buildkit_build_start_time_seconds", &labels).unwrap();
    assert!((now - 60.0..now - 19.0).contains(&start_time), "start {start_time} vs now {now}");
    let last = sample(&metrics, "buildkit_build_last_progress_time_seconds", &labels).unwrap();
    assert!(last >= start_time && last <= now, "last progress {last} is in our past, after the start");
    daemon.stop().await;
    fake.stop();
}

#[tokio::test]
async fn a_buildkitd_with_mutual_tls() {
    use rcgen::ExtendedKeyUsagePurpose;
    use testkit::pki::{issue, Pki};
    let pki = Pki::new();
    pki.write_all();
    let server = issue(&pki.ca, ExtendedKeyUsagePurpose::ServerAuth);
    let lines = fixture::recorded();
    let (fake, address) =
        FakeBuildkit::start_tls(Script::from_recording(&lines, SPEED), &server.cert, &server.key, &pki.ca.pem()).await;
    let files = |dir: &std::path::Path| {
        format!(
            "ca={}&cert={}&key={}&server-name=localhost",
            dir.join("ca.pem").display(),
            dir.join("client.pem").display(),
            dir.join("client-key.pem").display()
        )
    };
    let daemon = Daemon::start(&[&format!("buildkitd+tcp://{address}?{}", files(pki.dir.path()))], |_| {}).await;
    let metrics = eventually(Duration::from_secs(40), "four builds counted over mTLS", || async {
        let m = daemon.metrics().await;
        (all_finished(&m) == 4.0).then_some(m)
    })
    .await;
    assert_eq!(sample(&metrics, "buildkit_exporter_source_up", &[]), Some(1.0));
    daemon.stop().await;

    // A client certificate from another CA is refused: the source stays down, counting nothing.
    let stranger = Pki::new();
    stranger.write_all();
    std::fs::copy(pki.path("ca.pem"), stranger.path("ca.pem")).unwrap();
    let daemon = Daemon::start(&[&format!("buildkitd+tcp://{address}?{}", files(stranger.dir.path()))], |_| {}).await;
    // Refused once the handshake is over: a retry after it shows the refusal was final.
    let m = eventually(Duration::from_secs(10), "a retry after the refusal", || async {
        let m = daemon.metrics().await;
        (sample(&m, "buildkit_exporter_source_reconnects_total", &[]) >= Some(1.0)).then_some(m)
    })
    .await;
    assert_eq!(sample(&m, "buildkit_exporter_source_up", &[]), Some(0.0));
    assert_eq!(all_finished(&m), 0.0);
    daemon.stop().await;
    fake.stop();
}

/// Why the source `builder` is down, once the daemon knows.
async fn reason(daemon: &Daemon, builder: &str) -> String {
    eventually(Duration::from_secs(15), &format!("{builder}'s reason"), || async {
        let (_, list) = daemon.get("/api/v1/sources").await;
        let list: serde_json::Value = serde_json::from_str(&list).unwrap();
        let source = list["sources"].as_array()?.iter().find(|s| s["builder"] == builder)?.clone();
        source["reason"].as_str().map(str::to_string)
    })
    .await
}

/// A TLS server on loopback presenting `chain` (PEM, as it is: rustls' checks would refuse an
/// X.509 v1 certificate before any client did) and serving nothing; its `host:port`.
async fn presenting(chain: &str, key: &str) -> String {
    use rustls::sign::SingleCertAndKey;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(testkit::http::certified(chain, key))));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = acceptor.accept(tcp).await;
        }
    });
    address
}

/// X.509 v1 certificates (what `openssl x509 -req` makes without an extension file) on a TLS
/// source, engine or buildkitd: rustls refuses one as the client's certificate, the source's, or
/// a CA in the source's chain, and the source's reason names it and says how to re-issue it (and
/// the certificate the command makes is taken). A v1 root in `ca=` is trusted, as Go trusts it.
#[tokio::test]
async fn x509_v1_certificates_on_a_tls_source_are_named() {
    use rcgen::ExtendedKeyUsagePurpose;
    use testkit::pki::{follow_reissue_hint, issue, openssl_issue, Pki};
    const SERVER: &str = "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n";
    let pki = Pki::new();
    pki.write_all();
    let ca = pki.ca_issued();
    let files = |ca: &str, cert: &str, key: &str| {
        let path = |name: &str| pki.path(name).display().to_string();
        format!("ca={}&cert={}&key={}&server-name=localhost", path(ca), path(cert), path(key))
    };
    let script = || Script::from_recording(&fixture::recorded(), SPEED);
    let watched = |source: String| async move {
        let daemon = Daemon::start(&[&source], |_| {}).await;
        daemon.source_up(true, Duration::from_secs(30)).await;
        daemon.stop().await;
    };

    // The client's own certificate: named, by its file, before any handshake.
    let old_client = openssl_issue(Some(&ca), "old client", None);
    pki.write("v1-client.pem", &old_client.cert);
    pki.write("v1-client-key.pem", &old_client.key);
    let server = issue(&pki.ca, ExtendedKeyUsagePurpose::ServerAuth);
    let (fake, address) = FakeBuildkit::start_tls(script(), &server.cert, &server.key, &pki.ca.pem()).await;
    let old = files("ca.pem", "v1-client.pem", "v1-client-key.pem");
    let sources = [format!("engine=tcp://{address}?{old}"), format!("buildkitd=buildkitd+tcp://{address}?{old}")];
    let daemon = Daemon::start(&[&sources[0], &sources[1]], |_| {}).await;
    let mut reasons = Vec::new();
    for builder in ["engine", "buildkitd"] {
        let reason = reason(&daemon, builder).await;
        let says = format!(
            "failed: {}: an X.509 v1 certificate (no extensions), which rustls refuses; re-issue it as v3, e.g. \
             openssl x509 -req ",
            pki.path("v1-client.pem").display()
        );
        assert!(reason.contains(&says) && reason.ends_with("<(echo extendedKeyUsage=clientAuth)"), "{reason}");
        reasons.push(reason);
    }
    daemon.stop().await;
    pki.write("v3-client.pem", &follow_reissue_hint(&reasons[1], &ca, &old_client.key, "old client"));
    watched(format!("buildkitd+tcp://{address}?{}", files("ca.pem", "v3-client.pem", "v1-client-key.pem"))).await;
    fake.stop();

    // The source's certificate, or a CA in the chain it presents: named at the handshake.
    let old_server = openssl_issue(Some(&ca), "localhost", None);
    let v1_middle = openssl_issue(Some(&ca), "v1 intermediate CA", None);
    let leaf = openssl_issue(Some(&v1_middle), "localhost", Some(SERVER));
    let ours = files("ca.pem", "client.pem", "client-key.pem");
    let (old, chained) = (
        presenting(&old_server.cert, &old_server.key).await,
        presenting(&format!("{}{}", leaf.cert, v1_middle.cert), &leaf.key).await,
    );
    let sources = [format!("old=buildkitd+tcp://{old}?{ours}"), format!("chained=buildkitd+tcp://{chained}?{ours}")];
    let daemon = Daemon::start(&[&sources[0], &sources[1]], |_| {}).await;
    let reason_old = reason(&daemon, "old").await;
    let says = format!(
        "TLS to buildkitd+tcp://{old} failed: the source's certificate: an X.509 v1 certificate (no extensions), \
         which rustls refuses; re-issue it as v3, e.g. openssl x509 -req "
    );
    assert!(reason_old.starts_with(&says) && reason_old.contains("subjectAltName=DNS:HOST"), "{reason_old}");
    let reason_chained = reason(&daemon, "chained").await;
    let says = format!(
        "TLS to buildkitd+tcp://{chained} failed: certificate 2 of the source's chain: an X.509 v1 certificate (no \
         extensions), which rustls refuses as an intermediate (a v1 root in a CA file is accepted); re-issue it as \
         v3, e.g. openssl x509 -req "
    );
    assert!(reason_chained.starts_with(&says) && reason_chained.contains("CA:TRUE"), "{reason_chained}");
    for reason in [&reason_old, &reason_chained] {
        assert!(!reason.contains("UnsupportedCertVersion") && !reason.contains('\n'), "{reason}");
    }
    daemon.stop().await;
    // The intermediate re-issued as the reason says, for the same key: the chain is taken.
    let middle = follow_reissue_hint(&reason_chained, &ca, &v1_middle.key, "v1 intermediate CA");
    let chain = format!("{}{middle}", leaf.cert);
    let (fake, address) = FakeBuildkit::start_tls(script(), &chain, &leaf.key, &pki.ca.pem()).await;
    watched(format!("buildkitd+tcp://{address}?{ours}")).await;
    fake.stop();

    // A v1 root in ca=: trusted.
    let root = openssl_issue(None, "v1 root CA", None);
    pki.write("v1-root.pem", &root.cert);
    let server = openssl_issue(Some(&root), "localhost", Some(SERVER));
    let (fake, address) = FakeBuildkit::start_tls(script(), &server.cert, &server.key, &pki.ca.pem()).await;
    watched(format!("buildkitd+tcp://{address}?{}", files("v1-root.pem", "client.pem", "client-key.pem"))).await;
    fake.stop();
}

#[tokio::test]
async fn versions_workers_and_cache_are_read_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let script = Script { connections: vec![Connection::default()], speed: SPEED, ..Default::default() };
    let fake = FakeBuildkit::start(dir.path(), script).await;
    let daemon =
        Daemon::start(&[&fake.source()], |config| config.source.usage_interval = Duration::from_millis(200)).await;
    let m = eventually(Duration::from_secs(20), "facts read", || async {
        let m = daemon.metrics().await;
        sample(&m, "buildkit_cache_records", &[]).is_some().then_some(m)
    })
    .await;
    // A standalone buildkitd has no engine: only BuildKit's version.
    assert_eq!(
        sample(
            &m,
            "buildkit_exporter_source_info",
            &[("engine_version", ""), ("buildkit_version", "v0.13.2-fake"), ("api_version", "")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "buildkit_worker_info", &[("worker", "fake-worker"), ("platforms", "linux/amd64,linux/arm64/v8")]),
        Some(1.0)
    );
    // By type, with an unknown type counted as "other"; what a prune frees is what is not in use.
    assert_eq!(sample(&m, "buildkit_cache_bytes", &[("type", "regular")]), Some(1000.0));
    assert_eq!(sample(&m, "buildkit_cache_bytes", &[("type", "exec.cachemount")]), Some(500.0));
    assert_eq!(sample(&m, "buildkit_cache_bytes", &[("type", "other")]), Some(7.0));
    assert_eq!(samples(&m, "buildkit_cache_bytes", &[]).len(), 8, "a bounded set of types");
    assert_eq!(sample(&m, "buildkit_cache_reclaimable_bytes", &[]), Some(1007.0));
    assert_eq!(sample(&m, "buildkit_cache_records", &[]), Some(3.0));
    let (_, sources) = daemon.get("/api/v1/sources").await;
    let sources: serde_json::Value = serde_json::from_str(&sources).unwrap();
    let source = &sources["sources"][0];
    assert_eq!(source["builder"], "default");
    assert_eq!(source["up"], true);
    assert_eq!(source["engine"], serde_json::Value::Null);
    assert_eq!(source["buildkit"]["version"], "v0.13.2-fake");
    assert_eq!(source["buildkit"]["cache"]["reclaimable"], 1007);
    assert!(source["address"].as_str().unwrap().starts_with("buildkitd+unix://"), "{source}");
    daemon.stop().await;
    fake.stop();
}
