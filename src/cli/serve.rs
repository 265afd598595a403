//! `sipgate-sidecar serve`: run the server until a shutdown signal.

use std::future::Future;

use crate::{
    client::{Failure, FailureKind},
    config::{ClientArgs, ServeArgs},
};

/// Starts the server from its flags (the gRPC token comes from the shared
/// client flags), runs it until `shutdown` resolves, then stops it gracefully.
pub async fn run_serve(
    client: &ClientArgs,
    args: ServeArgs,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let ready_file = args.ready_file.clone();
    let mut config = args
        .into_config()
        .map_err(|e| Failure::new(FailureKind::Usage, e))?;
    config.grpc_token = crate::config::secret_setting(
        client.grpc_token.clone(),
        "--grpc-token (SIDECAR_GRPC_TOKEN, grpc-token)",
    )
    .map_err(|e| Failure::new(FailureKind::Usage, e))?;
    // --ca-cert is a shared flag: the in-process bridges trust it too.
    for bridge in &mut config.bridges {
        bridge.delivery.ca_cert = client.ca_cert.clone();
    }
    let webhook_scheme = if config.http_listener.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let running = crate::start(config).await?;
    eprintln!(
        "sipgate-sidecar listening: webhooks on {}://{}, gRPC on {}{}",
        webhook_scheme,
        running.http_addr,
        running.grpc_addr,
        running
            .metrics_addr
            .map(|a| format!(", metrics on http://{a}/metrics"))
            .unwrap_or_default()
    );
    if let Some(path) = &ready_file
        && let Err(e) = running.write_ready_file(path)
    {
        running.stop().await?;
        return Err(e);
    }
    shutdown.await;
    tracing::info!("shutdown requested; finishing in-flight webhooks");
    running.stop().await
}
