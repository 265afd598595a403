//! The Prometheus alert rules and the Grafana dashboard shipped in
//! `deploy/`: every query names metrics the server exports (with labels it
//! sets), the dashboard is well-formed, and the rules pass their
//! `promtool test rules` unit tests (promtool from Debian's `prometheus`
//! package; `.ci/run` installs it).

use std::collections::BTreeSet;
use std::path::Path;

use sipgate_sidecar::telemetry::{FAMILIES, Kind};

const RULES: &str = "deploy/prometheus/sipgate-sidecar.rules.yml";
const RULE_TESTS: &str = "deploy/prometheus/sipgate-sidecar.rules.test.yml";
const DASHBOARD: &str = "deploy/grafana/sipgate-sidecar.json";

/// The metric names a PromQL expression uses (ours start with `sidecar_`
/// or `process_`; `up` is Prometheus' own).
fn metrics_in(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut word = String::new();
    for c in expr.chars().chain([' ']) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
            continue;
        }
        if word.starts_with("sidecar_") || word.starts_with("process_") {
            names.push(std::mem::take(&mut word));
        }
        word.clear();
    }
    names
}

/// Every series name the server exports: the families, and a histogram's
/// `_bucket`, `_sum` and `_count`.
fn exported() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for family in FAMILIES {
        names.insert(family.name.to_owned());
        if family.kind == Kind::Histogram {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{}{suffix}", family.name));
            }
        }
    }
    names
}

fn rule_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(RULES).unwrap();
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("expr:"))
        .map(|expr| expr.trim().to_owned())
        .collect()
}

fn dashboard_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(DASHBOARD).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "sipgate-sidecar");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(
        panels.len() >= 4,
        "calls, latency, bridge lag, storage at least"
    );
    let mut ids = BTreeSet::new();
    let mut exprs = Vec::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_u64().expect("a panel id")),
            "panel ids are unique"
        );
        assert!(panel["title"].as_str().is_some_and(|t| !t.is_empty()));
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{} has no query", panel["title"]);
        for target in targets {
            exprs.push(target["expr"].as_str().expect("expr").to_owned());
        }
    }
    exprs
}

#[test]
fn every_query_names_metrics_the_server_exports() {
    let exported = exported();
    let rules = rule_exprs();
    assert!(rules.len() >= 6, "{rules:?}");
    let dashboard = dashboard_exprs();
    let mut used = BTreeSet::new();
    for expr in rules.iter().chain(&dashboard) {
        let names = metrics_in(expr);
        assert!(
            !names.is_empty() || expr.contains("up{"),
            "no metric in {expr}"
        );
        for name in names {
            assert!(
                exported.contains(&name),
                "{name} (in {expr}) is not exported"
            );
            used.insert(name);
        }
    }
    // What the issue asks to watch is there.
    for needed in [
        "sidecar_webhook_requests_total",
        "sidecar_decision_latency_seconds_bucket",
        "sidecar_bridge_lag_events",
        "sidecar_bridge_state",
        "sidecar_storage_healthy",
        "sidecar_writer_queue_overflow_total",
        "sidecar_signature_failures_total",
        "sidecar_reply_deadline_missed_total",
    ] {
        assert!(used.contains(needed), "nothing watches {needed}");
    }
    // Labels the queries select on are ones the server sets.
    for (label, metric) in [
        ("outcome", "sidecar_webhook_requests_total"),
        ("state", "sidecar_bridge_state"),
        ("bridge", "sidecar_bridge_lag_events"),
    ] {
        let family = FAMILIES.iter().find(|f| f.name == metric).unwrap();
        assert!(
            family.labels.iter().any(|(name, _)| *name == label),
            "{metric} has no {label}"
        );
    }
}

#[test]
fn the_alert_rules_pass_their_promtool_tests() {
    let promtool = std::process::Command::new("promtool")
        .arg("--version")
        .output();
    if promtool.is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is missing (bash .ci/run installs Debian's prometheus package)"
        );
        eprintln!("SKIPPED: promtool not installed");
        return;
    }
    let dir = Path::new(RULE_TESTS).parent().unwrap();
    for args in [
        vec!["check", "rules", "sipgate-sidecar.rules.yml"],
        vec!["test", "rules", "sipgate-sidecar.rules.test.yml"],
    ] {
        let out = std::process::Command::new("promtool")
            .args(&args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_metric_scanner_finds_names_not_functions() {
    assert_eq!(
        metrics_in(
            "histogram_quantile(0.99, sum by (le) (rate(sidecar_decision_latency_seconds_bucket[5m])))"
        ),
        ["sidecar_decision_latency_seconds_bucket"]
    );
    assert_eq!(
        metrics_in(
            "sidecar_bridge_lag_events > 100 and delta(sidecar_bridge_lag_events[10m]) >= 0"
        ),
        ["sidecar_bridge_lag_events", "sidecar_bridge_lag_events"]
    );
}
