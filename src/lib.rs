//! sipgate-sidecar takes sipgate.io Push API webhooks in front of Zammad.
//!
//! Module map:
//! - [`config`]: every `serve` flag, its environment variable, defaults, validation.
//! - [`sipgate`]: the Push API: form decoding, typed events, signature check, XML replies.
//! - `numbers`: E.164 normalisation and `*` patterns.
//! - `decide`: settings snapshot -> decision for a newCall (pure).
//! - [`settings`]: validation, Zammad `sipgate_config` import/export, the live snapshot.
//! - `calls`: the call-log state machine (pure transitions).
//! - [`store`]: SQLite or PostgreSQL: migrations, queries, the writer with group commit.
//! - [`fanout`]: live broadcast plus catch-up from the store for subscribers.
//! - `http`: the axum webhook router (guards, handler, refusals).
//! - `recent`: the last webhook requests and their answers, in memory, for diagnostics.
//! - [`listener`]: accepting and serving connections on both listeners:
//!   TLS, connection caps, deadlines, shutdown with a deadline.
//! - `tls`: PEM files and rustls server configurations.
//! - `grpc`: the tonic services (settings, events, call log), health, reflection.
//! - [`bridge`]: subscribers that ship with it: Zammad CTI bridge, JSON webhook forwarder.
//! - [`client`]: gRPC connection, auth and the resumable event stream for clients.
//! - [`cli`]: client subcommands that talk to a running server.
//!
//! [`start`] binds every socket and returns a [`Running`] handle; the binary
//! and the tests both go through it.
//!
//! The public API is deliberate: the server ([`start`], [`Running`],
//! [`Config`]), the generated gRPC types ([`proto`]), the client side
//! ([`client`], [`cli`], [`bridge`]), the pure Push API parsers ([`sipgate`],
//! [`settings`] for Zammad's `sipgate_config`, both fuzzed), and the event
//! log for embedding and the benchmark ([`Store`], [`spawn_writer`],
//! [`Fanout`]). The transport internals (`http`, `grpc`, `tls`) and the
//! pure domain modules behind them (`decide`, `calls`, `numbers`, `paging`)
//! are private to the crate.

mod boot;
pub mod bridge;
mod calls;
pub mod checks;
pub mod cli;
pub mod client;
pub mod config;
pub mod decide;
mod encode;
pub mod fanout;
pub mod flows;
mod grpc;
mod http;
pub mod listener;
mod numbers;
mod paging;
mod recent;
pub mod settings;
pub mod sipgate;
pub mod store;
pub mod telemetry;
mod text;
mod tls;

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

pub use crate::{
    config::Config,
    fanout::{Fanout, Publisher},
    sipgate::event::{Direction, Event, EventKind},
    store::{Committed, Intake, Store, StoreError, WriterHandle, spawn_writer},
};

use anyhow::Context;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    grpc::GrpcState,
    http::{Guards, HttpState, Readiness, Webhook},
    listener::{Listener, ListenerStats},
    settings::SettingsManager,
    sipgate::signature::SignatureVerifier,
};

/// Generated protobuf and tonic code for `proto/sidecar/v1`.
pub mod proto {
    tonic::include_proto!("sidecar.v1");
    /// Descriptor set served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("sidecar_descriptor");
}

/// A started server: where it listens, and how to stop it.
pub struct Running {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    webhook_stats: Arc<ListenerStats>,
    grpc_stats: Arc<ListenerStats>,
    shutdown: CancellationToken,
    join: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Connections of the webhook listener: open now, refused at the cap.
    pub fn webhook_connections(&self) -> &ListenerStats {
        &self.webhook_stats
    }

    /// Connections of the gRPC listener: open now, refused at the cap.
    pub fn grpc_connections(&self) -> &ListenerStats {
        &self.grpc_stats
    }

    /// Begins a graceful shutdown: stop accepting, finish in-flight webhooks,
    /// end streams with UNAVAILABLE, drop what is still open at the
    /// shutdown deadline, commit what is queued.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits until the server has stopped.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.join.await.context("server task panicked")?
    }

    /// `shutdown` then `wait`.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown();
        self.wait().await
    }

    /// What `serve --ready-file` writes: this process and every bound
    /// address, `{"pid":..,"http_addr":..,"grpc_addr":..,"metrics_addr":..|null}`.
    pub fn ready_json(&self) -> String {
        #[derive(serde::Serialize)]
        struct Ready {
            pid: u32,
            http_addr: SocketAddr,
            grpc_addr: SocketAddr,
            metrics_addr: Option<SocketAddr>,
        }
        serde_json::to_string(&Ready {
            pid: std::process::id(),
            http_addr: self.http_addr,
            grpc_addr: self.grpc_addr,
            metrics_addr: self.metrics_addr,
        })
        .expect("addresses serialize")
    }

    /// Writes [`Running::ready_json`] to `path` atomically: a temporary file
    /// in the same directory, renamed over `path`, so a reader polling for
    /// the file never sees it half written.
    pub fn write_ready_file(&self, path: &std::path::Path) -> anyhow::Result<()> {
        let name = path
            .file_name()
            .with_context(|| format!("--ready-file {} names no file", path.display()))?;
        let temporary = path.with_file_name(format!(
            ".{}.{}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        let written = std::fs::write(&temporary, self.ready_json() + "\n")
            .and_then(|()| std::fs::rename(&temporary, path));
        if written.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        written.with_context(|| format!("cannot write --ready-file {}", path.display()))
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({what})"))
}

/// The signature verifier: sipgate's built-in key, or the PEM file given.
fn verifier(config: &Config) -> anyhow::Result<SignatureVerifier> {
    let Some(path) = &config.signature_key else {
        return Ok(SignatureVerifier::sipgate());
    };
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --signature-key {}", path.display()))?;
    SignatureVerifier::from_pem(&pem).with_context(|| {
        format!(
            "--signature-key {} is not an RSA public key",
            path.display()
        )
    })
}

/// Everything `serve` checks before it opens the database or binds a port:
/// the settings and their bounds, the signature key, both listeners' TLS
/// files, the bridges' URLs and files. `serve --check-config` runs the same,
/// so it refuses what `serve` would.
pub fn preflight(config: &Config) -> anyhow::Result<SignatureVerifier> {
    config.validate().map_err(anyhow::Error::msg)?;
    let verifier = verifier(config)?;
    Listener::webhook_tls(&config.http_listener)?;
    Listener::grpc_tls(&config.grpc_listener)?;
    bridge::prepare(&config.bridges)?;
    Ok(verifier)
}

/// Opens the database, binds every listener and starts all tasks.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let verifier = preflight(&config)?;
    for warning in checks::warnings(&config) {
        tracing::warn!("{warning}");
    }
    // Before anything records a metric (the bridges' statuses do at once).
    telemetry::prometheus();
    let mut bridges = bridge::prepare(&config.bridges)?;
    // The webhook port first: while PostgreSQL cannot be reached at start it
    // answers 503 with the reason (and systemd's status says it).
    let http_tcp = bind(config.http_addr, "webhook listener, --http-addr").await?;
    let store = boot::open_store(&config.database, &http_tcp).await?;
    bridges.start_new_ones_at_head(&store).await?;
    let settings = Arc::new(
        SettingsManager::load(
            Arc::new(store.clone()),
            config.country_code.clone(),
            config.announcements_dir.clone(),
        )
        .await?,
    );

    let http_listener = Listener::webhook(http_tcp, &config.http_listener)?
        .with_allow_list(&config.allow_sources, &config.trusted_proxies);
    let grpc_listener = Listener::grpc(
        bind(config.grpc_addr, "gRPC listener, --grpc-addr").await?,
        &config.grpc_listener,
    )?;
    let metrics_listener = match config.metrics_addr {
        Some(addr) => Some(bind(addr, "metrics listener, --metrics-addr").await?),
        None => None,
    };
    let reloads: Vec<listener::TlsReload> =
        [http_listener.tls_reload(), grpc_listener.tls_reload()]
            .into_iter()
            .flatten()
            .collect();
    let http_addr = http_listener.local_addr()?;
    let grpc_addr = grpc_listener.local_addr()?;
    let metrics_addr = metrics_listener
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()?;

    let shutdown = CancellationToken::new();
    // The writer outlives the listeners so in-flight webhooks still commit.
    let writer_shutdown = CancellationToken::new();
    let (fanout, publisher) = Fanout::with_max_subscribers(
        store.clone(),
        config.live_buffer,
        config.max_subscribers.saturating_add(config.bridges.len()),
    );
    let spool_dir = match &config.spool_dir {
        Some(dir) => dir.clone(),
        None => store.default_spool_dir().map_err(anyhow::Error::msg)?,
    };
    let (spool, _) = store::Spool::open(&spool_dir, store.path()).map_err(anyhow::Error::msg)?;
    let (writer, writer_task) = store::spawn_writer(
        store.clone(),
        publisher,
        writer_shutdown.clone(),
        config.writer_max_batch,
        Some(spool),
    );
    // A spool an earlier run left goes into the log before any new push.
    writer.started().await;
    let settings_follower = settings.follow_store(shutdown.clone());
    let maintenance = store::spawn_maintenance(
        &store,
        writer.clone(),
        config.stale_call_after,
        config.retention,
        config.maintenance_interval,
        shutdown.clone(),
    );

    let recent = Arc::new(recent::RecentRequests::new(config.recent_requests));
    let http_state = HttpState {
        guards: Arc::new(Guards {
            allow_sources: config.allow_sources.clone(),
            trusted_proxies: config.trusted_proxies.clone(),
            webhook_token: config.webhook_token.clone(),
            basic_auth: config.basic_auth.clone(),
        }),
        webhook: Arc::new(Webhook {
            settings: settings.clone(),
            verifier,
            signature: config.signature,
            writer: writer.clone(),
            reply_deadline: config.reply_deadline,
            body_limit: config.body_limit,
            public_url: config.public_url.clone(),
            listen_addr: config.http_addr,
            webhook_token: config.webhook_token.clone(),
            basic_auth: config.basic_auth.clone(),
        }),
        readiness: Arc::new(Readiness {
            writer: writer.clone(),
            store: store.clone(),
            bridges: bridges.statuses(),
        }),
        recent: recent.clone(),
    };
    let reply_base: Arc<str> = {
        let base = match &config.public_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("http://{}", http_listener.local_addr()?),
        };
        let base = match (&config.basic_auth, base.split_once("://")) {
            (Some(_), Some((scheme, rest))) => format!("{scheme}://{}@{rest}", recent::REDACTED),
            _ => base,
        };
        match &config.webhook_token {
            Some(_) => format!("{base}/api/v1/sipgate/{}", recent::REDACTED),
            None => format!("{base}/api/v1/sipgate"),
        }
        .into()
    };
    let grpc_state = GrpcState {
        settings: settings.clone(),
        reply_base,
        store: store.clone(),
        writer,
        fanout: fanout.clone(),
        token: config.grpc_token.clone(),
        streams_end: shutdown.clone(),
        recent,
    };

    // Stop accepting at `shutdown`; drop what is still open at `deadline`.
    let deadline = CancellationToken::new();
    let webhook_stats = http_listener.stats();
    let grpc_stats = grpc_listener.stats();
    spawn_shutdown_deadline(
        config.shutdown_timeout,
        shutdown.clone(),
        deadline.clone(),
        [webhook_stats.clone(), grpc_stats.clone()],
    );
    let http_task = tokio::spawn(listener::serve_http(
        http_listener,
        http::router(http_state),
        config.http_listener.clone(),
        shutdown.clone(),
        deadline.clone(),
    ));
    let (grpc_incoming, grpc_accept_task) =
        listener::grpc_incoming(grpc_listener, shutdown.clone(), deadline.clone());
    let grpc_task = tokio::spawn(grpc::serve(
        grpc_state,
        grpc_incoming,
        config.grpc_listener.clone(),
        shutdown.clone().cancelled_owned(),
    ));
    let metrics_task =
        metrics_listener.map(|listener| telemetry::serve_metrics(listener, shutdown.clone()));

    let bridge_tasks = bridges.spawn(
        fanout.clone(),
        store.clone(),
        settings.clone(),
        shutdown.clone(),
    );
    spawn_reload_on_sighup(reloads, shutdown.clone());
    tracing::info!(%http_addr, %grpc_addr, ?metrics_addr, database = %store.path(), "sipgate-sidecar started");
    boot::notify_ready(shutdown.clone());

    let token = shutdown.clone();
    let join = tokio::spawn(async move {
        let http_result = http_task.await;
        token.cancel();
        let grpc_result = grpc_task.await;
        let _ = grpc_accept_task.await;
        deadline.cancel();
        if let Some(task) = metrics_task {
            let _ = task.await;
        }
        let _ = maintenance.await;
        if let Some(follower) = settings_follower {
            let _ = follower.await;
        }
        for task in bridge_tasks {
            let _ = task.await;
        }
        drop(fanout);
        writer_shutdown.cancel();
        match writer_task.await.context("writer task panicked")? {
            None => anyhow::bail!("the event writer's thread died; see the log"),
            Some(exit) if exit.lost > 0 => anyhow::bail!(
                "{} accepted events were neither stored nor spooled and are lost (see the log)",
                exit.lost
            ),
            Some(_) => {}
        }
        http_result.context("webhook listener panicked")?;
        grpc_result
            .context("gRPC listener panicked")?
            .context("gRPC listener failed")?;
        tracing::info!("sipgate-sidecar stopped");
        Ok(())
    });

    Ok(Running {
        http_addr,
        grpc_addr,
        metrics_addr,
        webhook_stats,
        grpc_stats,
        shutdown,
        join,
    })
}

/// SIGHUP re-reads the listeners' TLS certificates and keys (renewed by
/// certbot, say) without dropping a connection; without TLS it only says
/// so. The server never exits on SIGHUP.
fn spawn_reload_on_sighup(reloads: Vec<listener::TlsReload>, shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(error) => {
                tracing::warn!(%error, "cannot handle SIGHUP; certificates are read at start only");
                return;
            }
        };
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    got = hangups.recv() => if got.is_none() { return },
                }
                if reloads.is_empty() {
                    tracing::info!("SIGHUP: no TLS listener, nothing to reload");
                }
                for reload in &reloads {
                    match reload.reload() {
                        Ok(()) => tracing::info!(
                            listener = reload.listener(),
                            "SIGHUP: TLS certificate and key reloaded; new connections use them"
                        ),
                        Err(error) => tracing::error!(
                            listener = reload.listener(),
                            error = format!("{error:#}"),
                            "SIGHUP: the TLS certificate or key cannot be loaded; keeping the ones in use"
                        ),
                    }
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = (reloads, shutdown);
}

/// After `shutdown`, waits `timeout`, then fires `deadline` (which drops the
/// connections still open), saying how many there were.
fn spawn_shutdown_deadline(
    timeout: std::time::Duration,
    shutdown: CancellationToken,
    deadline: CancellationToken,
    listeners: [Arc<ListenerStats>; 2],
) {
    tokio::spawn(async move {
        shutdown.cancelled().await;
        tokio::select! {
            _ = tokio::time::sleep(timeout) => {}
            // Everything stopped before the deadline.
            _ = deadline.cancelled() => return,
        }
        let [webhook, grpc] = &listeners;
        if webhook.open() + grpc.open() > 0 {
            tracing::warn!(
                webhook = webhook.open(),
                grpc = grpc.open(),
                timeout_secs = timeout.as_secs_f64(),
                "shutdown deadline passed; dropping the connections still open"
            );
        }
        deadline.cancel();
    });
}
