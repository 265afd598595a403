//! The README's deployment sections, followed as written into a temporary
//! root: the systemd install (checked with `systemd-analyze verify --root`)
//! and the compose scenario next to Zammad's stack (checked with
//! `docker-compose config`, which needs no Docker daemon). Both end with the
//! binary's own `serve --check-config` under the environment the unit or the
//! container gives it.

mod common;

use std::{
    collections::BTreeMap,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::Command,
};

use common::readme_blocks;
use sipgate_sidecar::config::SECRET_VARIABLES;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_sipgate-sidecar");

/// Whether `tool` runs; under CI (which installs it) it must.
fn have(tool: &str, package: &str) -> bool {
    let found = Command::new(tool).arg("--version").output().is_ok();
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is missing (bash .ci/run installs Debian's {package} package)"
        );
        eprintln!("SKIPPED: {tool} not installed");
    }
    found
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn run_script(script: &str, dir: &Path, envs: &[(&str, &Path)]) {
    let mut command = Command::new("bash");
    command
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(dir);
    for (k, v) in envs {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "the README's steps failed:\n{script}\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.trim().is_empty(),
        "the README's steps printed findings:\n{stderr}"
    );
}

/// The environment variables `serve` reads (its `--help`).
fn serve_variables() -> Vec<String> {
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    help.split("[env: ")
        .skip(1)
        .map(|s| s.split(['=', ']']).next().unwrap().to_string())
        .collect()
}

/// Every variable is one `serve` reads, or the `_FILE` form of a secret.
fn assert_known_variables<'a>(names: impl IntoIterator<Item = &'a String>) {
    let known = serve_variables();
    assert!(known.len() > 40, "{known:?}");
    for name in names {
        let secret_file = name
            .strip_suffix("_FILE")
            .is_some_and(|base| SECRET_VARIABLES.contains(&base));
        assert!(
            known.contains(name) || secret_file,
            "{name} is not a variable `sipgate-sidecar serve` reads"
        );
    }
}

/// `serve --check-config` under exactly `env` (and PATH).
fn check_config(program: &Path, args: &[&str], env: &BTreeMap<String, String>) {
    let out = Command::new(program)
        .args(args)
        .arg("--check-config")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .envs(env)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "serve refuses the environment {env:?}:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("webhook-token = \"<redacted>\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("zammad-cti-url = \"<redacted>\""),
        "{stdout}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

/// A unit file's `Key=value` lines, in order (comments and sections left out).
fn unit_settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_readme_systemd_install_into_a_temp_root_gives_a_unit_that_loads_and_starts() {
    if !have("systemd-analyze", "systemd") || !have("openssl", "openssl") {
        return;
    }
    let blocks = readme_blocks("**systemd.**", "**Release binary");
    assert_eq!(blocks.len(), 2, "the install and the Zammad drop-in");

    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    // The checkout the steps run in: the binary `cargo build` gives, and deploy/.
    std::fs::create_dir_all(work.path().join("target/release")).unwrap();
    std::fs::copy(BIN, work.path().join("target/release/sipgate-sidecar")).unwrap();
    std::fs::create_dir_all(work.path().join("deploy")).unwrap();
    copy_dir(
        &Path::new(ROOT).join("deploy/systemd"),
        &work.path().join("deploy"),
    );
    // What a system has before the steps: /usr/local/bin, /etc/systemd/system,
    // and for `systemd-analyze verify --root` the system's units and kill.
    for dir in [
        "usr/local/bin",
        "etc/systemd/system",
        "usr/lib/systemd",
        "usr/bin",
    ] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    copy_dir(
        Path::new("/usr/lib/systemd/system"),
        &root.join("usr/lib/systemd"),
    );
    std::fs::copy("/usr/bin/kill", root.join("usr/bin/kill")).unwrap();
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();

    let verify = "systemd-analyze verify --root=\"$ROOT\" sipgate-sidecar.service";
    let mut script = String::new();
    for block in &blocks {
        for line in block.lines() {
            if line.starts_with("cargo build") || line.starts_with("systemctl ") {
                continue; // built already; no systemd runs here
            }
            if line.starts_with("systemd-analyze verify ") {
                script.push_str(verify);
            } else {
                let line = line.split("  # ").next().unwrap();
                script.push_str(
                    &line
                        .replace(" /etc/", " \"$ROOT\"/etc/")
                        .replace(" /usr/local/", " \"$ROOT\"/usr/local/"),
                );
            }
            script.push('\n');
        }
    }
    // And once more with the drop-in in place.
    script.push_str(verify);
    script.push('\n');
    run_script(&script, work.path(), &[("ROOT", &root)]);

    // The unit and its drop-in as installed.
    let unit = root.join("etc/systemd/system/sipgate-sidecar.service");
    let mut settings = unit_settings(&std::fs::read_to_string(&unit).unwrap());
    let dropins = root.join("etc/systemd/system/sipgate-sidecar.service.d");
    let mut dropin_files: Vec<PathBuf> = std::fs::read_dir(&dropins)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dropin_files.sort();
    assert!(!dropin_files.is_empty());
    for file in &dropin_files {
        settings.extend(unit_settings(&std::fs::read_to_string(file).unwrap()));
    }

    // Every credential the unit loads exists, readable by root only; systemd
    // copies each into the service's credentials directory (%d).
    let credentials = work.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    let state = work.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let mut loaded = Vec::new();
    let mut env = BTreeMap::new();
    let mut exec_start = None;
    for (key, value) in &settings {
        match key.as_str() {
            "LoadCredential" => {
                let (id, path) = value.split_once(':').unwrap();
                let file = root.join(path.trim_start_matches('/'));
                let meta = std::fs::metadata(&file).unwrap_or_else(|e| {
                    panic!("the unit loads {path}, which the steps did not create: {e}")
                });
                assert_eq!(
                    meta.permissions().mode() & 0o077,
                    0,
                    "{path} is readable by others"
                );
                assert!(meta.len() > 0, "{path} is empty");
                std::fs::copy(&file, credentials.join(id)).unwrap();
                loaded.push(id.to_string());
            }
            "EnvironmentFile" => {
                let path = value.trim_start_matches('-');
                let file = root.join(path.trim_start_matches('/'));
                let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{path}: {e}"));
                assert_eq!(
                    std::fs::metadata(&file).unwrap().permissions().mode() & 0o077,
                    0,
                    "{path} holds secrets: 0600"
                );
                for line in text.lines().map(str::trim) {
                    if let Some((k, v)) = line.split_once('=').filter(|_| !line.starts_with('#')) {
                        env.insert(k.to_string(), v.to_string());
                    }
                }
            }
            "Environment" => {
                let (k, v) = value.split_once('=').unwrap();
                env.insert(
                    k.to_string(),
                    v.replace("%d", credentials.to_str().unwrap()),
                );
            }
            "ExecStart" => exec_start = Some(value.clone()),
            _ => {}
        }
    }
    assert!(loaded.contains(&"webhook-token".to_string()), "{loaded:?}");
    assert!(loaded.contains(&"zammad-cti-url".to_string()), "{loaded:?}");
    assert_known_variables(env.keys());
    // The state directory systemd creates, here a temporary one.
    for value in env.values_mut() {
        *value = value.replace("/var/lib/sipgate-sidecar", state.to_str().unwrap());
    }
    let exec_start = exec_start.expect("ExecStart");
    let mut words = exec_start.split_whitespace();
    let program = root.join(words.next().unwrap().trim_start_matches('/'));
    let args: Vec<&str> = words.collect();
    check_config(&program, &args, &env);
}

/// A stand-in for zammad-docker-compose's `docker-compose.yml`: the services
/// the scenario names (the real file has more).
const ZAMMAD_COMPOSE: &str = "\
services:
  zammad-nginx:
    image: ghcr.io/zammad/zammad:7.1.1-0035
    command: [\"zammad-nginx\"]
    ports:
      - \"${NGINX_EXPOSE_PORT:-8080}:${NGINX_PORT:-8080}\"
  zammad-railsserver:
    image: ghcr.io/zammad/zammad:7.1.1-0035
    command: [\"zammad-railsserver\"]
";

/// The image's `ENV` settings, from the Dockerfile.
fn image_env() -> BTreeMap<String, String> {
    let dockerfile = std::fs::read_to_string(Path::new(ROOT).join("Dockerfile")).unwrap();
    let joined = dockerfile.replace("\\\n", " ");
    joined
        .lines()
        .filter_map(|l| l.strip_prefix("ENV "))
        .flat_map(|l| l.split_whitespace())
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_readme_compose_steps_give_a_service_the_sidecar_accepts() {
    if !have("docker-compose", "docker-compose") || !have("openssl", "openssl") {
        return;
    }
    let blocks = readme_blocks("**Next to Zammad's Docker Compose stack.**", "**systemd.**");
    let setup = &blocks[0];
    assert!(
        setup.contains("scenarios/add-sipgate-sidecar.yml"),
        "{setup}"
    );

    let work = tempfile::tempdir().unwrap();
    let zammad = work.path().join("zammad-docker-compose");
    std::fs::create_dir_all(zammad.join("scenarios")).unwrap();
    std::fs::write(zammad.join("docker-compose.yml"), ZAMMAD_COMPOSE).unwrap();
    std::os::unix::fs::symlink(ROOT, work.path().join("sipgate-sidecar")).unwrap();
    let mut script = String::new();
    for line in setup.lines() {
        if line.contains(" up ") {
            continue; // no Docker daemon here
        }
        if line.starts_with("chown ") && !is_root() {
            continue;
        }
        script.push_str(&line.replace("docker compose ", "docker-compose "));
        script.push('\n');
    }
    assert!(script.contains("config --quiet"), "{script}");
    run_script(&script, &zammad, &[]);

    // What Compose makes of the two files (YAML, turned into JSON by the
    // PyYAML that docker-compose itself runs on).
    let config = Command::new("sh")
        .arg("-c")
        .arg(
            "py=\"$(head -1 \"$(command -v docker-compose)\" | sed 's/^#! *//')\"; \
             docker-compose -f docker-compose.yml -f scenarios/add-sipgate-sidecar.yml config \
             | $py -c 'import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))'",
        )
        .current_dir(&zammad)
        .output()
        .unwrap();
    assert!(
        config.status.success(),
        "{}",
        String::from_utf8_lossy(&config.stderr)
    );
    let config: serde_json::Value = serde_json::from_slice(&config.stdout).unwrap();
    let service = &config["services"]["sipgate-sidecar"];
    let environment: BTreeMap<String, String> =
        serde_json::from_value(service["environment"].clone()).unwrap();
    assert_known_variables(environment.keys());
    let mounted: Vec<&str> = service["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["source"].as_str().unwrap())
        .collect();

    // The container's environment, with each mounted secret at its file.
    let state = work.path().join("volume");
    std::fs::create_dir(&state).unwrap();
    let mut env = image_env();
    assert!(env.contains_key("SIDECAR_HTTP_ADDR"), "{env:?}");
    let mut file_vars = 0;
    for (name, value) in environment {
        let value = match value.strip_prefix("/run/secrets/") {
            Some(secret) => {
                assert!(name.ends_with("_FILE"), "{name}={value}");
                assert!(mounted.contains(&secret), "{secret} is not mounted");
                let file = config["secrets"][secret]["file"].as_str().unwrap();
                let content = std::fs::read_to_string(file)
                    .unwrap_or_else(|e| panic!("secret {secret}: {file}: {e}"));
                assert!(!content.is_empty() && !content.ends_with('\n'), "{file}");
                if is_root() {
                    let meta = std::fs::metadata(file).unwrap();
                    assert_eq!(meta.uid(), 10001, "{file}: readable by the image's user");
                    assert_eq!(meta.permissions().mode() & 0o077, 0, "{file}");
                }
                file_vars += 1;
                file.to_string()
            }
            None => value,
        };
        env.insert(name, value);
    }
    assert_eq!(file_vars, 2, "the CTI URL and the webhook token from files");
    // The volume, here a temporary directory.
    for value in env.values_mut() {
        *value = value.replace("/var/lib/sipgate-sidecar", state.to_str().unwrap());
    }
    // Listen on loopback ports of this machine rather than the container's.
    env.insert("SIDECAR_HTTP_ADDR".into(), "127.0.0.1:0".into());
    env.insert("SIDECAR_METRICS_ADDR".into(), "127.0.0.1:0".into());
    check_config(Path::new(BIN), &["serve"], &env);

    // The health check asks the port the webhooks listen on.
    // Compose 1 prints the short form ("127.0.0.1:8081:8080/tcp"), 2 the long one.
    let port = &service["ports"][0];
    let target = match port.as_str() {
        Some(short) => short
            .split('/')
            .next()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap(),
        None => port["target"].as_u64().unwrap(),
    };
    assert_eq!(target, 8080, "{port}");
    let health = service["healthcheck"]["test"].to_string();
    assert!(health.contains("/dev/tcp/127.0.0.1/8080"), "{health}");
    assert!(image_env()["SIDECAR_HTTP_ADDR"].ends_with(":8080"));
}
