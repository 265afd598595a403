//! Load generation: open-loop fixed rate and closed-loop saturation, with
//! latency recording.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::workload::Workload;

/// Latencies in microseconds.
#[derive(Default, Clone)]
pub struct Latencies(pub Vec<u64>);

impl Latencies {
    pub fn sorted(mut self) -> Self {
        self.0.sort_unstable();
        self
    }
    /// The `p`th percentile in milliseconds.
    pub fn pct(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let i = ((p / 100.0) * (self.0.len() - 1) as f64).round() as usize;
        self.0[i] as f64 / 1000.0
    }
    pub fn max(&self) -> f64 {
        self.0.last().map_or(f64::NAN, |v| *v as f64 / 1000.0)
    }
}

/// One load phase: what was sent, what failed, how long each took.
pub struct Load {
    pub newcall: Latencies,
    pub all: Latencies,
    pub sent: u64,
    pub errors: u64,
    pub elapsed: Duration,
}

impl Load {
    pub fn throughput(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64()
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .expect("client builds")
}

async fn post(client: &reqwest::Client, url: &str, body: String) -> bool {
    match client
        .post(url)
        .header(
            "content-type",
            "application/x-www-form-urlencoded; charset=UTF-8",
        )
        .body(body)
        .send()
        .await
    {
        Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
        Err(_) => false,
    }
}

/// One fixed-rate request: when it was scheduled (from the start of the
/// load), whether it was a newCall, whether it succeeded, and its latency in
/// microseconds from the scheduled time.
pub struct Sample {
    pub at: Duration,
    pub is_new: bool,
    pub ok: bool,
    pub us: u64,
}

/// Open loop: one webhook every 1/rate s; latency from the scheduled time
/// (no coordinated omission).
pub async fn fixed_rate(
    base: &str,
    workload: Arc<Workload>,
    rate: u64,
    seconds: u64,
    epoch: Instant,
) -> Load {
    let (start, samples) = fixed_rate_samples(base, workload, rate, seconds, epoch, None).await;
    summarize(start, seconds, &samples)
}

/// The [`Load`] of fixed-rate samples from a load that began at `start` and
/// was meant to last `seconds`.
pub fn summarize(start: Instant, seconds: u64, samples: &[Sample]) -> Load {
    let mut load = Load {
        newcall: Latencies::default(),
        all: Latencies::default(),
        sent: 0,
        errors: 0,
        elapsed: start.elapsed(),
    };
    for sample in samples {
        load.sent += 1;
        if !sample.ok {
            load.errors += 1;
        }
        load.all.0.push(sample.us);
        if sample.is_new {
            load.newcall.0.push(sample.us);
        }
    }
    load.elapsed = start.elapsed().max(Duration::from_secs(seconds));
    load.newcall = load.newcall.sorted();
    load.all = load.all.sorted();
    load
}

/// The open loop of [`fixed_rate`], every request on its own: returns the
/// start of the load and one sample per request. `started`, if given, is
/// told the start instant before the first request goes out, for work
/// timed against the load.
pub async fn fixed_rate_samples(
    base: &str,
    workload: Arc<Workload>,
    rate: u64,
    seconds: u64,
    epoch: Instant,
    started: Option<tokio::sync::oneshot::Sender<Instant>>,
) -> (Instant, Vec<Sample>) {
    let client = client();
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    if let Some(started) = started {
        let _ = started.send(start);
    }
    let mut tasks = Vec::with_capacity(total as usize);
    for n in 0..total {
        let offset = interval * n as u32;
        let scheduled = start + offset;
        tokio::time::sleep_until(scheduled.into()).await;
        let Some((path, body)) = workload.webhook(n / 3, n % 3, epoch.elapsed().as_micros() as u64)
        else {
            continue;
        };
        let url = format!("{base}{path}");
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let ok = post(&client, &url, body).await;
            Sample {
                at: offset,
                is_new: n % 3 == 0,
                ok,
                us: scheduled.elapsed().as_micros() as u64,
            }
        }));
    }
    let mut samples = Vec::with_capacity(tasks.len());
    for t in tasks {
        samples.push(t.await.expect("task"));
    }
    (start, samples)
}

/// What each closed-loop worker sends, back to back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Flows {
    /// Whole call flows: newCall, answer, hangup (no follow-ups after a Reject).
    Calls,
    /// Only the newCall of each call: every push a new call.
    NewCalls,
}

/// Closed loop: `concurrency` workers send `flows` back to back.
pub async fn saturation(
    base: &str,
    workload: Arc<Workload>,
    flows: Flows,
    concurrency: usize,
    seconds: u64,
    epoch: Instant,
) -> Load {
    let stages = match flows {
        Flows::Calls => 3,
        Flows::NewCalls => 1,
    };
    let client = client();
    let stop = Arc::new(AtomicBool::new(false));
    let next_call = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (client, stop, next_call, workload, base) = (
            client.clone(),
            stop.clone(),
            next_call.clone(),
            workload.clone(),
            base.to_string(),
        );
        workers.push(tokio::spawn(async move {
            let (mut newcall, mut all, mut errors) = (Vec::new(), Vec::new(), 0u64);
            while !stop.load(Ordering::Relaxed) {
                let call = next_call.fetch_add(1, Ordering::Relaxed);
                for stage in 0..stages {
                    let Some((path, body)) =
                        workload.webhook(call, stage, epoch.elapsed().as_micros() as u64)
                    else {
                        continue;
                    };
                    let t = Instant::now();
                    if !post(&client, &format!("{base}{path}"), body).await {
                        errors += 1;
                    }
                    let us = t.elapsed().as_micros() as u64;
                    all.push(us);
                    if stage == 0 {
                        newcall.push(us);
                    }
                }
            }
            (newcall, all, errors)
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut load = Load {
        newcall: Latencies::default(),
        all: Latencies::default(),
        sent: 0,
        errors: 0,
        elapsed: Duration::ZERO,
    };
    for w in workers {
        let (n, a, e) = w.await.expect("worker");
        load.sent += a.len() as u64;
        load.errors += e;
        load.newcall.0.extend(n);
        load.all.0.extend(a);
    }
    load.elapsed = start.elapsed();
    load.newcall = load.newcall.sorted();
    load.all = load.all.sorted();
    load
}
