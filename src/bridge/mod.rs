//! Subscribers that ship with the sidecar: the Zammad CTI bridge and the JSON
//! webhook forwarder. Both run the same delivery loop ([`delivery::run`]):
//! subscribe from a durable cursor, deliver each event in sequence order,
//! retry with capped backoff, and never skip an event without saying so.
//! They run as separate processes (over gRPC) or inside `serve` (in-process).

pub mod cursor;
pub mod delivery;
pub mod source;
pub mod webhook;
pub mod zammad;

use std::time::Duration;

use clap::{Args, ValueEnum};

/// What to do when the receiver keeps refusing an event (401, 403, 422, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnRefusal {
    /// Stop the bridge with an error; the cursor stays before the event, so
    /// nothing is lost once the receiver is fixed and the bridge restarted.
    Stop,
    /// Log the event loudly, count it, and go on with the next one.
    Skip,
}

/// The result of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// The receiver could not be reached (connection refused, timeout):
    /// retried until it comes back.
    Unreachable(String),
    /// The receiver failed (5xx, 429): retried up to `max_attempts`.
    Failed(String),
    /// The receiver refused the event (4xx): retried up to `max_attempts`,
    /// then handled per [`OnRefusal`].
    Refused(String),
}

/// Retry and refusal rules shared by every bridge.
#[derive(Debug, Clone, Args)]
pub struct DeliveryArgs {
    /// Attempts for an event the receiver refuses or fails on before --on-refusal applies.
    #[arg(long, env = "SIDECAR_BRIDGE_MAX_ATTEMPTS", default_value_t = 5)]
    pub max_attempts: u32,
    /// After --max-attempts refusals of one event: stop the bridge, or skip the event.
    #[arg(
        long,
        env = "SIDECAR_BRIDGE_ON_REFUSAL",
        value_enum,
        default_value = "stop"
    )]
    pub on_refusal: OnRefusal,
    /// First retry delay in milliseconds (doubles up to --max-backoff-ms).
    #[arg(long, env = "SIDECAR_BRIDGE_BACKOFF_MS", default_value_t = 500)]
    pub backoff_ms: u64,
    #[arg(long, env = "SIDECAR_BRIDGE_MAX_BACKOFF_MS", default_value_t = 30_000)]
    pub max_backoff_ms: u64,
    /// Timeout of one HTTP request to the receiver, in milliseconds.
    #[arg(long, env = "SIDECAR_BRIDGE_TIMEOUT_MS", default_value_t = 10_000)]
    pub timeout_ms: u64,
}

impl Default for DeliveryArgs {
    fn default() -> Self {
        DeliveryArgs {
            max_attempts: 5,
            on_refusal: OnRefusal::Stop,
            backoff_ms: 500,
            max_backoff_ms: 30_000,
            timeout_ms: 10_000,
        }
    }
}

impl DeliveryArgs {
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u64 << attempt.saturating_sub(1).min(16);
        Duration::from_millis(
            self.backoff_ms
                .saturating_mul(factor)
                .min(self.max_backoff_ms),
        )
    }

    pub fn http_client(&self) -> anyhow::Result<reqwest::Client> {
        Ok(reqwest::Client::builder()
            .timeout(Duration::from_millis(self.timeout_ms))
            .user_agent(concat!("sipgate-sidecar/", env!("CARGO_PKG_VERSION")))
            .build()?)
    }
}

/// Classifies an HTTP answer the way both bridges read it.
pub fn verdict_for_status(status: reqwest::StatusCode, body: &str) -> Verdict {
    let summary = || {
        let body: String = body.chars().take(300).collect();
        format!("HTTP {status}: {body}")
    };
    if status.is_success() {
        Verdict::Delivered
    } else if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        Verdict::Failed(summary())
    } else {
        Verdict::Refused(summary())
    }
}

/// Classifies a transport error.
pub fn verdict_for_error(error: &reqwest::Error) -> Verdict {
    Verdict::Unreachable(format!("{error:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let args = DeliveryArgs::default();
        assert_eq!(args.backoff(1), Duration::from_millis(500));
        assert_eq!(args.backoff(2), Duration::from_millis(1000));
        assert_eq!(args.backoff(4), Duration::from_millis(4000));
        assert_eq!(args.backoff(30), Duration::from_millis(30_000));
    }

    #[test]
    fn http_statuses_map_to_verdicts() {
        use reqwest::StatusCode;
        assert_eq!(verdict_for_status(StatusCode::OK, "{}"), Verdict::Delivered);
        assert!(matches!(
            verdict_for_status(StatusCode::BAD_GATEWAY, ""),
            Verdict::Failed(_)
        ));
        assert!(matches!(
            verdict_for_status(StatusCode::TOO_MANY_REQUESTS, ""),
            Verdict::Failed(_)
        ));
        let Verdict::Refused(why) =
            verdict_for_status(StatusCode::UNAUTHORIZED, "{\"error\":\"Invalid token\"}")
        else {
            panic!("401 is a refusal");
        };
        assert!(
            why.contains("401") && why.contains("Invalid token"),
            "{why}"
        );
    }
}
