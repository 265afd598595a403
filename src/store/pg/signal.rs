//! What the writer's tail hears of new events: this replica's own wake-ups
//! and the notifications on [`EVENTS_CHANNEL`](super::EVENTS_CHANNEL) from every replica.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::Notify;

/// What the tail hears of new events: a wake-up for every commit that
/// appended some, with the highest seq another replica announced.
pub(crate) struct EventsSignal {
    wake: Notify,
    /// This store's name in its writer's notifications
    /// ([`REPLICA_SETTING`](super::REPLICA_SETTING)), so they are told from other replicas'.
    replica: String,
    /// The highest seq another replica's notification announced.
    announced: AtomicU64,
    /// Notifications may have been lost (the listener reconnected, or a
    /// payload was not a seq): the tail reads the table.
    lost: AtomicBool,
    /// Test hook: how often the tail read the table.
    #[cfg(test)]
    pub(crate) table_reads: AtomicU64,
}

impl EventsSignal {
    pub(crate) fn new() -> EventsSignal {
        EventsSignal {
            wake: Notify::new(),
            replica: crate::store::instance_id(),
            announced: AtomicU64::new(0),
            lost: AtomicBool::new(false),
            #[cfg(test)]
            table_reads: AtomicU64::new(0),
        }
    }

    /// This store's name in its writer's notifications.
    pub(crate) fn replica(&self) -> &str {
        &self.replica
    }

    /// A notification on [`EVENTS_CHANNEL`](super::EVENTS_CHANNEL) with `payload`: the last seq
    /// its commit appended and the replica that made it. This store's own
    /// commits reach the tail from the writer, not through the table.
    pub(crate) fn announced(&self, payload: &str) {
        let (seq, replica) = payload.split_once(' ').unwrap_or((payload, ""));
        if replica == self.replica {
            return;
        }
        match seq.parse::<u64>() {
            Ok(seq) => {
                self.announced.fetch_max(seq, Ordering::AcqRel);
            }
            Err(_) => self.lost.store(true, Ordering::Release),
        }
        self.wake.notify_one();
    }

    /// Notifications may have been lost.
    pub(crate) fn lost(&self) {
        self.lost.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Wakes the tail without news from the database (this replica's own
    /// commit).
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    pub(crate) async fn notified(&self) {
        self.wake.notified().await
    }

    /// True when the table may hold events after `published` that this
    /// replica has not been handed: announced by a notification, or after
    /// notifications were lost (cleared by the call).
    pub(crate) fn behind(&self, published: u64) -> bool {
        self.lost.swap(false, Ordering::AcqRel)
            || self.announced.load(Ordering::Acquire) > published
    }
}

#[cfg(test)]
mod tests {
    use super::EventsSignal;

    #[test]
    fn the_table_is_read_only_for_news_the_tail_has_not_published() {
        let signal = EventsSignal::new();
        assert!(!signal.behind(0), "nothing announced yet");
        signal.announced(&format!("30 {}", signal.replica));
        assert!(!signal.behind(0), "its own commits come from its writer");
        signal.announced("12 0011223344556677");
        assert!(signal.behind(11));
        assert!(!signal.behind(12), "published up to the announced seq");
        signal.announced("12");
        assert!(signal.behind(11));
        assert!(!signal.behind(12), "published up to the announced seq");
        signal.announced("7");
        assert!(!signal.behind(12), "an older announcement changes nothing");
        signal.announced("not a seq");
        assert!(signal.behind(12), "an unreadable payload reads the table");
        assert!(!signal.behind(12), "once");
        signal.lost();
        assert!(signal.behind(40), "lost notifications read the table");
        assert!(!signal.behind(40));
    }
}
