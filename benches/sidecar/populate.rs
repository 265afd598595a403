//! Fills the database for the catch-up phase. The one place the benchmark
//! uses store internals (the writer), so it stays this small.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use sipgate_sidecar::{
    fanout::Fanout,
    sipgate::event::{Direction, Event, EventKind},
    store::{Intake, Store, spawn_writer},
};
use tokio_util::sync::CancellationToken;

/// The `i`th stored event: a dtmf push, eight per call.
fn catchup_event(i: u64) -> Event {
    let call_id = format!("catchup-{}", i / 8);
    Event {
        direction: Some(Direction::In),
        from: "492111234567".into(),
        to: "4928559389086".into(),
        xcid: "8419b3450b75cd19".into(),
        dtmf: "1".into(),
        raw: vec![
            ("event".into(), "dtmf".into()),
            ("callId".into(), call_id.clone()),
            ("dtmf".into(), "1".into()),
        ],
        ..Event::new(EventKind::Dtmf, call_id)
    }
}

/// The capacity of the writer's queue (the store's `QUEUE_CAPACITY`): a
/// submit to a full queue is refused, not delayed, so the producers together
/// keep at most this many events in flight.
const QUEUE: usize = 8192;

/// Appends `count` events to the database with the sidecar's own writer,
/// four producers each keeping up to a quarter of the queue in flight.
pub async fn populate(database: &Path, count: u64) -> anyhow::Result<Duration> {
    let store = Store::open(&database.display().to_string()).await?;
    let (_fanout, publisher) = Fanout::new(store.clone(), 16);
    let shutdown = CancellationToken::new();
    let (writer, task) = spawn_writer(store, publisher, shutdown.clone(), 2048, None);
    let start = Instant::now();
    let producers = 4u64;
    let in_flight = QUEUE / producers as usize;
    let mut handles = Vec::new();
    for p in 0..producers {
        let writer = writer.clone();
        handles.push(tokio::spawn(async move {
            let mut pending = Vec::with_capacity(in_flight);
            for i in (p..count).step_by(producers as usize) {
                let rx = writer
                    .submit(Intake {
                        event: catchup_event(i),
                        decision: None,
                        received_at_ms: sipgate_sidecar::now_ms(),
                    })
                    .await?;
                pending.push(rx);
                if pending.len() == in_flight {
                    for rx in pending.drain(..) {
                        rx.await??;
                    }
                }
            }
            for rx in pending {
                rx.await??;
            }
            anyhow::Ok(())
        }));
    }
    for h in handles {
        h.await??;
    }
    let took = start.elapsed();
    shutdown.cancel();
    drop(writer);
    task.await?;
    Ok(took)
}
