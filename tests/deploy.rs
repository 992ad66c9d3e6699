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

/// kubernetes-validate, as scripts/provision.sh installs it.
fn kubernetes_validate() -> PathBuf {
    let prefix = std::env::var("BUILDKIT_EXPORTER_TOOLS").unwrap_or_else(|_| "/opt/buildkit-exporter-tools".into());
    let path = PathBuf::from(prefix).join("kubernetes-validate/bin/kubernetes-validate");
    assert!(path.is_file(), "{} missing: run scripts/provision.sh", path.display());
    path
}

/// Runs kubernetes-validate against Kubernetes 1.31, strictly (unknown fields are errors), on
/// `files`; its status and output.
fn validate(files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(kubernetes_validate())
        .args(["--kubernetes-version", "1.31.0", "--strict"])
        .args(files)
        .output()
        .expect("kubernetes-validate");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
#[ignore = "needs kubernetes-validate: run scripts/test.sh"]
fn kubernetes_manifests_pass_the_1_31_schema() {
    let dir = repo_file("deploy/kubernetes");
    let kustomization: serde_norway::Value =
        serde_norway::from_str(&read_repo_file("deploy/kubernetes/kustomization.yaml")).unwrap();
    let resources: Vec<PathBuf> =
        kustomization["resources"].as_sequence().unwrap().iter().map(|r| dir.join(r.as_str().unwrap())).collect();
    // Every manifest of the directory is a resource of the kustomization.
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() != "kustomization.yaml" {
            assert!(resources.contains(&path), "{} is not in kustomization.yaml", path.display());
        }
    }
    let (ok, out) = validate(&resources);
    assert!(ok, "{out}");
    // Every core resource passed; only the prometheus-operator's have no schema in Kubernetes.
    for kind in ["namespace/", "daemonset/", "service/buildkit-exporter", "deployment/buildkitd", "service/buildkitd"] {
        assert!(out.lines().any(|l| l.contains("passed for resource") && l.contains(kind)), "{kind}:\n{out}");
    }
    for line in out.lines().filter(|l| !l.contains("passed for resource")) {
        assert!(line.contains("Couldn't find schema for kind") && line.contains("monitoring.coreos.com/v1"), "{line}");
    }

    // The validator does refuse: the same Deployment with a field Kubernetes does not have.
    let broken = tempfile::tempdir().unwrap();
    let manifest = broken.path().join("buildkitd.yaml");
    let text = read_repo_file("deploy/kubernetes/buildkitd.yaml").replacen("  replicas: 1", "  replicass: 1", 1);
    std::fs::write(&manifest, text).unwrap();
    let (ok, out) = validate(&[manifest]);
    assert!(!ok && out.contains("replicass"), "{out}");
}

#[test]
fn the_buildkitd_sidecar_reads_the_socket_buildkitd_serves_on_the_volume_they_share() {
    let text = read_repo_file("deploy/kubernetes/buildkitd.yaml");
    let documents: Vec<serde_norway::Value> =
        serde_norway::Deserializer::from_str(&text).map(|d| serde::Deserialize::deserialize(d).unwrap()).collect();
    let deployment = documents.iter().find(|d| d["kind"] == "Deployment").expect("a Deployment");
    let containers = deployment["spec"]["template"]["spec"]["containers"].as_sequence().unwrap();
    let container = |name: &str| containers.iter().find(|c| c["name"] == name).unwrap();
    let (buildkitd, exporter) = (container("buildkitd"), container("exporter"));
    let mount = |c: &serde_norway::Value, volume: &str| -> String {
        let mounts = c["volumeMounts"].as_sequence().unwrap();
        let found = mounts.iter().find(|m| m["name"] == volume).expect("mounted");
        found["mountPath"].as_str().unwrap().to_string()
    };
    let args: Vec<&str> = buildkitd["args"].as_sequence().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    let socket = args.iter().find_map(|a| a.strip_prefix("unix://")).expect("a unix socket");
    assert!(socket.starts_with(&format!("{}/", mount(buildkitd, "socket"))), "{socket}");
    assert_eq!(mount(buildkitd, "socket"), mount(exporter, "socket"));
    let env = exporter["env"].as_sequence().unwrap();
    let source = env.iter().find(|e| e["name"] == "BUILDKIT_EXPORTER_SOURCE").unwrap()["value"].as_str().unwrap();
    assert!(source.ends_with(&format!("=buildkitd+unix://{socket}")), "{source}");
    // The socket's group is the exporter's, which runs as non-root.
    let group = args.iter().position(|a| *a == "--group").map(|i| args[i + 1]).expect("--group");
    let security = &exporter["securityContext"];
    assert_eq!(security["runAsGroup"].as_u64().map(|g| g.to_string()).as_deref(), Some(group));
    assert_eq!(security["runAsNonRoot"], true);
}
