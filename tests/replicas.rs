//! Two replicas (two server processes) on one PostgreSQL database, as
//! behind a load balancer: pushes to either, one gap-free log, subscribers
//! and settings on every replica, and kill -9 of one under load.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::{Router, extract::State, http::HeaderMap, routing::post};
use common::{process::spawn_binary, *};
use sipgate_sidecar::proto::{
    self, call_events_client::CallEventsClient, settings_client::SettingsClient,
};
use tonic::transport::Channel;

struct Replica {
    child: tokio::process::Child,
    http: String,
    grpc: String,
    _dir: tempfile::TempDir,
}

async fn replica(database: &str, extra: &[&str]) -> Replica {
    let dir = tempfile::tempdir().unwrap();
    let mut flags = vec![
        "--metrics-addr",
        "off",
        "--reply-deadline-ms",
        "30000",
        "--database",
        database,
    ];
    flags.extend_from_slice(extra);
    let spawned = spawn_binary(dir.path(), &flags).await;
    Replica {
        child: spawned.child,
        http: spawned.http,
        grpc: spawned.grpc,
        _dir: dir,
    }
}

async fn channel(grpc: &str) -> Channel {
    Channel::from_shared(grpc.to_owned())
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap()
}

async fn push(client: &reqwest::Client, http: &str, body: String) -> Option<(u16, String)> {
    let response = client
        .post(format!("{http}/api/v1/sipgate/in"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

async fn subscribe(grpc: &str, after_seq: u64) -> tonic::Streaming<proto::CallEvent> {
    CallEventsClient::new(channel(grpc).await)
        .subscribe(proto::SubscribeRequest {
            after_seq: Some(after_seq),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

async fn next_event(stream: &mut tonic::Streaming<proto::CallEvent>) -> proto::CallEvent {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an event within 10 s")
        .expect("the stream goes on")
        .expect("the stream is open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_alternate_between_replicas_and_each_sees_one_log_and_the_same_settings() {
    let Some(database) = postgres_database("pushes_alternate_between_replicas").await else {
        return;
    };
    let a = replica(&database, &[]).await;
    let b = replica(&database, &[]).await;
    let mut on_a = subscribe(&a.grpc, 0).await;
    let client = reqwest::Client::new();

    // Alternating, and concurrently on both.
    const N: usize = 40;
    let pushes = (0..N).map(|i| {
        let (client, http) = (client.clone(), if i % 2 == 0 { &a.http } else { &b.http });
        let body = new_call("in", "492111234567", "4930600000000", &format!("alt-{i}"));
        async move { push(&client, http, body).await }
    });
    for reply in futures::future::join_all(pushes).await {
        assert_eq!(reply.expect("answered").0, 200);
    }
    let mut seen = Vec::new();
    for expected in 1..=N as u64 {
        let event = next_event(&mut on_a).await;
        assert_eq!(
            event.seq, expected,
            "A's subscriber gets every event in order"
        );
        seen.push(event.call_id);
    }
    let ids: HashSet<String> = seen.into_iter().collect();
    assert_eq!(ids.len(), N, "B's events reached A's subscriber too");

    // Accepted on B before the caller is blocked.
    let (status, before) = push(
        &client,
        &b.http,
        new_call("in", "492119912345", "4930600000000", "before-block"),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert!(!before.contains("<Reject"), "{before}");

    // A settings change on A decides B's next webhook.
    SettingsClient::new(channel(&a.grpc).await)
        .add_block_entry(proto::AddBlockEntryRequest {
            pattern: "4921199*".into(),
            note: "spam".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut rejected = None;
    for i in 0..20 {
        let (status, body) = push(
            &client,
            &b.http,
            new_call(
                "in",
                "492119912345",
                "4930600000000",
                &format!("blocked-{i}"),
            ),
        )
        .await
        .expect("answered");
        assert_eq!(status, 200);
        if body.contains("<Reject") {
            rejected = Some(format!("blocked-{i}"));
            assert!(
                i < 10,
                "B applied A's change only after {i} webhooks (~{} ms)",
                i * 100
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rejected = rejected.expect("B applied the block entry stored on A");
    // A replay on A of a newCall B answered gets B's answer: the accept
    // stored before the block, though A's own settings would reject it now.
    let (_, replay) = push(
        &client,
        &a.http,
        new_call("in", "492119912345", "4930600000000", "before-block"),
    )
    .await
    .unwrap();
    assert!(!replay.contains("<Reject"), "the original answer: {replay}");
    let (_, replay) = push(
        &client,
        &a.http,
        new_call("in", "492119912345", "4930600000000", &rejected),
    )
    .await
    .unwrap();
    assert!(replay.contains("<Reject"), "{replay}");
    drop((a, b));
}

#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<u64>>>);

async fn receive(State(received): State<Received>, headers: HeaderMap) -> &'static str {
    let seq = headers
        .get("x-sidecar-seq")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("X-Sidecar-Seq");
    received.0.lock().unwrap().push(seq);
    "ok"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_replica_under_load_loses_no_answered_event_and_the_bridge_continues() {
    let Some(database) = postgres_database("kill_9_of_a_replica_under_load").await else {
        return;
    };
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let forward = format!("http://{}/hook", listener.local_addr().unwrap());
    let router = Router::new()
        .route("/hook", post(receive))
        .with_state(received.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let bridge = ["--forward-url", forward.as_str()];
    let mut a = replica(&database, &bridge).await;
    let b = replica(&database, &bridge).await;

    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let client = reqwest::Client::new();
    let mut senders = Vec::new();
    for worker in 0..6 {
        let (acked, client) = (acked.clone(), client.clone());
        let (http_a, http_b) = (a.http.clone(), b.http.clone());
        senders.push(tokio::spawn(async move {
            let mut a_alive = true;
            for i in 0..150 {
                let call_id = format!("load-{worker}-{i}");
                let body = new_call("in", "492111234567", "4930600000000", &call_id);
                // Alternate; once A is gone, everything goes to B (as a
                // load balancer would after its health check).
                let to_a = a_alive && i % 2 == 0;
                let reply = push(&client, if to_a { &http_a } else { &http_b }, body.clone()).await;
                match reply {
                    Some((200, _)) => acked.lock().unwrap().push(call_id),
                    _ if to_a => {
                        a_alive = false;
                        if let Some((200, _)) = push(&client, &http_b, body).await {
                            acked.lock().unwrap().push(call_id);
                        }
                    }
                    other => panic!("B failed: {other:?}"),
                }
            }
        }));
    }
    // A, started first, delivers; B waits on standby.
    let readyz = |http: String| async move {
        reqwest::get(format!("{http}/readyz"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let standby = readyz(b.http.clone()).await;
    assert!(standby.contains("standby"), "{standby}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 200 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.child.start_kill().unwrap();
    a.child.wait().await.unwrap();
    for sender in senders {
        sender.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), 6 * 150, "B answered everything A did not");

    // Every answered event is in the log, which has no gap.
    let mut client = CallEventsClient::new(channel(&b.grpc).await);
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let page = client
            .list_events(proto::ListEventsRequest {
                after_seq: after,
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        if page.events.is_empty() {
            break;
        }
        after = page.next_after_seq;
        events.extend(page.events);
    }
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=events.len() as u64).collect::<Vec<_>>(),
        "no gap"
    );
    let stored: HashSet<&str> = events.iter().map(|e| e.call_id.as_str()).collect();
    let lost: Vec<&String> = acked
        .iter()
        .filter(|id| !stored.contains(id.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} answered events lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );

    // The forwarder delivered every event, from whichever replica led it.
    let head = events.len() as u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let counts = loop {
        let mut counts = BTreeMap::<u64, usize>::new();
        for &seq in received.0.lock().unwrap().iter() {
            *counts.entry(seq).or_default() += 1;
        }
        if counts.len() as u64 == head || tokio::time::Instant::now() > deadline {
            break counts;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took_over = readyz(b.http.clone()).await;
    assert!(!took_over.contains("standby"), "{took_over}");
    let missing: Vec<u64> = (1..=head).filter(|s| !counts.contains_key(s)).collect();
    assert!(
        missing.is_empty(),
        "never forwarded: {:?}",
        &missing[..missing.len().min(10)]
    );
    // Once per event; only the one in flight when the leader died may
    // have been delivered by both replicas.
    let repeated: Vec<(&u64, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.len() <= 1 && repeated.iter().all(|(_, n)| **n == 2),
        "repeated: {repeated:?}"
    );
    // In seq order (a repeat follows its first delivery directly).
    let mut order = received.0.lock().unwrap().clone();
    order.dedup();
    assert_eq!(order, (1..=head).collect::<Vec<_>>(), "forwarded in order");
    drop(b);
}
