//! The `sipgate-sidecar` binary: parse the command line, set up logging, dispatch.

use std::process::ExitCode;

use sipgate_sidecar::{
    cli, client,
    config::{self, Cli, Command, ParseError},
    telemetry::init_logging,
};
use tokio_util::sync::CancellationToken;

/// mimalloc: a webhook allocates and frees many small buffers across the
/// runtime's threads and the writer's; glibc's malloc spent about a fifth of
/// the server's CPU on them (BENCHMARKS.md, "The write path"). Built without
/// transparent huge pages (`no_thp`): with them an idle server held ~36 MB.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    let parsed = match config::parse(std::env::args_os().collect(), |name| {
        std::env::var(name).ok()
    }) {
        Ok(parsed) => parsed,
        // Usage errors exit 2, --help and --version 0.
        Err(ParseError::Clap(e)) => e.exit(),
        Err(ParseError::File(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Command::Serve(args) = &parsed.cli.command
        && args.check_config
    {
        return match sipgate_sidecar::checks::check_config(&parsed) {
            Ok(report) => {
                print!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: invalid configuration: {e}");
                ExitCode::from(2)
            }
        };
    }
    let file_warning = parsed.config_file_warning();
    let cli = parsed.cli;
    let mut generated = Vec::new();
    match &cli.command {
        Command::Completions { shell } => cli::docs::completions(*shell, &mut generated),
        Command::Man { command, dir } => {
            if let Some(dir) = dir {
                return match cli::docs::write_pages(dir) {
                    Ok(pages) => {
                        eprintln!("wrote {} manual pages to {}", pages.len(), dir.display());
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!(
                            "error: cannot write the manual pages to {}: {e}",
                            dir.display()
                        );
                        ExitCode::FAILURE
                    }
                };
            }
            let rendered = if command.is_empty() {
                cli::docs::man_page(&mut generated).map_err(|e| e.to_string())
            } else {
                cli::docs::subcommand_page(command, &mut generated)
            };
            if let Err(e) = rendered {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
        _ => {}
    }
    if !generated.is_empty() {
        use std::io::Write;
        return match std::io::stdout().write_all(&generated) {
            // A reader that stopped early (`| head`) is not a failure.
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                eprintln!("error: cannot write to stdout: {e}");
                ExitCode::FAILURE
            }
            _ => ExitCode::SUCCESS,
        };
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli, file_warning))
}

async fn run(cli: Cli, file_warning: Option<String>) -> ExitCode {
    init_logging(
        cli.log_format,
        matches!(cli.command, Command::Serve(_) | Command::Bridge { .. }),
    );
    if let (Command::Serve(_), Some(warning)) = (&cli.command, file_warning) {
        tracing::warn!("{warning}");
    }
    let client = &cli.client;
    let dials_the_server = !matches!(cli.command, Command::Serve(_));
    let result = match cli.command {
        Command::Serve(args) => cli::run_serve(client, *args, shutdown_signal()).await,
        Command::Settings { json, command } => cli::run_settings(client, json, command).await,
        Command::Flows { json, command } => cli::run_flows(client, json, command).await,
        Command::Calls { json, command } => cli::run_calls(client, json, command).await,
        Command::Events { json, command } => cli::run_events(client, json, command).await,
        Command::Requests { limit, json } => cli::run_requests(client, limit, json).await,
        Command::Watch {
            json,
            after_seq,
            retry,
        } => cli::run_watch(client, json, after_seq, retry).await,
        Command::Completions { .. } | Command::Man { .. } => Ok(()),
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
            if dials_the_server
                && let Some(hint) = client::wrong_address_hint(&client.server, &e).await
            {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(client::exit_code(&e))
        }
    }
}
