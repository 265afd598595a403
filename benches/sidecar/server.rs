//! The processes under test: the sidecar binary and the bare axum ceiling,
//! each started on port 0 and found through the JSON file it writes once its
//! listeners are bound.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};

/// The `--ready-file` contents (the bare server writes the same shape, with
/// no gRPC or metrics listener).
#[derive(Debug, Serialize, Deserialize)]
pub struct Ready {
    pub pid: u32,
    pub http_addr: SocketAddr,
    pub grpc_addr: Option<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
}

pub struct Server {
    child: Child,
    /// Webhook base URL, `http://127.0.0.1:P`.
    pub http: String,
    /// gRPC URL, `http://127.0.0.1:Q`; `None` for the bare server.
    pub grpc: Option<String>,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// SIGTERM (graceful shutdown), then kill if it takes longer than 30 s.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        let _ = self.child.kill().await;
    }
}

/// Starts `command` with its stderr going to `log`, and waits until the ready
/// file at `ready` names this very process.
async fn spawn_ready(mut command: Command, ready: &Path, log: &Path) -> anyhow::Result<Server> {
    // A file left by an earlier run must not be mistaken for this one.
    let _ = std::fs::remove_file(ready);
    let stderr =
        std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let mut child = command
        .stdout(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the server process")?;
    let started = Instant::now();
    let found = loop {
        if let Some(found) = std::fs::read_to_string(ready)
            .ok()
            .and_then(|text| serde_json::from_str::<Ready>(&text).ok())
            .filter(|found| Some(found.pid) == child.id())
        {
            break found;
        }
        let log_text = || std::fs::read_to_string(log).unwrap_or_default();
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "server exited ({status}) before it was ready:\n{}",
                log_text()
            );
        }
        if started.elapsed() > Duration::from_secs(60) {
            anyhow::bail!(
                "server wrote no {} within 60 s:\n{}",
                ready.display(),
                log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    Ok(Server {
        child,
        http: format!("http://{}", found.http_addr),
        grpc: found.grpc_addr.map(|a| format!("http://{a}")),
    })
}

/// The sidecar on loopback port 0 over `database`, signature check off;
/// `work` holds its ready file and log.
pub async fn spawn_sidecar(exe: &Path, database: &Path, work: &Path) -> anyhow::Result<Server> {
    let ready = work.join("sidecar.ready.json");
    let mut command = Command::new(exe);
    command
        .args([
            "serve",
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
        ])
        .args(["--metrics-addr", "off", "--signature", "off"])
        .arg("--database")
        .arg(database)
        // Its own spool: replicas of one PostgreSQL database would share
        // the default one, which a second process is refused.
        .arg("--spool-dir")
        .arg(work.join("spool"))
        .arg("--ready-file")
        .arg(&ready)
        .env("SIDECAR_LOG", "warn");
    let server = spawn_ready(command, &ready, &work.join("sidecar.log")).await?;
    anyhow::ensure!(
        server.grpc.is_some(),
        "the sidecar reported no gRPC address"
    );
    Ok(server)
}

/// This benchmark binary again, as the bare axum handler.
pub async fn spawn_bare(work: &Path) -> anyhow::Result<Server> {
    let ready = work.join("bare.ready.json");
    let mut command = Command::new(std::env::current_exe()?);
    command.arg("bare-server").arg("--ready-file").arg(&ready);
    spawn_ready(command, &ready, &work.join("bare.log")).await
}

/// The ceiling: read the body, answer the same static XML, store nothing.
pub async fn bare_server(ready: PathBuf) -> anyhow::Result<()> {
    use axum::{Router, body::Bytes, http::header, routing::post};
    const REPLY: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response onHangup=\"http://127.0.0.1/api/v1/sipgate/in\" onAnswer=\"http://127.0.0.1/api/v1/sipgate/in\"/>\n";
    async fn handler(_body: Bytes) -> ([(header::HeaderName, &'static str); 1], &'static str) {
        (
            [(header::CONTENT_TYPE, "application/xml; charset=UTF-8")],
            REPLY,
        )
    }
    let router = Router::new().route("/api/v1/sipgate/{direction}", post(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let found = Ready {
        pid: std::process::id(),
        http_addr: listener.local_addr()?,
        grpc_addr: None,
        metrics_addr: None,
    };
    // Written whole, then renamed, like the sidecar's own ready file.
    let temporary = ready.with_extension("tmp");
    std::fs::write(&temporary, serde_json::to_string(&found)?)?;
    std::fs::rename(&temporary, &ready)?;
    axum::serve(listener, router).await?;
    Ok(())
}

/// Resident memory of `pid` in bytes (0 where /proc is unavailable).
pub fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// CPU time `pid` has used so far (user, system), from /proc (zero where it
/// is unavailable).
pub fn cpu_time(pid: u32) -> (Duration, Duration) {
    // Fields 14 and 15 of /proc/pid/stat, after the parenthesised name.
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Some((
                fields.get(11)?.parse::<u64>().ok()?,
                fields.get(12)?.parse::<u64>().ok()?,
            ))
        })
        .unwrap_or((0, 0));
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let at = |t: u64| Duration::from_micros(t * 1_000_000 / hz);
    (at(ticks.0), at(ticks.1))
}
