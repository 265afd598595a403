//! Test harness: a store on a temporary file with a running writer and
//! fan-out. Event fixtures are in `calls::tests`.

use std::path::PathBuf;

use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Committed, Intake, Store, WriterHandle, spawn_writer};
use crate::decide::Decision;
use crate::fanout::Fanout;
use crate::sipgate::event::Event;

pub(crate) struct Harness {
    pub dir: TempDir,
    pub store: Store,
    pub fanout: Fanout,
    pub writer: WriterHandle,
    pub shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Harness {
    pub async fn new(live_capacity: usize) -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        Harness::start(dir, live_capacity).await
    }

    async fn start(dir: TempDir, live_capacity: usize) -> Harness {
        let store = Store::open(Self::db_path(&dir).to_str().unwrap())
            .await
            .expect("open store");
        let (fanout, publisher) = Fanout::new(store.clone(), live_capacity);
        let shutdown = CancellationToken::new();
        let (writer, task) = spawn_writer(store.clone(), publisher, shutdown.clone(), 64);
        Harness {
            dir,
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
        Harness::start(self.dir, 16).await
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
