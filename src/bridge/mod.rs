//! Subscribers that ship with the sidecar: the Zammad CTI bridge and the JSON
//! webhook forwarder. Both run the same delivery loop ([`delivery::run`]):
//! subscribe from a durable cursor, deliver each event in sequence order,
//! retry with capped backoff, and never skip an event without saying so.
//! They run as separate processes (over gRPC) or inside `serve` (in-process).

pub mod cursor;
pub mod delivery;
pub mod schema;
pub mod source;
pub mod webhook;
pub mod zammad;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    client::Backoff,
    config::{BridgeConfig, BridgeTarget, DeliveryPolicy},
    fanout::Fanout,
    tls,
};
use cursor::Cursor;
use delivery::Sink;
use source::LocalSource;
use webhook::WebhookSink;
use zammad::ZammadSink;

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
    /// then handled per [`crate::config::OnRefusal`].
    Refused(String),
}

/// The receiver `target` names, delivering under `policy`.
pub fn sink(target: &BridgeTarget, policy: &DeliveryPolicy) -> anyhow::Result<Box<dyn Sink>> {
    Ok(match target {
        BridgeTarget::Zammad { cti_url } => Box::new(ZammadSink::new(cti_url.expose(), policy)?),
        BridgeTarget::Webhook { url, secret } => Box::new(WebhookSink::new(
            url,
            secret.as_ref().map(|s| s.expose()),
            policy,
        )?),
    })
}

/// Starts `bridges` inside the server, reading from its fan-out, until `shutdown`.
pub fn spawn_in_process(
    bridges: &[BridgeConfig],
    fanout: Fanout,
    shutdown: CancellationToken,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let mut tasks = Vec::new();
    for bridge in bridges {
        let sink = sink(&bridge.target, &bridge.delivery)?;
        let cursor = Cursor::load(&bridge.state)?;
        let source = LocalSource {
            fanout: fanout.clone(),
            shutdown: shutdown.clone(),
        };
        let policy = bridge.delivery.clone();
        let shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let name = sink.name();
            tracing::info!(bridge = name, state = %cursor.path().display(), "bridge started in-process");
            if let Err(e) =
                delivery::run(&source, sink.as_ref(), cursor, false, &policy, shutdown).await
            {
                tracing::error!(bridge = name, error = %e, "bridge stopped");
            }
        }));
    }
    Ok(tasks)
}

/// The retry delays `policy` asks for.
pub fn backoff(policy: &DeliveryPolicy) -> Backoff {
    Backoff {
        first: policy.backoff,
        max: policy.max_backoff,
    }
}

/// The HTTP client a bridge posts with; it trusts `--ca-cert` (an internal
/// CA) besides the system's roots.
pub fn http_client(policy: &DeliveryPolicy) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .timeout(policy.timeout)
        .user_agent(concat!("sipgate-sidecar/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &policy.ca_cert {
        tls::read_certs(path, "--ca-cert")?;
        let pem = tls::read_pem(path, "--ca-cert")?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("--ca-cert {}", path.display()))?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder.build()?)
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
    fn policy_backoff_doubles_and_is_capped() {
        let backoff = backoff(&DeliveryPolicy::default());
        assert_eq!(backoff.delay(1), std::time::Duration::from_millis(500));
        assert_eq!(backoff.delay(2), std::time::Duration::from_millis(1000));
        assert_eq!(backoff.delay(4), std::time::Duration::from_millis(4000));
        assert_eq!(backoff.delay(30), std::time::Duration::from_millis(30_000));
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
