//! The listeners against slow, idle and too many clients, and a shutdown
//! that ends within its deadline without losing an accepted event.

mod common;

use std::{
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::*;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    process::{Child, Command},
};

const HALF_SENT: &[u8] = b"POST /api/v1/sipgate/in HTTP/1.1\r\nHost: x\r\n";

/// Waits until `condition` holds, polling; panics with `what` after `within`.
async fn eventually(within: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads until the server closes the connection; how long that took.
async fn closed_within(mut tcp: TcpStream, within: Duration) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(within, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "connection still open after {within:?}");
    start.elapsed()
}

/// A push on a new connection (a refused one may close the connection it came on).
async fn push(server: &TestServer, call_id: &str) -> Reply {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let response = client
        .post(format!("{}/api/v1/sipgate/in", server.http))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(new_call("in", "492111234567", "4930600000000", call_id))
        .send()
        .await
        .expect("request reaches the server");
    Reply {
        status: response.status().as_u16(),
        content_type: response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default(),
        www_authenticate: None,
        body: response.text().await.unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_are_closed_after_the_header_timeout() {
    let server = TestServer::start_with(|c| {
        c.http_listener.header_timeout = Duration::from_secs(1);
        // All from one address here; the per-address share has its own test.
        c.http_listener.max_per_source = 1000;
    })
    .await;
    let running = server.running.as_ref().unwrap();
    let addr = running.http_addr;
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(HALF_SENT).await.unwrap();
        slow.push(tcp);
    }
    eventually(Duration::from_secs(5), "200 connections open", || {
        running.webhook_connections().open() >= 200
    })
    .await;

    // Every one of them is closed once the header timeout has passed ...
    let closings: Vec<_> = slow
        .into_iter()
        .map(|tcp| tokio::spawn(closed_within(tcp, Duration::from_secs(10))))
        .collect();
    for closing in closings {
        let took = closing.await.unwrap();
        assert!(took < Duration::from_secs(5), "closed after {took:?}");
    }
    eventually(Duration::from_secs(5), "open connections back to 0", || {
        running.webhook_connections().open() == 0
    })
    .await;
    // ... and a real push goes through.
    let reply = push(&server, "after-slowloris").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        server.call("after-slowloris").await.call_id,
        "after-slowloris"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_on_both_listeners() {
    let server = TestServer::start_with(|c| {
        c.http_listener.header_timeout = Duration::from_secs(1);
        c.grpc_listener.handshake_timeout = Duration::from_secs(1);
    })
    .await;
    let running = server.running.as_ref().unwrap();
    let webhook = TcpStream::connect(running.http_addr).await.unwrap();
    let grpc = TcpStream::connect(running.grpc_addr).await.unwrap();
    let (webhook, grpc) = tokio::join!(
        closed_within(webhook, Duration::from_secs(5)),
        closed_within(grpc, Duration::from_secs(5))
    );
    assert!(webhook >= Duration::from_millis(900), "{webhook:?}");
    assert!(grpc >= Duration::from_millis(900), "{grpc:?}");
    eventually(Duration::from_secs(2), "no connection left", || {
        running.webhook_connections().open() == 0 && running.grpc_connections().open() == 0
    })
    .await;
    // A real gRPC client is unaffected.
    assert_eq!(server.head_seq().await, 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_connection_cap_closes_extra_connections() {
    let server = TestServer::start_with(|c| {
        c.grpc_listener.max_connections = 2;
    })
    .await;
    let running = server.running.as_ref().unwrap();
    let held: Vec<_> = [
        TcpStream::connect(running.grpc_addr).await.unwrap(),
        TcpStream::connect(running.grpc_addr).await.unwrap(),
    ]
    .into();
    eventually(Duration::from_secs(5), "2 gRPC connections open", || {
        running.grpc_connections().open() == 2
    })
    .await;
    let extra = TcpStream::connect(running.grpc_addr).await.unwrap();
    closed_within(extra, Duration::from_secs(2)).await;
    assert_eq!(running.grpc_connections().rejected(), 1);
    drop(held);
    eventually(Duration::from_secs(5), "slots freed", || {
        running.grpc_connections().open() == 0
    })
    .await;
    assert_eq!(server.head_seq().await, 0, "a client gets in again");
    server.stop().await;
}

/// A connection from another loopback address (Linux routes all of
/// 127.0.0.0/8 to the loopback interface).
async fn connect_from(source: &str, to: std::net::SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holding_half_sent_headers_cannot_take_the_webhook_listener() {
    let server = TestServer::start_with(|c| {
        c.http_listener.max_connections = 40;
        c.http_listener.max_per_source = 8;
        c.http_listener.header_timeout = Duration::from_secs(30);
    })
    .await;
    let running = server.running.as_ref().unwrap();
    // One client reopens half-sent headers as fast as they close.
    let mut held = Vec::new();
    for _ in 0..60 {
        let mut tcp = connect_from("127.0.0.2", running.http_addr).await;
        let _ = tcp.write_all(HALF_SENT).await;
        held.push(tcp);
    }
    eventually(Duration::from_secs(5), "the extra 52 closed", || {
        running.webhook_connections().rejected() >= 52
    })
    .await;
    assert_eq!(running.webhook_connections().open(), 8);
    // sipgate, from its own address, still gets every push answered.
    for i in 0..20 {
        let reply = push(&server, &format!("legit-{i}")).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    assert_eq!(server.head_seq().await, 20);
    drop(held);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_outside_the_allow_list_is_closed_at_accept_before_its_header() {
    let server = TestServer::start_with(|c| {
        c.allow_sources = vec!["127.0.0.1/32".parse().unwrap()];
        c.http_listener.header_timeout = Duration::from_secs(30);
    })
    .await;
    let running = server.running.as_ref().unwrap();
    for _ in 0..50 {
        let mut tcp = connect_from("127.0.0.3", running.http_addr).await;
        let _ = tcp.write_all(HALF_SENT).await;
        // Long before the 30 s header timeout.
        closed_within(tcp, Duration::from_secs(2)).await;
    }
    assert_eq!(running.webhook_connections().forbidden(), 50);
    assert_eq!(running.webhook_connections().open(), 0);
    let reply = push(&server, "allowed").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_hold_every_grpc_connection_and_the_cli_says_why_it_was_closed() {
    let server = TestServer::start_with(|c| {
        c.grpc_listener.max_connections = 6;
        c.grpc_listener.max_per_source = 4;
    })
    .await;
    let running = server.running.as_ref().unwrap();
    let mut idle = Vec::new();
    for _ in 0..10 {
        idle.push(connect_from("127.0.0.2", running.grpc_addr).await);
    }
    eventually(Duration::from_secs(5), "the extra 6 closed", || {
        running.grpc_connections().rejected() >= 6
    })
    .await;
    assert_eq!(running.grpc_connections().open(), 4);
    // Another address gets in.
    assert_eq!(server.head_seq().await, 0);
    eventually(Duration::from_secs(5), "that client gone again", || {
        running.grpc_connections().open() == 4
    })
    .await;
    let rejected_before = running.grpc_connections().rejected();

    // When the listener is full after all, the CLI says what that means.
    let mut more = Vec::new();
    for _ in 0..2 {
        more.push(TcpStream::connect(running.grpc_addr).await.unwrap());
    }
    eventually(Duration::from_secs(5), "the listener full", || {
        running.grpc_connections().open() == 6
    })
    .await;
    assert_eq!(running.grpc_connections().rejected(), rejected_before);
    let out = Command::new(env!("CARGO_BIN_EXE_sipgate-sidecar"))
        .args(["events", "list", "--server", &server.grpc])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--grpc-max-connections"),
        "names the limit: {stderr}"
    );
    drop((idle, more));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_over_the_in_flight_cap_get_503_with_an_xml_error() {
    let server = TestServer::start_with(|c| {
        c.http_listener.max_in_flight = 1;
    })
    .await;
    let addr = server.running.as_ref().unwrap().http_addr;
    // A webhook whose body never finishes holds the only slot.
    let mut holder = TcpStream::connect(addr).await.unwrap();
    holder
        .write_all(
            b"POST /api/v1/sipgate/in HTTP/1.1\r\nHost: x\r\n\
              Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 500\r\n\r\nevent=",
        )
        .await
        .unwrap();
    let mut refused = None;
    for attempt in 0..100 {
        let reply = push(&server, &format!("over-cap-{attempt}")).await;
        if reply.status == 503 {
            refused = Some(reply);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = refused.expect("a push over the cap is refused");
    assert!(
        refused.content_type.starts_with("application/xml"),
        "{}",
        refused.content_type
    );
    assert!(
        refused.body.contains("<Error>too many webhooks in flight"),
        "{}",
        refused.body
    );
    // Health checks are not webhooks.
    let health = server
        .client
        .get(format!("{}/healthz", server.http))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    drop(holder);
    let mut reply = push(&server, "after-cap").await;
    for _ in 0..50 {
        if reply.status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        reply = push(&server, "after-cap").await;
    }
    assert_eq!(reply.status, 200, "{}", reply.body);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_is_refused_unless_enabled() {
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();

    let http1_only = TestServer::start().await;
    let refused = h2
        .get(format!("{}/healthz", http1_only.http))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(refused.is_err(), "HTTP/2 answered: {refused:?}");
    // HTTP/1.1 works as ever.
    let ok = http1_only
        .client
        .get(format!("{}/healthz", http1_only.http))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.version(), reqwest::Version::HTTP_11);
    http1_only.stop().await;

    let with_h2 = TestServer::start_with(|c| {
        c.http_listener.http2 = true;
        c.http_listener.idle_timeout = Duration::from_secs(1);
    })
    .await;
    let answered = h2
        .get(format!("{}/healthz", with_h2.http))
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), 200);
    assert_eq!(answered.version(), reqwest::Version::HTTP_2);
    // The client keeps its connection; the server closes it once idle.
    let running = with_h2.running.as_ref().unwrap();
    assert_eq!(running.webhook_connections().open(), 1);
    eventually(Duration::from_secs(5), "idle h2c connection closed", || {
        running.webhook_connections().open() == 0
    })
    .await;
    with_h2.stop().await;
}

/// The real binary, with its webhook, gRPC and metrics addresses.
struct Binary {
    child: Child,
    http: String,
    grpc: String,
    metrics: Option<String>,
}

async fn spawn_binary(database: &str, extra: &[&str]) -> Binary {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sipgate-sidecar"))
        .args(["serve", "--http-addr", "127.0.0.1:0", "--grpc-addr"])
        .args(["127.0.0.1:0", "--signature", "off", "--database", database])
        // Every 200 then means "committed".
        .args(["--reply-deadline-ms", "30000"])
        .args(extra)
        .env("SIDECAR_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("listening:") {
                return line;
            }
        }
        panic!("server exited before listening");
    })
    .await
    .expect("server listens within 30 s");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    // "... webhooks on http://A, gRPC on B[, metrics on http://C/metrics]"
    let after = |marker: &str| {
        line.split(marker)
            .nth(1)
            .and_then(|s| s.split(',').next())
            .map(|s| s.trim().to_string())
    };
    Binary {
        child,
        http: after("webhooks on ").unwrap(),
        grpc: format!("http://{}", after("gRPC on ").unwrap()),
        metrics: after("metrics on "),
    }
}

/// The value of a metric line starting with `series` on /metrics.
async fn metric(metrics_url: &str, series: &str) -> Option<f64> {
    let text = reqwest::get(metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_closes_extra_connections_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("cap.db").display().to_string();
    let server = spawn_binary(
        &database,
        &["--max-connections", "5", "--metrics-addr", "127.0.0.1:0"],
    )
    .await;
    let metrics = server.metrics.clone().expect("metrics listener");
    let open = r#"sidecar_http_connections_open{listener="webhook"}"#;
    let rejected = r#"sidecar_http_connections_rejected_total{listener="webhook"}"#;
    let addr = server.http.trim_start_matches("http://").to_string();
    let mut held = Vec::new();
    for _ in 0..5 {
        let mut tcp = TcpStream::connect(&addr).await.unwrap();
        tcp.write_all(HALF_SENT).await.unwrap();
        held.push(tcp);
    }
    let start = Instant::now();
    while metric(&metrics, open).await != Some(5.0) {
        assert!(start.elapsed() < Duration::from_secs(5), "5 never open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..3 {
        let extra = TcpStream::connect(&addr).await.unwrap();
        let took = closed_within(extra, Duration::from_secs(2)).await;
        assert!(took < Duration::from_secs(1), "closed only after {took:?}");
    }
    assert_eq!(metric(&metrics, rejected).await, Some(3.0));
    assert_eq!(metric(&metrics, open).await, Some(5.0));
    // A push still fails while the slots are taken, and works once they are free.
    let client = reqwest::Client::new();
    let url = format!("{}/api/v1/sipgate/in", server.http);
    let body = new_call("in", "492111234567", "4930600000000", "cap-1");
    let blocked = client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.clone())
        .send()
        .await;
    assert!(blocked.is_err(), "{blocked:?}");
    drop(held);
    let start = Instant::now();
    while metric(&metrics, open).await != Some(0.0) {
        assert!(start.elapsed() < Duration::from_secs(5), "slots not freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reply = client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(metric(&metrics, rejected).await, Some(4.0));
}

fn sigterm(child: &Child) {
    let pid = child.id().expect("still running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_stuck_connections_exits_within_the_deadline_and_keeps_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("shutdown.db").display().to_string();
    let mut server = spawn_binary(
        &database,
        &[
            "--shutdown-timeout-secs",
            "2",
            // Longer than the deadline: only the deadline can end them.
            "--header-timeout-secs",
            "60",
            "--grpc-handshake-timeout-secs",
            "60",
            "--metrics-addr",
            "off",
        ],
    )
    .await;
    let http_addr = server.http.trim_start_matches("http://").to_string();
    let grpc_addr = server.grpc.trim_start_matches("http://").to_string();

    // Pushes keep coming while the server shuts down.
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let client = reqwest::Client::new();
    let mut senders = Vec::new();
    for worker in 0..4 {
        let (acked, client, http) = (acked.clone(), client.clone(), server.http.clone());
        senders.push(tokio::spawn(async move {
            for i in 0.. {
                let call_id = format!("term-{worker}-{i}");
                let sent = client
                    .post(format!("{http}/api/v1/sipgate/in"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(new_call("in", "492111234567", "4930600000000", &call_id))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 200 => acked.lock().unwrap().push(call_id),
                    _ => return,
                }
            }
        }));
    }
    let mut half_sent = TcpStream::connect(&http_addr).await.unwrap();
    half_sent.write_all(HALF_SENT).await.unwrap();
    let silent_grpc = TcpStream::connect(&grpc_addr).await.unwrap();
    eventually(Duration::from_secs(20), "100 pushes answered", || {
        acked.lock().unwrap().len() >= 100
    })
    .await;

    let start = Instant::now();
    sigterm(&server.child);
    let status = tokio::time::timeout(Duration::from_secs(10), server.child.wait())
        .await
        .expect("the server exits")
        .unwrap();
    let took = start.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(5), "exit took {took:?}");
    for s in senders {
        s.await.unwrap();
    }
    drop((half_sent, silent_grpc));

    let acked = acked.lock().unwrap().clone();
    let mut config = test_config(&dir);
    config.database = database;
    let restarted = TestServer::start_in(dir, config).await;
    let events = restarted.all_events().await;
    assert_eq!(restarted.head_seq().await, events.len() as u64);
    let stored: std::collections::HashSet<&str> =
        events.iter().map(|e| e.call_id.as_str()).collect();
    let lost: Vec<&String> = acked
        .iter()
        .filter(|id| !stored.contains(id.as_str()))
        .collect();
    assert!(lost.is_empty(), "{} answered events lost", lost.len());
    restarted.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_file_descriptors_backs_off_logs_once_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("emfile.db").display().to_string();
    // A cap above the descriptor limit: accept itself fails with EMFILE.
    let mut child = Command::new("sh")
        .args(["-c", "ulimit -n 100 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_sipgate-sidecar"))
        .args(["serve", "--http-addr", "127.0.0.1:0", "--grpc-addr"])
        .args(["127.0.0.1:0", "--signature", "off", "--metrics-addr", "off"])
        .args(["--database", &database, "--max-connections", "1000"])
        .args(["--max-connections-per-source", "1000"])
        .args(["--header-timeout-secs", "60"])
        .env("SIDECAR_LOG", "warn,sipgate_sidecar::listener=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut http = None;
    while let Some(line) = lines.next_line().await.unwrap() {
        if line.contains("listening:") {
            http = line
                .split("webhooks on ")
                .nth(1)
                .and_then(|s| s.split(',').next())
                .map(str::to_string);
            break;
        }
    }
    let http = http.expect("server listens");
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = log.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            sink.lock().unwrap().push(line);
        }
    });

    let addr = http.trim_start_matches("http://").to_string();
    let mut held = Vec::new();
    for _ in 0..150 {
        let mut tcp = TcpStream::connect(&addr).await.unwrap();
        tcp.write_all(HALF_SENT).await.unwrap();
        held.push(tcp);
    }
    let count = |what: &str| {
        log.lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(what))
            .count()
    };
    eventually(Duration::from_secs(10), "the accept failure logged", || {
        count("cannot accept connections") > 0
    })
    .await;
    // Backing off, not spinning: one line, however often accept fails.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        count("cannot accept connections"),
        1,
        "{:?}",
        log.lock().unwrap()
    );
    assert!(child.try_wait().unwrap().is_none(), "the server died");

    drop(held);
    eventually(Duration::from_secs(10), "accepting again", || {
        count("accepting connections again") > 0
    })
    .await;
    let reply = reqwest::Client::new()
        .post(format!("{http}/api/v1/sipgate/in"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(new_call(
            "in",
            "492111234567",
            "4930600000000",
            "after-emfile",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}
