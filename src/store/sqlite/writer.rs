//! The SQLite writer: its own thread, owning one connection (rusqlite, not
//! sqlx), with every statement prepared once and kept.
//!
//! A batch costs one channel wake-up to reach this thread and one answer
//! per command back; everything in between is plain calls into SQLite on
//! this thread: `BEGIN IMMEDIATE`, one cached statement per row read or
//! written, `COMMIT` (one fsync, `synchronous=FULL`). The batch logic is the
//! one both backends share ([`super::batch::apply`]); its futures complete
//! without ever waiting here, since every call below is synchronous.
//!
//! The WAL is copied into the database by a checkpointer thread on its own
//! connection (a passive checkpoint after commits, at most every
//! [`CHECKPOINT_EVERY`]), so no webhook's commit waits for a checkpoint; the
//! writer's own automatic checkpoint stays on at [`AUTOCHECKPOINT_PAGES`]
//! as a backstop, should the checkpointer fall behind.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension as _, params};

use super::SqliteStore;
use crate::calls::CallRecord;
use crate::store::StoreError;
use crate::store::sql::{self, CALL_COLUMNS, CALL_UPSERT, EVENT_COLUMNS, call_of};
use crate::store::writer::{
    BackendWriter, BatchConn, BatchEffects, BatchRows, CallCache, Command, Loaded, Publish, apply,
};

/// How often the checkpointer looks for commits to copy into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);
/// The writer's own automatic checkpoint (pages of the WAL, 4 KiB each):
/// only reached when the checkpointer is far behind.
const AUTOCHECKPOINT_PAGES: u32 = 16_384;
/// How long a statement waits for a lock before failing with SQLITE_BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The writer's state between batches.
pub(in crate::store) struct SqliteWriter {
    /// For the test hook that makes the connection refuse writes.
    #[cfg(test)]
    store: SqliteStore,
    connection: Connection,
    /// Set after a failed transaction: the next attempt opens a new
    /// connection and re-reads the head first.
    reconnect: bool,
    publisher: Box<dyn Publish>,
    /// The seq the next appended event gets.
    next_seq: u64,
    /// Calls as stored; the writer is the only one changing them.
    cache: CallCache,
    files: Files,
    checkpointer: Option<Checkpointer>,
}

impl SqliteWriter {
    /// Opens the writer's connection and reports the stored head.
    pub(super) fn start(
        store: &SqliteStore,
        publisher: Box<dyn Publish>,
    ) -> Result<SqliteWriter, StoreError> {
        let database = store.file();
        let connection = open(database)?;
        let head = head_seq(&connection)?;
        publisher.set_head(head);
        let files = Files::new(database);
        let checkpointer = Checkpointer::start(database.to_path_buf());
        Ok(SqliteWriter {
            #[cfg(test)]
            store: store.clone(),
            connection,
            reconnect: false,
            publisher,
            next_seq: head + 1,
            cache: CallCache::default(),
            files,
            checkpointer,
        })
    }
}

#[async_trait::async_trait]
impl BackendWriter for SqliteWriter {
    fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// After a failure the next attempt opens a new connection, re-reads
    /// the head and drops the call cache.
    async fn try_commit(&mut self, batch: &[Command]) -> Result<BatchEffects, StoreError> {
        self.files.check(&self.connection)?;
        if self.reconnect {
            // The new connection is open before the old one closes, so the
            // WAL is never released (and recreated) in between.
            let connection = open(&self.files.database)?;
            let head = head_seq(&connection)?;
            self.connection = connection;
            self.next_seq = head + 1;
            self.cache.clear();
            self.reconnect = false;
        }
        #[cfg(test)]
        self.connection
            .pragma_update(None, "query_only", self.store.fault())
            .map_err(write_error)?;
        let first_seq = self.next_seq;
        self.cache.trim();
        let mut conn = SqliteBatch(&mut self.connection);
        let result = apply(&mut conn, &mut self.next_seq, &mut self.cache, batch).await;
        if let Err(error) = &result {
            // Whatever ran of the batch is undone; "no transaction is
            // active" (it never began, or SQLite ended it) is fine.
            if !self.connection.is_autocommit()
                && let Err(rollback) = self.connection.execute_batch("ROLLBACK")
            {
                tracing::debug!(error = %rollback, %error, "rollback after a failed batch");
            }
            self.next_seq = first_seq;
            self.cache.clear();
            self.reconnect = true;
        } else if let Some(checkpointer) = &self.checkpointer {
            checkpointer.committed();
        }
        result
    }

    fn finish(&mut self, batch: Vec<Command>, effects: BatchEffects) {
        effects.respond(batch, |event| self.publisher.publish(event));
    }

    /// The writer has its own thread: sleeping here holds up no one else.
    async fn pause(&mut self, wait: Duration) {
        std::thread::sleep(wait)
    }
}

/// Opens a connection to the existing database `path` for writing (never
/// creating it: a removed database must not silently start over empty).
fn open(path: &Path) -> Result<Connection, StoreError> {
    let open_error =
        |e: rusqlite::Error| StoreError::Write(format!("cannot open {}: {e}", path.display()));
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(open_error)?;
    connection.busy_timeout(BUSY_TIMEOUT).map_err(open_error)?;
    connection
        .execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
             PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES};"
        ))
        .map_err(open_error)?;
    connection.set_prepared_statement_cache_capacity(32);
    Ok(connection)
}

fn head_seq(connection: &Connection) -> Result<u64, StoreError> {
    let head: i64 = connection
        .query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |row| {
            row.get(0)
        })
        .map_err(write_error)?;
    Ok(head as u64)
}

/// A failed statement of the writer: errors of the storage itself (I/O, full
/// disk, read-only, locked, a file removed) are [`StoreError::Write`], which
/// the writer retries until they pass; anything else (a constraint, a row
/// that does not decode) is [`StoreError::Refused`].
fn write_error(error: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::*;
    match &error {
        rusqlite::Error::SqliteFailure(failure, _)
            if matches!(
                failure.code,
                DatabaseBusy
                    | DatabaseLocked
                    | ReadOnly
                    | SystemIoFailure
                    | DatabaseCorrupt
                    | DiskFull
                    | CannotOpen
                    | FileLockingProtocolFailed
                    | NotADatabase
            ) =>
        {
            StoreError::Write(error.to_string())
        }
        _ => StoreError::Refused(error.to_string()),
    }
}

/// The writer's connection while it runs a batch: the reads open the
/// transaction (`BEGIN IMMEDIATE`) and the writes commit it. On an error the
/// transaction may still be open: the caller rolls it back.
struct SqliteBatch<'c>(&'c mut Connection);

impl SqliteBatch<'_> {
    fn call(&self, call_id: &str) -> Result<Option<CallRecord>, StoreError> {
        let mut statement = self
            .0
            .prepare_cached("SELECT record, wire FROM calls WHERE call_id = ?1")
            .map_err(write_error)?;
        let row: Option<(String, Option<Vec<u8>>)> = statement
            .query_row([call_id], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()
            .map_err(write_error)?;
        row.map(|(record, wire)| call_of(&record, wire.as_deref()))
            .transpose()
    }

    fn seqs(&self, keys: &[String]) -> Result<Vec<(String, u64)>, StoreError> {
        let mut statement = self
            .0
            .prepare_cached("SELECT seq FROM events WHERE dedupe_key = ?1")
            .map_err(write_error)?;
        let mut found = Vec::new();
        for key in keys {
            let seq: Option<i64> = statement
                .query_row([key], |row| row.get(0))
                .optional()
                .map_err(write_error)?;
            if let Some(seq) = seq {
                found.push((key.clone(), seq as u64));
            }
        }
        Ok(found)
    }

    fn upsert(&self, calls: &[CallRecord]) -> Result<(), StoreError> {
        let mut statement = self
            .0
            .prepare_cached(&format!(
                "INSERT INTO calls ({CALL_COLUMNS}) VALUES \
                 (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, '', ?16)\
                 {CALL_UPSERT}"
            ))
            .map_err(write_error)?;
        for call in calls {
            let wire = prost::Message::encode_to_vec(&crate::encode::call(call));
            statement
                .execute(params![
                    call.call_id,
                    call.direction.map(|d| d.as_str()),
                    call.from,
                    call.to,
                    call.state.as_str(),
                    call.done,
                    call.cause,
                    call.initialized_at_ms,
                    call.start_at_ms,
                    call.end_at_ms,
                    call.updated_at_ms,
                    call.orig_call_id,
                    call.first_leg_call_id,
                    call.xcid,
                    call.ended_synthetically,
                    wire,
                ])
                .map_err(write_error)?;
        }
        Ok(())
    }

    fn insert(&self, batch: BatchRows<'_>) -> Result<(), StoreError> {
        let mut statement = self
            .0
            .prepare_cached(&format!(
                "INSERT INTO events ({EVENT_COLUMNS}) VALUES \
                 (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, '', ?10)"
            ))
            .map_err(write_error)?;
        let rows = batch.events.iter().zip(batch.dedupe_keys).zip(batch.wires);
        for ((e, key), wire) in rows {
            statement
                .execute(params![
                    e.seq as i64,
                    e.event.kind.as_str(),
                    e.event.call_id,
                    e.event.direction.map(|d| d.as_str()),
                    e.event.from,
                    e.event.to,
                    e.received_at_ms,
                    e.synthetic,
                    key.as_deref(),
                    wire.as_ref(),
                ])
                .map_err(write_error)?;
        }
        Ok(())
    }

    fn execute(&self, sql: &str) -> Result<(), StoreError> {
        self.0
            .prepare_cached(sql)
            .and_then(|mut statement| statement.execute([]))
            .map(drop)
            .map_err(write_error)
    }
}

impl BatchConn for SqliteBatch<'_> {
    async fn load_call(&mut self, call_id: &str) -> Result<Option<CallRecord>, StoreError> {
        self.call(call_id)
    }

    async fn load_batch(
        &mut self,
        call_ids: &[&str],
        keys: &[String],
    ) -> Result<Loaded, StoreError> {
        self.execute("BEGIN IMMEDIATE")?;
        let mut calls = Vec::with_capacity(call_ids.len());
        for id in call_ids {
            calls.extend(self.call(id)?);
        }
        Ok((calls, self.seqs(keys)?))
    }

    async fn seqs_by_dedupe_keys(
        &mut self,
        keys: &[String],
    ) -> Result<Vec<(String, u64)>, StoreError> {
        self.seqs(keys)
    }

    async fn upsert_calls(&mut self, calls: &[CallRecord]) -> Result<(), StoreError> {
        self.upsert(calls)
    }

    /// The writes, then `COMMIT`.
    async fn store_batch(&mut self, batch: BatchRows<'_>) -> Result<(), StoreError> {
        self.upsert(batch.calls)?;
        self.insert(batch)?;
        self.execute("COMMIT")
    }

    async fn stale_open_calls(&mut self, cutoff_ms: i64) -> Result<Vec<CallRecord>, StoreError> {
        let mut statement = self
            .0
            .prepare_cached(sql::STALE_OPEN_CALLS)
            .map_err(write_error)?;
        let rows = statement
            .query_map([cutoff_ms], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, Option<Vec<u8>>>(1)?))
            })
            .map_err(write_error)?;
        let mut calls = Vec::new();
        for row in rows {
            let (record, wire) = row.map_err(write_error)?;
            calls.push(call_of(&record, wire.as_deref())?);
        }
        Ok(calls)
    }

    async fn purge(&mut self, head: u64, cutoff_ms: i64) -> Result<(u64, u64), StoreError> {
        let events = self
            .0
            .prepare_cached(sql::PURGE_EVENTS)
            .and_then(|mut s| s.execute(params![cutoff_ms, head as i64]))
            .map_err(write_error)?;
        let calls = self
            .0
            .prepare_cached(sql::PURGE_CALLS)
            .and_then(|mut s| s.execute([cutoff_ms]))
            .map_err(write_error)?;
        Ok((events as u64, calls as u64))
    }
}

/// Copies committed WAL frames into the database on its own thread and
/// connection (a passive checkpoint: it never waits for the writer, and
/// the writer never waits for it).
struct Checkpointer {
    shared: Arc<CheckpointShared>,
}

#[derive(Default)]
struct CheckpointShared {
    commits: AtomicU64,
    stop: AtomicBool,
}

impl Checkpointer {
    /// `None` (the writer's automatic checkpoint then does the work) when
    /// the thread or its connection cannot be had.
    fn start(database: PathBuf) -> Option<Checkpointer> {
        let connection = match open(&database) {
            Ok(connection) => connection,
            Err(error) => {
                tracing::warn!(%error, "no checkpointer; the writer checkpoints the WAL itself");
                return None;
            }
        };
        let shared = Arc::new(CheckpointShared::default());
        let thread = shared.clone();
        let started = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(connection, &thread));
        match started {
            Ok(_) => Some(Checkpointer { shared }),
            Err(error) => {
                tracing::warn!(%error, "no checkpointer; the writer checkpoints the WAL itself");
                None
            }
        }
    }

    fn committed(&self) {
        self.shared.commits.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

fn checkpoint_loop(connection: Connection, shared: &CheckpointShared) {
    let mut seen = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        std::thread::sleep(CHECKPOINT_EVERY);
        let commits = shared.commits.load(Ordering::Relaxed);
        if commits == seen {
            continue;
        }
        seen = commits;
        if let Err(error) = connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::debug!(%error, "passive checkpoint failed; trying again later");
        }
    }
}

/// The database and WAL files as they were when the writer started: SQLite
/// keeps writing to a file that was removed while open, so what it commits
/// would be gone at the next start. A file that is no longer the one opened
/// is a storage failure (writes are held) until the original is back.
struct Files {
    database: PathBuf,
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
    fn new(database: &Path) -> Files {
        Files {
            database: database.to_path_buf(),
            database_id: file_id(database),
            wal_id: file_id(&wal_path(database)),
            wal_rescued: false,
        }
    }

    fn check(&mut self, connection: &Connection) -> Result<(), StoreError> {
        let database = &self.database;
        if file_id(database) != self.database_id {
            return Err(StoreError::Write(format!(
                "the database file {} was removed or replaced while in use; writes fail \
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
            match connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
                Ok(()) => {
                    self.wal_rescued = true;
                    tracing::error!(wal = %wal.display(), "the WAL file was removed while in use; its committed events were copied into the database");
                }
                Err(error) => {
                    tracing::error!(wal = %wal.display(), %error, "the WAL file was removed while in use and could not be copied into the database")
                }
            }
        }
        Err(StoreError::Write(format!(
            "the WAL file {} was removed or replaced while in use; writes fail until the server restarts",
            wal.display()
        )))
    }
}

fn wal_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}
