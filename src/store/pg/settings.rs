//! The settings snapshot and its audit trail on PostgreSQL; every change
//! notifies the other replicas in its transaction.

use sqlx::{Postgres, QueryBuilder};

use super::{PgStore, SETTINGS_CHANNEL, rows};
use crate::decide::Settings;
use crate::store::settings::{self, ZAMMAD_EXTRAS, parse_version, rows_to_write};
use crate::store::{AuditEntry, AuditRecord, StoreError};

/// Rows per INSERT statement.
const INSERT_CHUNK: usize = 500;

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
        // `previous` is what this replica last saw; when another replica
        // stored a change since, the tables are rewritten whole.
        let stored_version = parse_version(rows::setting(&mut tx, "version").await?)?;
        let previous = previous.filter(|p| p.version == stored_version);
        let blocks_from = rows_to_write(previous.map(|p| &p.block_list[..]), &settings.block_list);
        let routes_from = rows_to_write(
            previous.map(|p| &p.routing_table[..]),
            &settings.routing_table,
        );
        if let Some(from) = blocks_from {
            if from == 0 {
                sqlx::query("DELETE FROM block_list")
                    .execute(&mut *tx)
                    .await?;
            }
            for (n, chunk) in settings.block_list[from..].chunks(INSERT_CHUNK).enumerate() {
                let mut insert = QueryBuilder::<Postgres>::new(
                    "INSERT INTO block_list (position, pattern, note) ",
                );
                insert.push_values(chunk.iter().enumerate(), |mut row, (i, entry)| {
                    row.push_bind((from + n * INSERT_CHUNK + i) as i64)
                        .push_bind(&entry.pattern)
                        .push_bind(&entry.note);
                });
                insert.build().execute(&mut *tx).await?;
            }
        }
        if let Some(from) = routes_from {
            if from == 0 {
                sqlx::query("DELETE FROM routing_table")
                    .execute(&mut *tx)
                    .await?;
            }
            for (n, chunk) in settings.routing_table[from..]
                .chunks(INSERT_CHUNK)
                .enumerate()
            {
                let mut insert = QueryBuilder::<Postgres>::new(
                    "INSERT INTO routing_table (position, dest, caller_id, note) ",
                );
                insert.push_values(chunk.iter().enumerate(), |mut row, (i, rule)| {
                    row.push_bind((from + n * INSERT_CHUNK + i) as i64)
                        .push_bind(&rule.dest)
                        .push_bind(&rule.caller_id)
                        .push_bind(&rule.note);
                });
                insert.build().execute(&mut *tx).await?;
            }
        }
        let default_caller_id = settings.default_caller_id.clone().unwrap_or_default();
        rows::set_setting(&mut tx, "default_caller_id", &default_caller_id).await?;
        if let Some(extras) = zammad_extras {
            rows::set_setting(&mut tx, ZAMMAD_EXTRAS, extras).await?;
        }
        let version = stored_version + 1;
        rows::set_setting(&mut tx, "version", &version.to_string()).await?;
        let (before, after) = content.unzip();
        sqlx::query(
            "INSERT INTO audit_log (at_ms, client, action, detail, settings_before, settings_after) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(audit.at_ms)
        .bind(&audit.client)
        .bind(&audit.action)
        .bind(&audit.detail)
        .bind(before)
        .bind(after)
        .execute(&mut *tx)
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
        Ok(Settings {
            block_list: settings.block_list.clone(),
            routing_table: settings.routing_table.clone(),
            default_caller_id: settings.default_caller_id.clone().filter(|v| !v.is_empty()),
            version,
        })
    }

    /// Zammad's keys kept with the settings (JSON), if any were stored.
    pub(crate) async fn load_zammad_extras(&self) -> Result<Option<String>, StoreError> {
        let mut conn = self.inner.pool.acquire().await?;
        rows::setting(&mut conn, ZAMMAD_EXTRAS).await
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
