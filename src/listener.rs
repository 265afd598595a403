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

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::{ConnectInfo, Request},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
    task::JoinHandle,
    time::Sleep,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::{
    sync::{CancellationToken, WaitForCancellationFutureOwned},
    task::TaskTracker,
};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tower::ServiceExt;

use crate::{
    config::{GrpcListenerConfig, HttpListenerConfig},
    sipgate::xml,
    telemetry::names,
    tls,
};

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

/// What a listener has seen, for tests and `Running`; the same numbers go
/// to the metrics (label `listener`).
pub struct ListenerStats {
    name: &'static str,
    open: AtomicUsize,
    rejected: AtomicU64,
}

impl ListenerStats {
    fn new(name: &'static str) -> Self {
        ListenerStats {
            name,
            open: AtomicUsize::new(0),
            rejected: AtomicU64::new(0),
        }
    }

    /// Connections open now (TLS handshakes included).
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections closed at once because the cap was reached.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
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
    tls: Option<TlsAcceptor>,
    limits: Limits,
    slots: Arc<Semaphore>,
    stats: Arc<ListenerStats>,
    rejections: Arc<Throttle>,
}

impl Listener {
    /// The webhook listener: TLS per `config`, ALPN per `--http2`.
    pub fn webhook(tcp: TcpListener, config: &HttpListenerConfig) -> anyhow::Result<Self> {
        let tls = match &config.tls {
            Some(files) => Some(tls::server_config(
                files,
                ("--tls-cert", "--tls-key"),
                None,
                if config.http2 {
                    tls::ALPN_HTTP2_AND_1
                } else {
                    tls::ALPN_HTTP1
                },
            )?),
            None => None,
        };
        let limits = Limits {
            max_connections: config.max_connections,
            handshake_timeout: config.header_timeout,
            first_bytes: (HTTP_FIRST_BYTES, config.header_timeout),
            idle_timeout: Some(config.idle_timeout),
        };
        Ok(Self::new("webhook", tcp, tls, limits))
    }

    /// The gRPC listener: TLS (and client certificates) per `config`.
    pub fn grpc(tcp: TcpListener, config: &GrpcListenerConfig) -> anyhow::Result<Self> {
        let tls = match &config.tls {
            Some(files) => Some(tls::server_config(
                files,
                ("--grpc-tls-cert", "--grpc-tls-key"),
                config
                    .client_ca
                    .as_deref()
                    .map(|path| (path, "--grpc-client-ca")),
                tls::ALPN_H2,
            )?),
            None => None,
        };
        // Idle gRPC connections are fine (a subscriber waiting for calls);
        // HTTP/2 keep-alive PINGs find the dead ones.
        let limits = Limits {
            max_connections: config.max_connections,
            handshake_timeout: config.handshake_timeout,
            first_bytes: (H2_PREFACE_LEN, config.handshake_timeout),
            idle_timeout: None,
        };
        Ok(Self::new("grpc", tcp, tls, limits))
    }

    fn new(
        name: &'static str,
        tcp: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        limits: Limits,
    ) -> Self {
        Listener {
            tcp,
            tls: tls.map(TlsAcceptor::from),
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
            let slot = Slot::new(permit, self.stats.clone());
            let _ = tcp.set_nodelay(true);
            let _ = socket2::SockRef::from(&tcp)
                .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE));
            let tls = self.tls.clone();
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

/// One place under the connection cap; frees it and updates the gauge when
/// the connection is gone.
struct Slot {
    _permit: OwnedSemaphorePermit,
    stats: Arc<ListenerStats>,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit, stats: Arc<ListenerStats>) -> Self {
        stats.open.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!(names::CONNECTIONS_OPEN, "listener" => stats.name).increment(1.0);
        Slot {
            _permit: permit,
            stats,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!(names::CONNECTIONS_OPEN, "listener" => self.stats.name).decrement(1.0);
    }
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

struct FirstBytes {
    missing: usize,
    sleep: Pin<Box<Sleep>>,
}

struct Idle {
    after: Duration,
    last: tokio::time::Instant,
    sleep: Pin<Box<Sleep>>,
}

/// An accepted (and, with TLS, decrypted) connection that enforces its
/// deadlines on every read and write: the first bytes must come in time, an
/// idle connection ends, and the shutdown deadline ends it for good.
pub struct Conn {
    io: Io,
    info: TcpConnectInfo,
    peer: SocketAddr,
    deadline: Pin<Box<WaitForCancellationFutureOwned>>,
    first_bytes: Option<FirstBytes>,
    idle: Option<Idle>,
    _slot: Slot,
}

impl Conn {
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.io, Io::Tls(_))
    }

    /// An error when a deadline has passed; registers the task for each otherwise.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection dropped at the shutdown deadline",
            ));
        }
        if let Some(first) = &mut self.first_bytes
            && first.sleep.as_mut().poll(cx).is_ready()
        {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client sent too little in time",
            ));
        }
        if let Some(idle) = &mut self.idle {
            while idle.sleep.as_mut().poll(cx).is_ready() {
                let due = idle.last + idle.after;
                if due <= tokio::time::Instant::now() {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connection idle for too long",
                    ));
                }
                idle.sleep.as_mut().reset(due);
            }
        }
        Ok(())
    }

    fn active(&mut self) {
        if let Some(idle) = &mut self.idle {
            idle.last = tokio::time::Instant::now();
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.check(cx)?;
        let before = buf.filled().len();
        let polled = match &mut this.io {
            Io::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        };
        let read = buf.filled().len() - before;
        if read > 0 {
            this.active();
            if let Some(first) = &mut this.first_bytes {
                first.missing = first.missing.saturating_sub(read);
                if first.missing == 0 {
                    this.first_bytes = None;
                }
            }
        }
        polled
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.check(cx)?;
        let polled = match &mut this.io {
            Io::Plain(tcp) => Pin::new(tcp).poll_write(cx, data),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, data),
        };
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.active();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.check(cx)?;
        let polled = match &mut this.io {
            Io::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        };
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.active();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(tcp) => tcp.is_write_vectored(),
            Io::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.check(cx)?;
        match &mut this.io {
            Io::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.info.clone()
    }
}

/// Serves `router` on the webhook listener until `shutdown`; connections
/// still open when `deadline` fires are dropped.
pub async fn serve_http(
    listener: Listener,
    router: Router,
    config: HttpListenerConfig,
    shutdown: CancellationToken,
    deadline: CancellationToken,
) {
    let router = limit_webhooks(router, config.max_in_flight);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout)
        .keep_alive(true);
    if config.http2 {
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(u32::try_from(config.max_in_flight).unwrap_or(u32::MAX));
    } else {
        builder = builder.http1_only();
    }
    let builder = Arc::new(builder);
    let stats = listener.stats();
    let tracker = TaskTracker::new();
    let serve = {
        let shutdown = shutdown.clone();
        let deadline = deadline.clone();
        move |conn: Conn| {
            let builder = builder.clone();
            let router = router.clone();
            let shutdown = shutdown.clone();
            let deadline = deadline.clone();
            async move { serve_http_connection(conn, &builder, router, shutdown, deadline).await }
        }
    };
    listener
        .accept_loop(shutdown, deadline, tracker.clone(), serve)
        .await;
    tracker.close();
    if stats.open() > 0 {
        tracing::info!(
            open = stats.open(),
            "webhook listener closed; waiting for open connections"
        );
    }
    tracker.wait().await;
}

async fn serve_http_connection(
    conn: Conn,
    builder: &auto::Builder<TokioExecutor>,
    router: Router,
    shutdown: CancellationToken,
    deadline: CancellationToken,
) {
    let peer = conn.peer();
    let over_tls = conn.is_tls();
    let service = router.map_request(move |mut request: Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        if over_tls {
            request.extensions_mut().insert(tls::OverTls);
        }
        request
    });
    let connection =
        builder.serve_connection(TokioIo::new(conn), TowerToHyperService::new(service));
    tokio::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            tokio::select! {
                ended = connection.as_mut() => ended,
                _ = deadline.cancelled() => {
                    tracing::debug!(%peer, "webhook connection dropped at the shutdown deadline");
                    return;
                }
            }
        }
    };
    if let Err(e) = ended {
        tracing::debug!(%peer, error = %e, "webhook connection ended with an error");
    }
}

/// At most `max` webhooks at once; the next is answered 503 with the usual
/// XML error, before its body is read.
fn limit_webhooks(router: Router, max: usize) -> Router {
    let slots = Arc::new(Semaphore::new(max));
    let warnings = Arc::new(Throttle::new(WARN_EVERY));
    router.layer(axum::middleware::from_fn(
        move |request: Request, next: Next| {
            let slots = slots.clone();
            let warnings = warnings.clone();
            async move {
                if !request.uri().path().starts_with("/api/v1/sipgate/") {
                    return next.run(request).await;
                }
                let Ok(_slot) = slots.try_acquire_owned() else {
                    metrics::counter!(names::WEBHOOK_REQUESTS, "outcome" => "overloaded")
                        .increment(1);
                    if let Some(held) = warnings.ready() {
                        tracing::warn!(
                            limit = max,
                            more_since_last_line = held,
                            "webhook refused with 503: too many in flight (--max-webhooks-in-flight)"
                        );
                    }
                    return overloaded();
                };
                next.run(request).await
            }
        },
    ))
}

fn overloaded() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/xml; charset=UTF-8"),
            ),
            (header::RETRY_AFTER, HeaderValue::from_static("1")),
        ],
        xml::render_error("too many webhooks in flight; try again"),
    )
        .into_response()
}

/// Accepts on the gRPC listener until `shutdown` and yields the connections
/// (handshakes done) for tonic; `deadline` drops them later.
pub fn grpc_incoming(
    listener: Listener,
    shutdown: CancellationToken,
    deadline: CancellationToken,
) -> (ReceiverStream<io::Result<Conn>>, JoinHandle<()>) {
    let (sender, receiver) = mpsc::channel(64);
    let tracker = TaskTracker::new();
    let serve = move |conn: Conn| {
        let sender = sender.clone();
        async move {
            // Fails only when tonic stopped taking connections: shutting down.
            let _ = sender.send(Ok(conn)).await;
        }
    };
    let task = tokio::spawn(listener.accept_loop(shutdown, deadline, tracker, serve));
    (ReceiverStream::new(receiver), task)
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
