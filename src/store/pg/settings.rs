//! The settings snapshot and its audit trail on PostgreSQL; every change
//! notifies the other replicas in its transaction.

use sqlx::Postgres;

use super::{PgStore, SETTINGS_CHANNEL};
use crate::settings::Settings;
use crate::store::settings::{self, ZAMMAD_EXTRAS};
use crate::store::{AuditEntry, AuditRecord, StoreError};

/// Serialises settings changes across replicas (transaction-scoped), so the
/// version read and bumped by one change is never read by another.
const SETTINGS_LOCK: i64 = 0x5349_4443_0003;

impl PgStore {
    pub(crate) async fn load_settings(&self) -> Result<Settings, StoreError> {
        // One read transaction: a consistent snapshot even during a save.
        let mut tx = self
            .inner
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await?;
        let settings = settings::read_settings::<Postgres>(&mut *tx).await?;
        tx.commit().await?;
        Ok(settings)
    }

    /// [`save_settings`](Self::save_settings) for a change: tables equal to
    /// `previous` are not rewritten, `zammad_extras` (JSON) is stored when
    /// given, and the audit entry keeps the whole settings before and after
    /// (`content`, JSON) for an undo. Everything is prepared before the
    /// transaction starts, and rows go in as multi-row inserts, so the
    /// database's write lock (which the event writer also needs) is held
    /// for as short a time as possible.
    pub(crate) async fn save_settings_change(
        &self,
        settings: &Settings,
        previous: Option<&Settings>,
        zammad_extras: Option<&str>,
        audit: &AuditRecord,
        content: Option<(&str, &str)>,
    ) -> Result<Settings, StoreError> {
        let started = std::time::Instant::now();
        let mut tx = self.inner.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SETTINGS_LOCK)
            .execute(&mut *tx)
            .await?;
        let version = settings::write_change::<Postgres>(
            &mut tx,
            settings,
            previous,
            zammad_extras,
            audit,
            content,
        )
        .await?;
        // Delivered to every replica when the change commits.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(SETTINGS_CHANNEL)
            .bind(version.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::debug!(
            version,
            held_ms = started.elapsed().as_millis() as u64,
            "settings stored"
        );
        Ok(settings::stored(settings, version))
    }

    /// Zammad's keys kept with the settings (JSON), if any were stored.
    pub(crate) async fn load_zammad_extras(&self) -> Result<Option<String>, StoreError> {
        let mut conn = self.inner.pool.acquire().await?;
        settings::setting::<Postgres>(&mut conn, ZAMMAD_EXTRAS).await
    }

    /// The settings before audit entry `id`: see
    /// [`crate::store::settings::audit_settings_before`].
    pub(crate) async fn audit_settings_before(
        &self,
        id: Option<u64>,
    ) -> Result<Option<(u64, Option<String>)>, StoreError> {
        settings::audit_settings_before(&self.inner.pool, id).await
    }

    /// Audit entries newest first: see [`crate::store::settings::list_audit`].
    pub(crate) async fn list_audit(
        &self,
        limit: u32,
        before_id: Option<u64>,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        settings::list_audit(&self.inner.pool, limit, before_id).await
    }
}
