//! The command line: the top-level [`Cli`], the flags every client
//! subcommand shares ([`ClientArgs`]), the subcommands, and the delivery
//! flags of the bridges ([`DeliveryArgs`]).

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use super::{
    BlockedCalls, DEFAULT_BACKOFF_MS, DEFAULT_BRIDGE_TIMEOUT_MS, DEFAULT_COUNTRY_CODE,
    DEFAULT_GRPC_ADDR, DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_BACKOFF_MS, DeliveryPolicy, LogFormat,
    OnRefusal, ServeArgs, UnknownCaller,
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
    /// Configuration file (TOML) whose keys are the long flag names, e.g.
    /// grpc-addr = "127.0.0.1:50051"; flags and environment variables win over it.
    #[arg(
        long,
        global = true,
        env = "SIDECAR_CONFIG",
        value_name = "FILE",
        help_heading = GLOBAL_OPTIONS
    )]
    pub config: Option<PathBuf>,
    /// Log format.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL_OPTIONS,
        env = "SIDECAR_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// The help heading of the flags every subcommand takes.
pub const GLOBAL_OPTIONS: &str = "Global options (any subcommand, anywhere on the line)";

/// How client subcommands reach the server (accepted anywhere on the line).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = GLOBAL_OPTIONS)]
pub struct ClientArgs {
    /// gRPC address of the running sidecar: host:port (as --grpc-addr takes
    /// it), http://host:port, or https://host:port for TLS.
    #[arg(
        long,
        global = true,
        env = "SIDECAR_SERVER",
        default_value_t = format!("http://{DEFAULT_GRPC_ADDR}"),
        value_parser = parse_server
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
    /// Call flows: office hours, holidays, forwards, voicemail, keypad menus
    /// (check a document offline, set, show, evaluate, history).
    Flows {
        /// Machine-readable JSON output.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: FlowsCommand,
    },
    /// The call log: list (with filters, paging through all of it), show, mark done.
    Calls {
        /// Machine-readable JSON: one object per line.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: CallsCommand,
    },
    /// The stored event log, oldest first.
    Events {
        /// Machine-readable JSON: one object per line.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: EventsCommand,
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
        /// Keep trying when the server cannot be reached at the start, and
        /// reconnect for ever after a dropped connection (default: an
        /// unreachable server is an error, a dropped stream is resumed up to 5 times).
        #[arg(long)]
        retry: bool,
    },
    /// Print a shell completion script, e.g.
    /// `sipgate-sidecar completions bash > /etc/bash_completion.d/sipgate-sidecar`.
    Completions {
        /// The shell to complete in.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `sipgate-sidecar man | man -l -`;
    /// `man bridge zammad` a subcommand's, `man --dir DIR` writes them all.
    Man {
        /// The subcommand whose page to print, e.g. `bridge zammad`.
        command: Vec<String>,
        /// Write every page into DIR instead (sipgate-sidecar.1,
        /// sipgate-sidecar-serve.1, sipgate-sidecar-bridge-zammad.1, ...).
        #[arg(long, value_name = "DIR", conflicts_with = "command")]
        dir: Option<PathBuf>,
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
        /// Calls the sidecar rejected: send those Zammad's mirrored block
        /// list rejects too (logged, no pop-up), none, or all (pop-ups).
        #[arg(
            long,
            env = "SIDECAR_BRIDGE_BLOCKED_CALLS",
            value_enum,
            default_value_t
        )]
        blocked_calls: BlockedCalls,
        #[command(flatten)]
        delivery: DeliveryArgs,
    },
    /// POST every event as JSON to URL (schema sipgate-sidecar.event.v1).
    Webhook {
        /// The receiver, e.g. https://crm.example.com/hooks/calls.
        #[arg(long, env = "SIDECAR_BRIDGE_URL", hide_env_values = true)]
        url: String,
        /// Sign bodies: X-Sidecar-Signature: sha256=HMAC-SHA256(secret, body) in hex.
        #[arg(long, env = "SIDECAR_BRIDGE_SECRET", hide_env_values = true)]
        secret: Option<String>,
        /// The body: `sidecar` (the sipgate-sidecar.event.v1 object,
        /// application/json) or `cloudevents` (that object as `data` of a
        /// CloudEvents 1.0 structured-mode envelope, application/cloudevents+json).
        #[arg(long, env = "SIDECAR_BRIDGE_FORMAT", value_enum, default_value_t)]
        format: super::ForwardFormat,
        /// CloudEvents `source` of the events (a URI reference).
        #[arg(long, env = "SIDECAR_BRIDGE_SOURCE", default_value = super::DEFAULT_FORWARD_SOURCE)]
        source: String,
        /// Standard Webhooks signing secrets (whsec_<base64 key>),
        /// comma-separated to rotate keys: each signs every request
        /// (webhook-id, webhook-timestamp, webhook-signature: v1,<base64>).
        #[arg(
            long,
            env = "SIDECAR_BRIDGE_STANDARD_SECRET",
            hide_env_values = true,
            value_delimiter = ','
        )]
        standard_secret: Vec<String>,
        /// Cursor file: the last delivered sequence number.
        #[arg(
            long,
            env = "SIDECAR_BRIDGE_STATE",
            default_value = "sipgate-sidecar-webhook.cursor"
        )]
        state: PathBuf,
        /// Without a cursor file, start with new events instead of the whole log.
        #[arg(long)]
        start_from_now: bool,
        #[command(flatten)]
        delivery: DeliveryArgs,
    },
    /// Make a Zammad callback ticket of every missed inbound call (one open
    /// ticket per caller; later missed calls add a note), through Zammad's
    /// REST API. The API token comes from --api-token-file or
    /// SIDECAR_ZAMMAD_API_TOKEN (or SIDECAR_ZAMMAD_API_TOKEN_FILE).
    ZammadTickets {
        /// Zammad's base URL, e.g. https://zammad.example.com.
        #[arg(long, env = "SIDECAR_ZAMMAD_URL")]
        zammad_url: String,
        /// A file holding the API token (Profile -> Token Access; needs
        /// ticket.agent, and admin.user to create customers).
        #[arg(long)]
        api_token_file: Option<PathBuf>,
        /// The API token itself (from the environment; prefer the file).
        #[arg(
            long,
            env = "SIDECAR_ZAMMAD_API_TOKEN",
            hide = true,
            hide_env_values = true
        )]
        api_token: Option<String>,
        /// The Zammad group the callback tickets go to.
        #[arg(long, env = "SIDECAR_TICKETS_GROUP")]
        group: String,
        /// Cursor file: the last delivered sequence number. The ledger of
        /// open tickets is kept next to it (FILE.tickets.json).
        #[arg(
            long,
            env = "SIDECAR_BRIDGE_STATE",
            default_value = "sipgate-sidecar-zammad-tickets.cursor"
        )]
        state: PathBuf,
        /// Without a cursor file, start with new events instead of the whole log.
        #[arg(long)]
        start_from_now: bool,
        /// Close the callback ticket once the caller is reached (a later
        /// answered call with that number, inbound or outbound).
        #[arg(long, env = "SIDECAR_TICKETS_CLOSE_WHEN_REACHED")]
        close_when_reached: bool,
        /// A caller Zammad does not know: create a customer, or make no ticket.
        #[arg(
            long,
            env = "SIDECAR_TICKETS_UNKNOWN_CALLER",
            value_enum,
            default_value_t
        )]
        unknown_caller: UnknownCaller,
        /// Also make tickets of calls the sidecar rejected through the block list.
        #[arg(long)]
        include_blocked: bool,
        /// Also make tickets of anonymous callers (one ticket per call).
        #[arg(long)]
        include_anonymous: bool,
        /// Country code for numbers Zammad stores in national form (0211 ...).
        #[arg(long, env = "SIDECAR_COUNTRY_CODE", default_value = DEFAULT_COUNTRY_CODE)]
        country_code: String,
        #[command(flatten)]
        delivery: DeliveryArgs,
    },
    /// Show the in-process bridges of a running server (delivering, retrying,
    /// stopped; last error; events behind), from its /readyz; exits non-zero
    /// when the server is not ready.
    Status {
        /// The server's webhook listener (from a --config file: its
        /// http-addr, https with tls-cert).
        #[arg(
            long,
            env = "SIDECAR_HTTP_URL",
            default_value = "http://127.0.0.1:8080"
        )]
        http_url: String,
        /// Machine-readable JSON: one object with `ready`, `status` and
        /// `bridges` (`name`, `state`, `detail`).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SettingsCommand {
    /// Print the block list, routing table and default caller ID.
    Show,
    /// Replace the settings with Zammad's sipgate_config from FILE ("-" = stdin):
    /// JSON, or what a Rails console prints for `p Setting.get('sipgate_config')`.
    ImportZammad {
        /// The sipgate_config file; "-" reads stdin.
        file: PathBuf,
        /// Show what would change (entries added, removed, changed) and store nothing.
        #[arg(long)]
        dry_run: bool,
        /// Allow block patterns that block a whole country or everyone ("*", "49*").
        #[arg(long)]
        force: bool,
    },
    /// Print the settings as Zammad's sipgate_config JSON.
    ExportZammad {
        /// Instead: a Rails console command that copies the block list into
        /// Zammad's generic CTI config (cti_config), so Zammad logs the calls
        /// the sidecar rejects without a pop-up. Prefix entries cannot be
        /// copied (Zammad compares exact numbers); they are named on stderr.
        #[arg(long)]
        cti: bool,
    },
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
        /// in: an inbound call (block list); out: an outbound call (routing table).
        #[arg(long, value_parser = ["in", "out"])]
        direction: String,
        /// The caller's number, as typed or as sipgate sends it.
        #[arg(long)]
        from: String,
        /// The called number.
        #[arg(long)]
        to: String,
    },
    /// Recent settings changes, newest first.
    Audit {
        /// How many entries to show.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Undo a change: restore the settings from before audit entry AUDIT_ID
    /// (default: the newest change), as a new, audited change.
    Undo {
        /// The audit entry (`settings audit` shows the ids); default: the newest.
        audit_id: Option<u64>,
        /// Allow restoring block patterns that block a whole country or everyone.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum FlowsCommand {
    /// Validate a flows document offline (no server) and print a summary.
    Check {
        /// The TOML document ("-" = stdin).
        file: PathBuf,
        /// Check `file` announcements and `ical` files in this directory
        /// (without it they are not read).
        #[arg(long)]
        announcements_dir: Option<PathBuf>,
        /// Country code for numbers typed with a leading 0.
        #[arg(long, default_value = super::DEFAULT_COUNTRY_CODE)]
        country_code: String,
    },
    /// Set the flows document (validated whole by the server, which reads
    /// the announcement files from its --announcements-dir).
    Set {
        /// The TOML document ("-" = stdin).
        file: PathBuf,
        /// Check and report only; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove the flows document: inbound calls are answered as without flows.
    Clear,
    /// Print the flows document as set (comments kept).
    Show,
    /// Which rule fires for a call and the exact XML; with --digits the menu walk.
    Evaluate {
        /// The caller's number, as typed or as sipgate sends it.
        #[arg(long)]
        from: String,
        /// The number dialled.
        #[arg(long)]
        to: String,
        /// When the call comes in, RFC 3339 (default: now).
        #[arg(long)]
        at: Option<String>,
        /// Digits entered at the next menu prompt; repeat for each prompt
        /// ("" = no input, the prompt timed out).
        #[arg(long = "digits")]
        digits: Vec<String>,
        /// Evaluate this document instead of the one set.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Changes of the flows document, newest first (undo with `settings undo ID`).
    History {
        /// How many settings changes to look through.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum BlockCommand {
    /// Block a number ("+49 30 1234", "030 1234"), a prefix ("4930*") or "anonymous".
    Add {
        /// The number, prefix pattern or "anonymous".
        number: String,
        /// Why it is blocked (shown in `settings show` and in decisions).
        #[arg(long, default_value = "")]
        note: String,
        /// Allow a pattern that blocks a whole country or everyone ("*", "49*").
        #[arg(long)]
        force: bool,
    },
    /// Unblock a number or pattern (matched after normalisation).
    Remove {
        /// The number or pattern as stored or as typed ("+49 30 1234").
        number: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RouteCommand {
    /// Use CALLER_ID for outbound calls to PATTERN ("*" = one or more characters).
    Add {
        /// The destination pattern, e.g. "49*" or "+44 20*".
        pattern: String,
        /// The caller ID sent for matching calls.
        caller_id: String,
        /// What the rule is for.
        #[arg(long, default_value = "")]
        note: String,
        /// Insert at this position (1 = first); default: last.
        #[arg(long)]
        position: Option<u32>,
    },
    /// Delete the rule for PATTERN.
    Remove {
        /// The destination pattern as stored or as typed.
        pattern: String,
    },
    /// Move the rule for PATTERN to another position (first match wins).
    Move {
        /// The destination pattern as stored ("4930*"), or typed with +, spaces or dashes.
        pattern: String,
        /// The new position, 1 = first.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        to: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum DefaultCallerIdCommand {
    /// Use NUMBER for outbound calls no routing rule matches.
    Set {
        /// The caller ID, as typed ("+49 30 1234") or as E.164 digits.
        number: String,
    },
    /// No default: sipgate's own caller ID applies.
    Clear,
}

#[derive(Debug, Subcommand)]
pub enum CallsCommand {
    /// Newest calls first, page after page until --limit rows (or --all).
    List {
        /// How many calls to show at most.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
        limit: u64,
        /// Every call in the log (overrides --limit).
        #[arg(long)]
        all: bool,
        /// Only inbound or only outbound calls.
        #[arg(long, value_enum)]
        direction: Option<CallDirection>,
        /// Only done calls (true) or only calls nobody took (false).
        #[arg(long, value_name = "true|false")]
        done: Option<bool>,
        /// Only calls in this state.
        #[arg(long, value_enum)]
        state: Option<CallStateFilter>,
        /// Only calls from or to this number (normalised as the settings are).
        #[arg(long)]
        number: Option<String>,
    },
    /// One call by its sipgate callId.
    Get {
        /// sipgate's callId.
        call_id: String,
    },
    /// Mark a call done (or, with --not-done, not done), as Zammad's caller log does.
    SetDone {
        /// sipgate's callId.
        call_id: String,
        /// Mark it not done instead (back among the calls nobody took).
        #[arg(long)]
        not_done: bool,
    },
}

/// A call direction, as the filters take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CallDirection {
    In,
    Out,
}

/// A call state, as the filters take it (the names of the JSON output).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CallStateFilter {
    /// Ringing: newCall seen, no answer or hangup yet.
    #[value(name = "newCall", alias = "new-call")]
    NewCall,
    /// Answered, still talking.
    Answer,
    /// Ended.
    Hangup,
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Stored events in sequence order, page after page until --limit (or --all).
    List {
        /// Start after this sequence number (0 = from the oldest).
        #[arg(long, default_value_t = 0)]
        after_seq: u64,
        /// How many events to show at most.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
        limit: u64,
        /// Every event up to the newest (overrides --limit).
        #[arg(long)]
        all: bool,
    },
}

/// `--server`: `host:port` means `http://host:port`; a URL must be http(s).
fn parse_server(s: &str) -> Result<String, String> {
    let url = if s.contains("://") {
        s.to_string()
    } else {
        format!("http://{s}")
    };
    let valid = url
        .parse::<hyper::Uri>()
        .ok()
        .filter(|uri| matches!(uri.scheme_str(), Some("http" | "https")))
        .filter(|uri| uri.authority().is_some_and(|a| !a.host().is_empty()));
    match valid {
        Some(_) => Ok(url),
        None => Err(format!(
            "'{s}' is not a server address like 127.0.0.1:50051, http://host:50051 or https://host:50051"
        )),
    }
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
    /// Longest retry delay in milliseconds.
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
    fn every_argument_and_subcommand_has_help() {
        fn check(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                if arg.get_help().is_none() && arg.get_id() != "help" && arg.get_id() != "version" {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in command.get_subcommands() {
                let path = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    missing.push(path.clone());
                }
                check(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        check(&Cli::command(), "sipgate-sidecar", &mut missing);
        assert!(missing.is_empty(), "without help text: {missing:?}");
    }

    #[test]
    fn server_takes_host_port_like_grpc_addr() {
        let server = |s: &str| {
            Cli::try_parse_from(["sipgate-sidecar", "calls", "list", "--server", s])
                .map(|cli| cli.client.server)
        };
        assert_eq!(server("127.0.0.1:6000").unwrap(), "http://127.0.0.1:6000");
        assert_eq!(server("[::1]:6000").unwrap(), "http://[::1]:6000");
        assert_eq!(
            server("https://pbx.example.com:50051").unwrap(),
            "https://pbx.example.com:50051"
        );
        assert!(server("ftp://x:1").is_err());
        assert!(server("not a url").is_err());
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

    #[test]
    fn the_zammad_bridge_takes_the_blocked_calls_mode() {
        let mode = |extra: &[&str]| {
            let mut line = vec![
                "sipgate-sidecar",
                "bridge",
                "zammad",
                "--cti-url",
                "http://z/t",
            ];
            line.extend_from_slice(extra);
            match Cli::try_parse_from(line).map(|cli| cli.command) {
                Ok(Command::Bridge {
                    command: BridgeCommand::Zammad { blocked_calls, .. },
                }) => Ok(blocked_calls),
                Ok(other) => panic!("{other:?}"),
                Err(e) => Err(e.kind()),
            }
        };
        assert_eq!(mode(&[]), Ok(BlockedCalls::Mirrored));
        assert_eq!(mode(&["--blocked-calls", "all"]), Ok(BlockedCalls::All));
        assert_eq!(
            mode(&["--blocked-calls", "none"]),
            Err(clap::error::ErrorKind::InvalidValue)
        );
    }
}
