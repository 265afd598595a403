//! Durable storage: the event log, the call log, settings and the audit trail.
//!
//! SQLite in WAL mode with `synchronous=FULL`, so an acknowledged event
//! survives `kill -9` and power loss. Reads go through a small pool; every
//! event write goes through the single writer task ([`writer`]) on its own
//! dedicated connection, which batches many events into one transaction.
//! The SQL sticks to what PostgreSQL also accepts (`$n` placeholders,
//! `ON CONFLICT … DO UPDATE`, no SQLite-only functions) so a second backend
//! can reuse it.

pub mod maintenance;
mod rows;
pub mod writer;

use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions as _, QueryBuilder, Sqlite};

use crate::calls::{CallRecord, CallState};
use crate::decide::{BlockEntry, Decision, RoutingRule, Settings};
use crate::sipgate::event::{Direction, Event};

pub use maintenance::spawn_maintenance;
pub use writer::{Committed, Intake, WriterHandle, spawn_writer};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// Connections in the read pool (the writer has its own).
const READ_CONNECTIONS: u32 = 4;
/// How long a statement waits for a lock before failing with SQLITE_BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_CALL_PAGE: u32 = 50;
const MAX_CALL_PAGE: u32 = 1000;
const DEFAULT_AUDIT_PAGE: u32 = 100;
const MAX_AUDIT_PAGE: u32 = 1000;
const MAX_EVENT_PAGE: u32 = 10_000;

/// One event of the log, as stored and as streamed.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub seq: u64,
    pub event: Event,
    pub received_at_ms: i64,
    /// Made by the sidecar (end of a rejected call, sweep), not sent by sipgate.
    pub synthetic: bool,
    /// The decision sent back to sipgate (newCall only).
    pub decision: Option<Decision>,
    /// The call after this event was applied.
    pub call: CallRecord,
    /// The event as the gRPC stream sends it, encoded on first use and
    /// shared by every live subscriber (see `grpc::wire`).
    pub wire: std::sync::OnceLock<bytes::Bytes>,
}

/// A settings change to record: what, when, by which client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub at_ms: i64,
    pub client: String,
    pub action: String,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: u64,
    pub at_ms: i64,
    pub client: String,
    pub action: String,
    pub detail: String,
}

/// Filters and paging for [`Store::list_calls`]; results are newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallQuery {
    /// 0 means the default (50); at most 1000.
    pub limit: u32,
    /// The cursor returned with the previous page; `None` or "" starts at the newest.
    pub page_token: Option<String>,
    pub direction: Option<Direction>,
    pub done: Option<bool>,
    pub state: Option<CallState>,
    /// Matches `from` or `to` exactly.
    pub number: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("invalid page token")]
    BadPageToken,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored row that no longer decodes (hand-edited, or a newer schema).
    #[error("stored data cannot be decoded: {0}")]
    Corrupt(String),
    /// The writer's transaction failed; nothing of the batch was stored.
    #[error("writing to the database failed: {0}")]
    Write(String),
    #[error("the event writer is not running")]
    WriterClosed,
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    pool: SqlitePool,
    options: SqliteConnectOptions,
    /// The connection reserved for the writer task, taken when it starts.
    writer_connection: Mutex<Option<SqliteConnection>>,
    path: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if missing) the database at `database`, a plain path
    /// or a `sqlite://` URL, and applies the migrations.
    pub async fn open(database: &str) -> Result<Store, StoreError> {
        let options = connect_options(database)?;
        let path = options.get_filename().display().to_string();
        let open_error = |reason: String| StoreError::Open {
            path: path.clone(),
            reason,
        };

        let mut writer = options
            .connect()
            .await
            .map_err(|e| open_error(describe(&e)))?;
        MIGRATOR.run(&mut writer).await.map_err(|e| {
            open_error(match &e {
                sqlx::migrate::MigrateError::Execute(inner) => describe(inner),
                other => other.to_string(),
            })
        })?;
        let pool = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .min_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(|e| open_error(describe(&e)))?;

        Ok(Store {
            inner: Arc::new(Inner {
                pool,
                options,
                writer_connection: Mutex::new(Some(writer)),
                path,
            }),
        })
    }

    /// The database file, as shown in messages.
    pub fn path(&self) -> &str {
        &self.inner.path
    }

    /// The dedicated writer connection (opened by [`Store::open`]), or a new
    /// one if it was already taken by an earlier writer.
    pub(crate) async fn writer_connection(&self) -> Result<SqliteConnection, StoreError> {
        let reserved = self
            .inner
            .writer_connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        match reserved {
            Some(connection) => Ok(connection),
            None => Ok(self.inner.options.connect().await?),
        }
    }

    /// True when the database answers a query.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1")
            .execute(&self.inner.pool)
            .await
            .is_ok()
    }

    pub async fn load_settings(&self) -> Result<Settings, StoreError> {
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
    pub async fn save_settings(
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
    pub async fn list_audit(
        &self,
        limit: u32,
        before_id: Option<u64>,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let limit = if limit == 0 {
            DEFAULT_AUDIT_PAGE
        } else {
            limit.min(MAX_AUDIT_PAGE)
        };
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

    /// Events with seq > `after_seq`, ascending, at most `limit` (capped at 10,000).
    pub async fn events_after(
        &self,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        rows::events_after(&self.inner.pool, after_seq, limit.clamp(1, MAX_EVENT_PAGE)).await
    }

    /// The highest stored sequence number, 0 when the log is empty.
    pub async fn head_seq(&self) -> Result<u64, StoreError> {
        rows::head_seq(&self.inner.pool).await
    }

    pub async fn get_call(&self, call_id: &str) -> Result<Option<CallRecord>, StoreError> {
        rows::load_call(&self.inner.pool, call_id).await
    }

    /// Calls newest first (by initialized_at, ties by call_id) and the token
    /// for the next page (`None` on the last page).
    pub async fn list_calls(
        &self,
        q: &CallQuery,
    ) -> Result<(Vec<CallRecord>, Option<String>), StoreError> {
        let limit = match q.limit {
            0 => DEFAULT_CALL_PAGE,
            n => n.min(MAX_CALL_PAGE),
        };
        let cursor = match q.page_token.as_deref() {
            None | Some("") => None,
            Some(token) => Some(decode_page_token(token)?),
        };

        let mut sql = QueryBuilder::<Sqlite>::new("SELECT record FROM calls WHERE 1 = 1");
        if let Some(direction) = q.direction {
            sql.push(" AND direction = ").push_bind(direction.as_str());
        }
        if let Some(done) = q.done {
            sql.push(" AND done = ").push_bind(done);
        }
        if let Some(state) = q.state {
            sql.push(" AND state = ").push_bind(state.as_str());
        }
        if let Some(number) = q.number.as_deref().filter(|n| !n.is_empty()) {
            sql.push(" AND (from_number = ")
                .push_bind(number)
                .push(" OR to_number = ")
                .push_bind(number)
                .push(")");
        }
        if let Some((at_ms, call_id)) = cursor {
            sql.push(" AND (initialized_at_ms < ")
                .push_bind(at_ms)
                .push(" OR (initialized_at_ms = ")
                .push_bind(at_ms)
                .push(" AND call_id < ")
                .push_bind(call_id)
                .push("))");
        }
        sql.push(" ORDER BY initialized_at_ms DESC, call_id DESC LIMIT ")
            .push_bind(i64::from(limit) + 1);

        let records: Vec<(String,)> = sql.build_query_as().fetch_all(&self.inner.pool).await?;
        let mut calls = records
            .into_iter()
            .map(|(record,)| serde_json::from_str::<CallRecord>(&record))
            .collect::<Result<Vec<_>, _>>()?;
        let next = if calls.len() > limit as usize {
            calls.truncate(limit as usize);
            calls
                .last()
                .map(|c| encode_page_token(c.initialized_at_ms, &c.call_id))
        } else {
            None
        };
        Ok((calls, next))
    }
}

fn connect_options(database: &str) -> Result<SqliteConnectOptions, StoreError> {
    let options = if database.starts_with("sqlite:") {
        SqliteConnectOptions::from_str(database).map_err(|e| StoreError::Open {
            path: database.to_owned(),
            reason: e.to_string(),
        })?
    } else {
        SqliteConnectOptions::new().filename(Path::new(database))
    };
    Ok(options
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true))
}

/// The reason an open failed, with a hint an operator can act on.
fn describe(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => {
            let primary = db
                .code()
                .and_then(|c| c.parse::<i32>().ok())
                .map(|c| c & 0xff);
            let hint = match primary {
                Some(14) => " (is the directory writable?)",
                Some(8) | Some(3) => " (is the file writable?)",
                Some(13) => " (is the disk full?)",
                Some(26) => " (is it a SQLite database?)",
                _ => "",
            };
            format!("{}{hint}", db.message())
        }
        sqlx::Error::Io(io) => io.to_string(),
        other => other.to_string(),
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

fn encode_page_token(initialized_at_ms: i64, call_id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{initialized_at_ms}:{call_id}"))
}

fn decode_page_token(token: &str) -> Result<(i64, String), StoreError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| StoreError::BadPageToken)?;
    let text = String::from_utf8(bytes).map_err(|_| StoreError::BadPageToken)?;
    let (at_ms, call_id) = text.split_once(':').ok_or(StoreError::BadPageToken)?;
    let at_ms = at_ms.parse().map_err(|_| StoreError::BadPageToken)?;
    Ok((at_ms, call_id.to_owned()))
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests;
