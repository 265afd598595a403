//! The store and the writer against a real SQLite file; the tests named in
//! [`on_both!`] run against a PostgreSQL database too.

use std::time::Duration;

use futures::future::join_all;
use prost::Message as _;

use super::testing::{Harness, Kind};
use super::*;
use crate::calls::tests::{dtmf, event, new_call, reject};
use crate::now_ms;
use crate::settings::{BlockEntry, RoutingRule, Settings};
use crate::sipgate::event::EventKind;

/// Runs each named test of this suite on SQLite and on PostgreSQL.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                use super::Kind;

                #[tokio::test]
                async fn sqlite() {
                    super::$name(Kind::Sqlite).await
                }

                #[tokio::test]
                async fn postgres() {
                    super::$name(Kind::Postgres).await
                }
            }
        )*
    };
}

on_both!(
    group_commit_of_concurrent_submits_is_gap_free,
    duplicate_new_call_answers_the_original_decision,
    duplicates_within_one_batch_are_caught,
    repeated_dtmf_is_appended_each_time,
    rejected_call_ends_with_a_synthetic_hangup,
    stored_event_round_trips_raw_form_and_call_snapshot,
    answer_and_hangup_for_unknown_calls_create_rows,
    sweep_ends_stale_calls_with_a_timeout_event,
    purge_drops_old_rows_but_keeps_the_newest_event,
    reopening_continues_the_sequence,
    shutdown_commits_what_was_queued,
    set_done_overrides_and_reports_unknown_calls,
    list_calls_pages_newest_first_with_filters,
    settings_round_trip_with_version_and_audit,
    maintenance_sweeps_and_purges_periodically,
);

fn hangup(call_id: &str, cause: &str) -> Event {
    Event {
        cause: cause.into(),
        ..event(EventKind::Hangup, call_id, Some(Direction::In))
    }
}

fn seq_of(c: &Committed) -> u64 {
    match c {
        Committed::Appended { seq, .. } | Committed::Duplicate { seq, .. } => *seq,
        Committed::Replayed | Committed::Spooled => unreachable!("no dtmf pushes, no spool here"),
    }
}

async fn group_commit_of_concurrent_submits_is_gap_free(kind: Kind) {
    let Some(h) = Harness::of(kind, "group_commit_of_concurrent_submits_is_gap_free", 1024).await
    else {
        return;
    };
    const N: u64 = 300;
    let submits = (0..N).map(|i| {
        let writer = h.writer.clone();
        async move {
            writer
                .submit(Intake {
                    event: new_call(&format!("c{i}"), Direction::In, &["Alice"]),
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
    assert_eq!(seqs, (1..=N).collect::<Vec<_>>());
    assert_eq!(h.store.head_seq().await.unwrap(), N);
    let stored: Vec<u64> = h
        .store
        .events_after(0, 1000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(stored, (1..=N).collect::<Vec<_>>());
    h.stop().await;
}

async fn duplicate_new_call_answers_the_original_decision(kind: Kind) {
    let Some(h) = Harness::of(kind, "duplicate_new_call_answers_the_original_decision", 16).await
    else {
        return;
    };
    let first = h
        .append(
            new_call("A", Direction::In, &["Alice"]),
            Some(Decision::accept()),
            1_000,
        )
        .await;
    assert!(matches!(first, Committed::Appended { seq: 1, .. }));
    // A replay, even with another decision (settings changed meanwhile).
    let again = h
        .append(
            new_call("A", Direction::In, &["Alice"]),
            Some(reject()),
            2_000,
        )
        .await;
    assert_eq!(
        again,
        Committed::Duplicate {
            seq: 1,
            decision: Some(Decision::accept())
        }
    );
    // A duplicate hangup also reports the call's newCall decision.
    h.append(hangup("A", "cancel"), None, 3_000).await;
    let dup_hangup = h.append(hangup("A", "cancel"), None, 4_000).await;
    assert_eq!(
        dup_hangup,
        Committed::Duplicate {
            seq: 2,
            decision: Some(Decision::accept())
        }
    );
    assert_eq!(h.store.head_seq().await.unwrap(), 2);
    h.stop().await;
}

async fn duplicates_within_one_batch_are_caught(kind: Kind) {
    let Some(h) = Harness::of(kind, "duplicates_within_one_batch_are_caught", 16).await else {
        return;
    };
    let receivers = join_all((0..5).map(|i| {
        h.writer.submit(Intake {
            event: new_call("A", Direction::In, &[]),
            decision: Some(Decision::accept()),
            received_at_ms: 1_000 + i,
        })
    }))
    .await;
    let mut appended = 0;
    for r in receivers {
        match r.unwrap().await.unwrap().unwrap() {
            Committed::Appended { seq, .. } => {
                appended += 1;
                assert_eq!(seq, 1);
            }
            Committed::Duplicate { seq, decision } => {
                assert_eq!(seq, 1);
                assert_eq!(decision, Some(Decision::accept()));
            }
            other => panic!("a newCall is stored or a duplicate here, not {other:?}"),
        }
    }
    assert_eq!(appended, 1);
    assert_eq!(h.store.head_seq().await.unwrap(), 1);
    h.stop().await;
}

async fn repeated_dtmf_is_appended_each_time(kind: Kind) {
    let Some(h) = Harness::of(kind, "repeated_dtmf_is_appended_each_time", 16).await else {
        return;
    };
    h.append(
        new_call("A", Direction::In, &[]),
        Some(Decision::accept()),
        1_000,
    )
    .await;
    let a = h.append(dtmf("A", "1"), None, 2_000).await;
    let b = h.append(dtmf("A", "1"), None, 3_000).await;
    assert!(matches!(a, Committed::Appended { seq: 2, .. }));
    assert!(matches!(b, Committed::Appended { seq: 3, .. }));
    let call = h.store.get_call("A").await.unwrap().unwrap();
    assert_eq!(call.state, CallState::NewCall);
    assert_eq!(call.updated_at_ms, 3_000);
    h.stop().await;
}

async fn rejected_call_ends_with_a_synthetic_hangup(kind: Kind) {
    let Some(h) = Harness::of(kind, "rejected_call_ends_with_a_synthetic_hangup", 16).await else {
        return;
    };
    let committed = h
        .append(
            new_call("R", Direction::In, &["Alice"]),
            Some(reject()),
            5_000,
        )
        .await;
    let Committed::Appended { seq, decision, .. } = committed else {
        panic!("not appended: {committed:?}");
    };
    assert_eq!(seq, 1);
    assert_eq!(decision, Some(reject()));

    let events = h.store.events_after(0, 10).await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].event.kind, EventKind::NewCall);
    assert!(!events[0].synthetic);
    assert_eq!(events[0].decision, Some(reject()));
    assert_eq!(events[1].seq, 2);
    assert_eq!(events[1].event.kind, EventKind::Hangup);
    assert_eq!(events[1].event.cause, "rejected");
    assert!(events[1].synthetic);
    assert_eq!(events[1].call.state, CallState::Hangup);

    let call = h.store.get_call("R").await.unwrap().unwrap();
    assert_eq!(call.state, CallState::Hangup);
    assert!(call.ended_synthetically);
    assert!(!call.done);
    assert_eq!(call.cause, "rejected");
    assert_eq!(call.decision, Some(reject()));
    h.stop().await;
}

async fn stored_event_round_trips_raw_form_and_call_snapshot(kind: Kind) {
    let Some(h) = Harness::of(
        kind,
        "stored_event_round_trips_raw_form_and_call_snapshot",
        16,
    )
    .await
    else {
        return;
    };
    let mut e = new_call("A", Direction::In, &["Alice", "Bob"]);
    e.raw = vec![
        ("event".into(), "newCall".into()),
        ("somethingNew".into(), "kept".into()),
    ];
    h.append(e.clone(), Some(Decision::accept()), 1_234).await;
    let stored = &h.store.events_after(0, 10).await.unwrap()[0];
    assert_eq!(stored.event, e);
    assert_eq!(stored.received_at_ms, 1_234);
    assert_eq!(stored.call.users, ["Alice", "Bob"]);
    assert_eq!(
        Some(&stored.call),
        h.store.get_call("A").await.unwrap().as_ref()
    );
    h.stop().await;
}

#[tokio::test]
async fn pages_serve_the_stored_wire_form_and_encode_older_rows_from_json() {
    let h = Harness::new(16).await;
    let mut e = new_call("A", Direction::In, &["Alice"]);
    e.raw = vec![("event".into(), "newCall".into()), ("x".into(), "y".into())];
    h.append(e, Some(Decision::accept()), 1_234).await;
    h.append(hangup("A", "normalClearing"), None, 2_000).await;
    let stored = h.store.events_after(0, 10).await.unwrap();
    let page = h.store.event_page(0, 10, usize::MAX).await.unwrap();
    assert!(page.at_head);
    let expected: Vec<_> = stored.iter().map(StoredEvent::encode).collect();
    let served: Vec<_> = page.events.iter().map(|e| e.wire.clone()).collect();
    assert_eq!(served, expected);
    let decoded = crate::proto::CallEvent::decode(served[0].as_ref()).unwrap();
    assert_eq!((decoded.seq, decoded.call_id.as_str()), (1, "A"));
    assert_eq!(decoded.raw_form[1].value, "y");

    // New rows keep no JSON; the stored event decodes back from its wire form.
    let (payload,): (String,) = sqlx::query_as("SELECT payload FROM events WHERE seq = 1")
        .fetch_one(h.store.sqlite_pool())
        .await
        .unwrap();
    assert_eq!(payload, "");
    assert_eq!(StoredEvent::decode(&expected[0]).unwrap(), stored[0]);

    // A row stored before the wire form was kept: encoded from its JSON.
    let json = serde_json::json!({
        "event": stored[0].event,
        "decision": stored[0].decision,
        "call": stored[0].call,
    });
    sqlx::query("UPDATE events SET wire = NULL, payload = $1 WHERE seq = 1")
        .bind(json.to_string())
        .execute(h.store.sqlite_pool())
        .await
        .unwrap();
    let page = h.store.event_page(0, 10, usize::MAX).await.unwrap();
    assert_eq!(page.events[0].wire, expected[0]);
    assert_eq!(page.events[1].wire, expected[1]);

    // The same for the call log: a row with JSON and no wire form still reads.
    let call = h.store.get_call("A").await.unwrap().unwrap();
    sqlx::query("UPDATE calls SET wire = NULL, record = $1 WHERE call_id = 'A'")
        .bind(serde_json::to_string(&call).unwrap())
        .execute(h.store.sqlite_pool())
        .await
        .unwrap();
    assert_eq!(h.store.get_call("A").await.unwrap(), Some(call.clone()));
    let (listed, _) = h.store.list_calls(&CallQuery::default()).await.unwrap();
    assert_eq!(listed, [call]);
    h.stop().await;
}

#[tokio::test]
async fn a_page_reader_that_goes_away_leaves_the_pool_usable() {
    let h = Harness::new(16).await;
    for i in 0..50 {
        h.append(new_call(&format!("P{i}"), Direction::In, &[]), None, i)
            .await;
    }
    // Readers dropped before, during and after their blocking read.
    for delay_us in [0, 50, 200, 1_000, 5_000] {
        let readers: Vec<_> = (0..8)
            .map(|_| {
                let store = h.store.clone();
                tokio::spawn(async move { store.event_page(0, 4096, usize::MAX).await })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_micros(delay_us)).await;
        for reader in readers {
            reader.abort();
        }
    }
    let page = h.store.event_page(0, 4096, usize::MAX).await.unwrap();
    assert_eq!(page.events.len(), 50);
    assert!(page.at_head);
    h.append(new_call("after", Direction::In, &[]), None, 99)
        .await;
    let page = h.store.event_page(50, 10, usize::MAX).await.unwrap();
    assert_eq!(page.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [51]);
    h.stop().await;
}

async fn answer_and_hangup_for_unknown_calls_create_rows(kind: Kind) {
    let Some(h) = Harness::of(kind, "answer_and_hangup_for_unknown_calls_create_rows", 16).await
    else {
        return;
    };
    let mut answer = event(EventKind::Answer, "U", Some(Direction::In));
    answer.users = vec!["Alice".into()];
    let committed = h.append(answer, None, 1_000).await;
    let Committed::Appended { call, .. } = committed else {
        panic!("not appended");
    };
    assert_eq!(call.state, CallState::Answer);
    h.append(hangup("V", "cancel"), None, 1_000).await;
    let v = h.store.get_call("V").await.unwrap().unwrap();
    assert_eq!(v.state, CallState::Hangup);
    assert!(!v.done);
    h.stop().await;
}

async fn sweep_ends_stale_calls_with_a_timeout_event(kind: Kind) {
    let Some(h) = Harness::of(kind, "sweep_ends_stale_calls_with_a_timeout_event", 16).await else {
        return;
    };
    h.append(
        new_call("old", Direction::In, &[]),
        Some(Decision::accept()),
        1_000,
    )
    .await;
    h.append(
        new_call("done", Direction::In, &[]),
        Some(Decision::accept()),
        1_000,
    )
    .await;
    h.append(hangup("done", "cancel"), None, 2_000).await;
    h.append(
        new_call("fresh", Direction::In, &[]),
        Some(Decision::accept()),
        90_000,
    )
    .await;

    // From the head (seq 4): on PostgreSQL "from now" is the head the
    // fan-out has read so far, which may still be behind the last commit.
    let mut live = Box::pin(h.fanout.subscribe(
        Some(4),
        crate::fanout::EventFilter::default(),
        h.shutdown.clone(),
    ));
    assert_eq!(h.writer.sweep(60_000, 100_000).await.unwrap(), 1);

    let old = h.store.get_call("old").await.unwrap().unwrap();
    assert_eq!(old.state, CallState::Hangup);
    assert_eq!(old.cause, "timeout");
    assert!(old.ended_synthetically);
    assert_eq!(old.end_at_ms, Some(100_000));
    assert!(!old.done, "an inbound call nobody took stays missed");
    let fresh = h.store.get_call("fresh").await.unwrap().unwrap();
    assert_eq!(fresh.state, CallState::NewCall);

    use futures::StreamExt as _;
    let published = live.next().await.unwrap().unwrap();
    assert_eq!(published.seq(), 5);
    let published = published.decode().unwrap();
    assert!(published.synthetic);
    assert_eq!(published.cause, "timeout");
    assert_eq!(published.call_id, "old");

    assert_eq!(h.writer.sweep(60_000, 100_000).await.unwrap(), 0);
    drop(live);
    h.stop().await;
}

async fn purge_drops_old_rows_but_keeps_the_newest_event(kind: Kind) {
    let Some(h) = Harness::of(kind, "purge_drops_old_rows_but_keeps_the_newest_event", 16).await
    else {
        return;
    };
    h.append(
        new_call("a", Direction::In, &[]),
        Some(Decision::accept()),
        1_000,
    )
    .await;
    h.append(hangup("a", "cancel"), None, 2_000).await;
    h.append(
        new_call("b", Direction::In, &[]),
        Some(Decision::accept()),
        50_000,
    )
    .await;
    assert_eq!(h.writer.purge(10_000).await.unwrap(), (2, 1));
    let left: Vec<u64> = h
        .store
        .events_after(0, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(left, [3]);
    assert!(h.store.get_call("a").await.unwrap().is_none());
    assert!(h.store.get_call("b").await.unwrap().is_some());

    // Everything is old now, but the newest event stays so seq continues.
    assert_eq!(h.writer.purge(i64::MAX).await.unwrap(), (0, 1));
    assert_eq!(h.store.head_seq().await.unwrap(), 3);
    let h = h.reopen().await;
    let next = h.append(dtmf("b", "1"), None, 60_000).await;
    assert_eq!(seq_of(&next), 4);
    h.stop().await;
}

async fn reopening_continues_the_sequence(kind: Kind) {
    let Some(h) = Harness::of(kind, "reopening_continues_the_sequence", 16).await else {
        return;
    };
    for i in 0..3 {
        h.append(new_call(&format!("c{i}"), Direction::Out, &[]), None, 1_000)
            .await;
    }
    let h = h.reopen().await;
    let next = h
        .append(new_call("c3", Direction::Out, &[]), None, 2_000)
        .await;
    assert_eq!(seq_of(&next), 4);
    // Dedupe survives the restart.
    let dup = h
        .append(new_call("c0", Direction::Out, &[]), None, 3_000)
        .await;
    assert_eq!(seq_of(&dup), 1);
    h.stop().await;
}

async fn shutdown_commits_what_was_queued(kind: Kind) {
    let Some(h) = Harness::of(kind, "shutdown_commits_what_was_queued", 16).await else {
        return;
    };
    let receivers = join_all((0..20).map(|i| {
        h.writer.submit(Intake {
            event: dtmf("A", &i.to_string()),
            decision: None,
            received_at_ms: 1_000,
        })
    }))
    .await;
    h.shutdown.cancel();
    for r in receivers {
        r.unwrap().await.unwrap().unwrap();
    }
    assert_eq!(h.store.head_seq().await.unwrap(), 20);
    let writer = h.writer.clone();
    h.stop().await;
    assert!(!writer.is_running());
    assert!(matches!(
        writer
            .submit(Intake {
                event: dtmf("A", "1"),
                decision: None,
                received_at_ms: 1
            })
            .await,
        Err(StoreError::WriterClosed)
    ));
}

async fn set_done_overrides_and_reports_unknown_calls(kind: Kind) {
    let Some(h) = Harness::of(kind, "set_done_overrides_and_reports_unknown_calls", 16).await
    else {
        return;
    };
    h.append(
        new_call("A", Direction::In, &[]),
        Some(Decision::accept()),
        1_000,
    )
    .await;
    let call = h.writer.set_done("A".into(), true).await.unwrap().unwrap();
    assert!(call.done);
    assert!(h.store.get_call("A").await.unwrap().unwrap().done);
    assert_eq!(h.writer.set_done("nope".into(), true).await.unwrap(), None);
    h.stop().await;
}

async fn list_calls_pages_newest_first_with_filters(kind: Kind) {
    let Some(h) = Harness::of(kind, "list_calls_pages_newest_first_with_filters", 16).await else {
        return;
    };
    for i in 0..7 {
        let direction = if i % 2 == 0 {
            Direction::In
        } else {
            Direction::Out
        };
        let mut e = new_call(&format!("c{i}"), direction, &[]);
        e.from = format!("49{i}");
        // c5 and c6 share a timestamp: ties go by call_id, descending.
        h.append(e, None, 1_000 * i.min(5)).await;
    }
    let mut pages = Vec::new();
    let mut token = None;
    loop {
        let (calls, next) = h
            .store
            .list_calls(&CallQuery {
                limit: 3,
                page_token: token,
                ..CallQuery::default()
            })
            .await
            .unwrap();
        pages.push(calls.iter().map(|c| c.call_id.clone()).collect::<Vec<_>>());
        match next {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    assert_eq!(
        pages,
        [vec!["c6", "c5", "c4"], vec!["c3", "c2", "c1"], vec!["c0"]]
    );

    let (inbound, _) = h
        .store
        .list_calls(&CallQuery {
            direction: Some(Direction::In),
            done: Some(false),
            state: Some(CallState::NewCall),
            ..CallQuery::default()
        })
        .await
        .unwrap();
    let ids: Vec<_> = inbound.iter().map(|c| c.call_id.as_str()).collect();
    assert_eq!(ids, ["c6", "c4", "c2", "c0"]);

    let (by_number, next) = h
        .store
        .list_calls(&CallQuery {
            number: Some("493".into()),
            ..CallQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(by_number.len(), 1);
    assert_eq!(by_number[0].call_id, "c3");
    assert_eq!(next, None);

    let bad = h
        .store
        .list_calls(&CallQuery {
            page_token: Some("not a token!".into()),
            ..CallQuery::default()
        })
        .await;
    assert!(matches!(bad, Err(StoreError::BadPageToken)));
    h.stop().await;
}

async fn settings_round_trip_with_version_and_audit(kind: Kind) {
    let Some(h) = Harness::of(kind, "settings_round_trip_with_version_and_audit", 16).await else {
        return;
    };
    assert_eq!(h.store.load_settings().await.unwrap(), Settings::default());
    let settings = Settings {
        block_list: vec![
            BlockEntry {
                pattern: "4930*".into(),
                note: "spam".into(),
            },
            BlockEntry {
                pattern: "anonymous".into(),
                note: String::new(),
            },
        ],
        routing_table: vec![RoutingRule {
            dest: "49*".into(),
            caller_id: "4930123".into(),
            note: "DE".into(),
        }],
        default_caller_id: Some("4930999".into()),
        flows: Some("time_zone = \"UTC\"\n".into()),
        version: 0,
    };
    let audit = |action: &str| AuditRecord {
        at_ms: 7,
        client: "127.0.0.1:5000".into(),
        action: action.into(),
        detail: "{}".into(),
    };
    let saved = h
        .store
        .save_settings(&settings, &audit("import.zammad"))
        .await
        .unwrap();
    assert_eq!(saved.version, 1);
    assert_eq!(h.store.load_settings().await.unwrap(), saved);

    let cleared = Settings {
        default_caller_id: None,
        block_list: vec![settings.block_list[1].clone()],
        ..settings.clone()
    };
    let saved = h
        .store
        .save_settings(&cleared, &audit("block.remove"))
        .await
        .unwrap();
    assert_eq!(saved.version, 2);
    let loaded = h.store.load_settings().await.unwrap();
    assert_eq!(loaded.default_caller_id, None);
    assert_eq!(loaded.block_list, cleared.block_list);

    let entries = h.store.list_audit(0, None).await.unwrap();
    let actions: Vec<_> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["block.remove", "import.zammad"]);
    let older = h.store.list_audit(10, Some(entries[0].id)).await.unwrap();
    assert_eq!(older.len(), 1);
    assert_eq!(older[0].action, "import.zammad");
    assert_eq!(older[0].client, "127.0.0.1:5000");
    h.stop().await;
}

#[tokio::test]
async fn settings_save_waits_for_a_busy_writer() {
    let h = Harness::new(16).await;
    let writes = join_all((0..200).map(|i| {
        let writer = h.writer.clone();
        async move {
            writer
                .submit(Intake {
                    event: dtmf("A", &i.to_string()),
                    decision: None,
                    received_at_ms: 1,
                })
                .await
                .unwrap()
                .await
                .unwrap()
                .unwrap()
        }
    }));
    let audit = AuditRecord {
        at_ms: 1,
        client: "test".into(),
        action: "x".into(),
        detail: String::new(),
    };
    let defaults = Settings::default();
    let saves = join_all((0..5).map(|_| h.store.save_settings(&defaults, &audit)));
    let (_, saves) = tokio::join!(writes, saves);
    for s in saves {
        s.unwrap();
    }
    assert_eq!(h.store.load_settings().await.unwrap().version, 5);
    h.stop().await;
}

#[tokio::test]
async fn open_fails_with_the_path_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing").join("sidecar.db");
    let path = path.to_str().unwrap();
    let err = Store::open(path).await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(message.contains(path), "{message}");
    assert!(message.starts_with("cannot open database "), "{message}");
    assert!(message.contains("does the directory exist?"), "{message}");

    let err = Store::open("/proc/sidecar-test/x.db").await.unwrap_err();
    assert!(err.to_string().contains("/proc/sidecar-test/x.db"), "{err}");
}

#[tokio::test]
async fn open_accepts_a_sqlite_url_and_creates_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("url.db");
    let store = Store::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    assert!(path.exists());
    assert!(store.ping().await);
    assert_eq!(store.head_seq().await.unwrap(), 0);
    assert_eq!(store.path(), path.display().to_string());
}

#[tokio::test]
async fn the_sweep_and_retention_find_their_calls_by_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("plan.db").to_str().unwrap())
        .await
        .unwrap();
    let plan = |statement: &str| {
        let store = store.clone();
        let explain = format!("EXPLAIN QUERY PLAN {statement}");
        async move {
            let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(&explain)
                .bind(0_i64)
                .bind(0_i64)
                .fetch_all(store.sqlite_pool())
                .await
                .unwrap();
            rows.into_iter()
                .map(|(_, _, _, detail)| detail)
                .collect::<Vec<_>>()
                .join("; ")
        }
    };
    let sweep = plan(sql::STALE_OPEN_CALLS).await;
    assert!(sweep.contains("USING INDEX calls_open"), "{sweep}");
    let purge = plan(sql::PURGE_CALLS).await;
    assert!(purge.contains("USING INDEX calls_newest"), "{purge}");
    let purge = plan(sql::PURGE_EVENTS).await;
    assert!(
        purge.contains("USING INDEX events_received_at") || purge.contains("INTEGER PRIMARY KEY"),
        "{purge}"
    );
}

#[tokio::test]
async fn failed_batch_answers_every_request_and_leaves_no_gap() {
    let h = Harness::new(16).await;
    h.append(dtmf("ok", "1"), None, 1).await;
    // Make the database refuse one call's events.
    sqlx::query(
        "CREATE TRIGGER refuse_boom BEFORE INSERT ON events WHEN NEW.call_id = 'boom' \
         BEGIN SELECT RAISE(ABORT, 'refused by test'); END",
    )
    .execute(h.store.sqlite_pool())
    .await
    .unwrap();
    // Submitted together, so they usually share one batch.
    let receivers = join_all(["ok", "boom", "ok"].map(|call_id| {
        h.writer.submit(Intake {
            event: dtmf(call_id, "2"),
            decision: None,
            received_at_ms: 2,
        })
    }))
    .await;
    let results: Vec<_> = join_all(receivers.into_iter().map(|r| r.unwrap()))
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    // Whatever batched with "boom" failed as a whole; the rest committed.
    let failed = results.iter().filter(|r| r.is_err()).count();
    assert!(failed >= 1, "{results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(
            matches!(r, StoreError::Write(m) if m.contains("refused by test")),
            "{r}"
        );
    }
    assert!(h.writer.is_running());
    let next = h.append(dtmf("ok", "3"), None, 3).await;
    let seqs: Vec<u64> = h
        .store
        .events_after(0, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, (1..=seq_of(&next)).collect::<Vec<_>>());
    assert_eq!(seqs.len(), 1 + (3 - failed) + 1);
    h.stop().await;
}

async fn maintenance_sweeps_and_purges_periodically(kind: Kind) {
    let Some(h) = Harness::of(kind, "maintenance_sweeps_and_purges_periodically", 16).await else {
        return;
    };
    // Received at 1970 + 1 s: stale and past retention. The sweep ends it
    // now, so the call row itself stays for another retention period.
    h.append(
        new_call("ancient", Direction::In, &[]),
        Some(Decision::accept()),
        1_000,
    )
    .await;
    h.append(
        new_call("recent", Direction::In, &[]),
        Some(Decision::accept()),
        now_ms(),
    )
    .await;
    let task = spawn_maintenance(
        &h.store,
        h.writer.clone(),
        Duration::from_secs(3600),
        Duration::from_secs(86_400),
        Duration::from_millis(20),
        h.shutdown.clone(),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let seqs: Vec<u64> = h
            .store
            .events_after(0, 10)
            .await
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        // The old newCall (seq 1) purged; the sweep's timeout event (seq 3) kept.
        if seqs == [2, 3] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "events: {seqs:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ancient = h.store.get_call("ancient").await.unwrap().unwrap();
    assert_eq!(ancient.state, CallState::Hangup);
    assert_eq!(ancient.cause, "timeout");
    assert!(ancient.ended_synthetically);
    let recent = h.store.get_call("recent").await.unwrap().unwrap();
    assert_eq!(recent.state, CallState::NewCall);
    h.shutdown.cancel();
    task.await.unwrap();
    h.stop().await;
}

/// Waits until `f` holds (at most 10 s).
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

fn submit_dtmf(
    writer: &WriterHandle,
    call_id: &str,
    digit: &str,
) -> impl std::future::Future<Output = Result<Committed, StoreError>> + use<> {
    let writer = writer.clone();
    let intake = Intake {
        event: dtmf(call_id, digit),
        decision: None,
        received_at_ms: 1,
    };
    async move {
        writer
            .submit(intake)
            .await?
            .await
            .map_err(|_| StoreError::WriterClosed)?
    }
}

async fn stored_seqs(store: &Store) -> Vec<u64> {
    store
        .events_after(0, 10_000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect()
}

#[tokio::test]
async fn storage_fault_holds_the_batch_and_commits_it_in_order_when_back() {
    let h = Harness::new(64).await;
    h.append(dtmf("A", "0"), None, 1).await;
    let health = h.writer.storage_health();
    assert!(health.is_healthy());

    h.store.set_fault(true);
    let pending: Vec<_> = (1..=20)
        .map(|i| tokio::spawn(submit_dtmf(&h.writer, "A", &i.to_string())))
        .collect();
    eventually("storage failing", || !health.is_healthy()).await;
    let StorageState::Failing { reason } = health.state() else {
        unreachable!()
    };
    assert!(reason.contains("readonly"), "{reason}");
    // Nobody is answered with an error while the database refuses writes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(pending.iter().all(|t| !t.is_finished()));
    assert_eq!(h.store.head_seq().await.unwrap(), 1);

    h.store.set_fault(false);
    let mut seqs = Vec::new();
    for task in pending {
        seqs.push(seq_of(&task.await.unwrap().unwrap()));
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (2..=21).collect::<Vec<_>>());
    assert!(health.is_healthy());
    assert_eq!(stored_seqs(&h.store).await, (1..=21).collect::<Vec<_>>());
    h.stop().await;
}

#[tokio::test]
async fn a_stale_position_is_re_read_from_the_database() {
    let h = Harness::new(16).await;
    h.append(dtmf("A", "1"), None, 1).await;
    // Someone else appended behind the writer's back: its next seq is taken.
    sqlx::query(
        "INSERT INTO events (seq, kind, call_id, direction, from_number, to_number, \
         received_at_ms, synthetic, dedupe_key, payload, wire) \
         SELECT seq + 1, kind, call_id, direction, from_number, to_number, received_at_ms, \
         synthetic, NULL, payload, wire FROM events WHERE seq = 1",
    )
    .execute(h.store.sqlite_pool())
    .await
    .unwrap();
    let next = h.append(dtmf("A", "2"), None, 2).await;
    assert_eq!(seq_of(&next), 3);
    assert_eq!(stored_seqs(&h.store).await, vec![1, 2, 3]);
    assert!(h.writer.storage_health().is_healthy());
    h.stop().await;
}

#[tokio::test]
async fn a_full_queue_refuses_at_once_and_keeps_what_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("q.db").to_str().unwrap())
        .await
        .unwrap();
    let (_fanout, publisher) = crate::fanout::Fanout::new(store.clone(), 16);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (writer, task) =
        writer::spawn_with_capacity(store.clone(), publisher, shutdown.clone(), 1, 2, None);
    store.set_fault(true);
    // One batch held by the writer, two waiting in the queue...
    let first = tokio::spawn(submit_dtmf(&writer, "A", "1"));
    eventually("storage failing", || !writer.storage_health().is_healthy()).await;
    let queued: Vec<_> = (2..=3)
        .map(|i| tokio::spawn(submit_dtmf(&writer, "A", &i.to_string())))
        .collect();
    eventually("queue full", || writer.queue_depth() == 2).await;
    // ...and the next one refused at once instead of waiting.
    let refused = tokio::time::timeout(Duration::from_secs(1), submit_dtmf(&writer, "A", "4"))
        .await
        .expect("refused without waiting");
    assert!(matches!(refused, Err(StoreError::QueueFull)), "{refused:?}");

    store.set_fault(false);
    let mut seqs = vec![seq_of(&first.await.unwrap().unwrap())];
    for task in queued {
        seqs.push(seq_of(&task.await.unwrap().unwrap()));
    }
    assert_eq!(seqs, vec![1, 2, 3]);
    shutdown.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn a_second_open_of_a_database_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("one.db");
    let path = path.to_str().unwrap();
    let first = Store::open(path).await.unwrap();
    let err = Store::open(path).await.unwrap_err();
    let message = err.to_string();
    assert!(message.contains(path), "{message}");
    assert!(
        message.contains(&format!(
            "in use by another process (pid {})",
            std::process::id()
        )),
        "{message}"
    );
    assert!(first.ping().await);
    drop(first);
    let again = Store::open(path).await.expect("free once closed");
    assert!(again.ping().await);
}

#[cfg(unix)]
#[tokio::test]
async fn a_symlink_to_a_database_in_use_is_refused_and_a_symlinked_lock_file_too() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.db");
    let link = dir.path().join("link.db");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let first = Store::open(real.to_str().unwrap()).await.unwrap();
    let err = Store::open(link.to_str().unwrap())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("in use by another process"), "{err}");
    drop(first);
    // A directory symlink and a database not created yet: one lock still.
    let dir_link = dir.path().join("dir-link");
    std::os::unix::fs::symlink(dir.path(), &dir_link).unwrap();
    let fresh = Store::open(dir.path().join("fresh.db").to_str().unwrap())
        .await
        .unwrap();
    let err = Store::open(dir_link.join("fresh.db").to_str().unwrap())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("in use by another process"), "{err}");
    drop(fresh);

    // The lock file planted as a symlink to another file: refused, and the
    // other file keeps its content.
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "keep me").unwrap();
    let db = dir.path().join("planted.db");
    std::os::unix::fs::symlink(&victim, dir.path().join("planted.db.lock")).unwrap();
    let err = Store::open(db.to_str().unwrap())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("lock file"), "{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
}

#[tokio::test]
async fn a_wal_left_by_a_removed_database_is_moved_aside_not_replayed() {
    let h = Harness::new(16).await;
    for i in 0..20 {
        h.append(dtmf(&format!("call-{i}"), "1"), None, i + 1).await;
    }
    // The database file removed with its WAL still in place (copied here
    // while the server holds it open).
    let wal = h.dir.path().join("sidecar.db-wal");
    assert!(std::fs::metadata(&wal).unwrap().len() > 0);
    let orphan_db = h.dir.path().join("removed.db");
    std::fs::copy(&wal, h.dir.path().join("removed.db-wal")).unwrap();
    let store = Store::open(orphan_db.to_str().unwrap()).await.unwrap();
    assert_eq!(store.head_seq().await.unwrap(), 0, "a new, empty database");
    let aside: Vec<String> = std::fs::read_dir(h.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("removed.db-wal.orphan-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
}

#[cfg(unix)]
#[tokio::test]
async fn database_files_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let h = Harness::new(16).await;
    h.append(dtmf("A", "1"), None, 1).await;
    let db = h.dir.path().join("sidecar.db");
    for suffix in ["", "-wal", "-shm", ".lock"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        let mode = std::fs::metadata(&name).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name:?} has mode {mode:o}");
    }
    h.stop().await;
}

#[tokio::test]
async fn a_removed_database_file_holds_writes_until_it_is_back() {
    let h = Harness::new(16).await;
    h.append(dtmf("A", "1"), None, 1).await;
    let db = h.dir.path().join("sidecar.db");
    let aside = h.dir.path().join("aside.db");
    std::fs::rename(&db, &aside).unwrap();
    let pending = tokio::spawn(submit_dtmf(&h.writer, "A", "2"));
    let health = h.writer.storage_health();
    eventually("storage failing", || !health.is_healthy()).await;
    let StorageState::Failing { reason } = health.state() else {
        unreachable!()
    };
    assert!(reason.contains("removed or replaced"), "{reason}");
    assert!(!db.exists(), "no new empty database was created");
    assert!(!pending.is_finished());

    std::fs::rename(&aside, &db).unwrap();
    assert_eq!(seq_of(&pending.await.unwrap().unwrap()), 2);
    assert!(health.is_healthy());
    assert_eq!(stored_seqs(&h.store).await, vec![1, 2]);
    h.stop().await;
}

#[tokio::test]
async fn a_removed_wal_is_copied_into_the_database_and_writes_are_held() {
    let h = Harness::new(16).await;
    h.append(dtmf("A", "1"), None, 1).await;
    let db = h.dir.path().join("sidecar.db");
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::remove_file(&wal).unwrap();
    let pending = tokio::spawn(submit_dtmf(&h.writer, "A", "2"));
    let health = h.writer.storage_health();
    eventually("storage failing", || !health.is_healthy()).await;
    let StorageState::Failing { reason } = health.state() else {
        unreachable!()
    };
    assert!(reason.contains("WAL file"), "{reason}");
    assert!(!pending.is_finished());
    // What was committed before is in the database file itself now.
    let copy = h.dir.path().join("copy.db");
    std::fs::copy(&db, &copy).unwrap();
    use sqlx::ConnectOptions as _;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&copy)
        .connect()
        .await
        .unwrap();
    assert_eq!(sql::head_seq(&mut conn).await.unwrap(), 1);
}
