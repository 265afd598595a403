//! The fan-out against a real store and writer.

use std::time::Duration;

use futures::StreamExt as _;
use futures::future::join_all;

use super::*;
use crate::calls::tests::{dtmf, new_call};
use crate::decide::Decision;
use crate::store::testing::Harness;
use crate::store::{Committed, Intake, WriterHandle};

/// Submits `n` dtmf events for `call_id` at once and waits for all commits.
async fn write_many(writer: &WriterHandle, call_id: &str, n: usize) {
    let receivers = join_all((0..n).map(|i| {
        writer.submit(Intake {
            event: dtmf(call_id, &i.to_string()),
            decision: None,
            received_at_ms: 1_000,
        })
    }))
    .await;
    for r in receivers {
        assert!(matches!(
            r.unwrap().await.unwrap().unwrap(),
            Committed::Appended { .. }
        ));
    }
}

async fn take_seqs(
    stream: impl Stream<Item = Result<Arc<Published>, SubscribeError>>,
    n: usize,
    pause_every: usize,
) -> Vec<u64> {
    let mut stream = Box::pin(stream);
    let mut seqs = Vec::with_capacity(n);
    while seqs.len() < n {
        let e = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("event within 10 s")
            .expect("stream open")
            .expect("no error");
        seqs.push(e.seq);
        if seqs.len() % pause_every == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    seqs
}

#[tokio::test]
async fn lagging_subscriber_gets_every_event_in_order() {
    let h = Harness::new(4).await;
    let stream = h
        .fanout
        .subscribe(None, EventFilter::default(), h.shutdown.clone());
    // Half before it reads anything (the live channel overflows at once),
    // half while it reads slowly.
    write_many(&h.writer, "A", 250).await;
    let reader = tokio::spawn(take_seqs(stream, 500, 10));
    write_many(&h.writer, "A", 250).await;
    let seqs = reader.await.unwrap();
    assert_eq!(seqs, (1..=500).collect::<Vec<_>>());
    h.stop().await;
}

#[tokio::test]
async fn resume_after_seq_returns_exactly_the_later_events() {
    let h = Harness::new(16).await;
    write_many(&h.writer, "A", 2_500).await;
    let stream = h
        .fanout
        .subscribe(Some(1_200), EventFilter::default(), h.shutdown.clone());
    // Crosses catch-up pages, then continues live.
    let reader = tokio::spawn(take_seqs(stream, 1_310, 1_000));
    write_many(&h.writer, "A", 10).await;
    assert_eq!(reader.await.unwrap(), (1_201..=2_510).collect::<Vec<_>>());
    h.stop().await;
}

#[tokio::test]
async fn subscribing_from_now_gets_only_new_events() {
    let h = Harness::new(16).await;
    write_many(&h.writer, "A", 5).await;
    let stream = h
        .fanout
        .subscribe(None, EventFilter::default(), h.shutdown.clone());
    write_many(&h.writer, "A", 3).await;
    assert_eq!(take_seqs(stream, 3, 100).await, [6, 7, 8]);
    h.stop().await;
}

#[tokio::test]
async fn filters_select_what_is_sent() {
    let h = Harness::new(16).await;
    let kinds = h.fanout.subscribe(
        Some(0),
        EventFilter {
            kinds: vec![EventKind::NewCall],
            ..EventFilter::default()
        },
        h.shutdown.clone(),
    );
    let outbound = h.fanout.subscribe(
        Some(0),
        EventFilter {
            directions: vec![Direction::Out],
            ..EventFilter::default()
        },
        h.shutdown.clone(),
    );
    let by_number = h.fanout.subscribe(
        Some(0),
        EventFilter {
            numbers: vec!["4930777".into()],
            ..EventFilter::default()
        },
        h.shutdown.clone(),
    );
    h.append(
        new_call("in1", Direction::In, &[]),
        Some(Decision::accept()),
        1,
    )
    .await; // 1
    h.append(dtmf("in1", "1"), None, 2).await; // 2
    h.append(new_call("out1", Direction::Out, &[]), None, 3)
        .await; // 3
    h.append(dtmf("out1", "2"), None, 4).await; // 4: outbound through its call
    let mut e = new_call("in2", Direction::In, &[]);
    e.to = "4930777".into();
    h.append(e, None, 5).await; // 5
    h.append(dtmf("in2", "3"), None, 6).await; // 6: the number through its call

    assert_eq!(take_seqs(kinds, 3, 100).await, [1, 3, 5]);
    assert_eq!(take_seqs(outbound, 2, 100).await, [3, 4]);
    assert_eq!(take_seqs(by_number, 2, 100).await, [5, 6]);
    h.stop().await;
}

#[tokio::test]
async fn shutdown_ends_the_stream_once() {
    let h = Harness::new(16).await;
    let shutdown = CancellationToken::new();
    let mut stream = Box::pin(h.fanout.subscribe(
        Some(0),
        EventFilter::default(),
        shutdown.clone(),
    ));
    assert_eq!(h.fanout.subscriber_count(), 1);
    h.append(dtmf("A", "1"), None, 1).await;
    assert_eq!(stream.next().await.unwrap().unwrap().seq, 1);
    let waiting = tokio::spawn(async move {
        let ended = stream.next().await;
        let after = stream.next().await;
        (ended, after)
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    shutdown.cancel();
    let (ended, after) = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(ended, Some(Err(SubscribeError::ShuttingDown))));
    assert!(after.is_none());
    assert_eq!(h.fanout.subscriber_count(), 0);
    h.stop().await;
}
