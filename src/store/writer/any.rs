//! The writer of the backend in use, behind the calls the task loop makes.

use std::time::Duration;

use super::batch::{self, BatchEffects};
use super::pg::PgWriter;
use super::sqlite::SqliteWriter;
use super::{Command, Publish};
use crate::store::backend::Backend;
use crate::store::{Store, StoreError};

pub(super) enum AnyWriter {
    Sqlite(SqliteWriter),
    Postgres(PgWriter),
}

impl AnyWriter {
    pub(super) async fn start(
        store: &Store,
        publisher: Box<dyn Publish>,
    ) -> Result<AnyWriter, StoreError> {
        Ok(match store.backend() {
            Backend::Sqlite(sqlite) => AnyWriter::Sqlite(SqliteWriter::start(sqlite, publisher)?),
            Backend::Postgres(pg) => AnyWriter::Postgres(PgWriter::start(pg, publisher).await?),
        })
    }

    /// The seq the next appended event gets, as far as this process knows.
    pub(super) fn next_seq(&self) -> u64 {
        match self {
            AnyWriter::Sqlite(w) => w.next_seq(),
            AnyWriter::Postgres(w) => w.next_seq(),
        }
    }

    pub(super) async fn try_commit(
        &mut self,
        batch: &[Command],
    ) -> Result<BatchEffects, StoreError> {
        match self {
            AnyWriter::Sqlite(w) => w.try_commit(batch).await,
            AnyWriter::Postgres(w) => w.try_commit(batch).await,
        }
    }

    pub(super) fn finish(&mut self, batch: Vec<Command>, effects: BatchEffects) {
        match self {
            AnyWriter::Sqlite(w) => w.finish(batch, effects),
            AnyWriter::Postgres(w) => w.finish(batch, effects),
        }
    }

    /// Answers every command of a batch that will not be stored with `error`.
    pub(super) fn fail(&mut self, batch: Vec<Command>, error: &StoreError) {
        if let AnyWriter::Postgres(w) = self {
            w.forget();
        }
        batch::fail(batch, error)
    }

    /// Waits `wait` before a failed batch is tried again: the SQLite writer
    /// sleeps on its own thread, the PostgreSQL writer yields to the runtime.
    pub(super) async fn pause(&mut self, wait: Duration) {
        match self {
            AnyWriter::Sqlite(_) => std::thread::sleep(wait),
            AnyWriter::Postgres(_) => tokio::time::sleep(wait).await,
        }
    }
}
