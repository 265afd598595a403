//! Everything the binary can be told, and nothing else: the command line
//! ([`Cli`] and its subcommands, each flag with its environment variable),
//! the defaults (declared once, as constants, and used by both the flags and
//! [`Config::default`]), and the runtime values built from them ([`Config`],
//! [`BridgeConfig`], [`DeliveryPolicy`]). [`Config`] is what [`crate::start`]
//! takes; tests build it directly, `serve` builds it from [`ServeArgs`].
//!
//! A leaf: it imports no other module of the crate.

mod args;
mod file;
mod listeners;
mod secrets;
mod serve;
mod warnings;

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use clap::ValueEnum;
use ipnet::IpNet;

pub use args::{
    BlockCommand, BridgeCommand, CallDirection, CallStateFilter, CallsCommand, Cli, ClientArgs,
    Command, DefaultCallerIdCommand, DeliveryArgs, EventsCommand, FlowsCommand, RouteCommand,
    SettingsCommand,
};
pub use file::{
    CONFIG_ENV, ParseError, Parsed, Setting, Source, check_config, parse, readable_by_others,
};
pub use listeners::{GrpcListenerConfig, HttpListenerConfig, TlsFiles};
pub use secrets::{SECRET_VARIABLES, secrets_from_files};
pub use serve::ServeArgs;
pub use warnings::startup_warnings;

/// Webhook listener.
pub const DEFAULT_HTTP_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8080);
/// gRPC listener; clients dial it as `http://127.0.0.1:50051`.
pub const DEFAULT_GRPC_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 50051);
/// Prometheus listener.
pub const DEFAULT_METRICS_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9464);
pub const DEFAULT_DATABASE: &str = "sipgate-sidecar.db";
pub const DEFAULT_COUNTRY_CODE: &str = "49";
pub const DEFAULT_REPLY_DEADLINE_MS: u64 = 1000;
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;
pub const DEFAULT_STALE_CALL_SECS: u64 = 4 * 3600;
pub const DEFAULT_RETENTION_DAYS: u64 = 365;
pub const DEFAULT_LIVE_BUFFER: usize = 4096;
pub const DEFAULT_MAX_SUBSCRIBERS: usize = 1000;
pub const DEFAULT_MAINTENANCE_INTERVAL: Duration = Duration::from_secs(60);
pub const DEFAULT_WRITER_MAX_BATCH: usize = 512;
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
pub const DEFAULT_BACKOFF_MS: u64 = 500;
pub const DEFAULT_MAX_BACKOFF_MS: u64 = 30_000;
pub const DEFAULT_BRIDGE_TIMEOUT_MS: u64 = 10_000;
/// A webhook's request header (and the first bytes of a connection) must
/// arrive within this; an idle keep-alive connection waits this long for its
/// next request.
pub const DEFAULT_HEADER_TIMEOUT_SECS: u64 = 10;
/// A connection that sends and receives nothing for this long is closed.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 60;
/// Open connections on the webhook listener; systemd's default file
/// descriptor limit is 1024, so this leaves room for the database and gRPC.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// A webhook client's share: sipgate posts from two addresses, one
/// connection per push in flight.
pub const DEFAULT_MAX_CONNECTIONS_PER_SOURCE: usize = 64;
/// Webhooks handled at once; more are answered 503.
pub const DEFAULT_MAX_WEBHOOKS_IN_FLIGHT: usize = 256;
/// Open connections on the gRPC listener.
pub const DEFAULT_GRPC_MAX_CONNECTIONS: usize = 256;
pub const DEFAULT_GRPC_MAX_CONNECTIONS_PER_SOURCE: usize = 64;
/// Concurrent gRPC calls and streams on one connection.
pub const DEFAULT_GRPC_MAX_STREAMS: u32 = 64;
/// TLS handshake plus HTTP/2 connection preface on the gRPC listener.
pub const DEFAULT_GRPC_HANDSHAKE_TIMEOUT_SECS: u64 = 10;
/// HTTP/2 PING interval on gRPC connections; a peer that does not answer
/// within the keep-alive timeout is dropped.
pub const DEFAULT_GRPC_KEEPALIVE_SECS: u64 = 30;
pub const DEFAULT_GRPC_KEEPALIVE_TIMEOUT_SECS: u64 = 10;
/// After SIGTERM: how long in-flight requests may take before the remaining
/// connections are dropped.
pub const DEFAULT_SHUTDOWN_TIMEOUT_SECS: u64 = 5;
/// Webhook requests kept in memory for `sipgate-sidecar requests`.
pub const DEFAULT_RECENT_REQUESTS: usize = 100;
/// More would only cost memory: each request kept is about 3 KB at most.
pub const MAX_RECENT_REQUESTS: usize = 100_000;

/// How `X-Sipgate-Signature` is treated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum SignatureMode {
    /// Every push must carry a valid signature (default).
    #[default]
    Require,
    /// Do not check signatures (local testing, or a proxy that strips the header).
    Off,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// What to do when the receiver keeps refusing an event (401, 403, 422, ...).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum OnRefusal {
    /// Stop the bridge with an error; the cursor stays before the event, so
    /// nothing is lost once the receiver is fixed and the bridge restarted.
    #[default]
    Stop,
    /// Log the event loudly, count it, and go on with the next one.
    Skip,
}

/// What the Zammad bridge does with the events of a call the sidecar
/// rejected. Zammad notifies agents of every inbound newCall it is sent,
/// unless its own CTI block list rejects the caller: then it logs the call
/// without a pop-up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum BlockedCalls {
    /// Send a blocked call only when Zammad's CTI block list, mirrored from
    /// the sidecar's (`settings export-zammad --cti`), rejects it too: the
    /// entry that blocked it is the caller's exact number or `anonymous`.
    /// Calls blocked by a prefix (`4930*`), which Zammad cannot match, are
    /// not sent.
    #[default]
    Mirrored,
    /// Send no event of a blocked call: no pop-up, and no entry in Zammad's
    /// caller log (the sidecar's call log has it).
    Skip,
    /// Send every blocked call: agents get a pop-up for each one Zammad's own
    /// block list does not reject.
    All,
}

/// A secret that never shows up in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// HTTP Basic credentials sipgate sends when the webhook URL carries `user:pass@`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicAuth {
    pub user: String,
    pub password: Secret,
}

/// Retry and refusal rules of a bridge, as plain values (the flags are
/// [`DeliveryArgs`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryPolicy {
    /// Attempts for an event the receiver refuses or fails on before `on_refusal` applies.
    pub max_attempts: u32,
    pub on_refusal: OnRefusal,
    /// First retry delay; doubles up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Timeout of one HTTP request to the receiver.
    pub timeout: Duration,
    /// A CA (PEM) trusted for the receiver's certificate, besides the system's roots.
    pub ca_cert: Option<PathBuf>,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        DeliveryPolicy {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            on_refusal: OnRefusal::default(),
            backoff: Duration::from_millis(DEFAULT_BACKOFF_MS),
            max_backoff: Duration::from_millis(DEFAULT_MAX_BACKOFF_MS),
            timeout: Duration::from_millis(DEFAULT_BRIDGE_TIMEOUT_MS),
            ca_cert: None,
        }
    }
}

/// Where a bridge forwards events.
#[derive(Debug, Clone)]
pub enum BridgeTarget {
    /// Zammad's generic CTI endpoint, `https://zammad.example.com/api/v1/cti/TOKEN`.
    Zammad {
        cti_url: Secret,
        blocked_calls: BlockedCalls,
    },
    /// Any HTTP endpoint taking JSON events, optionally HMAC-signed.
    Webhook {
        url: String,
        secret: Option<Secret>,
        conventions: WebhookConventions,
    },
    /// Zammad's REST API: a callback ticket per missed caller.
    Tickets(TicketsTarget),
}

/// The missed-call bridge's Zammad and what it makes tickets of.
#[derive(Debug, Clone)]
pub struct TicketsTarget {
    /// Zammad's base URL, e.g. https://zammad.example.com.
    pub zammad_url: String,
    pub api_token: Secret,
    /// The group the callback tickets go to.
    pub group: String,
    pub close_when_reached: bool,
    pub unknown_caller: UnknownCaller,
    /// Also calls the sidecar rejected through the block list.
    pub include_blocked: bool,
    /// Also callers without a number (one ticket per call).
    pub include_anonymous: bool,
    /// For comparing numbers Zammad stores as typed.
    pub country_code: String,
}

/// The body the JSON forwarder posts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ForwardFormat {
    /// The `sipgate-sidecar.event.v1` object (`application/json`).
    #[default]
    Sidecar,
    /// That object as `data` of a CloudEvents 1.0 structured-mode envelope
    /// (`application/cloudevents+json`).
    Cloudevents,
}

/// The default CloudEvents `source` of the forwarder's events.
pub const DEFAULT_FORWARD_SOURCE: &str = "/sipgate-sidecar";

/// How the JSON forwarder frames and signs each event, beyond its own
/// `X-Sidecar-Signature`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConventions {
    pub format: ForwardFormat,
    /// CloudEvents `source` (a URI reference).
    pub source: String,
    /// Standard Webhooks signing keys (decoded from `whsec_...`): each signs
    /// every request, so a receiver can move to a new key while the old
    /// one still verifies.
    pub standard_keys: Vec<SigningKey>,
}

impl Default for WebhookConventions {
    fn default() -> Self {
        WebhookConventions {
            format: ForwardFormat::default(),
            source: DEFAULT_FORWARD_SOURCE.into(),
            standard_keys: Vec::new(),
        }
    }
}

impl WebhookConventions {
    /// From the settings as given; `setting` names them in errors.
    pub fn new(
        format: ForwardFormat,
        source: String,
        standard_secrets: Vec<String>,
        setting: &str,
    ) -> Result<WebhookConventions, String> {
        if source.trim().is_empty() || source.chars().any(char::is_whitespace) {
            return Err(format!(
                "the CloudEvents source must be a URI reference without spaces, e.g. {DEFAULT_FORWARD_SOURCE} or https://pbx.example.com"
            ));
        }
        let standard_keys = standard_secrets
            .iter()
            .map(|s| SigningKey::from_whsec(s).map_err(|e| format!("{setting}: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(WebhookConventions {
            format,
            source,
            standard_keys,
        })
    }
}

/// A Standard Webhooks signing key: the bytes of a `whsec_<base64>` secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(Vec<u8>);

impl SigningKey {
    /// `whsec_` followed by the key in standard base64 (24 to 64 bytes, as
    /// the Standard Webhooks specification asks).
    pub fn from_whsec(secret: &str) -> Result<SigningKey, String> {
        use base64::Engine;
        let encoded = secret.trim().strip_prefix("whsec_").ok_or(
            "a Standard Webhooks secret starts with whsec_ (whsec_ and the key in base64, \
             e.g. from `printf whsec_; openssl rand -base64 32`)",
        )?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| format!("the key after whsec_ is not base64 ({e})"))?;
        if !(24..=64).contains(&key.len()) {
            return Err(format!(
                "the key after whsec_ is {} bytes; Standard Webhooks keys are 24 to 64 bytes",
                key.len()
            ));
        }
        Ok(SigningKey(key))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// A secret setting as given: absent is `None`; set but empty is refused,
/// since an empty secret would silently mean no secret (no check at all).
pub fn secret_setting(value: Option<String>, setting: &str) -> Result<Option<Secret>, String> {
    match value {
        None => Ok(None),
        Some(v) if v.trim().is_empty() => Err(format!(
            "{setting} is set but empty: an empty secret would turn its check off. \
             Give it a value, or remove the setting (and its _FILE) to run without it"
        )),
        Some(v) => Ok(Some(Secret::new(v))),
    }
}

/// The Zammad API token from a file (`--api-token-file`) or the
/// environment; exactly one, and never empty.
pub fn zammad_api_token(
    file: Option<&std::path::Path>,
    env: Option<String>,
    flag: &str,
) -> Result<Secret, String> {
    let env = env.filter(|t| !t.is_empty());
    let token = match (file, env) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "set {flag} or SIDECAR_ZAMMAD_API_TOKEN(_FILE), not both"
            ));
        }
        (Some(path), None) => secrets::read_secret(path)
            .map_err(|e| format!("{flag}: cannot read {}: {e}", path.display()))?,
        (None, Some(token)) => token,
        (None, None) => {
            return Err(format!(
                "the Zammad API token is missing: set {flag} or SIDECAR_ZAMMAD_API_TOKEN(_FILE)"
            ));
        }
    };
    if token.trim().is_empty() {
        return Err(format!("the Zammad API token ({flag}) is empty"));
    }
    Ok(Secret::new(token))
}

/// What the missed-call bridge does for a caller Zammad does not know.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum UnknownCaller {
    /// Create a customer with the number as its phone.
    #[default]
    Create,
    /// No ticket.
    Skip,
}

/// A bridge that runs inside `serve`.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    pub target: BridgeTarget,
    /// Cursor file (last delivered sequence number).
    pub state: PathBuf,
    pub delivery: DeliveryPolicy,
    /// Where a bridge that has never delivered (no cursor yet) starts.
    pub start: NewBridgeStart,
}

/// Where an in-process bridge that has never delivered starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum NewBridgeStart {
    /// After the newest stored event: only calls from now on reach the
    /// receiver (the default: Zammad shows a replayed newCall as a call
    /// ringing now, so last month's calls would pop up for every agent).
    #[default]
    Now,
    /// At the first stored event: the receiver gets the whole log first.
    Beginning,
}

/// The server's configuration. `Config::default()` is what `serve` with no
/// flags runs: SQLite file in the working directory, default ports.
#[derive(Debug, Clone)]
pub struct Config {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    /// Prometheus `/metrics`; `None` disables the listener.
    pub metrics_addr: Option<SocketAddr>,
    pub database: String,
    /// Base of the onAnswer/onHangup URLs; derived from the request's Host when unset.
    pub public_url: Option<String>,
    pub webhook_token: Option<Secret>,
    pub basic_auth: Option<BasicAuth>,
    pub signature: SignatureMode,
    /// PEM public key replacing sipgate's built-in one.
    pub signature_key: Option<PathBuf>,
    /// Source addresses allowed to post webhooks; empty allows all.
    pub allow_sources: Vec<IpNet>,
    /// Peers whose `X-Forwarded-For` / `X-Forwarded-Proto` are believed.
    pub trusted_proxies: Vec<IpNet>,
    pub grpc_token: Option<Secret>,
    /// Country code that replaces a single leading 0 when normalising numbers.
    pub country_code: String,
    /// Where the call flows' announcement and iCalendar files are.
    pub announcements_dir: Option<PathBuf>,
    /// The spool's directory; `None` for the default next to the database
    /// ([`crate::store::Store::default_spool_dir`]).
    pub spool_dir: Option<PathBuf>,
    /// The longest a webhook reply waits for its event's commit.
    pub reply_deadline: Duration,
    pub body_limit: usize,
    /// Calls with no hangup after this long are closed with a synthetic event.
    pub stale_call_after: Duration,
    /// Events and calls older than this are purged; zero keeps everything.
    pub retention: Duration,
    pub maintenance_interval: Duration,
    /// Live fan-out buffer per server; subscribers that fall further behind
    /// catch up from the database.
    pub live_buffer: usize,
    /// Event-stream subscribers over gRPC at once; the in-process bridges
    /// come on top.
    pub max_subscribers: usize,
    pub writer_max_batch: usize,
    /// Bridges run in-process, sharing the delivery code of `sipgate-sidecar bridge`.
    pub bridges: Vec<BridgeConfig>,
    /// TLS, timeouts and caps of the webhook listener.
    pub http_listener: HttpListenerConfig,
    /// TLS, timeouts and caps of the gRPC listener.
    pub grpc_listener: GrpcListenerConfig,
    /// After a shutdown begins, in-flight requests get this long; then the
    /// remaining connections are dropped (everything accepted still commits).
    pub shutdown_timeout: Duration,
    /// The last webhook requests kept in memory for diagnostics; 0 keeps none.
    pub recent_requests: usize,
}

/// Days as a [`Duration`] (the unit of `--retention-days`).
pub(crate) fn days(days: u64) -> Duration {
    Duration::from_secs(days.saturating_mul(24 * 3600))
}

/// Upper bounds: past them a value is a typo, and some (a live buffer of
/// 10^12 slots) would abort the process at start.
pub const MAX_LIVE_BUFFER: usize = 1_000_000;
pub const MAX_WRITER_BATCH: usize = 8192;
pub const MAX_SUBSCRIBERS: usize = 100_000;
pub const MAX_BODY_LIMIT: usize = 16 * 1024 * 1024;
pub const MAX_REPLY_DEADLINE: Duration = Duration::from_secs(30);
pub const MAX_CONNECTIONS: usize = 1_000_000;
/// Timeouts, the stale-call age and the shutdown deadline.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 3600);
pub const MAX_RETENTION_DAYS: u64 = 36_500;

/// `value` within `min..=max`, or an error naming `flag` and the range.
pub(crate) fn bounded(flag: &str, value: usize, min: usize, max: usize) -> Result<(), String> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "{flag} must be between {min} and {max}, not {value}"
        ))
    }
}

/// A duration within `1 s..=MAX_TIMEOUT` (or zero allowed when `zero_ok`).
pub(crate) fn bounded_secs(flag: &str, value: Duration, zero_ok: bool) -> Result<(), String> {
    if value > MAX_TIMEOUT || (!zero_ok && value.is_zero()) {
        return Err(format!(
            "{flag} must be between {} and {} seconds, not {}",
            u64::from(!zero_ok),
            MAX_TIMEOUT.as_secs(),
            value.as_secs()
        ));
    }
    Ok(())
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http_addr: DEFAULT_HTTP_ADDR,
            grpc_addr: DEFAULT_GRPC_ADDR,
            metrics_addr: Some(DEFAULT_METRICS_ADDR),
            database: DEFAULT_DATABASE.into(),
            public_url: None,
            webhook_token: None,
            basic_auth: None,
            signature: SignatureMode::default(),
            signature_key: None,
            allow_sources: Vec::new(),
            trusted_proxies: Vec::new(),
            grpc_token: None,
            country_code: DEFAULT_COUNTRY_CODE.into(),
            announcements_dir: None,
            spool_dir: None,
            reply_deadline: Duration::from_millis(DEFAULT_REPLY_DEADLINE_MS),
            body_limit: DEFAULT_BODY_LIMIT,
            stale_call_after: Duration::from_secs(DEFAULT_STALE_CALL_SECS),
            retention: days(DEFAULT_RETENTION_DAYS),
            maintenance_interval: DEFAULT_MAINTENANCE_INTERVAL,
            live_buffer: DEFAULT_LIVE_BUFFER,
            max_subscribers: DEFAULT_MAX_SUBSCRIBERS,
            writer_max_batch: DEFAULT_WRITER_MAX_BATCH,
            bridges: Vec::new(),
            http_listener: HttpListenerConfig::default(),
            grpc_listener: GrpcListenerConfig::default(),
            shutdown_timeout: Duration::from_secs(DEFAULT_SHUTDOWN_TIMEOUT_SECS),
            recent_requests: DEFAULT_RECENT_REQUESTS,
        }
    }
}

impl Config {
    /// Checks what clap cannot: URL shapes, token characters, ranges.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(url) = &self.public_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!(
                    "--public-url '{url}' must start with http:// or https://"
                ));
            }
            if url.contains('?') || url.contains('#') {
                return Err(format!(
                    "--public-url '{url}' must not contain a query or fragment"
                ));
            }
        }
        if let Some(token) = &self.webhook_token {
            let t = token.expose();
            if t.is_empty()
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            {
                return Err(
                    "--webhook-token must be non-empty and use only letters, digits, '-', '_' and '.'"
                        .into(),
                );
            }
            if t == "in" || t == "out" {
                return Err("--webhook-token must not be 'in' or 'out'".into());
            }
        }
        if self.country_code.is_empty()
            || self.country_code.len() > 4
            || !self.country_code.bytes().all(|b| b.is_ascii_digit())
            || self.country_code.starts_with('0')
        {
            return Err(format!(
                "--country-code '{}' must be 1 to 4 digits without + or leading 0, e.g. 49",
                self.country_code
            ));
        }
        if let Some(dir) = &self.announcements_dir
            && !dir.is_dir()
        {
            return Err(format!(
                "--announcements-dir {} is not a directory",
                dir.display()
            ));
        }
        if self.reply_deadline.is_zero() {
            return Err("--reply-deadline-ms must be greater than 0".into());
        }
        bounded("--live-buffer", self.live_buffer, 1, MAX_LIVE_BUFFER)?;
        bounded(
            "--writer-max-batch",
            self.writer_max_batch,
            1,
            MAX_WRITER_BATCH,
        )?;
        bounded(
            "--max-subscribers",
            self.max_subscribers,
            1,
            MAX_SUBSCRIBERS,
        )?;
        bounded("--body-limit", self.body_limit, 1024, MAX_BODY_LIMIT)?;
        if self.reply_deadline > MAX_REPLY_DEADLINE {
            return Err(format!(
                "--reply-deadline-ms must be at most {} (sipgate stops waiting after about 10 s)",
                MAX_REPLY_DEADLINE.as_millis()
            ));
        }
        bounded_secs("--stale-call-secs", self.stale_call_after, false)?;
        bounded_secs("--shutdown-timeout-secs", self.shutdown_timeout, true)?;
        if self.retention > days(MAX_RETENTION_DAYS) {
            return Err(format!(
                "--retention-days must be at most {MAX_RETENTION_DAYS} (0 keeps everything)"
            ));
        }
        if self.recent_requests > MAX_RECENT_REQUESTS {
            return Err(format!(
                "--recent-requests must be at most {MAX_RECENT_REQUESTS} (0 keeps none)"
            ));
        }
        self.validate_listeners()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_secrets_are_redacted() {
        let mut c = Config::default();
        assert!(c.validate().is_ok());
        c.webhook_token = Some(Secret::new("s3cr3t-token"));
        c.grpc_token = Some(Secret::new("grpc-secret"));
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cr3t-token"), "{shown}");
        assert!(!shown.contains("grpc-secret"), "{shown}");
    }

    #[test]
    fn rejects_bad_values_with_a_reason() {
        let mut c = Config {
            public_url: Some("ftp://x".into()),
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().contains("--public-url"));
        c.public_url = None;
        c.webhook_token = Some(Secret::new("a/b"));
        assert!(c.validate().unwrap_err().contains("--webhook-token"));
        c.webhook_token = None;
        c.country_code = "+49".into();
        assert!(c.validate().unwrap_err().contains("--country-code"));
        c.country_code = "49".into();
        c.announcements_dir = Some("/nonexistent/announcements".into());
        assert!(
            c.validate()
                .unwrap_err()
                .contains("--announcements-dir /nonexistent/announcements is not a directory")
        );
        c.announcements_dir = None;
    }

    #[test]
    fn listener_limits_are_checked() {
        let mut c = Config::default();
        c.http_listener.max_connections = 0;
        assert!(c.validate().unwrap_err().contains("--max-connections"));
        c = Config::default();
        c.grpc_listener.client_ca = Some("ca.pem".into());
        assert!(c.validate().unwrap_err().contains("--grpc-client-ca"));
        c.grpc_listener.tls = Some(TlsFiles {
            cert: "cert.pem".into(),
            key: "key.pem".into(),
        });
        assert!(c.validate().is_ok());
        c.http_listener.header_timeout = Duration::ZERO;
        assert!(c.validate().unwrap_err().contains("--header-timeout-secs"));
    }
}
