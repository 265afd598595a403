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
