//! The project's benchmark: starts the release sidecar on a temporary SQLite
//! database and measures, in one run, decision latency and throughput (against
//! a bare axum handler returning the same XML), fan-out latency to live
//! subscribers, catch-up speed from the log, and memory. Writes a Markdown
//! report and an SVG latency chart.
//!
//! ```sh
//! cargo build --release && cargo run --release --bin sidecar-bench
//! cargo run --release --bin sidecar-bench -- --quick      # smoke run, seconds
//! ```

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::{Parser, Subcommand};
use futures::StreamExt;
use sipgate_sidecar::{
    proto::{self, call_events_client::CallEventsClient, settings_client::SettingsClient},
    sipgate::event::{Direction, Event, EventKind},
    store::{Store, writer::Intake},
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};
use tonic::transport::Channel;

#[derive(Parser, Debug)]
#[command(
    name = "sidecar-bench",
    about = "Measure sipgate-sidecar against its performance targets"
)]
struct Args {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// The sidecar binary (default: sipgate-sidecar next to this binary).
    #[arg(long)]
    sidecar: Option<PathBuf>,
    /// Where the report and chart go.
    #[arg(long, default_value = "bench-report")]
    out: PathBuf,
    /// Seconds per load phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Webhooks per second in the fixed-rate and fan-out phases.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Concurrent connections in the saturation phase.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Live subscribers during saturation and fan-out.
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// Events stored before the catch-up phase.
    #[arg(long, default_value_t = 1_000_000)]
    catchup_events: u64,
    /// Subscribers for the idle-memory phase.
    #[arg(long, default_value_t = 1000)]
    idle_subscribers: usize,
    /// A fast smoke run (small numbers; figures not meaningful).
    #[arg(long)]
    quick: bool,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Internal: the bare axum handler used as the ceiling.
    BareServer,
}

// ------------------------------------------------------------------ processes

struct Server {
    child: Child,
    http: String,
    grpc: Option<String>,
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        let _ = self.child.kill().await;
    }
}

async fn spawn_listening(mut command: Command, marker: &str) -> anyhow::Result<(Child, String)> {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the server process")?;
    let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains(marker) {
                return Some(line);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .context("server did not report its address")?;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, line))
}

async fn spawn_sidecar(exe: &Path, database: &Path) -> anyhow::Result<Server> {
    let mut command = Command::new(exe);
    command
        .args([
            "serve",
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
        ])
        .args(["--metrics-addr", "off", "--signature", "off"])
        .arg("--database")
        .arg(database)
        .env("SIDECAR_LOG", "warn");
    let (child, line) = spawn_listening(command, "listening:").await?;
    // "... webhooks on http://A, gRPC on B, ..."
    let http = line
        .split("webhooks on ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .context("no webhook address")?
        .to_string();
    let grpc = line
        .split("gRPC on ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .map(|s| format!("http://{}", s.trim()))
        .context("no gRPC address")?;
    Ok(Server {
        child,
        http,
        grpc: Some(grpc),
    })
}

async fn spawn_bare() -> anyhow::Result<Server> {
    let mut command = Command::new(std::env::current_exe()?);
    command.arg("bare-server");
    let (child, line) = spawn_listening(command, "bare listening on ").await?;
    let http = line
        .split("bare listening on ")
        .nth(1)
        .context("no address")?
        .trim()
        .to_string();
    Ok(Server {
        child,
        http,
        grpc: None,
    })
}

/// The ceiling: read the body, answer the same static XML, store nothing.
async fn bare_server() -> anyhow::Result<()> {
    use axum::{Router, body::Bytes, http::header, routing::post};
    const REPLY: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response onHangup=\"http://127.0.0.1/api/v1/sipgate/in\" onAnswer=\"http://127.0.0.1/api/v1/sipgate/in\"/>\n";
    async fn handler(_body: Bytes) -> ([(header::HeaderName, &'static str); 1], &'static str) {
        (
            [(header::CONTENT_TYPE, "application/xml; charset=UTF-8")],
            REPLY,
        )
    }
    let router = Router::new().route("/api/v1/sipgate/{direction}", post(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    eprintln!("bare listening on http://{}", listener.local_addr()?);
    axum::serve(listener, router).await?;
    Ok(())
}

fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

// ------------------------------------------------------------------ workload

/// Real-looking bodies: a share of blocked inbound callers, routed outbound
/// calls, and plain inbound calls, each a newCall -> answer -> hangup flow.
struct Workload {
    run: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum CallKind {
    Blocked,
    Routed,
    Plain,
}

impl Workload {
    fn kind(&self, call: u64) -> CallKind {
        match call % 10 {
            0 => CallKind::Blocked,
            1..=3 => CallKind::Routed,
            _ => CallKind::Plain,
        }
    }

    fn call_id(&self, call: u64) -> String {
        format!(
            "54566B150B0C0D3A5D534D5F565D7C5F54535A5C5B53525A7E5B5D57455044{:06X}{call:012X}",
            self.run
        )
    }

    /// The `stage`th webhook (0 newCall, 1 answer, 2 hangup) of call `call`,
    /// tagged with the send time for latency measurement. `None` where
    /// sipgate sends nothing: no answer or hangup follows a Reject.
    fn webhook(&self, call: u64, stage: u64, sent_us: u64) -> Option<(&'static str, String)> {
        if stage > 0 && self.kind(call) == CallKind::Blocked {
            return None;
        }
        let id = self.call_id(call);
        let (direction, from, to) = match self.kind(call) {
            CallKind::Blocked => (
                "in",
                format!("4930100000{:02}", call % 50),
                "4928559389086".to_string(),
            ),
            CallKind::Routed => (
                "out",
                "4928559389086".to_string(),
                format!("49{}{:07}", 40 + call % 20, call % 9_999_999),
            ),
            CallKind::Plain => (
                "in",
                format!("49176{:07}", call % 9_999_999),
                "4928559389086".to_string(),
            ),
        };
        let path = if direction == "in" {
            "/api/v1/sipgate/in"
        } else {
            "/api/v1/sipgate/out"
        };
        let body = match stage {
            0 => format!(
                "event=newCall&direction={direction}&from={from}&to={to}&callId={id}&origCallId={id}&user%5B%5D=Support+Team&userId%5B%5D=w0&fullUserId%5B%5D=1234567w0&xcid=8419b3450b75cd19&benchUs={sent_us}"
            ),
            1 => format!(
                "event=answer&callId={id}&user=Alice+Agent&userId=w0&fullUserId=1234567w0&from={from}&to={to}&direction={direction}&answeringNumber=4928559389086&benchUs={sent_us}"
            ),
            _ => format!(
                "event=hangup&cause=normalClearing&callId={id}&from={from}&to={to}&direction={direction}&answeringNumber=4928559389086&benchUs={sent_us}"
            ),
        };
        Some((path, body))
    }
}

async fn configure_settings(grpc: &str) -> anyhow::Result<()> {
    let mut settings =
        SettingsClient::new(Channel::from_shared(grpc.to_string())?.connect().await?);
    for i in 0..50 {
        settings
            .add_block_entry(proto::AddBlockEntryRequest {
                pattern: format!("4930100000{i:02}"),
                note: format!("spam {i}"),
            })
            .await?;
    }
    settings
        .add_block_entry(proto::AddBlockEntryRequest {
            pattern: "anonymous".into(),
            note: "hidden".into(),
        })
        .await?;
    for i in 0..20 {
        settings
            .add_routing_rule(proto::AddRoutingRuleRequest {
                dest: format!("49{}*", 40 + i),
                caller_id: format!("49301234{i:03}"),
                note: format!("area {i}"),
                position: None,
            })
            .await?;
    }
    settings
        .set_default_caller_id(proto::SetDefaultCallerIdRequest {
            caller_id: "4930123456000".into(),
        })
        .await?;
    Ok(())
}

// ------------------------------------------------------------------ measuring

#[derive(Default, Clone)]
struct Latencies(Vec<u64>); // microseconds

impl Latencies {
    fn sorted(mut self) -> Self {
        self.0.sort_unstable();
        self
    }
    fn pct(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let i = ((p / 100.0) * (self.0.len() - 1) as f64).round() as usize;
        self.0[i] as f64 / 1000.0
    }
    fn max(&self) -> f64 {
        self.0.last().map_or(f64::NAN, |v| *v as f64 / 1000.0)
    }
}

struct Load {
    newcall: Latencies,
    all: Latencies,
    sent: u64,
    errors: u64,
    elapsed: Duration,
}

impl Load {
    fn throughput(&self) -> f64 {
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

/// Open loop: one webhook every 1/rate s; latency from the scheduled time
/// (no coordinated omission).
async fn fixed_rate(
    base: &str,
    workload: Arc<Workload>,
    rate: u64,
    seconds: u64,
    epoch: Instant,
) -> Load {
    let client = client();
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for n in 0..total {
        let scheduled = start + interval * n as u32;
        tokio::time::sleep_until(scheduled.into()).await;
        let Some((path, body)) = workload.webhook(n / 3, n % 3, epoch.elapsed().as_micros() as u64)
        else {
            continue;
        };
        let url = format!("{base}{path}");
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let ok = post(&client, &url, body).await;
            (n % 3 == 0, ok, scheduled.elapsed().as_micros() as u64)
        }));
    }
    let mut load = Load {
        newcall: Latencies::default(),
        all: Latencies::default(),
        sent: 0,
        errors: 0,
        elapsed: start.elapsed(),
    };
    for t in tasks {
        let (is_new, ok, us) = t.await.expect("task");
        load.sent += 1;
        if !ok {
            load.errors += 1;
        }
        load.all.0.push(us);
        if is_new {
            load.newcall.0.push(us);
        }
    }
    load.elapsed = start.elapsed().max(Duration::from_secs(seconds));
    load.newcall = load.newcall.sorted();
    load.all = load.all.sorted();
    load
}

/// Closed loop: `concurrency` workers send call flows back to back.
async fn saturation(
    base: &str,
    workload: Arc<Workload>,
    concurrency: usize,
    seconds: u64,
    epoch: Instant,
) -> Load {
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
                for stage in 0..3 {
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

async fn channels(grpc: &str, count: usize) -> anyhow::Result<Vec<Channel>> {
    let mut out = Vec::new();
    for _ in 0..count {
        out.push(Channel::from_shared(grpc.to_string())?.connect().await?);
    }
    Ok(out)
}

struct Subscribers {
    tasks: Vec<tokio::task::JoinHandle<(u64, Vec<u64>, bool)>>,
    stop: Arc<AtomicBool>,
}

/// `count` live subscribers from now; each records webhook-to-subscriber
/// latency from the `benchUs` tag and checks for gaps.
async fn start_subscribers(
    grpc: &str,
    count: usize,
    epoch: Instant,
) -> anyhow::Result<Subscribers> {
    let conns = channels(grpc, count.div_ceil(100).max(1)).await?;
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
    async fn finish(self) -> (Vec<u64>, Latencies, bool) {
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
async fn idle_subscribers_rss(grpc: &str, pid: u32, count: usize) -> anyhow::Result<u64> {
    let conns = channels(grpc, count.div_ceil(100)).await?;
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

/// Appends `count` events to the database with the sidecar's own writer.
async fn populate(database: &Path, count: u64) -> anyhow::Result<Duration> {
    let store = Store::open(&database.display().to_string()).await?;
    let (_fanout, publisher) = sipgate_sidecar::fanout::Fanout::new(store.clone(), 16);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (writer, task) =
        sipgate_sidecar::store::spawn_writer(store, publisher, shutdown.clone(), 2048);
    let start = Instant::now();
    let producers = 4u64;
    let mut handles = Vec::new();
    for p in 0..producers {
        let writer = writer.clone();
        handles.push(tokio::spawn(async move {
            let mut pending = Vec::with_capacity(4096);
            let mut i = p;
            while i < count {
                let event = Event {
                    kind: EventKind::Dtmf,
                    call_id: format!("catchup-{}", i / 8),
                    direction: Some(Direction::In),
                    from: "492111234567".into(),
                    to: "4928559389086".into(),
                    orig_call_id: String::new(),
                    xcid: "8419b3450b75cd19".into(),
                    users: vec![],
                    user_ids: vec![],
                    full_user_ids: vec![],
                    answering_number: String::new(),
                    cause: String::new(),
                    dtmf: "1".into(),
                    diversion: String::new(),
                    raw: vec![
                        ("event".into(), "dtmf".into()),
                        ("callId".into(), format!("catchup-{}", i / 8)),
                        ("dtmf".into(), "1".into()),
                    ],
                };
                let rx = writer
                    .submit(Intake {
                        event,
                        decision: None,
                        received_at_ms: sipgate_sidecar::now_ms(),
                    })
                    .await?;
                pending.push(rx);
                if pending.len() == 4096 {
                    for rx in pending.drain(..) {
                        rx.await??;
                    }
                }
                i += producers;
            }
            for rx in pending {
                rx.await??;
            }
            anyhow::Ok(())
        }));
    }
    for h in handles {
        h.await??;
    }
    let took = start.elapsed();
    shutdown.cancel();
    drop(writer);
    task.await?;
    Ok(took)
}

async fn catch_up(grpc: &str) -> anyhow::Result<(u64, Duration)> {
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

// ------------------------------------------------------------------ report

fn cdf_svg(series: &[(&str, &str, &Latencies)]) -> String {
    let (w, h, left, bottom, top, right) = (760.0, 420.0, 70.0, 50.0, 30.0, 20.0);
    let max_ms = series
        .iter()
        .map(|(_, _, l)| l.pct(99.9))
        .fold(1.0_f64, f64::max)
        .max(1.0);
    let min_ms = 0.05_f64;
    let x = |ms: f64| {
        left + ((ms.max(min_ms) / min_ms).ln() / (max_ms / min_ms).ln()) * (w - left - right)
    };
    let y = |p: f64| top + (1.0 - p) * (h - top - bottom);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"18\" text-anchor=\"middle\" font-size=\"14\">Webhook latency, cumulative distribution (log scale)</text>\n",
        w / 2.0
    );
    for tick in [
        0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0,
    ] {
        if tick > max_ms * 1.01 || tick < min_ms {
            continue;
        }
        let _ = writeln!(
            svg,
            "<line x1=\"{0:.1}\" y1=\"{1}\" x2=\"{0:.1}\" y2=\"{2}\" stroke=\"#ddd\"/><text x=\"{0:.1}\" y=\"{3}\" text-anchor=\"middle\">{tick} ms</text>",
            x(tick),
            top,
            h - bottom,
            h - bottom + 16.0
        );
    }
    for p in [0.0, 0.5, 0.9, 0.99, 1.0] {
        let _ = writeln!(
            svg,
            "<line x1=\"{left}\" y1=\"{0:.1}\" x2=\"{1}\" y2=\"{0:.1}\" stroke=\"#ddd\"/><text x=\"{2}\" y=\"{3:.1}\" text-anchor=\"end\">{4}%</text>",
            y(p),
            w - right,
            left - 6.0,
            y(p) + 4.0,
            p * 100.0
        );
    }
    for (i, (name, color, lat)) in series.iter().enumerate() {
        let n = lat.0.len();
        if n == 0 {
            continue;
        }
        let step = (n / 400).max(1);
        let points: Vec<String> = (0..n)
            .step_by(step)
            .chain(std::iter::once(n - 1))
            .map(|k| {
                format!(
                    "{:.1},{:.1}",
                    x(lat.0[k] as f64 / 1000.0),
                    y((k + 1) as f64 / n as f64)
                )
            })
            .collect();
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\n<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"3\" fill=\"{color}\"/><text x=\"{}\" y=\"{}\">{name}</text>",
            points.join(" "),
            left + 10.0,
            top + 14.0 + 16.0 * i as f64,
            left + 28.0,
            top + 19.0 + 16.0 * i as f64
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn machine_info() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or("unknown".into(), |kb| {
            format!("{:.1} GiB", kb as f64 / 1048576.0)
        });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!(
        "- CPU: {cpu}, {cores} cores available\n- Memory: {mem}\n- Kernel: {}\n- Commit: {commit}\n",
        kernel.trim()
    )
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if let Some(Mode::BareServer) = args.mode {
        return bare_server().await;
    }
    if args.quick {
        args.seconds = args.seconds.min(2);
        args.rate = args.rate.min(300);
        args.subscribers = args.subscribers.min(10);
        args.catchup_events = args.catchup_events.min(20_000);
        args.idle_subscribers = args.idle_subscribers.min(100);
    }
    let exe = match &args.sidecar {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("binary has no directory")?
            .join("sipgate-sidecar"),
    };
    anyhow::ensure!(
        exe.exists(),
        "{} not found: run `cargo build --release` first or pass --sidecar",
        exe.display()
    );
    std::fs::create_dir_all(&args.out)?;
    let dir = tempfile::tempdir()?;
    let database = dir.path().join("bench.db");
    let epoch = Instant::now();
    let run_id = std::process::id() as u64;
    let workload = Arc::new(Workload { run: run_id });
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");

    eprintln!("[1/7] starting the sidecar ({})", exe.display());
    let sidecar = spawn_sidecar(&exe, &database).await?;
    let grpc = sidecar.grpc.clone().expect("sidecar has gRPC");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = rss_bytes(sidecar.pid());
    let idle_subs_rss = idle_subscribers_rss(&grpc, sidecar.pid(), args.idle_subscribers).await?;
    configure_settings(&grpc).await?;

    eprintln!(
        "[2/7] fixed rate: {} webhooks/s for {} s",
        args.rate, args.seconds
    );
    let fixed = fixed_rate(
        &sidecar.http,
        workload.clone(),
        args.rate,
        args.seconds,
        epoch,
    )
    .await;

    eprintln!(
        "[3/7] saturation with {} live subscribers, {} connections",
        args.subscribers, args.concurrency
    );
    let subs = start_subscribers(&grpc, args.subscribers, epoch).await?;
    let saturated = saturation(
        &sidecar.http,
        Arc::new(Workload { run: run_id + 1 }),
        args.concurrency,
        args.seconds,
        epoch,
    )
    .await;
    let (sat_counts, _, sat_ordered) = subs.finish().await;

    eprintln!(
        "[4/7] fan-out: {} subscribers at {} webhooks/s",
        args.subscribers, args.rate
    );
    let subs = start_subscribers(&grpc, args.subscribers, epoch).await?;
    let fan_load = fixed_rate(
        &sidecar.http,
        Arc::new(Workload { run: run_id + 2 }),
        args.rate,
        args.seconds,
        epoch,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (fan_counts, fan_latency, fan_ordered) = subs.finish().await;

    eprintln!(
        "[5/7] {} idle subscribers after the load",
        args.idle_subscribers
    );
    let idle_subs_rss_after_load =
        idle_subscribers_rss(&grpc, sidecar.pid(), args.idle_subscribers).await?;
    sidecar.stop().await;

    eprintln!("[6/7] bare axum handler, same load");
    let bare = spawn_bare().await?;
    let bare_fixed = fixed_rate(&bare.http, workload.clone(), args.rate, args.seconds, epoch).await;
    let bare_sat = saturation(
        &bare.http,
        workload.clone(),
        args.concurrency,
        args.seconds,
        epoch,
    )
    .await;
    bare.stop().await;

    eprintln!("[7/7] catch-up over {} stored events", args.catchup_events);
    let populate_took = populate(&database, args.catchup_events).await?;
    let sidecar = spawn_sidecar(&exe, &database).await?;
    let (caught_up, catchup_took) = catch_up(sidecar.grpc.as_deref().expect("grpc")).await?;
    sidecar.stop().await;

    // ---------------------------------------------------------------- report
    let ratio = saturated.throughput() / bare_sat.throughput();
    let catchup_rate = caught_up as f64 / catchup_took.as_secs_f64();
    // Every subscriber saw the same number of events, at least one per
    // accepted webhook (a rejected call adds its synthetic end).
    let all_same = |counts: &[u64], at_least: u64| {
        counts
            .first()
            .is_some_and(|first| *first >= at_least && counts.iter().all(|c| c == first))
    };
    let expected_fan = fan_counts.first().copied().unwrap_or(0);
    let fan_complete = all_same(&fan_counts, fan_load.sent - fan_load.errors);
    let sat_complete = all_same(&sat_counts, saturated.sent - saturated.errors);
    let mb = |b: u64| b as f64 / 1_048_576.0;

    let mut report = String::new();
    let _ = writeln!(report, "# sipgate-sidecar benchmark\n");
    let _ = writeln!(
        report,
        "Command: `{command_line}`  \nPhase length: {} s, fixed rate {} webhooks/s, {} connections at saturation, {} live subscribers.\n",
        args.seconds, args.rate, args.concurrency, args.subscribers
    );
    let _ = writeln!(report, "## Machine\n\n{}", machine_info());
    let _ = writeln!(report, "## Targets (SPEC §11)\n");
    let _ = writeln!(report, "| target | measured | verdict |\n|---|---|---|");
    let _ = writeln!(
        report,
        "| newCall decision p99 ≤ 10 ms under load, durable commits | p99 {:.2} ms at {} webhooks/s; {:.2} ms at saturation | {} |",
        fixed.newcall.pct(99.0),
        args.rate,
        saturated.newcall.pct(99.0),
        verdict(fixed.newcall.pct(99.0) <= 10.0)
    );
    let _ = writeln!(
        report,
        "| throughput with storage + {} subscribers ≥ 0.5× bare axum | {:.0} vs {:.0} webhooks/s = {:.2}× | {} |",
        args.subscribers,
        saturated.throughput(),
        bare_sat.throughput(),
        ratio,
        verdict(ratio >= 0.5)
    );
    let _ = writeln!(
        report,
        "| fan-out p99 ≤ 20 ms, {} subscribers at {} webhooks/s | p50 {:.2} ms, p99 {:.2} ms, every subscriber got all {} events: {}, in order: {} | {} |",
        args.subscribers,
        args.rate,
        fan_latency.pct(50.0),
        fan_latency.pct(99.0),
        expected_fan,
        fan_complete,
        fan_ordered,
        verdict(fan_latency.pct(99.0) <= 20.0 && fan_complete && fan_ordered)
    );
    let _ = writeln!(
        report,
        "| catch-up ≥ 100,000 events/s from seq 0 | {caught_up} events in {:.2} s = {:.0} events/s | {} |",
        catchup_took.as_secs_f64(),
        catchup_rate,
        verdict(catchup_rate >= 100_000.0)
    );
    let _ = writeln!(
        report,
        "| idle RSS ≤ 30 MB | {:.1} MB | {} |",
        mb(idle_rss),
        verdict(mb(idle_rss) <= 30.0)
    );
    let _ = writeln!(
        report,
        "| {} idle subscribers ≤ 100 MB | {:.1} MB on a fresh server; {:.1} MB after the load phases | {} |",
        args.idle_subscribers,
        mb(idle_subs_rss),
        mb(idle_subs_rss_after_load),
        verdict(mb(idle_subs_rss) <= 100.0)
    );
    let _ = writeln!(report, "\n## Latency (ms)\n");
    let _ = writeln!(
        report,
        "| run | requests | errors | req/s | newCall p50 | newCall p99 | newCall max | all p50 | all p99 |\n|---|---|---|---|---|---|---|---|---|"
    );
    for (name, l) in [
        ("sidecar, fixed rate", &fixed),
        ("bare axum, fixed rate", &bare_fixed),
        ("sidecar, saturation + subscribers", &saturated),
        ("bare axum, saturation", &bare_sat),
        ("sidecar, fan-out phase", &fan_load),
    ] {
        let _ = writeln!(
            report,
            "| {name} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            l.sent,
            l.errors,
            l.throughput(),
            l.newcall.pct(50.0),
            l.newcall.pct(99.0),
            l.newcall.max(),
            l.all.pct(50.0),
            l.all.pct(99.0)
        );
    }
    let _ = writeln!(
        report,
        "\nFixed-rate latencies are measured from each request's scheduled send time (open loop). Saturation: every subscriber received all {} stored events: {sat_complete}, in order: {sat_ordered}.",
        sat_counts.first().copied().unwrap_or(0)
    );
    let _ = writeln!(
        report,
        "Catch-up database filled with the sidecar's own writer in {:.2} s ({:.0} events/s).\n",
        populate_took.as_secs_f64(),
        args.catchup_events as f64 / populate_took.as_secs_f64()
    );
    let _ = writeln!(report, "![latency distribution](latency.svg)");

    let svg = cdf_svg(&[
        ("sidecar newCall, fixed rate", "#d62728", &fixed.newcall),
        ("bare axum, fixed rate", "#1f77b4", &bare_fixed.newcall),
        ("sidecar newCall, saturation", "#ff7f0e", &saturated.newcall),
        ("fan-out webhook→subscriber", "#2ca02c", &fan_latency),
    ]);
    std::fs::write(args.out.join("latency.svg"), svg)?;
    std::fs::write(args.out.join("report.md"), &report)?;
    println!("{report}");
    eprintln!("report written to {}", args.out.join("report.md").display());
    Ok(())
}
