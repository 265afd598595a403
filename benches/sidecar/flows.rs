//! Call flows: the decision core's latency with a large document (the
//! README's example plus 1,000 rules over 50 schedules), measured in
//! process with no I/O, and webhook throughput with that document set next
//! to the same server without it.

use std::{
    fmt::Write,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use sipgate_sidecar::{
    decide::{self, Inputs},
    flows::{self, Files},
    proto::{self, flows_client::FlowsClient},
    settings::Settings,
    sipgate::event::Direction,
};
use tonic::transport::Channel;

use crate::{
    Args,
    load::{Flows, Load, saturation},
    phases::{Cpu, with_cpu},
    server::spawn_sidecar,
    workload::{Workload, configure_settings},
};

pub const RULES: usize = 1000;
pub const SCHEDULES: usize = 50;

pub struct FlowsResults {
    pub decisions: usize,
    /// Decision latency in nanoseconds, sorted.
    pub decide_ns: Vec<u64>,
    /// Unique newCalls, closed loop: (without flows, with flows) per round.
    pub rounds: Vec<(Load, Cpu, Load, Cpu)>,
}

/// The README's example (its file announcement hosted elsewhere, so the
/// benchmark needs no directory) after 1,000 rules over 50 schedules that
/// every inbound call is checked against: a call the example's rules do not
/// match looks at every rule and every schedule.
pub fn document() -> String {
    let example = include_str!("../../examples/flows/flows.toml").replace(
        "{ file = \"closed.wav\" }",
        "{ url = \"https://cdn.example.com/closed.wav\" }",
    );
    let (head, rest) = example
        .split_once("[[rules]]")
        .expect("the example has rules");
    let mut doc = head.to_string();
    for s in 0..SCHEDULES {
        let _ = writeln!(
            doc,
            "[schedules.s{s}]\nopen = [\"sun 03:{:02}-03:{:02}\", \"mon-fri 22:00-02:00\"]\nclosed = [\"12-24..12-26\", \"2026-12-31\", \"05-01\"]\n",
            s % 59,
            s % 59 + 1
        );
    }
    for i in 0..RULES {
        let when = match i % 4 {
            0 => format!("{{ open = \"s{}\" }}", i % SCHEDULES),
            1 => format!(
                "{{ from = [\"+49 89 {i:05}*\"], closed = \"s{}\" }}",
                i % SCHEDULES
            ),
            2 => format!("{{ to = [\"+49 40 {i:07}\"] }}"),
            _ => format!(
                "{{ from = [\"+49 69 {i:05}*\", \"anonymous\"], to = [\"+49 30 6{i:06}\"] }}"
            ),
        };
        let _ = writeln!(
            doc,
            "[[rules]]\nname = \"r{i}\"\nwhen = {when}\nthen = {{ forward = [\"+49 170 {i:07}\"] }}\n"
        );
    }
    doc.push_str("[[rules]]");
    doc.push_str(rest);
    doc
}

/// Decision latency: `n` inbound newCalls at times over a week, half to the
/// example's hotline (decided by its rules, after the 1,000), half to a
/// number no rule has (every rule and schedule looked at).
fn decision_latency(n: usize) -> Vec<u64> {
    let compiled =
        flows::compile(&document(), "49", Files::Unchecked).expect("the document compiles");
    assert_eq!(compiled.flows.rules.len(), RULES + 3);
    let settings = Settings::default();
    let start = jiff::Timestamp::from_second(1_796_000_000).expect("a time");
    let mut out = Vec::with_capacity(n);
    let mut fired = 0usize;
    for i in 0..n {
        let now = start
            .checked_add(jiff::SignedDuration::from_secs(
                (i as i64 * 7919) % (7 * 86_400),
            ))
            .expect("in range");
        let inputs = Inputs {
            settings: &settings,
            flows: Some(&compiled.flows),
            now,
            country_code: "49",
        };
        let from = format!("49176{:07}", i % 9_999_999);
        let to = if i % 2 == 0 {
            "49306000000"
        } else {
            "4928559389086"
        };
        let t = Instant::now();
        let decision = decide::new_call(&inputs, Direction::In, &from, to);
        out.push(t.elapsed().as_nanos() as u64);
        if decision.flow.is_some() {
            fired += 1;
        }
    }
    assert!(fired >= n / 2, "the hotline's calls are decided by a rule");
    out.sort_unstable();
    out
}

async fn set_document(grpc: &str) -> anyhow::Result<()> {
    let mut client = FlowsClient::new(Channel::from_shared(grpc.to_string())?.connect().await?);
    client
        .set_flows(proto::SetFlowsRequest {
            text: document(),
            expected_version: None,
            dry_run: false,
        })
        .await?;
    Ok(())
}

/// Unique newCalls against a fresh sidecar, with or without the document.
async fn one(
    args: &Args,
    exe: &Path,
    work: &Path,
    epoch: Instant,
    run: u64,
    with_flows: bool,
) -> anyhow::Result<(Load, Cpu)> {
    let dir = tempfile::tempdir_in(work)?;
    let sidecar = spawn_sidecar(exe, &dir.path().join("flows.db"), dir.path()).await?;
    let grpc = sidecar.grpc.clone().expect("sidecar has gRPC");
    configure_settings(&grpc).await?;
    if with_flows {
        set_document(&grpc).await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let measured = with_cpu(
        sidecar.pid(),
        saturation(
            &sidecar.http,
            Arc::new(Workload { run }),
            Flows::NewCalls,
            args.concurrency,
            args.seconds,
            epoch,
        ),
    )
    .await;
    sidecar.stop().await;
    Ok(measured)
}

pub async fn run(
    args: &Args,
    exe: &Path,
    work: &Path,
    epoch: Instant,
    run_id: u64,
) -> anyhow::Result<FlowsResults> {
    let decisions = if args.quick { 20_000 } else { 200_000 };
    eprintln!(
        "[flows] decision latency: {decisions} decisions, {RULES} rules, {SCHEDULES} schedules"
    );
    let decide_ns = tokio::task::spawn_blocking(move || decision_latency(decisions)).await?;
    let mut rounds = Vec::new();
    for round in 0..2u64 {
        eprintln!(
            "[flows] round {}: unique newCalls without, then with the document",
            round + 1
        );
        let (without, without_cpu) =
            one(args, exe, work, epoch, run_id + 100 + round * 2, false).await?;
        let (with, with_cpu) = one(args, exe, work, epoch, run_id + 101 + round * 2, true).await?;
        rounds.push((without, without_cpu, with, with_cpu));
    }
    Ok(FlowsResults {
        decisions,
        decide_ns,
        rounds,
    })
}

fn pct_us(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i] as f64 / 1000.0
}

pub fn section(report: &mut String, r: &FlowsResults) {
    let _ = writeln!(report, "## Call flows\n");
    let _ = writeln!(
        report,
        "Decision latency in process, no I/O: the README's example document plus {RULES} rules over {SCHEDULES} schedules; \
         {} inbound newCalls at times over a week, half decided by the example's rules after the {RULES}, half matching none (every rule and schedule looked at).\n",
        r.decisions
    );
    let _ = writeln!(
        report,
        "| median | p99 | max |\n|---|---|---|\n| {:.2} µs | {:.2} µs | {:.2} µs |\n",
        pct_us(&r.decide_ns, 50.0),
        pct_us(&r.decide_ns, 99.0),
        pct_us(&r.decide_ns, 100.0)
    );
    let _ = writeln!(
        report,
        "Webhook throughput, unique newCalls, closed loop, each on a fresh server with the benchmark's settings; with flows the document above is set \
         (the workload's inbound calls match none of its rules: the slowest path).\n"
    );
    let _ = writeln!(
        report,
        "| round | without flows (req/s) | CPU µs/req | with flows (req/s) | CPU µs/req | with / without |\n|---|---|---|---|---|---|"
    );
    let mut ratios = Vec::new();
    for (i, (without, without_cpu, with, with_cpu)) in r.rounds.iter().enumerate() {
        let cpu = |load: &Load, cpu: &Cpu| {
            let (user, system) = cpu.per_thousand(load);
            user + system
        };
        let ratio = with.throughput() / without.throughput();
        ratios.push(ratio);
        let _ = writeln!(
            report,
            "| {} | {:.0} | {:.1} | {:.0} | {:.1} | {:.3} |",
            i + 1,
            without.throughput(),
            cpu(without, without_cpu),
            with.throughput(),
            cpu(with, with_cpu),
            ratio
        );
    }
    let worst = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let _ = writeln!(
        report,
        "\nThroughput with flows within 5 % of without in every round (the worst ratio {:.3}): {}\n",
        worst,
        crate::report::verdict(worst >= 0.95)
    );
}
