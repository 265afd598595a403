//! gRPC subscribers: live ones that measure fan-out latency and order, idle
//! ones for memory, and one catching up from sequence 0.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use sipgate_sidecar::proto::{self, call_events_client::CallEventsClient};
use tonic::transport::Channel;

use crate::{load::Latencies, server::rss_bytes};

/// Subscribers sharing one HTTP/2 connection: under the sidecar's default
/// cap of 64 concurrent streams per connection (`--grpc-max-streams`); a
/// subscription beyond the cap would wait for a free stream.
const PER_CONNECTION: usize = 50;

/// `count` HTTP/2 connections; subscribers share them, [`PER_CONNECTION`]
/// to a connection.
async fn channels(grpc: &str, count: usize) -> anyhow::Result<Vec<Channel>> {
    let mut out = Vec::new();
    for _ in 0..count {
        out.push(Channel::from_shared(grpc.to_string())?.connect().await?);
    }
    Ok(out)
}

pub struct Subscribers {
    tasks: Vec<tokio::task::JoinHandle<(u64, Vec<u64>, bool)>>,
    stop: Arc<AtomicBool>,
}

/// `count` live subscribers from now; each records webhook-to-subscriber
/// latency from the `benchUs` tag and checks for gaps.
pub async fn start_subscribers(
    grpc: &str,
    count: usize,
    epoch: Instant,
) -> anyhow::Result<Subscribers> {
    let conns = channels(grpc, count.div_ceil(PER_CONNECTION).max(1)).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..count {
        let mut client = CallEventsClient::new(conns[i % conns.len()].clone());
        let mut stream = client
            .subscribe(proto::SubscribeRequest::default())
            .await?
            .into_inner();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let (mut received, mut latencies, mut ordered, mut last) =
                (0u64, Vec::new(), true, 0u64);
            loop {
                let item =
                    match tokio::time::timeout(Duration::from_millis(200), stream.next()).await {
                        Ok(item) => item,
                        // Quiet for 200 ms: done once the load has stopped.
                        Err(_) if stop.load(Ordering::Relaxed) => None,
                        Err(_) => continue,
                    };
                let Some(Ok(event)) = item else { break };
                let now = epoch.elapsed().as_micros() as u64;
                if last != 0 && event.seq != last + 1 {
                    ordered = false;
                }
                last = event.seq;
                received += 1;
                if let Some(sent) = event
                    .raw_form
                    .iter()
                    .find(|f| f.key == "benchUs")
                    .and_then(|f| f.value.parse::<u64>().ok())
                {
                    latencies.push(now.saturating_sub(sent));
                }
            }
            (received, latencies, ordered)
        }));
    }
    Ok(Subscribers { tasks, stop })
}

impl Subscribers {
    /// Stops once the stream is quiet; per-subscriber counts, all latencies,
    /// and whether every subscriber saw consecutive sequence numbers.
    pub async fn finish(self) -> (Vec<u64>, Latencies, bool) {
        self.stop.store(true, Ordering::Relaxed);
        let mut counts = Vec::new();
        let mut all = Latencies::default();
        let mut ordered = true;
        for t in self.tasks {
            let (n, l, o) = t.await.expect("subscriber");
            counts.push(n);
            all.0.extend(l);
            ordered &= o;
        }
        (counts, all.sorted(), ordered)
    }
}

/// RSS of the server while `count` subscribers wait for events.
pub async fn idle_subscribers_rss(grpc: &str, pid: u32, count: usize) -> anyhow::Result<u64> {
    let conns = channels(grpc, count.div_ceil(PER_CONNECTION)).await?;
    let mut streams = Vec::new();
    for i in 0..count {
        let mut client = CallEventsClient::new(conns[i % conns.len()].clone());
        streams.push(
            client
                .subscribe(proto::SubscribeRequest::default())
                .await?
                .into_inner(),
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(rss_bytes(pid))
}

/// Subscribes from sequence 0 and reads up to the head: how many events, how long.
pub async fn catch_up(grpc: &str) -> anyhow::Result<(u64, Duration)> {
    let channel = Channel::from_shared(grpc.to_string())?.connect().await?;
    let mut events = CallEventsClient::new(channel).max_decoding_message_size(64 << 20);
    let head = events
        .list_events(proto::ListEventsRequest {
            after_seq: 0,
            limit: 1,
        })
        .await?
        .into_inner()
        .head_seq;
    let start = Instant::now();
    let mut stream = events
        .subscribe(proto::SubscribeRequest {
            after_seq: Some(0),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut received = 0u64;
    while let Some(event) = stream.next().await {
        let event = event?;
        received += 1;
        anyhow::ensure!(event.seq == received, "gap in catch-up at {}", event.seq);
        if event.seq >= head {
            break;
        }
    }
    Ok((received, start.elapsed()))
}
