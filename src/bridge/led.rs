//! In-process bridges on PostgreSQL, where several replicas run the same
//! bridges: each bridge delivers on one replica at a time, the one holding
//! its advisory lock, from a cursor kept in the database. When the leading
//! replica goes (its connection ends), another takes the lock within about
//! [`LEAD_CHECK`] and continues after the last event the first one stored
//! as delivered.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::cursor::Cursor;
use super::delivery::{self, Sink};
use super::source::LocalSource;
use super::status::BridgeStatus;
use crate::config::DeliveryPolicy;
use crate::store::Replicas;

/// How often a standby tries to take the lead, and a leader checks it
/// still holds it.
const LEAD_CHECK: Duration = Duration::from_secs(1);

/// Runs bridge number `index` whenever this replica leads it (a bridge
/// with no cursor in the database yet starts at the newest event when
/// `from_now`), until
/// `shutdown` or until delivery stops for good (a refusal under the stop
/// policy, a cursor ahead of the log).
#[allow(clippy::too_many_arguments)]
pub(super) async fn run(
    replicas: Replicas,
    index: usize,
    source: LocalSource,
    sink: &dyn Sink,
    policy: &DeliveryPolicy,
    status: &BridgeStatus,
    from_now: bool,
    shutdown: CancellationToken,
) {
    let name = sink.name();
    loop {
        let mut leadership = replicas.bridge_lead(index, name);
        while !leadership.hold().await {
            status.standby();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(LEAD_CHECK) => {}
            }
        }
        let cursor = match Cursor::load_from_database(replicas.clone(), name).await {
            Ok(cursor) => cursor,
            Err(error) => {
                tracing::warn!(bridge = name, error = format!("{error:#}"), "retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(LEAD_CHECK) => continue,
                }
            }
        };
        tracing::info!(bridge = name, after_seq = ?cursor.after_seq(), "this replica delivers the bridge");
        // Delivery ends when the lead is lost, however it is lost.
        let lead = shutdown.child_token();
        let watch = {
            let lead = lead.clone();
            async move {
                loop {
                    tokio::select! {
                        _ = lead.cancelled() => return leadership,
                        _ = tokio::time::sleep(LEAD_CHECK) => {}
                    }
                    if !leadership.hold().await {
                        tracing::warn!(
                            bridge = name,
                            "lost the lead of the bridge; stopping delivery here"
                        );
                        lead.cancel();
                        return leadership;
                    }
                }
            }
        };
        let deliver = async {
            let result = delivery::run(
                &source,
                sink,
                cursor,
                from_now,
                policy,
                status,
                lead.clone(),
            )
            .await;
            lead.cancel();
            result
        };
        // The lock is released only after delivery stopped.
        let (result, leadership) = tokio::join!(deliver, watch);
        drop(leadership);
        if shutdown.is_cancelled() || result.is_err() {
            return;
        }
    }
}
