//! Logs and metrics: the log subscriber, the process-wide Prometheus
//! recorder, the (internal) metrics listener, and the name of every metric,
//! declared once here so a dashboard and the code cannot drift apart.

use std::{sync::OnceLock, time::Duration};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

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
    /// Gauge, label `listener` (`webhook`, `grpc`): connections open now.
    pub const CONNECTIONS_OPEN: &str = "sidecar_http_connections_open";
    /// Counter, label `listener`: connections closed at once because the cap was reached.
    pub const CONNECTIONS_REJECTED: &str = "sidecar_http_connections_rejected_total";
    /// Counter, label `listener`: failed accepts (e.g. out of file descriptors).
    pub const ACCEPT_ERRORS: &str = "sidecar_accept_errors_total";
    /// Counter, label `listener`: TLS handshakes that failed or timed out.
    pub const TLS_HANDSHAKE_FAILURES: &str = "sidecar_tls_handshake_failures_total";
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
/// one test process share it).
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets(&buckets)
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::debug!("a metrics recorder was installed already");
            }
            handle
        })
        .clone()
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
            async move { handle.render() }
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
