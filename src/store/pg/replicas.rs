//! What a database shared by several replicas offers the rest of the
//! sidecar: leadership (one replica at a time runs maintenance, and each
//! in-process bridge) and bridge cursors kept in the database.

use super::{Leadership, MAINTENANCE_LOCK, PgStore};
use crate::store::StoreError;

/// Session advisory lock key of bridge number `index` (in configuration order).
fn bridge_lock(index: usize) -> i64 {
    0x5349_4443_0100 + index as i64
}

/// The capabilities of a database several replicas share
/// ([`crate::store::Store::replicas`]). Cheap to clone.
#[derive(Clone)]
pub(crate) struct Replicas {
    store: PgStore,
}

impl std::fmt::Debug for Replicas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicas")
            .field("database", &self.path())
            .finish()
    }
}

impl Replicas {
    pub(super) fn new(store: PgStore) -> Replicas {
        Replicas { store }
    }

    /// The database as shown in messages.
    pub(crate) fn path(&self) -> &str {
        self.store.path()
    }

    /// The lead of maintenance (sweep, retention).
    pub(crate) fn maintenance_lead(&self) -> Leadership {
        Leadership::new(self.store.clone(), MAINTENANCE_LOCK, "maintenance")
    }

    /// The lead of in-process bridge number `index` (in configuration order).
    pub(crate) fn bridge_lead(&self, index: usize, name: &'static str) -> Leadership {
        Leadership::new(self.store.clone(), bridge_lock(index), name)
    }

    /// The last seq bridge `name` delivered; `None` before its first.
    pub(crate) async fn bridge_cursor(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let seq: Option<i64> =
            sqlx::query_scalar("SELECT after_seq FROM bridge_cursors WHERE name = $1")
                .bind(name)
                .fetch_optional(self.store.pool())
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
        .execute(self.store.pool())
        .await?;
        Ok(())
    }
}
