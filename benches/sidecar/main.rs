//! The project's benchmark: starts the release sidecar on a temporary SQLite
//! database and measures, in one run, decision latency and throughput (against
//! a bare axum handler returning the same XML), fan-out latency to live
//! subscribers, catch-up speed from the log, and memory. Writes a Markdown
//! report and an SVG latency chart.
//!
//! ```sh
//! cargo bench --bench sidecar                 # the full run
//! cargo bench --bench sidecar -- --quick      # smoke run, seconds
//! ```
//!
//! - [`server`]: starting and stopping the processes under test;
//! - [`workload`]: the webhook bodies and the settings they meet;
//! - [`load`]: open-loop and closed-loop load, latency recording;
//! - [`subscribers`]: live, idle and catching-up gRPC subscribers;
//! - [`populate`]: filling the log for the catch-up phase;
//! - [`phases`]: the run, phase by phase;
//! - [`report`]: the Markdown report and the SVG chart.

mod load;
mod phases;
mod populate;
mod report;
mod server;
mod subscribers;
mod workload;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "sidecar-bench",
    about = "Measure sipgate-sidecar against its performance targets"
)]
pub struct Args {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// The sidecar binary (default: the one cargo built with this benchmark).
    #[arg(long)]
    sidecar: Option<PathBuf>,
    /// Where the report and chart go.
    #[arg(long, default_value = "bench-report")]
    out: PathBuf,
    /// Seconds per load phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Webhooks per second in the fixed-rate and fan-out phases.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Concurrent connections in the saturation phase.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Live subscribers during saturation and fan-out.
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// Events stored before the catch-up phase.
    #[arg(long, default_value_t = 1_000_000)]
    catchup_events: u64,
    /// Subscribers for the idle-memory phase.
    #[arg(long, default_value_t = 1000)]
    idle_subscribers: usize,
    /// A fast smoke run (small numbers; figures not meaningful).
    #[arg(long)]
    quick: bool,
    /// Passed by `cargo bench`; nothing to choose here.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Internal: the bare axum handler used as the ceiling.
    BareServer {
        /// Where to write its address once it listens.
        #[arg(long)]
        ready_file: PathBuf,
    },
}

/// How to run this again: the cargo command with the arguments given.
fn command_line() -> String {
    let given: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if given.is_empty() {
        "cargo bench --bench sidecar".into()
    } else {
        format!("cargo bench --bench sidecar -- {}", given.join(" "))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if let Some(Mode::BareServer { ready_file }) = args.mode.take() {
        return server::bare_server(ready_file).await;
    }
    if args.quick {
        args.seconds = args.seconds.min(2);
        args.rate = args.rate.min(300);
        args.subscribers = args.subscribers.min(10);
        args.catchup_events = args.catchup_events.min(20_000);
        args.idle_subscribers = args.idle_subscribers.min(100);
    }
    let exe = args
        .sidecar
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_sipgate-sidecar")));
    anyhow::ensure!(exe.exists(), "{} not found: pass --sidecar", exe.display());
    std::fs::create_dir_all(&args.out)?;
    let command_line = command_line();
    let results = phases::run(&args, &exe).await?;
    report::write(&args, &command_line, results)
}
