//! An accepted connection that enforces its deadlines on every read and
//! write, and the slot under the connection cap it holds.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, atomic::Ordering},
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::OwnedSemaphorePermit,
    time::Sleep,
};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::WaitForCancellationFutureOwned;
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::ListenerStats;
use super::sources::SourceSlot;
use crate::telemetry::names;

/// One place under the connection cap; frees it and updates the gauge when
/// the connection is gone.
pub(super) struct Slot {
    _permit: OwnedSemaphorePermit,
    /// Its place among its address's connections (none for a trusted proxy).
    _source: Option<SourceSlot>,
    stats: Arc<ListenerStats>,
}

impl Slot {
    pub(super) fn new(
        permit: OwnedSemaphorePermit,
        source: Option<SourceSlot>,
        stats: Arc<ListenerStats>,
    ) -> Self {
        stats.open.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!(names::CONNECTIONS_OPEN, "listener" => stats.name).increment(1.0);
        Slot {
            _permit: permit,
            _source: source,
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

pub(super) enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

pub(super) struct FirstBytes {
    pub(super) missing: usize,
    pub(super) sleep: Pin<Box<Sleep>>,
}

pub(super) struct Idle {
    pub(super) after: Duration,
    pub(super) last: tokio::time::Instant,
    pub(super) sleep: Pin<Box<Sleep>>,
}

/// An accepted (and, with TLS, decrypted) connection that enforces its
/// deadlines on every read and write: the first bytes must come in time, an
/// idle connection ends, and the shutdown deadline ends it for good.
pub struct Conn {
    pub(super) io: Io,
    pub(super) info: TcpConnectInfo,
    pub(super) peer: SocketAddr,
    pub(super) deadline: Pin<Box<WaitForCancellationFutureOwned>>,
    pub(super) first_bytes: Option<FirstBytes>,
    pub(super) idle: Option<Idle>,
    pub(super) _slot: Slot,
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
