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

/// Submits `n` dtmf events carrying a raw form field of `size` bytes each.
async fn write_large(writer: &WriterHandle, n: usize, size: usize) {
    let receivers = join_all((0..n).map(|i| {
        let mut event = dtmf("L", &i.to_string());
        event.raw = vec![("padding".into(), "x".repeat(size))];
        writer.submit(Intake {
            event,
            decision: None,
            received_at_ms: 1_000,
        })
    }))
    .await;
    for r in receivers {
        r.unwrap().await.unwrap().unwrap();
    }
}

async fn first(
    stream: impl Stream<Item = Result<Arc<Published>, SubscribeError>>,
) -> Option<Result<Arc<Published>, SubscribeError>> {
    let mut stream = Box::pin(stream);
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an item within 10 s")
}

#[tokio::test]
async fn a_resume_point_beyond_the_head_is_refused_naming_the_head() {
    let h = Harness::new(16).await;
    write_many(&h.writer, "A", 5).await;

    let refused = first(
        h.fanout
            .subscribe(Some(6), EventFilter::default(), h.shutdown.clone()),
    )
    .await;
    assert!(
        matches!(
            refused,
            Some(Err(SubscribeError::BeyondHead {
                after_seq: 6,
                head: 5
            }))
        ),
        "{refused:?}"
    );
    let opened = h
        .fanout
        .open(Some(1_200), EventFilter::default(), h.shutdown.clone())
        .await;
    assert!(matches!(
        opened,
        Err(SubscribeError::BeyondHead {
            after_seq: 1_200,
            head: 5
        })
    ));
    assert_eq!(h.fanout.subscriber_count(), 0, "a refusal frees its place");

    // The head itself is a fine resume point: the stream waits for seq 6.
    let at_head = h
        .fanout
        .open(Some(5), EventFilter::default(), h.shutdown.clone())
        .await
        .expect("after_seq == head is accepted");
    write_many(&h.writer, "A", 1).await;
    assert_eq!(take_seqs(at_head, 1, 100).await, [6]);
    h.stop().await;
}

#[tokio::test]
async fn a_resume_point_the_store_has_but_the_fanout_has_not_published_is_fine() {
    // A separate fan-out whose publisher never publishes: its head stays
    // unknown while the store holds events (committed, not yet published).
    let h = Harness::new(16).await;
    write_many(&h.writer, "A", 3).await;
    let (unpublished, _publisher) = Fanout::new(h.store.clone(), 16);
    let stream = unpublished
        .open(Some(3), EventFilter::default(), h.shutdown.clone())
        .await;
    assert!(stream.is_ok());
    let stream = unpublished
        .open(Some(1), EventFilter::default(), h.shutdown.clone())
        .await
        .unwrap();
    assert_eq!(take_seqs(stream, 2, 100).await, [2, 3]);
    h.stop().await;
}

#[tokio::test]
async fn subscribers_beyond_the_limit_are_refused_until_one_leaves() {
    let h = Harness::new(16).await;
    write_many(&h.writer, "A", 2).await;
    let (limited, _publisher) = Fanout::with_max_subscribers(h.store.clone(), 16, 2);
    let a = limited.subscribe(Some(0), EventFilter::default(), h.shutdown.clone());
    let b = limited
        .open(Some(0), EventFilter::default(), h.shutdown.clone())
        .await
        .unwrap();
    assert_eq!(limited.subscriber_count(), 2);
    let refused =
        first(limited.subscribe(Some(0), EventFilter::default(), h.shutdown.clone())).await;
    assert!(
        matches!(
            refused,
            Some(Err(SubscribeError::TooManySubscribers { limit: 2 }))
        ),
        "{refused:?}"
    );
    assert!(matches!(
        limited
            .open(None, EventFilter::default(), h.shutdown.clone())
            .await,
        Err(SubscribeError::TooManySubscribers { limit: 2 })
    ));
    assert_eq!(limited.subscriber_count(), 2);
    drop(a);
    assert_eq!(limited.subscriber_count(), 1);
    let c = limited.subscribe(Some(0), EventFilter::default(), h.shutdown.clone());
    assert_eq!(take_seqs(c, 2, 100).await, [1, 2]);
    assert_eq!(take_seqs(b, 2, 100).await, [1, 2]);
    h.stop().await;
}

#[tokio::test]
async fn catch_up_holds_bounded_pages_and_no_place_in_the_live_buffer() {
    let h = Harness::new(16).await;
    // 60 events of ~60 KB: 3.6 MB, several pages of at most 1 MiB.
    write_large(&h.writer, 60, 60_000).await;
    let mut s = h
        .fanout
        .start(Some(0), EventFilter::default(), h.shutdown.clone())
        .unwrap();
    let mut seqs = Vec::new();
    while seqs.len() < 60 {
        let e = s.next().await.unwrap().unwrap();
        seqs.push(e.seq);
        // The page being sent; the next one is read meanwhile, as bounded.
        let buffered: usize = s.ready.iter().map(|e| e.wire().len()).sum();
        assert!(
            buffered <= CATCH_UP_BYTES,
            "{buffered} bytes buffered ahead"
        );
        if s.catching_up {
            assert!(s.live.is_none(), "no broadcast place while catching up");
        }
    }
    assert_eq!(seqs, (1..=60).collect::<Vec<_>>());
    assert_eq!(h.fanout.inner.live.receiver_count(), 0);
    // Caught up: follows live from here.
    write_many(&h.writer, "A", 1).await;
    assert_eq!(s.next().await.unwrap().unwrap().seq, 61);
    assert!(s.live.is_some());
    h.stop().await;
}

#[tokio::test]
async fn store_pages_are_bounded_in_bytes_and_always_hold_one_event() {
    let h = Harness::new(16).await;
    write_large(&h.writer, 30, 100_000).await;
    let page = h.store.event_page(0, 1000, 350_000).await.unwrap();
    assert_eq!(
        page.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(!page.at_head);
    let page = h.store.event_page(3, 1000, 10).await.unwrap();
    assert_eq!(
        page.events.len(),
        1,
        "one event even when it exceeds the budget"
    );
    let page = h.store.event_page(25, 1000, usize::MAX).await.unwrap();
    assert_eq!(page.events.len(), 5);
    assert!(page.at_head);
    let page = h.store.event_page(25, 5, usize::MAX).await.unwrap();
    assert!(
        !page.at_head,
        "a page cut at its limit may have more after it"
    );
    let page = h.store.event_page(30, 1000, usize::MAX).await.unwrap();
    assert!(page.events.is_empty() && page.at_head);
    h.stop().await;
}

#[tokio::test]
async fn subscribers_joining_while_events_commit_miss_nothing() {
    let h = Harness::new(8).await;
    write_many(&h.writer, "A", 100).await;
    let writing = {
        let writer = h.writer.clone();
        tokio::spawn(async move {
            for _ in 0..40 {
                write_many(&writer, "A", 10).await;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let mut readers = Vec::new();
    for i in 0..20u64 {
        let stream = h
            .fanout
            .subscribe(Some(i * 5), EventFilter::default(), h.shutdown.clone());
        readers.push(tokio::spawn(take_seqs(stream, (500 - i * 5) as usize, 7)));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    writing.await.unwrap();
    for (i, reader) in readers.into_iter().enumerate() {
        let from = i as u64 * 5 + 1;
        assert_eq!(reader.await.unwrap(), (from..=500).collect::<Vec<_>>());
    }
    h.stop().await;
}

#[tokio::test]
async fn the_in_process_bridge_source_gets_the_refusal_as_out_of_range() {
    use crate::bridge::source::{EventSource, LocalSource};

    let h = Harness::new(16).await;
    write_many(&h.writer, "A", 2).await;
    let source = LocalSource {
        fanout: h.fanout.clone(),
        store: h.store.clone(),
        shutdown: h.shutdown.clone(),
    };
    let mut stream = source.subscribe(Some(7)).await.unwrap();
    let status = stream.next().await.unwrap().unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange);
    assert!(
        status.message().contains("resume from 2 or earlier"),
        "{status:?}"
    );
    assert!(stream.next().await.is_none());
    h.stop().await;
}
