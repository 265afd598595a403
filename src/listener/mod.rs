//! Accepting and serving connections on both listeners, so that neither a
//! stranger on the network nor a shutdown can hold them hostage.
//!
//! - A cap on open connections per listener: the one over it is closed at
//!   once, counted and logged (rate-limited); it never costs a crash.
//! - Accept errors (`EMFILE`: out of file descriptors) back off instead of
//!   spinning, logged once per streak.
//! - Deadlines: the TLS handshake, the first bytes of a connection, the
//!   request header (hyper's header-read timeout), idle connections.
//! - Shutdown: stop accepting (the socket closes), let in-flight requests
//!   finish, and at the deadline drop what is left ([`Conn`] fails every read
//!   and write once the deadline token fires, which ends tonic's connections
//!   too).
//!
//! [`serve_http`] serves the webhook router with hyper-util's connection
//! builder (HTTP/1.1 only unless `--http2`); [`grpc_incoming`] hands accepted
//! connections to tonic.

mod conn;
mod serve;
mod sources;

use std::{
    future::Future,
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tokio_rustls::TlsAcceptor;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::transport::server::TcpConnectInfo;

pub use conn::Conn;
pub use serve::{grpc_incoming, serve_http};

use crate::{
    config::{GrpcListenerConfig, HttpListenerConfig},
    telemetry::names,
    tls,
};
use conn::{FirstBytes, Idle, Io, Slot};
use sources::{Refusal, Sources};

/// Length of the HTTP/2 connection preface a gRPC client sends first.
const H2_PREFACE_LEN: usize = 24;
/// Bytes a webhook client must send within the header timeout (shorter than
/// any request line, so only a silent or trickling client is affected).
const HTTP_FIRST_BYTES: usize = 16;
/// TCP keep-alive probes find peers that vanished without a FIN.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// Repeated warnings (cap reached, accept failing) at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// Accept-error backoff: first delay and cap.
const ACCEPT_BACKOFF_FIRST: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Lets a repeated warning through at most once per period and counts what
/// it held back, so a flood cannot flood the log.
pub struct Throttle {
    every: Duration,
    start: Instant,
    /// Milliseconds since `start` of the last line let through, plus one (0: never).
    last: AtomicU64,
    held: AtomicU64,
}

impl Throttle {
    pub fn new(every: Duration) -> Self {
        Throttle {
            every,
            start: Instant::now(),
            last: AtomicU64::new(0),
            held: AtomicU64::new(0),
        }
    }

    /// `Some(held back since the last line)` when a line may be logged now.
    pub fn ready(&self) -> Option<u64> {
        let now = self.start.elapsed().as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || now >= last + self.every.as_millis() as u64;
        if due
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.held.swap(0, Ordering::Relaxed));
        }
        self.held.fetch_add(1, Ordering::Relaxed);
        None
    }
}

fn tls_warnings(files: Option<&crate::config::TlsFiles>, flags: (&str, &str)) -> Vec<String> {
    files.map_or_else(Vec::new, |files| {
        crate::checks::tls_warnings(files, flags, std::time::SystemTime::now())
    })
}

/// Re-reads a listener's certificate and key: connections accepted after a
/// successful reload get the new ones, open connections keep theirs. A
/// reload that fails (a missing file, a key that does not match) changes
/// nothing.
#[derive(Clone)]
pub struct TlsReload {
    listener: &'static str,
    current: Arc<ArcSwap<rustls::ServerConfig>>,
    rebuild: Arc<dyn Fn() -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> + Send + Sync>,
    /// What the files in use deserve a warning for (an expiring certificate).
    warnings: Arc<dyn Fn() -> Vec<String> + Send + Sync>,
}

impl TlsReload {
    pub fn listener(&self) -> &'static str {
        self.listener
    }

    pub fn reload(&self) -> anyhow::Result<()> {
        if let Some(config) = (self.rebuild)()? {
            self.current.store(config);
        }
        for warning in (self.warnings)() {
            tracing::warn!(listener = self.listener, "{warning}");
        }
        Ok(())
    }
}

/// What a listener has seen, for tests and `Running`; the same numbers go
/// to the metrics (label `listener`).
pub struct ListenerStats {
    name: &'static str,
    open: AtomicUsize,
    rejected: AtomicU64,
    forbidden: AtomicU64,
}

impl ListenerStats {
    fn new(name: &'static str) -> Self {
        ListenerStats {
            name,
            open: AtomicUsize::new(0),
            rejected: AtomicU64::new(0),
            forbidden: AtomicU64::new(0),
        }
    }

    /// Connections open now (TLS handshakes included).
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections closed at once because the cap (of the listener or of
    /// the address) was reached.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Connections closed at accept because their address is not allowed.
    pub fn forbidden(&self) -> u64 {
        self.forbidden.load(Ordering::Relaxed)
    }
}

/// Deadlines of the connections of one listener.
#[derive(Debug, Clone)]
struct Limits {
    max_connections: usize,
    handshake_timeout: Duration,
    /// The client must send this many bytes within this long.
    first_bytes: (usize, Duration),
    /// No bytes either way for this long closes the connection.
    idle_timeout: Option<Duration>,
}

/// A bound socket with its TLS configuration and limits, not accepting yet.
pub struct Listener {
    tcp: TcpListener,
    /// The TLS configuration new connections get; replaced on reload.
    tls: Option<Arc<ArcSwap<rustls::ServerConfig>>>,
    reload: Option<TlsReload>,
    limits: Limits,
    slots: Arc<Semaphore>,
    sources: Arc<Sources>,
    stats: Arc<ListenerStats>,
    rejections: Arc<Throttle>,
}

impl Listener {
    /// The webhook listener's TLS configuration (`None`: plain HTTP).
    pub fn webhook_tls(
        config: &HttpListenerConfig,
    ) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
        config
            .tls
            .as_ref()
            .map(|files| {
                tls::server_config(
                    files,
                    ("--tls-cert", "--tls-key"),
                    None,
                    if config.http2 {
                        tls::ALPN_HTTP2_AND_1
                    } else {
                        tls::ALPN_HTTP1
                    },
                )
            })
            .transpose()
    }

    /// The gRPC listener's TLS configuration (`None`: plaintext HTTP/2).
    pub fn grpc_tls(
        config: &GrpcListenerConfig,
    ) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
        config
            .tls
            .as_ref()
            .map(|files| {
                tls::server_config(
                    files,
                    ("--grpc-tls-cert", "--grpc-tls-key"),
                    config
                        .client_ca
                        .as_deref()
                        .map(|path| (path, "--grpc-client-ca")),
                    tls::ALPN_H2,
                )
            })
            .transpose()
    }

    /// The webhook listener: TLS per `config`, ALPN per `--http2`.
    pub fn webhook(tcp: TcpListener, config: &HttpListenerConfig) -> anyhow::Result<Self> {
        let tls = Self::webhook_tls(config)?;
        let rebuild = {
            let config = config.clone();
            move || Self::webhook_tls(&config)
        };
        let warnings = {
            let files = config.tls.clone();
            move || tls_warnings(files.as_ref(), ("--tls-cert", "--tls-key"))
        };
        let limits = Limits {
            max_connections: config.max_connections,
            handshake_timeout: config.header_timeout,
            first_bytes: (HTTP_FIRST_BYTES, config.header_timeout),
            idle_timeout: Some(config.idle_timeout),
        };
        Ok(Self::new(
            "webhook",
            tcp,
            tls,
            limits,
            Sources::new(config.max_per_source),
        )
        .reloading_with(rebuild, warnings))
    }

    /// The gRPC listener: TLS (and client certificates) per `config`.
    pub fn grpc(tcp: TcpListener, config: &GrpcListenerConfig) -> anyhow::Result<Self> {
        let tls = Self::grpc_tls(config)?;
        let rebuild = {
            let config = config.clone();
            move || Self::grpc_tls(&config)
        };
        let warnings = {
            let files = config.tls.clone();
            move || tls_warnings(files.as_ref(), ("--grpc-tls-cert", "--grpc-tls-key"))
        };
        // Idle gRPC connections are fine (a subscriber waiting for calls);
        // HTTP/2 keep-alive PINGs find the dead ones.
        let limits = Limits {
            max_connections: config.max_connections,
            handshake_timeout: config.handshake_timeout,
            first_bytes: (H2_PREFACE_LEN, config.handshake_timeout),
            idle_timeout: None,
        };
        Ok(Self::new(
            "grpc",
            tcp,
            tls,
            limits,
            Sources::new(config.max_per_source),
        )
        .reloading_with(rebuild, warnings))
    }

    fn reloading_with(
        mut self,
        rebuild: impl Fn() -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> + Send + Sync + 'static,
        warnings: impl Fn() -> Vec<String> + Send + Sync + 'static,
    ) -> Self {
        self.reload = self.tls.clone().map(|current| TlsReload {
            listener: self.stats.name,
            current,
            rebuild: Arc::new(rebuild),
            warnings: Arc::new(warnings),
        });
        self
    }

    /// What re-reads this listener's certificate and key (`None` without TLS).
    pub fn tls_reload(&self) -> Option<TlsReload> {
        self.reload.clone()
    }

    /// Closes connections from addresses outside `allow` (unless empty) at
    /// accept; `trusted` proxies are always admitted, and not capped per
    /// address.
    pub fn with_allow_list(mut self, allow: &[ipnet::IpNet], trusted: &[ipnet::IpNet]) -> Self {
        let per_source = self.sources.per_source();
        self.sources = Arc::new(Sources::new(per_source).with_allow_list(allow, trusted));
        self
    }

    fn new(
        name: &'static str,
        tcp: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        limits: Limits,
        sources: Sources,
    ) -> Self {
        Listener {
            tcp,
            tls: tls.map(|config| Arc::new(ArcSwap::new(config))),
            reload: None,
            sources: Arc::new(sources),
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            limits,
            stats: Arc::new(ListenerStats::new(name)),
            rejections: Arc::new(Throttle::new(WARN_EVERY)),
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    pub fn stats(&self) -> Arc<ListenerStats> {
        self.stats.clone()
    }

    /// Accepts until `shutdown`, then closes the socket. Each connection
    /// gets a slot (or is closed at once), its handshake, and then `serve`,
    /// in a task on `tracker`.
    async fn accept_loop<F, Fut>(
        self,
        shutdown: CancellationToken,
        deadline: CancellationToken,
        tracker: TaskTracker,
        serve: F,
    ) where
        F: Fn(Conn) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let name = self.stats.name;
        let accept_errors = Throttle::new(WARN_EVERY);
        let mut failures: u32 = 0;
        loop {
            let accepted = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                accepted = self.tcp.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    failures += 1;
                    metrics::counter!(names::ACCEPT_ERRORS, "listener" => name).increment(1);
                    let delay = ACCEPT_BACKOFF_FIRST
                        .saturating_mul(1 << (failures - 1).min(10))
                        .min(ACCEPT_BACKOFF_MAX);
                    if let Some(held) = accept_errors.ready() {
                        tracing::warn!(
                            listener = name,
                            error = %e,
                            failures,
                            more_since_last_line = held,
                            "cannot accept connections; retrying with backoff (out of file descriptors? \
                             raise LimitNOFILE / ulimit -n, or lower the connection cap)"
                        );
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(delay) => continue,
                    }
                }
            };
            if failures > 0 {
                tracing::info!(listener = name, failures, "accepting connections again");
                failures = 0;
            }
            let source = match self.sources.admit(peer.ip()) {
                Ok(source) => source,
                Err(refusal) => {
                    drop(tcp);
                    self.refused(refusal, peer);
                    continue;
                }
            };
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                drop(tcp);
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(names::CONNECTIONS_REJECTED, "listener" => name).increment(1);
                if let Some(held) = self.rejections.ready() {
                    tracing::warn!(
                        listener = name,
                        limit = self.limits.max_connections,
                        %peer,
                        more_since_last_line = held,
                        "connection limit reached; closing new connections until some end"
                    );
                }
                continue;
            };
            let slot = Slot::new(permit, source, self.stats.clone());
            let _ = tcp.set_nodelay(true);
            let _ = socket2::SockRef::from(&tcp)
                .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE));
            let tls = self
                .tls
                .as_ref()
                .map(|config| TlsAcceptor::from(config.load_full()));
            let limits = self.limits.clone();
            let deadline = deadline.clone();
            let serve = serve.clone();
            tracker.spawn(async move {
                let handshake = handshake(tcp, peer, tls, &limits, slot, deadline.clone());
                let conn = tokio::select! {
                    conn = handshake => conn,
                    _ = deadline.cancelled() => return,
                };
                match conn {
                    Ok(conn) => serve(conn).await,
                    Err(e) => {
                        metrics::counter!(names::TLS_HANDSHAKE_FAILURES, "listener" => name)
                            .increment(1);
                        tracing::debug!(listener = name, %peer, error = %e, "TLS handshake failed");
                    }
                }
            });
        }
        // Dropping the socket here: new connections are refused from now on.
    }
}

impl Listener {
    /// Counts and logs (rate-limited) a connection closed at accept.
    fn refused(&self, refusal: Refusal, peer: SocketAddr) {
        let name = self.stats.name;
        match refusal {
            Refusal::Forbidden => {
                self.stats.forbidden.fetch_add(1, Ordering::Relaxed);
                crate::telemetry::WebhookOutcome::ForbiddenSource.count();
                if let Some(held) = self.rejections.ready() {
                    tracing::warn!(
                        listener = name,
                        %peer,
                        more_since_last_line = held,
                        "connection from an address outside --allow-sources closed at accept"
                    );
                }
            }
            Refusal::PerSource => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(names::CONNECTIONS_REJECTED, "listener" => name).increment(1);
                if let Some(held) = self.rejections.ready() {
                    tracing::warn!(
                        listener = name,
                        limit = self.sources.per_source(),
                        %peer,
                        more_since_last_line = held,
                        "this address holds its share of connections; closing its new ones until some end"
                    );
                }
            }
        }
    }
}

fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// TLS (bounded by the handshake timeout) when configured, then the
/// connection with its deadlines.
async fn handshake(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    limits: &Limits,
    slot: Slot,
    deadline: CancellationToken,
) -> io::Result<Conn> {
    let info = TcpConnectInfo {
        local_addr: tcp.local_addr().ok(),
        remote_addr: Some(peer),
    };
    let io = match tls {
        None => Io::Plain(tcp),
        Some(acceptor) => {
            let stream = tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp))
                .await
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
                })??;
            Io::Tls(Box::new(stream))
        }
    };
    let (first_bytes, within) = limits.first_bytes;
    Ok(Conn {
        io,
        info,
        peer,
        deadline: Box::pin(deadline.cancelled_owned()),
        first_bytes: Some(FirstBytes {
            missing: first_bytes,
            sleep: Box::pin(tokio::time::sleep(within)),
        }),
        idle: limits.idle_timeout.map(|after| Idle {
            after,
            last: tokio::time::Instant::now(),
            sleep: Box::pin(tokio::time::sleep(after)),
        }),
        _slot: slot,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_lets_one_line_through_per_period_and_counts_the_rest() {
        let throttle = Throttle::new(Duration::from_secs(3600));
        assert_eq!(throttle.ready(), Some(0));
        assert_eq!(throttle.ready(), None);
        assert_eq!(throttle.ready(), None);
        assert_eq!(throttle.held.load(Ordering::Relaxed), 2);
        let quick = Throttle::new(Duration::ZERO);
        assert_eq!(quick.ready(), Some(0));
        assert_eq!(quick.ready(), Some(0));
    }
}
