//! Durability across database trouble. The spool: a push answered 200
//! while the database cannot take it is in the log after the database is
//! back or the server restarts; a stop that
//! could neither store nor spool some events fails and names how many; a
//! torn spool tail is reported and the complete records are folded in. A
//! PostgreSQL that is not up yet at start is waited for (503 and the reason
//! meanwhile), and systemd hears when the server is ready and stops.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::disk::{SmallDisk, fill};
use common::process::{spawn_binary, terminate};
use common::{TestServer, new_call, postgres_database, test_config};
use tokio::net::{TcpListener, TcpStream};

async fn push(client: &reqwest::Client, http: &str, call_id: &str) -> u16 {
    client
        .post(format!("{http}/api/v1/sipgate/in"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(new_call("in", "492111234567", "4930600000000", call_id))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

async fn readyz(client: &reqwest::Client, http: &str) -> (u16, String) {
    let r = client.get(format!("{http}/readyz")).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn call_ids(events: &[sipgate_sidecar::proto::CallEvent]) -> BTreeSet<String> {
    events.iter().map(|e| e.call_id.clone()).collect()
}

fn gap_free(events: &[sipgate_sidecar::proto::CallEvent]) {
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_deleted_under_a_running_server_loses_no_answered_push_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("sidecar.db").display().to_string();
    let mut server = spawn_binary(
        dir.path(),
        &["--metrics-addr", "off", "--database", &database],
    )
    .await;
    let client = reqwest::Client::new();
    for i in 0..5 {
        assert_eq!(
            push(&client, &server.http, &format!("before-{i}")).await,
            200
        );
    }
    std::fs::remove_file(&database).unwrap();
    let mut answered = Vec::new();
    for i in 0..20 {
        let id = format!("after-{i}");
        assert_eq!(push(&client, &server.http, &id).await, 200);
        answered.push(id);
    }
    let (status, body) = readyz(&client, &server.http).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("spool"), "{body}");
    let journal = format!("{database}.spool/journal");
    assert!(
        std::fs::metadata(&journal).unwrap().len() > 0,
        "the spool holds the events"
    );

    let status = terminate(&mut server.child).await;
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    assert!(
        status.success(),
        "a stop with every event spooled is clean ({status}):\n{log}"
    );
    assert!(!log.contains("EVENTS LOST"), "{log}");
    assert!(
        log.contains("folded into the database at the next start"),
        "{log}"
    );

    // The next start (a new database file at the path) folds them in first.
    let mut config = test_config(&dir);
    config.database = database.clone();
    let restarted = TestServer::start_in(dir, config).await;
    let events = restarted.all_events().await;
    gap_free(&events);
    let stored = call_ids(&events);
    let expected: BTreeSet<String> = answered.iter().cloned().collect();
    assert!(
        expected.is_subset(&stored),
        "answered but missing: {:?}",
        expected.difference(&stored).collect::<Vec<_>>()
    );
    // New pushes go after them.
    assert_eq!(
        restarted
            .post(
                "/api/v1/sipgate/in",
                &new_call("in", "492111234567", "4930600000000", "later")
            )
            .await
            .status,
        200
    );
    assert_eq!(restarted.head_seq().await, events.len() as u64 + 1);
    restarted.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spool_is_folded_in_at_runtime_when_the_database_is_back() {
    let server = TestServer::start().await;
    let database = server.dir.path().join("sidecar.db");
    let client = reqwest::Client::new();
    for i in 0..3 {
        assert_eq!(push(&client, &server.http, &format!("a-{i}")).await, 200);
    }
    // The database file moved away and back, as a careless backup does.
    let aside = database.with_extension("aside");
    std::fs::rename(&database, &aside).unwrap();
    for i in 0..10 {
        assert_eq!(push(&client, &server.http, &format!("b-{i}")).await, 200);
    }
    // A dtmf push, which has no dedupe key of its own, is spooled as well.
    let dtmf = common::form(&[("event", "dtmf"), ("callId", "b-0"), ("dtmf", "1")]);
    assert_eq!(server.post("/api/v1/sipgate/in", &dtmf).await.status, 200);
    assert_eq!(readyz(&client, &server.http).await.0, 503);
    std::fs::rename(&aside, &database).unwrap();
    wait_for("/readyz 200 again", Duration::from_secs(20), || {
        let (client, http) = (&client, &server.http);
        async move { readyz(client, http).await.0 == 200 }
    })
    .await;
    let events = server.all_events().await;
    gap_free(&events);
    assert_eq!(events.len(), 14, "3 + 10 newCalls and one dtmf, once each");
    let ids: Vec<&str> = events.iter().map(|e| e.call_id.as_str()).collect();
    let expected: Vec<String> = (0..3)
        .map(|i| format!("a-{i}"))
        .chain((0..10).map(|i| format!("b-{i}")))
        .chain(["b-0".to_owned()])
        .collect();
    assert_eq!(ids, expected, "in the order they were answered");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_holding_events_neither_stored_nor_spooled_fails_naming_how_many() {
    let outer = tempfile::tempdir().unwrap();
    let disk_dir = outer.path().join("disk");
    std::fs::create_dir(&disk_dir).unwrap();
    let disk = match SmallDisk::mount(&disk_dir, "4m") {
        Ok(disk) => disk,
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI runs as root and mounts a tmpfs: {e}"
            );
            eprintln!("SKIPPED: cannot mount a tmpfs here ({})", e.trim());
            return;
        }
    };
    let database = disk_dir.join("sidecar.db").display().to_string();
    let mut server = spawn_binary(
        outer.path(),
        &[
            "--metrics-addr",
            "off",
            "--reply-deadline-ms",
            "200",
            "--database",
            &database,
        ],
    )
    .await;
    let client = reqwest::Client::new();
    for i in 0..3 {
        assert_eq!(push(&client, &server.http, &format!("ok-{i}")).await, 200);
    }
    // The database and the spool share the full disk.
    fill(&disk_dir.join("filler"));
    for i in 0..40 {
        assert_eq!(push(&client, &server.http, &format!("full-{i}")).await, 200);
        let (status, body) = readyz(&client, &server.http).await;
        if status == 503 && body.contains("held in memory") {
            break;
        }
    }
    let (status, body) = readyz(&client, &server.http).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("held in memory"), "/readyz says so: {body}");

    let status = terminate(&mut server.child).await;
    let log = std::fs::read_to_string(outer.path().join("server.log")).unwrap();
    assert!(!status.success(), "a stop that loses events fails:\n{log}");
    assert!(log.contains("EVENTS LOST"), "{log}");
    let named = log
        .lines()
        .find(|line| line.contains("neither stored nor spooled and are lost"))
        .unwrap_or_else(|| panic!("the exit names the count:\n{log}"));
    let count: usize = named
        .split_whitespace()
        .find_map(|word| word.parse().ok())
        .unwrap_or_else(|| panic!("a number in {named}"));
    assert!(count >= 1, "{named}");
    drop(disk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_spool_tail_is_reported_and_the_complete_records_are_folded_in() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("sidecar.db").display().to_string();
    let mut server = spawn_binary(
        dir.path(),
        &["--metrics-addr", "off", "--database", &database],
    )
    .await;
    let client = reqwest::Client::new();
    std::fs::remove_file(&database).unwrap();
    for i in 0..4 {
        assert_eq!(
            push(&client, &server.http, &format!("spooled-{i}")).await,
            200
        );
    }
    server.child.start_kill().unwrap();
    server.child.wait().await.unwrap();
    // A write cut short by the crash: half a record at the end.
    let journal = format!("{database}.spool/journal");
    let complete = std::fs::metadata(&journal).unwrap().len();
    {
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&journal)
            .unwrap();
        file.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, b'{', b'"'])
            .unwrap();
    }

    let server = spawn_binary(
        dir.path(),
        &["--metrics-addr", "off", "--database", &database],
    )
    .await;
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    assert!(log.contains("torn or corrupt record"), "{log}");
    let torn: Vec<_> = std::fs::read_dir(format!("{database}.spool"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("journal.torn-"))
        .collect();
    assert_eq!(torn.len(), 1, "the torn bytes are kept aside");
    assert_eq!(std::fs::read(torn[0].path()).unwrap().len(), 10);
    assert!(std::fs::metadata(&journal).unwrap().len() <= complete);

    let mut events =
        sipgate_sidecar::proto::call_events_client::CallEventsClient::connect(server.grpc.clone())
            .await
            .unwrap();
    let page = events
        .list_events(sipgate_sidecar::proto::ListEventsRequest {
            after_seq: 0,
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = page.events.iter().map(|e| e.call_id.as_str()).collect();
    assert_eq!(ids, ["spooled-0", "spooled-1", "spooled-2", "spooled-3"]);
    drop(server);
}

/// A TCP proxy in front of PostgreSQL that can be cut (every connection
/// dropped, new ones refused) and restored: a database outage.
struct Outage {
    addr: std::net::SocketAddr,
    cut: Arc<AtomicBool>,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Outage {
    async fn start(upstream: std::net::SocketAddr) -> Outage {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let generation = Arc::new(tokio::sync::watch::channel(0u64).0);
        let (cut2, generation2) = (cut.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if cut2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let mut cut_signal = generation2.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut_signal.changed() => {}
                    }
                });
            }
        });
        Outage {
            addr,
            cut,
            generation,
        }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_postgresql_outage_loses_no_answered_push() {
    let Some(database) = postgres_database("kill_9_during_a_postgresql_outage").await else {
        return;
    };
    // postgres://user@host:port/name?query → the same through the proxy.
    let (scheme_user, rest) = database.split_once('@').unwrap();
    let (host_port, path) = rest.split_once('/').unwrap();
    let upstream: std::net::SocketAddr = tokio::net::lookup_host(host_port)
        .await
        .unwrap()
        .next()
        .unwrap();
    let outage = Outage::start(upstream).await;
    let proxied = format!("{scheme_user}@{}/{path}", outage.addr);

    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let spool_arg = spool.display().to_string();
    let mut server = spawn_binary(
        dir.path(),
        &[
            "--metrics-addr",
            "off",
            "--reply-deadline-ms",
            "3000",
            "--database",
            &proxied,
            "--spool-dir",
            &spool_arg,
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let mut answered = Vec::new();
    for i in 0..5 {
        let id = format!("pg-before-{i}");
        assert_eq!(push(&client, &server.http, &id).await, 200);
        answered.push(id);
    }
    outage.cut();
    for i in 0..10 {
        let id = format!("pg-during-{i}");
        assert_eq!(push(&client, &server.http, &id).await, 200);
        answered.push(id);
    }
    let (status, body) = readyz(&client, &server.http).await;
    assert_eq!(status, 503, "{body}");
    server.child.start_kill().unwrap();
    server.child.wait().await.unwrap();
    outage.restore();

    let mut config = test_config(&dir);
    config.database = proxied;
    config.spool_dir = Some(spool);
    let restarted = TestServer::start_in(dir, config).await;
    let events = restarted.all_events().await;
    gap_free(&events);
    let stored = call_ids(&events);
    let expected: BTreeSet<String> = answered.iter().cloned().collect();
    assert_eq!(stored, expected, "every answered push, once");
    assert_eq!(events.len(), 15);
    restarted.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_that_comes_up_after_the_server_is_waited_for_with_503_and_the_reason() {
    let Some(database) = postgres_database("postgresql_comes_up_later").await else {
        return;
    };
    let (scheme_user, rest) = database.split_once('@').unwrap();
    let (host_port, path) = rest.split_once('/').unwrap();
    let upstream = tokio::net::lookup_host(host_port)
        .await
        .unwrap()
        .next()
        .unwrap();
    let outage = Outage::start(upstream).await;
    let proxied = format!("{scheme_user}@{}/{path}", outage.addr);
    outage.cut();

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let http = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let ready_file = dir.path().join("ready.json");
    let log = dir.path().join("server.log");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sipgate-sidecar"))
        .args(["serve", "--signature", "off", "--metrics-addr", "off"])
        .args([
            "--http-addr",
            &format!("127.0.0.1:{port}"),
            "--grpc-addr",
            "127.0.0.1:0",
        ])
        .args(["--database", &proxied])
        .arg("--spool-dir")
        .arg(dir.path().join("spool"))
        .arg("--ready-file")
        .arg(&ready_file)
        .env("SIDECAR_LOG", "warn")
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    wait_for(
        "503 with the reason while PostgreSQL is away",
        Duration::from_secs(20),
        || {
            let (client, http) = (&client, &http);
            async move {
                match client.get(format!("{http}/readyz")).send().await {
                    Ok(r) if r.status() == 503 => r
                        .text()
                        .await
                        .is_ok_and(|t| t.contains("database cannot be reached yet")),
                    _ => false,
                }
            }
        },
    )
    .await;
    assert_eq!(push(&client, &http, "too-early").await, 503);
    assert!(
        child.try_wait().unwrap().is_none(),
        "still waiting, not exited"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("PostgreSQL cannot be reached at start; retrying"),
        "{text}"
    );

    outage.restore();
    wait_for("started", Duration::from_secs(60), || {
        let ready_file = ready_file.clone();
        async move { ready_file.exists() }
    })
    .await;
    wait_for("/readyz 200", Duration::from_secs(10), || {
        let (client, http) = (&client, &http);
        async move { readyz(client, http).await.0 == 200 }
    })
    .await;
    assert_eq!(push(&client, &http, "in-time").await, 200);
    let status = terminate(&mut child).await;
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_is_told_when_the_server_is_ready_and_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = tokio::net::UnixDatagram::bind(&socket_path).unwrap();
    let database = dir.path().join("sidecar.db").display().to_string();
    let notify = socket_path.display().to_string();
    let mut server = common::process::spawn_binary_env(
        dir.path(),
        &["--metrics-addr", "off", "--database", &database],
        "warn",
        &[("NOTIFY_SOCKET", &notify)],
    )
    .await;
    let mut received = String::new();
    let mut buf = [0u8; 4096];
    while !received.contains("READY=1") {
        let n = tokio::time::timeout(Duration::from_secs(10), socket.recv(&mut buf))
            .await
            .expect("READY=1 within 10 s")
            .unwrap();
        received.push_str(&String::from_utf8_lossy(&buf[..n]));
        received.push('\n');
    }
    let status = terminate(&mut server.child).await;
    assert!(status.success());
    while !received.contains("STOPPING=1") {
        let n = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf))
            .await
            .expect("STOPPING=1 at the stop")
            .unwrap();
        received.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}
