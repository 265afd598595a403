//! The import phase: newCall decision latency at the fixed rate while the
//! settings service takes a large Zammad import over gRPC. Three windows on
//! one fresh sidecar, each a fixed-rate load of `--seconds`:
//!
//! 1. baseline, no import;
//! 2. one `ImportZammad` of `--import-entries` entries (half block entries,
//!    half routing rules), over the list caps: parsed, then refused;
//! 3. one `ImportZammad` at the caps (10,000 block entries and 10,000
//!    routing rules): validated, accepted and stored.
//!
//! Both documents keep the workload's own entries first, so every call is
//! decided as before; the rest are numbers the workload never dials.

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use sipgate_sidecar::{
    proto::{self, settings_client::SettingsClient},
    settings::{MAX_BLOCK_ENTRIES, MAX_ROUTING_RULES},
};
use tonic::transport::Channel;

use crate::{
    Args,
    load::{Latencies, Load, Sample, fixed_rate_samples, summarize},
    server::spawn_sidecar,
    workload::{Workload, configure_settings},
};

/// One window of the import phase.
pub struct ImportWindow {
    pub name: &'static str,
    /// The whole window's load.
    pub load: Load,
    /// `None` for the baseline.
    pub import: Option<ImportRun>,
}

/// One import sent during a window.
pub struct ImportRun {
    pub blocks: usize,
    pub routes: usize,
    /// Size of the JSON document.
    pub bytes: usize,
    /// From sending the request to its answer.
    pub took: Duration,
    /// Whether the server stored it.
    pub accepted: bool,
    /// The answer: the stored settings' sizes, or the refusal's code and message.
    pub answer: String,
    /// newCall latencies of the webhooks scheduled while the import ran.
    pub during: Latencies,
    /// Webhooks (any stage) scheduled while the import ran, and how many failed.
    pub during_sent: u64,
    pub during_errors: u64,
}

pub struct ImportResults {
    pub windows: Vec<ImportWindow>,
}

/// A Zammad `sipgate_config` with `blocks` block entries and `routes`
/// routing rules, compact JSON: the workload's entries (see
/// [`configure_settings`]) first, then numbers the workload never uses.
fn zammad_document(blocks: usize, routes: usize) -> String {
    let mut block_rows: Vec<Value> = (0..50)
        .map(|i| json!({"caller_id": format!("4930100000{i:02}"), "note": format!("spam {i}")}))
        .collect();
    block_rows.push(json!({"caller_id": "anonymous", "note": "hidden"}));
    let own = block_rows.len();
    block_rows.extend(
        (0..blocks.saturating_sub(own)).map(|i| json!({"caller_id": format!("4931{i:07}")})),
    );
    block_rows.truncate(blocks);
    let mut route_rows: Vec<Value> = (0..20)
        .map(|i| {
            json!({"dest": format!("49{}*", 40 + i), "caller_id": format!("49301234{i:03}"), "note": format!("area {i}")})
        })
        .collect();
    let own = route_rows.len();
    route_rows.extend(
        (0..routes.saturating_sub(own))
            .map(|i| json!({"dest": format!("4970{i:07}*"), "caller_id": "4930777000000"})),
    );
    route_rows.truncate(routes);
    json!({
        "inbound": {"block_caller_ids": block_rows},
        "outbound": {"routing_table": route_rows, "default_caller_id": "4930123456000"},
    })
    .to_string()
}

pub async fn run(
    args: &Args,
    exe: &Path,
    work: &Path,
    epoch: Instant,
    run_id: u64,
) -> anyhow::Result<ImportResults> {
    let sidecar = spawn_sidecar(exe, &work.join("import.db"), work).await?;
    let grpc = sidecar.grpc.clone().expect("sidecar has gRPC");
    configure_settings(&grpc).await?;
    let over = args.import_entries;
    let documents: [(&'static str, Option<(usize, usize)>); 3] = [
        ("baseline, no import", None),
        (
            "import over the caps (refused)",
            Some((over / 2, over - over / 2)),
        ),
        (
            "import at the caps (accepted)",
            Some((MAX_BLOCK_ENTRIES, MAX_ROUTING_RULES)),
        ),
    ];
    let mut windows = Vec::new();
    for (i, (name, entries)) in documents.into_iter().enumerate() {
        eprintln!(
            "[import] {name}: {} webhooks/s for {} s",
            args.rate, args.seconds
        );
        let workload = Arc::new(Workload {
            run: run_id + 10 + i as u64,
        });
        windows.push(window(args, &sidecar.http, &grpc, workload, epoch, name, entries).await?);
    }
    sidecar.stop().await;
    Ok(ImportResults { windows })
}

/// One fixed-rate window; with `entries`, one import sent a quarter into it
/// (at most 1 s).
async fn window(
    args: &Args,
    http: &str,
    grpc: &str,
    workload: Arc<Workload>,
    epoch: Instant,
    name: &'static str,
    entries: Option<(usize, usize)>,
) -> anyhow::Result<ImportWindow> {
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let delay = Duration::from_millis(args.seconds * 250).min(Duration::from_secs(1));
    let importer = match entries {
        None => None,
        Some((blocks, routes)) => {
            let json = zammad_document(blocks, routes);
            let bytes = json.len();
            let mut client =
                SettingsClient::new(Channel::from_shared(grpc.to_string())?.connect().await?)
                    .max_decoding_message_size(64 << 20);
            Some(tokio::spawn(async move {
                let start: Instant = started_rx.await?;
                tokio::time::sleep_until((start + delay).into()).await;
                let sent = Instant::now();
                let answer = client
                    .import_zammad(proto::ImportZammadRequest {
                        json,
                        ..Default::default()
                    })
                    .await;
                let answered = Instant::now();
                anyhow::Ok((
                    blocks,
                    routes,
                    bytes,
                    sent - start,
                    answered - start,
                    answer,
                ))
            }))
        }
    };
    let (start, samples) = fixed_rate_samples(
        http,
        workload,
        args.rate,
        args.seconds,
        epoch,
        Some(started_tx),
    )
    .await;
    let load = summarize(start, args.seconds, &samples);
    let import = match importer {
        None => None,
        Some(task) => {
            let (blocks, routes, bytes, from, to, answer) = task.await??;
            let (accepted, answer) = match answer {
                Ok(snapshot) => {
                    let s = snapshot.into_inner();
                    anyhow::ensure!(
                        s.block_list.len() == blocks && s.routing_table.len() == routes,
                        "{name}: stored {} block entries and {} routing rules, sent {blocks} and {routes}",
                        s.block_list.len(),
                        s.routing_table.len()
                    );
                    (
                        true,
                        format!(
                            "stored: settings version {}, {} block entries, {} routing rules",
                            s.version,
                            s.block_list.len(),
                            s.routing_table.len()
                        ),
                    )
                }
                Err(status) => (
                    false,
                    format!(
                        "{:?}: {}",
                        status.code(),
                        status.message().chars().take(200).collect::<String>()
                    ),
                ),
            };
            let inside: Vec<&Sample> = samples
                .iter()
                .filter(|s| s.at >= from && s.at <= to)
                .collect();
            let during =
                Latencies(inside.iter().filter(|s| s.is_new).map(|s| s.us).collect()).sorted();
            Some(ImportRun {
                blocks,
                routes,
                bytes,
                took: to - from,
                accepted,
                answer,
                during,
                during_sent: inside.len() as u64,
                during_errors: inside.iter().filter(|s| !s.ok).count() as u64,
            })
        }
    };
    Ok(ImportWindow { name, load, import })
}
