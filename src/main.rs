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
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
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
