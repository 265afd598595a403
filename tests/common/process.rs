//! The real binary as a child process, found through its `--ready-file`.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use tokio::process::{Child, Command};

pub struct Spawned {
    pub child: Child,
    /// The parsed ready file.
    pub ready: serde_json::Value,
    pub ready_file: PathBuf,
    /// `http://` base of the webhook listener.
    pub http: String,
    /// `http://` URL of the gRPC listener.
    pub grpc: String,
}

/// Starts `sipgate-sidecar serve` on loopback port 0 with the signature
/// check off, plus `flags`, and waits until its ready file in `dir` names
/// this process. Its stderr goes to `dir/server.log`, shown on failure.
pub async fn spawn_binary(dir: &Path, flags: &[&str]) -> Spawned {
    spawn_binary_logging(dir, flags, "warn").await
}

/// [`spawn_binary`] with `SIDECAR_LOG` set to `log` (e.g. `info`).
pub async fn spawn_binary_logging(dir: &Path, flags: &[&str], log_filter: &str) -> Spawned {
    spawn_binary_env(dir, flags, log_filter, &[]).await
}

/// [`spawn_binary_logging`] with more environment variables.
pub async fn spawn_binary_env(
    dir: &Path,
    flags: &[&str],
    log_filter: &str,
    env: &[(&str, &str)],
) -> Spawned {
    let ready_file = dir.join("ready.json");
    let log = dir.join("server.log");
    let _ = std::fs::remove_file(&ready_file);
    let mut child = Command::new(env!("CARGO_BIN_EXE_sipgate-sidecar"))
        .args([
            "serve",
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
            "--signature",
            "off",
        ])
        .arg("--ready-file")
        .arg(&ready_file)
        .args(flags)
        .env("SIDECAR_LOG", log_filter)
        // A server on PostgreSQL keeps its spool in its state directory:
        // one per test directory, as one per host in production.
        .env("STATE_DIRECTORY", dir.join("state"))
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts");
    let started = Instant::now();
    let ready: serde_json::Value = loop {
        if let Some(ready) = std::fs::read_to_string(&ready_file)
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .filter(|ready| ready["pid"].as_u64() == child.id().map(u64::from))
        {
            break ready;
        }
        let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "server exited ({status}) before it was ready:\n{}",
                log_text()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no ready file within 30 s:\n{}",
            log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let address = |key: &str| {
        let value = ready[key].as_str();
        format!(
            "http://{}",
            value.unwrap_or_else(|| panic!("{key} in {ready}"))
        )
    };
    Spawned {
        http: address("http_addr"),
        grpc: address("grpc_addr"),
        child,
        ready,
        ready_file,
    }
}

/// Stops `child` the way systemd does (SIGTERM) and waits for its exit.
pub async fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let pid = child.id().expect("the child runs") as libc::pid_t;
    // SAFETY: kill(2) with a pid this test started and a valid signal.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the server stops within 60 s of SIGTERM")
        .expect("wait for the server")
}
