//! What a backend does its own way: the [`Backend`] trait, which
//! `sqlite::SqliteStore` and `pg::PgStore` implement (catch-up pages, how a
//! settings change is locked and announced, the writer, the capabilities
//! only a shared database has), and the read pool ([`Pool`]) the SQL both
//! backends share runs on ([`super::Store`]).

use sqlx::{PgPool, SqlitePool};
use tokio::sync::watch;

use super::writer::{BackendWriter, Publish, WriterThread};
use super::{EventPage, Replicas, StoreError};
use crate::settings::{SavedChange, Settings};

/// A backend's read pool, for the SQL both backends share (generic over
/// sqlx's `Database`).
pub(in crate::store) enum Pool<'a> {
    Sqlite(&'a SqlitePool),
    Postgres(&'a PgPool),
}

/// A page of the event log asked for: the events after `after_seq`, at most
/// `limit` (not 0) and `max_bytes` of them, but always the first one.
#[derive(Clone, Copy, Debug)]
pub(in crate::store) struct PageRequest {
    pub after_seq: u64,
    pub limit: u32,
    pub max_bytes: usize,
}

/// What a backend does its own way. Everything else [`Store`] runs on the
/// backend's [`Pool`] with the shared SQL of `sql`, `log` and `settings`.
#[async_trait::async_trait]
pub(in crate::store) trait Backend: Send + Sync + 'static {
    /// The database as shown in messages (a URL without its password).
    fn path(&self) -> &str;

    fn pool(&self) -> Pool<'_>;

    /// Events with seq > `after_seq`, ascending, in their wire form: at
    /// most `limit` of them (not 0) and at most `max_bytes` of them, but
    /// always the first one, however large. Only the rows of the page are
    /// loaded, so a large page costs what it holds.
    async fn event_page(&self, page: PageRequest) -> Result<EventPage, StoreError>;

    /// The settings as one consistent snapshot.
    async fn load_settings(&self) -> Result<Settings, StoreError>;

    /// Stores one settings change in one transaction under the backend's
    /// write lock (`settings::write_change`), and tells other processes on
    /// the same database, if there can be any. Returns the new version.
    async fn save_settings_change(&self, change: SavedChange<'_>) -> Result<u64, StoreError>;

    /// Where the backend's writer runs.
    fn writer_thread(&self) -> WriterThread;

    /// Opens the writer: the connection it owns and the stored head, which
    /// it reports to `publisher` before anything else.
    async fn start_writer(
        &self,
        publisher: Box<dyn Publish>,
    ) -> Result<Box<dyn BackendWriter>, StoreError>;

    /// Wakes on every settings change stored by another process on the
    /// same database; `None` where this process is the only writer.
    fn settings_changes(&self) -> Option<watch::Receiver<u64>> {
        None
    }

    /// Leadership locks and shared cursors, where several processes share
    /// the database; `None` where this process is the only one.
    fn replicas(&self) -> Option<Replicas> {
        None
    }

    /// For tests that reach into one backend.
    #[cfg(test)]
    fn as_any(&self) -> &dyn std::any::Any;
}

/// True when `database` names a PostgreSQL database.
pub(crate) fn is_postgres(database: &str) -> bool {
    database.starts_with("postgres://") || database.starts_with("postgresql://")
}
