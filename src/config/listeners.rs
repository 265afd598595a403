//! The two listeners' runtime settings: TLS files, deadlines, caps, and
//! their validation.

use std::{path::PathBuf, time::Duration};

use super::{
    Config, DEFAULT_GRPC_HANDSHAKE_TIMEOUT_SECS, DEFAULT_GRPC_KEEPALIVE_SECS,
    DEFAULT_GRPC_KEEPALIVE_TIMEOUT_SECS, DEFAULT_GRPC_MAX_CONNECTIONS,
    DEFAULT_GRPC_MAX_CONNECTIONS_PER_SOURCE, DEFAULT_GRPC_MAX_STREAMS, DEFAULT_HEADER_TIMEOUT_SECS,
    DEFAULT_IDLE_TIMEOUT_SECS, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_SOURCE,
    DEFAULT_MAX_WEBHOOKS_IN_FLIGHT,
};

/// A certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How the public webhook listener treats its connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpListenerConfig {
    /// Serve HTTPS with this certificate; plain HTTP when `None`.
    pub tls: Option<TlsFiles>,
    /// Also speak HTTP/2 (sipgate speaks HTTP/1.1 only).
    pub http2: bool,
    /// Request header (and TLS handshake) deadline; also how long an idle
    /// keep-alive connection waits for its next request.
    pub header_timeout: Duration,
    /// No bytes either way for this long closes the connection.
    pub idle_timeout: Duration,
    /// Connections beyond this are closed at once (and counted).
    pub max_connections: usize,
    /// Connections one address may hold at once (trusted proxies aside).
    pub max_per_source: usize,
    /// Webhooks handled at once; more are answered 503.
    pub max_in_flight: usize,
}

impl Default for HttpListenerConfig {
    fn default() -> Self {
        HttpListenerConfig {
            tls: None,
            http2: false,
            header_timeout: Duration::from_secs(DEFAULT_HEADER_TIMEOUT_SECS),
            idle_timeout: Duration::from_secs(DEFAULT_IDLE_TIMEOUT_SECS),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_per_source: DEFAULT_MAX_CONNECTIONS_PER_SOURCE,
            max_in_flight: DEFAULT_MAX_WEBHOOKS_IN_FLIGHT,
        }
    }
}

/// How the internal gRPC listener treats its connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcListenerConfig {
    /// Serve gRPC over TLS with this certificate; plaintext HTTP/2 when `None`.
    pub tls: Option<TlsFiles>,
    /// Require a client certificate signed by one of these CAs (PEM); needs `tls`.
    pub client_ca: Option<PathBuf>,
    /// TLS handshake and HTTP/2 connection preface must complete within this.
    pub handshake_timeout: Duration,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// Connections beyond this are closed at once (and counted).
    pub max_connections: usize,
    /// Connections one address may hold at once.
    pub max_per_source: usize,
    /// Concurrent calls and streams on one connection.
    pub max_streams_per_connection: u32,
}

impl Default for GrpcListenerConfig {
    fn default() -> Self {
        GrpcListenerConfig {
            tls: None,
            client_ca: None,
            handshake_timeout: Duration::from_secs(DEFAULT_GRPC_HANDSHAKE_TIMEOUT_SECS),
            keepalive_interval: Duration::from_secs(DEFAULT_GRPC_KEEPALIVE_SECS),
            keepalive_timeout: Duration::from_secs(DEFAULT_GRPC_KEEPALIVE_TIMEOUT_SECS),
            max_connections: DEFAULT_GRPC_MAX_CONNECTIONS,
            max_per_source: DEFAULT_GRPC_MAX_CONNECTIONS_PER_SOURCE,
            max_streams_per_connection: DEFAULT_GRPC_MAX_STREAMS,
        }
    }
}

impl Config {
    pub(super) fn validate_listeners(&self) -> Result<(), String> {
        let http = &self.http_listener;
        let grpc = &self.grpc_listener;
        for (flag, value) in [
            ("--header-timeout-secs", http.header_timeout),
            ("--idle-timeout-secs", http.idle_timeout),
            ("--grpc-handshake-timeout-secs", grpc.handshake_timeout),
            ("--grpc-keepalive-secs", grpc.keepalive_interval),
            ("--grpc-keepalive-timeout-secs", grpc.keepalive_timeout),
        ] {
            super::bounded_secs(flag, value, false)?;
        }
        for (flag, value) in [
            ("--max-connections", http.max_connections),
            ("--max-connections-per-source", http.max_per_source),
            ("--max-webhooks-in-flight", http.max_in_flight),
            ("--grpc-max-connections", grpc.max_connections),
            ("--grpc-max-connections-per-source", grpc.max_per_source),
        ] {
            super::bounded(flag, value, 1, super::MAX_CONNECTIONS)?;
        }
        super::bounded(
            "--grpc-max-streams",
            grpc.max_streams_per_connection as usize,
            1,
            100_000,
        )?;
        if http.header_timeout.is_zero() || http.idle_timeout.is_zero() {
            return Err(
                "--header-timeout-secs and --idle-timeout-secs must be greater than 0".into(),
            );
        }
        if http.max_connections == 0 || http.max_in_flight == 0 || http.max_per_source == 0 {
            return Err("--max-connections, --max-connections-per-source and \
                 --max-webhooks-in-flight must be greater than 0"
                .into());
        }
        if grpc.handshake_timeout.is_zero()
            || grpc.keepalive_interval.is_zero()
            || grpc.keepalive_timeout.is_zero()
        {
            return Err("--grpc-handshake-timeout-secs, --grpc-keepalive-secs and \
                 --grpc-keepalive-timeout-secs must be greater than 0"
                .into());
        }
        if grpc.max_connections == 0
            || grpc.max_streams_per_connection == 0
            || grpc.max_per_source == 0
        {
            return Err(
                "--grpc-max-connections, --grpc-max-connections-per-source and \
                 --grpc-max-streams must be greater than 0"
                    .into(),
            );
        }
        if grpc.client_ca.is_some() && grpc.tls.is_none() {
            return Err(
                "--grpc-client-ca needs TLS on the gRPC listener (--grpc-tls-cert and --grpc-tls-key)"
                    .into(),
            );
        }
        Ok(())
    }
}
