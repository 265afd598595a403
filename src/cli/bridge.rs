//! `sipgate-sidecar bridge zammad|webhook`: a bridge as its own process,
//! reading the event stream over gRPC.

use tokio_util::sync::CancellationToken;

use super::endpoint;
use crate::{
    bridge::{self, cursor::Cursor, delivery, source::GrpcSource},
    config::{BridgeCommand, BridgeTarget, ClientArgs, Secret},
};

/// Runs a bridge as its own process until `shutdown`.
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
            delivery,
        } => (
            BridgeTarget::Zammad {
                cti_url: Secret::new(cti_url),
            },
            state,
            start_from_now,
            delivery,
        ),
        BridgeCommand::Webhook {
            url,
            secret,
            state,
            start_from_now,
            delivery,
        } => (
            BridgeTarget::Webhook {
                url,
                secret: secret.map(Secret::new),
            },
            state,
            start_from_now,
            delivery,
        ),
    };
    let mut policy = delivery.policy();
    policy.ca_cert = args.ca_cert.clone();
    let sink = bridge::sink(&target, &policy)?;
    let cursor = Cursor::load(&state)?;
    eprintln!(
        "{} bridge: reading {} from {}, cursor {}",
        sink.name(),
        match cursor.after_seq() {
            Some(seq) => format!("events after #{seq}"),
            None if start_from_now => "new events".to_string(),
            None => "all events".to_string(),
        },
        args.server,
        state.display()
    );
    let source = GrpcSource {
        endpoint: endpoint(args),
        backoff: bridge::backoff(&policy),
    };
    delivery::run(
        &source,
        sink.as_ref(),
        cursor,
        start_from_now,
        &policy,
        shutdown,
    )
    .await?;
    Ok(())
}
