//! What a bridge is doing, for people and probes: its state (delivering,
//! retrying, stopped), the last error, how far behind the newest event it
//! is. Kept as metrics (`sidecar_bridge_state`, `sidecar_bridge_lag_events`)
//! and as text for `/readyz`, where a stopped in-process bridge makes the
//! server not ready.

use std::{
    fmt,
    sync::{Arc, Mutex},
};

use crate::telemetry::{self, names};

/// A bridge's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not subscribed yet.
    Starting,
    /// Subscribed; delivering events as they come (or idle, caught up).
    Delivering,
    /// The receiver or the event source failed; retrying until it works.
    Retrying,
    /// Given up: the bridge delivers nothing until it is fixed and restarted.
    Stopped,
    /// Another replica on the same PostgreSQL database delivers it; this
    /// one takes over when that one goes.
    Standby,
}

impl State {
    const ALL: [State; 5] = [
        State::Starting,
        State::Delivering,
        State::Retrying,
        State::Stopped,
        State::Standby,
    ];

    pub fn name(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Delivering => "delivering",
            State::Retrying => "retrying",
            State::Stopped => "stopped",
            State::Standby => "standby",
        }
    }
}

/// A snapshot of a bridge's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub state: State,
    /// The newest error (kept after recovery, as a hint); for a stopped
    /// bridge, why it stopped.
    pub last_error: Option<String>,
    /// The last sequence number delivered (or passed over).
    pub delivered_seq: Option<u64>,
    /// The newest sequence number the bridge knows of.
    pub head_seq: Option<u64>,
}

impl Snapshot {
    /// Events between the last delivered one and the newest.
    pub fn lag(&self) -> Option<u64> {
        let head = self.head_seq?;
        Some(head.saturating_sub(self.delivered_seq.unwrap_or(0)))
    }
}

/// One bridge's live status; shared between its delivery loop and readers.
#[derive(Debug)]
pub struct BridgeStatus {
    name: &'static str,
    snapshot: Mutex<Snapshot>,
}

impl BridgeStatus {
    pub fn new(name: &'static str, delivered_seq: Option<u64>) -> Arc<Self> {
        telemetry::register_bridge(name);
        let status = Arc::new(BridgeStatus {
            name,
            snapshot: Mutex::new(Snapshot {
                state: State::Starting,
                last_error: None,
                delivered_seq,
                head_seq: None,
            }),
        });
        status.publish(&status.snapshot());
        status
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn snapshot(&self) -> Snapshot {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        // A panic elsewhere cannot leave a snapshot half-written in a way
        // that matters: every field is replaced whole.
        self.snapshot.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, change: impl FnOnce(&mut Snapshot)) {
        let (before, after) = {
            let mut snapshot = self.lock();
            let before = snapshot.state;
            change(&mut snapshot);
            (before, snapshot.clone())
        };
        if before != after.state {
            self.log_change(before, &after);
        }
        self.publish(&after);
    }

    /// Subscribed and delivering.
    pub fn delivering(&self) {
        self.update(|s| s.state = State::Delivering);
    }

    /// A failure that is being retried.
    pub fn retrying(&self, error: &str) {
        self.update(|s| {
            s.state = State::Retrying;
            s.last_error = Some(error.to_string());
        });
    }

    /// Another replica delivers the bridge.
    pub fn standby(&self) {
        self.update(|s| s.state = State::Standby);
    }

    /// Given up, for `reason`.
    pub fn stopped(&self, reason: &str) {
        self.update(|s| {
            s.state = State::Stopped;
            s.last_error = Some(reason.to_string());
        });
    }

    /// `seq` was delivered (or passed over).
    pub fn delivered(&self, seq: u64) {
        self.update(|s| {
            if s.state == State::Retrying {
                s.state = State::Delivering;
            }
            s.delivered_seq = Some(seq);
        });
        self.seen(seq);
    }

    /// The newest sequence number in the log.
    pub fn head(&self, seq: u64) {
        self.update(|s| s.head_seq = Some(seq));
    }

    /// Event `seq` arrived: the log reaches at least that far.
    pub fn seen(&self, seq: u64) {
        self.update(|s| {
            if s.head_seq.is_none_or(|head| head < seq) {
                s.head_seq = Some(seq);
            }
        });
    }

    fn log_change(&self, before: State, now: &Snapshot) {
        let bridge = self.name;
        let error = now.last_error.as_deref().unwrap_or("");
        match now.state {
            State::Stopped => tracing::error!(bridge, reason = error, "bridge stopped"),
            State::Retrying => tracing::warn!(bridge, error, "bridge retrying"),
            State::Delivering if before == State::Retrying => {
                tracing::info!(bridge, "bridge delivering again")
            }
            _ => {}
        }
    }

    fn publish(&self, snapshot: &Snapshot) {
        for state in State::ALL {
            let value = if state == snapshot.state { 1.0 } else { 0.0 };
            metrics::gauge!(names::BRIDGE_STATE, "bridge" => self.name, "state" => state.name())
                .set(value);
        }
        if let Some(lag) = snapshot.lag() {
            metrics::gauge!(names::BRIDGE_LAG, "bridge" => self.name).set(lag as f64);
        }
    }
}

impl fmt::Display for BridgeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.snapshot();
        write!(f, "bridge {}: {}", self.name, s.state.name())?;
        match s.delivered_seq {
            Some(seq) => write!(f, ", delivered up to #{seq}")?,
            None => write!(f, ", nothing delivered yet")?,
        }
        if let Some(lag) = s.lag() {
            write!(f, ", {lag} events behind")?;
        }
        if let Some(error) = &s.last_error {
            let what = if s.state == State::Stopped {
                "reason"
            } else {
                "last error"
            };
            write!(f, ", {what}: {error}")?;
        }
        Ok(())
    }
}

/// The bridges running inside the server.
#[derive(Debug, Clone, Default)]
pub struct BridgeStatuses(Arc<[Arc<BridgeStatus>]>);

impl BridgeStatuses {
    pub fn new(statuses: Vec<Arc<BridgeStatus>>) -> Self {
        BridgeStatuses(statuses.into())
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<BridgeStatus>> {
        self.0.iter()
    }

    /// For `/readyz`: one line per bridge, and whether any has stopped.
    pub fn report(&self) -> Report {
        let stopped = self
            .0
            .iter()
            .filter(|b| b.snapshot().state == State::Stopped)
            .map(|b| b.name().to_string())
            .collect();
        let lines = self.0.iter().map(|b| format!("{b}\n")).collect();
        Report { stopped, lines }
    }
}

/// The bridges' part of `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Names of stopped bridges: the server is not ready while one is.
    pub stopped: Vec<String>,
    /// One line per bridge.
    pub lines: String,
}

impl Report {
    /// `Err` with the reason when a bridge stopped.
    pub fn check(&self) -> Result<(), String> {
        if self.stopped.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "bridge {} stopped and delivers nothing until it is fixed and the server restarted",
                self.stopped.join(", ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_lag_and_the_report() {
        let status = BridgeStatus::new("zammad", Some(3));
        assert_eq!(status.snapshot().state, State::Starting);
        status.head(10);
        assert_eq!(status.snapshot().lag(), Some(7));
        status.delivering();
        status.retrying("HTTP 502 Bad Gateway");
        let statuses = BridgeStatuses::new(vec![status.clone()]);
        let report = statuses.report();
        assert_eq!(report.check(), Ok(()));
        assert!(
            report.lines.contains(
                "bridge zammad: retrying, delivered up to #3, 7 events behind, last error: HTTP 502"
            ),
            "{}",
            report.lines
        );
        status.delivered(4);
        assert_eq!(status.snapshot().state, State::Delivering);
        assert_eq!(status.snapshot().lag(), Some(6));
        status.seen(13);
        assert_eq!(status.snapshot().lag(), Some(9));
        status.delivered(13);
        assert_eq!(status.snapshot().lag(), Some(0));

        status.stopped("refused");
        let report = statuses.report();
        let reason = report.check().unwrap_err();
        assert!(reason.contains("bridge zammad stopped"), "{reason}");
        assert!(report.lines.contains("stopped"), "{}", report.lines);
        assert!(report.lines.contains("reason: refused"), "{}", report.lines);
    }
}
