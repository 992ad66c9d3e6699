//! The web side, secure by default: TLS, client certificates and basic auth from
//! `--web.config.file` (checked with a real Prometheus and the test kit's TLS client),
//! reloading that file, the response headers, gzip, dual-stack listening, and the limits that
//! keep stalled connections from delaying a scrape. No engine is needed: the daemons here watch
//! a socket that does not exist.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use buildkit_exporter::web::WebConfigFile;
use rcgen::ExtendedKeyUsagePurpose;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use testkit::http::{self, plain, request, tls, tls_client};
use testkit::pki::{ca, follow_reissue_hint, issue, openssl_issue, Pki};
use testkit::prometheus::{Prometheus, Version};
use testkit::{eventually, exporter_binary, Binary, Daemon};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_rustls::TlsConnector;

/// A source that is never there: the web side works without one.
const NO_SOURCE: &str = "unix:///nonexistent.sock";
/// How long a scrape may take while hundreds of stalled connections are held.
const SCRAPE_BUDGET: Duration = Duration::from_secs(1);
/// Stalled connections opened at once.
const STALLED: usize = 300;
/// A header timeout longer than any test, where stalled connections must stay held.
const HOLD: Duration = Duration::from_secs(120);

/// The tests that hold hundreds of sockets run one at a time.
static SOCKETS: Mutex<()> = Mutex::const_new(());

/// Starts an in-process daemon with `web.yml` (written first into `pki`'s directory) as its web
/// config file.
async fn daemon_with(pki: &Pki, web_yml: &str, tune: impl FnOnce(&mut buildkit_exporter::config::Config)) -> Daemon {
    pki.write("web.yml", web_yml);
    let file = WebConfigFile::open(&pki.path("web.yml")).expect("valid web config");
    Daemon::start(&[NO_SOURCE], |config| {
        config.web.config_file = Some(file);
        tune(config);
    })
    .await
}

/// A cheap bcrypt hash (cost 4): tests check behaviour, not the cost.
fn hash(password: &str) -> String {
    bcrypt::hash(password, 4).unwrap()
}

const TLS_CONFIG: &str = "tls_server_config:\n  cert_file: server.pem\n  key_file: server-key.pem\n";

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

fn read_pem(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

// --- TLS, basic auth, client certificates -----------------------------------------------------

/// Prometheus 2 and 3 alike: TLS and basic auth are what each version's scraper does.
mod prometheus_scrapes_over_tls_with_basic_auth {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs Prometheus 2: run scripts/test.sh"]
    async fn prometheus_2() {
        scrape_over_tls_with_basic_auth(Version::V2).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs Prometheus 3: run scripts/test.sh"]
    async fn prometheus_3() {
        scrape_over_tls_with_basic_auth(Version::V3).await;
    }
}

async fn scrape_over_tls_with_basic_auth(version: Version) {
    let pki = Pki::new();
    pki.write_all();
    let users = format!("basic_auth_users:\n  prometheus: {}\n", hash("scrape-secret"));
    let daemon = daemon_with(&pki, &format!("{TLS_CONFIG}{users}"), |_| {}).await;
    let job = |name: &str, password: &str| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    scrape_interval: 1s\n    scrape_timeout: 1s\n    \
             tls_config:\n      ca_file: ca.pem\n      server_name: localhost\n    \
             basic_auth:\n      username: prometheus\n      password: {password}\n    \
             static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            daemon.addr.port()
        )
    };
    let config = format!(
        "global:\n  evaluation_interval: 1s\nscrape_configs:\n{}{}",
        job("exporter", "scrape-secret"),
        job("wrong-password", "guessed")
    );
    let prometheus = Prometheus::start_on(version, &config, &[("ca.pem", &read_pem(&pki.path("ca.pem")))]).await;
    eventually(Duration::from_secs(30), "Prometheus scraping over TLS with basic auth", || async {
        let up = prometheus.query("up{job=\"exporter\"} == 1").await;
        let info = prometheus.query("buildkit_exporter_build_info").await;
        let refused = prometheus.query("up{job=\"wrong-password\"} == 0").await;
        (!up.is_empty() && !info.is_empty() && !refused.is_empty()).then_some(())
    })
    .await;
    let refused = prometheus.query("count(buildkit_exporter_build_info{job=\"wrong-password\"})").await;
    assert!(refused.is_empty(), "a wrong password scraped nothing: {refused:?}");
    prometheus.stop().await;
    daemon.stop().await;
}

#[tokio::test]
async fn a_wrong_or_missing_password_gets_401() {
    let pki = Pki::new();
    pki.write_all();
    let users = format!("basic_auth_users:\n  alice: {}\n  bob: {}\n", hash("alice-pw"), hash("bob-pw"));
    let headers = "http_server_config:\n  headers:\n    Strict-Transport-Security: max-age=31536000\n";
    let daemon = daemon_with(&pki, &format!("{TLS_CONFIG}{users}{headers}"), |_| {}).await;
    let client = tls_client(pki.ca_der(), None);
    for (what, credentials) in [
        ("no password", None),
        ("a wrong password", Some(basic("alice", "bob-pw"))),
        ("an unknown user", Some(basic("mallory", "alice-pw"))),
        ("an empty password", Some(basic("alice", ""))),
        ("another scheme", Some("Bearer alice-pw".to_string())),
    ] {
        let extra: Vec<(&str, &str)> = credentials.iter().map(|c| ("Authorization", c.as_str())).collect();
        for path in ["/metrics", "/", "/api/v1/builds", "/healthz"] {
            let reply = tls(daemon.addr, &client, &request(path, &extra)).await.unwrap();
            assert_eq!(reply.status, 401, "{what} on {path}: {reply:?}");
            let challenge = reply.header("www-authenticate").unwrap_or_default();
            assert!(challenge.starts_with("Basic"), "{what}: WWW-Authenticate {challenge:?}");
            assert!(!reply.text().contains("buildkit_"), "{what}: {}", reply.text());
            assert_eq!(reply.header("strict-transport-security"), Some("max-age=31536000"), "{what}");
            assert_eq!(reply.header("x-content-type-options"), Some("nosniff"), "{what}");
        }
    }
    for (user, password) in [("alice", "alice-pw"), ("bob", "bob-pw"), ("alice", "alice-pw")] {
        let reply = tls(daemon.addr, &client, &request("/metrics", &[("Authorization", &basic(user, password))]))
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{user}");
        assert!(reply.text().contains("buildkit_exporter_build_info"), "{}", reply.text());
    }
    daemon.stop().await;
}

#[tokio::test]
async fn client_certificates_as_exporter_toolkit_defines_them() {
    let pki = Pki::new();
    pki.write_all();
    let stranger = issue(&ca("another CA"), ExtendedKeyUsagePurpose::ClientAuth);
    let ours = (read_pem(&pki.path("client.pem")), read_pem(&pki.path("client-key.pem")));
    let with_ours = tls_client(pki.ca_der(), Some((&ours.0, &ours.1)));
    let with_stranger = tls_client(pki.ca_der(), Some((&stranger.cert, &stranger.key)));
    let without = tls_client(pki.ca_der(), None);
    // (client_auth_type, [our CA's certificate, another CA's, none] → served?)
    for (policy, expected) in [
        ("RequireAndVerifyClientCert", [true, false, false]),
        ("VerifyClientCertIfGiven", [true, false, true]),
        ("RequireAnyClientCert", [true, true, false]),
        ("RequestClientCert", [true, true, true]),
        ("NoClientCert", [true, true, true]),
    ] {
        let ca = if policy == "NoClientCert" { "" } else { "  client_ca_file: ca.pem\n" };
        let daemon = daemon_with(&pki, &format!("{TLS_CONFIG}  client_auth_type: {policy}\n{ca}"), |_| {}).await;
        for ((who, client), served) in
            [("our CA's certificate", &with_ours), ("another CA's", &with_stranger), ("none", &without)]
                .into_iter()
                .zip(expected)
        {
            let reply = tls(daemon.addr, client, &request("/metrics", &[])).await;
            match (served, reply) {
                (true, Ok(reply)) => assert_eq!(reply.status, 200, "{policy}, {who}: {reply:?}"),
                (false, Err(_)) => {}
                (served, reply) => panic!("{policy}, {who}: expected served={served}, got {reply:?}"),
            }
        }
        daemon.stop().await;
    }
}

/// rustls refuses a scraper's X.509 v1 certificate (what `openssl x509 -req` makes without an
/// extension file), whoever issued it, where Go would take it: the log line says so and how to
/// re-issue it. A v1 root as `client_ca_file` is trusted, as Go trusts it.
#[tokio::test]
async fn a_scrapers_x509_v1_certificate_is_named_and_a_v1_client_ca_trusted() {
    let pki = Pki::new();
    pki.write_all();
    let root = openssl_issue(None, "v1 client CA", None);
    pki.write("clients-ca.pem", &root.cert);
    let current = openssl_issue(Some(&root), "scraper", Some("extendedKeyUsage=clientAuth\n"));
    let old = openssl_issue(Some(&root), "old scraper", None);
    let with_current = tls_client(pki.ca_der(), Some((&current.cert, &current.key)));
    let with_old = tls_client(pki.ca_der(), Some((&old.cert, &old.key)));
    for policy in ["RequireAndVerifyClientCert", "RequireAnyClientCert"] {
        pki.write("web.yml", &format!("{TLS_CONFIG}  client_auth_type: {policy}\n  client_ca_file: clients-ca.pem\n"));
        let web_yml = pki.path("web.yml").display().to_string();
        let args = ["--source", NO_SOURCE, "--log.level", "debug", "--web.config.file", &web_yml];
        let binary = Binary::start(exporter_binary!(), &args, &[]);
        let reply = tls(binary.addr, &with_current, &request("/metrics", &[])).await;
        assert_eq!(reply.map(|r| r.status).ok(), Some(200), "{policy}: a v3 certificate from the v1 CA");
        assert!(tls(binary.addr, &with_old, &request("/metrics", &[])).await.is_err(), "{policy}: a v1 certificate");
        let line = binary.wait_for_log("TLS handshake failed").await;
        let says = "the client's certificate: an X.509 v1 certificate (no extensions), which rustls refuses; \
                    re-issue it as v3, e.g. openssl x509 -req ";
        assert!(line.contains(says) && line.contains("extendedKeyUsage=clientAuth"), "{policy}: {line}");
        assert!(!line.contains("UnsupportedCertVersion"), "{policy}: {line}");
    }
}

#[tokio::test]
async fn plain_http_on_the_tls_port_gets_no_metrics() {
    let pki = Pki::new();
    pki.write_all();
    let daemon = daemon_with(&pki, TLS_CONFIG, |_| {}).await;
    let reply = plain(daemon.addr, &request("/metrics", &[])).await.unwrap();
    assert_eq!(reply.status, 400);
    assert_eq!(reply.text(), "Client sent an HTTP request to an HTTPS server.\n");
    let reply = tls(daemon.addr, &tls_client(pki.ca_der(), None), &request("/metrics", &[])).await.unwrap();
    assert_eq!(reply.status, 200, "while TLS is served");
    daemon.stop().await;
}

#[tokio::test]
async fn min_version_tls13_refuses_tls12() {
    let pki = Pki::new();
    pki.write_all();
    let daemon = daemon_with(&pki, &format!("{TLS_CONFIG}  min_version: TLS13\n"), |_| {}).await;
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca_der()).unwrap();
    let tls12 = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    assert!(tls(daemon.addr, &Arc::new(tls12), &request("/metrics", &[])).await.is_err());
    let reply = tls(daemon.addr, &tls_client(pki.ca_der(), None), &request("/metrics", &[])).await.unwrap();
    assert_eq!(reply.status, 200);
    daemon.stop().await;
}

// --- the file: broken at startup, changed while running ---------------------------------------

#[test]
fn a_broken_file_stops_the_daemon_with_one_line() {
    let pki = Pki::new();
    pki.write_all();
    let cases = [
        (
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server-key.pem\n  ciphers: [x]\n",
            "unknown field `ciphers`",
        ),
        ("basic_auth_users: {alice: x\n", "did not find expected ',' or '}' at line 2 column 1"),
        ("tls_server_config:\n  cert_file: missing.pem\n  key_file: server-key.pem\n", "missing.pem: No such file"),
        ("tls_server_config:\n  cert_file: server.pem\n", "needs both cert_file and key_file"),
        ("tls_server_config:\n  cert_file: server.pem\n  key_file: client-key.pem\n", "cert_file"),
        ("tls_server_config:\n  cert_file: ca.pem\n  key_file: ca.pem\n", "no PEM private key"),
        (&format!("{TLS_CONFIG}  client_ca_file: ca.pem\n"), "client_auth_type is not"),
        (&format!("{TLS_CONFIG}  client_auth_type: RequireAndVerifyClientCert\n"), "needs client_ca_file"),
        (&format!("{TLS_CONFIG}  min_version: TLS10\n"), "unknown variant `TLS10`"),
        ("basic_auth_users:\n  alice: hunter2\n", "basic_auth_users.alice: not a bcrypt hash"),
        ("http_server_config:\n  headers:\n    Content-Type: text/html\n", "sets this header itself"),
    ];
    for (content, problem) in cases {
        pki.write("web.yml", content);
        let (status, stderr) = refused_web_config(&pki);
        assert_ne!(status, Some(0), "{content:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{content:?}: {stderr}");
        let file = pki.path("web.yml").display().to_string();
        assert!(stderr.starts_with(&format!("buildkit-exporter: invalid --web.config.file {file}: ")), "{stderr}");
        assert!(stderr.contains(problem), "{content:?}: expected {problem:?} in {stderr}");
        assert!(!stderr.contains("hunter2"), "a password is never shown: {stderr}");
    }
    let missing = pki.path("nowhere.yml");
    let output =
        std::process::Command::new(exporter_binary!()).arg("--web.config.file").arg(&missing).output().unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_ne!(output.status.code(), Some(0));
    assert!(stderr.contains(&format!("{}: No such file", missing.display())), "{stderr}");
}

/// Runs the daemon with the pki's `web.yml`, which should stop it: its exit code and stderr.
fn refused_web_config(pki: &Pki) -> (Option<i32>, String) {
    let output = std::process::Command::new(exporter_binary!())
        .args(["--source", NO_SOURCE, "--web.listen-address", "127.0.0.1:0", "--web.config.file"])
        .arg(pki.path("web.yml"))
        .output()
        .unwrap();
    (output.status.code(), String::from_utf8(output.stderr).unwrap())
}

/// An X.509 v1 server certificate (what `openssl x509 -req` makes without an extension file)
/// stops the daemon with one line naming the file, and the command that line gives makes one
/// the daemon serves with.
#[tokio::test]
async fn an_x509_v1_server_certificate_stops_the_daemon_saying_how_to_reissue_it() {
    let pki = Pki::new();
    pki.write_all();
    let ca = pki.ca_issued();
    let v1 = openssl_issue(Some(&ca), "localhost", None);
    pki.write("v1.pem", &v1.cert);
    pki.write("v1-key.pem", &v1.key);
    pki.write("web.yml", "tls_server_config:\n  cert_file: v1.pem\n  key_file: v1-key.pem\n");
    let (status, stderr) = refused_web_config(&pki);
    assert_eq!(status, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let says = format!(
        "buildkit-exporter: invalid --web.config.file {}: tls_server_config.cert_file v1.pem: an X.509 v1 \
         certificate (no extensions), which rustls refuses; re-issue it as v3, e.g. openssl x509 -req ",
        pki.path("web.yml").display()
    );
    assert!(stderr.starts_with(&says), "{stderr}");

    // The command, run as a user would, makes a certificate for the same key that is served.
    pki.write("CERT.pem", &follow_reissue_hint(&stderr, &ca, &v1.key, "localhost"));
    let daemon = daemon_with(&pki, "tls_server_config:\n  cert_file: CERT.pem\n  key_file: v1-key.pem\n", |_| {}).await;
    let reply = tls(daemon.addr, &tls_client(pki.ca_der(), None), &request("/healthz", &[])).await.unwrap();
    assert_eq!(reply.status, 200);
    daemon.stop().await;
}

#[tokio::test]
async fn changes_are_picked_up_without_a_restart() {
    let pki = Pki::new();
    let file = pki.path("web.yml");
    pki.write("web.yml", &format!("basic_auth_users:\n  alice: {}\n", hash("alice-pw")));
    let binary =
        Binary::start(exporter_binary!(), &["--source", NO_SOURCE, "--web.config.file", file.to_str().unwrap()], &[]);
    let status = |user: &'static str, password: &'static str| {
        let addr = binary.addr;
        async move { plain(addr, &request("/metrics", &[("Authorization", &basic(user, password))])).await.unwrap().status }
    };
    assert_eq!(status("alice", "alice-pw").await, 200);
    assert_eq!(status("bob", "bob-pw").await, 401);

    pki.write("web.yml", &format!("basic_auth_users:\n  bob: {}\n", hash("bob-pw")));
    eventually(Duration::from_secs(10), "bob let in", || async {
        (status("bob", "bob-pw").await == 200).then_some(())
    })
    .await;
    assert_eq!(status("alice", "alice-pw").await, 401, "alice is gone");
    binary.wait_for_log("web config reloaded").await;

    // A broken version: one warning naming the file and the problem, and bob still served.
    pki.write("web.yml", "basic_auth_users:\n  bob: not-a-hash\n");
    // The file is looked at as connections arrive.
    let warning = eventually(Duration::from_secs(10), "a warning about the broken file", || async {
        assert_eq!(status("bob", "bob-pw").await, 200, "the last good version stays in force");
        binary.log().lines().find(|l| l.contains("web config not reloaded")).map(str::to_string)
    })
    .await;
    assert!(warning.contains("level=warn"), "{warning}");
    assert!(warning.contains(&file.display().to_string()), "{warning}");
    assert!(warning.contains("basic_auth_users.bob: not a bcrypt hash"), "{warning}");
    let deadline = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < deadline {
        assert_eq!(status("bob", "bob-pw").await, 200, "the last good version stays in force");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(binary.log().matches("web config not reloaded").count(), 1, "{}", binary.log());

    // Fixed again: taken, and alice is back.
    pki.write("web.yml", &format!("basic_auth_users:\n  alice: {}\n", hash("alice-pw")));
    eventually(Duration::from_secs(10), "alice let in again", || async {
        (status("alice", "alice-pw").await == 200).then_some(())
    })
    .await;
    assert!(binary.terminate().await.success());
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let pki = Pki::new();
    pki.write_all();
    let daemon = daemon_with(&pki, TLS_CONFIG, |_| {}).await;
    let old = tls_client(pki.ca_der(), None);
    assert_eq!(tls(daemon.addr, &old, &request("/healthz", &[])).await.unwrap().status, 200);
    // A new CA issues the new certificate: only a client trusting it can tell the change.
    let renewed = ca("renewed CA");
    let server = issue(&renewed, ExtendedKeyUsagePurpose::ServerAuth);
    pki.write("server-key.pem", &server.key);
    pki.write("server.pem", &server.cert);
    let new = tls_client(renewed.der().clone(), None);
    eventually(Duration::from_secs(10), "the renewed certificate served", || async {
        tls(daemon.addr, &new, &request("/healthz", &[])).await.ok().filter(|r| r.status == 200)
    })
    .await;
    assert!(tls(daemon.addr, &old, &request("/healthz", &[])).await.is_err(), "the old one is gone");
    daemon.stop().await;
}

// --- headers and gzip ---------------------------------------------------------------------------

#[tokio::test]
async fn strict_headers_on_every_response() {
    let daemon = Daemon::start(&[NO_SOURCE], |_| {}).await;
    let page = plain(daemon.addr, &request("/", &[])).await.unwrap();
    assert_eq!(page.status, 200);
    let policy = page.header("content-security-policy").expect("a CSP on the page");
    for directive in [
        "default-src 'none'",
        "script-src 'sha256-",
        "style-src 'sha256-",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ] {
        assert!(policy.contains(directive), "{directive} missing from {policy}");
    }
    assert!(!policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"), "{policy}");
    for path in ["/", "/api/v1/builds", "/api/v1/builds/nope", "/metrics", "/healthz", "/nowhere"] {
        let reply = plain(daemon.addr, &request(path, &[])).await.unwrap();
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"), "{path}");
        assert_eq!(reply.header("x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(reply.header("referrer-policy"), Some("no-referrer"), "{path}");
        let policy = reply.header("content-security-policy").unwrap_or_default();
        assert!(policy.contains("frame-ancestors 'none'"), "{path}: {policy}");
        if path != "/" {
            assert!(policy.starts_with("default-src 'none'") && !policy.contains("script-src"), "{path}: {policy}");
        }
    }
    daemon.stop().await;

    // Configured headers are added to every response, and may replace the daemon's own.
    let pki = Pki::new();
    let headers = "http_server_config:\n  headers:\n    Strict-Transport-Security: max-age=63072000\n    \
                   X-Frame-Options: SAMEORIGIN\n";
    let daemon = daemon_with(&pki, headers, |_| {}).await;
    for path in ["/", "/api/v1/builds", "/metrics", "/nowhere"] {
        let reply = plain(daemon.addr, &request(path, &[])).await.unwrap();
        assert_eq!(reply.header("strict-transport-security"), Some("max-age=63072000"), "{path}");
        assert_eq!(reply.header("x-frame-options"), Some("SAMEORIGIN"), "{path}");
    }
    daemon.stop().await;
}

#[tokio::test]
async fn gzip_when_the_scraper_asks() {
    let daemon = Daemon::start(&[NO_SOURCE], |_| {}).await;
    for path in ["/metrics", "/api/v1/builds", "/"] {
        let identity = plain(daemon.addr, &request(path, &[])).await.unwrap();
        assert_eq!(identity.header("content-encoding"), None, "{path}");
        assert_eq!(identity.header("vary"), Some("Accept-Encoding"), "{path}");
        let packed = plain(daemon.addr, &request(path, &[("Accept-Encoding", "gzip, deflate")])).await.unwrap();
        assert_eq!(packed.header("content-encoding"), Some("gzip"), "{path}");
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&packed.body[..]), &mut text).unwrap();
        let head = |s: &str| s.lines().find(|l| l.starts_with("# HELP") || l.starts_with('<')).map(str::to_string);
        match path {
            "/api/v1/builds" => {
                let json: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert!(json["builds"].is_array(), "{text}");
            }
            _ => assert_eq!(head(&text), head(&identity.text()), "{path}"),
        }
        let refused = plain(daemon.addr, &request(path, &[("Accept-Encoding", "gzip;q=0")])).await.unwrap();
        assert_eq!(refused.header("content-encoding"), None, "{path}");
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium: run scripts/test.sh"]
async fn the_status_page_runs_under_its_policy_in_a_real_browser() {
    let daemon = Daemon::start(&[NO_SOURCE], |_| {}).await;
    let browser = testkit::browser::Browser::start(900, 700).await;
    browser.open(&format!("http://{}/", daemon.addr)).await;
    // The inline script ran and fetched the JSON API (connect-src 'self'); the inline style
    // applied (the browser's default body margin is 8px).
    let seen = eventually(Duration::from_secs(20), "the page drawn under its CSP", || async {
        let seen = browser
            .eval(
                "return { updated: document.getElementById('updated').textContent,
                          running: document.getElementById('running').textContent,
                          margin: getComputedStyle(document.body).marginTop };",
            )
            .await;
        seen["updated"].as_str().is_some_and(|t| t.starts_with("updated ")).then_some(seen)
    })
    .await;
    assert_eq!(seen["margin"], "0px", "{seen}");
    // The script drew the list, and said the only source is down.
    assert!(seen["running"].as_str().unwrap().contains("1 source is down"), "{seen}");
    browser.stop().await;
    daemon.stop().await;
}

// --- listening ------------------------------------------------------------------------------------

#[tokio::test]
async fn a_bare_port_listens_on_ipv4_and_ipv6() {
    let binary = Binary::start(exporter_binary!(), &["--source", NO_SOURCE, "--web.listen-address", ":0"], &[]);
    let line = eventually(Duration::from_secs(10), "the :0 listener", || async {
        binary.log().lines().find(|l| l.contains("address=[::]:") || l.contains("address=0.0.0.0:")).map(str::to_string)
    })
    .await;
    let port: u16 = line.rsplit(':').next().unwrap().trim().parse().unwrap();
    let (status, _) = http::get(SocketAddr::from(([127, 0, 0, 1], port)), "/healthz").await;
    assert_eq!(status, 200, "IPv4");
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        println!("note: this host cannot bind ::1, so the IPv6 half is not checked");
    } else {
        assert!(line.contains("address=[::]:"), "with IPv6 here, :0 binds [::]: {line}");
        let (status, _) = http::get(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)), "/healthz").await;
        assert_eq!(status, 200, "IPv6");
    }
    assert!(binary.terminate().await.success());
}

// --- stalled clients ----------------------------------------------------------------------------

/// The first bytes of a request whose headers never end.
const HALF_REQUEST: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nUser-Agent: stall";

/// A TLS record header announcing a 512-byte ClientHello, and the start of it.
const HALF_CLIENT_HELLO: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0x42, 0x42];

/// Opens `count` connections to `addr`, each sending `bytes` and nothing more.
async fn stall(addr: SocketAddr, count: usize, bytes: &[u8]) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(count);
    for _ in 0..count {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(bytes).await.unwrap();
        streams.push(stream);
    }
    streams
}

/// How many of `streams` the server has not closed (bytes it sent, such as TLS session tickets,
/// are read past).
async fn still_open(streams: &[TcpStream]) -> usize {
    // Let closes in flight arrive.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut buf = [0u8; 4096];
    let mut open = |stream: &TcpStream| loop {
        match stream.try_read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => continue,
            Err(e) => return e.kind() == std::io::ErrorKind::WouldBlock,
        }
    };
    streams.iter().filter(|s| open(s)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_requests_never_delay_a_scrape() {
    let _sockets = SOCKETS.lock().await;
    let daemon = Daemon::start(&[NO_SOURCE], |c| c.web.header_timeout = HOLD).await;
    let stalled = stall(daemon.addr, STALLED, HALF_REQUEST).await;
    for _ in 0..3 {
        let started = Instant::now();
        let reply = plain(daemon.addr, &request("/metrics", &[])).await.unwrap();
        let took = started.elapsed();
        assert_eq!(reply.status, 200);
        assert!(took < SCRAPE_BUDGET, "a scrape took {took:?} with {STALLED} stalled connections");
    }
    let open = still_open(&stalled).await;
    assert!((200..=256).contains(&open), "{open} stalled connections held (at most --web.max-connections)");
    drop(stalled);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshakes_never_delay_a_scrape() {
    let _sockets = SOCKETS.lock().await;
    let pki = Pki::new();
    pki.write_all();
    let users = format!("basic_auth_users:\n  prometheus: {}\n", hash("scrape-secret"));
    let daemon = daemon_with(&pki, &format!("{TLS_CONFIG}{users}"), |c| c.web.header_timeout = HOLD).await;
    let client = tls_client(pki.ca_der(), None);
    let scrape = request("/metrics", &[("Authorization", &basic("prometheus", "scrape-secret"))]);
    // Half of them stop inside the ClientHello, half after the handshake, inside the headers.
    let mut stalled = stall(daemon.addr, STALLED / 2, HALF_CLIENT_HELLO).await;
    for _ in 0..STALLED / 2 {
        let tcp = TcpStream::connect(daemon.addr).await.unwrap();
        let mut stream =
            TlsConnector::from(client.clone()).connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
        stream.write_all(HALF_REQUEST).await.unwrap();
        stream.flush().await.unwrap();
        stalled.push(stream.into_inner().0);
    }
    for _ in 0..3 {
        let started = Instant::now();
        let reply = tls(daemon.addr, &client, &scrape).await.unwrap();
        let took = started.elapsed();
        assert_eq!(reply.status, 200);
        assert!(took < SCRAPE_BUDGET, "a TLS scrape took {took:?} with {STALLED} stalled connections");
    }
    let open = still_open(&stalled).await;
    assert!((200..=256).contains(&open), "{open} stalled connections held (at most --web.max-connections)");
    drop(stalled);
    daemon.stop().await;
}

#[tokio::test]
async fn stalled_connections_are_closed_after_the_header_timeout() {
    let timeout = Duration::from_secs(1);
    let pki = Pki::new();
    pki.write_all();
    let plain_daemon = Daemon::start(&[NO_SOURCE], |c| c.web.header_timeout = timeout).await;
    let tls_daemon = daemon_with(&pki, TLS_CONFIG, |c| c.web.header_timeout = timeout).await;

    let mut cases: Vec<(&str, Instant, TcpStream)> = Vec::new();
    cases.push(("half a request", Instant::now(), stall(plain_daemon.addr, 1, HALF_REQUEST).await.remove(0)));
    cases.push(("nothing at all", Instant::now(), TcpStream::connect(plain_daemon.addr).await.unwrap()));
    cases.push(("half a ClientHello", Instant::now(), stall(tls_daemon.addr, 1, HALF_CLIENT_HELLO).await.remove(0)));
    // Idle after a complete request on a keep-alive connection.
    let mut idle = TcpStream::connect(plain_daemon.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 512];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"), "kept alive after a 200");
    cases.push(("idle after a response", Instant::now(), idle));
    let mut waits = tokio::task::JoinSet::new();
    for (what, since, mut stream) in cases {
        waits.spawn(async move {
            // Whatever the server says (nothing, or an error status), it ends with a close.
            let mut buf = [0u8; 1024];
            let closed = async {
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            };
            let closed = tokio::time::timeout(Duration::from_secs(15), closed).await;
            (what, closed.is_ok(), since.elapsed())
        });
    }
    while let Some(waited) = waits.join_next().await {
        let (what, closed, took) = waited.unwrap();
        assert!(closed, "{what}: still open after 15 s");
        assert!(took >= timeout / 2, "{what}: closed after {took:?}, before the timeout");
    }
    plain_daemon.stop().await;
    tls_daemon.stop().await;
}

#[tokio::test]
async fn past_the_connection_limit_the_longest_waiting_makes_room() {
    let _sockets = SOCKETS.lock().await;
    let daemon = Daemon::start(&[NO_SOURCE], |c| c.web.max_connections = 8).await;
    let stalled = stall(daemon.addr, 20, HALF_REQUEST).await;
    let reply = plain(daemon.addr, &request("/metrics", &[])).await.unwrap();
    assert_eq!(reply.status, 200);
    let open = still_open(&stalled).await;
    assert!(open <= 8, "{open} held with --web.max-connections 8");
    // The newest are the ones kept.
    let mut buf = [0u8; 8];
    assert!(matches!(stalled[19].try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock));
    daemon.stop().await;
}
