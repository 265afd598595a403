//! Whether the writer can store events right now. The writer reports every
//! attempt; `/readyz` and the gRPC health service read the state, and one
//! log line marks each change (not one per event).

use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::telemetry::names;

/// The writer's view of the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageState {
    /// The last transaction committed (or none was tried yet).
    Healthy,
    /// Transactions fail; accepted events wait in the queue and are retried.
    Failing { reason: String },
}

/// Read side of the storage state. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StorageHealth {
    state: watch::Receiver<StorageState>,
}

impl StorageHealth {
    pub fn is_healthy(&self) -> bool {
        matches!(*self.state.borrow(), StorageState::Healthy)
    }

    pub fn state(&self) -> StorageState {
        self.state.borrow().clone()
    }

    /// A receiver that wakes on every change.
    pub fn subscribe(&self) -> watch::Receiver<StorageState> {
        self.state.clone()
    }
}

/// Write side, owned by the writer task.
pub(crate) struct HealthReporter {
    state: watch::Sender<StorageState>,
    failing_since: Option<Instant>,
    path: String,
}

impl HealthReporter {
    pub(crate) fn new(path: String) -> (HealthReporter, StorageHealth) {
        let (state, receiver) = watch::channel(StorageState::Healthy);
        metrics::gauge!(names::STORAGE_HEALTHY).set(1.0);
        (
            HealthReporter {
                state,
                failing_since: None,
                path,
            },
            StorageHealth { state: receiver },
        )
    }

    /// A transaction failed; logs only when this starts a failure.
    pub(crate) fn failing(&mut self, reason: &str, waiting: usize) {
        if self.failing_since.is_none() {
            self.failing_since = Some(Instant::now());
            metrics::gauge!(names::STORAGE_HEALTHY).set(0.0);
            tracing::error!(
                path = %self.path,
                reason,
                waiting,
                "storage failing: accepted events go to the spool (or, without one, wait in memory) and are stored in order once the database accepts writes"
            );
        }
        self.state.send_if_modified(|state| {
            let failing = StorageState::Failing {
                reason: reason.to_owned(),
            };
            if *state == failing {
                false
            } else {
                *state = failing;
                true
            }
        });
    }

    /// A transaction committed; logs only when this ends a failure.
    pub(crate) fn healthy(&mut self, waited: usize) {
        if let Some(since) = self.failing_since.take() {
            let failed_for: Duration = since.elapsed();
            metrics::gauge!(names::STORAGE_HEALTHY).set(1.0);
            tracing::warn!(
                path = %self.path,
                failed_for_ms = failed_for.as_millis() as u64,
                events_waited = waited,
                "storage healthy again: held events committed in order"
            );
            self.state.send_replace(StorageState::Healthy);
        }
    }
}
