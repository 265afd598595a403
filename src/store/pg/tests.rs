//! Several replicas on one PostgreSQL database: each test starts two
//! stores, writers and fan-outs on a fresh database, as two processes would.

use std::time::Duration;

use futures::StreamExt as _;
use futures::future::join_all;
use sqlx::ConnectOptions as _;

use crate::calls::CallState;
use crate::calls::tests::{event, new_call, reject};
use crate::decide::Decision;
use crate::fanout::EventFilter;
use crate::settings::{BlockEntry, Settings};
use crate::sipgate::event::{Direction, EventKind};
use crate::store::testing::{Harness, Kind};
use crate::store::{AuditRecord, Committed, Intake};

async fn two_replicas(test: &str) -> Option<(Harness, Harness)> {
    let a = Harness::of(Kind::Postgres, test, 1024).await?;
    let b = a.replica(1024).await;
    Some((a, b))
}

fn seq_of(c: &Committed) -> u64 {
    match c {
        Committed::Appended { seq, .. } | Committed::Duplicate { seq, .. } => *seq,
        Committed::Replayed | Committed::Spooled => unreachable!("no dtmf pushes, no spool here"),
    }
}

/// The next `n` seqs a subscription yields, within 10 s.
async fn next_seqs(
    stream: &mut (
             impl futures::Stream<
        Item = Result<std::sync::Arc<crate::fanout::Published>, crate::fanout::SubscribeError>,
    > + Unpin
         ),
    n: usize,
) -> Vec<u64> {
    let mut seqs = Vec::with_capacity(n);
    while seqs.len() < n {
        let next = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("an event within 10 s")
            .expect("the stream goes on")
            .expect("no stream error");
        seqs.push(next.seq());
    }
    seqs
}

#[tokio::test]
async fn every_connection_plans_each_statement_for_its_values() {
    // A generic plan made while the tables were small scans them whole
    // until the next ANALYZE (see `open::SESSION_SETTINGS`).
    let Some(h) = Harness::of(Kind::Postgres, "every_connection_plans_each_statement", 16).await
    else {
        return;
    };
    let (mode,): (String,) = sqlx::query_as("SHOW plan_cache_mode")
        .fetch_one(h.store.pg_pool())
        .await
        .unwrap();
    assert_eq!(mode, "force_custom_plan");
    let (mode,): (String,) = sqlx::query_as("SHOW plan_cache_mode")
        .fetch_one(&mut h.store.pg_options().connect().await.unwrap())
        .await
        .unwrap();
    assert_eq!(mode, "force_custom_plan", "the writer's connections too");
    h.stop().await;
}

#[tokio::test]
async fn a_batch_plans_its_lookups_for_their_values_and_its_write_once() {
    let Some(h) = Harness::of(Kind::Postgres, "a_batch_plans_its_write_once", 16).await else {
        return;
    };
    let show = "SHOW plan_cache_mode";
    let mut connection = h.store.postgres().writer_options().connect().await.unwrap();
    let mut tx = sqlx::Connection::begin(&mut connection).await.unwrap();
    let (mode,): (String,) = sqlx::query_as(show).fetch_one(&mut *tx).await.unwrap();
    assert_eq!(mode, "force_custom_plan", "the reads under the lock");
    let (_, head) = super::rows::load_batch_and_head(&mut tx, &["c1"], &["newCall:c1".into()])
        .await
        .unwrap();
    assert_eq!(head, 0);
    let (mode,): (String,) = sqlx::query_as(show).fetch_one(&mut *tx).await.unwrap();
    assert_eq!(mode, "force_generic_plan", "the batch's write after them");
    tx.commit().await.unwrap();
    let (mode,): (String,) = sqlx::query_as(show)
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(mode, "force_custom_plan", "only until the batch's COMMIT");
    // The writer works as before with it.
    h.append(
        new_call("c1", Direction::In, &[]),
        Some(Decision::accept()),
        1_000,
    )
    .await;
    h.append(
        event(EventKind::Hangup, "c1", Some(Direction::In)),
        None,
        2_000,
    )
    .await;
    let call = h.store.get_call("c1").await.unwrap().expect("stored");
    assert_eq!(call.state, CallState::Hangup);
    h.stop().await;
}

#[tokio::test]
async fn pushes_to_either_replica_make_one_gap_free_log_every_subscriber_sees_in_order() {
    let Some((a, b)) = two_replicas("pushes_to_either_replica_make_one_gap_free_log").await else {
        return;
    };
    let mut on_a = Box::pin(a.fanout.subscribe(
        Some(0),
        EventFilter::default(),
        a.shutdown.clone(),
    ));
    let mut on_b = Box::pin(b.fanout.subscribe(
        Some(0),
        EventFilter::default(),
        b.shutdown.clone(),
    ));
    const N: usize = 200;
    let submits = (0..N).map(|i| {
        let writer = if i % 2 == 0 {
            a.writer.clone()
        } else {
            b.writer.clone()
        };
        async move {
            writer
                .submit(Intake {
                    event: new_call(&format!("c{i}"), Direction::In, &[]),
                    decision: Some(Decision::accept()),
                    received_at_ms: 1_000 + i as i64,
                })
                .await
                .unwrap()
                .await
                .unwrap()
                .unwrap()
        }
    });
    let mut seqs: Vec<u64> = join_all(submits).await.iter().map(seq_of).collect();
    seqs.sort_unstable();
    let all: Vec<u64> = (1..=N as u64).collect();
    assert_eq!(seqs, all, "every push got its own seq, none skipped");
    assert_eq!(next_seqs(&mut on_a, N).await, all);
    assert_eq!(next_seqs(&mut on_b, N).await, all);
    assert_eq!(a.store.head_seq().await.unwrap(), N as u64);
    drop((on_a, on_b));
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn a_replay_reaching_the_other_replica_gets_the_original_answer() {
    let Some((a, b)) = two_replicas("a_replay_reaching_the_other_replica").await else {
        return;
    };
    let first = a
        .append(new_call("r", Direction::In, &[]), Some(reject()), 1_000)
        .await;
    let Committed::Appended { seq, .. } = first else {
        panic!("{first:?}");
    };
    // The rejected call ended with a synthetic hangup (seq + 1).
    let replay = b
        .append(
            new_call("r", Direction::In, &[]),
            Some(Decision::accept()),
            2_000,
        )
        .await;
    assert_eq!(
        replay,
        Committed::Duplicate {
            seq,
            decision: Some(reject())
        }
    );
    assert_eq!(b.store.head_seq().await.unwrap(), seq + 1);
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn call_state_is_read_from_the_database_not_a_replica_cache() {
    let Some((a, b)) = two_replicas("call_state_is_read_from_the_database").await else {
        return;
    };
    a.append(
        new_call("s", Direction::In, &[]),
        Some(Decision::accept()),
        1_000,
    )
    .await;
    b.append(
        event(EventKind::Answer, "s", Some(Direction::In)),
        None,
        2_000,
    )
    .await;
    // A saw the call as new; the hangup must build on B's answer.
    let Committed::Appended { call, .. } = a
        .append(
            event(EventKind::Hangup, "s", Some(Direction::In)),
            None,
            3_000,
        )
        .await
    else {
        panic!("the hangup is new");
    };
    assert_eq!(call.state, CallState::Hangup);
    assert_eq!(call.start_at_ms, Some(2_000), "the answer stored by B");
    // And a replayed answer on A is a duplicate of B's.
    let replay = a
        .append(
            event(EventKind::Answer, "s", Some(Direction::In)),
            None,
            4_000,
        )
        .await;
    assert_eq!(seq_of(&replay), 2);
    assert_eq!(b.store.get_call("s").await.unwrap().unwrap(), call);
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn a_settings_change_on_one_replica_is_announced_to_the_other() {
    let Some((a, b)) = two_replicas("a_settings_change_on_one_replica").await else {
        return;
    };
    let mut changes = b
        .store
        .settings_changes()
        .expect("PostgreSQL announces changes");
    changes.borrow_and_update();
    let next = Settings {
        block_list: vec![BlockEntry {
            pattern: "4930*".into(),
            note: "spam".into(),
        }],
        ..Settings::default()
    };
    let audit = AuditRecord {
        at_ms: 1,
        client: "test".into(),
        action: "replace".into(),
        detail: "{}".into(),
    };
    let stored = a.store.save_settings(&next, &audit).await.unwrap();
    tokio::time::timeout(Duration::from_secs(1), changes.changed())
        .await
        .expect("announced within a second")
        .unwrap();
    assert_eq!(b.store.load_settings().await.unwrap(), stored);
    // A change based on what B last saw (nothing) rewrites the tables whole.
    let other = Settings {
        block_list: vec![BlockEntry {
            pattern: "4940*".into(),
            note: String::new(),
        }],
        ..Settings::default()
    };
    let stale = Settings::default();
    let again = b
        .store
        .save_settings_change(&other, Some(&stale), None, &audit, None)
        .await
        .unwrap();
    assert_eq!(again.version, stored.version + 1);
    assert_eq!(a.store.load_settings().await.unwrap(), again);
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn maintenance_is_led_by_one_replica_and_moves_when_it_goes() {
    let Some((a, b)) = two_replicas("maintenance_is_led_by_one_replica").await else {
        return;
    };
    let lead = |h: &Harness| h.store.replicas().expect("replicas").maintenance_lead();
    let mut on_a = lead(&a);
    let mut on_b = lead(&b);
    assert!(on_a.hold().await);
    assert!(!on_b.hold().await);
    assert!(on_a.hold().await, "still the leader");
    // The leading replica goes: its connection ends, and the lock with it.
    drop(on_a);
    let mut took_over = false;
    for _ in 0..100 {
        if on_b.hold().await {
            took_over = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        took_over,
        "the other replica leads once the first one is gone"
    );
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn lost_connections_are_replaced_and_nothing_is_lost_or_repeated() {
    let Some((a, b)) = two_replicas("lost_connections_are_replaced").await else {
        return;
    };
    let mut on_b = Box::pin(b.fanout.subscribe(
        Some(0),
        EventFilter::default(),
        b.shutdown.clone(),
    ));
    a.append(
        new_call("x", Direction::In, &[]),
        Some(Decision::accept()),
        1_000,
    )
    .await;
    // Every session on the database ends: writers, pools, listeners, as
    // when the server restarts.
    let admin = crate::store::Store::open(&a.database).await.unwrap();
    let pg = admin.postgres();
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() \
         AND application_name = 'sipgate-sidecar'",
    )
    .fetch_all(pg.pool())
    .await
    .unwrap();
    assert!(
        ended.len() >= 4,
        "writers, pools and listeners: {}",
        ended.len()
    );
    let mut seqs = Vec::new();
    for (i, h) in [&a, &b, &a, &b].into_iter().enumerate() {
        seqs.push(seq_of(
            &h.append(
                event(EventKind::Dtmf, "x", Some(Direction::In)),
                None,
                2_000 + i as i64,
            )
            .await,
        ));
    }
    assert_eq!(seqs, [2, 3, 4, 5]);
    assert_eq!(next_seqs(&mut on_b, 5).await, [1, 2, 3, 4, 5]);
    drop(on_b);
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn a_replicas_own_commits_reach_its_fan_out_without_reading_the_table_back() {
    let Some((a, b)) = two_replicas("own_commits_reach_the_fan_out_without_reading").await else {
        return;
    };
    let pg = a.store.postgres();
    let mut on_a = Box::pin(a.fanout.subscribe(
        Some(0),
        EventFilter::default(),
        a.shutdown.clone(),
    ));
    // Let the start's read of the table pass.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let reads_before = pg.tail_table_reads();
    for i in 0..20u64 {
        a.append(
            new_call(&format!("own{i}"), Direction::In, &[]),
            Some(Decision::accept()),
            1_000,
        )
        .await;
        assert_eq!(next_seqs(&mut on_a, 1).await, [i + 1]);
    }
    // At most a poll (one a second) and a notification that overtook its
    // own commit's hand-over; 20 commits read back would be 20.
    let own_reads = pg.tail_table_reads() - reads_before;
    assert!(
        own_reads <= 3,
        "read the table {own_reads} times for 20 own commits"
    );
    // Another replica's event in between: read from the table, in order.
    b.append(
        new_call("other", Direction::In, &[]),
        Some(Decision::accept()),
        1_000,
    )
    .await;
    a.append(
        new_call("own-after", Direction::In, &[]),
        Some(Decision::accept()),
        1_000,
    )
    .await;
    assert_eq!(next_seqs(&mut on_a, 2).await, [21, 22]);
    assert!(pg.tail_table_reads() > reads_before + own_reads);
    drop(on_a);
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn another_replicas_commit_reaches_this_fan_out_at_once() {
    let Some((a, b)) = two_replicas("another_replicas_commit_reaches_this_fan_out").await else {
        return;
    };
    let mut on_a = Box::pin(a.fanout.subscribe(
        Some(0),
        EventFilter::default(),
        a.shutdown.clone(),
    ));
    // Without the notification A would find B's events only at its next
    // poll, up to a second later: eight in a row under half a second each
    // would then be chance (1 in 256).
    let mut slowest = Duration::ZERO;
    for i in 0..8u64 {
        tokio::time::sleep(Duration::from_millis(150 + 37 * i)).await;
        let started = std::time::Instant::now();
        b.append(
            new_call(&format!("n{i}"), Direction::In, &[]),
            Some(Decision::accept()),
            1_000,
        )
        .await;
        assert_eq!(next_seqs(&mut on_a, 1).await, [i + 1]);
        slowest = slowest.max(started.elapsed());
    }
    assert!(slowest < Duration::from_millis(500), "slowest: {slowest:?}");
    drop(on_a);
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn a_commit_whose_answer_was_lost_is_found_and_not_stored_twice() {
    let Some(h) = Harness::of(Kind::Postgres, "a_commit_whose_answer_was_lost", 16).await else {
        return;
    };
    let pg = h.store.postgres();
    h.append(
        new_call("d", Direction::In, &[]),
        Some(Decision::accept()),
        1_000,
    )
    .await;
    // Stored, but the writer hears nothing back and tries again.
    pg.lose_next_commit_answer();
    let lost = h
        .append(crate::calls::tests::dtmf("d", "1"), None, 2_000)
        .await;
    assert!(
        matches!(lost, Committed::Appended { seq: 2, .. }),
        "the answer of the stored event: {lost:?}"
    );
    let next = h
        .append(crate::calls::tests::dtmf("d", "2"), None, 3_000)
        .await;
    assert_eq!(seq_of(&next), 3);
    let stored = h.store.events_after(0, 10).await.unwrap();
    let digits: Vec<(u64, &str)> = stored
        .iter()
        .map(|e| (e.seq, e.event.dtmf.as_str()))
        .collect();
    assert_eq!(digits, [(1, ""), (2, "1"), (3, "2")], "DTMF 1 stored once");
    h.stop().await;
}
