//! The settings snapshot and its audit trail on PostgreSQL; every change
//! notifies the other replicas in its transaction.

use sqlx::Postgres;

use super::{PgStore, SETTINGS_CHANNEL};
use crate::settings::{SavedChange, Settings};
use crate::store::StoreError;
use crate::store::settings;

/// Serialises settings changes across replicas (transaction-scoped), so the
/// version read and bumped by one change is never read by another.
const SETTINGS_LOCK: i64 = 0x5349_4443_0003;

impl PgStore {
    pub(super) async fn read_settings(&self) -> Result<Settings, StoreError> {
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

    /// A settings change: tables equal to
    /// `previous` are not rewritten, `zammad_extras` (JSON) is stored when
    /// given, and the audit entry keeps the whole settings before and after
    /// (`content`, JSON) for an undo. Everything is prepared before the
    /// transaction starts, and rows go in as multi-row inserts, so the
    /// database's write lock (which the event writer also needs) is held
    /// for as short a time as possible.
    pub(super) async fn write_settings(&self, change: SavedChange<'_>) -> Result<u64, StoreError> {
        let mut tx = self.inner.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SETTINGS_LOCK)
            .execute(&mut *tx)
            .await?;
        let version = settings::write_change::<Postgres>(&mut tx, &change).await?;
        // Delivered to every replica when the change commits.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(SETTINGS_CHANNEL)
            .bind(version.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(version)
    }
}
