//! The PostgreSQL writer. Several replicas write to one database, so
//! nothing this process remembers can be trusted between batches: every
//! transaction takes the advisory lock [`WRITE_LOCK`], reads the stored
//! head (the next seq) and every call of the batch under it in one
//! statement, and notifies
//! [`EVENTS_CHANNEL`](crate::store::pg::EVENTS_CHANNEL) when it appended
//! events. A batch takes four round trips to the database: `BEGIN` with
//! the lock, the head with the reads of its calls and dedupe keys, its
//! writes with the notification, `COMMIT`.
//!
//! When the answer to a COMMIT is lost with the connection, the batch may
//! or may not be stored. The retry looks under the lock for the last event
//! the batch made, at its seq and in its exact wire form: if it is there,
//! the batch committed and its answers stand; if not, the batch runs again.
//!
//! The tail task hands every event to this replica's fan-out, in seq order
//! from the head at start. This replica's own commits come to it from the
//! writer as they were written; an event of another replica is read from
//! the table, when a notification announced a seq the tail has not
//! published, when the next own event leaves a gap (another replica
//! committed in between), or at the latest at a poll every [`TAIL_POLL`].
//! With one replica the table is not read back at all.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgConnection;
use sqlx::{ConnectOptions as _, Connection as _};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{EventsSignal, PgStore, WRITE_LOCK, rows};
use crate::calls::CallRecord;
use crate::store::writer::{
    BackendWriter, BatchConn, BatchEffects, BatchRows, CallCache, Command, Loaded, Publish, apply,
    call_ids,
};
use crate::store::{StoreError, WireEvent, sql};

/// The longest a committed event waits for the tail when a notification
/// was lost (the listener reconnecting).
const TAIL_POLL: Duration = Duration::from_secs(1);
/// Events the tail reads per query.
const TAIL_PAGE: i64 = 1024;
/// Wait before the tail reads again after a failed read.
const TAIL_RETRY: Duration = Duration::from_millis(500);

pub(super) struct PgWriter {
    store: PgStore,
    /// `None` after a failure: the next attempt connects anew.
    connection: Option<PgConnection>,
    /// The batch's view of its calls, read under the lock; emptied before
    /// every batch (another replica may have changed any call since).
    cache: CallCache,
    /// The seq after the last one this writer stored or read.
    next_seq: u64,
    /// What the batch being retried produced when its COMMIT got no answer.
    unanswered: Option<BatchEffects>,
    /// Wakes the tail after a commit.
    wake: Arc<EventsSignal>,
    /// This replica's committed events, to the tail.
    own: mpsc::UnboundedSender<Vec<WireEvent>>,
    /// Stops the tail with the writer (after its last read).
    _tail: DropGuard,
}

impl PgWriter {
    pub(super) async fn start(
        store: &PgStore,
        publisher: Box<dyn Publish>,
    ) -> Result<PgWriter, StoreError> {
        let mut connection = store.writer_options().connect().await?;
        let head = sql::head_seq(&mut connection).await?;
        let wake = store.events_signal();
        let stop = CancellationToken::new();
        let (own, own_events) = mpsc::unbounded_channel();
        store.runtime().spawn(tail(
            store.clone(),
            publisher,
            head,
            Arrivals {
                signal: wake.clone(),
                own: own_events,
            },
            stop.clone(),
        ));
        Ok(PgWriter {
            store: store.clone(),
            connection: Some(connection),
            cache: CallCache::default(),
            next_seq: head + 1,
            unanswered: None,
            wake,
            own,
            _tail: stop.drop_guard(),
        })
    }
}

#[async_trait::async_trait]
impl BackendWriter for PgWriter {
    fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Runs `batch` in one transaction under the write lock. On failure
    /// nothing of it was stored (or, when the commit's answer was lost,
    /// all of it was: a retry then finds its events as duplicates).
    async fn try_commit(&mut self, batch: &[Command]) -> Result<BatchEffects, StoreError> {
        let mut connection = match self.connection.take() {
            Some(connection) => connection,
            None => self.store.writer_options().connect().await?,
        };
        self.cache.clear();
        let result = run_batch(
            &mut connection,
            &mut self.cache,
            batch,
            self.unanswered.take(),
        )
        .await;
        self.cache.clear();
        match result {
            Ok((effects, next_seq)) => {
                #[cfg(test)]
                if self.store.take_lost_commit_answer() {
                    self.unanswered = Some(effects);
                    return Err(StoreError::Write("the answer to COMMIT was lost".into()));
                }
                self.connection = Some(connection);
                self.next_seq = next_seq;
                Ok(effects)
            }
            // The connection is dropped: the next attempt starts clean.
            Err(Failure::Before(error)) => Err(error),
            Err(Failure::AtCommit(error, effects)) => {
                self.unanswered = Some(effects);
                Err(error)
            }
        }
    }

    /// Answers every command of a committed batch and hands its events to
    /// the tail, which publishes them with everyone else's in seq order.
    fn finish(&mut self, batch: Vec<Command>, effects: BatchEffects) {
        let mut events = Vec::with_capacity(effects.appended());
        effects.respond(batch, |event| events.push(event));
        // Gone only with the tail, which then reads the table at its end.
        if !events.is_empty() && self.own.send(events).is_ok() {
            self.wake.wake();
        }
    }

    /// The batch being retried was given up: what it left is not its
    /// answer.
    fn fail(&mut self, batch: Vec<Command>, error: &StoreError) {
        self.unanswered = None;
        crate::store::writer::fail(batch, error)
    }

    fn spooled(&mut self) {
        self.unanswered = None;
    }

    async fn pause(&mut self, wait: Duration) {
        tokio::time::sleep(wait).await
    }
}

/// Why a batch was not stored, as far as this writer knows.
enum Failure {
    /// Failed before COMMIT: nothing of it is stored.
    Before(StoreError),
    /// COMMIT got no answer: stored or not, the retry finds out.
    AtCommit(StoreError, BatchEffects),
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Failure::Before(error)
    }
}

impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Self {
        Failure::Before(error.into())
    }
}

async fn run_batch(
    connection: &mut PgConnection,
    cache: &mut CallCache,
    batch: &[Command],
    unanswered: Option<BatchEffects>,
) -> Result<(BatchEffects, u64), Failure> {
    // READ COMMITTED: every statement after the lock sees every commit
    // made before it was granted.
    // The lock is taken in the same round trip as BEGIN.
    let mut tx = connection
        .begin_with(format!(
            "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock({WRITE_LOCK})"
        ))
        .await?;
    // The head and every call the batch touches, in one round trip.
    let call_ids = call_ids(batch);
    let (missing, keys) = cache.missing(&call_ids);
    let (loaded, head) = rows::load_batch_and_head(&mut tx, &missing, &keys).await?;
    cache.fill(&missing, loaded);
    if let Some(effects) = unanswered
        && let Some((seq, wire)) = effects.last_event()
    {
        let stored: Option<Option<Vec<u8>>> =
            sqlx::query_scalar("SELECT wire FROM events WHERE seq = $1")
                .bind(seq as i64)
                .fetch_optional(&mut *tx)
                .await?;
        if stored.flatten().as_deref() == Some(&wire[..]) {
            tracing::info!(seq, "the batch whose COMMIT got no answer was stored");
            tx.rollback().await?;
            return Ok((effects, head + 1));
        }
    }
    let mut next_seq = head + 1;
    // `apply` also notifies the other replicas of the new head.
    let effects = apply(&mut *tx, &mut next_seq, cache, batch).await?;
    // The lock goes with the commit; a dropped transaction rolls back.
    match tx.commit().await {
        Ok(()) => Ok((effects, next_seq)),
        Err(error) => Err(Failure::AtCommit(error.into(), effects)),
    }
}

/// What wakes the tail: this replica's commits, with their events, and
/// the notifications of every replica's.
struct Arrivals {
    signal: Arc<EventsSignal>,
    own: mpsc::UnboundedReceiver<Vec<WireEvent>>,
}

/// Publishes every event after `head`, in seq order, as it becomes visible,
/// until `stop`, then once more for what committed before it.
async fn tail(
    store: PgStore,
    publisher: Box<dyn Publish>,
    head: u64,
    mut arrivals: Arrivals,
    stop: CancellationToken,
) {
    publisher.set_head(head);
    let mut last = head;
    // This replica's committed events not yet published: waiting for an
    // earlier seq another replica committed.
    let mut own: BTreeMap<u64, WireEvent> = BTreeMap::new();
    // The table is read at the start, at every poll and at the end.
    let mut read_table = true;
    loop {
        let stopping = stop.is_cancelled();
        while let Ok(events) = arrivals.own.try_recv() {
            own.extend(events.into_iter().map(|e| (e.seq, e)));
        }
        while let Some(entry) = own.first_entry() {
            if *entry.key() <= last {
                entry.remove();
            } else if *entry.key() == last + 1 {
                last += 1;
                publisher.publish(entry.remove());
            } else {
                break;
            }
        }
        // A gap before the next own event, or a notification of a seq not
        // yet published: another replica's events are in the table.
        let gap = !own.is_empty();
        if read_table || gap || arrivals.signal.behind(last) || stopping {
            #[cfg(test)]
            arrivals
                .signal
                .table_reads
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            match read_after(&store, last).await {
                Ok(events) => {
                    let full = events.len() as i64 == TAIL_PAGE;
                    for event in events {
                        if event.seq != last + 1 {
                            // Only retention deletes rows, and only old ones.
                            tracing::warn!(
                                after = last,
                                next = event.seq,
                                "events purged before this replica published them"
                            );
                        }
                        last = event.seq;
                        publisher.publish(event);
                    }
                    read_table = false;
                    if full {
                        continue;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, after = last, "reading new events failed; retrying");
                    if stopping {
                        return;
                    }
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = tokio::time::sleep(TAIL_RETRY) => {}
                    }
                    continue;
                }
            }
        }
        if stopping {
            return;
        }
        // Own events the read caught up with follow at once.
        if own
            .first_key_value()
            .is_some_and(|(&seq, _)| seq == last + 1)
        {
            continue;
        }
        tokio::select! {
            _ = arrivals.signal.notified() => {}
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(TAIL_POLL) => read_table = true,
        }
    }
}

async fn read_after(store: &PgStore, after: u64) -> Result<Vec<WireEvent>, StoreError> {
    let rows: Vec<(i64, Option<Vec<u8>>)> =
        sqlx::query_as("SELECT seq, wire FROM events WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(after.min(i64::MAX as u64) as i64)
            .bind(TAIL_PAGE)
            .fetch_all(store.pool())
            .await?;
    rows.into_iter()
        .map(|(seq, wire)| match wire {
            Some(wire) => Ok(WireEvent {
                seq: seq as u64,
                wire: wire.into(),
            }),
            None => Err(StoreError::Corrupt(format!("event {seq} has no content"))),
        })
        .collect()
}

impl BatchConn for PgConnection {
    async fn load_call(&mut self, call_id: &str) -> Result<Option<CallRecord>, StoreError> {
        sql::load_call(self, call_id).await
    }
    async fn load_batch(
        &mut self,
        call_ids: &[&str],
        keys: &[String],
    ) -> Result<Loaded, StoreError> {
        rows::load_batch(self, call_ids, keys).await
    }
    async fn seqs_by_dedupe_keys(
        &mut self,
        keys: &[String],
    ) -> Result<Vec<(String, u64)>, StoreError> {
        rows::seqs_by_dedupe_keys(self, keys).await
    }
    async fn upsert_calls(&mut self, calls: &[CallRecord]) -> Result<(), StoreError> {
        rows::upsert_calls(self, calls).await
    }
    async fn store_batch(&mut self, batch: BatchRows<'_>) -> Result<(), StoreError> {
        rows::write_batch(self, batch).await
    }
    async fn stale_open_calls(&mut self, cutoff_ms: i64) -> Result<Vec<CallRecord>, StoreError> {
        sql::stale_open_calls(self, cutoff_ms).await
    }
    async fn purge(&mut self, head: u64, cutoff_ms: i64) -> Result<(u64, u64), StoreError> {
        rows::purge(self, head, cutoff_ms).await
    }
}
