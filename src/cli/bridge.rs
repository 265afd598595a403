//! `sipgate-sidecar bridge zammad|webhook|zammad-tickets`: a bridge as its own process,
//! reading the event stream over gRPC; `bridge status`: what the bridges
//! inside a running server do.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::endpoint;
use crate::{
    bridge::{
        self, BridgeStatus, agents::RemoteAgents, cursor::Cursor, delivery, source::GrpcSource,
    },
    client::{Failure, FailureKind},
    config::{
        BridgeCommand, BridgeTarget, ClientArgs, Secret, TicketsTarget, WebhookConventions,
        zammad_api_token,
    },
};

/// Runs a bridge as its own process until `shutdown` (or shows the status
/// of the in-process ones).
pub async fn run_bridge(
    args: &ClientArgs,
    command: BridgeCommand,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (target, state, start_from_now, delivery) = match command {
        BridgeCommand::Zammad {
            cti_url,
            state,
            start_from_now,
            blocked_calls,
            delivery,
        } => (
            BridgeTarget::Zammad {
                cti_url: Secret::new(cti_url),
                blocked_calls,
            },
            state,
            start_from_now,
            delivery,
        ),
        BridgeCommand::Webhook {
            url,
            secret,
            format,
            source,
            standard_secret,
            state,
            start_from_now,
            delivery,
        } => (
            BridgeTarget::Webhook {
                url,
                secret: secret.map(Secret::new),
                conventions: WebhookConventions::new(
                    format,
                    source,
                    standard_secret,
                    "--standard-secret (SIDECAR_BRIDGE_STANDARD_SECRET)",
                )
                .map_err(|e| anyhow::anyhow!(e))?,
            },
            state,
            start_from_now,
            delivery,
        ),
        BridgeCommand::ZammadTickets {
            zammad_url,
            api_token_file,
            api_token,
            group,
            state,
            start_from_now,
            close_when_reached,
            unknown_caller,
            include_blocked,
            include_anonymous,
            country_code,
            delivery,
        } => (
            BridgeTarget::Tickets(TicketsTarget {
                zammad_url,
                api_token: zammad_api_token(
                    api_token_file.as_deref(),
                    api_token,
                    "--api-token-file",
                )
                .map_err(|e| anyhow::anyhow!(e))?,
                group,
                close_when_reached,
                unknown_caller,
                include_blocked,
                include_anonymous,
                country_code,
            }),
            state,
            start_from_now,
            delivery,
        ),
        BridgeCommand::Status { http_url, json } => {
            return status(&http_url, args.ca_cert.as_deref(), json).await;
        }
    };
    let mut policy = delivery.policy();
    policy.ca_cert = args.ca_cert.clone();
    let mut sink = bridge::sink(&target, &state, &policy)?;
    sink.use_agents(Arc::new(RemoteAgents::new(endpoint(args))));
    let cursor = Cursor::load(&state)?;
    eprintln!(
        "{} bridge: reading {} from {}, cursor {}, delivering to {}",
        sink.name(),
        match cursor.after_seq() {
            Some(seq) => format!("events after #{seq}"),
            None if start_from_now => "new events".to_string(),
            None => "all events".to_string(),
        },
        args.server,
        state.display(),
        sink.describe(),
    );
    let source = GrpcSource::new(endpoint(args), bridge::backoff(&policy));
    let status = BridgeStatus::new(sink.name(), cursor.after_seq());
    delivery::run(
        &source,
        sink.as_ref(),
        cursor,
        start_from_now,
        &policy,
        &status,
        shutdown,
    )
    .await?;
    Ok(())
}

/// Prints the server's `/readyz`: one line per in-process bridge.
/// One `/readyz` bridge line, `bridge NAME: STATE, DETAIL...`, as JSON.
fn bridge_json(line: &str) -> serde_json::Value {
    let rest = line.strip_prefix("bridge ").unwrap_or(line);
    let (name, status) = rest.split_once(": ").unwrap_or((rest, ""));
    let (state, detail) = status.split_once(", ").unwrap_or((status, ""));
    serde_json::json!({"name": name, "state": state, "detail": detail})
}

async fn status(
    http_url: &str,
    ca_cert: Option<&std::path::Path>,
    json: bool,
) -> anyhow::Result<()> {
    let url = format!("{}/readyz", http_url.trim_end_matches('/'));
    let client = bridge::http_client(&crate::config::DeliveryPolicy {
        timeout: Duration::from_secs(5),
        ca_cert: ca_cert.map(std::path::Path::to_path_buf),
        ..Default::default()
    })?;
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{}", bridge::error_text(e)))
        .with_context(|| {
            Failure::new(
                FailureKind::Unreachable,
                format!("cannot reach the sidecar at {http_url} (is it running? set --http-url)"),
            )
        })?;
    let ready = response.status().is_success();
    let body = response.text().await.unwrap_or_default();
    let mut lines = body.lines();
    let headline = lines.next().unwrap_or_default();
    let bridges: Vec<&str> = lines.filter(|l| l.starts_with("bridge ")).collect();
    if json {
        let value = serde_json::json!({
            "ready": ready,
            "status": headline,
            "bridges": bridges.iter().map(|l| bridge_json(l)).collect::<Vec<_>>(),
        });
        println!("{value}");
    } else {
        if bridges.is_empty() {
            println!("no bridge runs inside this server");
        }
        for line in &bridges {
            println!("{line}");
        }
    }
    if ready {
        Ok(())
    } else {
        anyhow::bail!("{headline}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_readyz_bridge_line_becomes_name_state_and_detail() {
        assert_eq!(
            bridge_json(
                "bridge zammad: retrying, delivered up to #41, 3 events behind, last error: HTTP 502"
            ),
            serde_json::json!({
                "name": "zammad",
                "state": "retrying",
                "detail": "delivered up to #41, 3 events behind, last error: HTTP 502"
            })
        );
        assert_eq!(
            bridge_json("bridge webhook: stopped"),
            serde_json::json!({"name": "webhook", "state": "stopped", "detail": ""})
        );
    }
}
