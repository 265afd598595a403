//! The Markdown report with its verdicts against the targets, and the SVG
//! latency chart.

use std::fmt::Write as _;

use crate::{
    Args,
    import::ImportResults,
    load::{Latencies, Load},
    phases::{Cpu, Results, Targets},
    storm::StormResults,
};

/// Writes `report.md` (and, with the target phases, `latency.svg`) into
/// `--out` and prints the report.
pub fn write(args: &Args, command_line: &str, results: Results) -> anyhow::Result<()> {
    let mut report = String::new();
    let _ = writeln!(report, "# sipgate-sidecar benchmark\n");
    let _ = writeln!(
        report,
        "Command: `{command_line}`  \nPhase length: {} s, fixed rate {} webhooks/s, {} connections at saturation, {} live subscribers.\n",
        args.seconds, args.rate, args.concurrency, args.subscribers
    );
    let _ = writeln!(report, "## Machine\n\n{}", machine_info());
    if let Some(targets) = results.targets {
        targets_section(&mut report, args, targets)?;
        let _ = writeln!(report);
    }
    if let Some(import) = &results.import {
        import_section(&mut report, import);
    }
    if let Some(storm) = &results.storm {
        storm_section(&mut report, args, storm);
    }
    if let Some(replicas) = &results.replicas {
        crate::replicas::section(&mut report, replicas);
    }
    if let Some(flows) = &results.flows {
        crate::flows::section(&mut report, flows);
    }
    std::fs::write(args.out.join("report.md"), &report)?;
    println!("{report}");
    eprintln!("report written to {}", args.out.join("report.md").display());
    Ok(())
}

/// The eight target phases: verdicts, latency table, chart.
fn targets_section(report: &mut String, args: &Args, targets: Targets) -> anyhow::Result<()> {
    let Targets {
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
    } = targets;
    let ratio = saturated.throughput() / bare_sat.throughput();
    let newcall_ratio = newcalls.throughput() / bare_newcalls.throughput();
    let catchup_rate = caught_up as f64 / catchup_took.as_secs_f64();
    let decoded_rate = caught_up_decoded as f64 / catchup_decoded_took.as_secs_f64();
    let catchup_measured = format!(
        "{catchup_rate:.0} events/s over {caught_up} events to a subscriber reading each \
         event's seq; {decoded_rate:.0} events/s to one decoding every event in full"
    );
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
        "| catch-up ≥ 100,000 events/s from seq 0 | {catchup_measured} | {} |",
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
    // CPU per request, user + system, in µs (the steadiest figure on a
    // shared machine), and the sidecar's next to the bare handler's.
    let us_per_request = |cpu: &Cpu, load: &Load| {
        let (user, system) = cpu.per_thousand(load);
        user + system
    };
    let sidecar_us = us_per_request(&newcalls_cpu, &newcalls);
    let bare_us = us_per_request(&bare_newcalls_cpu, &bare_newcalls);
    let cpu_ratio = sidecar_us / bare_us.max(f64::MIN_POSITIVE);
    let _ = writeln!(
        report,
        "\n## Targets of the write path\n\n| target | measured | verdict |\n|---|---|---|"
    );
    let _ = writeln!(
        report,
        "| server CPU per durable unique newCall ≤ 2.5× the bare axum handler's | {sidecar_us:.1} vs {bare_us:.1} µs = {cpu_ratio:.2}× | {} |",
        verdict(cpu_ratio <= 2.5)
    );
    let _ = writeln!(
        report,
        "| unique newCalls, durable commits, no subscribers ≥ 0.35× bare axum ({} connections), p99 ≤ 10 ms | {:.0} vs {:.0} webhooks/s = {:.2}×, p99 {:.2} ms | {} |",
        args.concurrency,
        newcalls.throughput(),
        bare_newcalls.throughput(),
        newcall_ratio,
        newcalls.newcall.pct(99.0),
        verdict(newcall_ratio >= 0.35 && newcalls.newcall.pct(99.0) <= 10.0)
    );
    let _ = writeln!(
        report,
        "| call flows with {} live subscribers ≥ 0.2× bare axum | {:.2}× | {} |",
        args.subscribers,
        ratio,
        verdict(ratio >= 0.2)
    );
    let _ = writeln!(
        report,
        "| fan-out p99 ≤ 5 ms at {} webhooks/s | {:.2} ms | {} |",
        args.rate,
        fan_latency.pct(99.0),
        verdict(fan_latency.pct(99.0) <= 5.0)
    );
    let _ = writeln!(
        report,
        "| catch-up ≥ 500,000 events/s from seq 0 | {catchup_measured} | {} |",
        verdict(catchup_rate >= 500_000.0)
    );
    let _ = writeln!(
        report,
        "\n## Server CPU time per 1,000 webhooks (ms)\n\n| run | requests | user | system | µs per request | × bare axum |\n|---|---|---|---|---|---|"
    );
    for (name, load, cpu) in [
        (
            "sidecar, unique newCalls, no subscribers",
            &newcalls,
            newcalls_cpu,
        ),
        (
            "bare axum, unique newCalls",
            &bare_newcalls,
            bare_newcalls_cpu,
        ),
        (
            "sidecar, call flows + subscribers",
            &saturated,
            saturated_cpu,
        ),
    ] {
        let (user, system) = cpu.per_thousand(load);
        let us = user + system;
        let _ = writeln!(
            report,
            "| {name} | {} | {user:.1} | {system:.1} | {us:.1} | {:.2}× |",
            load.sent,
            us / bare_us.max(f64::MIN_POSITIVE)
        );
    }
    let _ = writeln!(report, "\n## Latency (ms)\n");
    let _ = writeln!(
        report,
        "| run | requests | errors | req/s | newCall p50 | newCall p99 | newCall max | all p50 | all p99 |\n|---|---|---|---|---|---|---|---|---|"
    );
    for (name, l) in [
        ("sidecar, fixed rate", &fixed),
        ("bare axum, fixed rate", &bare_fixed),
        ("sidecar, unique newCalls, no subscribers", &newcalls),
        ("bare axum, unique newCalls", &bare_newcalls),
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
    Ok(())
}

/// Webhook latency in the import phase's three windows.
fn import_section(report: &mut String, import: &ImportResults) {
    let _ = writeln!(report, "## Webhooks during a Zammad import\n");
    let _ = writeln!(
        report,
        "Each window is a fixed-rate load on one sidecar; in the import windows one `ImportZammad` is sent over gRPC while it runs. \
         \"During the import\" counts the webhooks scheduled between sending the import and its answer; latencies are newCall decisions, in ms, from the scheduled send time.\n"
    );
    let _ = writeln!(
        report,
        "| window | import (block entries + routing rules, JSON size) | answer | import took | newCall during import: n / p50 / p99 / max | window newCall p50 | window newCall p99 | window newCall max | window requests / errors |\n|---|---|---|---|---|---|---|---|---|"
    );
    for w in &import.windows {
        let (document, answer, took, during) = match &w.import {
            None => (
                "none".to_string(),
                "".to_string(),
                "".to_string(),
                "".to_string(),
            ),
            Some(i) => (
                format!(
                    "{} + {}, {:.1} MiB",
                    i.blocks,
                    i.routes,
                    i.bytes as f64 / 1_048_576.0
                ),
                format!(
                    "{}: {}",
                    if i.accepted { "accepted" } else { "refused" },
                    i.answer.replace('|', "\\|")
                ),
                format!("{:.0} ms", i.took.as_secs_f64() * 1000.0),
                format!(
                    "{} / {:.2} / {:.2} / {:.2}{}",
                    i.during.0.len(),
                    i.during.pct(50.0),
                    i.during.pct(99.0),
                    i.during.max(),
                    if i.during_errors > 0 {
                        format!(" ({} of {} failed)", i.during_errors, i.during_sent)
                    } else {
                        String::new()
                    }
                ),
            ),
        };
        let _ = writeln!(
            report,
            "| {} | {document} | {answer} | {took} | {during} | {:.2} | {:.2} | {:.2} | {} / {} |",
            w.name,
            w.load.newcall.pct(50.0),
            w.load.newcall.pct(99.0),
            w.load.newcall.max(),
            w.load.sent,
            w.load.errors
        );
    }
    let _ = writeln!(report);
}

/// Server memory per round of the storm phase, against the stated bound.
fn storm_section(report: &mut String, args: &Args, storm: &StormResults) {
    let mib = |b: u64| b as f64 / 1_048_576.0;
    let peak = storm
        .rounds
        .iter()
        .map(|r| r.peak_during)
        .max()
        .unwrap_or(0);
    let _ = writeln!(report, "## Subscriber storm over large events\n");
    let _ = writeln!(
        report,
        "{} subscribers per round resume from seq 0 and never read, each on its own connection, over {} stored events of {} bytes each (form body; default body limit), held {} s; RSS of the fresh server before any event: {:.1} MiB.\n",
        args.storm_subscribers,
        args.storm_events,
        storm.body_bytes,
        args.storm_hold,
        mib(storm.fresh)
    );
    let _ = writeln!(
        report,
        "| round | subscribers opened | RSS before | peak RSS during | RSS 3 s after they left |\n|---|---|---|---|---|"
    );
    for (i, (r, opened)) in storm.rounds.iter().zip(&storm.opened).enumerate() {
        let _ = writeln!(
            report,
            "| {} | {opened} of {} | {:.1} MiB | {:.1} MiB | {:.1} MiB |",
            i + 1,
            args.storm_subscribers,
            mib(r.before),
            mib(r.peak_during),
            mib(r.after)
        );
    }
    let _ = writeln!(
        report,
        "\nBound: peak RSS under {} MiB: {:.1} MiB, {}.\n",
        args.storm_bound_mib,
        mib(peak),
        verdict(mib(peak) < args.storm_bound_mib as f64)
    );
}

/// A cumulative latency distribution per series, on a log time axis.
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

/// CPU, memory, kernel and commit, as Markdown list items.
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

pub fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}
