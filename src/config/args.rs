//! The command line: the top-level [`Cli`], the flags every client
//! subcommand shares ([`ClientArgs`]), the subcommands, and the delivery
//! flags of the bridges ([`DeliveryArgs`]).

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use super::{
    DEFAULT_BACKOFF_MS, DEFAULT_BRIDGE_TIMEOUT_MS, DEFAULT_GRPC_ADDR, DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_BACKOFF_MS, DeliveryPolicy, LogFormat, OnRefusal, ServeArgs,
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
        default_value_t
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
        default_value_t = format!("http://{DEFAULT_GRPC_ADDR}")
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
    /// A CA (PEM) to trust: for an https:// --server instead of the system's
    /// roots, and for the bridges' receivers besides them.
    #[arg(long, global = true, env = "SIDECAR_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) for a gRPC server that requires one
    /// (--grpc-client-ca); needs --client-key and an https:// --server.
    #[arg(long, global = true, env = "SIDECAR_CLIENT_CERT")]
    pub client_cert: Option<PathBuf>,
    /// Private key (PEM) of --client-cert.
    #[arg(long, global = true, env = "SIDECAR_CLIENT_KEY")]
    pub client_key: Option<PathBuf>,
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
    /// The last webhook requests (refused ones too), newest first: status,
    /// reason, decision and reply, as sipgate's debug log shows them.
    Requests {
        /// Most requests to show (0: all the server keeps).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
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
        #[arg(long, env = "SIDECAR_BRIDGE_URL", hide_env_values = true)]
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
    /// Show the in-process bridges of a running server (delivering, retrying,
    /// stopped; last error; events behind), from its /readyz; exits non-zero
    /// when the server is not ready.
    Status {
        /// The server's webhook listener.
        #[arg(
            long,
            env = "SIDECAR_HTTP_URL",
            default_value = "http://127.0.0.1:8080"
        )]
        http_url: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SettingsCommand {
    /// Print the block list, routing table and default caller ID.
    Show,
    /// Replace the settings with Zammad's sipgate_config from FILE ("-" = stdin):
    /// JSON, or what a Rails console prints for `p Setting.get('sipgate_config')`.
    ImportZammad {
        file: PathBuf,
        /// Show what would change (entries added, removed, changed) and store nothing.
        #[arg(long)]
        dry_run: bool,
        /// Allow block patterns that block a whole country or everyone ("*", "49*").
        #[arg(long)]
        force: bool,
    },
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
    /// Undo a change: restore the settings from before audit entry AUDIT_ID
    /// (default: the newest change), as a new, audited change.
    Undo {
        audit_id: Option<u64>,
        /// Allow restoring block patterns that block a whole country or everyone.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum BlockCommand {
    /// Block a number ("+49 30 1234", "030 1234"), a prefix ("4930*") or "anonymous".
    Add {
        number: String,
        #[arg(long, default_value = "")]
        note: String,
        /// Allow a pattern that blocks a whole country or everyone ("*", "49*").
        #[arg(long)]
        force: bool,
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

/// Retry and refusal rules shared by every bridge.
#[derive(Debug, Clone, Args)]
pub struct DeliveryArgs {
    /// Attempts for an event the receiver refuses (3xx, 4xx other than 408
    /// and 429) before --on-refusal applies. Unreachable receivers, timeouts,
    /// 5xx, 408 and 429 are retried without limit.
    #[arg(long, env = "SIDECAR_BRIDGE_MAX_ATTEMPTS", default_value_t = DEFAULT_MAX_ATTEMPTS)]
    pub max_attempts: u32,
    /// After --max-attempts refusals of one event: stop the bridge, or skip the event.
    #[arg(long, env = "SIDECAR_BRIDGE_ON_REFUSAL", value_enum, default_value_t)]
    pub on_refusal: OnRefusal,
    /// First retry delay in milliseconds (doubles up to --max-backoff-ms).
    #[arg(long, env = "SIDECAR_BRIDGE_BACKOFF_MS", default_value_t = DEFAULT_BACKOFF_MS)]
    pub backoff_ms: u64,
    #[arg(long, env = "SIDECAR_BRIDGE_MAX_BACKOFF_MS", default_value_t = DEFAULT_MAX_BACKOFF_MS)]
    pub max_backoff_ms: u64,
    /// Timeout of one HTTP request to the receiver, in milliseconds.
    #[arg(long, env = "SIDECAR_BRIDGE_TIMEOUT_MS", default_value_t = DEFAULT_BRIDGE_TIMEOUT_MS)]
    pub timeout_ms: u64,
}

impl DeliveryArgs {
    /// The flags as the plain values a bridge runs on.
    pub fn policy(&self) -> DeliveryPolicy {
        DeliveryPolicy {
            max_attempts: self.max_attempts,
            on_refusal: self.on_refusal,
            backoff: Duration::from_millis(self.backoff_ms),
            max_backoff: Duration::from_millis(self.max_backoff_ms),
            timeout: Duration::from_millis(self.timeout_ms),
            ca_cert: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;
    use crate::config::Config;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flag_defaults_are_the_config_defaults() {
        let cli = Cli::try_parse_from(["sipgate-sidecar", "serve"]).unwrap();
        assert_eq!(cli.client.server, "http://127.0.0.1:50051");
        assert_eq!(cli.log_format, LogFormat::Text);
        let Command::Serve(args) = cli.command else {
            panic!("serve parses as serve");
        };
        assert_eq!(args.delivery.policy(), DeliveryPolicy::default());
        let parsed = args.into_config().unwrap();
        let default = Config::default();
        assert_eq!(format!("{parsed:?}"), format!("{default:?}"));
    }
}
