//! Everything `serve` can be told: flags, their environment variables, defaults,
//! and validation. [`Config`] is what [`crate::start`] takes; tests build it
//! directly, the CLI builds it from [`ServeArgs`].

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, ValueEnum};

use crate::bridge::DeliveryArgs;
use ipnet::IpNet;

/// How `X-Sipgate-Signature` is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SignatureMode {
    /// Every push must carry a valid signature (default).
    Require,
    /// Do not check signatures (local testing, or a proxy that strips the header).
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
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

/// Where an in-process bridge forwards events.
#[derive(Debug, Clone)]
pub enum BridgeTarget {
    /// Zammad's generic CTI endpoint, `https://zammad.example.com/api/v1/cti/TOKEN`.
    Zammad { cti_url: Secret },
    /// Any HTTP endpoint taking JSON events, optionally HMAC-signed.
    Webhook { url: String, secret: Option<Secret> },
}

/// A bridge that runs inside `serve`.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    pub target: BridgeTarget,
    /// Cursor file (last delivered sequence number).
    pub state: PathBuf,
    pub delivery: DeliveryArgs,
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
    pub writer_max_batch: usize,
    /// Bridges run in-process, sharing the delivery code of `sipgate-sidecar bridge`.
    pub bridges: Vec<BridgeConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http_addr: ([0, 0, 0, 0], 8080).into(),
            grpc_addr: ([127, 0, 0, 1], 50051).into(),
            metrics_addr: Some(([127, 0, 0, 1], 9464).into()),
            database: "sipgate-sidecar.db".into(),
            public_url: None,
            webhook_token: None,
            basic_auth: None,
            signature: SignatureMode::Require,
            signature_key: None,
            allow_sources: Vec::new(),
            trusted_proxies: Vec::new(),
            grpc_token: None,
            country_code: "49".into(),
            reply_deadline: Duration::from_millis(1000),
            body_limit: 64 * 1024,
            stale_call_after: Duration::from_secs(4 * 3600),
            retention: Duration::from_secs(365 * 24 * 3600),
            maintenance_interval: Duration::from_secs(60),
            live_buffer: 4096,
            writer_max_batch: 512,
            bridges: Vec::new(),
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
        if self.reply_deadline.is_zero() {
            return Err("--reply-deadline-ms must be greater than 0".into());
        }
        if self.body_limit < 1024 {
            return Err("--body-limit must be at least 1024 bytes".into());
        }
        if self.live_buffer == 0 || self.writer_max_batch == 0 {
            return Err("--live-buffer and --writer-max-batch must be greater than 0".into());
        }
        Ok(())
    }
}

/// Flags of `sipgate-sidecar serve`; every one also reads an environment variable.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Webhook listener (public: sipgate posts here).
    #[arg(long, env = "SIDECAR_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// gRPC listener (internal: settings, call log, event stream).
    #[arg(long, env = "SIDECAR_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,
    /// Prometheus metrics listener; "off" disables it.
    #[arg(long, env = "SIDECAR_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: String,
    /// SQLite database: a path or a sqlite:// URL; created if missing.
    #[arg(long, env = "SIDECAR_DATABASE", default_value = "sipgate-sidecar.db")]
    pub database: String,
    /// Public base URL sipgate reaches the sidecar at, e.g. https://pbx.example.com
    /// (used for onAnswer/onHangup); derived from the Host header when unset.
    #[arg(long, env = "SIDECAR_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Secret path token: webhooks then go to /api/v1/sipgate/{token}/{in,out}.
    #[arg(long, env = "SIDECAR_WEBHOOK_TOKEN", hide_env_values = true)]
    pub webhook_token: Option<String>,
    /// HTTP Basic credentials "user:password" sipgate must send
    /// (configure the webhook URL as https://user:password@host/...).
    #[arg(long, env = "SIDECAR_BASIC_AUTH", hide_env_values = true)]
    pub basic_auth: Option<String>,
    /// X-Sipgate-Signature check.
    #[arg(long, env = "SIDECAR_SIGNATURE", value_enum, default_value = "require")]
    pub signature: SignatureMode,
    /// PEM file with the public key to verify signatures with (default: sipgate's built-in key).
    #[arg(long, env = "SIDECAR_SIGNATURE_KEY")]
    pub signature_key: Option<PathBuf>,
    /// Comma-separated IPs/CIDRs allowed to post webhooks (TCP peer, or the
    /// X-Forwarded-For entry added by a trusted proxy); empty allows all.
    /// sipgate posts from 217.116.118.254 and 212.9.46.32.
    #[arg(long, env = "SIDECAR_ALLOW_SOURCES", value_delimiter = ',')]
    pub allow_sources: Vec<IpNet>,
    /// Comma-separated IPs/CIDRs of reverse proxies whose X-Forwarded-* headers are trusted.
    #[arg(long, env = "SIDECAR_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<IpNet>,
    /// Country code for numbers typed with a leading 0 (030 1234 -> 49301234).
    #[arg(long, env = "SIDECAR_COUNTRY_CODE", default_value = "49")]
    pub country_code: String,
    /// Longest wait for the event's commit before the reply goes out anyway.
    #[arg(long, env = "SIDECAR_REPLY_DEADLINE_MS", default_value_t = 1000)]
    pub reply_deadline_ms: u64,
    /// Largest accepted webhook body in bytes.
    #[arg(long, env = "SIDECAR_BODY_LIMIT", default_value_t = 64 * 1024)]
    pub body_limit: usize,
    /// Close calls that got no hangup after this many seconds.
    #[arg(long, env = "SIDECAR_STALE_CALL_SECS", default_value_t = 4 * 3600)]
    pub stale_call_secs: u64,
    /// Purge events and calls older than this many days (0 keeps everything).
    #[arg(long, env = "SIDECAR_RETENTION_DAYS", default_value_t = 365)]
    pub retention_days: u64,
    /// Live fan-out buffer (events); slower subscribers catch up from the database.
    #[arg(long, env = "SIDECAR_LIVE_BUFFER", default_value_t = 4096)]
    pub live_buffer: usize,
    /// Run the Zammad bridge in this process, posting to Zammad's generic CTI
    /// URL (https://zammad.example.com/api/v1/cti/TOKEN).
    #[arg(long, env = "SIDECAR_ZAMMAD_CTI_URL", hide_env_values = true)]
    pub zammad_cti_url: Option<String>,
    /// Run the JSON webhook forwarder in this process, posting to this URL.
    #[arg(long, env = "SIDECAR_FORWARD_URL")]
    pub forward_url: Option<String>,
    /// HMAC-SHA256 secret for the forwarder's X-Sidecar-Signature header.
    #[arg(long, env = "SIDECAR_FORWARD_SECRET", hide_env_values = true)]
    pub forward_secret: Option<String>,
    /// Retry and refusal rules of the in-process bridges.
    #[command(flatten)]
    pub delivery: DeliveryArgs,
    /// Once every listener is bound, write {"pid", "http_addr", "grpc_addr",
    /// "metrics_addr"} as JSON to this file (atomically: a temporary file in the
    /// same directory, then renamed), for scripts that start with port 0.
    #[arg(long, env = "SIDECAR_READY_FILE")]
    pub ready_file: Option<PathBuf>,
}

/// Cursor file of an in-process bridge: next to the database.
fn bridge_state_path(database: &str, bridge: &str) -> PathBuf {
    let path = database
        .strip_prefix("sqlite://")
        .or_else(|| database.strip_prefix("sqlite:"))
        .unwrap_or(database);
    let path = path.split('?').next().unwrap_or(path);
    PathBuf::from(format!("{path}.{bridge}.cursor"))
}

impl ServeArgs {
    pub fn into_config(self) -> Result<Config, String> {
        let metrics_addr = match self.metrics_addr.as_str() {
            "off" | "" => None,
            s => Some(s.parse().map_err(|e| {
                format!("--metrics-addr '{s}' is not an address like 127.0.0.1:9464 or 'off': {e}")
            })?),
        };
        let basic_auth = match self.basic_auth {
            None => None,
            Some(s) => {
                let (user, password) = s
                    .split_once(':')
                    .ok_or_else(|| "--basic-auth must be 'user:password'".to_string())?;
                if user.is_empty() || password.is_empty() {
                    return Err("--basic-auth needs a non-empty user and password".into());
                }
                Some(BasicAuth {
                    user: user.into(),
                    password: Secret::new(password),
                })
            }
        };
        let mut bridges = Vec::new();
        if let Some(cti_url) = self.zammad_cti_url.filter(|s| !s.is_empty()) {
            bridges.push(BridgeConfig {
                target: BridgeTarget::Zammad {
                    cti_url: Secret::new(cti_url),
                },
                state: bridge_state_path(&self.database, "zammad"),
                delivery: self.delivery.clone(),
            });
        }
        if let Some(url) = self.forward_url.filter(|s| !s.is_empty()) {
            bridges.push(BridgeConfig {
                target: BridgeTarget::Webhook {
                    url,
                    secret: self
                        .forward_secret
                        .filter(|s| !s.is_empty())
                        .map(Secret::new),
                },
                state: bridge_state_path(&self.database, "webhook"),
                delivery: self.delivery.clone(),
            });
        }
        let config = Config {
            bridges,
            http_addr: self.http_addr,
            grpc_addr: self.grpc_addr,
            metrics_addr,
            database: self.database,
            public_url: self.public_url.filter(|s| !s.is_empty()),
            webhook_token: self
                .webhook_token
                .filter(|s| !s.is_empty())
                .map(Secret::new),
            basic_auth,
            signature: self.signature,
            signature_key: self.signature_key,
            allow_sources: self.allow_sources,
            trusted_proxies: self.trusted_proxies,
            country_code: self.country_code,
            reply_deadline: Duration::from_millis(self.reply_deadline_ms),
            body_limit: self.body_limit,
            stale_call_after: Duration::from_secs(self.stale_call_secs),
            retention: Duration::from_secs(self.retention_days * 24 * 3600),
            live_buffer: self.live_buffer,
            ..Config::default()
        };
        config.validate()?;
        Ok(config)
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
    }
}
