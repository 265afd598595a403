//! The project's benchmark: starts the release sidecar on a temporary SQLite
//! database and measures, in one run, decision latency and throughput (against
//! a bare axum handler returning the same XML), fan-out latency to live
//! subscribers, catch-up speed from the log, and memory. Writes a Markdown
//! report and an SVG latency chart.
//!
//! ```sh
//! cargo bench --bench sidecar                 # the full run
//! cargo bench --bench sidecar -- --quick      # smoke run, seconds
//! cargo bench --bench sidecar -- --only import,storm   # some phases only
//! ```
//!
//! Phases (`--only`): `targets`, the eight phases measured against SPEC
//! §11; `import`, webhook latency during large Zammad imports; `storm`,
//! memory under a subscriber storm over large events; `postgres`, the write
//! path and cross-replica fan-out on PostgreSQL (one and two replicas) next
//! to SQLite, given `--postgres URL`; `flows`, call-flow decision latency
//! and webhook throughput with a large flows document set.
//!
//! - [`server`]: starting and stopping the processes under test;
//! - [`workload`]: the webhook bodies and the settings they meet;
//! - [`load`]: open-loop and closed-loop load, latency recording;
//! - [`subscribers`]: live, idle and catching-up gRPC subscribers;
//! - [`populate`]: filling the log for the catch-up phase;
//! - [`import`]: webhook latency while an import is parsed and stored;
//! - [`storm`]: memory while subscribers resume over large events;
//! - [`replicas`]: PostgreSQL, one and two replicas, next to SQLite;
//! - [`flows`]: call-flow decision latency, and throughput with flows set;
//! - [`phases`]: the run, phase by phase;
//! - [`report`]: the Markdown report and the SVG chart.

mod flows;
mod import;
mod load;
mod phases;
mod populate;
mod replicas;
mod report;
mod server;
mod storm;
mod subscribers;
mod workload;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

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
    /// Run only these phases (comma-separated); all when not given.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Phase>,
    /// Entries of the import that the import phase sends over the caps
    /// (half block entries, half routing rules).
    #[arg(long, default_value_t = 100_000)]
    import_entries: usize,
    /// Subscribers per round of the storm phase.
    #[arg(long, default_value_t = 50)]
    storm_subscribers: usize,
    /// Events stored before the storm.
    #[arg(long, default_value_t = 1000)]
    storm_events: usize,
    /// Padding per stored storm event, in bytes (the form body is ~100 bytes
    /// more; the default body limit is 64 KiB).
    #[arg(long, default_value_t = 60_000)]
    storm_event_bytes: usize,
    /// Seconds the storm's subscribers are held.
    #[arg(long, default_value_t = 10)]
    storm_hold: u64,
    /// Storm rounds on the same server.
    #[arg(long, default_value_t = 3)]
    storm_rounds: usize,
    /// The storm's stated bound on the server's peak RSS, in MiB.
    #[arg(long, default_value_t = 256)]
    storm_bound_mib: u64,
    /// A fast smoke run (small numbers; figures not meaningful).
    #[arg(long)]
    quick: bool,
    /// PostgreSQL server for the `postgres` phase (a role that may create
    /// databases); the phase is skipped without it.
    #[arg(long, env = "SIDECAR_BENCH_POSTGRES")]
    postgres: Option<String>,
    /// Passed by `cargo bench`; nothing to choose here.
    #[arg(long, hide = true)]
    bench: bool,
}

/// The groups of phases `--only` chooses from.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The eight phases measured against the targets of SPEC §11 and of the storage path.
    Targets,
    /// Webhook latency while Zammad imports are parsed, refused and stored.
    Import,
    /// Server memory while subscribers resume over large events unread.
    Storm,
    /// The write path and cross-replica fan-out on PostgreSQL, next to SQLite.
    Postgres,
    /// Call-flow decision latency with a large document, and throughput with it set.
    Flows,
}

impl Args {
    /// Whether this run includes `phase`.
    pub fn runs(&self, phase: Phase) -> bool {
        self.only.is_empty() || self.only.contains(&phase)
    }
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
        args.storm_events = args.storm_events.min(100);
        args.storm_hold = args.storm_hold.min(2);
        args.storm_rounds = args.storm_rounds.min(1);
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
