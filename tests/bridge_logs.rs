//! Secrets stay out of the logs: a real `serve` process with the Zammad
//! bridge pointed at a closed port, then at a receiver that redirects to the
//! same URL, logs the causes but never the CTI URL's token.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{Router, http::StatusCode, http::Uri, response::IntoResponse};
use sipgate_sidecar::{
    bridge::{Verdict, delivery::Sink, zammad::ZammadSink},
    config::DeliveryPolicy,
    proto,
};

const TOKEN: &str = "Zx9kQ2secretCtiToken";

/// Stops the server process however the test ends.
struct Server {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    async fn wait_for_log(&self, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.log();
            if log.contains(what) {
                return log;
            }
            assert!(Instant::now() < deadline, "no '{what}' in the log:\n{log}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn spawn_serve(dir: &std::path::Path, cti_url: &str) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sipgate-sidecar"))
        .args([
            "serve",
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
            "--signature",
            "off",
            "--backoff-ms",
            "20",
            "--max-backoff-ms",
            "100",
            "--max-attempts",
            "2",
        ])
        .arg("--database")
        .arg(dir.join("sidecar.db"))
        .env("SIDECAR_ZAMMAD_CTI_URL", cti_url)
        .env("SIDECAR_LOG", "debug")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    Server { child, log }
}

/// An address from the "started" line: `http_addr=…`, `metrics_addr=Some(…)`.
fn started_addr(log: &str, key: &str) -> String {
    let line = log
        .lines()
        .find(|l| l.contains("sipgate-sidecar started"))
        .unwrap();
    let start = line.find(key).unwrap() + key.len();
    let value = line[start..].split_whitespace().next().unwrap();
    value
        .trim_start_matches("Some(")
        .trim_end_matches(')')
        .to_string()
}

async fn readyz(http: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{http}/readyz")).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn the_cti_token_never_reaches_the_log_but_the_causes_do() {
    let dir = tempfile::tempdir().unwrap();
    // Zammad is down at first: a socket bound but not listening refuses
    // connections and keeps the port from every other server on the machine.
    let reserved = tokio::net::TcpSocket::new_v4().unwrap();
    reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let zammad = reserved.local_addr().unwrap();
    let server = spawn_serve(dir.path(), &format!("http://{zammad}/api/v1/cti/{TOKEN}"));
    let started = server.wait_for_log("sipgate-sidecar started").await;
    let http = started_addr(&started, "http_addr=");
    let metrics = started_addr(&started, "metrics_addr=");
    let call = "newCall=1&event=newCall&direction=in&from=492111234567&to=4930600000000&callId=L1";
    let reply = reqwest::Client::new()
        .post(format!("http://{http}/api/v1/sipgate/in"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(call)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);

    server.wait_for_log("Connection refused").await;
    let (status, body) = readyz(&http).await;
    assert_eq!(
        status, 200,
        "a retrying bridge leaves the server ready: {body}"
    );
    assert!(body.contains("bridge zammad: retrying"), "{body}");
    assert!(body.contains("Connection refused"), "{body}");
    assert!(!body.contains(TOKEN), "{body}");

    // Zammad comes back behind a redirect to https (with the same path): a
    // refusal whose reason names the Location, token redacted.
    let listener = reserved.listen(128).unwrap();
    let redirect = Router::new().fallback(move |uri: Uri| async move {
        (
            StatusCode::MOVED_PERMANENTLY,
            [("location", format!("https://{zammad}{uri}"))],
        )
            .into_response()
    });
    tokio::spawn(async move { axum::serve(listener, redirect).await.unwrap() });
    server.wait_for_log("bridge stopped").await;
    let (status, body) = readyz(&http).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains(&format!(
            "redirect to https://{zammad}/api/v1/cti/<redacted> not followed"
        )),
        "{body}"
    );
    assert!(!body.contains(TOKEN), "{body}");
    let metrics = reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "sidecar_bridge_state{bridge=\"zammad\",state=\"stopped\"} 1",
        "sidecar_bridge_state{bridge=\"zammad\",state=\"retrying\"} 0",
        "sidecar_bridge_lag_events{bridge=\"zammad\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }

    let log = server.log();
    assert!(
        !log.contains(TOKEN),
        "the token leaked into the log:\n{log}"
    );
    assert!(log.contains("Connection refused"), "{log}");
    assert!(log.contains("/api/v1/cti/<redacted>"), "{log}");
    assert!(log.contains("301 Moved Permanently"), "{log}");
}

fn new_call() -> proto::CallEvent {
    proto::CallEvent {
        seq: 1,
        kind: proto::EventKind::NewCall.into(),
        call_id: "tls1".into(),
        direction: proto::Direction::In.into(),
        from: "492111234567".into(),
        to: "4930600000000".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_tls_failure_keeps_its_cause_and_drops_the_url() {
    // An https URL to a plain-HTTP listener: the TLS handshake fails.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, Router::new().fallback(|| async { "plain http" }))
            .await
            .unwrap()
    });
    let sink = ZammadSink::new(
        &format!("https://{addr}/api/v1/cti/{TOKEN}"),
        &DeliveryPolicy::default(),
    )
    .unwrap();
    let Verdict::Transient { reason, .. } = sink.deliver(&new_call()).await else {
        panic!("a TLS failure is retried");
    };
    assert!(!reason.contains(TOKEN), "{reason}");
    assert!(!reason.contains("/api/v1/cti"), "{reason}");
    assert!(
        reason.len() > "error sending request".len() + 10,
        "the cause is kept: {reason}"
    );
}
