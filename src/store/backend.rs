//! [`Store`]: the database in use, SQLite or PostgreSQL, behind one set of
//! calls. Each call goes to the backend's own implementation; the two keep
//! the same tables, the same answers and the same guarantees for a single
//! process (PostgreSQL adds several processes on one database).

use tokio::sync::watch;

use super::pg::PgStore;
use super::{AuditEntry, AuditRecord, CallQuery, EventPage, SqliteStore, StoreError};
use crate::calls::CallRecord;
use crate::settings::{RepositoryError, SavedChange, Settings, SettingsRepository};

/// The database: SQLite (a file path or `sqlite://` URL) or PostgreSQL (a
/// `postgres://` or `postgresql://` URL). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    backend: Backend,
}

#[derive(Clone, Debug)]
pub(crate) enum Backend {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

/// True when `database` names a PostgreSQL database.
pub(crate) fn is_postgres(database: &str) -> bool {
    database.starts_with("postgres://") || database.starts_with("postgresql://")
}

macro_rules! each {
    ($self:ident, $store:ident => $call:expr) => {
        match &$self.backend {
            Backend::Sqlite($store) => $call,
            Backend::Postgres($store) => $call,
        }
    };
}

impl Store {
    /// Opens the database and applies the migrations: PostgreSQL for a
    /// `postgres://` URL, SQLite (created if missing) for anything else.
    pub async fn open(database: &str) -> Result<Store, StoreError> {
        let backend = if is_postgres(database) {
            Backend::Postgres(PgStore::open(database).await?)
        } else {
            Backend::Sqlite(SqliteStore::open(database).await?)
        };
        Ok(Store { backend })
    }

    pub(crate) fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The database as shown in messages (a URL without its password).
    pub(crate) fn path(&self) -> &str {
        each!(self, s => s.path())
    }

    /// True when the database answers a query.
    pub(crate) async fn ping(&self) -> bool {
        each!(self, s => s.ping().await)
    }

    /// Wakes on every settings change stored by another process on the
    /// same database (PostgreSQL); `None` for SQLite, where this process is
    /// the only writer.
    pub(crate) fn settings_changes(&self) -> Option<watch::Receiver<u64>> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(pg) => Some(pg.settings_changes()),
        }
    }

    #[cfg(test)]
    pub(crate) async fn events_after(
        &self,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<super::StoredEvent>, StoreError> {
        each!(self, s => s.events_after(after_seq, limit).await)
    }

    /// See [`SqliteStore::event_page`].
    pub(crate) async fn event_page(
        &self,
        after_seq: u64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<EventPage, StoreError> {
        // 0 asks for the default page; a transport clamps what a client asks for.
        let limit = if limit == 0 {
            crate::paging::EVENTS.default
        } else {
            limit
        };
        each!(self, s => s.event_page(after_seq, limit, max_bytes).await)
    }

    /// The highest stored sequence number, 0 when the log is empty.
    pub(crate) async fn head_seq(&self) -> Result<u64, StoreError> {
        each!(self, s => s.head_seq().await)
    }

    pub(crate) async fn get_call(&self, call_id: &str) -> Result<Option<CallRecord>, StoreError> {
        each!(self, s => s.get_call(call_id).await)
    }

    /// See [`SqliteStore::list_calls`].
    pub(crate) async fn list_calls(
        &self,
        q: &CallQuery,
    ) -> Result<(Vec<CallRecord>, Option<String>), StoreError> {
        each!(self, s => s.list_calls(q).await)
    }

    pub(crate) async fn load_settings(&self) -> Result<Settings, StoreError> {
        each!(self, s => s.load_settings().await)
    }

    #[cfg(test)]
    pub(crate) async fn save_settings(
        &self,
        settings: &Settings,
        audit: &AuditRecord,
    ) -> Result<Settings, StoreError> {
        self.save_settings_change(settings, None, None, audit, None)
            .await
    }

    /// See [`SqliteStore::save_settings_change`]; on PostgreSQL every other
    /// replica is told in the same transaction.
    pub(crate) async fn save_settings_change(
        &self,
        settings: &Settings,
        previous: Option<&Settings>,
        zammad_extras: Option<&str>,
        audit: &AuditRecord,
        content: Option<(&str, &str)>,
    ) -> Result<Settings, StoreError> {
        each!(self, s => s
            .save_settings_change(settings, previous, zammad_extras, audit, content)
            .await)
    }

    pub(crate) async fn load_zammad_extras(&self) -> Result<Option<String>, StoreError> {
        each!(self, s => s.load_zammad_extras().await)
    }

    pub(crate) async fn audit_settings_before(
        &self,
        id: Option<u64>,
    ) -> Result<Option<(u64, Option<String>)>, StoreError> {
        each!(self, s => s.audit_settings_before(id).await)
    }

    pub(crate) async fn list_audit(
        &self,
        limit: u32,
        before_id: Option<u64>,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        each!(self, s => s.list_audit(limit, before_id).await)
    }

    /// The SQLite read pool, for tests that reach into the database.
    #[cfg(test)]
    pub(crate) fn sqlite_pool(&self) -> &sqlx::SqlitePool {
        match &self.backend {
            Backend::Sqlite(s) => &s.inner.pool,
            Backend::Postgres(_) => unreachable!("not a SQLite store"),
        }
    }

    /// The PostgreSQL read pool, for tests that reach into the database.
    #[cfg(test)]
    pub(crate) fn pg_pool(&self) -> &sqlx::PgPool {
        match &self.backend {
            Backend::Postgres(s) => s.pool(),
            Backend::Sqlite(_) => unreachable!("not a PostgreSQL store"),
        }
    }

    /// The options the PostgreSQL writer connects with.
    #[cfg(test)]
    pub(crate) fn pg_options(&self) -> &sqlx::postgres::PgConnectOptions {
        match &self.backend {
            Backend::Postgres(s) => s.options(),
            Backend::Sqlite(_) => unreachable!("not a PostgreSQL store"),
        }
    }

    /// Test hook (SQLite): makes the writer's connection refuse writes.
    #[cfg(test)]
    pub(crate) fn set_fault(&self, on: bool) {
        match &self.backend {
            Backend::Sqlite(s) => s.set_fault(on),
            Backend::Postgres(_) => unreachable!("the write fault hook is SQLite's"),
        }
    }
}

impl Store {
    /// The menu-state signing key, made on first use.
    pub(crate) async fn menu_key(&self) -> Result<Vec<u8>, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => {
                let mut conn = s.inner.pool.acquire().await?;
                super::settings::menu_key::<sqlx::Sqlite>(&mut conn).await
            }
            Backend::Postgres(s) => {
                let mut conn = s.pool().acquire().await?;
                super::settings::menu_key::<sqlx::Postgres>(&mut conn).await
            }
        }
    }
}

/// The settings manager's view of the store.
#[async_trait::async_trait]
impl SettingsRepository for Store {
    async fn load_settings(&self) -> Result<Settings, RepositoryError> {
        Store::load_settings(self)
            .await
            .map_err(RepositoryError::new)
    }

    async fn load_zammad_extras(&self) -> Result<Option<String>, RepositoryError> {
        Store::load_zammad_extras(self)
            .await
            .map_err(RepositoryError::new)
    }

    async fn save_settings_change(
        &self,
        change: SavedChange<'_>,
    ) -> Result<Settings, RepositoryError> {
        Store::save_settings_change(
            self,
            change.settings,
            change.previous,
            change.zammad_extras,
            change.audit,
            change.content,
        )
        .await
        .map_err(RepositoryError::new)
    }

    async fn audit_settings_before(
        &self,
        id: Option<u64>,
    ) -> Result<Option<(u64, Option<String>)>, RepositoryError> {
        Store::audit_settings_before(self, id)
            .await
            .map_err(RepositoryError::new)
    }

    async fn list_audit(
        &self,
        limit: u32,
        before_id: Option<u64>,
    ) -> Result<Vec<AuditEntry>, RepositoryError> {
        Store::list_audit(self, limit, before_id)
            .await
            .map_err(RepositoryError::new)
    }

    fn settings_changes(&self) -> Option<watch::Receiver<u64>> {
        Store::settings_changes(self)
    }

    async fn menu_key(&self) -> Result<Vec<u8>, RepositoryError> {
        Store::menu_key(self).await.map_err(RepositoryError::new)
    }
}
