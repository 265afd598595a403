//! The settings snapshot and its audit trail.

use crate::decide::{BlockEntry, RoutingRule, Settings};
use crate::paging;

use super::{AuditEntry, AuditRecord, Store, StoreError, rows};

impl Store {
    pub(crate) async fn load_settings(&self) -> Result<Settings, StoreError> {
        // One read transaction: a consistent snapshot even during a save.
        let mut tx = self.inner.pool.begin().await?;
        let block_list = sqlx::query_as::<_, (String, String)>(
            "SELECT pattern, note FROM block_list ORDER BY position",
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|(pattern, note)| BlockEntry { pattern, note })
        .collect();
        let routing_table = sqlx::query_as::<_, (String, String, String)>(
            "SELECT dest, caller_id, note FROM routing_table ORDER BY position",
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|(dest, caller_id, note)| RoutingRule {
            dest,
            caller_id,
            note,
        })
        .collect();
        let default_caller_id = rows::setting(&mut tx, "default_caller_id")
            .await?
            .filter(|v| !v.is_empty());
        let version = parse_version(rows::setting(&mut tx, "version").await?)?;
        tx.commit().await?;
        Ok(Settings {
            block_list,
            routing_table,
            default_caller_id,
            version,
        })
    }

    /// Replaces the block list, routing table and default caller ID, bumps
    /// the version and appends `audit`, all in one transaction. Returns the
    /// settings as stored (with the new version; `settings.version` is ignored).
    pub(crate) async fn save_settings(
        &self,
        settings: &Settings,
        audit: &AuditRecord,
    ) -> Result<Settings, StoreError> {
        // IMMEDIATE takes the write lock up front, so this waits (busy_timeout)
        // for the event writer instead of failing with SQLITE_BUSY on upgrade.
        let mut tx = self.inner.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("DELETE FROM block_list")
            .execute(&mut *tx)
            .await?;
        for (position, entry) in settings.block_list.iter().enumerate() {
            sqlx::query("INSERT INTO block_list (position, pattern, note) VALUES ($1, $2, $3)")
                .bind(position as i64)
                .bind(&entry.pattern)
                .bind(&entry.note)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM routing_table")
            .execute(&mut *tx)
            .await?;
        for (position, rule) in settings.routing_table.iter().enumerate() {
            sqlx::query(
                "INSERT INTO routing_table (position, dest, caller_id, note) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(position as i64)
            .bind(&rule.dest)
            .bind(&rule.caller_id)
            .bind(&rule.note)
            .execute(&mut *tx)
            .await?;
        }
        let default_caller_id = settings.default_caller_id.clone().unwrap_or_default();
        rows::set_setting(&mut tx, "default_caller_id", &default_caller_id).await?;
        let version = parse_version(rows::setting(&mut tx, "version").await?)? + 1;
        rows::set_setting(&mut tx, "version", &version.to_string()).await?;
        sqlx::query(
            "INSERT INTO audit_log (at_ms, client, action, detail) VALUES ($1, $2, $3, $4)",
        )
        .bind(audit.at_ms)
        .bind(&audit.client)
        .bind(&audit.action)
        .bind(&audit.detail)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Settings {
            block_list: settings.block_list.clone(),
            routing_table: settings.routing_table.clone(),
            default_caller_id: settings.default_caller_id.clone().filter(|v| !v.is_empty()),
            version,
        })
    }

    /// Audit entries newest first; `before_id` pages back (entries with id < it).
    pub(crate) async fn list_audit(
        &self,
        limit: u32,
        before_id: Option<u64>,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let limit = paging::AUDIT.clamp(limit);
        let before = before_id
            .filter(|&id| id > 0)
            .map_or(i64::MAX, |id| id.min(i64::MAX as u64) as i64);
        let entries = sqlx::query_as::<_, (i64, i64, String, String, String)>(
            "SELECT id, at_ms, client, action, detail FROM audit_log \
             WHERE id < $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(&self.inner.pool)
        .await?
        .into_iter()
        .map(|(id, at_ms, client, action, detail)| AuditEntry {
            id: id as u64,
            at_ms,
            client,
            action,
            detail,
        })
        .collect();
        Ok(entries)
    }
}

fn parse_version(value: Option<String>) -> Result<u64, StoreError> {
    match value {
        None => Ok(0),
        Some(v) => v
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("settings version {v:?} is not a number"))),
    }
}
