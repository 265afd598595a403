//! [`Store`]: the database in use, SQLite or PostgreSQL, behind one set of
//! calls. What both backends do with the same SQL is written once here,
//! over the backend's pool ([`Pool`]); what differs goes to the backend
//! ([`Backend`]).

use std::sync::Arc;

use tokio::sync::watch;

use super::backend::{Backend, PageRequest, Pool, is_postgres};
use super::pg::PgStore;
use super::sqlite::SqliteStore;
use super::{AuditEntry, CallQuery, EventPage, Replicas, StoreError, log, settings, sql};
use crate::calls::CallRecord;
use crate::settings::{RepositoryError, SavedChange, Settings, SettingsRepository};

/// The database: SQLite (a file path or `sqlite://` URL) or PostgreSQL (a
/// `postgres://` or `postgresql://` URL). Cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("database", &self.path())
            .finish_non_exhaustive()
    }
}

/// Runs `$call` with `$pool` bound to the backend's pool, whichever it is:
/// the shared SQL is generic over the database.
/// With `$db` as well, `$call` can name the database type.
macro_rules! on_pool {
    ($self:ident, $pool:ident => $call:expr) => {
        match $self.backend.pool() {
            Pool::Sqlite($pool) => $call,
            Pool::Postgres($pool) => $call,
        }
    };
    ($self:ident, $pool:ident, $db:ident => $call:expr) => {
        match $self.backend.pool() {
            Pool::Sqlite($pool) => {
                type $db = sqlx::Sqlite;
                $call
            }
            Pool::Postgres($pool) => {
                type $db = sqlx::Postgres;
                $call
            }
        }
    };
}

impl Store {
    /// Opens the database and applies the migrations: PostgreSQL for a
    /// `postgres://` URL, SQLite (created if missing) for anything else.
    pub async fn open(database: &str) -> Result<Store, StoreError> {
        let backend: Arc<dyn Backend> = if is_postgres(database) {
            Arc::new(PgStore::open(database).await?)
        } else {
            Arc::new(SqliteStore::open(database).await?)
        };
        Ok(Store { backend })
    }

    pub(in crate::store) fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// Where the spool goes unless `--spool-dir` says: next to the SQLite
    /// file (its real path, as the lock), or for PostgreSQL in the state
    /// directory (systemd's `$STATE_DIRECTORY`, else `$XDG_STATE_HOME` or
    /// `~/.local/state`, under `sipgate-sidecar/`).
    pub fn default_spool_dir(&self) -> Result<std::path::PathBuf, String> {
        match self.backend.pool() {
            Pool::Sqlite(_) => {
                let mut name =
                    super::sqlite::canonical(std::path::Path::new(self.path())).into_os_string();
                name.push(".spool");
                Ok(name.into())
            }
            Pool::Postgres(_) => super::writer::spool::state_dir()
                .map(|dir| dir.join("spool"))
                .ok_or_else(|| {
                    "no state directory for the spool: set --spool-dir (SIDECAR_SPOOL_DIR), \
                     STATE_DIRECTORY or HOME"
                        .to_owned()
                }),
        }
    }

    /// The database as shown in messages (a URL without its password).
    pub(crate) fn path(&self) -> &str {
        self.backend.path()
    }

    /// True when the database answers a query.
    pub(crate) async fn ping(&self) -> bool {
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.is_ok())
    }

    /// See [`Backend::settings_changes`].
    pub(crate) fn settings_changes(&self) -> Option<watch::Receiver<u64>> {
        self.backend.settings_changes()
    }

    /// See [`Backend::replicas`].
    pub(crate) fn replicas(&self) -> Option<Replicas> {
        self.backend.replicas()
    }

    /// Events with seq > `after_seq`, ascending, a page of at most `limit`
    /// as [`crate::paging::EVENTS`] clamps it, whatever their size, decoded
    /// (tests; readers for clients use [`Store::event_page`]).
    #[cfg(test)]
    pub(crate) async fn events_after(
        &self,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<super::StoredEvent>, StoreError> {
        let limit = crate::paging::EVENTS.clamp(limit);
        on_pool!(self, pool => sql::events_after(pool, after_seq, limit).await)
    }

    /// See [`Backend::event_page`]; a `limit` of 0 asks for the default page.
    pub(crate) async fn event_page(
        &self,
        after_seq: u64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<EventPage, StoreError> {
        // A transport clamps what a client asks for.
        let limit = if limit == 0 {
            crate::paging::EVENTS.default
        } else {
            limit
        };
        self.backend
            .event_page(PageRequest {
                after_seq,
                limit,
                max_bytes,
            })
            .await
    }

    /// The highest stored sequence number, 0 when the log is empty.
    pub(crate) async fn head_seq(&self) -> Result<u64, StoreError> {
        on_pool!(self, pool => sql::head_seq(pool).await)
    }

    pub(crate) async fn get_call(&self, call_id: &str) -> Result<Option<CallRecord>, StoreError> {
        on_pool!(self, pool => sql::load_call(pool, call_id).await)
    }

    /// Calls newest first (by initialized_at, ties by call_id) and the token
    /// for the next page (`None` on the last page).
    pub(crate) async fn list_calls(
        &self,
        q: &CallQuery,
    ) -> Result<(Vec<CallRecord>, Option<String>), StoreError> {
        on_pool!(self, pool => log::list_calls(pool, q).await)
    }

    pub(crate) async fn load_settings(&self) -> Result<Settings, StoreError> {
        self.backend.load_settings().await
    }

    #[cfg(test)]
    pub(crate) async fn save_settings(
        &self,
        settings: &Settings,
        audit: &super::AuditRecord,
    ) -> Result<Settings, StoreError> {
        self.save(SavedChange {
            settings,
            previous: None,
            zammad_extras: None,
            audit,
            content: None,
        })
        .await
    }

    /// Stores one settings change (see [`Backend::save_settings_change`]);
    /// the settings as stored, with their new version.
    async fn save(&self, change: SavedChange<'_>) -> Result<Settings, StoreError> {
        let started = std::time::Instant::now();
        let version = self.backend.save_settings_change(change).await?;
        tracing::debug!(
            version,
            held_ms = started.elapsed().as_millis() as u64,
            "settings stored"
        );
        Ok(settings::stored(change.settings, version))
    }

    /// Zammad's keys kept with the settings (JSON), if any were stored.
    pub(crate) async fn load_zammad_extras(&self) -> Result<Option<String>, StoreError> {
        on_pool!(self, pool, Db => {
            let mut conn = pool.acquire().await?;
            settings::setting::<Db>(&mut conn, settings::ZAMMAD_EXTRAS).await
        })
    }

    /// The settings before audit entry `id`: see [`settings::audit_settings_before`].
    pub(crate) async fn audit_settings_before(
        &self,
        id: Option<u64>,
    ) -> Result<Option<(u64, Option<String>)>, StoreError> {
        on_pool!(self, pool => settings::audit_settings_before(pool, id).await)
    }

    /// Audit entries newest first: see [`settings::list_audit`].
    pub(crate) async fn list_audit(
        &self,
        limit: u32,
        before_id: Option<u64>,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        on_pool!(self, pool => settings::list_audit(pool, limit, before_id).await)
    }

    /// The menu-state signing key, made on first use.
    pub(crate) async fn menu_key(&self) -> Result<Vec<u8>, StoreError> {
        on_pool!(self, pool, Db => {
            let mut conn = pool.acquire().await?;
            settings::menu_key::<Db>(&mut conn).await
        })
    }
}

#[cfg(test)]
impl Store {
    /// The SQLite backend, for tests that reach into it.
    pub(crate) fn sqlite(&self) -> &SqliteStore {
        self.backend
            .as_any()
            .downcast_ref()
            .expect("not a SQLite store")
    }

    /// The PostgreSQL backend, for tests that reach into it.
    pub(crate) fn postgres(&self) -> &PgStore {
        self.backend
            .as_any()
            .downcast_ref()
            .expect("not a PostgreSQL store")
    }

    /// The SQLite read pool, for tests that reach into the database.
    pub(crate) fn sqlite_pool(&self) -> &sqlx::SqlitePool {
        match self.backend.pool() {
            Pool::Sqlite(pool) => pool,
            Pool::Postgres(_) => unreachable!("not a SQLite store"),
        }
    }

    /// [`SettingsRepository::save_settings_change`] with its parts apart.
    pub(crate) async fn save_settings_change(
        &self,
        settings: &Settings,
        previous: Option<&Settings>,
        zammad_extras: Option<&str>,
        audit: &super::AuditRecord,
        content: Option<(&str, &str)>,
    ) -> Result<Settings, StoreError> {
        self.save(SavedChange {
            settings,
            previous,
            zammad_extras,
            audit,
            content,
        })
        .await
    }

    /// The PostgreSQL read pool, for tests that reach into the database.
    pub(crate) fn pg_pool(&self) -> &sqlx::PgPool {
        match self.backend.pool() {
            Pool::Postgres(pool) => pool,
            Pool::Sqlite(_) => unreachable!("not a PostgreSQL store"),
        }
    }

    /// The options the PostgreSQL writer connects with.
    pub(crate) fn pg_options(&self) -> &sqlx::postgres::PgConnectOptions {
        self.postgres().options()
    }

    /// Test hook (SQLite): makes the writer's connection refuse writes.
    pub(crate) fn set_fault(&self, on: bool) {
        self.sqlite().set_fault(on)
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
        self.save(change).await.map_err(RepositoryError::new)
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
