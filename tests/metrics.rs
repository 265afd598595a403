//! The Prometheus listener.

mod common;

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
};

use common::*;
use sipgate_sidecar::{
    config::{BridgeConfig, BridgeTarget},
    telemetry::{FAMILIES, Kind},
};

#[tokio::test]
async fn metrics_count_requests_by_outcome() {
    let server =
        TestServer::start_with(|c| c.metrics_addr = Some("127.0.0.1:0".parse().unwrap())).await;
    let metrics_addr = server.running.as_ref().unwrap().metrics_addr.unwrap();
    server
        .post(
            "/api/v1/sipgate/in",
            &new_call("in", "492111234567", "4930600000000", "m1"),
        )
        .await;
    server
        .post("/api/v1/sipgate/in", "event=ringing&callId=1")
        .await;
    let text = server
        .client
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("sidecar_webhook_requests_total{outcome=\"accepted\"}"),
        "{text}"
    );
    assert!(
        text.contains("sidecar_webhook_requests_total{outcome=\"bad_request\"}"),
        "{text}"
    );
    assert!(
        text.contains("sidecar_decision_latency_seconds_bucket"),
        "{text}"
    );
}

/// The server's `/metrics` page.
async fn scrape(server: &TestServer) -> String {
    let metrics_addr = server.running.as_ref().unwrap().metrics_addr.unwrap();
    server
        .client
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The family a sample line belongs to: its name, or for a histogram's
/// `_bucket`, `_sum` and `_count` lines the histogram's.
fn family_of<'a>(sample: &'a str, types: &HashMap<&str, &str>) -> &'a str {
    let name = sample.split(['{', ' ']).next().unwrap();
    if types.contains_key(name) {
        return name;
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && types.get(base) == Some(&"histogram")
        {
            return base;
        }
    }
    name
}

#[tokio::test]
async fn every_family_has_help_and_type_and_counters_exist_from_the_start() {
    let server = TestServer::start_with(|c| {
        c.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
        // A bridge, so its counters exist too; the log is empty, so it never posts.
        c.bridges.push(BridgeConfig {
            target: BridgeTarget::Webhook {
                url: "http://127.0.0.1:9/hook".into(),
                secret: None,
                conventions: Default::default(),
            },
            state: PathBuf::from(format!("{}.webhook.cursor", c.database)),
            delivery: Default::default(),
            start: sipgate_sidecar::config::NewBridgeStart::Beginning,
        });
    })
    .await;
    // One answered push: the writer's batch-size and the latency histograms
    // get an observation.
    let reply = server
        .post(
            "/api/v1/sipgate/in",
            &new_call("in", "492111234567", "4930600000000", "h1"),
        )
        .await;
    assert_eq!(reply.status, 200);
    let text = scrape(&server).await;

    let mut help = HashSet::new();
    let mut types = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help.insert(rest.split(' ').next().unwrap());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            types.insert(parts.next().unwrap(), parts.next().unwrap());
        }
    }
    let samples: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    for sample in &samples {
        let family = family_of(sample, &types);
        assert!(types.contains_key(family), "no # TYPE for {sample}");
        assert!(help.contains(family), "no # HELP for {sample}");
    }

    // Every counter is there before anything was counted: refusals nobody
    // sent, per listener, per bridge.
    for family in FAMILIES.iter().filter(|f| f.kind == Kind::Counter) {
        assert_eq!(types.get(family.name), Some(&"counter"), "{}", family.name);
        assert!(
            samples.iter().any(|s| family_of(s, &types) == family.name),
            "{} has no series",
            family.name
        );
    }
    for expected in [
        "sidecar_signature_failures_total 0",
        "sidecar_webhook_requests_total{outcome=\"forbidden_source\"} 0",
        "sidecar_subscribers_refused_total{reason=\"beyond_head\"} 0",
        "sidecar_http_connections_rejected_total{listener=\"grpc\"} 0",
        "sidecar_bridge_refused_total{bridge=\"webhook\"} 0",
    ] {
        assert!(samples.contains(&expected), "{expected} in\n{text}");
    }
    for family in FAMILIES {
        if let Some(kind) = types.get(family.name) {
            let expected = match family.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "histogram",
            };
            assert_eq!(kind, &expected, "{}", family.name);
        }
    }

    let build = samples
        .iter()
        .find(|s| s.starts_with("sidecar_build_info{"))
        .expect("sidecar_build_info");
    assert!(
        build.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))
            && build.ends_with(" 1"),
        "{build}"
    );
    for process in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
        "process_threads",
    ] {
        let value: f64 = samples
            .iter()
            .find_map(|s| s.strip_prefix(&format!("{process} ")))
            .unwrap_or_else(|| panic!("{process} in\n{text}"))
            .parse()
            .unwrap();
        assert!(value > 0.0, "{process} {value}");
    }

    // Counts get count buckets, latencies sub-millisecond ones.
    let buckets = |name: &str| -> Vec<String> {
        samples
            .iter()
            .filter_map(|s| s.strip_prefix(&format!("{name}_bucket{{le=\"")))
            .map(|rest| rest.split('"').next().unwrap().to_string())
            .collect()
    };
    let batch = buckets("sidecar_writer_batch_size");
    assert_eq!(batch.first().map(String::as_str), Some("1"), "{batch:?}");
    assert!(batch.iter().all(|le| !le.starts_with("0.")), "{batch:?}");
    let latency = buckets("sidecar_decision_latency_seconds");
    assert_eq!(
        latency.first().map(String::as_str),
        Some("0.0001"),
        "{latency:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_page_says_its_format_version_and_cpu_time_keeps_its_fraction() {
    let server =
        TestServer::start_with(|c| c.metrics_addr = Some("127.0.0.1:0".parse().unwrap())).await;
    let metrics_addr = server.running.as_ref().unwrap().metrics_addr.unwrap();
    let response = server
        .client
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    let cpu = text
        .lines()
        .find_map(|l| l.strip_prefix("process_cpu_seconds_total "))
        .unwrap_or_else(|| panic!("no CPU line in {text}"));
    let cpu: f64 = cpu.parse().unwrap();
    // A fresh server has used well under a second: whole seconds said 0.
    assert!(cpu > 0.0, "seconds with their fraction: {cpu}");
    assert_eq!(
        text.matches("# TYPE process_cpu_seconds_total counter")
            .count(),
        1
    );
}
