//! The PostgreSQL backend: several sidecar processes (replicas) on one
//! database, any of them taking any webhook.
//!
//! - Every writer transaction first takes the transaction-scoped advisory
//!   lock [`WRITE_LOCK`], then reads the stored head and the calls it
//!   touches: seqs are gap-free and in commit order across replicas, a
//!   replayed event reaching another replica finds the original, and no
//!   replica works from a stale view of a call.
//! - Every commit that appends events sends `NOTIFY` on
//!   [`EVENTS_CHANNEL`] with its last seq (delivered when it commits);
//!   each replica hands every event to its fan-out in seq order: its own
//!   commits as they were written, the other replicas' read from the
//!   table.
//! - Every settings change sends `NOTIFY` on [`SETTINGS_CHANNEL`]; each
//!   replica reloads its snapshot.
//! - Maintenance (sweep, retention) runs on the replica holding the
//!   session advisory lock [`MAINTENANCE_LOCK`] ([`Leadership`]), each
//!   in-process bridge on the one holding its own lock ([`bridge_lock`]),
//!   from a cursor in the database; another replica takes over when the
//!   leader's connection ends.
//!
//! - `open`: connections, migrations, the notification listener;
//! - `rows`: the SQL of the writer and the reads;
//! - `log`: catch-up pages; `settings`: the settings snapshot and changes;
//! - `writer`: the writer (seqs from the database under a lock);
//! - `replicas`: leadership and bridge cursors, for the rest of the sidecar.

mod leader;
mod log;
mod open;
mod replicas;
pub(crate) mod rows;
mod settings;
mod signal;
pub(super) mod writer;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use sqlx::postgres::{PgConnectOptions, PgPool};

use super::backend::{Backend, PageRequest, Pool};
use super::writer::WriterThread;
use super::writer::{BackendWriter, Publish};
use super::{EventPage, StoreError};
use crate::settings::{SavedChange, Settings};
use tokio::sync::watch;
use tokio_util::sync::DropGuard;

pub(crate) use leader::Leadership;
pub(crate) use signal::EventsSignal;

pub(crate) use replicas::Replicas;

/// Advisory lock key held by a writer transaction (`pg_advisory_xact_lock`):
/// one batch at a time across every replica.
pub(crate) const WRITE_LOCK: i64 = 0x5349_4443_0001;
/// Session advisory lock key of the replica running maintenance.
pub(crate) const MAINTENANCE_LOCK: i64 = 0x5349_4443_0002;
/// Notified by every commit that appended events.
pub(crate) const EVENTS_CHANNEL: &str = "sidecar_events";
/// The writer connection's session setting naming its store in the
/// notifications on [`EVENTS_CHANNEL`] (`SEQ REPLICA`).
pub(crate) const REPLICA_SETTING: &str = "sidecar.replica";
/// Notified by every settings change.
pub(crate) const SETTINGS_CHANNEL: &str = "sidecar_settings";

/// A PostgreSQL database. Cheap to clone.
#[derive(Clone)]
pub(crate) struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    options: PgConnectOptions,
    /// The URL without its password, for messages.
    display: String,
    /// Woken when events may have been committed (by any replica).
    events: Arc<EventsSignal>,
    /// Bumped when settings may have changed (by any replica).
    settings: watch::Receiver<u64>,
    /// Stops the notification listener with the store.
    _listener: DropGuard,
    /// The runtime the store was opened on: the writer's tail runs there,
    /// beside the pool it reads with, not on the writer's own thread.
    runtime: tokio::runtime::Handle,
    /// Test hook: the writer's next commit reports a lost answer.
    #[cfg(test)]
    lose_commit_answer: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl Backend for PgStore {
    fn path(&self) -> &str {
        PgStore::path(self)
    }

    fn pool(&self) -> Pool<'_> {
        Pool::Postgres(&self.inner.pool)
    }

    async fn event_page(&self, page: PageRequest) -> Result<EventPage, StoreError> {
        self.read_page(page).await
    }

    async fn load_settings(&self) -> Result<Settings, StoreError> {
        self.read_settings().await
    }

    async fn save_settings_change(&self, change: SavedChange<'_>) -> Result<u64, StoreError> {
        self.write_settings(change).await
    }

    fn writer_thread(&self) -> WriterThread {
        WriterThread::Runtime
    }

    async fn start_writer(
        &self,
        publisher: Box<dyn Publish>,
    ) -> Result<Box<dyn BackendWriter>, StoreError> {
        Ok(Box::new(writer::PgWriter::start(self, publisher).await?))
    }

    fn settings_changes(&self) -> Option<watch::Receiver<u64>> {
        Some(self.inner.settings.clone())
    }

    fn replicas(&self) -> Option<Replicas> {
        Some(Replicas::new(self.clone()))
    }

    #[cfg(test)]
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl PgStore {
    /// The database as shown in messages: the URL without its password.
    pub(crate) fn path(&self) -> &str {
        &self.inner.display
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    pub(crate) fn options(&self) -> &PgConnectOptions {
        &self.inner.options
    }

    /// The writer's connection: [`Self::options`] and the store's name in
    /// its notifications.
    pub(crate) fn writer_options(&self) -> PgConnectOptions {
        self.inner
            .options
            .clone()
            .options([(REPLICA_SETTING, self.inner.events.replica())])
    }

    /// The runtime the store was opened on.
    pub(crate) fn runtime(&self) -> &tokio::runtime::Handle {
        &self.inner.runtime
    }

    /// Woken when another replica (or this one) may have appended events.
    pub(crate) fn events_signal(&self) -> Arc<EventsSignal> {
        self.inner.events.clone()
    }

    /// Test hook: how often this store's tail has read the events table.
    #[cfg(test)]
    pub(crate) fn tail_table_reads(&self) -> u64 {
        self.inner
            .events
            .table_reads
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Test hook: the writer's next commit succeeds but reports that its
    /// answer was lost.
    #[cfg(test)]
    pub(crate) fn lose_next_commit_answer(&self) {
        self.inner
            .lose_commit_answer
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    #[cfg(test)]
    pub(crate) fn take_lost_commit_answer(&self) -> bool {
        self.inner
            .lose_commit_answer
            .swap(false, std::sync::atomic::Ordering::SeqCst)
    }
}

/// True for SQLSTATEs of the database or its connection rather than of the
/// data: connection exceptions (08), transaction rollbacks (40:
/// serialization, deadlock), insufficient resources (53), operator
/// intervention (57: shutdown, cancel), system errors (58) and a read-only
/// transaction (25006, a standby).
pub(crate) fn is_storage_code(code: &str) -> bool {
    ["08", "40", "53", "57", "58"]
        .iter()
        .any(|class| code.starts_with(class))
        || code == "25006"
}

pub(crate) use crate::text::redact_url_password as redact;

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn messages_never_show_the_password() {
        assert_eq!(
            redact("postgres://sidecar:s3cret@db:5432/calls?sslmode=require"),
            "postgres://sidecar@db:5432/calls?sslmode=require"
        );
        assert_eq!(redact("postgres://db/calls"), "postgres://db/calls");
        assert_eq!(redact("postgres://u@db/x"), "postgres://u@db/x");
        assert_eq!(
            redact("postgres://u@db/x?sslmode=require&password=s3cret&application_name=a"),
            "postgres://u@db/x?sslmode=require&password=<redacted>&application_name=a"
        );
        assert_eq!(
            redact("postgres://u:pw@db/x?PassWord=s3cret"),
            "postgres://u@db/x?PassWord=<redacted>"
        );
    }

    #[tokio::test]
    async fn an_unreachable_server_is_named_without_its_password() {
        let error = crate::store::Store::open("postgres://sidecar:s3cret@127.0.0.1:1/calls")
            .await
            .unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, StoreError::Unreachable { .. }), "{error:?}");
        assert!(
            message.starts_with("cannot open database postgres://sidecar@127.0.0.1:1/calls: "),
            "{message}"
        );
        assert!(!message.contains("s3cret"), "{message}");
    }

    #[test]
    fn storage_errors_are_told_from_refusals() {
        assert!(is_storage_code("08006"));
        assert!(is_storage_code("57P01"));
        assert!(is_storage_code("40P01"));
        assert!(is_storage_code("25006"));
        assert!(!is_storage_code("23505"));
        assert!(!is_storage_code("22P02"));
    }
}
