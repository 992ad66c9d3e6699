//! How accurate the ETA is on a real engine: the same 15-step build, uncached, three times; on
//! the third, the estimated remaining time at 25 %, 50 % and 75 % of the real duration is
//! compared with the real remaining time. Writes `benches/eta.md`.
//!
//! `eval "$(scripts/engine-up.sh)" && cargo bench --bench eta`

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::engine::{self, Build, Context};
use testkit::report::Report;
use testkit::Daemon;

/// Seconds each RUN step sleeps: uneven, like a real image (the torch step dominates).
const SLEEPS: [f64; 12] = [3.0, 2.0, 4.0, 1.0, 2.0, 3.0, 5.0, 8.0, 2.0, 3.0, 4.0, 0.5];

fn dockerfile() -> String {
    let mut text = String::from("FROM tinybase:latest\nWORKDIR /workspace\n");
    for (i, sleep) in SLEEPS.iter().enumerate() {
        if i == 6 {
            text.push_str("COPY requirements.txt /workspace/\n");
        }
        text.push_str(&format!("RUN echo step {i} && sleep {sleep}\n"));
    }
    text
}

/// One sample: seconds since the build started, estimated remaining seconds.
type Sample = (f64, Option<f64>);

async fn run(daemon: &Daemon, context: &Context, name: &str) -> (f64, Vec<Sample>) {
    let label = format!("org.opencontainers.image.title={name}");
    let build = Build::start(context, name, &["--label", &label, "--no-cache"]);
    let started = Instant::now();
    let mut reference = None;
    let mut samples = Vec::new();
    loop {
        let (_, body) = daemon.get("/api/v1/builds").await;
        let list: Value = serde_json::from_str(&body).unwrap();
        let mine = list["builds"].as_array().unwrap().iter().find(|b| {
            b["name"] == name
                && reference.as_ref().is_none_or(|r: &String| b["ref"] == r.as_str())
                && (reference.is_some() || b["state"] == "running")
        });
        if let Some(b) = mine {
            reference.get_or_insert_with(|| b["ref"].as_str().unwrap().to_string());
            if b["state"] != "running" {
                let total = b["duration_seconds"].as_f64().unwrap();
                assert_eq!(b["state"], "succeeded");
                let report = build.finish().await;
                assert!(report.success);
                return (total, samples);
            }
            let elapsed = list["generated_at"].as_f64().unwrap() - b["started_at"].as_f64().unwrap();
            samples.push((elapsed, b["estimate"]["remaining_seconds"].as_f64()));
        }
        assert!(started.elapsed() < Duration::from_secs(300), "build did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let daemon = Daemon::start(&[&engine::source()], |_| {}).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let name = engine::unique("eta-bench");
        let context = Context::new(&dockerfile());
        let mut report = Report::new("eta");
        write!(
            report,
            "# ETA accuracy\n\nThe same 15-step build (12 `RUN` steps sleeping 0.5–8 s, uneven like a real image), run \
             uncached three times on a real Docker Engine while the exporter watches; the third run's estimated \
             remaining time (`/api/v1/builds`, as in `buildkit_build_estimated_remaining_seconds`) is compared with \
             the real remaining time at 25 %, 50 % and 75 % of its real duration. Target: within 10 %.\n\n\
             **Machine:** {}. Reproduce: `eval \"$(scripts/engine-up.sh)\" && cargo bench --bench eta`\n\n",
            Report::machine()
        )
        .unwrap();
        let mut runs = Vec::new();
        for _ in 0..3 {
            runs.push(run(&daemon, &context, &name).await);
        }
        writeln!(report, "| run | real duration | samples with an estimate |").unwrap();
        writeln!(report, "|---|---|---|").unwrap();
        for (i, (total, samples)) in runs.iter().enumerate() {
            let with = samples.iter().filter(|(_, e)| e.is_some()).count();
            writeln!(report, "| {} | {total:.2} s | {with} of {} |", i + 1, samples.len()).unwrap();
        }
        let (total, samples) = &runs[2];
        writeln!(report, "\nThird run:\n\n| at | elapsed | real remaining | estimated remaining | error |").unwrap();
        writeln!(report, "|---|---|---|---|---|").unwrap();
        let mut worst: f64 = 0.0;
        for fraction in [0.25, 0.5, 0.75] {
            let target = fraction * total;
            let (elapsed, estimate) = samples
                .iter()
                .min_by(|a, b| (a.0 - target).abs().total_cmp(&(b.0 - target).abs()))
                .copied()
                .expect("samples");
            let real = total - elapsed;
            let estimate = estimate.expect("the third run has an estimate");
            let error = (estimate - real).abs() / real;
            worst = worst.max(error);
            writeln!(
                report,
                "| {:.0} % | {elapsed:.2} s | {real:.2} s | {estimate:.2} s | {:.1} % |",
                fraction * 100.0,
                error * 100.0
            )
            .unwrap();
        }
        writeln!(report, "\nWorst error: {:.1} % (target 10 %).", worst * 100.0).unwrap();
        report.finish(true);
        daemon.stop().await;
    });
}
