//! Talking to a running sidecar over gRPC: connect with the bearer token,
//! turn a failed call into a sentence for a person, and follow the event
//! stream across dropped connections ([`follow_events`]), resuming after the
//! last sequence number seen. `watch` and the bridges' gRPC source share it.
//! An `https://` server is reached over TLS, trusting `--ca-cert` (or the
//! system's roots), with an optional client certificate.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use futures::{StreamExt, stream::BoxStream};
use tonic::{
    Request, Status, Streaming,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{self, Certificate, Channel, ClientTlsConfig, Identity},
};

use crate::{
    proto::{self, call_events_client::CallEventsClient},
    tls,
};

/// Where the server is and how to prove who we are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// gRPC address, e.g. `http://127.0.0.1:50051`.
    pub server: String,
    /// Bearer token, sent as `authorization: Bearer <token>`.
    pub token: Option<String>,
    /// CA (PEM) trusted for an `https://` server instead of the system's roots.
    pub ca_cert: Option<PathBuf>,
    /// Client certificate and key (PEM), for a server that requires one.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl Endpoint {
    /// A plaintext endpoint with an optional token (tests, local use).
    pub fn plain(server: impl Into<String>, token: Option<String>) -> Self {
        Endpoint {
            server: server.into(),
            token,
            ca_cert: None,
            client_cert: None,
            client_key: None,
        }
    }

    /// The TLS settings for an `https://` server; `None` for `http://`.
    fn tls(&self) -> anyhow::Result<Option<ClientTlsConfig>> {
        if !self.server.starts_with("https://") {
            if self.client_cert.is_some() {
                anyhow::bail!(
                    "--client-cert needs TLS: use --server https://... (it is {})",
                    self.server
                );
            }
            // --ca-cert may be meant for a bridge's receiver: not an error here.
            return Ok(None);
        }
        let config = match &self.ca_cert {
            Some(path) => {
                tls::read_certs(path, "--ca-cert")?;
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(tls::read_pem(path, "--ca-cert")?))
            }
            None => ClientTlsConfig::new().with_native_roots(),
        };
        let config = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                tls::read_certs(cert, "--client-cert")?;
                tls::read_key(key, "--client-key")?;
                config.identity(Identity::from_pem(
                    tls::read_pem(cert, "--client-cert")?,
                    tls::read_pem(key, "--client-key")?,
                ))
            }
            (None, None) => config,
            _ => anyhow::bail!("--client-cert and --client-key go together: give both or neither"),
        };
        Ok(Some(config))
    }
}

/// Adds the bearer token and a client description to every call.
#[derive(Clone)]
pub struct ClientAuth {
    authorization: Option<MetadataValue<Ascii>>,
    client: MetadataValue<Ascii>,
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

/// A channel that authenticates every call.
pub type Authed = InterceptedService<Channel, ClientAuth>;

/// What kind of failure ended a client command; each kind has its exit code
/// (README, "Client commands").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// A wrong flag or setting: exit code 2 (as clap's usage errors).
    Usage,
    /// The call, settings entry or audit entry does not exist: 3.
    NotFound,
    /// It exists already, or another change came first, or a precondition
    /// (such as --force) is missing: 4.
    Conflict,
    /// The server cannot be reached (refused, DNS, TLS, unavailable): 5.
    Unreachable,
    /// Anything else: 1.
    Other,
}

impl FailureKind {
    /// Every kind, in the order of their exit codes.
    pub const ALL: [FailureKind; 5] = [
        FailureKind::Other,
        FailureKind::Usage,
        FailureKind::NotFound,
        FailureKind::Conflict,
        FailureKind::Unreachable,
    ];

    /// What the exit code means, for the manual page.
    pub fn meaning(self) -> &'static str {
        match self {
            FailureKind::Other => {
                "Any other failure (invalid input the server refused, not authorised, ...)."
            }
            FailureKind::Usage => {
                "Usage: a wrong flag or argument, a bad config file, an invalid configuration."
            }
            FailureKind::NotFound => "Not found: no such call, routing rule or audit entry.",
            FailureKind::Conflict => {
                "Conflict: already exists, another change came first, or it needs --force."
            }
            FailureKind::Unreachable => {
                "The server cannot be reached (connection refused, DNS, TLS, unavailable)."
            }
        }
    }

    pub fn exit_code(self) -> u8 {
        match self {
            FailureKind::Other => 1,
            FailureKind::Usage => 2,
            FailureKind::NotFound => 3,
            FailureKind::Conflict => 4,
            FailureKind::Unreachable => 5,
        }
    }

    /// The kind of a failed gRPC call.
    pub fn of_status(code: tonic::Code) -> Self {
        match code {
            tonic::Code::NotFound => FailureKind::NotFound,
            tonic::Code::AlreadyExists | tonic::Code::Aborted | tonic::Code::FailedPrecondition => {
                FailureKind::Conflict
            }
            tonic::Code::Unavailable => FailureKind::Unreachable,
            _ => FailureKind::Other,
        }
    }
}

/// A failure with its kind, somewhere in an [`anyhow::Error`]'s chain.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
        }
    }
}

/// The exit code for `error`: the kind of the first [`Failure`] (or gRPC
/// status) in its chain, else 1.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    let kind = error.downcast_ref::<Failure>().map(|f| f.kind).or_else(|| {
        error.chain().find_map(|cause| {
            cause.downcast_ref::<Failure>().map(|f| f.kind).or_else(|| {
                cause
                    .downcast_ref::<Status>()
                    .map(|s| FailureKind::of_status(s.code()))
            })
        })
    });
    kind.unwrap_or(FailureKind::Other).exit_code()
}

/// Connects to `endpoint` (5 s timeout); errors say what to check.
pub async fn connect(endpoint: &Endpoint) -> anyhow::Result<Authed> {
    let server = &endpoint.server;
    let mut target = transport::Endpoint::from_shared(server.clone())
        .with_context(|| {
            Failure::new(
                FailureKind::Usage,
                format!("--server '{server}' is not a URL like http://127.0.0.1:50051"),
            )
        })?
        .connect_timeout(Duration::from_secs(5));
    if let Some(tls) = endpoint.tls()? {
        target = target
            .tls_config(tls)
            .with_context(|| format!("cannot set up TLS for {server}"))?;
    }
    let channel = target.connect().await.with_context(|| {
        Failure::new(
            FailureKind::Unreachable,
            format!(
                "cannot reach the sidecar at {server} (is `sipgate-sidecar serve` running? set --server)"
            ),
        )
    })?;
    let authorization = match &endpoint.token {
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

/// What answers at an address, read from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// A TLS record (an alert): the port wants `https://`.
    Tls,
    /// `HTTP/1.x ...`: a web server, such as the webhook listener.
    Http1,
    /// An HTTP/2 frame (SETTINGS or GOAWAY): plaintext gRPC.
    Http2,
}

/// Asks `host:port` with a plaintext HTTP/1 request and tells from the
/// first bytes of the answer what listens there; `None` when nothing
/// answers within 2 s or the answer says nothing.
pub async fn sniff(host: &str, port: u16) -> Option<Listener> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let wait = Duration::from_secs(2);
    let mut stream = tokio::time::timeout(wait, tokio::net::TcpStream::connect((host, port)))
        .await
        .ok()?
        .ok()?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: sidecar\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut first = [0u8; 16];
    let n = tokio::time::timeout(wait, stream.read(&mut first))
        .await
        .ok()?
        .ok()?;
    let first = &first[..n];
    if first.len() >= 2 && first[0] == 0x15 && first[1] == 0x03 {
        Some(Listener::Tls)
    } else if first.starts_with(b"HTTP/1.") {
        Some(Listener::Http1)
    } else if first.len() >= 4 && matches!(first[3], 0x04 | 0x07) {
        Some(Listener::Http2)
    } else {
        None
    }
}

/// The likely cause of a failed call to `server` when the failure looks
/// like the wrong scheme or the wrong port (a protocol error, a TLS record
/// where none was expected, a connection closed at once): what answers
/// there, and what to pass instead. `None` for other failures.
pub async fn wrong_address_hint(server: &str, error: &anyhow::Error) -> Option<String> {
    let text = format!("{error:#}").to_ascii_lowercase();
    let protocol_trouble = [
        "h2 protocol error",
        "frame with invalid size",
        "invalidcontenttype",
        "corrupt message",
        "broken pipe",
        "connection reset",
        "connection closed",
    ]
    .iter()
    .any(|t| text.contains(t));
    if !protocol_trouble {
        return None;
    }
    let url = reqwest::Url::parse(server).ok()?;
    let host = url
        .host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = url.port_or_known_default()?;
    let tls = url.scheme() == "https";
    let at = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    match (tls, sniff(host, port).await?) {
        (false, Listener::Tls) => Some(format!(
            "{at} speaks TLS: use --server https://{at} (and --ca-cert when its certificate comes from a private CA)"
        )),
        (true, Listener::Http2) => Some(format!(
            "{at} speaks plaintext gRPC, not TLS: use --server http://{at}"
        )),
        (_, Listener::Http1) => Some(format!(
            "{at} answers plain HTTP/1.1, not gRPC: that looks like the webhook listener (--http-addr); \
             the gRPC API listens at serve's --grpc-addr (127.0.0.1:50051 by default)"
        )),
        _ => None,
    }
}

/// A gRPC error as a sentence for the terminal.
pub fn status_error(status: Status) -> anyhow::Error {
    let what = match status.code() {
        tonic::Code::InvalidArgument => "invalid input",
        tonic::Code::NotFound => "not found",
        tonic::Code::AlreadyExists => "already exists",
        tonic::Code::Unauthenticated => "not authorised (check --grpc-token)",
        tonic::Code::Unavailable => "server unavailable",
        tonic::Code::OutOfRange => "out of range",
        _ => "request failed",
    };
    // A transport failure (a TLS alert, say) says why only in its sources.
    let mut message = status.message().to_string();
    let mut source = std::error::Error::source(&status);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !message.ends_with(&cause_text) {
            message = format!("{message}: {cause_text}");
        }
        source = cause.source();
    }
    let lower = message.to_ascii_lowercase();
    // How hyper and tonic word a connection the server closed right after
    // accepting it (which of them depends on where the handshake was).
    let closed_at_once = [
        "broken pipe",
        "connection reset",
        "connection closed",
        "connection was not ready",
        "operation was canceled",
    ];
    let hint = if closed_at_once.iter().any(|closed| lower.contains(closed)) {
        // What a connection closed at accept looks like from here.
        " (the server closed the connection at once: its gRPC connection limit may be \
         reached, --grpc-max-connections or --grpc-max-connections-per-source; see \
         sidecar_http_connections_rejected_total{listener=\"grpc\"} and its log)"
    } else {
        ""
    };
    anyhow::Error::new(Failure::new(
        FailureKind::of_status(status.code()),
        format!("{what}: {message}{hint}"),
    ))
}

/// The server refused to resume the event stream where asked
/// (`OUT_OF_RANGE`: the resume point is beyond the newest event, e.g. after
/// the database was restored from a backup). Retrying cannot help.
#[derive(Debug, thiserror::Error)]
#[error("the server cannot resume the event stream there: {0}")]
pub struct ResumeRefused(pub String);

/// A failed call of the event stream: [`ResumeRefused`] for `OUT_OF_RANGE`.
fn stream_error(status: Status) -> anyhow::Error {
    if status.code() == tonic::Code::OutOfRange {
        anyhow::Error::new(ResumeRefused(status.message().to_string()))
    } else {
        status_error(status)
    }
}

/// Retry delays: `first`, doubling per attempt, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The delay before retry number `attempt` (1 = the first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.first.saturating_mul(factor).min(self.max)
    }
}

/// How [`follow_events`] reconnects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconnect {
    pub backoff: Backoff,
    /// End with an error after this many failures in a row (no event in
    /// between); `None` retries for ever.
    pub give_up_after: Option<u32>,
    /// Retry when the very first subscription fails too; `false` ends with
    /// that failure at once (a wrong address is reported, not retried).
    pub retry_first: bool,
}

/// What [`follow_events`] yields.
#[derive(Debug)]
pub enum Followed {
    Event(Box<proto::CallEvent>),
    /// The connection failed or dropped; it is retried after `retry_in`
    /// (the wait starts when the stream is next polled).
    Interrupted {
        error: anyhow::Error,
        retry_in: Duration,
    },
}

struct Follow {
    endpoint: Endpoint,
    after_seq: Option<u64>,
    reconnect: Reconnect,
    failures: u32,
    stream: Option<Streaming<proto::CallEvent>>,
    wait: Option<Duration>,
    done: bool,
    /// A subscription succeeded once.
    subscribed: bool,
}

async fn open(
    endpoint: &Endpoint,
    after_seq: Option<u64>,
) -> anyhow::Result<Streaming<proto::CallEvent>> {
    let mut client = CallEventsClient::new(connect(endpoint).await?);
    let stream = client
        .subscribe(proto::SubscribeRequest {
            after_seq,
            ..Default::default()
        })
        .await
        .map_err(stream_error)?
        .into_inner();
    Ok(stream)
}

impl Follow {
    async fn next(&mut self) -> Option<anyhow::Result<Followed>> {
        if self.done {
            return None;
        }
        if let Some(delay) = self.wait.take() {
            tokio::time::sleep(delay).await;
        }
        let stream = match &mut self.stream {
            Some(stream) => stream,
            None => match open(&self.endpoint, self.after_seq).await {
                Ok(stream) => {
                    self.subscribed = true;
                    self.stream.insert(stream)
                }
                Err(e) => return Some(self.interrupted(e)),
            },
        };
        let error = match stream.next().await {
            Some(Ok(event)) => {
                self.after_seq = Some(event.seq);
                self.failures = 0;
                return Some(Ok(Followed::Event(Box::new(event))));
            }
            Some(Err(status)) => stream_error(status),
            None => anyhow::anyhow!("the server ended the stream"),
        };
        self.stream = None;
        Some(self.interrupted(error))
    }

    fn interrupted(&mut self, error: anyhow::Error) -> anyhow::Result<Followed> {
        if error.is::<ResumeRefused>() || (!self.subscribed && !self.reconnect.retry_first) {
            self.done = true;
            return Err(error);
        }
        self.failures += 1;
        if let Some(limit) = self.reconnect.give_up_after
            && self.failures > limit
        {
            self.done = true;
            return Err(error.context(format!("giving up after {limit} reconnect attempts")));
        }
        let retry_in = self.reconnect.backoff.delay(self.failures);
        self.wait = Some(retry_in);
        Ok(Followed::Interrupted { error, retry_in })
    }
}

/// Every event with seq > `after_seq` (`None`: from now on), across
/// reconnects: after a failure it waits per `reconnect` and subscribes again
/// after the last event it yielded. Ends only with the error that made it
/// give up, or with [`ResumeRefused`] at once (reconnecting cannot help).
pub fn follow_events(
    endpoint: Endpoint,
    after_seq: Option<u64>,
    reconnect: Reconnect,
) -> BoxStream<'static, anyhow::Result<Followed>> {
    let state = Follow {
        endpoint,
        after_seq,
        reconnect,
        failures: 0,
        stream: None,
        wait: None,
        done: false,
        subscribed: false,
    };
    futures::stream::unfold(state, |mut state| async move {
        let item = state.next().await?;
        Some((item, state))
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let backoff = Backoff {
            first: Duration::from_millis(500),
            max: Duration::from_millis(30_000),
        };
        assert_eq!(backoff.delay(1), Duration::from_millis(500));
        assert_eq!(backoff.delay(2), Duration::from_millis(1000));
        assert_eq!(backoff.delay(4), Duration::from_millis(4000));
        assert_eq!(backoff.delay(30), Duration::from_millis(30_000));
    }

    #[tokio::test]
    async fn gives_up_after_the_limit_and_says_so() {
        let endpoint = Endpoint::plain("http://127.0.0.1:1", None);
        let reconnect = Reconnect {
            backoff: Backoff {
                first: Duration::from_millis(1),
                max: Duration::from_millis(2),
            },
            give_up_after: Some(2),
            retry_first: true,
        };
        let items: Vec<_> = follow_events(endpoint, None, reconnect).collect().await;
        assert_eq!(items.len(), 3, "two retries, then the error");
        let Followed::Interrupted { error, retry_in } = items[1].as_ref().unwrap() else {
            panic!("an interruption");
        };
        assert!(format!("{error:#}").contains("cannot reach the sidecar"));
        assert_eq!(*retry_in, Duration::from_millis(2));
        let error = format!("{:#}", items[2].as_ref().unwrap_err());
        assert!(
            error.starts_with("giving up after 2 reconnect attempts: cannot reach"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_first_failure_ends_at_once_without_retry_first() {
        let endpoint = Endpoint::plain("http://127.0.0.1:1", None);
        let reconnect = Reconnect {
            backoff: Backoff {
                first: Duration::from_millis(1),
                max: Duration::from_millis(2),
            },
            give_up_after: None,
            retry_first: false,
        };
        let items: Vec<_> = follow_events(endpoint, None, reconnect).collect().await;
        assert_eq!(items.len(), 1, "no retry");
        let error = items[0].as_ref().unwrap_err();
        assert!(format!("{error:#}").contains("127.0.0.1:1"), "{error:#}");
        assert_eq!(exit_code(error), 5);
    }

    #[test]
    fn exit_codes_follow_the_failure() {
        let of = |code| exit_code(&status_error(Status::new(code, "x")));
        assert_eq!(of(tonic::Code::NotFound), 3);
        assert_eq!(of(tonic::Code::AlreadyExists), 4);
        assert_eq!(of(tonic::Code::Aborted), 4);
        assert_eq!(of(tonic::Code::FailedPrecondition), 4);
        assert_eq!(of(tonic::Code::Unavailable), 5);
        assert_eq!(of(tonic::Code::InvalidArgument), 1);
        let wrapped = status_error(Status::not_found("x")).context("while listing");
        assert_eq!(exit_code(&wrapped), 3);
        assert_eq!(exit_code(&anyhow::anyhow!("plain")), 1);
    }

    #[tokio::test]
    async fn tls_flags_are_checked_before_connecting() {
        let mut endpoint = Endpoint::plain("http://127.0.0.1:1", None);
        endpoint.client_cert = Some("client.pem".into());
        let error = format!("{:#}", connect(&endpoint).await.unwrap_err());
        assert!(error.contains("--client-cert needs TLS"), "{error}");
        endpoint.server = "https://127.0.0.1:1".into();
        let error = format!("{:#}", connect(&endpoint).await.unwrap_err());
        assert!(error.contains("go together"), "{error}");
        endpoint.client_cert = None;
        endpoint.ca_cert = Some("/nonexistent/ca.pem".into());
        let error = format!("{:#}", connect(&endpoint).await.unwrap_err());
        assert!(
            error.contains("--ca-cert") && error.contains("/nonexistent/ca.pem"),
            "{error}"
        );
    }
}
