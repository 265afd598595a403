//! The flags of `sipgate-sidecar serve`, and how they become a [`Config`].

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Args;
use ipnet::IpNet;

use super::{
    BasicAuth, BlockedCalls, BridgeConfig, BridgeTarget, Config, DEFAULT_BODY_LIMIT,
    DEFAULT_COUNTRY_CODE, DEFAULT_DATABASE, DEFAULT_GRPC_ADDR, DEFAULT_GRPC_HANDSHAKE_TIMEOUT_SECS,
    DEFAULT_GRPC_KEEPALIVE_SECS, DEFAULT_GRPC_KEEPALIVE_TIMEOUT_SECS, DEFAULT_GRPC_MAX_CONNECTIONS,
    DEFAULT_GRPC_MAX_CONNECTIONS_PER_SOURCE, DEFAULT_GRPC_MAX_STREAMS, DEFAULT_HEADER_TIMEOUT_SECS,
    DEFAULT_HTTP_ADDR, DEFAULT_IDLE_TIMEOUT_SECS, DEFAULT_LIVE_BUFFER, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_SOURCE, DEFAULT_MAX_SUBSCRIBERS, DEFAULT_MAX_WEBHOOKS_IN_FLIGHT,
    DEFAULT_METRICS_ADDR, DEFAULT_RECENT_REQUESTS, DEFAULT_REPLY_DEADLINE_MS,
    DEFAULT_RETENTION_DAYS, DEFAULT_SHUTDOWN_TIMEOUT_SECS, DEFAULT_STALE_CALL_SECS, DeliveryArgs,
    GrpcListenerConfig, HttpListenerConfig, NewBridgeStart, Secret, SignatureMode, TicketsTarget,
    TlsFiles, UnknownCaller, WebhookConventions, days, secret_setting, zammad_api_token,
};

/// Flags of `sipgate-sidecar serve`; every one also reads an environment variable.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Print the effective configuration (every setting, where it came from,
    /// secrets redacted) and exit: 0 when it is valid, 2 with the reason when
    /// not. Opens no database and binds no port.
    #[arg(long)]
    pub check_config: bool,
    /// Webhook listener (public: sipgate posts here).
    #[arg(long, env = "SIDECAR_HTTP_ADDR", default_value_t = DEFAULT_HTTP_ADDR)]
    pub http_addr: SocketAddr,
    /// gRPC listener (internal: settings, call log, event stream).
    #[arg(long, env = "SIDECAR_GRPC_ADDR", default_value_t = DEFAULT_GRPC_ADDR)]
    pub grpc_addr: SocketAddr,
    /// Prometheus metrics listener; "off" disables it.
    #[arg(long, env = "SIDECAR_METRICS_ADDR", default_value_t = DEFAULT_METRICS_ADDR.to_string())]
    pub metrics_addr: String,
    /// SQLite database: a path or a sqlite:// URL; created if missing. Or a
    /// postgres:// URL, for several replicas on one PostgreSQL database.
    #[arg(
        long,
        env = "SIDECAR_DATABASE",
        hide_env_values = true,
        default_value = DEFAULT_DATABASE
    )]
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
    #[arg(long, env = "SIDECAR_SIGNATURE", value_enum, default_value_t)]
    pub signature: SignatureMode,
    /// PEM file with the public key to verify signatures with (default: sipgate's built-in key).
    #[arg(long, env = "SIDECAR_SIGNATURE_KEY")]
    pub signature_key: Option<PathBuf>,
    /// Comma-separated IPs/CIDRs allowed to post webhooks (TCP peer, or the
    /// X-Forwarded-For entry added by a trusted proxy); empty allows all.
    /// sipgate posts from 217.116.118.254 and 212.9.46.32.
    #[arg(long, env = "SIDECAR_ALLOW_SOURCES", value_delimiter = ',', value_parser = parse_net)]
    pub allow_sources: Vec<IpNet>,
    /// Comma-separated IPs/CIDRs of reverse proxies whose X-Forwarded-* headers are trusted.
    #[arg(long, env = "SIDECAR_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_net)]
    pub trusted_proxies: Vec<IpNet>,
    /// Country code for numbers typed with a leading 0 (030 1234 -> 49301234).
    #[arg(long, env = "SIDECAR_COUNTRY_CODE", default_value = DEFAULT_COUNTRY_CODE)]
    pub country_code: String,
    /// Directory of the call flows' announcement WAV files and iCalendar
    /// files (`file = "closed.wav"`, `ical = "holidays.ics"`); served under
    /// /announcements/ on the webhook listener.
    #[arg(long, env = "SIDECAR_ANNOUNCEMENTS_DIR")]
    pub announcements_dir: Option<PathBuf>,
    /// Directory of the spool, where accepted events wait while the database
    /// cannot take them (default: DATABASE.spool next to a SQLite file; for
    /// PostgreSQL $STATE_DIRECTORY/spool, else
    /// ~/.local/state/sipgate-sidecar/spool). Local disk, one per server.
    #[arg(long, env = "SIDECAR_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Longest wait for the event's commit before the reply goes out anyway.
    #[arg(long, env = "SIDECAR_REPLY_DEADLINE_MS", default_value_t = DEFAULT_REPLY_DEADLINE_MS)]
    pub reply_deadline_ms: u64,
    /// Largest accepted webhook body in bytes.
    #[arg(long, env = "SIDECAR_BODY_LIMIT", default_value_t = DEFAULT_BODY_LIMIT)]
    pub body_limit: usize,
    /// Close calls that got no hangup after this many seconds.
    #[arg(long, env = "SIDECAR_STALE_CALL_SECS", default_value_t = DEFAULT_STALE_CALL_SECS)]
    pub stale_call_secs: u64,
    /// Purge events and calls older than this many days (0 keeps everything).
    #[arg(long, env = "SIDECAR_RETENTION_DAYS", default_value_t = DEFAULT_RETENTION_DAYS)]
    pub retention_days: u64,
    /// Live fan-out buffer (events); slower subscribers catch up from the database.
    #[arg(long, env = "SIDECAR_LIVE_BUFFER", default_value_t = DEFAULT_LIVE_BUFFER)]
    pub live_buffer: usize,
    /// Most event-stream subscribers over gRPC at once (the in-process bridges
    /// come on top); more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "SIDECAR_MAX_SUBSCRIBERS", default_value_t = DEFAULT_MAX_SUBSCRIBERS)]
    pub max_subscribers: usize,
    /// Run the Zammad bridge in this process, posting to Zammad's generic CTI
    /// URL (https://zammad.example.com/api/v1/cti/TOKEN).
    #[arg(long, env = "SIDECAR_ZAMMAD_CTI_URL", hide_env_values = true)]
    pub zammad_cti_url: Option<String>,
    /// What the in-process Zammad bridge does with calls the sidecar rejected
    /// (see `bridge zammad --blocked-calls`).
    #[arg(
        long,
        env = "SIDECAR_ZAMMAD_BLOCKED_CALLS",
        value_enum,
        default_value_t
    )]
    pub zammad_blocked_calls: BlockedCalls,
    /// Where the in-process Zammad bridge starts the first time it runs
    /// (no cursor yet): `now` delivers only calls from then on, `beginning`
    /// the whole stored log first. Later starts continue from the cursor.
    #[arg(long, env = "SIDECAR_ZAMMAD_START", value_enum, default_value_t)]
    pub zammad_start: NewBridgeStart,
    /// Run the JSON webhook forwarder in this process, posting to this URL.
    #[arg(long, env = "SIDECAR_FORWARD_URL", hide_env_values = true)]
    pub forward_url: Option<String>,
    /// Where the in-process JSON forwarder starts the first time it runs
    /// (no cursor yet): `now` or `beginning` (the whole stored log first).
    #[arg(long, env = "SIDECAR_FORWARD_START", value_enum, default_value_t)]
    pub forward_start: NewBridgeStart,
    /// HMAC-SHA256 secret for the forwarder's X-Sidecar-Signature header.
    #[arg(long, env = "SIDECAR_FORWARD_SECRET", hide_env_values = true)]
    pub forward_secret: Option<String>,
    /// The forwarder's body: `sidecar` (the sipgate-sidecar.event.v1 object,
    /// application/json) or `cloudevents` (that object as `data` of a
    /// CloudEvents 1.0 structured-mode envelope, application/cloudevents+json).
    #[arg(long, env = "SIDECAR_FORWARD_FORMAT", value_enum, default_value_t)]
    pub forward_format: super::ForwardFormat,
    /// CloudEvents `source` of the forwarder's events (a URI reference).
    #[arg(long, env = "SIDECAR_FORWARD_SOURCE", default_value = super::DEFAULT_FORWARD_SOURCE)]
    pub forward_source: String,
    /// Standard Webhooks signing secrets (whsec_<base64 key>), comma-separated
    /// to rotate keys: each signs every request (webhook-id,
    /// webhook-timestamp, webhook-signature: v1,<base64 HMAC-SHA256>).
    #[arg(
        long,
        env = "SIDECAR_FORWARD_STANDARD_SECRET",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub forward_standard_secret: Vec<String>,
    /// Run the missed-call ticket bridge in this process against Zammad at
    /// this base URL (https://zammad.example.com); the token from
    /// --tickets-api-token-file or SIDECAR_ZAMMAD_API_TOKEN(_FILE).
    #[arg(long, env = "SIDECAR_TICKETS_ZAMMAD_URL")]
    pub tickets_zammad_url: Option<String>,
    /// A file holding the ticket bridge's Zammad API token.
    #[arg(long, env = "SIDECAR_TICKETS_API_TOKEN_FILE")]
    pub tickets_api_token_file: Option<PathBuf>,
    /// The ticket bridge's API token itself (from the environment; prefer the file).
    #[arg(
        long,
        env = "SIDECAR_ZAMMAD_API_TOKEN",
        hide = true,
        hide_env_values = true
    )]
    pub tickets_api_token: Option<String>,
    /// The Zammad group the callback tickets go to.
    #[arg(long, env = "SIDECAR_TICKETS_GROUP")]
    pub tickets_group: Option<String>,
    /// Close a callback ticket once the caller is reached.
    #[arg(long, env = "SIDECAR_TICKETS_CLOSE_WHEN_REACHED")]
    pub tickets_close_when_reached: bool,
    /// A caller Zammad does not know: create a customer, or make no ticket.
    #[arg(
        long,
        env = "SIDECAR_TICKETS_UNKNOWN_CALLER",
        value_enum,
        default_value_t
    )]
    pub tickets_unknown_caller: UnknownCaller,
    /// Also make tickets of calls rejected through the block list.
    #[arg(long, env = "SIDECAR_TICKETS_INCLUDE_BLOCKED")]
    pub tickets_include_blocked: bool,
    /// Also make tickets of anonymous callers (one ticket per call).
    #[arg(long, env = "SIDECAR_TICKETS_INCLUDE_ANONYMOUS")]
    pub tickets_include_anonymous: bool,
    /// Retry and refusal rules of the in-process bridges.
    #[command(flatten)]
    pub delivery: DeliveryArgs,
    /// Once every listener is bound, write {"pid", "http_addr", "grpc_addr",
    /// "metrics_addr"} as JSON to this file (atomically: a temporary file in the
    /// same directory, then renamed), for scripts that start with port 0.
    #[arg(long, env = "SIDECAR_READY_FILE")]
    pub ready_file: Option<PathBuf>,
    /// Serve webhooks over HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "SIDECAR_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "SIDECAR_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Serve gRPC over TLS with this certificate chain (PEM); needs --grpc-tls-key.
    #[arg(long, env = "SIDECAR_GRPC_TLS_CERT")]
    pub grpc_tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --grpc-tls-cert.
    #[arg(long, env = "SIDECAR_GRPC_TLS_KEY")]
    pub grpc_tls_key: Option<PathBuf>,
    /// Require gRPC clients to present a certificate signed by a CA in this PEM file.
    #[arg(long, env = "SIDECAR_GRPC_CLIENT_CA")]
    pub grpc_client_ca: Option<PathBuf>,
    /// Also speak HTTP/2 on the webhook listener (sipgate speaks HTTP/1.1 only).
    #[arg(long, env = "SIDECAR_HTTP2")]
    pub http2: bool,
    /// Seconds a webhook client has to send its request header (and finish
    /// the TLS handshake); also how long an idle keep-alive connection is kept.
    #[arg(long, env = "SIDECAR_HEADER_TIMEOUT_SECS", default_value_t = DEFAULT_HEADER_TIMEOUT_SECS)]
    pub header_timeout_secs: u64,
    /// Seconds without a byte either way after which a webhook connection is closed.
    #[arg(long, env = "SIDECAR_IDLE_TIMEOUT_SECS", default_value_t = DEFAULT_IDLE_TIMEOUT_SECS)]
    pub idle_timeout_secs: u64,
    /// Open connections on the webhook listener; further ones are closed at
    /// once. Keep it below the file-descriptor limit (ulimit -n, LimitNOFILE).
    #[arg(long, env = "SIDECAR_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Open webhook connections one address may hold; further ones are
    /// closed at once, so one client cannot take the listener (trusted
    /// proxies are not capped: their clients share their address).
    #[arg(long, env = "SIDECAR_MAX_CONNECTIONS_PER_SOURCE", default_value_t = DEFAULT_MAX_CONNECTIONS_PER_SOURCE)]
    pub max_connections_per_source: usize,
    /// Webhooks handled at once; further ones are answered 503.
    #[arg(long, env = "SIDECAR_MAX_WEBHOOKS_IN_FLIGHT", default_value_t = DEFAULT_MAX_WEBHOOKS_IN_FLIGHT)]
    pub max_webhooks_in_flight: usize,
    /// Open connections on the gRPC listener; further ones are closed at once.
    #[arg(long, env = "SIDECAR_GRPC_MAX_CONNECTIONS", default_value_t = DEFAULT_GRPC_MAX_CONNECTIONS)]
    pub grpc_max_connections: usize,
    /// Open gRPC connections one address may hold; further ones are closed at once.
    #[arg(long, env = "SIDECAR_GRPC_MAX_CONNECTIONS_PER_SOURCE", default_value_t = DEFAULT_GRPC_MAX_CONNECTIONS_PER_SOURCE)]
    pub grpc_max_connections_per_source: usize,
    /// Concurrent gRPC calls and streams per connection.
    #[arg(long, env = "SIDECAR_GRPC_MAX_STREAMS", default_value_t = DEFAULT_GRPC_MAX_STREAMS)]
    pub grpc_max_streams: u32,
    /// Seconds a gRPC client has for the TLS handshake and the HTTP/2 preface.
    #[arg(long, env = "SIDECAR_GRPC_HANDSHAKE_TIMEOUT_SECS", default_value_t = DEFAULT_GRPC_HANDSHAKE_TIMEOUT_SECS)]
    pub grpc_handshake_timeout_secs: u64,
    /// Seconds between HTTP/2 keep-alive PINGs on gRPC connections.
    #[arg(long, env = "SIDECAR_GRPC_KEEPALIVE_SECS", default_value_t = DEFAULT_GRPC_KEEPALIVE_SECS)]
    pub grpc_keepalive_secs: u64,
    /// Seconds a gRPC peer has to answer a PING before its connection is dropped.
    #[arg(long, env = "SIDECAR_GRPC_KEEPALIVE_TIMEOUT_SECS", default_value_t = DEFAULT_GRPC_KEEPALIVE_TIMEOUT_SECS)]
    pub grpc_keepalive_timeout_secs: u64,
    /// After SIGTERM, seconds in-flight requests get before the remaining
    /// connections are dropped; accepted events are committed regardless.
    #[arg(long, env = "SIDECAR_SHUTDOWN_TIMEOUT_SECS", default_value_t = DEFAULT_SHUTDOWN_TIMEOUT_SECS)]
    pub shutdown_timeout_secs: u64,
    /// Answered webhook pushes kept in memory for `sipgate-sidecar
    /// requests`, and as many refused requests apart from them; 0 keeps none.
    #[arg(long, env = "SIDECAR_RECENT_REQUESTS", default_value_t = DEFAULT_RECENT_REQUESTS)]
    pub recent_requests: usize,
}

/// An address (`217.116.118.254`, `::1`) or a network (`10.0.0.0/8`).
fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("'{s}' is not an IP address or CIDR network (e.g. 10.0.0.0/8)"))
}

/// A certificate and key flag pair: both or neither.
fn tls_files(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    flags: &str,
) -> Result<Option<TlsFiles>, String> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(TlsFiles { cert, key })),
        (None, None) => Ok(None),
        _ => Err(format!("{flags} go together: give both or neither")),
    }
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
        let delivery = self.delivery.policy();
        let mut bridges = Vec::new();
        if let Some(cti_url) = self.zammad_cti_url.filter(|s| !s.is_empty()) {
            bridges.push(BridgeConfig {
                target: BridgeTarget::Zammad {
                    cti_url: Secret::new(cti_url),
                    blocked_calls: self.zammad_blocked_calls,
                },
                state: bridge_state_path(&self.database, "zammad"),
                delivery: delivery.clone(),
                start: self.zammad_start,
            });
        }
        if let Some(url) = self.forward_url.filter(|s| !s.is_empty()) {
            bridges.push(BridgeConfig {
                target: BridgeTarget::Webhook {
                    url,
                    secret: secret_setting(
                        self.forward_secret,
                        "--forward-secret (SIDECAR_FORWARD_SECRET, forward-secret)",
                    )?,
                    conventions: WebhookConventions::new(
                        self.forward_format,
                        self.forward_source,
                        self.forward_standard_secret,
                        "--forward-standard-secret (SIDECAR_FORWARD_STANDARD_SECRET, forward-standard-secret)",
                    )?,
                },
                state: bridge_state_path(&self.database, "webhook"),
                delivery,
                start: self.forward_start,
            });
        }
        if let Some(zammad_url) = self.tickets_zammad_url.filter(|s| !s.is_empty()) {
            if self.database.starts_with("postgres") {
                return Err("the missed-call ticket bridge keeps its ledger in a local file: with PostgreSQL replicas run it as its own process (sipgate-sidecar bridge zammad-tickets)".into());
            }
            let group = self
                .tickets_group
                .filter(|g| !g.trim().is_empty())
                .ok_or("--tickets-group names the Zammad group the callback tickets go to")?;
            let api_token = zammad_api_token(
                self.tickets_api_token_file.as_deref(),
                self.tickets_api_token,
                "--tickets-api-token-file",
            )?;
            bridges.push(BridgeConfig {
                target: BridgeTarget::Tickets(TicketsTarget {
                    zammad_url,
                    api_token,
                    group,
                    close_when_reached: self.tickets_close_when_reached,
                    unknown_caller: self.tickets_unknown_caller,
                    include_blocked: self.tickets_include_blocked,
                    include_anonymous: self.tickets_include_anonymous,
                    country_code: self.country_code.clone(),
                }),
                state: bridge_state_path(&self.database, "zammad-tickets"),
                delivery: self.delivery.policy(),
                // What it makes of a call is only worth it for new ones.
                start: NewBridgeStart::Now,
            });
        }
        let config = Config {
            bridges,
            http_addr: self.http_addr,
            grpc_addr: self.grpc_addr,
            metrics_addr,
            database: self.database,
            public_url: self.public_url.filter(|s| !s.is_empty()),
            webhook_token: secret_setting(
                self.webhook_token,
                "--webhook-token (SIDECAR_WEBHOOK_TOKEN, webhook-token)",
            )?,
            basic_auth,
            signature: self.signature,
            signature_key: self.signature_key,
            allow_sources: self.allow_sources,
            trusted_proxies: self.trusted_proxies,
            country_code: self.country_code,
            announcements_dir: self.announcements_dir,
            spool_dir: self.spool_dir,
            reply_deadline: Duration::from_millis(self.reply_deadline_ms),
            body_limit: self.body_limit,
            stale_call_after: Duration::from_secs(self.stale_call_secs),
            retention: days(self.retention_days),
            live_buffer: self.live_buffer,
            max_subscribers: self.max_subscribers,
            http_listener: HttpListenerConfig {
                tls: tls_files(self.tls_cert, self.tls_key, "--tls-cert and --tls-key")?,
                http2: self.http2,
                header_timeout: Duration::from_secs(self.header_timeout_secs),
                idle_timeout: Duration::from_secs(self.idle_timeout_secs),
                max_connections: self.max_connections,
                max_per_source: self.max_connections_per_source,
                max_in_flight: self.max_webhooks_in_flight,
            },
            grpc_listener: GrpcListenerConfig {
                tls: tls_files(
                    self.grpc_tls_cert,
                    self.grpc_tls_key,
                    "--grpc-tls-cert and --grpc-tls-key",
                )?,
                client_ca: self.grpc_client_ca,
                handshake_timeout: Duration::from_secs(self.grpc_handshake_timeout_secs),
                keepalive_interval: Duration::from_secs(self.grpc_keepalive_secs),
                keepalive_timeout: Duration::from_secs(self.grpc_keepalive_timeout_secs),
                max_connections: self.grpc_max_connections,
                max_per_source: self.grpc_max_connections_per_source,
                max_streams_per_connection: self.grpc_max_streams,
            },
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout_secs),
            recent_requests: self.recent_requests,
            ..Config::default()
        };
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }

    #[test]
    fn allow_list_takes_bare_addresses_and_networks() {
        let serve = Serve::try_parse_from([
            "serve",
            "--allow-sources",
            "217.116.118.254,212.9.46.32,10.0.0.0/8",
            "--trusted-proxies",
            "127.0.0.1,::1",
        ])
        .unwrap();
        let shown: Vec<String> = serve
            .args
            .allow_sources
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(
            shown,
            ["217.116.118.254/32", "212.9.46.32/32", "10.0.0.0/8"]
        );
        assert_eq!(serve.args.trusted_proxies[1].to_string(), "::1/128");
        let bad = Serve::try_parse_from(["serve", "--allow-sources", "sipgate"]);
        assert!(bad.is_err());
    }

    #[test]
    fn the_in_process_zammad_bridge_takes_the_blocked_calls_mode() {
        let bridge = |extra: &[&str]| {
            let mut line = vec![
                "serve",
                "--zammad-cti-url",
                "https://zammad.example.com/api/v1/cti/t0k",
            ];
            line.extend_from_slice(extra);
            let config = Serve::try_parse_from(line)
                .unwrap()
                .args
                .into_config()
                .unwrap();
            match &config.bridges[0].target {
                BridgeTarget::Zammad { blocked_calls, .. } => *blocked_calls,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(bridge(&[]), BlockedCalls::Mirrored);
        assert_eq!(
            bridge(&["--zammad-blocked-calls", "skip"]),
            BlockedCalls::Skip
        );
        assert!(Serve::try_parse_from(["serve", "--zammad-blocked-calls", "some"]).is_err());
    }
}
