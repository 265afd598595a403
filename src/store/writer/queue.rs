//! The writer's queue: the handle callers submit through, and the task that
//! takes commands off the queue in batches until shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::WriterThread;
use super::{BackendWriter, Command, Committed, Intake, Publish, Reply};
use crate::calls::CallRecord;
use crate::store::health::{HealthReporter, StorageHealth};
use crate::store::{Store, StoreError};
use crate::telemetry::names;

/// Commands waiting for the writer. A webhook's event is refused at once
/// when it is full; internal requests wait for room.
const QUEUE_CAPACITY: usize = 8192;
/// First wait before a failed batch is tried again; doubles up to the cap.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_CAP: Duration = Duration::from_secs(2);
/// How long a stopping writer keeps retrying a failing database before it
/// gives up on what is still queued (and says how much that is).
const SHUTDOWN_RETRY: Duration = Duration::from_secs(15);
/// At most one overflow log line per this many milliseconds.
const OVERFLOW_LOG_EVERY_MS: i64 = 10_000;

/// Submits work to the writer task. Cheap to clone.
#[derive(Clone)]
pub struct WriterHandle {
    commands: mpsc::Sender<Command>,
    running: Arc<AtomicBool>,
    health: StorageHealth,
    overflow: Arc<Overflow>,
}

/// Events refused because the queue was full, and when that was last logged.
#[derive(Default)]
struct Overflow {
    unlogged: AtomicU64,
    last_logged_ms: AtomicI64,
}

impl Overflow {
    fn record(&self, health: &StorageHealth) {
        metrics::counter!(names::WRITER_QUEUE_OVERFLOW).increment(1);
        self.unlogged.fetch_add(1, Ordering::Relaxed);
        let now = crate::now_ms();
        let last = self.last_logged_ms.load(Ordering::Relaxed);
        if now - last >= OVERFLOW_LOG_EVERY_MS
            && self
                .last_logged_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let refused = self.unlogged.swap(0, Ordering::Relaxed);
            tracing::error!(
                refused,
                capacity = QUEUE_CAPACITY,
                storage = ?health.state(),
                "EVENTS LOST: the writer's queue is full, webhook events are answered but not stored"
            );
        }
    }
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
        match self
            .commands
            .try_send(Command::Append(Box::new(intake), reply))
        {
            Ok(()) => Ok(receiver),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overflow.record(&self.health);
                Err(StoreError::QueueFull)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(StoreError::WriterClosed),
        }
    }

    /// Whether the writer's last transaction committed.
    pub fn storage_health(&self) -> StorageHealth {
        self.health.clone()
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
    spawn_with_capacity(store, publisher, shutdown, max_batch, QUEUE_CAPACITY)
}

pub(crate) fn spawn_with_capacity(
    store: Store,
    publisher: impl Publish,
    shutdown: CancellationToken,
    max_batch: usize,
    capacity: usize,
) -> (WriterHandle, JoinHandle<()>) {
    let (commands, queue) = mpsc::channel(capacity);
    let running = Arc::new(AtomicBool::new(true));
    let (reporter, health) = HealthReporter::new(store.path().to_owned());
    let thread = store.backend().writer_thread();
    let writer = run(
        store,
        Box::new(publisher),
        queue,
        shutdown,
        max_batch.max(1),
        RunningFlag(running.clone()),
        reporter,
    );
    let task = on_own_thread(writer, thread);
    (
        WriterHandle {
            commands,
            running,
            health,
            overflow: Arc::default(),
        },
        task,
    )
}

/// Runs a writer on a thread of its own, so the runtime's threads never
/// wait for the database and the writer never waits for a turn among the
/// webhooks' tasks: driven by a plain executor when its calls block
/// (SQLite), by a single-threaded runtime when it does async I/O
/// (PostgreSQL). The returned task ends when the thread does.
fn on_own_thread(
    writer: impl Future<Output = ()> + Send + 'static,
    thread: WriterThread,
) -> JoinHandle<()> {
    let (done, finished) = oneshot::channel::<()>();
    let started = std::thread::Builder::new()
        .name("event-writer".into())
        .spawn(move || {
            match thread {
                WriterThread::Blocking => futures::executor::block_on(writer),
                WriterThread::Runtime => match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(writer),
                    // The writer (and its running flag) goes with it:
                    // every submit fails and readiness says so.
                    Err(error) => {
                        tracing::error!(%error, "the event writer's runtime cannot start")
                    }
                },
            }
            drop(done);
        });
    if let Err(error) = started {
        // The writer (and its running flag) went with the closure: every
        // submit now fails with WriterClosed and readiness says so.
        tracing::error!(%error, "the event writer's thread cannot start");
    }
    tokio::spawn(async move {
        let _ = finished.await;
    })
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
    mut health: HealthReporter,
) {
    let mut writer = match store.backend().start_writer(publisher).await {
        Ok(writer) => writer,
        Err(error) => {
            tracing::error!(%error, path = store.path(), "event writer cannot start");
            return;
        }
    };
    let mut give_up_at = None;
    loop {
        let first = tokio::select! {
            biased;
            _ = shutdown.cancelled() => None,
            command = queue.recv() => command,
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        drain(&mut queue, &mut batch, max_batch);
        store_batch(
            &mut writer,
            batch,
            &queue,
            &mut health,
            &shutdown,
            &mut give_up_at,
        )
        .await;
    }
    // Refuse new commands, then commit what was already accepted.
    queue.close();
    loop {
        let mut batch = Vec::new();
        drain(&mut queue, &mut batch, max_batch);
        if batch.is_empty() {
            break;
        }
        store_batch(
            &mut writer,
            batch,
            &queue,
            &mut health,
            &shutdown,
            &mut give_up_at,
        )
        .await;
    }
    tracing::info!(next_seq = writer.next_seq(), "event writer stopped");
}

/// Commits `batch`, trying again (with capped backoff) for as long as the
/// database fails, so accepted events are stored in order once it is back.
/// Only a stopping writer gives up, after [`SHUTDOWN_RETRY`], and says so.
async fn store_batch(
    writer: &mut Box<dyn BackendWriter>,
    batch: Vec<Command>,
    queue: &mpsc::Receiver<Command>,
    health: &mut HealthReporter,
    shutdown: &CancellationToken,
    give_up_at: &mut Option<Instant>,
) {
    let mut wait = RETRY_FIRST;
    let mut refusals = 0;
    loop {
        let error = match writer.try_commit(&batch).await {
            Ok(effects) => {
                health.healthy(batch.len() + queue.len());
                writer.finish(batch, effects);
                return;
            }
            Err(error) => error,
        };
        metrics::counter!(names::WRITER_ERRORS).increment(1);
        if !error.is_storage() {
            // Tried once more from the stored position (a stale seq heals
            // that way); a second refusal is the data itself, and retrying
            // would block every later event behind it.
            refusals += 1;
            if refusals > 1 {
                tracing::error!(%error, commands = batch.len(), "writer transaction refused twice; batch not stored");
                writer.fail(batch, &error);
                return;
            }
            tracing::warn!(%error, commands = batch.len(), "writer transaction failed; trying again from the stored position");
            continue;
        }
        health.failing(&error.to_string(), batch.len() + queue.len());
        if shutdown.is_cancelled() {
            let deadline = *give_up_at.get_or_insert_with(|| Instant::now() + SHUTDOWN_RETRY);
            if Instant::now() >= deadline {
                let lost = batch.len() + queue.len();
                tracing::error!(
                    %error,
                    commands = lost,
                    "EVENTS LOST: stopping while the database still fails; these accepted commands were not stored"
                );
                writer.fail(batch, &error);
                return;
            }
        }
        writer.pause(wait).await;
        wait = (wait * 2).min(RETRY_CAP);
    }
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
