//! The `buildkit-exporter` binary: flags, logging, signals; the daemon itself is the library.

use std::process::ExitCode;

use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use buildkit_exporter::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(error) = buildkit_exporter::logging::init(&cli.log_level, cli.log_format) {
        eprintln!("buildkit-exporter: {error}");
        return ExitCode::from(2);
    }
    let docker_tls = buildkit_exporter::source::spec::DockerTls::from_env();
    let config = match cli.into_config(std::env::var("DOCKER_HOST").ok(), &docker_tls) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("buildkit-exporter: {error}");
            return ExitCode::from(2);
        }
    };
    // One thread runs everything: the daemon waits on sockets nearly all the time, and a scrape
    // of about 1 000 series costs about 0.1 ms of CPU (benches/scrape.md). A pool of workers
    // would buy little but their stacks and the multi-thread scheduler, whose statistics alone
    // map libm (benches/memory.md).
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let result = runtime.block_on(async {
        let (stop, shutdown) = watch::channel(false);
        tokio::spawn(async move {
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::info!("shutting down");
            let _ = stop.send(true);
        });
        buildkit_exporter::run(config, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "exiting");
            eprintln!("buildkit-exporter: {error}");
            ExitCode::FAILURE
        }
    }
}
