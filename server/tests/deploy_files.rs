//! The deployment files under `examples/deploy/` must stay true to the binary: ports,
//! paths, flags, subcommands and `CONFHUB_*` names that exist, and probes that answer.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn deploy(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/deploy")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `CONFHUB_*` variable the binary reads.
fn known_env() -> BTreeSet<String> {
    let mut names: BTreeSet<String> = confhub_server::settings::file::overridable_keys()
        .map(|(_, env)| env)
        .collect();
    names.insert("CONFHUB_CONFIG".into());
    names
}

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_confhub"))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "confhub {args:?} --help failed");
    String::from_utf8(out.stdout).unwrap()
}

/// Every `--flag` in `args` is one `confhub <sub>` accepts.
fn assert_flags_exist(sub: &str, args: &[String], what: &str) {
    let help = help(&[sub]);
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        let name = flag.split('=').next().unwrap();
        assert!(
            help.contains(&format!("{name} ")) || help.contains(&format!("{name}\n")),
            "{what}: `confhub {sub}` has no flag {name}"
        );
    }
}

fn env_names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("CONFHUB_") {
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        out.insert(name);
    }
    out
}

fn port_of(listen: &str) -> u16 {
    listen.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn dockerfile_matches_the_binary() {
    let docker = deploy("Dockerfile");
    for name in env_names_in(&docker) {
        assert!(
            known_env().contains(&name),
            "Dockerfile: unknown variable {name}"
        );
    }
    let expose: u16 = docker
        .lines()
        .find_map(|l| l.strip_prefix("EXPOSE "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let listen = docker
        .split("CONFHUB_LISTEN=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    assert_eq!(
        port_of(listen),
        expose,
        "EXPOSE and CONFHUB_LISTEN disagree"
    );
    let data_dir = docker
        .split("CONFHUB_DATA_DIR=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    assert!(
        docker.contains(&format!("VOLUME {data_dir}")),
        "the data dir must be the volume"
    );
    assert!(docker.contains("USER 10001"), "runs as non-root");
    // HEALTHCHECK and ENTRYPOINT use subcommands and flags that exist.
    let health = docker
        .lines()
        .skip_while(|l| !l.starts_with("HEALTHCHECK"))
        .nth(1)
        .unwrap();
    let cmd: Vec<String> =
        serde_json::from_str(health.trim().strip_prefix("CMD ").unwrap()).unwrap();
    assert_eq!(&cmd[..2], ["confhub", "health"]);
    assert_flags_exist("health", &cmd[2..], "HEALTHCHECK");
    assert!(
        cmd.iter()
            .any(|a| a.contains(&format!(":{expose}/healthz"))),
        "HEALTHCHECK probes the exposed port"
    );
    let entry: Vec<String> = serde_json::from_str(
        docker
            .lines()
            .find_map(|l| l.strip_prefix("ENTRYPOINT "))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(entry, ["confhub", "serve"]);
}

fn k8s_docs() -> Vec<serde_json::Value> {
    let text = deploy("kubernetes.yaml");
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

#[test]
fn kubernetes_manifest_matches_the_binary() {
    let docs = k8s_docs();
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"] == k)
            .unwrap_or_else(|| panic!("no {k}"))
            .clone()
    };
    let (secret, deployment, service) = (kind("Secret"), kind("Deployment"), kind("Service"));
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let env: Vec<(String, serde_json::Value)> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e.clone()))
        .collect();
    for (name, _) in &env {
        if name.starts_with("CONFHUB_") {
            assert!(
                known_env().contains(name),
                "kubernetes.yaml: unknown variable {name}"
            );
        }
    }
    let value = |n: &str| {
        env.iter()
            .find(|(k, _)| k == n)
            .and_then(|(_, e)| e["value"].as_str().map(str::to_string))
    };
    let port = container["ports"][0]["containerPort"].as_u64().unwrap() as u16;
    assert_eq!(port_of(&value("CONFHUB_LISTEN").unwrap()), port);
    let port_name = container["ports"][0]["name"].as_str().unwrap();
    assert_eq!(service["spec"]["ports"][0]["targetPort"], port_name);
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    // Secrets referenced exist in the Secret.
    for (_, e) in &env {
        if let Some(key) = e["valueFrom"]["secretKeyRef"]["key"].as_str() {
            assert!(
                secret["stringData"][key].is_string(),
                "Secret has no key {key}"
            );
        }
    }
    // The data dir is a mounted volume; the settings file is mounted where --config points.
    let mounts = container["volumeMounts"].as_array().unwrap();
    assert!(mounts
        .iter()
        .any(|m| m["mountPath"] == value("CONFHUB_DATA_DIR").unwrap().as_str()));
    let args: Vec<String> = serde_json::from_value(container["args"].clone()).unwrap();
    assert_flags_exist("serve", &args, "kubernetes args");
    let config = &args[args.iter().position(|a| a == "--config").unwrap() + 1];
    let (dir, file) = config.rsplit_once('/').unwrap();
    assert!(
        mounts.iter().any(|m| m["mountPath"] == dir),
        "--config dir {dir} is not mounted"
    );

    // The settings file in the Secret is valid for the binary (with the placeholders filled in).
    let settings = secret["stringData"][file].as_str().unwrap().replace(
        "REPLACE_WITH_SHA256_OF_TOKEN",
        &confhub_server::auth::token_hash("a"),
    );
    let settings = settings.replace(
        "REPLACE_WITH_SHA256_OF_ADMIN_TOKEN",
        &confhub_server::auth::token_hash("b"),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(file);
    std::fs::write(&path, settings).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_confhub"))
        .args(["serve", "--print-settings", "--repo", "/x", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "settings in the Secret: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn systemd_unit_matches_the_binary() {
    let unit = deploy("confhub.service");
    for name in env_names_in(&unit) {
        assert!(
            known_env().contains(&name),
            "confhub.service: unknown variable {name}"
        );
    }
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    let parts: Vec<String> = exec.split_whitespace().map(str::to_string).collect();
    assert!(parts[0].ends_with("/confhub"));
    assert_eq!(parts[1], "serve");
    assert_flags_exist("serve", &parts[2..], "ExecStart");
    let data_dir = unit
        .split("CONFHUB_DATA_DIR=")
        .nth(1)
        .unwrap()
        .lines()
        .next()
        .unwrap();
    assert!(unit.contains(&format!("ReadWritePaths={data_dir}")));
    assert!(unit.contains("StateDirectory=confhub") && data_dir == "/var/lib/confhub");
}

/// Start the binary with the Deployment's environment (port and data dir moved to
/// temporary ones) and check its probes answer where the manifest says.
#[test]
fn the_probes_answer_with_the_manifest_environment() {
    let docs = k8s_docs();
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let port = common::free_port();
    let data = tempfile::tempdir().unwrap();
    let example: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config-repo");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_confhub"));
    cmd.arg("serve");
    for e in container["env"].as_array().unwrap() {
        if let (Some(name), Some(value)) = (e["name"].as_str(), e["value"].as_str()) {
            cmd.env(name, value);
        }
    }
    cmd.env("CONFHUB_LISTEN", format!("127.0.0.1:{port}"))
        .env("CONFHUB_DATA_DIR", data.path())
        .env("CONFHUB_REPO", &example)
        .env("CONFHUB_DEV", "true")
        .env_remove("CONFHUB_BRANCH")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut answered = BTreeSet::new();
    for probe in ["readinessProbe", "livenessProbe"] {
        let path = container[probe]["httpGet"]["path"].as_str().unwrap();
        loop {
            let out = Command::new(env!("CARGO_BIN_EXE_confhub"))
                .args(["health", "--url", &format!("http://127.0.0.1:{port}{path}")])
                .stderr(Stdio::null())
                .status()
                .unwrap();
            if out.success() {
                answered.insert(path);
                break;
            }
            assert!(Instant::now() < deadline, "{probe} {path} never answered");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(answered.len(), 2);
}
