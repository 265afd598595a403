//! The phases of one run, in order, against fresh processes on temporary
//! databases: the seven target phases, then the import phase, then the
//! storm phase (`--only` picks some).

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    Args, Phase, import,
    load::{Latencies, Load, fixed_rate, saturation},
    populate::populate,
    server::{rss_bytes, spawn_bare, spawn_sidecar},
    storm,
    subscribers::{catch_up, idle_subscribers_rss, start_subscribers},
    workload::{Workload, configure_settings},
};

/// Everything one run measured: `None` for phases not run.
pub struct Results {
    pub targets: Option<Targets>,
    pub import: Option<import::ImportResults>,
    pub storm: Option<storm::StormResults>,
}

/// What the seven target phases measured.
pub struct Targets {
    pub idle_rss: u64,
    pub idle_subs_rss: u64,
    pub idle_subs_rss_after_load: u64,
    pub fixed: Load,
    pub saturated: Load,
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
    pub populate_took: Duration,
    pub caught_up: u64,
    pub catchup_took: Duration,
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
    Ok(Results {
        targets,
        import,
        storm,
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

    eprintln!("[1/7] starting the sidecar ({})", exe.display());
    let sidecar = spawn_sidecar(exe, &database, work).await?;
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
    let bare = spawn_bare(work).await?;
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
    let sidecar = spawn_sidecar(exe, &database, work).await?;
    let (caught_up, catchup_took) = catch_up(sidecar.grpc.as_deref().expect("grpc")).await?;
    sidecar.stop().await;

    Ok(Targets {
        idle_rss,
        idle_subs_rss,
        idle_subs_rss_after_load,
        fixed,
        saturated,
        sat_counts,
        sat_ordered,
        fan_load,
        fan_counts,
        fan_latency,
        fan_ordered,
        bare_fixed,
        bare_sat,
        populate_took,
        caught_up,
        catchup_took,
    })
}
