//! The writer's queue: the handle callers submit through, and the task that
//! takes commands off the queue in batches until shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::spool::Spool;
use super::{BackendWriter, Command, Committed, Intake, Publish, Reply, WriterThread};
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
/// How long a stopping writer keeps retrying when neither the database nor
/// the spool takes writes, before it gives up on what is still queued (and
/// says how much that is).
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
    keys: Arc<PushKeys>,
    /// True once a spool left by an earlier run was folded in (or tried).
    started: watch::Receiver<bool>,
}

/// Dedupe keys for pushes of a kind without one of their own (dtmf):
/// unique per accepted push, across processes and restarts.
struct PushKeys {
    process: String,
    next: AtomicU64,
}

impl PushKeys {
    fn new() -> PushKeys {
        PushKeys {
            process: crate::store::instance_id(),
            next: AtomicU64::new(0),
        }
    }

    fn key(&self, intake: &Intake) -> Option<String> {
        if crate::calls::dedupe_key(intake.event.kind, &intake.event.call_id).is_some() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Some(format!("push:{}:{n}", self.process))
    }
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
        let key = self.keys.key(&intake);
        match self.commands.try_send(Command::Append {
            intake: Box::new(intake),
            key,
            reply: Some(reply),
        }) {
            Ok(()) => Ok(receiver),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overflow.record(&self.health);
                Err(StoreError::QueueFull)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(StoreError::WriterClosed),
        }
    }

    /// Waits until the writer has started and folded in what an earlier run
    /// left in the spool (or found that the database still fails).
    pub async fn started(&self) {
        let mut started = self.started.clone();
        let _ = started.wait_for(|started| *started).await;
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

/// How the writer ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterExit {
    /// Accepted events that were neither committed nor spooled: lost.
    pub lost: usize,
    /// Events left in the spool, folded in at the next start.
    pub spooled: u64,
}

/// Starts the writer task, which hands every committed event to
/// `publisher`. While the database fails, accepted events go to `spool`
/// (when there is one) and are folded in when it is back; a spool that
/// holds events from an earlier run is folded in before anything else.
/// When `shutdown` is cancelled it stops taking new commands, stores
/// everything already queued, and exits.
pub fn spawn_writer(
    store: Store,
    publisher: impl Publish,
    shutdown: CancellationToken,
    max_batch: usize,
    spool: Option<Spool>,
) -> (WriterHandle, JoinHandle<Option<WriterExit>>) {
    spawn_with_capacity(store, publisher, shutdown, max_batch, QUEUE_CAPACITY, spool)
}

pub(crate) fn spawn_with_capacity(
    store: Store,
    publisher: impl Publish,
    shutdown: CancellationToken,
    max_batch: usize,
    capacity: usize,
    spool: Option<Spool>,
) -> (WriterHandle, JoinHandle<Option<WriterExit>>) {
    let (commands, queue) = mpsc::channel(capacity);
    let running = Arc::new(AtomicBool::new(true));
    let spooling = Arc::new(AtomicBool::new(false));
    let (started_tx, started) = watch::channel(false);
    let (reporter, health) = HealthReporter::new(store.path().to_owned());
    let thread = store.backend().writer_thread();
    spawn_ticker(commands.downgrade(), spooling.clone());
    let writer = run(
        store,
        Box::new(publisher),
        queue,
        Loop {
            writer: None,
            spool,
            health: reporter,
            max_batch: max_batch.max(1),
            shutdown,
            retry_at: Instant::now(),
            wait: RETRY_FIRST,
            give_up_at: None,
            spooling,
            lost: 0,
            spool_error: None,
            db_error: String::new(),
        },
        started_tx,
        RunningFlag(running.clone()),
    );
    let task = on_own_thread(writer, thread);
    (
        WriterHandle {
            commands,
            running,
            health,
            overflow: Arc::default(),
            keys: Arc::new(PushKeys::new()),
            started,
        },
        task,
    )
}

/// How often a spooling writer is woken to try the database again when no
/// event arrives (the attempts themselves back off up to [`RETRY_CAP`]).
const TICK: Duration = Duration::from_millis(100);

/// Wakes the writer while it spools, so the spool is folded in when the
/// database is back even if no push arrives. Ends with the queue.
fn spawn_ticker(commands: mpsc::WeakSender<Command>, spooling: Arc<AtomicBool>) {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(TICK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let Some(commands) = commands.upgrade() else {
                break;
            };
            if commands.is_closed() {
                break;
            }
            if spooling.load(Ordering::Acquire) {
                // A full queue wakes the writer anyway.
                let _ = commands.try_send(Command::Tick);
            }
        }
    });
}

/// Runs a writer on a thread of its own, so the runtime's threads never
/// wait for the database and the writer never waits for a turn among the
/// webhooks' tasks: driven by a plain executor when its calls block
/// (SQLite), by a single-threaded runtime when it does async I/O
/// (PostgreSQL). The returned task ends when the thread does, with how the
/// writer ended (`None` when its thread died).
fn on_own_thread(
    writer: impl Future<Output = WriterExit> + Send + 'static,
    thread: WriterThread,
) -> JoinHandle<Option<WriterExit>> {
    let (done, finished) = oneshot::channel::<WriterExit>();
    let started = std::thread::Builder::new()
        .name("event-writer".into())
        .spawn(move || {
            let exit = match thread {
                WriterThread::Blocking => futures::executor::block_on(writer),
                WriterThread::Runtime => match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(writer),
                    // The writer (and its running flag) goes with it:
                    // every submit fails and readiness says so.
                    Err(error) => {
                        tracing::error!(%error, "the event writer's runtime cannot start");
                        WriterExit::default()
                    }
                },
            };
            let _ = done.send(exit);
        });
    if let Err(error) = started {
        // The writer (and its running flag) went with the closure: every
        // submit now fails with WriterClosed and readiness says so.
        tracing::error!(%error, "the event writer's thread cannot start");
    }
    tokio::spawn(async move { finished.await.ok() })
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
    mut state: Loop,
    started: watch::Sender<bool>,
    _running: RunningFlag,
) -> WriterExit {
    match store.backend().start_writer(publisher).await {
        Ok(writer) => state.writer = Some(writer),
        Err(error) => {
            tracing::error!(%error, path = store.path(), "event writer cannot start");
            let _ = started.send(true);
            return state.exit();
        }
    }
    // What an earlier run spooled goes in before any new event.
    if let Some(spool) = &state.spool
        && spool.pending() > 0
    {
        tracing::warn!(
            events = spool.pending(),
            spool = %spool.dir().display(),
            "the spool holds events from an earlier run; folding them into the database first"
        );
        state.fold(queue.len()).await;
    }
    let _ = started.send(true);
    loop {
        let first = tokio::select! {
            biased;
            _ = state.shutdown.cancelled() => None,
            command = queue.recv() => command,
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        drain(&mut queue, &mut batch, state.max_batch);
        state.handle(batch, &queue).await;
    }
    // Refuse new commands, then store what was already accepted.
    queue.close();
    loop {
        let mut batch = Vec::new();
        drain(&mut queue, &mut batch, state.max_batch);
        if batch.is_empty() {
            break;
        }
        state.handle(batch, &queue).await;
    }
    if state.pending() > 0 {
        state.fold(0).await;
    }
    let exit = state.exit();
    if exit.spooled > 0 {
        tracing::warn!(
            events = exit.spooled,
            "event writer stopped with events in the spool; they are folded into the database at the next start"
        );
    }
    if let Some(writer) = &state.writer {
        tracing::info!(next_seq = writer.next_seq(), "event writer stopped");
    }
    exit
}

/// The writer loop's state between batches.
struct Loop {
    /// Set once the backend's writer has started.
    writer: Option<Box<dyn BackendWriter>>,
    spool: Option<Spool>,
    health: HealthReporter,
    max_batch: usize,
    shutdown: CancellationToken,
    /// While the spool holds events: when the database is tried again, and
    /// the wait after the next failure.
    retry_at: Instant,
    wait: Duration,
    /// A stopping writer gives up on events it can neither commit nor spool
    /// at this point.
    give_up_at: Option<Instant>,
    /// Read by the ticker.
    spooling: Arc<AtomicBool>,
    lost: usize,
    /// Why the last spool append failed, while it does (logged once).
    spool_error: Option<String>,
    /// Why the database failed last.
    db_error: String,
}

impl Loop {
    /// Events in the spool, not yet in the database.
    fn pending(&self) -> u64 {
        self.spool.as_ref().map_or(0, Spool::pending)
    }

    /// Tells `/readyz`, the health service and the log (once) why writes
    /// fail and where the events are meanwhile.
    fn report_failing(&mut self, waiting: usize) {
        let reason = match (&self.spool, &self.spool_error) {
            (Some(spool), Some(error)) => format!(
                "{}; the spool {} fails too ({error}): accepted events are held in memory, and lost if the server stops before one of them takes writes",
                self.db_error,
                spool.dir().display()
            ),
            (Some(spool), None) if spool.pending() > 0 => format!(
                "{}; {} accepted events wait in the spool {} and go into the database in order once it takes writes",
                self.db_error,
                spool.pending(),
                spool.dir().display()
            ),
            _ => self.db_error.clone(),
        };
        self.health.failing(&reason, waiting);
    }

    fn exit(&self) -> WriterExit {
        WriterExit {
            lost: self.lost,
            spooled: self.pending(),
        }
    }

    /// Stores `batch`: folds the spool first when a retry is due, then
    /// commits the batch, or spools it while the database fails (or the
    /// spool still holds older events), or holds it and tries again.
    async fn handle(&mut self, mut batch: Vec<Command>, queue: &mpsc::Receiver<Command>) {
        batch.retain(|command| !matches!(command, Command::Tick));
        if self.pending() > 0 && Instant::now() >= self.retry_at {
            self.fold(batch.len() + queue.len()).await;
        }
        if !batch.is_empty() {
            self.store(batch, queue).await;
        }
    }

    async fn store(&mut self, mut batch: Vec<Command>, queue: &mpsc::Receiver<Command>) {
        let mut refusals = 0;
        let mut last_error = None;
        loop {
            let Some(writer) = self.writer.as_mut() else {
                return;
            };
            if self.spool.as_ref().is_none_or(|spool| spool.pending() == 0) {
                match writer.try_commit(&batch).await {
                    Ok(effects) => {
                        self.health.healthy(batch.len() + queue.len());
                        self.wait = RETRY_FIRST;
                        set_unstored(0);
                        writer.finish(batch, effects);
                        return;
                    }
                    Err(error) => {
                        metrics::counter!(names::WRITER_ERRORS).increment(1);
                        if !error.is_storage() {
                            // Tried once more from the stored position (a
                            // stale seq heals that way); a second refusal is
                            // the data itself, and retrying would block every
                            // later event behind it.
                            refusals += 1;
                            if refusals > 1 {
                                tracing::error!(%error, commands = batch.len(), "writer transaction refused twice; batch not stored");
                                writer.fail(batch, &error);
                                return;
                            }
                            tracing::warn!(%error, commands = batch.len(), "writer transaction failed; trying again from the stored position");
                            continue;
                        }
                        if self.retry_at <= Instant::now() {
                            self.retry_at = Instant::now() + self.wait;
                            self.wait = (self.wait * 2).min(RETRY_CAP);
                        }
                        self.db_error = error.to_string();
                        self.report_failing(batch.len() + queue.len());
                        last_error = Some(error.to_string());
                    }
                }
            }
            // The database cannot take it (or older events wait in the
            // spool): into the spool, behind them.
            batch = match self.spool_batch(batch) {
                Ok(()) => return,
                Err(batch) => batch,
            };
            let writer = self.writer.as_mut().expect("started above");
            let error = StoreError::Write(
                last_error
                    .clone()
                    .unwrap_or_else(|| "the database and the spool both fail".into()),
            );
            set_unstored(appends(&batch) + queue.len());
            if self.shutdown.is_cancelled() {
                let deadline = *self
                    .give_up_at
                    .get_or_insert_with(|| Instant::now() + SHUTDOWN_RETRY);
                if Instant::now() >= deadline {
                    let lost = appends(&batch);
                    self.lost += lost;
                    tracing::error!(
                        %error,
                        events = lost,
                        "EVENTS LOST: stopping while neither the database nor the spool takes writes; these accepted events were not stored"
                    );
                    writer.fail(batch, &error);
                    return;
                }
            }
            writer.pause(self.wait).await;
            self.wait = (self.wait * 2).min(RETRY_CAP);
            if self.pending() > 0 {
                self.fold(batch.len() + queue.len()).await;
            }
        }
    }

    /// Writes the events of `batch` to the spool and answers them; the
    /// batch's other commands fail (they are retried by whoever sent them).
    /// Hands the batch back when there is no spool or it failed.
    fn spool_batch(&mut self, batch: Vec<Command>) -> Result<(), Vec<Command>> {
        let Some(spool) = self.spool.as_mut() else {
            return Err(batch);
        };
        let events = batch.iter().filter_map(|command| match command {
            Command::Append { intake, key, .. } => Some((key.as_deref(), &**intake)),
            _ => None,
        });
        if let Err(error) = spool.append(events) {
            if self.spool_error.is_none() {
                tracing::error!(
                    %error,
                    spool = %spool.dir().display(),
                    events = appends(&batch),
                    "the spool cannot take events either: they are held in memory and retried; a stop now loses them"
                );
            }
            self.spool_error = Some(error.to_string());
            self.report_failing(appends(&batch));
            return Err(batch);
        }
        if self.spool_error.take().is_some() {
            tracing::warn!(spool = %spool.dir().display(), "the spool takes events again");
        }
        self.report_failing(0);
        self.spooling.store(true, Ordering::Release);
        set_unstored(0);
        if let Some(writer) = self.writer.as_mut() {
            writer.spooled();
        }
        for command in batch {
            match command {
                Command::Append {
                    reply: Some(reply), ..
                } => drop(reply.send(Ok(Committed::Spooled))),
                Command::Append { reply: None, .. } | Command::Tick => {}
                other => other.respond(Err(StoreError::Write(
                    "the database is failing; events are spooled until it is back".into(),
                ))),
            }
        }
        Ok(())
    }

    /// Folds the spool into the database, oldest first, a batch at a time.
    /// Stops at the first failure and backs off.
    async fn fold(&mut self, waiting: usize) {
        let (Some(spool), Some(writer)) = (self.spool.as_mut(), self.writer.as_mut()) else {
            return;
        };
        let total = spool.pending();
        while spool.pending() > 0 {
            let (chunk, end) = match spool.next_chunk(self.max_batch) {
                Ok(chunk) => chunk,
                Err(error) => {
                    tracing::error!(%error, spool = %spool.dir().display(), "cannot read the spool; trying again");
                    self.retry_at = Instant::now() + self.wait;
                    self.wait = (self.wait * 2).min(RETRY_CAP);
                    return;
                }
            };
            let events = chunk.len();
            let commands: Vec<Command> = chunk
                .into_iter()
                .map(|spooled| Command::Append {
                    intake: Box::new(spooled.intake),
                    key: spooled.key,
                    reply: None,
                })
                .collect();
            match writer.try_commit(&commands).await {
                Ok(effects) => {
                    writer.finish(commands, effects);
                    if let Err(error) = spool.folded(events, end) {
                        tracing::warn!(%error, spool = %spool.dir().display(), "the folded spool cannot be emptied; the next start folds it again and finds its events stored");
                    }
                }
                Err(error) => {
                    metrics::counter!(names::WRITER_ERRORS).increment(1);
                    if error.is_storage() {
                        self.db_error = error.to_string();
                        self.report_failing(waiting);
                    } else {
                        tracing::error!(%error, spool = %spool.dir().display(), "the database refuses spooled events; they stay in the spool");
                    }
                    self.retry_at = Instant::now() + self.wait;
                    self.wait = (self.wait * 2).min(RETRY_CAP);
                    return;
                }
            }
        }
        self.spooling.store(false, Ordering::Release);
        self.wait = RETRY_FIRST;
        self.health.healthy(waiting);
        if total > 0 {
            tracing::warn!(
                events = total,
                spool = %spool.dir().display(),
                "spooled events folded into the database, in order"
            );
        }
    }
}

fn set_unstored(events: usize) {
    metrics::gauge!(names::UNSTORED_EVENTS).set(events as f64);
}

/// The events among `batch`'s commands.
fn appends(batch: &[Command]) -> usize {
    batch
        .iter()
        .filter(|command| matches!(command, Command::Append { .. }))
        .count()
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
