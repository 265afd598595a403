//! Live broadcast of committed events, with catch-up from the store.
//!
//! The writer publishes every committed event, in seq order, through the
//! [`Publisher`] into a bounded broadcast channel. A subscriber joins the broadcast first, then reads the
//! store from its resume point, then follows the broadcast. When it falls
//! behind (the broadcast lagged, or a seq is missing) it goes back to the
//! store and rejoins live afterwards: it is never dropped and never skips.

use std::collections::VecDeque;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use futures::Stream;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

use crate::paging;
use crate::sipgate::event::{Direction, EventKind};
use crate::store::{Publish, Store, StoreError, StoredEvent};
use crate::telemetry::names;

/// Events read from the store per catch-up query: the largest page it gives.
const CATCH_UP_PAGE: u32 = paging::EVENTS.max;
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
    /// dtmf carries no direction or numbers; those come from its call.
    pub fn matches(&self, e: &StoredEvent) -> bool {
        let event = &e.event;
        let direction = event.direction.or(e.call.direction);
        let (from, to) = if event.from.is_empty() && event.to.is_empty() {
            (&e.call.from, &e.call.to)
        } else {
            (&event.from, &event.to)
        };
        (self.kinds.is_empty() || self.kinds.contains(&event.kind))
            && (self.directions.is_empty()
                || direction.is_some_and(|d| self.directions.contains(&d)))
            && (self.numbers.is_empty() || self.numbers.iter().any(|n| n == from || n == to))
    }
}

/// A committed event as the fan-out hands it out, shared by every live
/// subscriber. It keeps the event's wire form once a transport has encoded
/// it, so the encoding is done once for all of them. Derefs to the event.
#[derive(Debug)]
pub struct Published {
    event: StoredEvent,
    wire: OnceLock<Bytes>,
}

impl Published {
    pub(crate) fn new(event: StoredEvent) -> Self {
        Published {
            event,
            wire: OnceLock::new(),
        }
    }

    pub fn event(&self) -> &StoredEvent {
        &self.event
    }

    /// The event's wire form: made by `encode` for the first caller, the
    /// same bytes for every later one. One wire form per event: every
    /// caller must pass the same encoding.
    pub fn wire(&self, encode: impl FnOnce(&StoredEvent) -> Bytes) -> Bytes {
        self.wire.get_or_init(|| encode(&self.event)).clone()
    }
}

impl Deref for Published {
    type Target = StoredEvent;

    fn deref(&self) -> &StoredEvent {
        &self.event
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    #[error("the server is shutting down")]
    ShuttingDown,
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
}

impl std::fmt::Debug for Fanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fanout")
            .field("subscribers", &self.subscriber_count())
            .finish_non_exhaustive()
    }
}

impl Fanout {
    /// The fan-out over `store`, and the publisher to hand to the writer.
    /// `live_capacity` bounds the events buffered for the slowest live
    /// subscriber; beyond it, that subscriber catches up from the store.
    pub fn new(store: Store, live_capacity: usize) -> (Fanout, Publisher) {
        let (live, _) = broadcast::channel(live_capacity.max(1));
        let inner = Arc::new(Inner {
            store,
            live,
            head: AtomicU64::new(HEAD_UNKNOWN),
            head_at_writer_start: OnceLock::new(),
            subscribers: AtomicUsize::new(0),
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
    /// `Err(ShuttingDown)` once `shutdown` is cancelled.
    pub fn subscribe(
        &self,
        after_seq: Option<u64>,
        filter: EventFilter,
        shutdown: CancellationToken,
    ) -> impl Stream<Item = Result<Arc<Published>, SubscribeError>> + Send + 'static {
        // Join the broadcast before anything else, so no event published
        // from here on can be missed between catch-up and live.
        let live = self.inner.live.subscribe();
        let last_sent = after_seq.or_else(|| {
            let head = self.inner.head.load(Ordering::Acquire);
            (head != HEAD_UNKNOWN).then_some(head)
        });
        let subscription = Subscription {
            live,
            last_sent,
            filter,
            shutdown,
            ready: VecDeque::new(),
            catching_up: true,
            finished: false,
            fanout: SubscriberCount::new(self.inner.clone()),
        };
        futures::stream::unfold(subscription, |mut s| async move {
            let item = s.next().await?;
            Some((item, s))
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

    fn publish(&self, event: StoredEvent) {
        self.inner.head.store(event.seq, Ordering::Release);
        // No receivers is fine: nobody is listening.
        let _ = self.inner.live.send(Arc::new(Published::new(event)));
    }
}

/// Keeps the subscriber gauge right however the stream is dropped.
struct SubscriberCount(Arc<Inner>);

impl SubscriberCount {
    fn new(inner: Arc<Inner>) -> Self {
        let n = inner.subscribers.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::gauge!(names::SUBSCRIBERS).set(n as f64);
        SubscriberCount(inner)
    }
}

impl Drop for SubscriberCount {
    fn drop(&mut self) {
        let n = self.0.subscribers.fetch_sub(1, Ordering::Relaxed) - 1;
        metrics::gauge!(names::SUBSCRIBERS).set(n as f64);
    }
}

struct Subscription {
    fanout: SubscriberCount,
    live: broadcast::Receiver<Arc<Published>>,
    /// The highest seq this subscriber has passed, sent or filtered out;
    /// `None` until known (a "from now" subscription before the writer started).
    last_sent: Option<u64>,
    filter: EventFilter,
    shutdown: CancellationToken,
    /// Caught-up events that passed the filter, not yet yielded.
    ready: VecDeque<Arc<Published>>,
    catching_up: bool,
    finished: bool,
}

impl Subscription {
    async fn next(&mut self) -> Option<Result<Arc<Published>, SubscribeError>> {
        loop {
            if self.finished {
                return None;
            }
            if self.shutdown.is_cancelled() {
                return self.finish(SubscribeError::ShuttingDown);
            }
            if let Some(e) = self.ready.pop_front() {
                return Some(Ok(self.record_lag(e)));
            }
            let last = match self.last_sent {
                Some(last) => last,
                None => match self.head_at_subscribe().await {
                    Ok(head) => *self.last_sent.insert(head),
                    Err(e) => return self.finish(e.into()),
                },
            };

            if self.catching_up {
                let page = tokio::select! {
                    biased;
                    _ = self.shutdown.cancelled() => continue,
                    page = self.fanout.0.store.events_after(last, CATCH_UP_PAGE) => page,
                };
                let page = match page {
                    Ok(page) => page,
                    Err(e) => return self.finish(e.into()),
                };
                // A short page reached the head: anything newer was committed
                // after this read and is (or will be) in the live channel.
                if page.len() < CATCH_UP_PAGE as usize {
                    self.catching_up = false;
                }
                if page.len() == CATCH_UP_PAGE as usize {
                    metrics::counter!(names::SUBSCRIBER_CATCH_UP_PAGES).increment(1);
                }
                for e in page {
                    self.last_sent = Some(e.seq);
                    if self.filter.matches(&e) {
                        self.ready.push_back(Arc::new(Published::new(e)));
                    }
                }
                continue;
            }

            let received = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => continue,
                received = self.live.recv() => received,
            };
            match received {
                Ok(e) if e.seq <= last => {}
                Ok(e) if e.seq == last + 1 => {
                    self.last_sent = Some(e.seq);
                    if self.filter.matches(&e) {
                        return Some(Ok(self.record_lag(e)));
                    }
                }
                // A gap, or the channel overtook us: the store has it all.
                Ok(_) | Err(RecvError::Lagged(_)) => {
                    metrics::counter!(names::SUBSCRIBER_LAGGED).increment(1);
                    self.catching_up = true;
                }
                Err(RecvError::Closed) => return self.finish(SubscribeError::ShuttingDown),
            }
        }
    }

    /// How many events this subscriber is behind the newest one as it gets `e`.
    fn record_lag(&self, e: Arc<Published>) -> Arc<Published> {
        let head = self.fanout.0.head.load(Ordering::Relaxed);
        if head != HEAD_UNKNOWN {
            metrics::histogram!(names::SUBSCRIBER_LAG).record(head.saturating_sub(e.seq) as f64);
        }
        e
    }

    /// "From now" for a subscription made before the writer reported the
    /// head: nothing was published then, so "now" is the head the writer
    /// found at start, or the stored head if it has not started yet.
    async fn head_at_subscribe(&self) -> Result<u64, StoreError> {
        let stored = self.fanout.0.store.head_seq().await?;
        // Read after the query: if the writer committed anything the query
        // saw, it had set its start head before.
        Ok(*self.fanout.0.head_at_writer_start.get().unwrap_or(&stored))
    }

    fn finish(&mut self, error: SubscribeError) -> Option<Result<Arc<Published>, SubscribeError>> {
        self.finished = true;
        Some(Err(error))
    }
}

#[cfg(test)]
mod tests;
