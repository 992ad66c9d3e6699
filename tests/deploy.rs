//! The deploy bundle: the compose file as `docker compose` reads it, port 9817 everywhere, and the
//! image's build context holding all that cargo needs.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use testkit::{read_repo_file, repo_file};

const COMPOSE: &str = "deploy/docker-compose.yml";

#[test]
#[ignore = "needs the docker CLI with compose: run scripts/test.sh"]
fn compose_file_is_valid() {
    let out = Command::new("docker")
        .args(["compose", "--file", COMPOSE, "config", "--format", "json"])
        .current_dir(repo_file(""))
        .output()
        .expect("docker CLI");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "docker compose config (compose v2 comes from scripts/provision.sh):\n{stderr}");
    let config: Value = serde_json::from_slice(&out.stdout).expect("compose config as JSON");
    let services = &config["services"];
    for service in ["exporter", "prometheus", "grafana"] {
        assert!(services[service].is_object(), "no service {service}: {config}");
    }
    let exporter = &services["exporter"];
    assert!(exporter["build"]["dockerfile"].as_str().unwrap().ends_with("Dockerfile"), "{exporter}");
    let ports: Vec<&Value> = exporter["ports"].as_array().unwrap().iter().collect();
    assert!(ports.iter().any(|p| p["target"] == 9817 && p["published"] == "9817"), "{ports:?}");
    let socket = exporter["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["target"] == "/var/run/docker.sock")
        .expect("engine socket");
    assert_eq!(socket["read_only"], true, "{socket}");
    assert!(exporter["user"].as_str().is_some_and(|u| !u.starts_with('0') && u != "root"), "runs as root: {exporter}");

    let mounts = |service: &str| -> Vec<String> {
        services[service]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| format!("{} -> {}", v["source"], v["target"]))
            .collect()
    };
    let prometheus = mounts("prometheus").join("\n");
    assert!(prometheus.contains("deploy/prometheus\" -> \"/etc/prometheus\""), "{prometheus}");
    let grafana = mounts("grafana").join("\n");
    assert!(grafana.contains("deploy/grafana/provisioning\" -> \"/etc/grafana/provisioning\""), "{grafana}");
    assert!(
        grafana.contains("grafana/buildkit-exporter.json\" -> \"/etc/grafana/dashboards/buildkit-exporter.json\""),
        "{grafana}"
    );
    // Everything mounted exists.
    for service in ["prometheus", "grafana"] {
        for volume in services[service]["volumes"].as_array().unwrap() {
            if volume["type"] == "bind" {
                let source = PathBuf::from(volume["source"].as_str().unwrap());
                assert!(source.exists(), "{service} mounts missing {}", source.display());
            }
        }
    }
}

#[test]
fn deploy_files_use_port_9817() {
    for path in [
        COMPOSE,
        "deploy/Dockerfile",
        "deploy/prometheus/prometheus.yml",
        "deploy/kubernetes/daemonset.yaml",
        "deploy/kubernetes/service.yaml",
        "deploy/systemd/buildkit-exporter.service",
        "deploy/README.md",
    ] {
        assert!(read_repo_file(path).contains("9817"), "{path} does not use port 9817");
    }
}

/// The image's build context (what deploy/Dockerfile.dockerignore lets through) holds all that
/// cargo needs to load the manifest and build the binary.
#[test]
fn docker_build_context_is_complete() {
    let root = repo_file("");
    let ignore = std::fs::read_to_string(root.join("deploy/Dockerfile.dockerignore")).unwrap();
    let kept: Vec<&str> = ignore.lines().filter_map(|l| l.strip_prefix('!')).collect();
    let context = tempfile::tempdir().unwrap();
    for path in &kept {
        // Through a shell, so that patterns like `benches/*.rs` expand as in the ignore file.
        let copy = format!("cp -r --parents {} '{}'", path.trim_end_matches('/'), context.path().display());
        let status = Command::new("sh").args(["-c", &copy]).current_dir(&root).status().unwrap();
        assert!(status.success(), "copy {path}");
    }
    // `check` loads every target of the manifest (metadata alone does not) and compiles the
    // binary; the shared target directory keeps it to the crate itself.
    let output = Command::new("cargo")
        .args(["check", "--locked", "--offline", "--bin", "buildkit-exporter"])
        .env("CARGO_TARGET_DIR", root.join("target/docker-context"))
        .current_dir(context.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let dockerfile = std::fs::read_to_string(root.join("deploy/Dockerfile")).unwrap();
    for path in kept.iter().filter(|p| !p.starts_with("Cargo")) {
        assert!(
            dockerfile.contains(&format!("COPY {}", path.trim_end_matches('/'))),
            "deploy/Dockerfile copies {path}"
        );
    }
}
