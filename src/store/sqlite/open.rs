//! Opening the database: connections, pragmas, migrations.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Write as _};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::ConnectOptions as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::{Inner, SqliteStore};
use crate::store::StoreError;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// Connections in the read pool (the writer has its own).
const READ_CONNECTIONS: u32 = 4;
/// Rows buffered between a connection's thread and its reader.
const ROW_CHANNEL: usize = 1024;
/// How long a statement waits for a lock before failing with SQLITE_BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

impl SqliteStore {
    /// Opens (creating if missing) the database at `database`, a plain path
    /// or a `sqlite://` URL, and applies the migrations.
    ///
    /// Only one process may use a database file: `<database>.lock` is locked
    /// exclusively for as long as the store lives, and a second open fails
    /// naming the process that holds it. The database is created readable by
    /// its owner only (`-wal` and `-shm` take the same mode).
    pub(crate) async fn open(database: &str) -> Result<SqliteStore, StoreError> {
        let options = connect_options(database)?;
        let path = options.get_filename().display().to_string();
        let open_error = |reason: String| StoreError::Open {
            path: path.clone(),
            reason,
        };

        if database.contains(":memory:") || database.contains("mode=memory") {
            // The writer's connection and the readers' share the database
            // through its file.
            return Err(open_error(
                "an in-memory database cannot be served; give a file path".into(),
            ));
        }
        check_directory(options.get_filename()).map_err(open_error)?;
        let lock = lock(options.get_filename()).map_err(open_error)?;
        check_existing_files(options.get_filename()).map_err(open_error)?;
        set_orphans_aside(options.get_filename()).map_err(open_error)?;
        create_private(options.get_filename()).map_err(open_error)?;

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
        // Only the first connection may create the file: a later one (a
        // pool refill, a writer reconnect) after the file was removed must
        // fail rather than start an empty database at the same path.
        let options = options.create_if_missing(false);
        let pool = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .min_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(|e| open_error(describe(&e)))?;
        // The pool keeps the database (and its WAL) open from here on; the
        // writer opens its own connection (`writer::sqlite`).
        drop(writer);

        Ok(SqliteStore {
            inner: Arc::new(Inner {
                pool,
                options,
                path,
                _lock: lock,
                #[cfg(test)]
                fault: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// The database file.
    pub(crate) fn file(&self) -> &Path {
        self.inner.options.get_filename()
    }

    /// Test hook: makes the writer's connection refuse writes while `on`.
    #[cfg(test)]
    pub(crate) fn set_fault(&self, on: bool) {
        self.inner
            .fault
            .store(on, std::sync::atomic::Ordering::SeqCst);
    }

    #[cfg(test)]
    pub(crate) fn fault(&self) -> bool {
        self.inner.fault.load(std::sync::atomic::Ordering::SeqCst)
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
        .foreign_keys(true)
        // Rows a query may hand over before its reader takes them: a page
        // of the log crosses from SQLite's thread in a few wake-ups, not one
        // every 50 rows.
        .row_buffer_size(ROW_CHANNEL))
}

/// The database's real path: symlinks resolved (the file's own, or its
/// directory's when the file does not exist yet), so every name of one
/// database shares one lock.
pub(in crate::store) fn canonical(database: &Path) -> std::path::PathBuf {
    if let Ok(real) = std::fs::canonicalize(database) {
        return real;
    }
    let parent = match database.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match (std::fs::canonicalize(parent), database.file_name()) {
        (Ok(dir), Some(name)) => dir.join(name),
        _ => database.to_path_buf(),
    }
}

/// Takes `<database>.lock` (next to the database's real path) for the life
/// of the process, or says who holds it. A lock file that is a symlink is
/// refused (`O_NOFOLLOW`): the pid is never written through one.
fn lock(database: &Path) -> Result<File, String> {
    let mut name = canonical(database).into_os_string();
    name.push(".lock");
    let path = Path::new(&name);
    let mut options = private_options();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NOFOLLOW);
    let mut file = options
        .read(true)
        .write(true)
        .truncate(false)
        .open(path)
        .map_err(|e| {
            format!(
                "cannot create the lock file {}: {}",
                path.display(),
                io_reason(&e)
            )
        })?;
    match file.try_lock() {
        Ok(()) => {
            // Who holds it, for the message a second server prints.
            let _ = file.set_len(0);
            let _ = write!(file, "{}", std::process::id());
            let _ = file.flush();
            Ok(file)
        }
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let by = if holder.is_empty() {
                "another process".to_owned()
            } else {
                format!("another process (pid {holder})")
            };
            Err(format!(
                "the database is in use by {by}; only one sipgate-sidecar may serve a database (lock file {})",
                path.display()
            ))
        }
        Err(TryLockError::Error(e)) => {
            Err(format!("cannot lock {}: {}", path.display(), io_reason(&e)))
        }
    }
}

/// Refuses a database in a directory every user may write to unless it is
/// sticky (`/tmp`): anyone could replace or remove the file there.
fn check_directory(database: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = canonical(database)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new(".").to_path_buf());
    let Ok(meta) = std::fs::metadata(&dir) else {
        // Opening says what is wrong with it.
        return Ok(());
    };
    let mode = meta.permissions().mode();
    if mode & 0o002 != 0 && mode & 0o1000 == 0 {
        return Err(format!(
            "the directory {} is writable by every user (mode {:o}) and not sticky: anyone could \
             replace the database; put it in a directory only its owner can write",
            dir.display(),
            mode & 0o7777
        ));
    }
    Ok(())
}

/// The database and its `-wal`/`-shm`, when they exist already, must belong
/// to this user (a file planted by another user is refused), and are made
/// readable by their owner only if they were not (SQLite gives `-wal` and
/// `-shm` the database's mode).
fn check_existing_files(database: &Path) -> Result<(), String> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    for suffix in ["", "-wal", "-shm"] {
        let mut name = database.as_os_str().to_owned();
        name.push(suffix);
        let file = std::path::PathBuf::from(name);
        let Ok(meta) = std::fs::symlink_metadata(&file) else {
            continue;
        };
        let real = std::fs::metadata(&file).unwrap_or(meta);
        if real.uid() != me {
            return Err(format!(
                "{} belongs to user {}, not to this server's user {me}: chown it (or run as its owner)",
                file.display(),
                real.uid()
            ));
        }
        let mode = real.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).map_err(
                |e| {
                    format!(
                        "{} is readable by others (mode {mode:o}) and cannot be made 0600: {}",
                        file.display(),
                        io_reason(&e)
                    )
                },
            )?;
            tracing::warn!(
                file = %file.display(),
                was = format!("{mode:o}"),
                "a database file was readable or writable by others; made 0600"
            );
        }
    }
    Ok(())
}

/// A `-wal` (and `-shm`) left by a database file that was removed belongs
/// to that database: SQLite would replay its pages into the new, empty file
/// and corrupt it. They are moved aside (`…-wal.orphan-<ms>`), loudly.
fn set_orphans_aside(database: &Path) -> Result<(), String> {
    if database.exists() {
        return Ok(());
    }
    let now = crate::now_ms();
    for suffix in ["-wal", "-shm"] {
        let mut name = database.as_os_str().to_owned();
        name.push(suffix);
        let file = std::path::PathBuf::from(name);
        if std::fs::symlink_metadata(&file).is_err() {
            continue;
        }
        let mut aside = file.clone().into_os_string();
        aside.push(format!(".orphan-{now}"));
        std::fs::rename(&file, &aside).map_err(|e| {
            format!(
                "the database file is missing but {} is there, and it cannot be moved aside: {}",
                file.display(),
                io_reason(&e)
            )
        })?;
        tracing::error!(
            database = %database.display(),
            moved = %file.display(),
            to = %std::path::Path::new(&aside).display(),
            "the database file is missing but its WAL or shared-memory file is there: moved aside, a new database is created"
        );
    }
    Ok(())
}

/// Creates the database file readable and writable by its owner only, so
/// SQLite (which gives `-wal` and `-shm` the database's mode) never creates
/// it with the umask's mode. An existing file is left as it is.
fn create_private(database: &Path) -> Result<(), String> {
    private_options()
        .read(true)
        .write(true)
        .truncate(false)
        .open(database)
        .map(drop)
        .map_err(|e| io_reason(&e))
}

fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

fn io_reason(error: &std::io::Error) -> String {
    let hint = match error.kind() {
        std::io::ErrorKind::NotFound => " (does the directory exist?)",
        std::io::ErrorKind::PermissionDenied => " (is it writable by this user?)",
        std::io::ErrorKind::IsADirectory => " (give a file name, not a directory)",
        std::io::ErrorKind::ReadOnlyFilesystem => " (the file system is read-only)",
        std::io::ErrorKind::StorageFull => " (is the disk full?)",
        _ => "",
    };
    format!("{error}{hint}")
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
