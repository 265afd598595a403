//! In-process bridges on PostgreSQL: their cursors live in the database,
//! and one replica at a time leads each bridge.

use super::PgStore;
use crate::store::StoreError;

/// Session advisory lock key of bridge number `index` (in configuration order).
pub(crate) fn bridge_lock(index: usize) -> i64 {
    0x5349_4443_0100 + index as i64
}

impl PgStore {
    /// The last seq bridge `name` delivered; `None` before its first.
    pub(crate) async fn bridge_cursor(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let seq: Option<i64> =
            sqlx::query_scalar("SELECT after_seq FROM bridge_cursors WHERE name = $1")
                .bind(name)
                .fetch_optional(self.pool())
                .await?;
        Ok(seq.map(|s| s as u64))
    }

    /// Records `seq` as delivered by bridge `name`.
    pub(crate) async fn set_bridge_cursor(&self, name: &str, seq: u64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO bridge_cursors (name, after_seq) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET after_seq = excluded.after_seq",
        )
        .bind(name)
        .bind(seq.min(i64::MAX as u64) as i64)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}
