//! Durable storage: the event log, the call log, settings and the audit trail.
//!
//! Two backends behind one [`Store`]: SQLite (`sqlite`: embedded, the
//! default, one process per database) and PostgreSQL (`pg`: several
//! replicas on one database). Both keep the same tables, give the same
//! answers and the same guarantees for a single process.
//!
//! The shape:
//! - `database`: [`Store`]. Every read both backends answer with the same
//!   SQL is written once there, generic over sqlx's `Database` and run on
//!   the backend's pool (`backend::Pool`);
//! - `backend`: the `Backend` trait, what a backend does its own way:
//!   catch-up pages, how a settings change is locked and announced, its
//!   writer, and the capabilities only a shared database has (`Replicas`:
//!   leadership, bridge cursors), so the rest of the sidecar never names a
//!   backend;
//! - [`writer`]: the single writer's queue and batch logic, shared; the
//!   backend supplies the connection work (`writer::BatchConn`) and its
//!   own loop steps (`writer::BackendWriter`);
//! - `sql`, `log`, `settings`: the shared SQL (`$n` placeholders,
//!   `ON CONFLICT … DO UPDATE`, nothing one database lacks);
//! - `sqlite/`, `pg/`: the two backends.
//!
//! Adding a backend:
//! 1. `migrations/<name>/`, the same tables and indexes as the others;
//! 2. a `Pool` variant and an arm in `database`'s `on_pool!`, with the
//!    backend's sqlx `Database` meeting the bounds of the shared SQL;
//! 3. a `<name>/` module whose store type implements `Backend`: open
//!    (migrations, who else may use the database), catch-up pages, load
//!    and save settings, `start_writer`, and `settings_changes` /
//!    `replicas` when several processes can share the database;
//! 4. its writer: `BatchConn` (the batch's reads and writes inside one
//!    transaction) and `BackendWriter` (commit, answer, retry; a gap-free
//!    seq on every path, an unanswered COMMIT told from a failed one);
//! 5. `Store::open` choosing it by URL, and `StoreError::is_storage` telling
//!    its storage errors from refusals of the data;
//! 6. the shared suite (`tests.rs`, `testing::Kind`) and the crash,
//!    storage-fault and replica tests run on it in `.ci/run`.

mod backend;
mod database;
pub mod health;
mod log;
pub(crate) mod maintenance;
mod pg;
mod settings;
mod sql;
mod sqlite;
pub mod writer;

use bytes::Bytes;

use crate::calls::{CallRecord, CallState};
use crate::decide::Decision;
use crate::sipgate::event::{Direction, Event};

pub(crate) use backend::is_postgres;
pub use health::{StorageHealth, StorageState};
pub(crate) use log::EventPage;

/// An id for this start of a process, told apart from every other process
/// on the same database and from this one's earlier starts: 12 random
/// bytes in hex (without randomness, the time and the pid).
pub(crate) fn instance_id() -> String {
    let mut id = [0u8; 12];
    if getrandom::fill(&mut id).is_err() {
        // Still unique per process start on this host.
        id[..8].copy_from_slice(&crate::now_ms().to_le_bytes());
        id[8..].copy_from_slice(&std::process::id().to_le_bytes());
    }
    hex::encode(id)
}

/// The page token that continues a call listing after `call`.
pub(crate) fn call_page_token(call: &CallRecord) -> String {
    log::encode_page_token(call.initialized_at_ms, &call.call_id)
}
pub(crate) use maintenance::spawn_maintenance;
pub use writer::{Committed, Intake, Publish, Spool, WriterExit, WriterHandle, spawn_writer};

/// One event of the log, as stored and as streamed.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub seq: u64,
    pub event: Event,
    pub received_at_ms: i64,
    /// Made by the sidecar (end of a rejected call, sweep), not sent by sipgate.
    pub synthetic: bool,
    /// The decision sent back to sipgate (newCall only).
    pub decision: Option<Decision>,
    /// The call after this event was applied.
    pub call: CallRecord,
}

impl StoredEvent {
    /// The event as streamed: a `sidecar.v1.CallEvent`.
    pub fn to_proto(&self) -> crate::proto::CallEvent {
        crate::encode::call_event(
            self.seq,
            &self.event,
            self.received_at_ms,
            self.synthetic,
            self.decision.as_ref(),
            &self.call,
        )
    }

    /// The encoded [`StoredEvent::to_proto`]: what is stored with the event
    /// and sent to subscribers.
    pub fn encode(&self) -> Bytes {
        Bytes::from(prost::Message::encode_to_vec(&self.to_proto()))
    }

    /// The event back from its stored wire form.
    pub fn decode(wire: &[u8]) -> Result<StoredEvent, StoreError> {
        let message: crate::proto::CallEvent =
            prost::Message::decode(wire).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let (seq, received_at_ms, synthetic) =
            (message.seq, message.received_at_ms, message.synthetic);
        let (event, decision, call) =
            crate::encode::event_from(message).map_err(StoreError::Corrupt)?;
        Ok(StoredEvent {
            seq,
            event,
            received_at_ms,
            synthetic,
            decision,
            call,
        })
    }
}

/// An event of the log in its wire form, as a page of the log holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct WireEvent {
    pub seq: u64,
    /// The encoded `sidecar.v1.CallEvent`.
    pub wire: Bytes,
}

pub use crate::settings::{AuditEntry, AuditRecord};

/// Filters and paging for `Store::list_calls`; results are newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallQuery {
    /// Page size, as [`crate::paging::CALLS`] clamps it (0 = the default).
    pub limit: u32,
    /// The cursor returned with the previous page; `None` or "" starts at the newest.
    pub page_token: Option<String>,
    pub direction: Option<Direction>,
    pub done: Option<bool>,
    pub state: Option<CallState>,
    /// Matches `from` or `to` exactly.
    pub number: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {path}: {reason}")]
    Open { path: String, reason: String },
    /// The database server could not be reached at all (connection refused,
    /// timed out, not accepting connections yet): worth waiting for, unlike
    /// a refusal (a wrong password, an untrusted certificate).
    #[error("cannot open database {path}: {reason}")]
    Unreachable { path: String, reason: String },
    #[error("invalid page token")]
    BadPageToken,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A read failed below sqlx (catch-up pages read through the
    /// connection's handle).
    #[error("reading the database failed: {0}")]
    Read(String),
    /// A stored row that no longer decodes (hand-edited, or a newer schema).
    #[error("stored data cannot be decoded: {0}")]
    Corrupt(String),
    /// The writer's transaction failed because of the storage (I/O, full
    /// disk, read-only, locked, a file removed); nothing of the batch was
    /// stored.
    #[error("writing to the database failed: {0}")]
    Write(String),
    /// The database refused the writer's statement itself (a constraint, a
    /// value it cannot take); nothing of the batch was stored.
    #[error("the database refused the write: {0}")]
    Refused(String),
    #[error("the event writer is not running")]
    WriterClosed,
    /// The writer's queue is full (storage failing or far behind); the event
    /// was not accepted.
    #[error("the event writer's queue is full")]
    QueueFull,
}

impl StoreError {
    /// True for errors of the storage itself (I/O, full disk, read-only,
    /// locked, a file removed), which the writer retries until they pass;
    /// false for a refusal of the data (a constraint, a row that does not
    /// decode), which it retries once.
    pub(crate) fn is_storage(&self) -> bool {
        match self {
            StoreError::Write(_) | StoreError::Open { .. } | StoreError::Unreachable { .. } => true,
            StoreError::Database(sqlx::Error::Database(db))
                if db
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .is_some() =>
            {
                db.code().is_some_and(|code| pg::is_storage_code(&code))
            }
            StoreError::Database(sqlx::Error::Database(db)) => {
                // SQLite's primary result codes: BUSY, LOCKED, READONLY,
                // IOERR, CORRUPT, FULL, CANTOPEN, PROTOCOL, NOTADB.
                let primary = db
                    .code()
                    .and_then(|c| c.parse::<i32>().ok())
                    .map(|c| c & 0xff);
                matches!(primary, Some(5 | 6 | 8 | 10 | 11 | 13 | 14 | 15 | 26))
            }
            StoreError::Database(
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed,
            ) => true,
            _ => false,
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

pub use database::Store;
pub(crate) use pg::Replicas;

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests;
