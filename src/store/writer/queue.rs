//! The writer's queue: the handle callers submit through, and the task that
//! takes commands off the queue in batches until shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::batch::Writer;
use super::{Command, Committed, Intake, Publish, Reply};
use crate::calls::CallRecord;
use crate::store::{Store, StoreError};

/// Commands waiting for the writer; submitters wait when it is full.
const QUEUE_CAPACITY: usize = 8192;

/// Submits work to the writer task. Cheap to clone.
#[derive(Clone)]
pub struct WriterHandle {
    commands: mpsc::Sender<Command>,
    running: Arc<AtomicBool>,
}

impl std::fmt::Debug for WriterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterHandle")
            .field("running", &self.is_running())
            .field("queue_depth", &self.queue_depth())
            .finish()
    }
}

impl WriterHandle {
    /// Queues `intake` and returns the receiver of its commit result; the
    /// caller decides how long to wait for it.
    pub async fn submit(
        &self,
        intake: Intake,
    ) -> Result<oneshot::Receiver<Result<Committed, StoreError>>, StoreError> {
        let (reply, receiver) = oneshot::channel();
        self.commands
            .send(Command::Append(Box::new(intake), reply))
            .await
            .map_err(|_| StoreError::WriterClosed)?;
        Ok(receiver)
    }

    /// Zammad's manual "done" override. `None` when the call is unknown.
    pub(crate) async fn set_done(
        &self,
        call_id: String,
        done: bool,
    ) -> Result<Option<CallRecord>, StoreError> {
        self.request(|reply| Command::SetDone {
            call_id,
            done,
            reply,
        })
        .await
    }

    /// Ends every call not hung up with no sign of life for `stale_after_ms`
    /// with a synthetic hangup (cause "timeout"). Returns how many.
    pub(crate) async fn sweep(
        &self,
        stale_after_ms: i64,
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        self.request(|reply| Command::Sweep {
            cutoff_ms: now_ms.saturating_sub(stale_after_ms),
            now_ms,
            reply,
        })
        .await
    }

    /// Deletes events received before `older_than_ms` (except the newest event,
    /// so the sequence continues after a restart) and calls last updated
    /// before it. Returns (events, calls) deleted.
    pub(crate) async fn purge(&self, older_than_ms: i64) -> Result<(u64, u64), StoreError> {
        self.request(|reply| Command::Purge {
            cutoff_ms: older_than_ms,
            reply,
        })
        .await
    }

    /// Commands queued and not yet taken by the writer.
    pub(crate) fn queue_depth(&self) -> usize {
        self.commands.max_capacity() - self.commands.capacity()
    }

    pub(crate) fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire) && !self.commands.is_closed()
    }

    async fn request<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, StoreError> {
        let (reply, receiver) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| StoreError::WriterClosed)?;
        receiver.await.map_err(|_| StoreError::WriterClosed)?
    }
}

/// Starts the writer task, which hands every committed event to
/// `publisher`. When `shutdown` is cancelled it stops taking new commands,
/// commits everything already queued, and exits.
pub fn spawn_writer(
    store: Store,
    publisher: impl Publish,
    shutdown: CancellationToken,
    max_batch: usize,
) -> (WriterHandle, JoinHandle<()>) {
    let (commands, queue) = mpsc::channel(QUEUE_CAPACITY);
    let running = Arc::new(AtomicBool::new(true));
    let task = tokio::spawn(run(
        store,
        Box::new(publisher),
        queue,
        shutdown,
        max_batch.max(1),
        RunningFlag(running.clone()),
    ));
    (WriterHandle { commands, running }, task)
}

/// Clears the running flag however the task ends (including a panic).
struct RunningFlag(Arc<AtomicBool>);

impl Drop for RunningFlag {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

async fn run(
    store: Store,
    publisher: Box<dyn Publish>,
    mut queue: mpsc::Receiver<Command>,
    shutdown: CancellationToken,
    max_batch: usize,
    _running: RunningFlag,
) {
    let mut writer = match Writer::start(&store, publisher).await {
        Ok(writer) => writer,
        Err(error) => {
            tracing::error!(%error, path = store.path(), "event writer cannot start");
            return;
        }
    };
    loop {
        let first = tokio::select! {
            biased;
            _ = shutdown.cancelled() => None,
            command = queue.recv() => command,
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        drain(&mut queue, &mut batch, max_batch);
        writer.commit(batch).await;
    }
    // Refuse new commands, then commit what was already accepted.
    queue.close();
    loop {
        let mut batch = Vec::new();
        drain(&mut queue, &mut batch, max_batch);
        if batch.is_empty() {
            break;
        }
        writer.commit(batch).await;
    }
    tracing::info!(next_seq = writer.next_seq(), "event writer stopped");
}

/// Adds what is already queued to `batch`, up to `max_batch` commands.
fn drain(queue: &mut mpsc::Receiver<Command>, batch: &mut Vec<Command>, max_batch: usize) {
    while batch.len() < max_batch {
        match queue.try_recv() {
            Ok(command) => batch.push(command),
            Err(_) => break,
        }
    }
}
