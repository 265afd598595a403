//! The `sipgate-sidecar` binary: parse the command line, set up logging, dispatch.

use std::process::ExitCode;

use clap::Parser;
use sipgate_sidecar::{
    cli::{self, Cli, Command},
    config::LogFormat,
};
use tracing_subscriber::EnvFilter;

fn init_logging(format: LogFormat, serving: bool) {
    let default = if serving { "info" } else { "warn" };
    let filter = EnvFilter::try_from_env("SIDECAR_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler cannot fail on unix");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn serve(cli: Cli, args: sipgate_sidecar::config::ServeArgs) -> anyhow::Result<()> {
    let ready_file = args.ready_file.clone();
    let mut config = args.into_config().map_err(anyhow::Error::msg)?;
    config.grpc_token = cli
        .client
        .grpc_token
        .filter(|t| !t.is_empty())
        .map(sipgate_sidecar::config::Secret::new);
    let running = sipgate_sidecar::start(config).await?;
    eprintln!(
        "sipgate-sidecar listening: webhooks on http://{}, gRPC on {}{}",
        running.http_addr,
        running.grpc_addr,
        running
            .metrics_addr
            .map(|a| format!(", metrics on http://{a}/metrics"))
            .unwrap_or_default()
    );
    if let Some(path) = &ready_file {
        if let Err(e) = running.write_ready_file(path) {
            running.stop().await?;
            return Err(e);
        }
    }
    shutdown_signal().await;
    tracing::info!("shutdown requested; finishing in-flight webhooks");
    running.stop().await
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(
        cli.log_format,
        matches!(cli.command, Command::Serve(_) | Command::Bridge { .. }),
    );
    let client = cli.client.clone();
    let result = match cli.command {
        Command::Serve(ref args) => {
            let args = (**args).clone();
            serve(cli, args).await
        }
        Command::Settings { json, command } => cli::run_settings(&client, json, command).await,
        Command::Calls { command } => cli::run_calls(&client, command).await,
        Command::Watch { json, after_seq } => cli::run_watch(&client, json, after_seq).await,
        Command::Bridge { command } => {
            let shutdown = tokio_util::sync::CancellationToken::new();
            let trigger = shutdown.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                trigger.cancel();
            });
            cli::run_bridge(&client, command, shutdown).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
