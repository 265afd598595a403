//! Live broadcast of committed events, with catch-up from the store.
//!
//! The writer publishes every committed event, in seq order, through the
//! [`Publisher`] into a bounded broadcast channel. A subscriber reads the
//! store from its resume point, one page at a time, until a page reaches the
//! head; then it joins the broadcast (and reads the store once more for what
//! was published before it joined). When it falls behind (the broadcast
//! lagged, or a seq is missing) it leaves the broadcast, goes back to the
//! store and rejoins afterwards: it is never dropped and never skips.
//!
//! Memory: a subscriber holds at most two catch-up pages ahead of its
//! transport, the one being sent and the next one, read meanwhile
//! ([`paging::CATCH_UP_BYTES`] bytes each),
//! and only a subscriber following live holds a place in the broadcast, so
//! subscribers that do not read pin neither pages nor the live buffer
//! beyond that. Their number is capped ([`Fanout::with_max_subscribers`]),
//! and what they held is given back to the OS after they leave.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::sipgate::event::{Direction, EventKind};
use crate::store::{Publish, Store, StoreError, WireEvent};
use crate::telemetry::names;
use crate::{encode, paging, proto};

/// Events read from the store per catch-up query, at most (the byte bound
/// usually ends a page first).
const CATCH_UP_PAGE: u32 = 4096;
/// Bytes (as stored) read from the store per catch-up query, at most.
const CATCH_UP_BYTES: usize = paging::CATCH_UP_BYTES;
/// `head` before the writer has reported the stored head.
const HEAD_UNKNOWN: u64 = u64::MAX;

/// Which events a subscriber wants; an empty list means all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub directions: Vec<Direction>,
    pub kinds: Vec<EventKind>,
    /// Matches the event's `from` or `to` exactly.
    pub numbers: Vec<String>,
}

impl EventFilter {
    fn is_empty(&self) -> bool {
        self.directions.is_empty() && self.kinds.is_empty() && self.numbers.is_empty()
    }

    /// dtmf carries no direction or numbers; those come from its call. An
    /// event whose stored form does not decode passes, so the subscriber
    /// sees the fault instead of missing the event.
    pub fn matches(&self, e: &Published) -> bool {
        if self.is_empty() {
            return true;
        }
        let Some(key) = e.key() else {
            return true;
        };
        (self.kinds.is_empty() || key.kind.is_some_and(|k| self.kinds.contains(&k)))
            && (self.directions.is_empty()
                || key.direction.is_some_and(|d| self.directions.contains(&d)))
            && (self.numbers.is_empty()
                || self.numbers.iter().any(|n| *n == key.from || *n == key.to))
    }
}

/// What a filter looks at, taken from an event's wire form.
#[derive(Debug)]
struct FilterKey {
    kind: Option<EventKind>,
    direction: Option<Direction>,
    from: String,
    to: String,
}

impl FilterKey {
    fn of(event: proto::CallEvent) -> FilterKey {
        let call = event.call.unwrap_or_default();
        let direction = encode::direction_from(event.direction)
            .or_else(|| encode::direction_from(call.direction));
        let (from, to) = if event.from.is_empty() && event.to.is_empty() {
            (call.from, call.to)
        } else {
            (event.from, event.to)
        };
        FilterKey {
            kind: encode::event_kind_from(event.kind),
            direction,
            from,
            to,
        }
    }
}

/// A committed event as the fan-out hands it out, shared by every live
/// subscriber: its seq and its wire form (the encoded `sidecar.v1.CallEvent`
/// made when it was stored), so no transport encodes it again.
#[derive(Debug)]
pub struct Published {
    seq: u64,
    wire: Bytes,
    /// What a filter looks at, decoded on first use (`None`: the wire form
    /// does not decode).
    key: OnceLock<Option<FilterKey>>,
}

impl Published {
    pub(crate) fn new(event: WireEvent) -> Self {
        Published {
            seq: event.seq,
            wire: event.wire,
            key: OnceLock::new(),
        }
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The encoded `sidecar.v1.CallEvent`.
    pub fn wire(&self) -> &Bytes {
        &self.wire
    }

    /// The event as a `sidecar.v1.CallEvent`.
    pub fn decode(&self) -> Result<proto::CallEvent, prost::DecodeError> {
        prost::Message::decode(self.wire.as_ref())
    }

    fn key(&self) -> Option<&FilterKey> {
        self.key
            .get_or_init(|| self.decode().ok().map(FilterKey::of))
            .as_ref()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The resume point lies beyond the newest committed event: the log is
    /// not the one the cursor was taken from (restored from a backup, or
    /// replaced). Waiting for those seqs would silently skip the events
    /// that get them now.
    #[error(
        "after_seq {after_seq} is beyond the newest event (seq {head}): this log was restored \
         or replaced; resume from {head} or earlier"
    )]
    BeyondHead { after_seq: u64, head: u64 },
    /// As many subscribers as allowed are connected.
    #[error("the server already has {limit} event subscribers (its limit)")]
    TooManySubscribers { limit: usize },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Subscribes to committed events. Cheap to clone.
#[derive(Clone)]
pub struct Fanout {
    inner: Arc<Inner>,
}

/// The writer's end of the fan-out: what it commits goes out through this.
pub struct Publisher {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    live: broadcast::Sender<Arc<Published>>,
    /// The highest seq published (or stored at writer start).
    head: AtomicU64,
    /// The stored head when the writer started, before its first commit.
    head_at_writer_start: OnceLock<u64>,
    subscribers: AtomicUsize,
    max_subscribers: usize,
}

impl std::fmt::Debug for Fanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fanout")
            .field("subscribers", &self.subscriber_count())
            .field("max_subscribers", &self.inner.max_subscribers)
            .finish_non_exhaustive()
    }
}

impl Fanout {
    /// The fan-out over `store`, and the publisher to hand to the writer,
    /// with no limit on subscribers.
    /// `live_capacity` bounds the events buffered for the slowest live
    /// subscriber; beyond it, that subscriber catches up from the store.
    pub fn new(store: Store, live_capacity: usize) -> (Fanout, Publisher) {
        Self::with_max_subscribers(store, live_capacity, usize::MAX)
    }

    /// As [`Fanout::new`], refusing subscribers beyond `max_subscribers`
    /// at once with [`SubscribeError::TooManySubscribers`].
    pub fn with_max_subscribers(
        store: Store,
        live_capacity: usize,
        max_subscribers: usize,
    ) -> (Fanout, Publisher) {
        let (live, _) = broadcast::channel(live_capacity.max(1));
        let inner = Arc::new(Inner {
            store,
            live,
            head: AtomicU64::new(HEAD_UNKNOWN),
            head_at_writer_start: OnceLock::new(),
            subscribers: AtomicUsize::new(0),
            max_subscribers,
        });
        (
            Fanout {
                inner: inner.clone(),
            },
            Publisher { inner },
        )
    }

    pub fn subscriber_count(&self) -> usize {
        self.inner.subscribers.load(Ordering::Relaxed)
    }

    /// Events with seq > `after_seq`, or (`None`) those committed from now
    /// on, in seq order and without gaps, filtered by `filter`. Ends with
    /// `Err(ShuttingDown)` once `shutdown` is cancelled. A refused
    /// subscription (too many subscribers, `after_seq` beyond the newest
    /// event) is the stream's only item; [`Fanout::open`] refuses up front.
    pub fn subscribe(
        &self,
        after_seq: Option<u64>,
        filter: EventFilter,
        shutdown: CancellationToken,
    ) -> impl Stream<Item = Result<Arc<Published>, SubscribeError>> + Send + 'static {
        match self.start(after_seq, filter, shutdown) {
            Ok(subscription) => subscription.into_stream().left_stream(),
            Err(e) => futures::stream::once(std::future::ready(Err(e))).right_stream(),
        }
    }

    /// As [`Fanout::subscribe`], with a refusal as the error before any
    /// stream exists (a transport can then refuse the request itself).
    pub async fn open(
        &self,
        after_seq: Option<u64>,
        filter: EventFilter,
        shutdown: CancellationToken,
    ) -> Result<
        impl Stream<Item = Result<Arc<Published>, SubscribeError>> + Send + 'static,
        SubscribeError,
    > {
        let mut subscription = self.start(after_seq, filter, shutdown)?;
        subscription.check_resume().await?;
        Ok(subscription.into_stream())
    }

    /// `Err(BeyondHead)` when `after_seq` lies beyond the newest committed
    /// event, as a subscription from there would be refused.
    pub async fn check_resume(&self, after_seq: u64) -> Result<(), SubscribeError> {
        check_resume(&self.inner, after_seq).await
    }

    /// Takes a subscriber's place and fixes "now" for a subscription from
    /// now on; the resume point is checked on first use.
    fn start(
        &self,
        after_seq: Option<u64>,
        filter: EventFilter,
        shutdown: CancellationToken,
    ) -> Result<Subscription, SubscribeError> {
        let fanout = SubscriberSlot::take(self.inner.clone())?;
        let last_sent = after_seq.or_else(|| {
            let head = self.inner.head.load(Ordering::Acquire);
            (head != HEAD_UNKNOWN).then_some(head)
        });
        Ok(Subscription {
            fanout,
            live: None,
            last_sent,
            unchecked_resume: after_seq,
            filter,
            shutdown,
            ready: VecDeque::new(),
            catching_up: true,
            prefetch: None,
            finished: false,
        })
    }
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Publish for Publisher {
    fn set_head(&self, seq: u64) {
        let _ = self.inner.head_at_writer_start.set(seq);
        self.inner.head.store(seq, Ordering::Release);
    }

    fn publish(&self, event: WireEvent) {
        // Before the send: a subscriber that joins the broadcast too late
        // for this event sees the new head and reads it from the store.
        self.inner.head.store(event.seq, Ordering::Release);
        // No receivers is fine: nobody is listening.
        let _ = self.inner.live.send(Arc::new(Published::new(event)));
    }
}

/// Refuses a resume point beyond the newest committed event. One equal to
/// it, or passed by the head while this runs, is fine.
async fn check_resume(inner: &Inner, after_seq: u64) -> Result<(), SubscribeError> {
    let published = inner.head.load(Ordering::Acquire);
    if published != HEAD_UNKNOWN && after_seq <= published {
        return Ok(());
    }
    // The store commits before the fan-out publishes: it may be ahead, and
    // it is what the resume point has to be within.
    let head = inner.store.head_seq().await?;
    if after_seq > head {
        metrics::counter!(names::SUBSCRIBERS_REFUSED, "reason" => "beyond_head").increment(1);
        return Err(SubscribeError::BeyondHead { after_seq, head });
    }
    Ok(())
}

/// A subscriber's place under the limit; keeps the subscriber gauge right
/// however the stream is dropped.
struct SubscriberSlot(Arc<Inner>);

impl SubscriberSlot {
    fn take(inner: Arc<Inner>) -> Result<Self, SubscribeError> {
        let limit = inner.max_subscribers;
        let previous = inner
            .subscribers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .map_err(|_| {
                metrics::counter!(names::SUBSCRIBERS_REFUSED, "reason" => "limit").increment(1);
                SubscribeError::TooManySubscribers { limit }
            })?;
        metrics::gauge!(names::SUBSCRIBERS).set((previous + 1) as f64);
        Ok(SubscriberSlot(inner))
    }
}

impl Drop for SubscriberSlot {
    fn drop(&mut self) {
        let n = self.0.subscribers.fetch_sub(1, Ordering::AcqRel) - 1;
        metrics::gauge!(names::SUBSCRIBERS).set(n as f64);
        trim::soon();
    }
}

mod subscription;
mod trim;

use subscription::Subscription;

#[cfg(test)]
mod tests;
