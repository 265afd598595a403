//! kill -9 in the middle of traffic: every push that was answered 200 is in
//! the log after a restart, and sequence numbers have no gap.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{process::spawn_binary, *};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("crash.db").display().to_string();
    let server = spawn_binary(
        dir.path(),
        &[
            "--metrics-addr",
            "off",
            // Every 200 then means "committed".
            "--reply-deadline-ms",
            "30000",
            "--database",
            &database,
        ],
    )
    .await;
    let (mut child, http) = (server.child, server.http);

    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let client = reqwest::Client::new();
    let mut senders = Vec::new();
    for worker in 0..8 {
        let (acked, client, http) = (acked.clone(), client.clone(), http.clone());
        senders.push(tokio::spawn(async move {
            for i in 0.. {
                let call_id = format!("crash-{worker}-{i}");
                let body = new_call("in", "492111234567", "4930600000000", &call_id);
                let sent = client
                    .post(format!("{http}/api/v1/sipgate/in"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 200 => acked.lock().unwrap().push(call_id),
                    _ => return,
                }
            }
        }));
    }
    // Let traffic flow, then pull the plug.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() < 200 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    for s in senders {
        s.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 50,
        "only {} pushes acknowledged",
        acked.len()
    );

    // Restart on the same database and read everything back over gRPC.
    let mut config = test_config(&dir);
    config.database = database.clone();
    let restarted = TestServer::start_in(dir, config).await;
    let events = restarted.all_events().await;
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (1..=events.len() as u64).collect();
    assert_eq!(seqs, expected, "sequence numbers have no gap");
    let stored: std::collections::HashSet<&str> =
        events.iter().map(|e| e.call_id.as_str()).collect();
    let lost: Vec<&String> = acked
        .iter()
        .filter(|id| !stored.contains(id.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );

    // A resumed stream delivers them too, and new events continue the sequence.
    let head = events.len() as u64;
    let mut stream = restarted
        .events()
        .await
        .subscribe(sipgate_sidecar::proto::SubscribeRequest {
            after_seq: Some(head.saturating_sub(3)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    for expected in head.saturating_sub(3) + 1..=head {
        let e = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(e.seq, expected);
    }
    let reply = restarted
        .post(
            "/api/v1/sipgate/in",
            &new_call("in", "492111234567", "4930600000000", "after-crash"),
        )
        .await;
    assert_eq!(reply.status, 200);
    let e = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((e.seq, e.call_id.as_str()), (head + 1, "after-crash"));
}
