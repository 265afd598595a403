//! The `sipgate-sidecar` binary: parse the command line, set up logging, dispatch.

use std::process::ExitCode;

use clap::Parser;
use sipgate_sidecar::{
    cli,
    config::{Cli, Command},
    telemetry::init_logging,
};
use tokio_util::sync::CancellationToken;

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

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(
        cli.log_format,
        matches!(cli.command, Command::Serve(_) | Command::Bridge { .. }),
    );
    let client = &cli.client;
    let result = match cli.command {
        Command::Serve(args) => cli::run_serve(client, *args, shutdown_signal()).await,
        Command::Settings { json, command } => cli::run_settings(client, json, command).await,
        Command::Calls { command } => cli::run_calls(client, command).await,
        Command::Watch { json, after_seq } => cli::run_watch(client, json, after_seq).await,
        Command::Bridge { command } => {
            let shutdown = CancellationToken::new();
            let trigger = shutdown.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                trigger.cancel();
            });
            cli::run_bridge(client, command, shutdown).await
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
