//! The `sipgate-sidecar` binary: parse the command line, set up logging, dispatch.

use std::process::ExitCode;

use clap::Parser;
use sipgate_sidecar::{
    cli,
    config::{self, Cli, Command},
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

fn main() -> ExitCode {
    match config::secrets_from_files(|name| std::env::var(name).ok()) {
        Ok(secrets) => {
            for (name, value) in secrets {
                // SAFETY: no other thread exists yet (the runtime starts
                // below), so nothing reads the environment concurrently.
                unsafe { std::env::set_var(name, value) };
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    init_logging(
        cli.log_format,
        matches!(cli.command, Command::Serve(_) | Command::Bridge { .. }),
    );
    let client = &cli.client;
    let result = match cli.command {
        Command::Serve(args) => cli::run_serve(client, *args, shutdown_signal()).await,
        Command::Settings { json, command } => cli::run_settings(client, json, command).await,
        Command::Calls { command } => cli::run_calls(client, command).await,
        Command::Requests { limit, json } => cli::run_requests(client, limit, json).await,
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
