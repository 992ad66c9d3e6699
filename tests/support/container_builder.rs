//! A real buildx container builder ("docker-container" driver) on the engine under test, made
//! and removed with the engine's own buildx (0.13 beside Engine 26.1, 0.29 beside 28.5, through
//! `DOCKER_CONFIG`), running the BuildKit v0.32.2 image that scripts/engine-up.sh imports.

use std::process::{Command as StdCommand, Stdio};

use tokio::process::Command;

use crate::engine::{Build, Context};

/// A buildx builder of the docker-container driver; removed on drop if the test did not.
pub struct ContainerBuilder {
    pub name: String,
    removed: bool,
}

/// The image of the builder's container (scripts/engine-up.sh imports it).
fn image() -> String {
    std::env::var("BUILDKIT_EXPORTER_BUILDER_IMAGE").unwrap_or_else(|_| "buildkit-exporter/buildkit:v0.32.2".into())
}

/// Runs `docker ARGS` to the end; panics with its output if it fails.
pub fn docker(args: &[&str]) -> String {
    let output = StdCommand::new("docker").args(args).stdin(Stdio::null()).output().expect("docker CLI");
    assert!(
        output.status.success(),
        "docker {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

impl ContainerBuilder {
    /// `docker buildx create --driver docker-container --bootstrap`: its container runs once
    /// this returns.
    pub fn create(name: &str) -> ContainerBuilder {
        let opt = format!("image={}", image());
        docker(&[
            "buildx",
            "create",
            "--name",
            name,
            "--driver",
            "docker-container",
            "--driver-opt",
            &opt,
            "--bootstrap",
        ]);
        ContainerBuilder { name: name.to_string(), removed: false }
    }

    /// The name of its (first node's) container.
    pub fn container(&self) -> String {
        format!("buildx_buildkit_{}0", self.name)
    }

    /// Starts `docker buildx build --builder NAME` of `context` with `args`.
    pub fn build(&self, context: &Context, args: &[&str]) -> Build {
        let mut command = Command::new("docker");
        command.args(["buildx", "build", "--builder", &self.name, "--progress=rawjson"]).args(args).arg(context.path());
        Build::spawn(command)
    }

    /// `docker stop` of its container.
    pub fn stop(&self) {
        docker(&["stop", &self.container()]);
    }

    /// `docker start` of its container.
    pub fn start(&self) {
        docker(&["start", &self.container()]);
    }

    /// `docker buildx rm`: the container and its state go.
    pub fn remove(mut self) {
        docker(&["buildx", "rm", &self.name]);
        self.removed = true;
    }
}

impl Drop for ContainerBuilder {
    fn drop(&mut self) {
        if !self.removed {
            let _ = StdCommand::new("docker").args(["buildx", "rm", "--force", &self.name]).output();
        }
    }
}
