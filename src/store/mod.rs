//! Durable storage: the event log, the call log, settings and the audit trail.
//!
//! Two backends behind one [`Store`]: SQLite (embedded, the default, one
//! process per database) and PostgreSQL ([`pg`], several replicas on one
//! database). The rest of this page describes SQLite.
//!
//! SQLite in WAL mode with `synchronous=FULL`, so an acknowledged event
//! survives `kill -9` and power loss. Reads go through a small pool; every
//! event write goes through the single writer task ([`writer`]) on its own
//! dedicated connection, which batches many events into one transaction.
//! The SQL sticks to what PostgreSQL also accepts (`$n` placeholders,
//! `ON CONFLICT … DO UPDATE`, no SQLite-only functions); [`pg`] runs the
//! same statements with PostgreSQL's types, and the writer's batch logic is
//! shared through `writer::conn`.
//!
//! - [`open`](Store::open): connections and migrations;
//! - `log`: reads of the event log and the call log;
//! - `pages`: catch-up pages, read straight from a pooled connection's
//!   locked handle rather than row by row through sqlx;
//! - `settings`: the settings snapshot and its audit trail;
//! - `rows`: the SQL shared by the reads and the writer;
//! - `sql`: statements built at run time in code generic over the database;
//! - `backend`: [`Store`], which hands each call to the backend in use.

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

pub use health::{StorageHealth, StorageState};
pub(crate) use log::EventPage;
pub(crate) use maintenance::spawn_maintenance;
pub use writer::{Committed, Intake, Publish, WriterHandle, spawn_writer};

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
            StoreError::Write(_) | StoreError::Open { .. } => true,
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
