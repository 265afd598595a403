//! Test harness: a store on a temporary SQLite file or a fresh PostgreSQL
//! database, with a running writer and fan-out. Event fixtures are in
//! `calls::tests`.

use std::path::PathBuf;

use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Committed, Intake, Store, WriterExit, WriterHandle, spawn_writer};
use crate::decide::Decision;
use crate::fanout::Fanout;
use crate::sipgate::event::Event;

/// Which backend a test of the shared suite runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server tests use: `SIDECAR_TEST_POSTGRES`, a URL whose
/// role may create databases. Unset, a test that needs it fails under CI
/// (`CI` set) and is skipped, loudly, elsewhere.
pub(crate) fn postgres_server(test: &str) -> Option<String> {
    match std::env::var("SIDECAR_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!(
                "{test}: SIDECAR_TEST_POSTGRES is not set (CI runs every test on PostgreSQL too)"
            )
        }
        _ => {
            eprintln!(
                "SKIPPED {test} on PostgreSQL: set SIDECAR_TEST_POSTGRES=postgres://… (bash .ci/run starts a server)"
            );
            None
        }
    }
}

/// A new, empty database on the test server; its URL. `None` when the test
/// is skipped (see [`postgres_server`]).
pub(crate) async fn postgres_database(test: &str) -> Option<String> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let server = postgres_server(test)?;
    let name = format!(
        "sidecar_{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    );
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&server)
        .await
        .expect("connect to SIDECAR_TEST_POSTGRES");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create a test database");
    let (base, query) = match server.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (server.as_str(), String::new()),
    };
    let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
    Some(format!("{base}/{name}{query}"))
}

pub(crate) struct Harness {
    pub dir: TempDir,
    /// The file's path or the PostgreSQL URL.
    pub database: String,
    pub store: Store,
    pub fanout: Fanout,
    pub writer: WriterHandle,
    pub shutdown: CancellationToken,
    task: JoinHandle<Option<WriterExit>>,
}

impl Harness {
    /// On a new SQLite file.
    pub async fn new(live_capacity: usize) -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let database = Self::db_path(&dir).to_str().unwrap().to_owned();
        Harness::start(dir, database, live_capacity).await
    }

    /// On a new database of `kind`; `None` when the test is skipped.
    pub async fn of(kind: Kind, test: &str, live_capacity: usize) -> Option<Harness> {
        match kind {
            Kind::Sqlite => Some(Harness::new(live_capacity).await),
            Kind::Postgres => {
                let database = postgres_database(test).await?;
                let dir = tempfile::tempdir().expect("temp dir");
                Some(Harness::start(dir, database, live_capacity).await)
            }
        }
    }

    /// Another replica on the same database: its own store, writer and fan-out.
    pub async fn replica(&self, live_capacity: usize) -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        Harness::start(dir, self.database.clone(), live_capacity).await
    }

    async fn start(dir: TempDir, database: String, live_capacity: usize) -> Harness {
        let store = Store::open(&database).await.expect("open store");
        let (fanout, publisher) = Fanout::new(store.clone(), live_capacity);
        let shutdown = CancellationToken::new();
        let (writer, task) = spawn_writer(store.clone(), publisher, shutdown.clone(), 64, None);
        Harness {
            dir,
            database,
            store,
            fanout,
            writer,
            shutdown,
            task,
        }
    }

    fn db_path(dir: &TempDir) -> PathBuf {
        dir.path().join("sidecar.db")
    }

    /// Stops the writer (committing what is queued) and opens the file again.
    pub async fn reopen(self) -> Harness {
        self.shutdown.cancel();
        self.task.await.expect("writer task");
        // Every handle on the store goes, so its lock is released.
        drop(self.store);
        drop(self.fanout);
        drop(self.writer);
        Harness::start(self.dir, self.database, 16).await
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("writer task");
    }

    /// Submits and waits for the commit.
    pub async fn append(&self, event: Event, decision: Option<Decision>, at_ms: i64) -> Committed {
        self.writer
            .submit(Intake {
                event,
                decision,
                received_at_ms: at_ms,
            })
            .await
            .expect("queued")
            .await
            .expect("answered")
            .expect("committed")
    }
}
