//! The settings snapshot and its audit trail.

use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Type};

use crate::paging;
use crate::settings::{BlockEntry, RoutingRule, SavedChange, Settings};

/// Rows per INSERT statement (4 bound values each, well under SQLite's limit).
const INSERT_CHUNK: usize = 500;
/// The `settings_kv` key of Zammad's kept keys (`user_remote_map`, `view_limit`).
pub(super) const ZAMMAD_EXTRAS: &str = "zammad_extras";
/// The `settings_kv` key of the call-flows document (the text as set; empty = none).
const FLOWS: &str = "flows";
/// The `settings_kv` key of the menu-state signing key (hex).
const MENU_KEY: &str = "menu_key";

use super::sql::bind;
use super::{AuditEntry, StoreError};

/// One settings change, in the caller's transaction (which holds the
/// backend's write lock): the tables rewritten from the first row that
/// differs from `previous` (whole when `previous` is not the version
/// stored), the settings keys, the version bumped, and the audit entry
/// with the whole settings before and after (`content`). Rows go in as
/// multi-row inserts. The same SQL on both backends. Returns the new
/// version.
pub(super) async fn write_change<DB>(
    conn: &mut DB::Connection,
    change: &SavedChange<'_>,
) -> Result<u64, StoreError>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'r> (String,): FromRow<'r, DB::Row>,
{
    let SavedChange {
        settings,
        previous,
        zammad_extras,
        audit,
        content,
    } = *change;
    let stored_version = parse_version(setting::<DB>(conn, "version").await?)?;
    // `previous` is what this process last saw; when another replica
    // stored a change since, the tables are rewritten whole.
    let previous = previous.filter(|p| p.version == stored_version);
    let blocks_from = rows_to_write(previous.map(|p| &p.block_list[..]), &settings.block_list);
    if let Some(from) = blocks_from {
        insert_from::<DB, _, 2>(
            conn,
            "block_list (position, pattern, note)",
            &settings.block_list,
            from,
            |entry| [&entry.pattern, &entry.note],
        )
        .await?;
    }
    let routes_from = rows_to_write(
        previous.map(|p| &p.routing_table[..]),
        &settings.routing_table,
    );
    if let Some(from) = routes_from {
        insert_from::<DB, _, 3>(
            conn,
            "routing_table (position, dest, caller_id, note)",
            &settings.routing_table,
            from,
            |rule| [&rule.dest, &rule.caller_id, &rule.note],
        )
        .await?;
    }
    let default_caller_id = settings.default_caller_id.clone().unwrap_or_default();
    set_setting::<DB>(conn, "default_caller_id", &default_caller_id).await?;
    if previous.is_none_or(|p| p.flows != settings.flows) {
        let flows = settings.flows.as_deref().unwrap_or_default();
        set_setting::<DB>(conn, FLOWS, flows).await?;
    }
    if let Some(extras) = zammad_extras {
        set_setting::<DB>(conn, ZAMMAD_EXTRAS, extras).await?;
    }
    let version = stored_version + 1;
    set_setting::<DB>(conn, "version", &version.to_string()).await?;
    let (before, after) = content.unzip();
    sqlx::query(
        "INSERT INTO audit_log (at_ms, client, action, detail, settings_before, settings_after) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(audit.at_ms)
    .bind(audit.client.clone())
    .bind(audit.action.clone())
    .bind(audit.detail.clone())
    .bind(before.map(str::to_owned))
    .bind(after.map(str::to_owned))
    .execute(&mut *conn)
    .await?;
    Ok(version)
}

/// Writes `items[from..]` into `table` (name and columns, `position`
/// first), each row its position and the `N` text fields `fields` gives;
/// from 0, the table is emptied first (otherwise the rows are appended
/// after the stored ones, see [`rows_to_write`]).
async fn insert_from<DB, T, const N: usize>(
    conn: &mut DB::Connection,
    table: &str,
    items: &[T],
    from: usize,
    fields: impl Fn(&T) -> [&String; N],
) -> Result<(), StoreError>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
{
    if from == 0 {
        let name = table.split_whitespace().next().unwrap_or(table);
        sqlx::query::<DB>(&format!("DELETE FROM {name}"))
            .execute(&mut *conn)
            .await?;
    }
    for (n, chunk) in items[from..].chunks(INSERT_CHUNK).enumerate() {
        let mut sql = format!("INSERT INTO {table} VALUES ");
        let mut args = DB::Arguments::default();
        for (i, item) in chunk.iter().enumerate() {
            sql.push_str(if i == 0 { "(" } else { ", (" });
            bind(&mut sql, &mut args, (from + n * INSERT_CHUNK + i) as i64)?;
            for field in fields(item) {
                sql.push_str(", ");
                bind(&mut sql, &mut args, field.clone())?;
            }
            sql.push(')');
        }
        sqlx::query_with(&sql, args).execute(&mut *conn).await?;
    }
    Ok(())
}

/// A value of `settings_kv`.
pub(super) async fn setting<DB>(
    conn: &mut DB::Connection,
    key: &str,
) -> Result<Option<String>, StoreError>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'r> (String,): FromRow<'r, DB::Row>,
{
    let value: Option<(String,)> = sqlx::query_as("SELECT value FROM settings_kv WHERE key = $1")
        .bind(key.to_owned())
        .fetch_optional(conn)
        .await?;
    Ok(value.map(|(v,)| v))
}

async fn set_setting<DB>(
    conn: &mut DB::Connection,
    key: &str,
    value: &str,
) -> Result<(), StoreError>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
{
    sqlx::query(
        "INSERT INTO settings_kv (key, value) VALUES ($1, $2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .bind(key.to_owned())
    .bind(value.to_owned())
    .execute(conn)
    .await?;
    Ok(())
}

/// Which rows of a list to write: `None` when it equals what is stored,
/// `Some(k)` when only entries from `k` on were appended, `Some(0)` for a
/// rewrite of the whole list.
pub(super) fn rows_to_write<T: PartialEq>(stored: Option<&[T]>, next: &[T]) -> Option<usize> {
    match stored {
        Some(stored) if stored == next => None,
        Some(stored) if next.len() > stored.len() && next.starts_with(stored) => Some(stored.len()),
        _ => Some(0),
    }
}

pub(super) fn parse_version(value: Option<String>) -> Result<u64, StoreError> {
    match value {
        None => Ok(0),
        Some(v) => v
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("settings version {v:?} is not a number"))),
    }
}

/// The settings as stored, read on `conn` (inside the caller's read
/// transaction, for a consistent snapshot). The same SQL on both backends.
pub(super) async fn read_settings<DB>(conn: &mut DB::Connection) -> Result<Settings, StoreError>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'r> (String,): FromRow<'r, DB::Row>,
    for<'r> (String, String): FromRow<'r, DB::Row>,
    for<'r> (String, String, String): FromRow<'r, DB::Row>,
{
    let block_list = sqlx::query_as::<_, (String, String)>(
        "SELECT pattern, note FROM block_list ORDER BY position",
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|(pattern, note)| BlockEntry { pattern, note })
    .collect();
    let routing_table = sqlx::query_as::<_, (String, String, String)>(
        "SELECT dest, caller_id, note FROM routing_table ORDER BY position",
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|(dest, caller_id, note)| RoutingRule {
        dest,
        caller_id,
        note,
    })
    .collect();
    let setting =
        async |conn: &mut DB::Connection, key: &str| -> Result<Option<String>, StoreError> {
            let value: Option<(String,)> =
                sqlx::query_as("SELECT value FROM settings_kv WHERE key = $1")
                    .bind(key)
                    .fetch_optional(&mut *conn)
                    .await?;
            Ok(value.map(|(v,)| v))
        };
    let default_caller_id = setting(conn, "default_caller_id")
        .await?
        .filter(|v| !v.is_empty());
    let version = parse_version(setting(conn, "version").await?)?;
    let flows = setting(conn, FLOWS).await?.filter(|v| !v.is_empty());
    Ok(Settings {
        block_list,
        routing_table,
        default_caller_id,
        flows,
        version,
    })
}

/// `settings` as stored at `version`.
pub(super) fn stored(settings: &Settings, version: u64) -> Settings {
    Settings {
        block_list: settings.block_list.clone(),
        routing_table: settings.routing_table.clone(),
        default_caller_id: settings.default_caller_id.clone().filter(|v| !v.is_empty()),
        flows: settings.flows.clone().filter(|v| !v.is_empty()),
        version,
    }
}

/// The menu-state signing key: 32 random bytes stored once in
/// `settings_kv` (the first process to get here wins; everyone reads the
/// same). The same SQL on both backends.
pub(super) async fn menu_key<DB>(conn: &mut DB::Connection) -> Result<Vec<u8>, StoreError>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'r> (String,): FromRow<'r, DB::Row>,
{
    let mut fresh = [0u8; 32];
    getrandom::fill(&mut fresh).map_err(|e| StoreError::Write(format!("no random bytes: {e}")))?;
    sqlx::query(
        "INSERT INTO settings_kv (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
    )
    .bind(MENU_KEY.to_owned())
    .bind(hex::encode(fresh))
    .execute(&mut *conn)
    .await?;
    let stored = setting::<DB>(conn, MENU_KEY)
        .await?
        .ok_or_else(|| StoreError::Corrupt("the menu key was not stored".into()))?;
    hex::decode(&stored)
        .ok()
        .filter(|k| k.len() >= 16)
        .ok_or_else(|| StoreError::Corrupt("the stored menu key is not hex".into()))
}

/// The settings before audit entry `id` (the newest entry when `None`): its
/// id and the JSON kept with it, `None` for an entry written before the
/// content was kept. `Ok(None)` when there is no such entry. The same SQL
/// on both backends.
pub(super) async fn audit_settings_before<'e, E, DB>(
    ex: E,
    id: Option<u64>,
) -> Result<Option<(u64, Option<String>)>, StoreError>
where
    E: Executor<'e, Database = DB>,
    DB: Database,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'r> (i64, Option<String>): FromRow<'r, DB::Row>,
{
    let row: Option<(i64, Option<String>)> = match id {
        Some(id) => {
            sqlx::query_as("SELECT id, settings_before FROM audit_log WHERE id = $1")
                .bind(id.min(i64::MAX as u64) as i64)
                .fetch_optional(ex)
                .await?
        }
        None => {
            sqlx::query_as("SELECT id, settings_before FROM audit_log ORDER BY id DESC LIMIT 1")
                .fetch_optional(ex)
                .await?
        }
    };
    Ok(row.map(|(id, before)| (id as u64, before)))
}

/// Audit entries newest first; `before_id` pages back (entries with id < it).
/// The same SQL on both backends.
pub(super) async fn list_audit<'e, E, DB>(
    ex: E,
    limit: u32,
    before_id: Option<u64>,
) -> Result<Vec<AuditEntry>, StoreError>
where
    E: Executor<'e, Database = DB>,
    DB: Database,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'r> (i64, i64, String, String, String): FromRow<'r, DB::Row>,
{
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
    .fetch_all(ex)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{Harness, Kind};

    fn block(p: &str) -> BlockEntry {
        BlockEntry {
            pattern: p.into(),
            note: String::new(),
        }
    }

    #[tokio::test]
    async fn appends_removals_and_reorders_all_store_what_was_asked() {
        appends_removals_and_reorders(Kind::Sqlite).await;
    }

    #[tokio::test]
    async fn appends_removals_and_reorders_all_store_what_was_asked_on_postgres() {
        appends_removals_and_reorders(Kind::Postgres).await;
    }

    async fn appends_removals_and_reorders(kind: Kind) {
        let Some(h) = Harness::of(kind, "appends_removals_and_reorders", 16).await else {
            return;
        };
        let audit = crate::store::AuditRecord {
            at_ms: 1,
            client: "t".into(),
            action: "test".into(),
            detail: "{}".into(),
        };
        let mut stored = h.store.load_settings().await.unwrap();
        let steps: [&[&str]; 5] = [
            &["4930", "4940"],
            &["4930", "4940", "4950"],
            &["4940", "4950"],
            &["4950", "4940", "4960"],
            &[],
        ];
        for patterns in steps {
            let next = Settings {
                block_list: patterns.iter().map(|p| block(p)).collect(),
                routing_table: vec![RoutingRule {
                    dest: "49*".into(),
                    caller_id: "4930777".into(),
                    note: String::new(),
                }],
                ..stored.clone()
            };
            stored = h
                .store
                .save_settings_change(&next, Some(&stored), Some("{}"), &audit, Some(("a", "b")))
                .await
                .unwrap();
            let loaded = h.store.load_settings().await.unwrap();
            assert_eq!(loaded, stored, "{patterns:?}");
        }
        assert_eq!(
            h.store.audit_settings_before(None).await.unwrap(),
            Some((5, Some("a".to_string())))
        );
        assert_eq!(h.store.audit_settings_before(Some(99)).await.unwrap(), None);
        assert_eq!(rows_to_write(Some(&[1, 2][..]), &[1, 2]), None);
        assert_eq!(rows_to_write(Some(&[1, 2][..]), &[1, 2, 3]), Some(2));
        assert_eq!(rows_to_write(Some(&[1, 2][..]), &[2, 1, 3]), Some(0));
    }
}
