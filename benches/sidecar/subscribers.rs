//! gRPC subscribers: live ones that measure fan-out latency and order, idle
//! ones for memory, and one catching up from sequence 0.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{StreamExt, stream::BoxStream};
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

/// How the catching-up subscriber reads each event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// Decoded in full into the generated `CallEvent`, as a client would:
    /// the subscriber's own decoding is part of the figure.
    Decoded,
    /// Only `seq` decoded (every other field skipped): what the server
    /// sends, with as little of the subscriber's cost as a gRPC client has.
    SeqOnly,
}

/// `CallEvent` with every field but `seq` left unread.
#[derive(Clone, PartialEq, prost::Message)]
struct SeqOnly {
    #[prost(uint64, tag = "1")]
    seq: u64,
}

/// One subscriber resuming from sequence 0 until it has the head as it was
/// when it started, checking that no event is missing: the events received
/// and the time it took.
pub async fn catch_up(grpc: &str, reading: Reading) -> anyhow::Result<(u64, Duration)> {
    let channel = Channel::from_shared(grpc.to_string())?.connect().await?;
    let head = CallEventsClient::new(channel.clone())
        .list_events(proto::ListEventsRequest {
            after_seq: 0,
            limit: 1,
            ..Default::default()
        })
        .await?
        .into_inner()
        .head_seq;
    let request = proto::SubscribeRequest {
        after_seq: Some(0),
        ..Default::default()
    };
    let start = Instant::now();
    let seqs: BoxStream<'static, Result<u64, tonic::Status>> = match reading {
        Reading::Decoded => CallEventsClient::new(channel)
            .max_decoding_message_size(64 << 20)
            .subscribe(request)
            .await?
            .into_inner()
            .map(|e| e.map(|e| e.seq))
            .boxed(),
        Reading::SeqOnly => {
            let mut raw = tonic::client::Grpc::new(channel).max_decoding_message_size(64 << 20);
            raw.ready().await?;
            raw.server_streaming(
                tonic::Request::new(request),
                "/sidecar.v1.CallEvents/Subscribe".parse()?,
                tonic_prost::ProstCodec::<proto::SubscribeRequest, SeqOnly>::default(),
            )
            .await?
            .into_inner()
            .map(|e| e.map(|e| e.seq))
            .boxed()
        }
    };
    let mut seqs = seqs;
    let mut received = 0u64;
    while let Some(seq) = seqs.next().await {
        let seq = seq?;
        received += 1;
        anyhow::ensure!(seq == received, "gap in catch-up at {seq}");
        if seq >= head {
            break;
        }
    }
    Ok((received, start.elapsed()))
}
