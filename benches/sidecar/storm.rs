//! The storm phase: the server's memory while many subscribers resume from
//! sequence 0 over large events and never read. A fresh sidecar with the
//! default body limit stores `--storm-events` newCalls whose raw form
//! carries a padding field of `--storm-event-bytes`; then, per round,
//! `--storm-subscribers` subscriptions from seq 0, each on its own
//! connection, are held unread for `--storm-hold` seconds and dropped. The
//! server's RSS is read before, every 100 ms during, and 3 s after.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use futures::StreamExt;
use sipgate_sidecar::proto::{self, call_events_client::CallEventsClient};
use tonic::transport::Channel;

use crate::{
    Args,
    server::{rss_bytes, spawn_sidecar},
};

#[derive(Debug, Clone, Copy)]
pub struct StormRound {
    pub before: u64,
    pub peak_during: u64,
    /// 3 s after the subscribers left.
    pub after: u64,
}

pub struct StormResults {
    /// RSS of the fresh server before any event was stored.
    pub fresh: u64,
    /// Bytes of each stored event's form body.
    pub body_bytes: usize,
    pub rounds: Vec<StormRound>,
    /// Subscribers of a round that got their stream opened (the rest were
    /// refused, e.g. RESOURCE_EXHAUSTED).
    pub opened: Vec<usize>,
}

/// A newCall whose raw form carries a `padding` field of `bytes` bytes.
fn large_call(run: u64, i: usize, bytes: usize) -> String {
    format!(
        "event=newCall&direction=in&from=492111234567&to=4930600000000&callId=storm{run:x}n{i}&user%5B%5D=Alice+Agent&padding={}",
        "x".repeat(bytes)
    )
}

/// Stores `count` large events through the webhook, eight in flight.
async fn push_large(http: &str, run: u64, count: usize, bytes: usize) -> anyhow::Result<usize> {
    let client = reqwest::Client::new();
    let url = format!("{http}/api/v1/sipgate/in");
    let body_bytes = large_call(run, 0, bytes).len();
    let mut pending = futures::stream::FuturesUnordered::new();
    let check = |reply: reqwest::Result<reqwest::Response>| -> anyhow::Result<()> {
        let reply = reply?;
        anyhow::ensure!(
            reply.status().is_success(),
            "a large event ({body_bytes} bytes) was answered {}",
            reply.status()
        );
        Ok(())
    };
    for i in 0..count {
        pending.push(
            client
                .post(&url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(large_call(run, i, bytes))
                .send(),
        );
        if pending.len() >= 8 {
            check(pending.next().await.expect("a request in flight"))?;
        }
    }
    while let Some(reply) = pending.next().await {
        check(reply)?;
    }
    Ok(body_bytes)
}

pub async fn run(
    args: &Args,
    exe: &Path,
    work: &Path,
    run_id: u64,
) -> anyhow::Result<StormResults> {
    let sidecar = spawn_sidecar(exe, &work.join("storm.db"), work).await?;
    let pid = sidecar.pid();
    let grpc = sidecar.grpc.clone().expect("sidecar has gRPC");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fresh = rss_bytes(pid);
    eprintln!(
        "[storm] storing {} events of {} bytes",
        args.storm_events, args.storm_event_bytes
    );
    let body_bytes = push_large(
        &sidecar.http,
        run_id,
        args.storm_events,
        args.storm_event_bytes,
    )
    .await?;
    let mut probe = CallEventsClient::new(Channel::from_shared(grpc.clone())?.connect().await?);
    let head = probe
        .list_events(proto::ListEventsRequest {
            after_seq: 0,
            limit: 1,
            ..Default::default()
        })
        .await?
        .into_inner()
        .head_seq;
    anyhow::ensure!(
        head == args.storm_events as u64,
        "stored {head} events, pushed {}",
        args.storm_events
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut rounds = Vec::new();
    let mut opened = Vec::new();
    for round in 1..=args.storm_rounds {
        eprintln!(
            "[storm] round {round}/{}: {} subscribers from seq 0 that never read, held {} s",
            args.storm_rounds, args.storm_subscribers, args.storm_hold
        );
        let before = rss_bytes(pid);
        let mut held = Vec::new();
        let mut peak_during = before;
        for _ in 0..args.storm_subscribers {
            let mut client =
                CallEventsClient::new(Channel::from_shared(grpc.clone())?.connect().await?);
            let subscribed = client
                .subscribe(proto::SubscribeRequest {
                    after_seq: Some(0),
                    ..Default::default()
                })
                .await;
            match subscribed {
                Ok(stream) => held.push((client, stream.into_inner())),
                Err(status) => eprintln!(
                    "[storm] a subscriber was refused: {:?} {}",
                    status.code(),
                    status.message()
                ),
            }
            peak_during = peak_during.max(rss_bytes(pid));
        }
        opened.push(held.len());
        let until = Instant::now() + Duration::from_secs(args.storm_hold);
        while Instant::now() < until {
            peak_during = peak_during.max(rss_bytes(pid));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop(held);
        tokio::time::sleep(Duration::from_secs(3)).await;
        rounds.push(StormRound {
            before,
            peak_during,
            after: rss_bytes(pid),
        });
    }
    sidecar.stop().await;
    Ok(StormResults {
        fresh,
        body_bytes,
        rounds,
        opened,
    })
}
