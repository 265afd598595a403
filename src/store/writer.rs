//! The single writer: every event, call-log change, sweep and purge goes
//! through one task on one dedicated connection. It waits for one command,
//! takes whatever else is already queued (group commit), runs the lot in one
//! `BEGIN IMMEDIATE` transaction, commits (one fsync for the batch), then
//! answers every caller and publishes the new events in sequence order.
//!
//! Sequence numbers are assigned here from an in-memory counter, restored
//! when a transaction fails, so the log never has a gap.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::Connection as _;
use sqlx::sqlite::SqliteConnection;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Store, StoreError, StoredEvent, rows};
use crate::calls::{self, CallRecord, CallState};
use crate::decide::{Action, Decision};
use crate::fanout::Fanout;
use crate::sipgate::event::{Event, EventKind};

/// Commands waiting for the writer; submitters wait when it is full.
const QUEUE_CAPACITY: usize = 8192;

/// One accepted webhook, handed to the writer.
#[derive(Debug, Clone)]
pub struct Intake {
    pub event: Event,
    /// The decision sent back to sipgate (newCall only).
    pub decision: Option<Decision>,
    pub received_at_ms: i64,
}

/// What became of an [`Intake`] once its batch committed.
// Short-lived and moved once; boxing the call would only cost callers.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Committed {
    /// Stored as `seq`; `call` is the call after this event.
    Appended {
        seq: u64,
        decision: Option<Decision>,
        call: CallRecord,
    },
    /// Already stored as `seq`; nothing written. `decision` is the one stored
    /// for the call's newCall, so a replayed newCall gets the same reply.
    Duplicate {
        seq: u64,
        decision: Option<Decision>,
    },
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Command {
    Append(Box<Intake>, Reply<Committed>),
    SetDone {
        call_id: String,
        done: bool,
        reply: Reply<Option<CallRecord>>,
    },
    Sweep {
        cutoff_ms: i64,
        now_ms: i64,
        reply: Reply<usize>,
    },
    Purge {
        cutoff_ms: i64,
        reply: Reply<(u64, u64)>,
    },
}

/// The result of one command inside a committed transaction.
enum Outcome {
    Append(Committed),
    SetDone(Option<CallRecord>),
    Sweep(usize),
    Purge(u64, u64),
}

impl Command {
    fn respond(self, result: Result<Outcome, StoreError>) {
        // A caller that stopped waiting (deadline passed) is not an error:
        // its event is stored all the same.
        match (self, result) {
            (Command::Append(_, reply), Ok(Outcome::Append(c))) => drop(reply.send(Ok(c))),
            (Command::SetDone { reply, .. }, Ok(Outcome::SetDone(c))) => drop(reply.send(Ok(c))),
            (Command::Sweep { reply, .. }, Ok(Outcome::Sweep(n))) => drop(reply.send(Ok(n))),
            (Command::Purge { reply, .. }, Ok(Outcome::Purge(e, c))) => {
                drop(reply.send(Ok((e, c))))
            }
            (Command::Append(_, reply), Err(e)) => drop(reply.send(Err(e))),
            (Command::SetDone { reply, .. }, Err(e)) => drop(reply.send(Err(e))),
            (Command::Sweep { reply, .. }, Err(e)) => drop(reply.send(Err(e))),
            (Command::Purge { reply, .. }, Err(e)) => drop(reply.send(Err(e))),
            _ => unreachable!("outcomes are produced in command order"),
        }
    }
}

/// Submits work to the writer task. Cheap to clone.
#[derive(Clone)]
pub struct WriterHandle {
    commands: mpsc::Sender<Command>,
    running: Arc<AtomicBool>,
}

impl std::fmt::Debug for WriterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterHandle")
            .field("running", &self.is_running())
            .field("queue_depth", &self.queue_depth())
            .finish()
    }
}

impl WriterHandle {
    /// Queues `intake` and returns the receiver of its commit result; the
    /// caller decides how long to wait for it.
    pub async fn submit(
        &self,
        intake: Intake,
    ) -> Result<oneshot::Receiver<Result<Committed, StoreError>>, StoreError> {
        let (reply, receiver) = oneshot::channel();
        self.commands
            .send(Command::Append(Box::new(intake), reply))
            .await
            .map_err(|_| StoreError::WriterClosed)?;
        Ok(receiver)
    }

    /// Zammad's manual "done" override. `None` when the call is unknown.
    pub async fn set_done(
        &self,
        call_id: String,
        done: bool,
    ) -> Result<Option<CallRecord>, StoreError> {
        self.request(|reply| Command::SetDone {
            call_id,
            done,
            reply,
        })
        .await
    }

    /// Ends every call not hung up with no sign of life for `stale_after_ms`
    /// with a synthetic hangup (cause "timeout"). Returns how many.
    pub async fn sweep(&self, stale_after_ms: i64, now_ms: i64) -> Result<usize, StoreError> {
        self.request(|reply| Command::Sweep {
            cutoff_ms: now_ms.saturating_sub(stale_after_ms),
            now_ms,
            reply,
        })
        .await
    }

    /// Deletes events received before `older_than_ms` (except the newest event,
    /// so the sequence continues after a restart) and calls last updated
    /// before it. Returns (events, calls) deleted.
    pub async fn purge(&self, older_than_ms: i64) -> Result<(u64, u64), StoreError> {
        self.request(|reply| Command::Purge {
            cutoff_ms: older_than_ms,
            reply,
        })
        .await
    }

    /// Commands queued and not yet taken by the writer.
    pub fn queue_depth(&self) -> usize {
        self.commands.max_capacity() - self.commands.capacity()
    }

    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire) && !self.commands.is_closed()
    }

    async fn request<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, StoreError> {
        let (reply, receiver) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| StoreError::WriterClosed)?;
        receiver.await.map_err(|_| StoreError::WriterClosed)?
    }
}

/// Starts the writer task. When `shutdown` is cancelled it stops taking new
/// commands, commits everything already queued, and exits.
pub fn spawn_writer(
    store: Store,
    fanout: Fanout,
    shutdown: CancellationToken,
    max_batch: usize,
) -> (WriterHandle, JoinHandle<()>) {
    let (commands, queue) = mpsc::channel(QUEUE_CAPACITY);
    let running = Arc::new(AtomicBool::new(true));
    let task = tokio::spawn(run(
        store,
        fanout,
        queue,
        shutdown,
        max_batch.max(1),
        RunningFlag(running.clone()),
    ));
    (WriterHandle { commands, running }, task)
}

/// Clears the running flag however the task ends (including a panic).
struct RunningFlag(Arc<AtomicBool>);

impl Drop for RunningFlag {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

async fn run(
    store: Store,
    fanout: Fanout,
    mut queue: mpsc::Receiver<Command>,
    shutdown: CancellationToken,
    max_batch: usize,
    _running: RunningFlag,
) {
    let mut writer = match Writer::start(&store, fanout).await {
        Ok(writer) => writer,
        Err(error) => {
            tracing::error!(%error, path = store.path(), "event writer cannot start");
            return;
        }
    };
    loop {
        let first = tokio::select! {
            biased;
            _ = shutdown.cancelled() => None,
            command = queue.recv() => command,
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        drain(&mut queue, &mut batch, max_batch);
        writer.commit(batch).await;
    }
    // Refuse new commands, then commit what was already accepted.
    queue.close();
    loop {
        let mut batch = Vec::new();
        drain(&mut queue, &mut batch, max_batch);
        if batch.is_empty() {
            break;
        }
        writer.commit(batch).await;
    }
    tracing::info!(next_seq = writer.next_seq, "event writer stopped");
}

fn drain(queue: &mut mpsc::Receiver<Command>, batch: &mut Vec<Command>, max_batch: usize) {
    while batch.len() < max_batch {
        match queue.try_recv() {
            Ok(command) => batch.push(command),
            Err(_) => break,
        }
    }
}

struct Writer {
    connection: SqliteConnection,
    fanout: Fanout,
    /// The seq the next appended event gets.
    next_seq: u64,
    /// Calls as stored; the writer is the only one changing them.
    cache: CallCache,
}

/// The writer's view of recent calls, so a repeated or follow-up event costs
/// no read. Every change goes through the writer, so an entry is the stored
/// truth; after a failed transaction the whole cache is dropped.
#[derive(Default)]
struct CallCache {
    calls: HashMap<String, CachedCall>,
}

struct CachedCall {
    record: Option<CallRecord>,
    /// Seq of the stored newCall, answer and hangup (the dedupe keys).
    originals: [Option<u64>; 3],
}

/// Entries kept before the cache starts over (a few MB).
const CACHE_LIMIT: usize = 20_000;

impl CallCache {
    async fn entry(
        &mut self,
        conn: &mut SqliteConnection,
        call_id: &str,
    ) -> Result<&mut CachedCall, StoreError> {
        if !self.calls.contains_key(call_id) {
            let record = rows::load_call(&mut *conn, call_id).await?;
            let keys = [EventKind::NewCall, EventKind::Answer, EventKind::Hangup]
                .map(|kind| format!("{}:{call_id}", kind.as_str()));
            let found = rows::seqs_by_dedupe_keys(&mut *conn, &keys).await?;
            let originals =
                keys.map(|key| found.iter().find(|(k, _)| *k == key).map(|(_, seq)| *seq));
            self.calls
                .insert(call_id.to_owned(), CachedCall { record, originals });
        }
        Ok(self
            .calls
            .get_mut(call_id)
            .expect("the entry was inserted above"))
    }

    fn store(&mut self, call: &CallRecord) {
        if let Some(entry) = self.calls.get_mut(&call.call_id) {
            entry.record = Some(call.clone());
        }
    }
}

fn dedupe_slot(kind: EventKind) -> Option<usize> {
    match kind {
        EventKind::NewCall => Some(0),
        EventKind::Answer => Some(1),
        EventKind::Hangup => Some(2),
        EventKind::Dtmf => None,
    }
}

/// What one batch produced, applied only after its commit.
#[derive(Default)]
struct BatchEffects {
    outcomes: Vec<Outcome>,
    published: Vec<Arc<StoredEvent>>,
    /// Dedupe keys of `published`, inserted together before the commit.
    dedupe_keys: Vec<Option<String>>,
    /// Calls changed by the batch, latest state once each, written together.
    dirty: Vec<CallRecord>,
    dirty_index: HashMap<String, usize>,
    duplicates: u64,
}

impl BatchEffects {
    fn touch(&mut self, call: &CallRecord) {
        match self.dirty_index.get(&call.call_id) {
            Some(&i) => self.dirty[i] = call.clone(),
            None => {
                self.dirty_index
                    .insert(call.call_id.clone(), self.dirty.len());
                self.dirty.push(call.clone());
            }
        }
    }

    /// Writes what is pending, so queries of the calls table see it.
    async fn flush(&mut self, conn: &mut SqliteConnection) -> Result<(), StoreError> {
        rows::upsert_calls(conn, &self.dirty).await?;
        self.dirty.clear();
        self.dirty_index.clear();
        Ok(())
    }
}

impl Writer {
    async fn start(store: &Store, fanout: Fanout) -> Result<Writer, StoreError> {
        let mut connection = store.writer_connection().await?;
        let head = rows::head_seq(&mut connection).await?;
        fanout.set_head(head);
        Ok(Writer {
            connection,
            fanout,
            next_seq: head + 1,
            cache: CallCache::default(),
        })
    }

    async fn commit(&mut self, batch: Vec<Command>) {
        let first_seq = self.next_seq;
        match self.run_batch(&batch).await {
            Ok(effects) => {
                metrics::histogram!("sidecar_writer_batch_size").record(batch.len() as f64);
                metrics::counter!("sidecar_events_appended_total")
                    .increment(effects.published.len() as u64);
                metrics::counter!("sidecar_events_duplicate_total").increment(effects.duplicates);
                for (command, outcome) in batch.into_iter().zip(effects.outcomes) {
                    command.respond(Ok(outcome));
                }
                for event in effects.published {
                    self.fanout.publish(event);
                }
            }
            Err(error) => {
                // Nothing of the batch was stored: hand its seqs out again,
                // and forget call states the batch had changed.
                self.next_seq = first_seq;
                self.cache.calls.clear();
                tracing::error!(%error, commands = batch.len(), "writer transaction failed");
                metrics::counter!("sidecar_writer_errors_total").increment(1);
                let reason = error.to_string();
                for command in batch {
                    command.respond(Err(StoreError::Write(reason.clone())));
                }
            }
        }
    }

    async fn run_batch(&mut self, batch: &[Command]) -> Result<BatchEffects, StoreError> {
        if self.cache.calls.len() > CACHE_LIMIT {
            self.cache.calls.clear();
        }
        let mut tx = self.connection.begin_with("BEGIN IMMEDIATE").await?;
        let mut effects = BatchEffects::default();
        let mut seq = SeqCounter(&mut self.next_seq);
        let cache = &mut self.cache;
        let result = async {
            for command in batch {
                let outcome = match command {
                    Command::Append(intake, _) => {
                        let committed =
                            append(&mut tx, &mut seq, cache, intake, &mut effects).await?;
                        if matches!(committed, Committed::Duplicate { .. }) {
                            effects.duplicates += 1;
                        }
                        Outcome::Append(committed)
                    }
                    Command::SetDone { call_id, done, .. } => Outcome::SetDone(
                        set_done(&mut tx, cache, call_id, *done, &mut effects).await?,
                    ),
                    Command::Sweep {
                        cutoff_ms, now_ms, ..
                    } => Outcome::Sweep(
                        sweep(&mut tx, &mut seq, cache, *cutoff_ms, *now_ms, &mut effects).await?,
                    ),
                    Command::Purge { cutoff_ms, .. } => {
                        effects.flush(&mut tx).await?;
                        cache.calls.clear();
                        let (events, calls) = purge(&mut tx, seq.last(), *cutoff_ms).await?;
                        Outcome::Purge(events, calls)
                    }
                };
                effects.outcomes.push(outcome);
            }
            effects.flush(&mut tx).await?;
            rows::insert_events(&mut tx, &effects.published, &effects.dedupe_keys).await?;
            Ok::<_, StoreError>(())
        }
        .await;
        match result {
            Ok(()) => {
                tx.commit().await?;
                Ok(effects)
            }
            Err(error) => {
                if let Err(rollback) = tx.rollback().await {
                    tracing::warn!(error = %rollback, "rollback failed");
                }
                Err(error)
            }
        }
    }
}

struct SeqCounter<'a>(&'a mut u64);

impl SeqCounter<'_> {
    fn take(&mut self) -> u64 {
        let seq = *self.0;
        *self.0 += 1;
        seq
    }

    /// The highest seq handed out so far (0 when none).
    fn last(&self) -> u64 {
        *self.0 - 1
    }
}

/// Repeats of these are duplicates; dtmf may repeat within a call.
fn dedupe_key(event: &Event) -> Option<String> {
    match event.kind {
        EventKind::NewCall | EventKind::Answer | EventKind::Hangup => {
            Some(format!("{}:{}", event.kind.as_str(), event.call_id))
        }
        EventKind::Dtmf => None,
    }
}

async fn append(
    conn: &mut SqliteConnection,
    seq: &mut SeqCounter<'_>,
    cache: &mut CallCache,
    intake: &Intake,
    effects: &mut BatchEffects,
) -> Result<Committed, StoreError> {
    let event = &intake.event;
    let slot = dedupe_slot(event.kind);
    let entry = cache.entry(conn, &event.call_id).await?;
    // Earlier events of the same batch are in the cache already.
    if let Some(original) = slot.and_then(|i| entry.originals[i]) {
        return Ok(Committed::Duplicate {
            seq: original,
            decision: entry.record.as_ref().and_then(|c| c.decision.clone()),
        });
    }

    let call = calls::apply(
        entry.record.as_ref(),
        event,
        intake.decision.as_ref(),
        intake.received_at_ms,
        false,
    );
    let stored = StoredEvent {
        seq: seq.take(),
        event: event.clone(),
        received_at_ms: intake.received_at_ms,
        synthetic: false,
        decision: intake.decision.clone(),
        call: call.clone(),
        wire: Default::default(),
    };
    if let Some(i) = slot {
        entry.originals[i] = Some(stored.seq);
    }
    entry.record = Some(call.clone());
    effects.touch(&call);
    let appended = stored.seq;
    effects.dedupe_keys.push(dedupe_key(event));
    effects.published.push(Arc::new(stored));

    // sipgate sends no hangup after a Reject: end the call here.
    let rejected = intake
        .decision
        .as_ref()
        .is_some_and(|d| d.action == Action::Reject);
    if event.kind == EventKind::NewCall && rejected && call.state != CallState::Hangup {
        end_synthetically(
            seq,
            cache,
            &call,
            "rejected",
            intake.received_at_ms,
            effects,
        );
    }
    Ok(Committed::Appended {
        seq: appended,
        decision: intake.decision.clone(),
        call,
    })
}

/// Appends a synthetic hangup for `call` and stores the ended call.
fn end_synthetically(
    seq: &mut SeqCounter<'_>,
    cache: &mut CallCache,
    call: &CallRecord,
    cause: &str,
    at_ms: i64,
    effects: &mut BatchEffects,
) {
    let event = calls::synthetic_hangup(call, cause);
    let ended = calls::apply(Some(call), &event, None, at_ms, true);
    let stored = StoredEvent {
        seq: seq.take(),
        event,
        received_at_ms: at_ms,
        synthetic: true,
        decision: None,
        call: ended,
        wire: Default::default(),
    };
    effects.touch(&stored.call);
    cache.store(&stored.call);
    effects.dedupe_keys.push(None);
    effects.published.push(Arc::new(stored));
}

async fn set_done(
    conn: &mut SqliteConnection,
    cache: &mut CallCache,
    call_id: &str,
    done: bool,
    effects: &mut BatchEffects,
) -> Result<Option<CallRecord>, StoreError> {
    let Some(mut call) = cache.entry(conn, call_id).await?.record.clone() else {
        return Ok(None);
    };
    call.done = done;
    call.updated_at_ms = super::now_ms();
    effects.touch(&call);
    cache.store(&call);
    Ok(Some(call))
}

async fn sweep(
    conn: &mut SqliteConnection,
    seq: &mut SeqCounter<'_>,
    cache: &mut CallCache,
    cutoff_ms: i64,
    now_ms: i64,
    effects: &mut BatchEffects,
) -> Result<usize, StoreError> {
    let stale = rows::stale_open_calls(conn, cutoff_ms).await?;
    for call in &stale {
        end_synthetically(seq, cache, call, "timeout", now_ms, effects);
    }
    if !stale.is_empty() {
        tracing::info!(calls = stale.len(), "sweep ended calls with no hangup");
    }
    Ok(stale.len())
}

async fn purge(
    conn: &mut SqliteConnection,
    head: u64,
    cutoff_ms: i64,
) -> Result<(u64, u64), StoreError> {
    // The newest event stays: the sequence restarts from MAX(seq) on open.
    let events = sqlx::query("DELETE FROM events WHERE received_at_ms < $1 AND seq < $2")
        .bind(cutoff_ms)
        .bind(head as i64)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    let calls = sqlx::query("DELETE FROM calls WHERE updated_at_ms < $1")
        .bind(cutoff_ms)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    Ok((events, calls))
}
