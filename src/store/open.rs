//! Opening the database: connections, pragmas, migrations.

use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::ConnectOptions as _;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};

use super::{Inner, Store, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// Connections in the read pool (the writer has its own).
const READ_CONNECTIONS: u32 = 4;
/// How long a statement waits for a lock before failing with SQLITE_BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

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
    pub(crate) fn path(&self) -> &str {
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
    pub(crate) async fn ping(&self) -> bool {
        sqlx::query("SELECT 1")
            .execute(&self.inner.pool)
            .await
            .is_ok()
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
