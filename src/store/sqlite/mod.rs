//! The SQLite backend: one process per database file.
//!
//! SQLite in WAL mode with `synchronous=FULL`, so an acknowledged event
//! survives `kill -9` and power loss. Reads go through a small sqlx pool;
//! every write of the event log and the call log goes through the writer
//! ([`writer`]), on a thread and connection of its own, which batches many
//! events into one transaction.
//!
//! - `open`: the lock file, connections, pragmas, migrations;
//! - `pages`: catch-up pages, read straight from a pooled connection's
//!   locked handle rather than row by row through sqlx;
//! - `rows`: decoding rows stored before the wire form was kept;
//! - `writer`: the writer's thread, connection and statements.

mod open;
mod pages;
pub(super) mod rows;
pub(super) mod writer;
pub(super) use open::canonical;

use std::sync::Arc;

use sqlx::Sqlite;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};

use super::backend::{Backend, PageRequest, Pool};
use super::writer::WriterThread;
use super::writer::{BackendWriter, Publish};
use super::{EventPage, StoreError, settings};
use crate::settings::{SavedChange, Settings};

/// The SQLite database: the lock on its file and a read pool (the writer
/// opens its own connection). Cheap to clone.
#[derive(Clone)]
pub(crate) struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: SqlitePool,
    options: SqliteConnectOptions,
    path: String,
    /// `<database>.lock`, exclusively locked for the life of the store.
    _lock: std::fs::File,
    /// Test hook: while set, the writer's connection refuses writes
    /// (`PRAGMA query_only`), the way a read-only file does.
    #[cfg(test)]
    fault: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl Backend for SqliteStore {
    fn path(&self) -> &str {
        &self.inner.path
    }

    fn pool(&self) -> Pool<'_> {
        Pool::Sqlite(&self.inner.pool)
    }

    async fn event_page(&self, page: PageRequest) -> Result<EventPage, StoreError> {
        pages::read(&self.inner.pool, page).await
    }

    async fn load_settings(&self) -> Result<Settings, StoreError> {
        // One read transaction: a consistent snapshot even during a save.
        let mut tx = self.inner.pool.begin().await?;
        let settings = settings::read_settings::<Sqlite>(&mut *tx).await?;
        tx.commit().await?;
        Ok(settings)
    }

    /// The database's write lock, which the event writer also needs, is
    /// held for the few statements of the change only.
    async fn save_settings_change(&self, change: SavedChange<'_>) -> Result<u64, StoreError> {
        // IMMEDIATE takes the write lock up front, so this waits (busy_timeout)
        // for the event writer instead of failing with SQLITE_BUSY on upgrade.
        let mut tx = self.inner.pool.begin_with("BEGIN IMMEDIATE").await?;
        let version = settings::write_change::<Sqlite>(&mut tx, &change).await?;
        tx.commit().await?;
        Ok(version)
    }

    fn writer_thread(&self) -> WriterThread {
        WriterThread::Blocking
    }

    async fn start_writer(
        &self,
        publisher: Box<dyn Publish>,
    ) -> Result<Box<dyn BackendWriter>, StoreError> {
        Ok(Box::new(writer::SqliteWriter::start(self, publisher)?))
    }

    #[cfg(test)]
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
