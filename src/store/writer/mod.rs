//! The single writer: every event, call-log change, sweep and purge goes
//! through one writer on one dedicated connection (on SQLite a thread of
//! its own, on PostgreSQL a task). It waits for one command,
//! takes whatever else is already queued (group commit), runs the lot in one
//! `BEGIN IMMEDIATE` transaction, commits (one fsync for the batch), then
//! answers every caller and publishes the new events in sequence order.
//!
//! Sequence numbers are assigned here from an in-memory counter; after a
//! failed transaction the writer opens a new connection and re-reads the
//! stored head, so the log never has a gap and never repeats a stale seq.
//! A batch that fails because of the storage (read-only, full, I/O, a file
//! removed) is kept and retried with capped backoff until it commits; the
//! queue holds what arrives meanwhile, and [`crate::store::StorageHealth`]
//! says so to `/readyz` and the gRPC health service.
//!
//! - `queue`: the handle callers submit through, and the loop;
//! - `batch`: one transaction of commands and what it produced;
//! - `cache`: the writer's view of recent calls and their dedupe keys;
//! - `conn`: what a batch asks of its connection (`BatchConn`);
//! - `BackendWriter`: what the loop asks of the backend's writer, which
//!   each backend supplies (`sqlite::writer`: its own thread and
//!   connection, statements prepared once, the WAL checkpointed off the
//!   commit path; `pg::writer`: seqs from the database under a lock, calls
//!   read under it, fan-out fed from the table).

mod batch;
mod cache;
mod conn;
mod queue;
pub mod spool;

use std::time::Duration;

use tokio::sync::oneshot;

use super::{StoreError, WireEvent};
use crate::calls::CallRecord;
use crate::decide::Decision;
use crate::sipgate::event::Event;

pub(in crate::store) use batch::{BatchEffects, apply, call_ids, fail};
pub(in crate::store) use cache::CallCache;
pub(in crate::store) use conn::{BatchConn, BatchRows, Loaded};
#[cfg(test)]
pub(crate) use queue::spawn_with_capacity;
pub use queue::{WriterExit, WriterHandle, spawn_writer};
pub use spool::Spool;

/// The backend's writer, as the loop drives it ([`crate::store::Backend::start_writer`]).
#[async_trait::async_trait]
pub(in crate::store) trait BackendWriter: Send {
    /// The seq the next appended event gets, as far as this process knows.
    fn next_seq(&self) -> u64;

    /// Runs `batch` in one transaction. On success the loop hands the
    /// effects to [`BackendWriter::finish`]; on failure nothing of the
    /// batch was stored and it can be tried again, from the position stored
    /// in the database, never from a stale seq.
    async fn try_commit(&mut self, batch: &[Command]) -> Result<BatchEffects, StoreError>;

    /// Answers every command of a committed batch and publishes its events.
    fn finish(&mut self, batch: Vec<Command>, effects: BatchEffects);

    /// Answers every command of a batch that will not be stored with `error`.
    fn fail(&mut self, batch: Vec<Command>, error: &StoreError) {
        fail(batch, error)
    }

    /// The batch that failed was written to the spool instead: a commit
    /// of it still in doubt is no longer this writer's to resolve (folding
    /// finds its events by their dedupe keys).
    fn spooled(&mut self) {}

    /// Waits `wait` before a failed batch is tried again.
    async fn pause(&mut self, wait: Duration);
}

/// Where the writer hands what it committed (the fan-out, in a server).
pub trait Publish: Send + 'static {
    /// The stored head, once, when the writer starts: before its first
    /// commit, the log ends at `seq`.
    fn set_head(&self, seq: u64);
    /// One committed event in its wire form (the encoded `CallEvent`, as
    /// stored); called after its transaction committed, in seq order,
    /// without gaps.
    fn publish(&self, event: WireEvent);
}

/// One accepted webhook, handed to the writer (and, while the database
/// fails, written to the spool as it is).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Intake {
    pub event: Event,
    /// The decision sent back to sipgate (newCall, and dtmf answering a menu).
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
    /// A dtmf push that answers a menu prompt the call has answered
    /// already (a replayed push); nothing written.
    Replayed,
    /// The database failed: the event is in the spool (durable on local
    /// disk) and goes into the log, in order, when the database is back.
    Spooled,
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A request to the writer task, with where its answer goes.
pub(in crate::store) enum Command {
    /// An event to append. `key` is its dedupe key when its kind has none of
    /// its own (dtmf): unique to this push, kept with it in the spool, so a
    /// push stored once is found again however often it is retried or
    /// folded. `reply` is `None` for an event folded in from the spool.
    Append {
        intake: Box<Intake>,
        key: Option<String>,
        reply: Option<Reply<Committed>>,
    },
    /// Wakes a spooling writer to try the database again.
    Tick,
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
pub(in crate::store) enum Outcome {
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
            (Command::Append { reply: None, .. } | Command::Tick, _) => {}
            (
                Command::Append {
                    reply: Some(reply), ..
                },
                Ok(Outcome::Append(c)),
            ) => drop(reply.send(Ok(c))),
            (Command::SetDone { reply, .. }, Ok(Outcome::SetDone(c))) => drop(reply.send(Ok(c))),
            (Command::Sweep { reply, .. }, Ok(Outcome::Sweep(n))) => drop(reply.send(Ok(n))),
            (Command::Purge { reply, .. }, Ok(Outcome::Purge(e, c))) => {
                drop(reply.send(Ok((e, c))))
            }
            (
                Command::Append {
                    reply: Some(reply), ..
                },
                Err(e),
            ) => drop(reply.send(Err(e))),
            (Command::SetDone { reply, .. }, Err(e)) => drop(reply.send(Err(e))),
            (Command::Sweep { reply, .. }, Err(e)) => drop(reply.send(Err(e))),
            (Command::Purge { reply, .. }, Err(e)) => drop(reply.send(Err(e))),
            _ => unreachable!("outcomes are produced in command order"),
        }
    }
}

/// Where a backend's writer runs. Either way it is a thread that only
/// writes: the webhooks' tasks on the runtime never wait behind it, nor it
/// behind them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::store) enum WriterThread {
    /// Its calls into the database block (SQLite): a plain thread.
    Blocking,
    /// It talks to a server over async I/O (PostgreSQL): a thread with a
    /// single-threaded runtime of its own.
    Runtime,
}
