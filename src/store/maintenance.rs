//! Periodic housekeeping through the writer: end calls sipgate never hung
//! up (sweep) and drop old events and calls (retention). On PostgreSQL only
//! the replica leading maintenance runs it.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::Store;
use super::writer::WriterHandle;

/// Every `interval` (and once at start): sweep calls open longer than
/// `stale_after`, purge what is older than `retention`. A zero duration
/// disables that job (retention zero = keep forever).
pub(crate) fn spawn_maintenance(
    store: &Store,
    writer: WriterHandle,
    stale_after: Duration,
    retention: Duration,
    interval: Duration,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    // Several replicas: only the one leading runs maintenance.
    let mut leadership = store.replicas().map(|replicas| replicas.maintenance_lead());
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(10)));
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = ticks.tick() => {}
            }
            if let Some(leadership) = &mut leadership
                && !leadership.hold().await
            {
                continue;
            }
            let now = crate::now_ms();
            if !stale_after.is_zero()
                && let Err(error) = writer.sweep(millis(stale_after), now).await
            {
                tracing::warn!(%error, "sweep of stale calls failed");
            }
            if !retention.is_zero() {
                match writer.purge(now.saturating_sub(millis(retention))).await {
                    Ok((0, 0)) => {}
                    Ok((events, calls)) => tracing::info!(events, calls, "purged old records"),
                    Err(error) => tracing::warn!(%error, "purge failed"),
                }
            }
        }
    })
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
