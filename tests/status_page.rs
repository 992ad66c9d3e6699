//! The status page and the JSON API during real builds on a real engine, the page in a real
//! headless browser.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use support::browser::Browser;
use support::engine::{self, build, ml_dockerfile, Build, Context, ENGINE};
use support::{eventually, Daemon};

const LABEL: &str = engine::NAME_LABEL;

async fn daemon() -> Daemon {
    Daemon::on_engine().await
}

async fn json(daemon: &Daemon, path: &str) -> (u16, Value) {
    let (status, body) = daemon.get(path).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// The newest build called `name` in `/api/v1/builds`.
async fn find(daemon: &Daemon, name: &str) -> Option<Value> {
    let (_, list) = json(daemon, "/api/v1/builds").await;
    list["builds"].as_array()?.iter().find(|b| b["name"] == name).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_api_follows_real_builds() {
    let _engine = ENGINE.lock().await;
    let daemon = daemon().await;
    let name = engine::unique("api");
    let marker = engine::unique("api-marker");
    let context = Context::new(&ml_dockerfile(&engine::unique("nonce"), "0.4"));
    let args = ["--label", &format!("{LABEL}={name}"), "--build-arg", &format!("TOKEN={marker}")];
    let running = Build::start(&context, &format!("{name}:v1"), &args);
    let first = eventually(Duration::from_secs(30), "build listed", || find(&daemon, &name)).await;
    let reference = first["ref"].as_str().unwrap().to_string();
    let mut current_steps = Vec::new();
    let mut bodies = Vec::new();
    loop {
        let (status, detail) = json(&daemon, &format!("/api/v1/builds/{reference}")).await;
        assert_eq!(status, 200);
        bodies.push(detail.to_string());
        if detail["state"] != "running" {
            break;
        }
        if detail["steps"]["total"] == 0 {
            // Just started: the Dockerfile is not parsed yet.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        assert_eq!(detail["steps"]["total"], 15, "{detail}");
        assert_eq!(detail["step_list"].as_array().unwrap().len(), 15);
        let step = detail["current_step"].as_u64().unwrap();
        if current_steps.last() != Some(&step) {
            current_steps.push(step);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let report = running.finish().await;
    assert!(report.success);
    assert!(current_steps.windows(2).all(|w| w[0] <= w[1]) && current_steps.len() >= 8, "{current_steps:?}");
    let (_, done) = json(&daemon, &format!("/api/v1/builds/{reference}")).await;
    assert_eq!(done["state"], "succeeded");
    assert_eq!(done["tag"], format!("{name}:v1"));
    assert_eq!(done["steps"]["total"], 15);
    assert_eq!(done["steps"]["completed"], 15);
    assert_eq!(done["steps"]["cached"], report.cached_steps());
    let states: BTreeSet<&str> =
        done["step_list"].as_array().unwrap().iter().map(|s| s["state"].as_str().unwrap()).collect();
    assert!(states.iter().all(|s| *s == "done" || *s == "cached"), "{states:?}");
    let duration = done["duration_seconds"].as_f64().unwrap();
    assert!(duration <= report.wall_seconds && duration > report.wall_seconds - 2.0);
    // Durations of each step are BuildKit's, as the client saw them.
    let api_total: f64 = done["step_list"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"] == "done")
        .map(|s| s["duration_seconds"].as_f64().unwrap())
        .sum();
    let client_total: f64 = report.executed_durations().iter().sum();
    assert!((api_total - client_total).abs() < 0.01, "{api_total} vs {client_total}");

    // A failing build: the failing step and BuildKit's message, with the build-arg masked.
    let failing = engine::unique("api-failing");
    let context = Context::new(&format!(
        "FROM tinybase:latest\nARG TOKEN\nRUN echo {}\nRUN echo $TOKEN && exit 3\n",
        engine::unique("nonce")
    ));
    let report = build(
        &context,
        &failing,
        &["--label", &format!("{LABEL}={failing}"), "--build-arg", &format!("TOKEN={marker}")],
    )
    .await;
    assert!(!report.success);
    let failed = eventually(Duration::from_secs(15), "failed build listed", || async {
        find(&daemon, &failing).await.filter(|b| b["state"] == "failed")
    })
    .await;
    assert_eq!(failed["error"]["step"], "[3/3]", "{failed}");
    let message = failed["error"]["message"].as_str().unwrap();
    assert!(message.contains("exit code: 3"), "{message}");
    assert_eq!(json(&daemon, "/api/v1/builds/no-such-ref").await.0, 404);

    let (_, list) = daemon.get("/api/v1/builds").await;
    let (_, page) = daemon.get("/").await;
    bodies.extend([list, page]);
    for body in &bodies {
        assert!(!body.contains(&marker), "build-arg value leaked: {body}");
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_updates_itself_in_a_real_browser() {
    let _engine = ENGINE.lock().await;
    let daemon = daemon().await;
    let name = engine::unique("page");
    let context = Context::new(&ml_dockerfile(&engine::unique("nonce"), "0.6"));
    let args = ["--label", &format!("{LABEL}={name}")];
    // A first build teaches the step durations: the second has an ETA.
    assert!(build(&context, &format!("{name}:latest"), &args).await.success);
    let no_cache: Vec<&str> = args.iter().copied().chain(["--no-cache"]).collect();

    let browser = Browser::start(1100, 1500).await;
    browser.open(&format!("http://{}/", daemon.addr)).await;
    browser.eval("window.__loadedOnce = 'yes'; return 1;").await;
    let running = Build::start(&context, &format!("{name}:latest"), &no_cache);
    let mut counters = BTreeSet::new();
    let mut currents = BTreeSet::new();
    let mut etas = BTreeSet::new();
    let mut screenshot = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        let seen = browser
            .eval(
                "const card = document.querySelector('#running [data-ref]');
                 if (!card) return null;
                 return { counter: card.querySelector('.step-counter').textContent,
                          current: card.querySelector('.current').textContent,
                          eta: card.querySelector('.eta').textContent,
                          steps: card.querySelectorAll('ol.steps li').length,
                          order: [...card.querySelectorAll('ol.steps li .cmd')].map(e => e.textContent.split(']')[0] + ']'),
                          title: card.querySelector('h3').textContent,
                          marker: window.__loadedOnce };",
            )
            .await;
        if seen.is_null() {
            if !counters.is_empty() {
                break;
            }
        } else {
            assert_eq!(seen["marker"], "yes", "the page reloaded");
            assert!(seen["title"].as_str().unwrap().contains("RUNNING"), "{seen}");
            assert_eq!(seen["steps"], 15, "{seen}");
            // In Dockerfile order, whatever the steps' states.
            let order: Vec<String> = (1..=15).map(|i| format!("[{i}/15]")).collect();
            assert_eq!(seen["order"], serde_json::json!(order), "{seen}");
            counters.insert(seen["counter"].as_str().unwrap().to_string());
            currents.insert(seen["current"].as_str().unwrap().to_string());
            etas.insert(seen["eta"].as_str().unwrap().to_string());
            if screenshot.is_none() && counters.len() >= 6 {
                screenshot = Some(browser.screenshot().await);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(running.finish().await.success);
    assert!(counters.len() >= 5, "step i/n changed in place: {counters:?}");
    assert!(counters.iter().all(|c| c.starts_with("Step ") && c.ends_with("/15")), "{counters:?}");
    assert!(currents.iter().filter(|c| c.contains("RUN ")).count() >= 3, "{currents:?}");
    assert!(etas.iter().any(|e| e.contains("left of ~")), "an ETA is shown: {etas:?}");

    // Finished: listed among recent builds, with its result in words.
    let recent = eventually(Duration::from_secs(10), "build listed as finished", || async {
        let text = browser.eval("return document.getElementById('recent').textContent;").await;
        let text = text.as_str().unwrap_or_default().to_string();
        text.contains("SUCCEEDED").then_some(text)
    })
    .await;
    assert!(recent.contains(&name), "{recent}");

    // Phone width: nothing overflows sideways.
    browser.call_rect(390, 844).await;
    let fits = browser.eval("return document.documentElement.scrollWidth <= window.innerWidth + 1;").await;
    assert_eq!(fits, Value::Bool(true));

    let png = screenshot.expect("a screenshot mid-build");
    assert!(png.starts_with(b"\x89PNG"));
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/status-page.png");
    std::fs::write(&target, &png).unwrap();
    if std::env::var_os("BUILDKIT_EXPORTER_UPDATE_SCREENSHOT").is_some() {
        std::fs::write(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/status-page.png"), &png).unwrap();
    }
    browser.stop().await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markup_in_build_text_is_shown_as_text() {
    let _engine = ENGINE.lock().await;
    let daemon = daemon().await;
    let name = engine::unique("markup");
    let payload = "<img src=x onerror=document.title='pwned'><b>bold</b>";
    let context =
        Context::new(&format!("FROM tinybase:latest\nRUN echo {} \"{payload}\" && sleep 4\n", engine::unique("nonce")));
    let running = Build::start(&context, &name, &["--label", &format!("{LABEL}={name}")]);
    let browser = Browser::start(1100, 1200).await;
    browser.open(&format!("http://{}/", daemon.addr)).await;
    let shown = eventually(Duration::from_secs(30), "the running step shown", || async {
        let text = browser.eval("return document.getElementById('running').textContent;").await;
        let text = text.as_str().unwrap_or_default().to_string();
        text.contains("onerror=").then_some(text)
    })
    .await;
    assert!(shown.contains(payload), "the markup is shown as typed: {shown}");
    let dom = browser
        .eval(
            "return { title: document.title,
                      images: document.querySelectorAll('img').length,
                      bold: document.querySelectorAll('#running b').length };",
        )
        .await;
    assert_ne!(dom["title"], "pwned", "{dom}");
    assert_eq!(
        (dom["images"].as_u64(), dom["bold"].as_u64()),
        (Some(0), Some(0)),
        "no element came from build text: {dom}"
    );
    assert!(running.finish().await.success);
    browser.stop().await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_is_down_is_said_at_the_top() {
    let _engine = ENGINE.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let dead = format!("laptop=unix://{}", dir.path().join("docker.sock").display());
    let engine = format!("ci={}", engine::source());
    let daemon = Daemon::start(&[&engine, &dead], |_| {}).await;
    let browser = Browser::start(1100, 1200).await;
    browser.open(&format!("http://{}/", daemon.addr)).await;
    let seen = eventually(Duration::from_secs(30), "the page tells the sources", || async {
        let seen = browser
            .eval(
                "return { alert: (document.querySelector('#sources .alert') || {}).textContent || '',
                          up: (document.querySelector('#sources .up') || {}).textContent || '',
                          running: document.getElementById('running').textContent };",
            )
            .await;
        (seen["up"].as_str().unwrap_or_default().contains("ci ✓ up")).then_some(seen)
    })
    .await;
    let alert = seen["alert"].as_str().unwrap();
    assert!(alert.contains("Source laptop is down"), "{seen}");
    assert!(alert.contains("docker.sock") && alert.contains("No such file"), "the reason, in one line: {seen}");
    let running = seen["running"].as_str().unwrap();
    assert!(running.contains("1 source is down") && running != "No build is running.", "{seen}");
    // The engine's versions, read with bollard, are named.
    assert!(seen["up"].as_str().unwrap().contains("Docker "), "{seen}");
    browser.stop().await;
    daemon.stop().await;
}
