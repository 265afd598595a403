//! The PostgreSQL phase: the write path and the fan-out on PostgreSQL, one
//! replica and two replicas on one database, next to SQLite under the same
//! load. Needs a server: `--postgres URL` (or `SIDECAR_BENCH_POSTGRES`), a
//! role that may create databases; each measurement gets a new database.

use std::{
    fmt::Write as _,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::{
    Args,
    load::{Flows, Latencies, Load, fixed_rate, saturation},
    server::{Server, spawn_sidecar},
    subscribers::start_subscribers,
    workload::{Workload, configure_settings},
};

/// One backend setup under the same load.
pub struct Setup {
    pub name: &'static str,
    /// Unique newCalls, closed loop: the write path.
    pub newcalls: Load,
    /// Fixed rate with live subscribers; pushes go to the replicas in turn.
    pub fixed: Load,
    /// Fan-out latency, push sent to event received, on one replica's
    /// subscribers (with two replicas: of events pushed to the other one).
    pub fan_latency: Latencies,
    pub fan_counts: Vec<u64>,
    pub fan_ordered: bool,
}

pub enum ReplicaResults {
    /// No PostgreSQL server was given.
    NotRun,
    Measured(Vec<Setup>),
}

pub async fn run(
    args: &Args,
    exe: &Path,
    work: &Path,
    epoch: Instant,
    run_id: u64,
) -> anyhow::Result<ReplicaResults> {
    let Some(server) = args.postgres.clone().filter(|s| !s.is_empty()) else {
        eprintln!("[postgres] skipped: no --postgres URL");
        return Ok(ReplicaResults::NotRun);
    };
    let mut setups = Vec::new();
    for (n, (name, replicas)) in [
        ("SQLite, 1 process", 0),
        ("PostgreSQL, 1 replica", 1),
        ("PostgreSQL, 2 replicas", 2),
    ]
    .into_iter()
    .enumerate()
    {
        eprintln!("[postgres {}/3] {name}", n + 1);
        let dir = work.join(format!("replicas-{n}"));
        let servers = if replicas == 0 {
            std::fs::create_dir_all(&dir)?;
            vec![spawn_sidecar(exe, &dir.join("bench.db"), &dir).await?]
        } else {
            let database = create_database(&server, run_id, n).await?;
            let mut servers = Vec::new();
            for r in 0..replicas {
                let dir = dir.join(format!("r{r}"));
                std::fs::create_dir_all(&dir)?;
                servers.push(spawn_sidecar(exe, Path::new(&database), &dir).await?);
            }
            servers
        };
        let setup = measure(args, name, &servers, epoch, run_id + 100 + 10 * n as u64).await?;
        for s in servers {
            s.stop().await;
        }
        setups.push(setup);
    }
    Ok(ReplicaResults::Measured(setups))
}

async fn measure(
    args: &Args,
    name: &'static str,
    servers: &[Server],
    epoch: Instant,
    run: u64,
) -> anyhow::Result<Setup> {
    let grpc = |s: &Server| s.grpc.clone().expect("sidecar has gRPC");
    configure_settings(&grpc(&servers[0])).await?;
    // Settings reach the other replica by notification; give it a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The connections split over the replicas.
    let per = (args.concurrency / servers.len()).max(1);
    let loads = futures::future::join_all(servers.iter().enumerate().map(|(i, s)| {
        saturation(
            &s.http,
            Arc::new(Workload {
                run: run + i as u64,
            }),
            Flows::NewCalls,
            per,
            args.seconds,
            epoch,
        )
    }))
    .await;
    let newcalls = merge(loads);

    // Subscribers on the first replica; pushes to the last one.
    let subs = start_subscribers(&grpc(&servers[0]), args.subscribers, epoch).await?;
    let target = servers.last().expect("a server");
    let fixed = fixed_rate(
        &target.http,
        Arc::new(Workload { run: run + 5 }),
        args.rate,
        args.seconds,
        epoch,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (fan_counts, fan_latency, fan_ordered) = subs.finish().await;
    Ok(Setup {
        name,
        newcalls,
        fixed,
        fan_latency,
        fan_counts,
        fan_ordered,
    })
}

fn merge(loads: Vec<Load>) -> Load {
    let mut merged = Load {
        newcall: Latencies::default(),
        all: Latencies::default(),
        sent: 0,
        errors: 0,
        elapsed: Duration::ZERO,
    };
    for load in loads {
        merged.newcall.0.extend(load.newcall.0);
        merged.all.0.extend(load.all.0);
        merged.sent += load.sent;
        merged.errors += load.errors;
        merged.elapsed = merged.elapsed.max(load.elapsed);
    }
    merged.newcall = merged.newcall.sorted();
    merged.all = merged.all.sorted();
    merged
}

/// A new database on `server`; its URL.
async fn create_database(server: &str, run_id: u64, n: usize) -> anyhow::Result<String> {
    use sqlx::Connection as _;
    let name = format!("sidecar_bench_{run_id}_{n}");
    let mut admin = sqlx::PgConnection::connect(server)
        .await
        .context("cannot connect to --postgres")?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
        .execute(&mut admin)
        .await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .context("cannot create a benchmark database (may the role create databases?)")?;
    let (base, query) = match server.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (server, String::new()),
    };
    let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
    Ok(format!("{base}/{name}{query}"))
}

/// The PostgreSQL figures next to SQLite's.
pub fn section(report: &mut String, results: &ReplicaResults) {
    let _ = writeln!(report, "## PostgreSQL and several replicas\n");
    let ReplicaResults::Measured(setups) = results else {
        let _ = writeln!(
            report,
            "Not measured: give a PostgreSQL server with `--postgres postgres://…` (or `SIDECAR_BENCH_POSTGRES`).\n"
        );
        return;
    };
    let _ = writeln!(
        report,
        "The same load on each setup, each on a new database. Write path: unique newCalls, closed loop, the connections split over the replicas. \
         Fan-out: fixed rate pushed to the last replica, received by the subscribers of the first (with two replicas: every event crosses replicas). Latencies in ms.\n"
    );
    let _ = writeln!(
        report,
        "| setup | newCalls/s | newCall p50 | p99 | errors | fixed-rate p50 | p99 | fan-out p50 | p99 | max | subscribers complete, in order |\n|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for s in setups {
        let fixed = Latencies(s.fixed.newcall.0.clone()).sorted();
        let expected = s.fixed.sent - s.fixed.errors;
        let complete = s.fan_counts.iter().all(|&c| c >= expected) && !s.fan_counts.is_empty();
        let fan = Latencies(s.fan_latency.0.clone()).sorted();
        let _ = writeln!(
            report,
            "| {} | {:.0} | {:.2} | {:.2} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            s.name,
            s.newcalls.throughput(),
            s.newcalls.newcall.pct(50.0),
            s.newcalls.newcall.pct(99.0),
            s.newcalls.errors + s.fixed.errors,
            fixed.pct(50.0),
            fixed.pct(99.0),
            fan.pct(50.0),
            fan.pct(99.0),
            fan.max(),
            if complete && s.fan_ordered {
                "yes"
            } else {
                "NO"
            },
        );
    }
    let _ = writeln!(report);
}
