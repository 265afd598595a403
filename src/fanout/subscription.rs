//! One subscriber's stream: catch-up pages from the store, then the live
//! broadcast, back to the store whenever it falls behind.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::Stream;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::{
    CATCH_UP_BYTES, CATCH_UP_PAGE, EventFilter, HEAD_UNKNOWN, Published, SubscribeError,
    SubscriberSlot, check_resume,
};
use crate::store::{EventPage, Store, StoreError};
use crate::telemetry::names;

/// The catch-up page after `after_seq`, being read.
pub(super) struct Prefetch {
    after_seq: u64,
    page: AbortOnDropHandle<Result<EventPage, StoreError>>,
}

/// One catch-up read: as many events as fit [`CATCH_UP_PAGE`] and
/// [`CATCH_UP_BYTES`].
async fn read_page(store: &Store, after_seq: u64) -> Result<EventPage, StoreError> {
    store
        .event_page(after_seq, CATCH_UP_PAGE, CATCH_UP_BYTES)
        .await
}

pub(super) struct Subscription {
    pub(super) fanout: SubscriberSlot,
    /// The broadcast, joined once a catch-up page reached the head; left
    /// while catching up, so a subscriber reading the store does not keep
    /// the live buffer from being freed.
    pub(super) live: Option<broadcast::Receiver<Arc<Published>>>,
    /// The highest seq this subscriber has passed, sent or filtered out;
    /// `None` until known (a "from now" subscription before the writer started).
    pub(super) last_sent: Option<u64>,
    /// The resume point asked for, until checked against the head.
    pub(super) unchecked_resume: Option<u64>,
    pub(super) filter: EventFilter,
    pub(super) shutdown: CancellationToken,
    /// Caught-up events that passed the filter, not yet yielded: at most
    /// one catch-up page.
    pub(super) ready: VecDeque<Arc<Published>>,
    pub(super) catching_up: bool,
    /// The next catch-up page, read while the current one is sent: at most
    /// one page more held per subscriber.
    pub(super) prefetch: Option<Prefetch>,
    /// The lag histogram, looked up once rather than for every event.
    pub(super) lag: metrics::Histogram,
    pub(super) finished: bool,
}

impl Subscription {
    pub(super) fn into_stream(
        self,
    ) -> impl Stream<Item = Result<Arc<Published>, SubscribeError>> + Send + 'static {
        futures::stream::unfold(self, |mut s| async move {
            let item = s.next().await?;
            Some((item, s))
        })
    }

    /// Refuses a resume point beyond the newest committed event, once.
    pub(super) async fn check_resume(&mut self) -> Result<(), SubscribeError> {
        if let Some(after_seq) = self.unchecked_resume {
            check_resume(&self.fanout.0, after_seq).await?;
            self.unchecked_resume = None;
        }
        Ok(())
    }

    pub(super) async fn next(&mut self) -> Option<Result<Arc<Published>, SubscribeError>> {
        loop {
            if self.finished {
                return None;
            }
            if self.shutdown.is_cancelled() {
                return self.finish(SubscribeError::ShuttingDown);
            }
            if self.unchecked_resume.is_some()
                && let Err(e) = self.check_resume().await
            {
                return self.finish(e);
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
                let prefetched = self.prefetch.take().filter(|p| p.after_seq == last);
                let page = tokio::select! {
                    biased;
                    _ = self.shutdown.cancelled() => continue,
                    page = async {
                        match prefetched {
                            Some(p) => p.page.await.unwrap_or_else(|e| {
                                Err(StoreError::Corrupt(format!("catch-up read failed: {e}")))
                            }),
                            None => read_page(&self.fanout.0.store, last).await,
                        }
                    } => page,
                };
                let page = match page {
                    Ok(page) => page,
                    Err(e) => return self.finish(e.into()),
                };
                // A page that reached the head: anything newer was committed
                // after this read and is (or will be) in the live channel.
                if page.at_head {
                    self.catching_up = false;
                } else {
                    metrics::counter!(names::SUBSCRIBER_CATCH_UP_PAGES).increment(1);
                }
                for e in page.events {
                    self.last_sent = Some(e.seq);
                    let e = Published::new(e);
                    if self.filter.matches(&e) {
                        self.ready.push_back(Arc::new(e));
                    }
                }
                // The next page is read while this one is sent.
                if self.catching_up
                    && let Some(after_seq) = self.last_sent
                {
                    let store = self.fanout.0.store.clone();
                    self.prefetch = Some(Prefetch {
                        after_seq,
                        page: AbortOnDropHandle::new(tokio::spawn(async move {
                            read_page(&store, after_seq).await
                        })),
                    });
                }
                continue;
            }

            let mut live = match self.live.take() {
                Some(live) => live,
                None => {
                    let live = self.fanout.0.live.subscribe();
                    // Published before joining, so not in the channel for
                    // us: the store has it.
                    let head = self.fanout.0.head.load(Ordering::Acquire);
                    if head != HEAD_UNKNOWN && head > last {
                        self.live = Some(live);
                        self.catching_up = true;
                        continue;
                    }
                    live
                }
            };
            let received = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => continue,
                received = live.recv() => received,
            };
            match received {
                Ok(e) if e.seq <= last => self.live = Some(live),
                Ok(e) if e.seq == last + 1 => {
                    self.live = Some(live);
                    self.last_sent = Some(e.seq);
                    if self.filter.matches(&e) {
                        return Some(Ok(self.record_lag(e)));
                    }
                }
                // A gap, or the channel overtook us: the store has it all.
                // Leave the broadcast while reading the store.
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
            self.lag.record(head.saturating_sub(e.seq) as f64);
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
        self.ready.clear();
        self.prefetch = None;
        self.live = None;
        Some(Err(error))
    }
}
