//! `serve` as a process: the ready file scripts and tests start it with.

mod common;

use std::time::Duration;

use common::{process::spawn_binary, *};

#[tokio::test]
async fn the_ready_file_names_the_process_and_every_bound_listener() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("ready.db").display().to_string();
    let server = spawn_binary(
        dir.path(),
        &["--metrics-addr", "127.0.0.1:0", "--database", &database],
    )
    .await;
    let ready = server.ready.as_object().unwrap();
    let mut keys: Vec<&str> = ready.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["grpc_addr", "http_addr", "metrics_addr", "pid"]);
    assert_eq!(
        server.ready["pid"].as_u64(),
        server.child.id().map(u64::from)
    );

    // Every address answers at once: the file comes after the binds.
    let client = reqwest::Client::new();
    let health = client
        .get(format!("{}/healthz", server.http))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let metrics_addr = server.ready["metrics_addr"].as_str().unwrap();
    assert!(!metrics_addr.ends_with(":0"), "{metrics_addr}");
    let metrics = client
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let channel = tonic::transport::Channel::from_shared(server.grpc.clone())
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    let status = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );

    // Written whole and renamed into place: no temporary file is left.
    let leftovers: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(server.ready_file.exists());
}

#[tokio::test]
async fn ready_json_shows_a_disabled_metrics_listener_as_null() {
    let server = TestServer::start().await;
    let running = server.running.as_ref().unwrap();
    let ready: serde_json::Value = serde_json::from_str(&running.ready_json()).unwrap();
    assert_eq!(
        ready,
        serde_json::json!({
            "pid": std::process::id(),
            "http_addr": running.http_addr.to_string(),
            "grpc_addr": running.grpc_addr.to_string(),
            "metrics_addr": null,
        })
    );

    let path = server.dir.path().join("ready.json");
    running.write_ready_file(&path).unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        running.ready_json() + "\n"
    );
}

#[tokio::test]
async fn an_unwritable_ready_file_stops_serve_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let ready_file = dir.path().join("missing-dir").join("ready.json");
    let database = dir.path().join("sidecar.db");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_sipgate-sidecar"))
        .args([
            "serve",
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "off",
        ])
        .arg("--database")
        .arg(&database)
        .arg("--ready-file")
        .arg(&ready_file)
        .env("SIDECAR_LOG", "warn")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), output)
        .await
        .expect("serve gives up at once")
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&ready_file.display().to_string()),
        "{stderr}"
    );
}

#[tokio::test]
async fn serve_warns_at_start_that_the_signature_check_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("warn.db").display().to_string();
    // spawn_binary starts with --signature off on 127.0.0.1: one warning,
    // not the one about an open public listener.
    let mut server = spawn_binary(
        dir.path(),
        &["--metrics-addr", "off", "--database", &database],
    )
    .await;
    let log_path = dir.path().join("server.log");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log.contains("signature check is off") || tokio::time::Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let line = log
        .lines()
        .find(|l| l.contains("signature check is off"))
        .unwrap_or_else(|| panic!("no warning in the server log:\n{log}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("--signature require"), "{line}");
    assert!(!log.contains("reachable from other hosts"), "{log}");
    server.child.kill().await.unwrap();
}

/// The `# ` lines that show what a command prints: those right after a
/// command (or after another such line); a `#` line after a blank line is a
/// remark.
fn shown_output(block: &str) -> Vec<String> {
    let mut shown = Vec::new();
    let mut after_command = false;
    for line in block.lines() {
        if line.trim().is_empty() {
            after_command = false;
        } else if let Some(text) = line.strip_prefix('#') {
            if after_command {
                shown.push(text.strip_prefix(' ').unwrap_or(text).to_string());
            }
        } else {
            after_command = true;
        }
    }
    shown
}

/// `line` with its runs of spaces made one and its dates and times masked.
fn comparable(line: &str) -> String {
    line.split_whitespace()
        .map(|token| {
            let timelike = token.len() >= 8
                && token.starts_with(|c: char| c.is_ascii_digit())
                && (token.contains(':') || token.contains('-'))
                && token
                    .chars()
                    .all(|c| c.is_ascii_digit() || "-:.TZ".contains(c));
            if timelike { "<time>" } else { token }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The README's quick start, pasted into bash as written (only the binary,
/// the ports and, for `watch`, the Ctrl-C differ): it prints what it shows.
#[tokio::test]
async fn the_readme_quick_start_prints_what_it_shows() {
    let blocks = readme_blocks("## Quick start", "## Pointing sipgate");
    assert_eq!(blocks.len(), 4, "run, start, watch, stop");
    let (start, watch, stop) = (&*blocks[1], &*blocks[2], &*blocks[3]);
    assert!(
        watch.starts_with("\"$sidecar\" watch --after-seq 0\n"),
        "{watch}"
    );

    // The script listens on fixed ports, picked free just before; another
    // server on the machine can take one in between. Only that is retried.
    let mut attempts = 0;
    let (http, output) = loop {
        attempts += 1;
        let (http, output) = run_quick_start(start, stop).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if attempts < 3 && stderr.contains("cannot listen on") {
            eprintln!("a port was taken in between; again:\n{stderr}");
            continue;
        }
        break (http, output);
    };
    let stdout = String::from_utf8(output.stdout)
        .unwrap()
        .replace(&format!("localhost:{http}"), "localhost:8080");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let printed: Vec<String> = stdout.lines().map(comparable).collect();
    let mut parts = printed.split(|l| l.starts_with("--- "));
    let mut next = || parts.next().unwrap_or_default().to_vec();
    let (started, watched, stopped) = (next(), next(), next());
    let expected = |block: &str| -> Vec<String> {
        shown_output(block).iter().map(|l| comparable(l)).collect()
    };
    assert_eq!(started, expected(start), "stderr:\n{stderr}");
    assert_eq!(started.len(), 12, "the warning and three outputs");
    assert_eq!(watched, expected(watch), "stderr:\n{stderr}");
    assert_eq!(stopped, ["stopped", "removed"], "stderr:\n{stderr}");
}

/// Runs the quick start's blocks in bash on two free ports: the HTTP port
/// and what bash printed.
async fn run_quick_start(start: &str, stop: &str) -> (u16, std::process::Output) {
    let (http, grpc) = (free_port(), free_port());
    let adapt = |block: &str| {
        block
            .replace(
                "$PWD/target/release/sipgate-sidecar",
                env!("CARGO_BIN_EXE_sipgate-sidecar"),
            )
            .replace("localhost:8080", &format!("localhost:{http}"))
            .replace(
                "127.0.0.1:8080",
                &format!("127.0.0.1:{http} --grpc-addr 127.0.0.1:{grpc} --metrics-addr off"),
            )
    };
    // Ctrl-C, for a script: stop watch once it printed the log so far.
    let watch_until_caught_up = r#"
"$sidecar" watch --after-seq 0 >"$dir/watch.out" &
w=$!
for i in $(seq 300); do [ "$(grep -c . "$dir/watch.out")" -ge 3 ] && break; sleep 0.1; done
kill $w; wait $w; cat "$dir/watch.out"
"#;
    let script = format!(
        "{}kill -0 $pid 2>/dev/null || cat \"$dir/server.log\" >&2\n\
         echo '--- watch'\n{watch_until_caught_up}echo '--- stop'\n{}\
         kill -0 $pid 2>/dev/null || echo stopped; [ -e \"$dir\" ] || echo removed\n",
        adapt(start),
        adapt(stop)
    );
    let run = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("SIDECAR_SERVER", format!("http://127.0.0.1:{grpc}"))
        .env_remove("SIDECAR_LOG")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the quick start finishes")
        .unwrap();
    (http, output)
}
