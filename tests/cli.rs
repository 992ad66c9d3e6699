//! The binary as users run it: flags, log lines for every way a source can fail, signals, and
//! build-arg values kept out of every output.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use testkit::engine::{self, Context, ENGINE};
use testkit::fake::{Connection, FakeBuildkit, Script};
use testkit::metrics::{finished_builds, sample};
use testkit::{assert_golden, eventually, exporter_binary, fixture, http, Binary};

const FAST_RETRY: Duration = Duration::from_secs(10);
const OPERATOR_RETRY: Duration = Duration::from_secs(35);

#[test]
fn help_is_pinned() {
    let output = std::process::Command::new(exporter_binary!()).arg("--help").output().unwrap();
    assert!(output.status.success());
    assert_golden("help.txt", &String::from_utf8(output.stdout).unwrap());
}

#[test]
fn bad_flags_exit_with_one_line() {
    for args in
        [&["--source", "ssh://builder"][..], &["--web.listen-address", "nowhere"][..], &["--log.level", "chatty=="][..]]
    {
        let output = std::process::Command::new(exporter_binary!()).args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("buildkit-exporter: invalid"), "{stderr}");
    }
}

/// Checks the daemon serves, reports the source down, and logged `expected` once. Errors that
/// need an operator (permission, engine version) retry at the longest delay (up to 30 s):
/// `retry_within` is how long to wait for the first retry.
async fn down_with(binary: &Binary, expected: &str, retry_within: Duration) {
    let line = binary.wait_for_log(expected).await;
    assert!(line.contains("level=warn") && line.contains("msg=\"source down\""), "{line}");
    let m = binary.metrics().await;
    assert_eq!(sample(&m, "buildkit_exporter_source_up", &[]), Some(0.0));
    let (status, body) = http::get(binary.addr, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    // Retries are counted, not logged again.
    eventually(retry_within, "a retry", || async {
        let m = binary.metrics().await;
        (sample(&m, "buildkit_exporter_source_reconnects_total", &[]) >= Some(1.0)).then_some(())
    })
    .await;
    assert_eq!(binary.log().matches(expected).count(), 1, "{}", binary.log());
}

#[tokio::test]
async fn unreachable_socket() {
    let dir = tempfile::tempdir().unwrap();
    let source = format!("unix://{}/docker.sock", dir.path().display());
    let binary = Binary::start(exporter_binary!(), &["--source", &source], &[]);
    down_with(&binary, "no engine at unix://", FAST_RETRY).await;
    assert!(binary.terminate().await.success());
}

#[tokio::test]
async fn permission_denied_on_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("private").join("docker.sock");
    std::fs::create_dir(socket.parent().unwrap()).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::fs::set_permissions(socket.parent().unwrap(), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let source = format!("unix://{}", socket.display());
    // Root may open anything: run as nobody.
    let nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];
    let binary = Binary::start(exporter_binary!(), &["--source", &source], &nobody);
    down_with(&binary, "permission denied on unix://", OPERATOR_RETRY).await;
    assert!(binary.terminate().await.success());
}

#[tokio::test]
async fn engine_too_old() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeBuildkit::start(
        dir.path(),
        Script {
            connections: vec![Connection::default()],
            status: Default::default(),
            speed: 1.0,
            refuse_history: Some(tonic::Status::unimplemented("unknown method ListenBuildHistory")),
            ..Default::default()
        },
    )
    .await;
    let binary = Binary::start(exporter_binary!(), &["--source", &fake.source()], &[]);
    down_with(&binary, "is too old: it has no BuildKit build-history API", OPERATOR_RETRY).await;
    fake.stop();
}

#[tokio::test]
async fn oversized_message() {
    let dir = tempfile::tempdir().unwrap();
    let lines = fixture::recorded();
    let fake = FakeBuildkit::start(dir.path(), Script::from_recording(&lines, 50.0)).await;
    let binary =
        Binary::start(exporter_binary!(), &["--source", &fake.source(), "--source.max-message-bytes", "200"], &[]);
    down_with(&binary, "larger than --source.max-message-bytes", FAST_RETRY).await;
    fake.stop();
}

#[tokio::test]
async fn malformed_stream() {
    // Something that accepts the /grpc upgrade, then speaks garbage instead of HTTP/2.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\nthis is not http/2 at all\r\n")
                    .await;
                let _ = stream.read(&mut buf).await;
            });
        }
    });
    let binary = Binary::start(exporter_binary!(), &["--source", &format!("unix://{}", socket.display())], &[]);
    down_with(&binary, "stream from unix://", FAST_RETRY).await;
}

#[tokio::test]
async fn not_a_docker_engine() {
    // An HTTP server that refuses the upgrade, as an old engine or another service would.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").await;
        }
    });
    let binary = Binary::start(exporter_binary!(), &["--source", &format!("unix://{}", socket.display())], &[]);
    down_with(&binary, "refused the BuildKit /grpc upgrade with HTTP 404", OPERATOR_RETRY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine: run scripts/test.sh"]
async fn build_arg_values_never_leave_the_daemon() {
    let _engine = ENGINE.lock().await;
    let marker = engine::unique("never-show-this");
    let binary = Binary::start(exporter_binary!(), &["--source", &engine::source(), "--log.level", "trace"], &[]);
    binary.wait_for_log("source up").await;
    let name = engine::unique("secretive");
    let context = Context::new(&format!(
        "FROM tinybase:latest\nARG TOKEN\nRUN echo {} && sleep 1\nRUN echo \"$TOKEN\" > /token && sleep 1 && false\n",
        engine::unique("n")
    ));
    let running = engine::Build::start(
        &context,
        &name,
        &["--build-arg", &format!("TOKEN={marker}"), "--label", &format!("org.opencontainers.image.title={name}")],
    );
    let mut scrapes = Vec::new();
    let m = loop {
        let m = binary.metrics().await;
        scrapes.push(m.clone());
        if finished_builds(&m, &name) > 0.0 {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let report = running.finish().await;
    assert!(!report.success);
    assert!(report.raw.contains(&marker), "the client itself does see the value");
    assert_eq!(sample(&m, "buildkit_builds_completed_total", &[("name", &name), ("result", "failed")]), Some(1.0));
    assert!(scrapes.iter().any(|s| s.contains("command=\"echo \\\"***\\\" > /token")), "masked command shown");
    let log = binary.log();
    assert!(log.contains("source up"));
    for (what, text) in [("log", &log), ("metrics", &scrapes.join("\n"))] {
        assert!(!text.contains(&marker), "build-arg value leaked into the {what}");
    }
    assert!(binary.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine: run scripts/test.sh"]
async fn an_engine_behind_tls() {
    let _engine = ENGINE.lock().await;
    let Some((host, certs)) = engine::tls() else {
        assert!(std::env::var_os("CI").is_none(), "CI's private engine listens with TLS");
        eprintln!("skipped: the engine under test is not the private one of scripts/engine-up.sh, which has TLS");
        return;
    };
    // Docker's own conventions: DOCKER_TLS_VERIFY, and the files in DOCKER_CERT_PATH.
    let env = ["env", "DOCKER_TLS_VERIFY=1", &format!("DOCKER_CERT_PATH={certs}")];
    let binary = Binary::start(exporter_binary!(), &["--source", &host], &env);
    binary.wait_for_log("source up").await;
    let name = engine::unique("over-tls");
    let context = Context::new(&format!("FROM tinybase:latest\nRUN echo {} && sleep 1\n", engine::unique("n")));
    let label = format!("{}={name}", engine::NAME_LABEL);
    assert!(engine::build(&context, &name, &["--label", &label]).await.success);
    eventually(Duration::from_secs(30), "the build counted over TLS", || async {
        let m = binary.metrics().await;
        (sample(&m, "buildkit_builds_completed_total", &[("name", &name), ("result", "succeeded")]) == Some(1.0))
            .then_some(())
    })
    .await;
    assert!(!binary.log().contains("key.pem"), "the log names the address, not the files");
    assert!(binary.terminate().await.success());

    // The same files given on the source itself, overriding the environment.
    let url = format!("{host}?ca={certs}/ca.pem&cert={certs}/cert.pem&key={certs}/key.pem");
    let binary = Binary::start(exporter_binary!(), &["--source", &url], &["env", "DOCKER_TLS_VERIFY="]);
    binary.wait_for_log("source up").await;
    assert!(binary.terminate().await.success());

    // Plaintext to the TLS port: one line that says TLS and what to set.
    let plain = Binary::start(exporter_binary!(), &["--source", &host], &["env", "DOCKER_TLS_VERIFY="]);
    let line = plain.wait_for_log("source down").await;
    assert!(line.contains("answers with TLS") && line.contains("DOCKER_TLS_VERIFY"), "{line}");
    assert!(plain.terminate().await.success());

    // No client certificate: the engine refuses the handshake, and the line says so.
    let anonymous = Binary::start(exporter_binary!(), &["--source", &format!("{host}?ca={certs}/ca.pem")], &[]);
    let line = anonymous.wait_for_log("source down").await;
    assert!(line.contains(&format!("TLS to {host} failed")), "{line}");
    assert!(anonymous.terminate().await.success());

    // A CA that did not sign the engine's certificate: refused on our side.
    let foreign = format!("{host}?ca={certs}/cert.pem&cert={certs}/cert.pem&key={certs}/key.pem");
    let stranger = Binary::start(exporter_binary!(), &["--source", &foreign], &[]);
    let line = stranger.wait_for_log("source down").await;
    assert!(line.contains("TLS handshake failed"), "{line}");
    assert!(stranger.terminate().await.success());
}
