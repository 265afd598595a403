//! One batch of commands in one transaction, and what it produced: the
//! answers and the new events, released only after the commit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use sqlx::sqlite::SqliteConnection;

use super::cache::CallCache;
use super::conn::{BatchConn, SqliteBatch};
use super::{Command, Committed, Intake, Outcome, Publish};
use crate::calls::{self, CallRecord, SyntheticEnd};
use crate::store::{SqliteStore, StoreError, StoredEvent, WireEvent, sql};
use crate::telemetry::names;

/// The database and WAL files as they were when the writer started: SQLite
/// keeps writing to a file that was removed while open, so what it commits
/// would be gone at the next start. A file that is no longer the one opened
/// is a storage failure (writes are held) until the original is back.
struct Files {
    database: Option<PathBuf>,
    database_id: Option<FileId>,
    wal_id: Option<FileId>,
    /// The removed WAL was checkpointed into the database already.
    wal_rescued: bool,
}

type FileId = (u64, u64);

fn file_id(path: &Path) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

impl Files {
    fn new(database: Option<&Path>) -> Files {
        let database = database.map(Path::to_path_buf);
        let database_id = database.as_deref().and_then(file_id);
        let wal_id = database.as_deref().and_then(|db| file_id(&wal_path(db)));
        Files {
            database,
            database_id,
            wal_id,
            wal_rescued: false,
        }
    }

    async fn check(&mut self, connection: &mut SqliteConnection) -> Result<(), StoreError> {
        let Some(database) = &self.database else {
            return Ok(());
        };
        if file_id(database) != self.database_id {
            return Err(StoreError::Write(format!(
                "the database file {} was removed or replaced while in use; events are held \
                 until the original file is back at that path (restart the server to use another file)",
                database.display()
            )));
        }
        let wal = wal_path(database);
        let now = file_id(&wal);
        if self.wal_id.is_none() {
            self.wal_id = now;
            return Ok(());
        }
        if now == self.wal_id {
            return Ok(());
        }
        if !self.wal_rescued {
            // What was committed to the removed WAL goes into the database
            // file, which is still in place.
            match sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&mut *connection)
                .await
            {
                Ok(_) => {
                    self.wal_rescued = true;
                    tracing::error!(wal = %wal.display(), "the WAL file was removed while in use; its committed events were copied into the database");
                }
                Err(error) => {
                    tracing::error!(wal = %wal.display(), %error, "the WAL file was removed while in use and could not be copied into the database")
                }
            }
        }
        Err(StoreError::Write(format!(
            "the WAL file {} was removed or replaced while in use; events are held, restart the server",
            wal.display()
        )))
    }
}

fn wal_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// The writer task's state between batches.
pub(super) struct Writer {
    store: SqliteStore,
    connection: SqliteConnection,
    /// Set after a failed transaction: the next attempt opens a new
    /// connection and re-reads the head first.
    reconnect: bool,
    publisher: Box<dyn Publish>,
    /// The seq the next appended event gets.
    next_seq: u64,
    /// Calls as stored; the writer is the only one changing them.
    cache: CallCache,
    files: Files,
}

/// What one batch produced, applied only after its commit.
#[derive(Default)]
pub(super) struct BatchEffects {
    outcomes: Vec<Outcome>,
    published: Vec<StoredEvent>,
    /// The encoded form of each of `published`, stored with it.
    wires: Vec<Bytes>,
    /// Dedupe keys of `published`, inserted together before the commit.
    dedupe_keys: Vec<Option<String>>,
    /// Calls changed by the batch, latest state once each, written together.
    dirty: Vec<CallRecord>,
    dirty_index: HashMap<String, usize>,
    duplicates: u64,
}

impl BatchEffects {
    /// Answers every command of the committed batch; returns its new
    /// events, in seq order.
    pub(super) fn respond(self, batch: Vec<Command>) -> impl Iterator<Item = WireEvent> {
        metrics::histogram!(names::WRITER_BATCH_SIZE).record(batch.len() as f64);
        metrics::counter!(names::EVENTS_APPENDED).increment(self.published.len() as u64);
        metrics::counter!(names::EVENTS_DUPLICATE).increment(self.duplicates);
        for (command, outcome) in batch.into_iter().zip(self.outcomes) {
            command.respond(Ok(outcome));
        }
        self.published
            .into_iter()
            .zip(self.wires)
            .map(|(event, wire)| WireEvent {
                seq: event.seq,
                wire,
            })
    }

    /// The number of events the batch appended.
    pub(super) fn appended(&self) -> usize {
        self.published.len()
    }

    /// The last event the batch appended, in its wire form.
    pub(super) fn last_event(&self) -> Option<(u64, &Bytes)> {
        Some((self.published.last()?.seq, self.wires.last()?))
    }

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
    async fn flush(&mut self, conn: &mut impl BatchConn) -> Result<(), StoreError> {
        conn.upsert_calls(&self.dirty).await?;
        self.dirty.clear();
        self.dirty_index.clear();
        Ok(())
    }
}

impl Writer {
    /// Takes the store's writer connection and reports the stored head.
    pub(super) async fn start(
        store: &SqliteStore,
        publisher: Box<dyn Publish>,
    ) -> Result<Writer, StoreError> {
        let mut connection = store.writer_connection().await?;
        let head = sql::head_seq(&mut connection).await?;
        publisher.set_head(head);
        let files = Files::new(store.file());
        Ok(Writer {
            store: store.clone(),
            connection,
            reconnect: false,
            publisher,
            next_seq: head + 1,
            cache: CallCache::default(),
            files,
        })
    }

    /// The seq the next appended event gets.
    pub(super) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Runs `batch` in one transaction. On success the caller hands the
    /// effects to [`Writer::finish`]; on failure nothing of the batch was
    /// stored, the batch can be tried again, and the next attempt starts
    /// from the position stored in the database (a new connection, the head
    /// re-read, the call cache dropped), never from a stale seq.
    pub(super) async fn try_commit(
        &mut self,
        batch: &[Command],
    ) -> Result<BatchEffects, StoreError> {
        self.files.check(&mut self.connection).await?;
        if self.reconnect {
            // The new connection is open before the old one closes, so the
            // WAL is never released (and recreated) in between.
            let mut connection = self.store.reconnect_writer().await?;
            let head = sql::head_seq(&mut connection).await?;
            self.connection = connection;
            self.next_seq = head + 1;
            self.cache.clear();
            self.reconnect = false;
        }
        #[cfg(test)]
        {
            let on = if self.store.fault() { 1 } else { 0 };
            sqlx::query(&format!("PRAGMA query_only = {on}"))
                .execute(&mut self.connection)
                .await?;
        }
        let first_seq = self.next_seq;
        let result = self.run_batch(batch).await;
        if result.is_err() {
            self.next_seq = first_seq;
            self.cache.clear();
            self.reconnect = true;
        }
        result
    }

    /// Answers every command of a committed batch and publishes its events.
    pub(super) fn finish(&mut self, batch: Vec<Command>, effects: BatchEffects) {
        for event in effects.respond(batch) {
            self.publisher.publish(event);
        }
    }

    /// Answers every command of a batch that will not be stored with `error`.
    pub(super) fn fail(batch: Vec<Command>, error: &StoreError) {
        let reason = error.to_string();
        for command in batch {
            command.respond(Err(StoreError::Write(reason.clone())));
        }
    }

    /// Runs `batch` in one transaction, in two round trips to the
    /// connection for the common case: `BEGIN` with the reads of every call
    /// the batch touches, then every write with `COMMIT`. (A sweep or a purge
    /// adds its own statements in between.)
    async fn run_batch(&mut self, batch: &[Command]) -> Result<BatchEffects, StoreError> {
        self.cache.trim();
        let mut conn = SqliteBatch(&mut self.connection);
        let result = apply(&mut conn, &mut self.next_seq, &mut self.cache, batch).await;
        match result {
            // `apply` committed with its last write.
            Ok(effects) => Ok(effects),
            Err(error) => {
                // Whatever ran of the batch is undone; "no transaction is
                // active" (it never began, or SQLite ended it) is fine.
                if let Err(rollback) = sqlx::query("ROLLBACK").execute(&mut *conn.0).await {
                    tracing::debug!(error = %rollback, "rollback after a failed batch");
                }
                Err(error)
            }
        }
    }
}

/// Runs the commands of `batch` on `conn`, inside the transaction the
/// caller opened: appended events take seqs from `next_seq` on (advanced
/// past the last one), calls are read through `cache`. Nothing is
/// committed here.
pub(super) async fn apply<C: BatchConn>(
    conn: &mut C,
    next_seq: &mut u64,
    cache: &mut CallCache,
    batch: &[Command],
) -> Result<BatchEffects, StoreError> {
    // Every call the batch touches, read at once.
    let call_ids: Vec<&str> = batch
        .iter()
        .filter_map(|command| match command {
            Command::Append(intake, _) => Some(intake.event.call_id.as_str()),
            Command::SetDone { call_id, .. } => Some(call_id.as_str()),
            Command::Sweep { .. } | Command::Purge { .. } => None,
        })
        .collect();
    let mut effects = BatchEffects::default();
    let mut seq = SeqCounter(next_seq);
    cache.load_missing(&mut *conn, &call_ids).await?;
    for command in batch {
        let outcome = match command {
            Command::Append(intake, _) => {
                let committed = append(&mut *conn, &mut seq, cache, intake, &mut effects).await?;
                if matches!(committed, Committed::Duplicate { .. }) {
                    effects.duplicates += 1;
                }
                Outcome::Append(committed)
            }
            Command::SetDone { call_id, done, .. } => {
                Outcome::SetDone(set_done(&mut *conn, cache, call_id, *done, &mut effects).await?)
            }
            Command::Sweep {
                cutoff_ms, now_ms, ..
            } => Outcome::Sweep(
                sweep(
                    &mut *conn,
                    &mut seq,
                    cache,
                    *cutoff_ms,
                    *now_ms,
                    &mut effects,
                )
                .await?,
            ),
            Command::Purge { cutoff_ms, .. } => {
                effects.flush(&mut *conn).await?;
                cache.clear();
                let (events, calls) = conn.purge(seq.last(), *cutoff_ms).await?;
                Outcome::Purge(events, calls)
            }
        };
        effects.outcomes.push(outcome);
    }
    effects.wires = effects.published.iter().map(StoredEvent::encode).collect();
    conn.store_batch(
        &effects.dirty,
        &effects.published,
        &effects.wires,
        &effects.dedupe_keys,
    )
    .await?;
    Ok(effects)
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

async fn append(
    conn: &mut impl BatchConn,
    seq: &mut SeqCounter<'_>,
    cache: &mut CallCache,
    intake: &Intake,
    effects: &mut BatchEffects,
) -> Result<Committed, StoreError> {
    let event = &intake.event;
    let entry = cache.entry(conn, &event.call_id).await?;
    // Earlier events of the same batch are in the cache already.
    if let Some(original) = entry.original(event.kind) {
        return Ok(Committed::Duplicate {
            seq: original,
            decision: entry.record.as_ref().and_then(|c| c.decision.clone()),
        });
    }
    if calls::answers_a_prompt_again(entry.record.as_ref(), event, intake.decision.as_ref()) {
        return Ok(Committed::Replayed);
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
    };
    entry.set_original(event.kind, stored.seq);
    entry.record = Some(call.clone());
    effects.touch(&call);
    let appended = stored.seq;
    effects
        .dedupe_keys
        .push(calls::dedupe_key(event.kind, &event.call_id));
    effects.published.push(stored);

    if let Some(end) = calls::end_if_rejected(
        event,
        intake.decision.as_ref(),
        &call,
        intake.received_at_ms,
    ) {
        append_synthetic(seq, cache, end, intake.received_at_ms, effects);
    }
    Ok(Committed::Appended {
        seq: appended,
        decision: intake.decision.clone(),
        call,
    })
}

/// Appends the synthetic hangup of `end`, received at `at_ms`, and stores
/// the ended call.
fn append_synthetic(
    seq: &mut SeqCounter<'_>,
    cache: &mut CallCache,
    end: SyntheticEnd,
    at_ms: i64,
    effects: &mut BatchEffects,
) {
    let stored = StoredEvent {
        seq: seq.take(),
        event: end.hangup,
        received_at_ms: at_ms,
        synthetic: true,
        decision: None,
        call: end.call,
    };
    effects.touch(&stored.call);
    cache.store(&stored.call);
    effects.dedupe_keys.push(None);
    effects.published.push(stored);
}

async fn set_done(
    conn: &mut impl BatchConn,
    cache: &mut CallCache,
    call_id: &str,
    done: bool,
    effects: &mut BatchEffects,
) -> Result<Option<CallRecord>, StoreError> {
    let Some(mut call) = cache.entry(conn, call_id).await?.record.clone() else {
        return Ok(None);
    };
    call.done = done;
    call.updated_at_ms = crate::now_ms();
    effects.touch(&call);
    cache.store(&call);
    Ok(Some(call))
}

async fn sweep(
    conn: &mut impl BatchConn,
    seq: &mut SeqCounter<'_>,
    cache: &mut CallCache,
    cutoff_ms: i64,
    now_ms: i64,
    effects: &mut BatchEffects,
) -> Result<usize, StoreError> {
    // Calls this batch changed count as they are now, not as last committed.
    effects.flush(conn).await?;
    let open = conn.stale_open_calls(cutoff_ms).await?;
    let ends = calls::end_stale(&open, cutoff_ms, now_ms);
    let ended = ends.len();
    for end in ends {
        append_synthetic(seq, cache, end, now_ms, effects);
    }
    if ended > 0 {
        tracing::info!(calls = ended, "sweep ended calls with no hangup");
    }
    Ok(ended)
}
