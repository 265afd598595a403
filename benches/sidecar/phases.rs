//! The phases of one run, in order, against fresh processes on temporary
//! databases: the eight target phases, then the import phase, then the
//! storm phase (`--only` picks some).

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    Args, Phase, import,
    load::{Flows, Latencies, Load, fixed_rate, saturation},
    populate::populate,
    replicas,
    server::{cpu_time, rss_bytes, spawn_bare, spawn_sidecar},
    storm,
    subscribers::{Reading, catch_up, idle_subscribers_rss, start_subscribers},
    workload::{Workload, configure_settings},
};

/// Everything one run measured: `None` for phases not run.
pub struct Results {
    pub targets: Option<Targets>,
    pub import: Option<import::ImportResults>,
    pub storm: Option<storm::StormResults>,
    pub replicas: Option<replicas::ReplicaResults>,
    pub flows: Option<crate::flows::FlowsResults>,
}

/// CPU time a server used during one load phase.
#[derive(Clone, Copy, Default)]
pub struct Cpu {
    pub user: Duration,
    pub system: Duration,
}

impl Cpu {
    /// Milliseconds of (user, system) CPU per 1,000 requests of `load`.
    pub fn per_thousand(&self, load: &Load) -> (f64, f64) {
        let k = load.sent.max(1) as f64 / 1000.0;
        (
            self.user.as_secs_f64() * 1000.0 / k,
            self.system.as_secs_f64() * 1000.0 / k,
        )
    }
}

/// Runs `phase` and measures the CPU time `pid` spent meanwhile.
pub async fn with_cpu<T>(pid: u32, phase: impl std::future::Future<Output = T>) -> (T, Cpu) {
    let (user0, system0) = cpu_time(pid);
    let out = phase.await;
    let (user1, system1) = cpu_time(pid);
    (
        out,
        Cpu {
            user: user1.saturating_sub(user0),
            system: system1.saturating_sub(system0),
        },
    )
}

/// What the target phases measured.
pub struct Targets {
    pub idle_rss: u64,
    pub idle_subs_rss: u64,
    pub idle_subs_rss_after_load: u64,
    pub fixed: Load,
    /// Unique newCalls, no subscribers: the write path alone.
    pub newcalls: Load,
    pub newcalls_cpu: Cpu,
    pub saturated: Load,
    pub saturated_cpu: Cpu,
    /// Events each subscriber received during saturation, and whether all
    /// came in order.
    pub sat_counts: Vec<u64>,
    pub sat_ordered: bool,
    pub fan_load: Load,
    pub fan_counts: Vec<u64>,
    pub fan_latency: Latencies,
    pub fan_ordered: bool,
    pub bare_fixed: Load,
    pub bare_sat: Load,
    pub bare_newcalls: Load,
    pub bare_newcalls_cpu: Cpu,
    pub populate_took: Duration,
    /// Catch-up to a subscriber reading only each event's seq.
    pub caught_up: u64,
    pub catchup_took: Duration,
    /// Catch-up to a subscriber decoding every event in full.
    pub caught_up_decoded: u64,
    pub catchup_decoded_took: Duration,
}

pub async fn run(args: &Args, exe: &Path) -> anyhow::Result<Results> {
    let dir = tempfile::tempdir()?;
    let work = dir.path();
    let epoch = Instant::now();
    let run_id = std::process::id() as u64;
    let targets = if args.runs(Phase::Targets) {
        Some(targets(args, exe, work, epoch, run_id).await?)
    } else {
        None
    };
    let import = if args.runs(Phase::Import) {
        Some(import::run(args, exe, work, epoch, run_id).await?)
    } else {
        None
    };
    let storm = if args.runs(Phase::Storm) {
        Some(storm::run(args, exe, work, run_id).await?)
    } else {
        None
    };
    let replicas = if args.runs(Phase::Postgres) {
        Some(replicas::run(args, exe, work, epoch, run_id).await?)
    } else {
        None
    };
    let flows = if args.runs(Phase::Flows) {
        Some(crate::flows::run(args, exe, work, epoch, run_id).await?)
    } else {
        None
    };
    Ok(Results {
        targets,
        import,
        storm,
        replicas,
        flows,
    })
}

async fn targets(
    args: &Args,
    exe: &Path,
    work: &Path,
    epoch: Instant,
    run_id: u64,
) -> anyhow::Result<Targets> {
    let database = work.join("bench.db");
    let workload = Arc::new(Workload { run: run_id });

    eprintln!("[1/8] starting the sidecar ({})", exe.display());
    let sidecar = spawn_sidecar(exe, &database, work).await?;
    let grpc = sidecar.grpc.clone().expect("sidecar has gRPC");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = rss_bytes(sidecar.pid());
    let idle_subs_rss = idle_subscribers_rss(&grpc, sidecar.pid(), args.idle_subscribers).await?;
    configure_settings(&grpc).await?;

    eprintln!(
        "[2/8] fixed rate: {} webhooks/s for {} s",
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
        "[3/8] saturation with unique newCalls, no subscribers, {} connections",
        args.concurrency
    );
    let (newcalls, newcalls_cpu) = with_cpu(
        sidecar.pid(),
        saturation(
            &sidecar.http,
            Arc::new(Workload { run: run_id + 3 }),
            Flows::NewCalls,
            args.concurrency,
            args.seconds,
            epoch,
        ),
    )
    .await;

    eprintln!(
        "[4/8] saturation with {} live subscribers, {} connections",
        args.subscribers, args.concurrency
    );
    let subs = start_subscribers(&grpc, args.subscribers, epoch).await?;
    let (saturated, saturated_cpu) = with_cpu(
        sidecar.pid(),
        saturation(
            &sidecar.http,
            Arc::new(Workload { run: run_id + 1 }),
            Flows::Calls,
            args.concurrency,
            args.seconds,
            epoch,
        ),
    )
    .await;
    let (sat_counts, _, sat_ordered) = subs.finish().await;

    eprintln!(
        "[5/8] fan-out: {} subscribers at {} webhooks/s",
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
        "[6/8] {} idle subscribers after the load",
        args.idle_subscribers
    );
    let idle_subs_rss_after_load =
        idle_subscribers_rss(&grpc, sidecar.pid(), args.idle_subscribers).await?;
    sidecar.stop().await;

    eprintln!("[7/8] bare axum handler, same load");
    let bare = spawn_bare(work).await?;
    let bare_fixed = fixed_rate(&bare.http, workload.clone(), args.rate, args.seconds, epoch).await;
    let bare_sat = saturation(
        &bare.http,
        workload.clone(),
        Flows::Calls,
        args.concurrency,
        args.seconds,
        epoch,
    )
    .await;
    let (bare_newcalls, bare_newcalls_cpu) = with_cpu(
        bare.pid(),
        saturation(
            &bare.http,
            workload.clone(),
            Flows::NewCalls,
            args.concurrency,
            args.seconds,
            epoch,
        ),
    )
    .await;
    bare.stop().await;

    eprintln!("[8/8] catch-up over {} stored events", args.catchup_events);
    let populate_took = populate(&database, args.catchup_events).await?;
    let sidecar = spawn_sidecar(exe, &database, work).await?;
    let grpc = sidecar.grpc.as_deref().expect("grpc");
    let (caught_up, catchup_took) = catch_up(grpc, Reading::SeqOnly).await?;
    let (caught_up_decoded, catchup_decoded_took) = catch_up(grpc, Reading::Decoded).await?;
    sidecar.stop().await;

    Ok(Targets {
        idle_rss,
        idle_subs_rss,
        idle_subs_rss_after_load,
        fixed,
        newcalls,
        newcalls_cpu,
        saturated,
        saturated_cpu,
        sat_counts,
        sat_ordered,
        fan_load,
        fan_counts,
        fan_latency,
        fan_ordered,
        bare_fixed,
        bare_sat,
        bare_newcalls,
        bare_newcalls_cpu,
        populate_took,
        caught_up,
        catchup_took,
        caught_up_decoded,
        catchup_decoded_took,
    })
}
