//! The status page and the JSON API during real builds on a real engine, the page in a real
//! headless browser.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;
use testkit::browser::Browser;
use testkit::engine::{self, build, ml_dockerfile, Build, Context, ENGINE};
use testkit::{eventually, Daemon};

const LABEL: &str = engine::NAME_LABEL;

async fn daemon() -> Daemon {
    Daemon::on_engine().await
}

/// A daemon that shows `output_lines` of each running step's output.
async fn daemon_with_output() -> Daemon {
    Daemon::on_engine_with(|c| c.model.output_lines = 3).await
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

/// `[1/n]` … `[n/n]`.
fn dockerfile_order(n: usize) -> Value {
    Value::from((1..=n).map(|i| format!("[{i}/{n}]")).collect::<Vec<_>>())
}

/// What the view of one build (`/builds/{ref}`) shows, read from its DOM; null until drawn. Its
/// timeline: each lane's step, its track's width, where "now" is and its bars (kind, left from
/// the track's start and width, in pixels).
const VIEW: &str = "
    const view = document.querySelector('#build .view');
    if (!view) return null;
    const rows = [...view.querySelectorAll('ol.steps li')];
    const failure = view.querySelector('.failure');
    const current = view.querySelector('.current');
    return { badge: view.querySelector('.title .badge').textContent,
             title: view.querySelector('.title .name').textContent,
             facts: view.querySelector('.facts').textContent,
             labels: rows.map(li => li.querySelector('.cmd').textContent.split(']')[0] + ']'),
             states: rows.map(li => li.className),
             words: rows.map(li => li.querySelector('.state').textContent),
             times: rows.map(li => li.querySelector('.time').textContent),
             errors: rows.map(li => (li.querySelector('.error') || {}).textContent || null),
             outputs: rows.map(li => (li.querySelector('.output') || {}).textContent || null),
             current: current.hidden ? null : current.textContent,
             now_output: (current.querySelector('.output') || {}).textContent || null,
             lanes: [...view.querySelectorAll('.timeline .lane')].map(l => l.dataset.step),
             counter: (view.querySelector('.facts .step-counter') || {}).textContent || '',
             timeline: [...view.querySelectorAll('.timeline .lane')].map(lane => {
               const track = lane.querySelector('.track').getBoundingClientRect();
               const now = lane.querySelector('.track .now');
               return { step: lane.dataset.step, width: track.width,
                        now: now ? now.getBoundingClientRect().left - track.left : null,
                        bars: [...lane.querySelectorAll('.bar')].map(bar => {
                          const r = bar.getBoundingClientRect();
                          return { kind: bar.className.replace('bar ', ''), left: r.left - track.left, width: r.width };
                        }) };
             }),
             failure: failure.hidden ? null : failure.textContent,
             failure_line: failure.hidden ? null : failure.querySelector('.line').textContent,
             failure_source: failure.hidden || failure.querySelector('.source').hidden ? null
               : failure.querySelector('.source').textContent,
             context: view.querySelector('dl.context').textContent,
             back: view.querySelector('.back a').getAttribute('href'),
             fits: document.documentElement.scrollWidth <= window.innerWidth + 1,
             marker: window.__marker || null };";

/// Each step row's state over the polls of a page: it only moves forward (pending, running,
/// then an end state that stays), so a cached step stays cached.
#[derive(Default)]
struct Progression {
    seen: BTreeMap<String, Vec<String>>,
}

impl Progression {
    fn rank(state: &str) -> u8 {
        match state {
            "pending" => 0,
            "running" => 1,
            _ => 2,
        }
    }

    /// One poll: `labels` and `states` of the rows, in order.
    fn see(&mut self, labels: &Value, states: &Value, poll: &Value) {
        let labels = labels.as_array().unwrap();
        let states = states.as_array().unwrap();
        assert_eq!(labels.len(), states.len(), "{poll}");
        for (label, state) in labels.iter().zip(states) {
            let (label, state) = (label.as_str().unwrap(), state.as_str().unwrap());
            let history = self.seen.entry(label.to_string()).or_default();
            if let Some(last) = history.last() {
                assert!(Self::rank(last) <= Self::rank(state), "{label} went from {last} to {state}: {poll}");
                assert!(Self::rank(last) < 2 || last == state, "{label} went from {last} to {state}: {poll}");
            }
            if history.last().map(String::as_str) != Some(state) {
                history.push(state.to_string());
            }
        }
    }

    /// The states `label` was seen in, in order.
    fn of(&self, label: &str) -> &[String] {
        self.seen.get(label).map(Vec::as_slice).unwrap_or_default()
    }
}

/// A build's own view as it is now, opened in `browser`, once it is drawn: it never reloads, its
/// list and its timeline's lanes keep the Dockerfile's `order`, and its steps' states only move
/// forward (`progression`).
async fn view(browser: &Browser, order: &Value, progression: &mut Progression) -> Option<Value> {
    let seen = browser.eval(VIEW).await;
    if seen.is_null() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        return None;
    }
    assert_eq!(seen["marker"], "view", "the view reloaded");
    assert_eq!(seen["labels"], *order, "{seen}");
    assert_eq!(seen["lanes"], *order, "{seen}");
    progression.see(&seen["labels"], &seen["states"], &seen);
    Some(seen)
}

/// Waits until a finished build's view says it no longer refreshes.
async fn at_rest(browser: &Browser) {
    browser
        .until(
            Duration::from_secs(30),
            "the view at rest",
            "return document.getElementById('updated').textContent.includes('no longer refreshes');",
        )
        .await;
}

/// The newest finished build called `name`, once the daemon has it.
async fn finished(daemon: &Daemon, name: &str) -> Value {
    eventually(Duration::from_secs(60), &format!("{name} finished"), || async {
        find(daemon, name).await.filter(|b| b["state"] != "running")
    })
    .await
}

/// The build called `name` while it runs, with its steps known.
async fn running_build(daemon: &Daemon, name: &str) -> Value {
    eventually(Duration::from_secs(60), &format!("{name} running"), || async {
        find(daemon, name).await.filter(|b| b["state"] == "running" && b["steps"]["total"].as_u64() > Some(0))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine: run scripts/test.sh"]
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
    // Its failing instruction spans two lines, and the second names the build-arg's value.
    let context = Context::new(&format!(
        "FROM tinybase:latest\nARG TOKEN\nRUN echo {}\nRUN echo $TOKEN && \\\n  exit 3 # {marker}\n",
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
    // Where: the Dockerfile's lines, as BuildKit located them, masked; and the exit code.
    let detail = json(&daemon, &format!("/api/v1/builds/{}", failed["ref"].as_str().unwrap())).await.1;
    for error in [&failed["error"], &detail["error"]] {
        assert_eq!(
            error["location"],
            serde_json::json!({"file": "Dockerfile", "line": 4, "end_line": 5, "text": "RUN echo $TOKEN && \\\n  exit 3 # ***"}),
            "{error}"
        );
        assert_eq!(error["exit_code"], 3, "{error}");
    }
    assert_eq!(json(&daemon, "/api/v1/builds/no-such-ref").await.0, 404);

    let (_, list) = daemon.get("/api/v1/builds").await;
    let (_, page) = daemon.get("/").await;
    bodies.extend([list, page, detail.to_string()]);
    for body in &bodies {
        assert!(!body.contains(&marker), "build-arg value leaked: {body}");
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine and Chromium: run scripts/test.sh"]
async fn the_page_updates_itself_in_a_real_browser() {
    let _engine = ENGINE.lock().await;
    // With output lines, so that the page shows what the running step prints.
    let daemon = daemon_with_output().await;
    let name = engine::unique("page");
    let context = Context::new(&ml_dockerfile(&engine::unique("nonce"), "0.6"));
    let args = ["--label", &format!("{LABEL}={name}")];
    // A first build teaches the step durations: the second has an ETA.
    assert!(build(&context, &format!("{name}:latest"), &args).await.success);
    let no_cache: Vec<&str> = args.iter().copied().chain(["--no-cache"]).collect();

    let browser = Browser::start(1100, 1500).await;
    browser.open(&format!("http://{}/", daemon.addr)).await;
    browser.eval("window.__marker = 'list'; return 1;").await;
    let running = Build::start(&context, &format!("{name}:latest"), &no_cache);
    let order = dockerfile_order(15);
    let mut progression = Progression::default();
    let mut counters = BTreeSet::new();
    let mut currents = BTreeSet::new();
    let mut etas = BTreeSet::new();
    // The list, for the first steps: the card changes in place, its steps in Dockerfile order
    // on every poll whatever their states, each row's state only moving forward.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let link = loop {
        assert!(tokio::time::Instant::now() < deadline, "the card showed only {counters:?}");
        let seen = browser
            .eval(
                "const card = document.querySelector('#running [data-ref]');
                 if (!card) return null;
                 const rows = [...card.querySelectorAll('ol.steps li')];
                 return { counter: card.querySelector('.step-counter').textContent,
                          current: card.querySelector('.current').textContent,
                          eta: card.querySelector('.eta').textContent,
                          order: rows.map(li => li.querySelector('.cmd').textContent.split(']')[0] + ']'),
                          states: rows.map(li => li.className),
                          title: card.querySelector('h3').textContent,
                          link: card.querySelector('h3 a').getAttribute('href'),
                          reference: card.dataset.ref,
                          marker: window.__marker };",
            )
            .await;
        if !seen.is_null() {
            assert_eq!(seen["marker"], "list", "the page reloaded");
            assert!(seen["title"].as_str().unwrap().contains("RUNNING"), "{seen}");
            assert_eq!(seen["order"], order, "{seen}");
            progression.see(&seen["order"], &seen["states"], &seen);
            counters.insert(seen["counter"].as_str().unwrap().to_string());
            currents.insert(seen["current"].as_str().unwrap().to_string());
            etas.insert(seen["eta"].as_str().unwrap().to_string());
            // The card's title leads to the build's own view.
            assert_eq!(seen["link"].as_str().unwrap(), format!("/builds/{}", seen["reference"].as_str().unwrap()));
            if counters.len() >= 3 {
                break seen["link"].as_str().unwrap().to_string();
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    // The build's own view, to the end: the same order and forward-only states, the timeline's
    // lanes in the same order, then the finished state.
    browser.open(&format!("http://{}{link}", daemon.addr)).await;
    browser.eval("window.__marker = 'view'; return 1;").await;
    let mut screenshot = None;
    let mut fallback = None;
    let last = loop {
        assert!(tokio::time::Instant::now() < deadline, "the build never finished in its view");
        let Some(seen) = view(&browser, &order, &mut progression).await else { continue };
        if !seen["badge"].as_str().unwrap().contains("RUNNING") {
            break seen;
        }
        counters.insert(seen["counter"].as_str().unwrap().to_string());
        currents.insert(seen["current"].as_str().unwrap_or_default().to_string());
        etas.insert(seen["facts"].as_str().unwrap().to_string());
        let pending = seen["states"].as_array().unwrap().iter().filter(|s| *s == "pending").count();
        if screenshot.is_none() && pending >= 2 && !seen["now_output"].is_null() {
            screenshot = Some(browser.screenshot().await);
        } else if fallback.is_none() && pending >= 1 {
            fallback = Some(browser.screenshot().await);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(running.finish().await.success);
    assert!(last["badge"].as_str().unwrap().contains("SUCCEEDED"), "{last}");
    assert!(last["states"].as_array().unwrap().iter().all(|s| s == "done" || s == "cached"), "{last}");
    assert!(counters.len() >= 5, "step i/n changed in place: {counters:?}");
    assert!(counters.iter().all(|c| c.starts_with("Step ") && c.ends_with("/15")), "{counters:?}");
    assert!(currents.iter().filter(|c| c.contains("RUN ")).count() >= 3, "{currents:?}");
    assert!(etas.iter().any(|e| e.contains("left of ~")), "an ETA is shown: {etas:?}");
    // Finished: once BuildKit has sent the build's record again, the view stops asking.
    at_rest(&browser).await;
    assert_eq!(last["back"], "/");
    browser.call_rect(390, 844).await;
    assert_eq!(browser.eval(VIEW).await["fits"], true, "the build view at phone width");

    // Back on the list: among recent builds, with its result in words and a link to its view.
    browser.call_rect(1100, 1500).await;
    browser.open(&format!("http://{}/", daemon.addr)).await;
    let recent = browser
        .until(
            Duration::from_secs(10),
            "build listed as finished",
            "const text = document.getElementById('recent').textContent;
             const links = [...document.querySelectorAll('#recent tr a')].map(a => a.getAttribute('href'));
             return text.includes('SUCCEEDED') && { text, links };",
        )
        .await;
    assert!(recent["text"].as_str().unwrap().contains(&name), "{recent}");
    assert!(recent["links"].as_array().unwrap().iter().any(|l| *l == link.as_str()), "{recent}");

    // Phone width: nothing overflows sideways.
    browser.call_rect(390, 844).await;
    let fits = browser.eval("return document.documentElement.scrollWidth <= window.innerWidth + 1;").await;
    assert_eq!(fits, Value::Bool(true));

    let png = screenshot.or(fallback).expect("a screenshot mid-build");
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
#[ignore = "needs a Docker engine and Chromium: run scripts/test.sh"]
async fn a_finished_build_and_a_failed_one_have_their_own_view() {
    let _engine = ENGINE.lock().await;
    let daemon = daemon_with_output().await;
    let secret = engine::unique("view-secret");
    let token = format!("TOKEN={secret}");
    let name = engine::unique("view");
    let label = format!("{LABEL}={name}");
    let args = ["--label", label.as_str(), "--build-arg", token.as_str()];
    // Built twice, the second time with one more step: its first steps come from the cache.
    let base =
        format!("FROM tinybase:latest\nARG TOKEN\nWORKDIR /app\nRUN echo {} && sleep 0.3\n", engine::unique("nonce"));
    let first = build(&Context::new(&base), "", &args).await;
    assert!(first.success, "{}", first.raw);
    // What the cache saves the second build: what WORKDIR and the first RUN took to run here.
    let ran: f64 = first
        .steps()
        .iter()
        .filter(|v| !v.cached && (v.name.contains("WORKDIR") || v.name.contains("RUN echo")))
        .filter_map(|v| Some(v.completed? - v.started?))
        .sum();
    let second = Context::new(&format!("{base}RUN echo second && sleep 0.3\n"));
    assert!(build(&second, &format!("{name}:v2"), &args).await.success);
    let listed = eventually(Duration::from_secs(30), "the second build finished", || async {
        find(&daemon, &name).await.filter(|b| b["state"] == "succeeded" && b["steps"]["total"] == 4)
    })
    .await;
    let reference = listed["ref"].as_str().unwrap().to_string();
    let (_, detail) = json(&daemon, &format!("/api/v1/builds/{reference}")).await;

    // The list links each recent build to its view.
    let browser = Browser::start(1100, 1200).await;
    browser.open(&format!("http://{}/", daemon.addr)).await;
    let href = browser
        .until(
            Duration::from_secs(20),
            "the build listed",
            &format!(
                "const row = document.querySelector('#recent tr[data-ref=\"{reference}\"]');
                 return row && row.querySelector('a').getAttribute('href');"
            ),
        )
        .await;
    assert_eq!(href, format!("/builds/{reference}"));
    browser.open(&format!("http://{}{}", daemon.addr, href.as_str().unwrap())).await;
    let view = browser.until(Duration::from_secs(20), "the view drawn", VIEW).await;
    assert!(view["badge"].as_str().unwrap().contains("SUCCEEDED"), "{view}");
    assert!(view["title"].as_str().unwrap().contains(&format!("{name}:v2")), "{view}");
    assert_eq!(view["labels"], dockerfile_order(4), "{view}");
    assert_eq!(view["lanes"], dockerfile_order(4), "{view}");
    // Every step as the JSON has it: the cached ones said so.
    let states: Vec<Value> = detail["step_list"].as_array().unwrap().iter().map(|s| s["state"].clone()).collect();
    assert_eq!(view["states"], Value::from(states), "{view}\n{detail}");
    assert_eq!(view["states"][1], "cached", "WORKDIR from the cache: {view}");
    assert_eq!(view["states"][2], "cached", "the first RUN from the cache: {view}");
    assert_eq!(view["states"][3], "done", "{view}");
    // What the cache saved: what those two steps took in the first build, to the millisecond.
    let saved = detail["cache_saved_seconds"].as_f64().unwrap();
    assert!((saved - ran).abs() < 0.001, "saved {saved} s, the steps ran {ran} s: {detail}");
    assert!(view["facts"].as_str().unwrap().contains("cache saved ~"), "{view}");
    assert!(
        view["words"][1].as_str().unwrap().contains("CACHED") && view["words"][3].as_str().unwrap().contains("done")
    );
    assert!(view["times"].as_array().unwrap().iter().all(|t| t.as_str().unwrap().ends_with('s')), "{view}");
    assert!(view["errors"].as_array().unwrap().iter().all(Value::is_null), "{view}");
    assert!(view["failure"].is_null(), "{view}");
    let context = view["context"].as_str().unwrap();
    assert!(context.contains("Dockerfile") && context.contains("TOKEN"), "names of build-args: {view}");
    assert_eq!(view["back"], "/", "the view links back to the list");
    assert!(!view["facts"].as_str().unwrap().contains("cache broke"), "the first build ran those steps: {view}");
    at_rest(&browser).await;

    // Built again with another value of its build-arg: the first RUN after the ARG left the
    // cache, and the view says why, naming the argument and never its value.
    let changed = format!("TOKEN={}", engine::unique("view-other-secret"));
    let third =
        build(&second, &format!("{name}:v3"), &["--label", label.as_str(), "--build-arg", changed.as_str()]).await;
    assert!(third.success, "{}", third.raw);
    let listed = eventually(Duration::from_secs(30), "the third build finished", || async {
        find(&daemon, &name).await.filter(|b| b["tag"] == format!("{name}:v3") && b["state"] == "succeeded")
    })
    .await;
    browser.open(&format!("http://{}/builds/{}", daemon.addr, listed["ref"].as_str().unwrap())).await;
    let view = eventually(Duration::from_secs(20), "the rebuild's view says where its cache broke", || async {
        let view = browser.eval(VIEW).await;
        view["facts"].as_str()?.contains("cache broke").then_some(view)
    })
    .await;
    let facts = view["facts"].as_str().unwrap();
    assert!(facts.contains("cache broke at [3/4] RUN: build-arg TOKEN changed"), "{view}");
    assert!(!facts.contains(changed.split('=').nth(1).unwrap()), "{view}");
    at_rest(&browser).await;

    // A failed build: the failing step, its error and what it printed last (masked), the step
    // after it not run.
    let failing = engine::unique("view-failing");
    let dockerfile = format!(
        "FROM tinybase:latest\nARG TOKEN\nRUN echo {}\nRUN echo \"using $TOKEN\" && exit 3\nRUN echo never\n",
        engine::unique("nonce")
    );
    let report =
        build(&Context::new(&dockerfile), "", &["--label", &format!("{LABEL}={failing}"), "--build-arg", &token]).await;
    assert!(!report.success);
    let failed = finished(&daemon, &failing).await;
    assert_eq!(failed["state"], "failed", "{failed}");
    browser.open(&format!("http://{}/builds/{}", daemon.addr, failed["ref"].as_str().unwrap())).await;
    let view = browser.until(Duration::from_secs(20), "the failed build's view", VIEW).await;
    assert!(view["badge"].as_str().unwrap().contains("FAILED"), "{view}");
    assert_eq!(view["labels"], dockerfile_order(4), "{view}");
    assert_eq!(view["states"][2], "failed", "{view}");
    assert_eq!(view["states"][3], "skipped", "{view}");
    assert!(view["words"][2].as_str().unwrap().contains("FAILED"), "{view}");
    assert!(view["words"][3].as_str().unwrap().contains("not run"), "{view}");
    assert!(view["errors"][2].as_str().unwrap().contains("exit code: 3"), "{view}");
    assert_eq!(view["errors"].as_array().unwrap().iter().filter(|e| !e.is_null()).count(), 1, "{view}");
    let failure = view["failure"].as_str().unwrap();
    assert!(failure.contains("[3/4]") && failure.contains("exit code: 3"), "{view}");
    assert_eq!(view["failure_line"], "Dockerfile line 4, exit code 3", "{view}");
    assert_eq!(view["failure_source"], "RUN echo \"using $TOKEN\" && exit 3", "{view}");
    // The link the failure alert carries (the name's, not the build's) opens this build.
    let failed_ref = failed["ref"].as_str().unwrap();
    browser.open(&format!("http://{}/builds/last-failed?builder=default&name={failing}", daemon.addr)).await;
    let linked = browser
        .until(
            Duration::from_secs(20),
            "the name's last failure opened",
            &format!("if (location.pathname !== '/builds/{failed_ref}') return null;{VIEW}"),
        )
        .await;
    assert!(linked["badge"].as_str().unwrap().contains("FAILED"), "{linked}");
    assert_eq!(linked["failure_line"], "Dockerfile line 4, exit code 3", "{linked}");
    browser.open(&format!("http://{}/builds/{failed_ref}", daemon.addr)).await;
    browser.until(Duration::from_secs(20), "the failed build's view again", VIEW).await;
    assert_eq!(view["outputs"][2], "using ***", "{view}");
    let leaked = format!("return document.documentElement.outerHTML.includes('{secret}');");
    assert_eq!(browser.eval(&leaked).await, false, "the build-arg value is never shown");
    browser.call_rect(390, 844).await;
    assert_eq!(browser.eval(VIEW).await["fits"], true, "the failed build's view at phone width");

    // A build the exporter does not know (any more).
    browser.open(&format!("http://{}/builds/no-such-build", daemon.addr)).await;
    let gone = browser
        .until(
            Duration::from_secs(20),
            "the unknown build said",
            "const gone = document.querySelector('#build .gone');
             const back = document.querySelector('#build .back a');
             return gone && { text: gone.textContent, back: back.getAttribute('href') };",
        )
        .await;
    assert!(gone["text"].as_str().unwrap().contains("no longer known"), "{gone}");
    assert_eq!(gone["back"], "/", "{gone}");
    browser.stop().await;
    daemon.stop().await;
}

/// Checks the timeline of a finished build against its JSON: one bar per step that ran, placed
/// at its start and as long as it took, on the scale of the whole build.
fn assert_bars_match(detail: &Value, view: &Value) {
    let steps = detail["step_list"].as_array().unwrap();
    let lanes = view["timeline"].as_array().unwrap();
    assert_eq!(lanes.len(), steps.len(), "{view}");
    let start = detail["started_at"].as_f64().unwrap();
    let span = detail["duration_seconds"].as_f64().unwrap();
    for (lane, step) in lanes.iter().zip(steps) {
        assert_eq!(lane["step"], step["step"], "{view}");
        let bars = lane["bars"].as_array().unwrap();
        assert_eq!(bars.len(), 1, "one bar per step: {lane}");
        let bar = &bars[0];
        assert_eq!(bar["kind"], step["state"], "{lane}");
        let scale = lane["width"].as_f64().unwrap() / span;
        let from = (step["started_at"].as_f64().unwrap() - start) * scale;
        // Drawn at least 2 px wide, so that a cached step is seen.
        let width = (step["duration_seconds"].as_f64().unwrap() * scale).max(2.0);
        let (left, drawn) = (bar["left"].as_f64().unwrap(), bar["width"].as_f64().unwrap());
        assert!((left - from).abs() <= 1.5, "{} starts at {left} px, not {from}: {lane}", step["step"]);
        assert!((drawn - width).abs() <= 1.5, "{} is {drawn} px wide, not {width}: {lane}", step["step"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine and Chromium: run scripts/test.sh"]
async fn the_timeline_bars_are_as_long_as_the_steps_took() {
    let _engine = ENGINE.lock().await;
    let daemon = daemon().await;
    let name = engine::unique("timeline");
    let dockerfile = format!(
        "FROM tinybase:latest\nRUN echo {} && sleep 0.3\nRUN sleep 2\nRUN sleep 1\nRUN sleep 3\n",
        engine::unique("nonce")
    );
    assert!(build(&Context::new(&dockerfile), "", &["--label", &format!("{LABEL}={name}")]).await.success);
    let done = finished(&daemon, &name).await;
    let reference = done["ref"].as_str().unwrap();
    let (_, detail) = json(&daemon, &format!("/api/v1/builds/{reference}")).await;
    let browser = Browser::start(1100, 1000).await;
    browser.open(&format!("http://{}/builds/{reference}", daemon.addr)).await;
    browser.until(Duration::from_secs(20), "the view drawn", VIEW).await;
    for (width, height) in [(1100, 1000), (390, 844)] {
        browser.call_rect(width, height).await;
        let view = browser.eval(VIEW).await;
        assert_bars_match(&detail, &view);
        assert_eq!(view["fits"], true, "at {width} px: {view}");
        // The longest step, the longest bar.
        let widths: Vec<f64> =
            view["timeline"].as_array().unwrap().iter().map(|l| l["bars"][0]["width"].as_f64().unwrap()).collect();
        assert!(widths[4] > widths[2] && widths[2] > widths[3] && widths[3] > widths[1], "{widths:?}");
    }
    browser.stop().await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine and Chromium: run scripts/test.sh"]
async fn output_lines_show_only_when_enabled_and_never_a_masked_value() {
    let _engine = ENGINE.lock().await;
    let shown = daemon_with_output().await;
    let quiet = daemon().await;
    let name = engine::unique("output");
    let secret = engine::unique("output-secret");
    // The step prints a build-arg's value, then waits: it is interrupted once seen (and ends
    // on its own soon enough, should the interrupt not reach the engine).
    let dockerfile = format!(
        "FROM tinybase:latest\nARG TOKEN\nRUN echo {}; echo \"token $TOKEN\"; sleep 30\n",
        engine::unique("nonce")
    );
    let context = Context::new(&dockerfile);
    let running =
        Build::start(&context, "", &["--label", &format!("{LABEL}={name}"), "--build-arg", &format!("TOKEN={secret}")]);
    running.wait_printed(&format!("token {secret}")).await;
    let reference = running_build(&shown, &name).await["ref"].as_str().unwrap().to_string();
    let browser = Browser::start(1100, 1000).await;
    let leaked = format!("return document.documentElement.outerHTML.includes('{secret}');");

    // On: the lines under the running step, in the list's card and in the build's view, masked.
    for path in ["/".to_string(), format!("/builds/{reference}")] {
        browser.open(&format!("http://{}{path}", shown.addr)).await;
        let output = browser
            .until(
                Duration::from_secs(30),
                &format!("the output shown at {path}"),
                "const out = document.querySelector('.current .output');
                 return out && out.textContent.includes('token') && out.textContent;",
            )
            .await;
        assert!(output.as_str().unwrap().lines().any(|l| l == "token ***"), "{output} at {path}");
        assert_eq!(browser.eval(&leaked).await, false, "the build-arg value shown at {path}");
    }

    // Off (the default): no output in the JSON, and no output element in either view, though
    // the step has printed.
    let (_, detail) = json(&quiet, &format!("/api/v1/builds/{reference}")).await;
    assert_eq!(detail["state"], "running", "{detail}");
    assert!(detail["current"].as_array().unwrap().iter().all(|c| c.get("output").is_none()), "{detail}");
    assert!(detail["step_list"].as_array().unwrap().iter().all(|s| s.get("output").is_none()), "{detail}");
    let running_step = [
        ("/".to_string(), "#running [data-ref] .current"),
        (format!("/builds/{reference}"), "#build ol.steps li.running"),
    ];
    for (path, selector) in running_step {
        browser.open(&format!("http://{}{path}", quiet.addr)).await;
        let drawn = format!(
            "const node = document.querySelector('{selector}');
             return !!node && node.textContent.includes('token');"
        );
        browser.until(Duration::from_secs(30), &format!("the running step drawn at {path}"), &drawn).await;
        let outputs = browser.eval("return document.querySelectorAll('.output').length;").await;
        assert_eq!(outputs, 0, "no output element at {path}");
        assert_eq!(browser.eval(&leaked).await, false, "the build-arg value shown at {path}");
    }
    running.interrupt();
    assert!(!running.finish().await.success);
    // Over on the engine too, before the next test builds there.
    finished(&shown, &name).await;
    browser.stop().await;
    shown.stop().await;
    quiet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine and Chromium: run scripts/test.sh"]
async fn a_rebuild_whose_cache_breaks_halfway_keeps_order_and_states() {
    let _engine = ENGINE.lock().await;
    let daemon = daemon().await;
    let name = engine::unique("rebuild");
    let args = ["--label", &format!("{LABEL}={name}")];
    let first = ml_dockerfile(&engine::unique("nonce"), "0.8");
    assert!(build(&Context::new(&first), "", &args).await.success);
    // Step 8 changes: steps 1-7 come from the cache, 8-15 run.
    let second = first.replace("pip upgrade: pip setuptools wheel", "pip upgrade: pip setuptools wheel packaging");
    assert_ne!(first, second);
    let context = Context::new(&second);
    let running = Build::start(&context, "", &args);
    let reference = running_build(&daemon, &name).await["ref"].as_str().unwrap().to_string();
    let browser = Browser::start(1100, 1400).await;
    browser.open(&format!("http://{}/builds/{reference}", daemon.addr)).await;
    browser.eval("window.__marker = 'view'; return 1;").await;
    let order = dockerfile_order(15);
    let mut progression = Progression::default();
    let mut projected = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let last = loop {
        assert!(tokio::time::Instant::now() < deadline, "the build never finished in its view");
        let Some(seen) = view(&browser, &order, &mut progression).await else { continue };
        if !seen["badge"].as_str().unwrap().contains("RUNNING") {
            break seen;
        }
        // The timeline: what ended is left of "now"; what is pending, expected after it.
        let states = seen["states"].as_array().unwrap();
        let mut expected_after_now = 0;
        for (lane, state) in seen["timeline"].as_array().unwrap().iter().zip(states) {
            let now = lane["now"].as_f64().expect("a running build's timeline marks now");
            for bar in lane["bars"].as_array().unwrap() {
                let (kind, left, width) =
                    (bar["kind"].as_str().unwrap(), bar["left"].as_f64().unwrap(), bar["width"].as_f64().unwrap());
                match state.as_str().unwrap() {
                    "pending" => {
                        assert_eq!(kind, "expected", "{lane}");
                        assert!(left >= now - 1.0, "a pending step expected before now: {lane}");
                        expected_after_now += 1;
                    }
                    "running" => assert!(
                        (kind == "running" && left <= now + 1.0) || (kind == "expected" && left >= now - 1.0),
                        "{lane}"
                    ),
                    _ => {
                        assert_ne!(kind, "expected", "{lane}");
                        assert!(left + width <= now + 2.5, "an ended step drawn after now: {lane}");
                    }
                }
            }
        }
        if expected_after_now > 0 {
            projected += 1;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    };
    assert!(running.finish().await.success);
    assert!(last["badge"].as_str().unwrap().contains("SUCCEEDED"), "{last}");
    let states: Vec<&str> = last["states"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    // FROM of a local image reads as done or cached, depending on the engine.
    assert!(states[0] == "done" || states[0] == "cached", "{last}");
    assert_eq!(states[1..7], ["cached"; 6], "{last}");
    assert_eq!(states[7..], ["done"; 8], "{last}");
    for i in 2..=7 {
        assert_eq!(progression.of(&format!("[{i}/15]")).last().unwrap(), "cached");
    }
    let mut ran = 0;
    for i in 8..=15 {
        let history = progression.of(&format!("[{i}/15]"));
        assert!(!history.iter().any(|s| s == "cached"), "[{i}/15] ran: {history:?}");
        ran += usize::from(history.iter().any(|s| s == "running"));
    }
    assert!(ran >= 3, "steps seen running: {:?}", progression.seen);
    assert!(projected >= 1, "pending steps were drawn as expected after now");
    browser.stop().await;
    daemon.stop().await;
}

/// The list as drawn: running cards (in order) and recent rows, checked on every read: a build
/// is one card or one row, never both nor twice; only the first three cards list their steps,
/// the others are compact but still say step i/n, what runs, elapsed time and ETA; every card
/// links to its build. Returns it once `done` holds.
async fn list_until(browser: &Browser, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    eventually(Duration::from_secs(60), what, || async {
        let seen = browser
            .eval(
                "return { cards: [...document.querySelectorAll('#running [data-ref]')].map(card => ({
                            reference: card.dataset.ref,
                            title: card.querySelector('h3 a').textContent,
                            link: card.querySelector('h3 a').getAttribute('href'),
                            expanded: !!card.querySelector('ol.steps'),
                            facts: ['.step-counter', '.elapsed', '.eta'].map(f => card.querySelector(f).textContent),
                            current: card.querySelector('.current').textContent })),
                          recent: [...document.querySelectorAll('#recent tr')].map(row => ({
                            reference: row.dataset.ref, text: row.textContent })),
                          running: document.getElementById('running').textContent };",
            )
            .await;
        let cards = seen["cards"].as_array().unwrap();
        let mut references = BTreeSet::new();
        for (i, card) in cards.iter().enumerate() {
            let reference = card["reference"].as_str().unwrap();
            assert!(references.insert(reference.to_string()), "{reference} twice: {seen}");
            assert_eq!(card["link"].as_str().unwrap(), format!("/builds/{reference}"), "{seen}");
            assert_eq!(card["expanded"], i < 3, "only the first three list their steps: {seen}");
            let facts = card["facts"].as_array().unwrap();
            assert!(facts[0].as_str().unwrap().starts_with("Step "), "{seen}");
            assert!(
                facts[1].as_str().unwrap().ends_with(" elapsed") && !facts[2].as_str().unwrap().is_empty(),
                "{seen}"
            );
        }
        for row in seen["recent"].as_array().unwrap() {
            assert!(references.insert(row["reference"].as_str().unwrap().to_string()), "listed twice: {seen}");
        }
        done(&seen).then_some(seen)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine and Chromium: run scripts/test.sh"]
async fn many_running_builds_get_compact_cards_keyed_by_build() {
    let _engine = ENGINE.lock().await;
    let daemon = daemon().await;
    let browser = Browser::start(1100, 1500).await;
    browser.open(&format!("http://{}/", daemon.addr)).await;
    let prefix = engine::unique("many");
    // Each build waits in its last step until it is interrupted (or half a minute, should an
    // interrupt not reach the engine: the waits below outlast it).
    let contexts: Vec<Context> =
        (0..5).map(|i| Context::new(&format!("FROM tinybase:latest\nRUN echo {prefix}-{i}\nRUN sleep 30\n"))).collect();
    let mut builds: Vec<Build> = contexts
        .iter()
        .enumerate()
        .map(|(i, context)| Build::start(context, "", &["--label", &format!("{LABEL}={prefix}-{i}")]))
        .collect();
    let ours = |seen: &Value, key: &str| -> usize {
        seen[key].as_array().unwrap().iter().filter(|b| b.to_string().contains(&prefix)).count()
    };
    let all = list_until(&browser, "five builds running", |seen| {
        let cards = seen["cards"].as_array().unwrap().iter().filter(|c| c.to_string().contains(&prefix));
        cards.filter(|c| c["current"].to_string().contains("sleep 30")).count() == 5
    })
    .await;
    let reference_of = |i: usize| -> String {
        let card = all["cards"].as_array().unwrap().iter().find(|c| c["title"] == format!("{prefix}-{i}")).unwrap();
        card["reference"].as_str().unwrap().to_string()
    };
    let references: Vec<String> = (0..5).map(reference_of).collect();

    // Two end: their cards go, their rows come, the others move up and list their steps.
    for build in builds.drain(..2) {
        build.interrupt();
        assert!(!build.finish().await.success);
    }
    let seen =
        list_until(&browser, "two builds finished", |seen| ours(seen, "cards") == 3 && ours(seen, "recent") == 2).await;
    let shown: Vec<&str> = seen["cards"].as_array().unwrap().iter().map(|c| c["reference"].as_str().unwrap()).collect();
    assert!(references[2..].iter().all(|r| shown.contains(&r.as_str())), "{seen}");
    let rows: Vec<&str> = seen["recent"].as_array().unwrap().iter().map(|r| r["reference"].as_str().unwrap()).collect();
    assert!(references[..2].iter().all(|r| rows.contains(&r.as_str())), "{seen}");
    assert!(seen["recent"].to_string().contains("CANCELED"), "{seen}");

    for build in builds.drain(..) {
        build.interrupt();
        assert!(!build.finish().await.success);
    }
    let seen = list_until(&browser, "all finished", |seen| ours(seen, "cards") == 0 && ours(seen, "recent") == 5).await;
    if seen["cards"].as_array().unwrap().is_empty() {
        assert!(seen["running"].as_str().unwrap().contains("No build is running"), "{seen}");
    }
    browser.stop().await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine and Chromium: run scripts/test.sh"]
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
#[ignore = "needs a Docker engine and Chromium: run scripts/test.sh"]
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine and Chromium: run scripts/test.sh"]
async fn a_step_slower_than_usual_is_said_while_it_runs_and_after() {
    let _engine = ENGINE.lock().await;
    let daemon = daemon().await;
    let name = engine::unique("slow-step");
    let label = format!("{LABEL}={name}");
    // The same Dockerfile twice; only the file the last step reads differs, so that step keeps
    // its text (what it is known by) and runs again: 1 s the first time, 20 s the second.
    let dockerfile = format!(
        "FROM tinybase:latest\nRUN echo {}\nCOPY seconds /seconds\nRUN sleep $(cat /seconds)\n",
        engine::unique("nonce")
    );
    let sleeping_for = |seconds: &str| Context::with_file(&dockerfile, "seconds", seconds);
    let first = build(&sleeping_for("1"), "", &["--label", &label]).await;
    assert!(first.success, "{}", first.raw);
    let usual =
        first.steps().iter().find(|v| v.name.starts_with("[4/4]")).and_then(|v| Some(v.completed? - v.started?));
    let usual = usual.expect("the first build ran its last step");
    finished(&daemon, &name).await;
    // Kept until the build ends: it reads the context as it goes.
    let slow_context = sleeping_for("20");
    let slow = Build::start(&slow_context, "", &["--label", &label]);

    // While it runs, at first on time: the step's usual time is exported, and nothing is said.
    let running = running_build(&daemon, &name).await;
    let reference = running["ref"].as_str().unwrap().to_string();
    let m = eventually(Duration::from_secs(60), "the last step running", || async {
        let m = daemon.metrics().await;
        m.contains(&format!("buildkit_build_step_running_expected_seconds{{builder=\"default\",name=\"{name}\",ref=\"{reference}\",step=\"[4/4]\"}}")).then_some(m)
    })
    .await;
    let line =
        m.lines().find(|l| l.starts_with("buildkit_build_step_running_expected_seconds") && l.contains(&reference));
    let exported: f64 = line.unwrap().rsplit(' ').next().unwrap().parse().unwrap();
    assert!((exported - usual).abs() < 0.001, "usual {exported} s exported, the client saw {usual} s");

    // Past twice its usual time and 10 s more: the JSON and the page say so.
    let browser = Browser::start(1100, 1200).await;
    browser.open(&format!("http://{}/", daemon.addr)).await;
    let said = browser
        .until(
            Duration::from_secs(40),
            "the card says the step is slower than usual",
            &format!(
                "const card = document.querySelector('section.build[data-ref=\"{reference}\"]');
                 const note = card && card.querySelector('.current .slower');
                 return note && note.textContent;"
            ),
        )
        .await;
    assert!(said.as_str().unwrap().starts_with("⚠ slower than usual: usually ~1"), "{said}");
    let (_, detail) = json(&daemon, &format!("/api/v1/builds/{reference}")).await;
    let step = &detail["step_list"][3];
    assert_eq!(
        (step["state"].as_str(), step["slower_than_usual"].as_bool()),
        (Some("running"), Some(true)),
        "{detail}"
    );
    assert!((step["usual_seconds"].as_f64().unwrap() - usual).abs() < 0.001, "{step}");
    assert!(detail["step_list"].as_array().unwrap()[..3].iter().all(|s| s["slower_than_usual"] == false), "{detail}");

    // Finished: still slower, and first among the slowest steps, against its usual time.
    let report = slow.finish().await;
    assert!(report.success, "{}", report.raw);
    let done = finished(&daemon, &name).await;
    let (_, detail) = json(&daemon, &format!("/api/v1/builds/{}", done["ref"].as_str().unwrap())).await;
    assert_eq!(detail["step_list"][3]["slower_than_usual"], true, "{detail}");
    browser.open(&format!("http://{}/builds/{reference}", daemon.addr)).await;
    let slowest = browser
        .until(
            Duration::from_secs(20),
            "the slowest steps listed",
            "const items = [...document.querySelectorAll('#build ol.slowest li')].map(li => li.textContent);
             return items.length ? items : null;",
        )
        .await;
    let first_line = slowest[0].as_str().unwrap();
    assert!(first_line.starts_with("[4/4] RUN sleep $(cat /seconds) — took 2"), "{slowest}");
    assert!(first_line.contains(", usually ~1") && first_line.ends_with("⚠ slower than usual"), "{slowest}");
    browser.stop().await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine and Chromium: run scripts/test.sh"]
async fn a_shared_step_is_shown_at_the_builds_own_position_and_said_shared() {
    let _engine = ENGINE.lock().await;
    let daemon = daemon().await;
    let nonce = engine::unique("nonce");
    let (three, four) = (engine::unique("page-shares-three"), engine::unique("page-shares-four"));
    let shared = format!("FROM tinybase:latest\nRUN echo {nonce} shared && sleep 15\n");
    let first = Context::new(&format!("{shared}RUN echo three\n"));
    let second = Context::new(&format!("{shared}RUN echo four\nRUN echo four again\n"));
    let a = Build::start(&first, "", &["--label", &format!("{LABEL}={three}")]);
    eventually(Duration::from_secs(60), "the shared step running", || async {
        find(&daemon, &three).await.filter(|b| b["current"][0]["step"] == "[2/3]")
    })
    .await;
    let b = Build::start(&second, "", &["--label", &format!("{LABEL}={four}")]);
    let running = running_build(&daemon, &four).await;
    let browser = Browser::start(1100, 1200).await;
    browser.open(&format!("http://{}/builds/{}", daemon.addr, running["ref"].as_str().unwrap())).await;
    let view = browser
        .until(
            Duration::from_secs(60),
            "the second build's shared step said",
            "const rows = [...document.querySelectorAll('#build ol.steps li')];
             const note = rows.length === 4 && rows[1].querySelector('.shared');
             return note ? { labels: rows.map(li => li.querySelector('.cmd').textContent.split(']')[0] + ']'),
                             note: note.textContent, others: rows.filter(li => li.querySelector('.shared')).length } : null;",
        )
        .await;
    assert_eq!(view["labels"], dockerfile_order(4), "its own numbering: {view}");
    assert!(view["note"].as_str().unwrap().starts_with("⇄ shared"), "{view}");
    assert!(view["others"].as_u64() <= Some(2), "FROM and the RUN at most: {view}");
    let (a, b) = (a.finish().await, b.finish().await);
    assert!(a.success && b.success, "{}\n{}", a.raw, b.raw);
}
