//! Logs and metrics: the log subscriber, the process-wide Prometheus
//! recorder, the (internal) metrics listener, and the name of every metric,
//! declared once here so a dashboard and the code cannot drift apart
//! ([`FAMILIES`] adds type, help and buckets; `process` the `process_*`
//! figures, read at each scrape).

use std::{sync::OnceLock, time::Duration};

use metrics::{Key, KeyName, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

mod families;
mod process;

pub use families::{FAMILIES, Family, Kind, WEBHOOK_OUTCOMES, WebhookOutcome};

/// Metric names. Labels are documented where the metric is recorded.
pub mod names {
    /// Counter, label `outcome`: every webhook request by how it ended.
    pub const WEBHOOK_REQUESTS: &str = "sidecar_webhook_requests_total";
    /// Histogram: request start to reply, for answered webhooks.
    pub const DECISION_LATENCY: &str = "sidecar_decision_latency_seconds";
    /// Counter: pushes refused for a missing or wrong signature.
    pub const SIGNATURE_FAILURES: &str = "sidecar_signature_failures_total";
    /// Counter: replies sent before their event's commit (it still commits).
    pub const REPLY_DEADLINE_MISSED: &str = "sidecar_reply_deadline_missed_total";
    /// Histogram: commands per writer transaction.
    pub const WRITER_BATCH_SIZE: &str = "sidecar_writer_batch_size";
    /// Counter: events appended to the log (synthetic ones included).
    pub const EVENTS_APPENDED: &str = "sidecar_events_appended_total";
    /// Counter: replayed pushes answered from the log, not appended.
    pub const EVENTS_DUPLICATE: &str = "sidecar_events_duplicate_total";
    /// Counter: writer transactions that failed (nothing of them stored).
    pub const WRITER_ERRORS: &str = "sidecar_writer_errors_total";
    /// Counter: webhook events refused because the writer's queue was full
    /// (answered with their decision, not stored).
    pub const WRITER_QUEUE_OVERFLOW: &str = "sidecar_writer_queue_overflow_total";
    /// Gauge: 1 while the writer's transactions commit, 0 while they fail.
    pub const STORAGE_HEALTHY: &str = "sidecar_storage_healthy";
    /// Gauge: events in the spool, not yet folded into the database.
    pub const SPOOL_EVENTS: &str = "sidecar_spool_events";
    /// Counter: events written to the spool because the database failed.
    pub const SPOOL_APPENDED: &str = "sidecar_spool_appended_total";
    /// Counter: spooled events folded into the database.
    pub const SPOOL_FOLDED: &str = "sidecar_spool_folded_total";
    /// Counter: spool appends that failed (the events stay in memory).
    pub const SPOOL_FAILURES: &str = "sidecar_spool_failures_total";
    /// Counter: torn or corrupt spool tails set aside at start.
    pub const SPOOL_TORN: &str = "sidecar_spool_torn_total";
    /// Gauge: accepted events neither committed nor spooled (held in memory).
    pub const UNSTORED_EVENTS: &str = "sidecar_unstored_events";
    /// Gauge: live event-stream subscribers (gRPC and in-process bridges).
    pub const SUBSCRIBERS: &str = "sidecar_subscribers";
    /// Counter, label `reason` (`limit`, `beyond_head`): subscriptions refused.
    pub const SUBSCRIBERS_REFUSED: &str = "sidecar_subscribers_refused_total";
    /// Counter: full catch-up pages read from the store by subscribers.
    pub const SUBSCRIBER_CATCH_UP_PAGES: &str = "sidecar_subscriber_catch_up_pages_total";
    /// Counter: subscribers that fell behind the live buffer and went back to the store.
    pub const SUBSCRIBER_LAGGED: &str = "sidecar_subscriber_lagged_total";
    /// Histogram: how many events a subscriber is behind the head as it gets one.
    pub const SUBSCRIBER_LAG: &str = "sidecar_subscriber_lag_events";
    /// Counter, label `bridge`: events a bridge delivered.
    pub const BRIDGE_DELIVERED: &str = "sidecar_bridge_delivered_total";
    /// Counter, label `bridge`: events a receiver refused for good.
    pub const BRIDGE_REFUSED: &str = "sidecar_bridge_refused_total";
    /// Counter, label `bridge`: delivery attempts that will be retried.
    pub const BRIDGE_RETRIES: &str = "sidecar_bridge_retries_total";
    /// Gauge, labels `bridge`, `state` (starting, delivering, retrying,
    /// stopped): 1 for the state the bridge is in, 0 for the others.
    pub const BRIDGE_STATE: &str = "sidecar_bridge_state";
    /// Gauge, label `bridge`: events between the last one delivered and the newest.
    pub const BRIDGE_LAG: &str = "sidecar_bridge_lag_events";
    /// Counter: callback tickets the missed-call bridge created in Zammad.
    pub const TICKETS_CREATED: &str = "sidecar_tickets_created_total";
    /// Counter: notes the missed-call bridge added to callback tickets.
    pub const TICKET_NOTES: &str = "sidecar_ticket_notes_total";
    /// Counter: callback tickets closed because the caller was reached.
    pub const TICKETS_CLOSED: &str = "sidecar_tickets_closed_total";
    /// Counter, label `cause`: Zammad's refusals of the missed-call bridge.
    pub const TICKET_REFUSALS: &str = "sidecar_ticket_refusals_total";
    /// Gauge, label `listener` (`webhook`, `grpc`): connections open now.
    pub const CONNECTIONS_OPEN: &str = "sidecar_http_connections_open";
    /// Counter, label `listener`: connections closed at once because the cap was reached.
    pub const CONNECTIONS_REJECTED: &str = "sidecar_http_connections_rejected_total";
    /// Counter, label `listener`: failed accepts (e.g. out of file descriptors).
    pub const ACCEPT_ERRORS: &str = "sidecar_accept_errors_total";
    /// Counter, label `listener`: TLS handshakes that failed or timed out.
    pub const TLS_HANDSHAKE_FAILURES: &str = "sidecar_tls_handshake_failures_total";
    /// Gauge, labels `version`, `os`, `arch`: always 1; the labels say what runs.
    pub const BUILD_INFO: &str = "sidecar_build_info";
    /// Gauge: resident memory, in bytes (Linux; read at each scrape).
    pub const PROCESS_RESIDENT_MEMORY: &str = "process_resident_memory_bytes";
    /// Gauge: virtual memory, in bytes.
    pub const PROCESS_VIRTUAL_MEMORY: &str = "process_virtual_memory_bytes";
    /// Counter: user and system CPU time, in seconds.
    pub const PROCESS_CPU_SECONDS: &str = "process_cpu_seconds_total";
    /// Gauge: open file descriptors.
    pub const PROCESS_OPEN_FDS: &str = "process_open_fds";
    /// Gauge: the file descriptor limit (soft `RLIMIT_NOFILE`).
    pub const PROCESS_MAX_FDS: &str = "process_max_fds";
    /// Gauge: when the process started, in seconds since the Unix epoch.
    pub const PROCESS_START_TIME: &str = "process_start_time_seconds";
    /// Gauge: operating-system threads of the process.
    pub const PROCESS_THREADS: &str = "process_threads";
}

/// Colour only on a terminal, and never with `NO_COLOR` set to anything
/// but the empty string (<https://no-color.org>).
pub fn use_color(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Logs go to stderr; `SIDECAR_LOG` (or `RUST_LOG`) sets the filter.
/// Servers log at info by default, client commands only warnings.
pub fn init_logging(format: LogFormat, serving: bool) {
    let default = if serving { "info" } else { "warn" };
    let filter = EnvFilter::try_from_env("SIDECAR_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(use_color(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
            std::env::var_os("NO_COLOR"),
        ))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// The process-wide Prometheus recorder (installed once; several servers in
/// one test process share it). Every family in [`FAMILIES`] is described
/// (`# HELP`) with its own buckets; counters and gauges with closed label
/// sets exist at 0 from the start, and `sidecar_build_info` is 1.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new()
                .set_buckets(families::SECONDS_BUCKETS)
                .expect("bucket list is not empty");
            for family in FAMILIES.iter().filter(|f| !f.buckets.is_empty()) {
                builder = builder
                    .set_buckets_for_metric(Matcher::Full(family.name.into()), family.buckets)
                    .expect("bucket list is not empty");
            }
            let recorder = builder.build_recorder();
            describe_and_register(&recorder);
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::debug!("a metrics recorder was installed already");
            }
            handle
        })
        .clone()
}

fn describe_and_register(recorder: &impl Recorder) {
    let metadata = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));
    for family in FAMILIES {
        let (name, unit, help) = (KeyName::from(family.name), family.unit, family.help.into());
        match family.kind {
            Kind::Counter => recorder.describe_counter(name, unit, help),
            Kind::Gauge => recorder.describe_gauge(name, unit, help),
            Kind::Histogram => recorder.describe_histogram(name, unit, help),
        }
        // Closed label sets: one series per value, at 0 (increment, so a
        // value set meanwhile stays). Only single-label families have them.
        let series: Vec<Vec<Label>> = match family.labels {
            [] => vec![Vec::new()],
            [(key, values)] if !values.is_empty() => values
                .iter()
                .map(|value| vec![Label::new(*key, *value)])
                .collect(),
            _ => Vec::new(),
        };
        for labels in series {
            let key = Key::from_parts(family.name, labels);
            match family.kind {
                // The process figures appear with their first reading.
                Kind::Counter if !family.name.starts_with("process_") => {
                    recorder.register_counter(&key, &metadata).increment(0)
                }
                // Gauges that mean something at 0 from the start; the others
                // (storage health, build info, process figures) are set by
                // their owners.
                Kind::Gauge if ZERO_GAUGES.contains(&family.name) => {
                    recorder.register_gauge(&key, &metadata).increment(0.0)
                }
                Kind::Counter | Kind::Gauge | Kind::Histogram => {}
            }
        }
    }
    let build = Key::from_parts(
        names::BUILD_INFO,
        vec![
            Label::new("version", env!("CARGO_PKG_VERSION")),
            Label::new("os", std::env::consts::OS),
            Label::new("arch", std::env::consts::ARCH),
        ],
    );
    recorder.register_gauge(&build, &metadata).set(1.0);
}

/// Gauges whose 0 is true before anything happened.
const ZERO_GAUGES: &[&str] = &[names::SUBSCRIBERS, names::CONNECTIONS_OPEN];

/// A bridge's counters, at 0 from when it starts.
pub fn register_bridge(bridge: &'static str) {
    for name in [
        names::BRIDGE_DELIVERED,
        names::BRIDGE_REFUSED,
        names::BRIDGE_RETRIES,
    ] {
        metrics::counter!(name, "bridge" => bridge).increment(0);
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown`, and runs the
/// recorder's upkeep (histogram maintenance) meanwhile.
pub fn serve_metrics(
    listener: TcpListener,
    shutdown: CancellationToken,
) -> JoinHandle<std::io::Result<()>> {
    let handle = prometheus();
    let upkeep = handle.clone();
    let token = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = token.cancelled() => break,
                _ = tick.tick() => upkeep.run_upkeep(),
            }
        }
    });
    let router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move {
                let cpu = process::collect();
                let mut body = handle.render();
                if let Some(cpu) = cpu {
                    if !body.is_empty() && !body.ends_with('\n') {
                        body.push('\n');
                    }
                    body.push_str(&process::cpu_lines(cpu));
                }
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    body,
                )
            }
        }),
    );
    tokio::spawn(
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .into_future(),
    )
}

#[cfg(test)]
mod tests {
    use super::use_color;

    #[test]
    fn no_color_turns_colour_off() {
        assert!(use_color(true, None));
        assert!(use_color(true, Some("".into())));
        assert!(!use_color(true, Some("1".into())));
        assert!(!use_color(false, None));
    }
}
