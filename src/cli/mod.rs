//! The command line: `serve`, and the client subcommands that talk to a
//! running server over gRPC (`settings`, `calls`, `watch`).

pub mod output;

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use futures::StreamExt;
use tonic::{
    Request, Status,
    metadata::MetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, Endpoint},
};

use crate::{
    bridge::{
        DeliveryArgs, cursor::Cursor, delivery, delivery::Sink, source::GrpcSource,
        webhook::WebhookSink, zammad::ZammadSink,
    },
    config::{LogFormat, ServeArgs},
    proto::{
        self, call_events_client::CallEventsClient, call_log_client::CallLogClient,
        settings_client::SettingsClient,
    },
};

#[derive(Debug, Parser)]
#[command(
    name = "sipgate-sidecar",
    version,
    about = "Takes sipgate.io webhooks for Zammad: fast XML decisions, a durable call-event log, a resumable gRPC stream"
)]
pub struct Cli {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "SIDECAR_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// How client subcommands reach the server (accepted anywhere on the line).
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// gRPC address of the running sidecar.
    #[arg(
        long,
        global = true,
        env = "SIDECAR_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: String,
    /// Bearer token for the gRPC API (serve: require it; clients: send it).
    #[arg(
        long,
        global = true,
        env = "SIDECAR_GRPC_TOKEN",
        hide_env_values = true
    )]
    pub grpc_token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sidecar: webhook listener, gRPC API, writer.
    Serve(Box<ServeArgs>),
    /// Show and change the block list, routing table and default caller ID.
    Settings {
        /// Machine-readable JSON output.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: SettingsCommand,
    },
    /// The call log.
    Calls {
        #[command(subcommand)]
        command: CallsCommand,
    },
    /// Forward events to Zammad or any HTTP endpoint.
    Bridge {
        #[command(subcommand)]
        command: BridgeCommand,
    },
    /// Tail the live event stream (resumable with --after-seq).
    Watch {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Start after this sequence number (0 = from the beginning); default: from now.
        #[arg(long)]
        after_seq: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum BridgeCommand {
    /// Post newCall/answer/hangup to Zammad's generic CTI API, so its caller
    /// log and agent pop-ups work.
    Zammad {
        /// Zammad's CTI URL (Admin -> Integrations -> CTI (generic)):
        /// https://zammad.example.com/api/v1/cti/TOKEN
        #[arg(long, env = "SIDECAR_BRIDGE_CTI_URL", hide_env_values = true)]
        cti_url: String,
        /// Cursor file: the last delivered sequence number.
        #[arg(
            long,
            env = "SIDECAR_BRIDGE_STATE",
            default_value = "sipgate-sidecar-zammad.cursor"
        )]
        state: PathBuf,
        /// Without a cursor file, start with new events instead of the whole log.
        #[arg(long)]
        start_from_now: bool,
        #[command(flatten)]
        delivery: DeliveryArgs,
    },
    /// POST every event as JSON to URL (schema sipgate-sidecar.event.v1).
    Webhook {
        #[arg(long, env = "SIDECAR_BRIDGE_URL")]
        url: String,
        /// Sign bodies: X-Sidecar-Signature: sha256=HMAC-SHA256(secret, body) in hex.
        #[arg(long, env = "SIDECAR_BRIDGE_SECRET", hide_env_values = true)]
        secret: Option<String>,
        #[arg(
            long,
            env = "SIDECAR_BRIDGE_STATE",
            default_value = "sipgate-sidecar-webhook.cursor"
        )]
        state: PathBuf,
        #[arg(long)]
        start_from_now: bool,
        #[command(flatten)]
        delivery: DeliveryArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum SettingsCommand {
    /// Print the block list, routing table and default caller ID.
    Show,
    /// Replace the settings with Zammad's sipgate_config JSON from FILE ("-" = stdin).
    ImportZammad { file: PathBuf },
    /// Print the settings as Zammad's sipgate_config JSON.
    ExportZammad,
    /// Block list (inbound calls).
    Block {
        #[command(subcommand)]
        command: BlockCommand,
    },
    /// Outbound caller-ID routing table.
    Route {
        #[command(subcommand)]
        command: RouteCommand,
    },
    /// The caller ID for outbound calls no routing rule matches.
    DefaultCallerId {
        #[command(subcommand)]
        command: DefaultCallerIdCommand,
    },
    /// Dry run: what would happen to this call?
    Evaluate {
        #[arg(long, value_parser = ["in", "out"])]
        direction: String,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
    },
    /// Recent settings changes, newest first.
    Audit {
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum BlockCommand {
    /// Block a number ("+49 30 1234", "030 1234"), a prefix ("4930*") or "anonymous".
    Add {
        number: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    Remove {
        number: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RouteCommand {
    /// Use CALLER_ID for outbound calls to PATTERN ("*" = one or more characters).
    Add {
        pattern: String,
        caller_id: String,
        #[arg(long, default_value = "")]
        note: String,
        /// Insert at this position (1 = first); default: last.
        #[arg(long)]
        position: Option<u32>,
    },
    Remove {
        pattern: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DefaultCallerIdCommand {
    Set { number: String },
    Clear,
}

#[derive(Debug, Subcommand)]
pub enum CallsCommand {
    /// Newest calls first.
    List {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

/// Adds the bearer token and a client description to every call.
#[derive(Clone)]
pub struct ClientAuth {
    authorization: Option<MetadataValue<tonic::metadata::Ascii>>,
    client: MetadataValue<tonic::metadata::Ascii>,
}

impl Interceptor for ClientAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(auth) = &self.authorization {
            request.metadata_mut().insert("authorization", auth.clone());
        }
        request
            .metadata_mut()
            .insert("x-sidecar-client", self.client.clone());
        Ok(request)
    }
}

pub type Authed = InterceptedService<Channel, ClientAuth>;

pub async fn connect(args: &ClientArgs) -> anyhow::Result<Authed> {
    let endpoint = Endpoint::from_shared(args.server.clone())
        .with_context(|| {
            format!(
                "--server '{}' is not a URL like http://127.0.0.1:50051",
                args.server
            )
        })?
        .connect_timeout(Duration::from_secs(5));
    let channel = endpoint.connect().await.with_context(|| {
        format!(
            "cannot reach the sidecar at {} (is `sipgate-sidecar serve` running? set --server)",
            args.server
        )
    })?;
    let authorization = match &args.grpc_token {
        Some(t) => Some(
            format!("Bearer {t}")
                .parse()
                .context("--grpc-token contains characters not allowed in a header")?,
        ),
        None => None,
    };
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let client = format!(
        "sipgate-sidecar-cli/{} user={user}",
        env!("CARGO_PKG_VERSION")
    )
    .parse()
    .unwrap_or_else(|_| MetadataValue::from_static("sipgate-sidecar-cli"));
    Ok(InterceptedService::new(
        channel,
        ClientAuth {
            authorization,
            client,
        },
    ))
}

/// A gRPC error as a sentence for the terminal.
fn status_error(status: Status) -> anyhow::Error {
    let what = match status.code() {
        tonic::Code::InvalidArgument => "invalid input",
        tonic::Code::NotFound => "not found",
        tonic::Code::AlreadyExists => "already exists",
        tonic::Code::Unauthenticated => "not authorised (check --grpc-token)",
        tonic::Code::Unavailable => "server unavailable",
        _ => "request failed",
    };
    anyhow::anyhow!("{what}: {}", status.message())
}

pub async fn run_settings(
    args: &ClientArgs,
    json: bool,
    command: SettingsCommand,
) -> anyhow::Result<()> {
    let mut client = SettingsClient::new(connect(args).await?);
    let snapshot = match command {
        SettingsCommand::Show => client.get_settings(proto::GetSettingsRequest {}).await,
        SettingsCommand::ImportZammad { file } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?
            };
            client
                .import_zammad(proto::ImportZammadRequest { json: text })
                .await
        }
        SettingsCommand::ExportZammad => {
            let exported = client
                .export_zammad(proto::ExportZammadRequest {})
                .await
                .map_err(status_error)?;
            println!("{}", exported.into_inner().json);
            return Ok(());
        }
        SettingsCommand::Block { command } => match command {
            BlockCommand::Add { number, note } => {
                client
                    .add_block_entry(proto::AddBlockEntryRequest {
                        pattern: number,
                        note,
                    })
                    .await
            }
            BlockCommand::Remove { number } => {
                client
                    .remove_block_entry(proto::RemoveBlockEntryRequest { pattern: number })
                    .await
            }
        },
        SettingsCommand::Route { command } => match command {
            RouteCommand::Add {
                pattern,
                caller_id,
                note,
                position,
            } => {
                let position = match position {
                    Some(0) => anyhow::bail!("--position counts from 1"),
                    Some(p) => Some(p - 1),
                    None => None,
                };
                client
                    .add_routing_rule(proto::AddRoutingRuleRequest {
                        dest: pattern,
                        caller_id,
                        note,
                        position,
                    })
                    .await
            }
            RouteCommand::Remove { pattern } => {
                client
                    .remove_routing_rule(proto::RemoveRoutingRuleRequest { dest: pattern })
                    .await
            }
        },
        SettingsCommand::DefaultCallerId { command } => {
            let caller_id = match command {
                DefaultCallerIdCommand::Set { number } => number,
                DefaultCallerIdCommand::Clear => String::new(),
            };
            client
                .set_default_caller_id(proto::SetDefaultCallerIdRequest { caller_id })
                .await
        }
        SettingsCommand::Evaluate {
            direction,
            from,
            to,
        } => {
            let direction = if direction == "in" {
                proto::Direction::In
            } else {
                proto::Direction::Out
            };
            let response = client
                .evaluate(proto::EvaluateRequest {
                    direction: direction.into(),
                    from,
                    to,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            output::evaluation(&response, json);
            return Ok(());
        }
        SettingsCommand::Audit { limit } => {
            let response = client
                .list_audit(proto::ListAuditRequest {
                    limit,
                    before_id: 0,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            output::audit(&response, json);
            return Ok(());
        }
    };
    let snapshot = snapshot.map_err(status_error)?.into_inner();
    output::settings(&snapshot, json);
    Ok(())
}

pub async fn run_calls(args: &ClientArgs, command: CallsCommand) -> anyhow::Result<()> {
    let CallsCommand::List { json, limit } = command;
    let mut client = CallLogClient::new(connect(args).await?);
    let response = client
        .list_calls(proto::ListCallsRequest {
            limit,
            ..Default::default()
        })
        .await
        .map_err(status_error)?
        .into_inner();
    output::calls(&response.calls, json);
    Ok(())
}

/// Streams events until interrupted; reconnects and resumes after the last
/// sequence number it printed when the connection drops.
pub async fn run_watch(
    args: &ClientArgs,
    json: bool,
    after_seq: Option<u64>,
) -> anyhow::Result<()> {
    let mut last = after_seq;
    let mut failures = 0u32;
    loop {
        let result = async {
            let mut client = CallEventsClient::new(connect(args).await?);
            let mut stream = client
                .subscribe(proto::SubscribeRequest {
                    after_seq: last,
                    ..Default::default()
                })
                .await
                .map_err(status_error)?
                .into_inner();
            while let Some(item) = stream.next().await {
                let event = item.map_err(status_error)?;
                output::event(&event, json);
                last = Some(event.seq);
                failures = 0;
            }
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = result {
            failures += 1;
            if failures > 5 {
                return Err(e.context("giving up after 5 reconnect attempts"));
            }
            let delay = Duration::from_millis(500 * 2u64.pow(failures.min(5)));
            eprintln!("stream interrupted: {e:#}; resuming in {delay:?}");
            tokio::time::sleep(delay).await;
        }
    }
}

/// Runs a bridge as its own process until `shutdown`.
pub async fn run_bridge(
    args: &ClientArgs,
    command: BridgeCommand,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let (sink, state, start_from_now, delivery): (Box<dyn Sink>, _, _, _) = match command {
        BridgeCommand::Zammad {
            cti_url,
            state,
            start_from_now,
            delivery,
        } => (
            Box::new(ZammadSink::new(&cti_url, &delivery)?),
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
            Box::new(WebhookSink::new(&url, secret.as_deref(), &delivery)?),
            state,
            start_from_now,
            delivery,
        ),
    };
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
        client: args.clone(),
    };
    delivery::run(
        &source,
        sink.as_ref(),
        cursor,
        start_from_now,
        &delivery,
        shutdown,
    )
    .await?;
    Ok(())
}
