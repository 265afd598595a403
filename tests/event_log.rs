//! End to end: every push becomes a numbered event, the call log follows
//! Zammad's rules (and survives sipgate's duplicates and gaps), and the gRPC
//! stream delivers everything in order and resumes.

mod common;

use std::time::Duration;

use common::*;
use sipgate_sidecar::proto::{self, CallState};
use tonic::Streaming;

async fn next(stream: &mut Streaming<proto::CallEvent>) -> proto::CallEvent {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an event within 10 s")
        .expect("stream healthy")
        .expect("stream open")
}

async fn subscribe(server: &TestServer, after_seq: Option<u64>) -> Streaming<proto::CallEvent> {
    server
        .events()
        .await
        .subscribe(proto::SubscribeRequest {
            after_seq,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

async fn push(server: &TestServer, body: &str) {
    let reply = server.post("/api/v1/sipgate/in", body).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[tokio::test]
async fn inbound_call_answered_by_a_person() {
    let server = TestServer::start().await;
    let mut stream = subscribe(&server, Some(0)).await;
    push(
        &server,
        &new_call("in", "492111234567", "4930600000000", "p1"),
    )
    .await;
    push(&server, &answer("in", "p1", "Alice Agent")).await;
    push(&server, &hangup("in", "p1", "normalClearing")).await;

    let call = server.call("p1").await;
    assert_eq!(call.state(), CallState::Hangup);
    assert!(call.done, "answered inbound calls are done");
    assert_eq!(call.cause, "normalClearing");
    assert_eq!(call.users, ["Alice Agent"]);
    assert_eq!(call.from, "492111234567");
    assert_eq!(call.to, "4930600000000");
    assert_eq!(call.answering_number, "4921199999999");
    assert!(
        call.duration_waiting_secs
            .is_some_and(|s| (0..5).contains(&s))
    );
    assert!(
        call.duration_talking_secs
            .is_some_and(|s| (0..5).contains(&s))
    );
    assert!(call.start_at_ms >= call.initialized_at_ms && call.end_at_ms >= call.start_at_ms);

    let events = [
        next(&mut stream).await,
        next(&mut stream).await,
        next(&mut stream).await,
    ];
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    let kinds: Vec<proto::EventKind> = events.iter().map(|e| e.kind()).collect();
    assert_eq!(
        kinds,
        [
            proto::EventKind::NewCall,
            proto::EventKind::Answer,
            proto::EventKind::Hangup
        ]
    );
    let states: Vec<CallState> = events
        .iter()
        .map(|e| e.call.as_ref().unwrap().state())
        .collect();
    assert_eq!(
        states,
        [CallState::NewCall, CallState::Answer, CallState::Hangup]
    );
    // The raw form travels with the event, unknown fields included.
    assert!(
        events[0]
            .raw_form
            .iter()
            .any(|f| f.key == "xcid" && f.value == "5aada1e696b94cec")
    );
    assert_eq!(
        events[0].decision.as_ref().unwrap().action(),
        proto::Action::Accept
    );
}

#[tokio::test]
async fn call_to_voicemail_links_the_legs_and_stays_not_done() {
    let server = TestServer::start().await;
    // Leg A rings Alice, then is forwarded to the voicemail (sipgate #134).
    push(
        &server,
        &new_call("in", "492111234567", "4930600000000", "legA"),
    )
    .await;
    push(
        &server,
        &form(&[
            ("event", "hangup"),
            ("direction", "in"),
            ("callId", "legA"),
            ("origCallId", "legA"),
            ("cause", "forwarded"),
            ("xcid", "5aada1e696b94cec"),
        ]),
    )
    .await;
    push(
        &server,
        &form(&[
            ("event", "newCall"),
            ("direction", "in"),
            ("from", "492111234567"),
            ("to", "4930600000000"),
            ("callId", "legB"),
            ("origCallId", "legA"),
            ("user[]", "voicemail"),
            ("xcid", "5aada1e696b94cec"),
            ("diversion", "4930600000000"),
        ]),
    )
    .await;
    push(&server, &answer("in", "legB", "voicemail")).await;
    push(&server, &hangup("in", "legB", "normalClearing")).await;

    let a = server.call("legA").await;
    assert_eq!(a.state(), CallState::Hangup);
    assert!(a.done, "a forwarded leg is done (Zammad)");
    assert_eq!(a.cause, "forwarded");
    let b = server.call("legB").await;
    assert_eq!(b.state(), CallState::Hangup);
    assert!(!b.done, "a voicemail stays to be called back");
    assert_eq!(b.first_leg_call_id, "legA");
    assert_eq!(b.xcid, "5aada1e696b94cec");
    assert_eq!(b.diversion, "4930600000000");
}

#[tokio::test]
async fn unanswered_inbound_call_is_missed() {
    let server = TestServer::start().await;
    push(
        &server,
        &new_call("in", "492111234567", "4930600000000", "m1"),
    )
    .await;
    push(&server, &hangup("in", "m1", "cancel")).await;
    let call = server.call("m1").await;
    assert_eq!(call.state(), CallState::Hangup);
    assert!(!call.done);
    assert_eq!(call.cause, "cancel");
    assert!(call.duration_waiting_secs.is_some());
    assert_eq!(call.duration_talking_secs, None);

    // Zammad's "done" button.
    let marked = server
        .calls()
        .await
        .set_done(proto::SetDoneRequest {
            call_id: "m1".into(),
            done: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(marked.done);
    assert!(server.call("m1").await.done);
    let missing = server
        .calls()
        .await
        .set_done(proto::SetDoneRequest {
            call_id: "nope".into(),
            done: true,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn outbound_calls_are_always_done() {
    let server = TestServer::start().await;
    push(
        &server,
        &new_call("out", "4930600000000", "492111234567", "out1"),
    )
    .await;
    assert!(server.call("out1").await.done);
    push(&server, &hangup("out", "out1", "busy")).await;
    let call = server.call("out1").await;
    assert!(call.done);
    assert_eq!(call.state(), CallState::Hangup);
    assert_eq!(call.direction(), proto::Direction::Out);
}

#[tokio::test]
async fn a_blocked_call_ends_at_once_with_a_synthetic_event() {
    let server = TestServer::start().await;
    server
        .settings()
        .await
        .add_block_entry(proto::AddBlockEntryRequest {
            pattern: "4930123456".into(),
            note: "spam".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut stream = subscribe(&server, None).await;
    let reply = server
        .post(
            "/api/v1/sipgate/in",
            &new_call("in", "4930123456", "4930600000000", "blk"),
        )
        .await;
    assert!(reply.body.contains("Reject"));

    let first = next(&mut stream).await;
    assert_eq!(first.kind(), proto::EventKind::NewCall);
    let decision = first.decision.unwrap();
    assert_eq!(decision.action(), proto::Action::Reject);
    assert_eq!(decision.rule_pattern, "4930123456");
    let end = next(&mut stream).await;
    assert_eq!(end.seq, first.seq + 1);
    assert_eq!(end.kind(), proto::EventKind::Hangup);
    assert!(end.synthetic);
    assert_eq!(end.cause, "rejected");

    let call = server.call("blk").await;
    assert_eq!(call.state(), CallState::Hangup);
    assert!(call.ended_synthetically);
    assert_eq!(call.decision.unwrap().action(), proto::Action::Reject);
}

#[tokio::test]
async fn duplicates_get_the_same_answer_and_are_stored_once() {
    let server = TestServer::start().await;
    let mut settings = server.settings().await;
    settings
        .add_routing_rule(proto::AddRoutingRuleRequest {
            dest: "49*".into(),
            caller_id: "4930777000001".into(),
            note: String::new(),
            position: None,
            ..Default::default()
        })
        .await
        .unwrap();
    let body = new_call("out", "4930600000000", "4940123456", "dup1");
    let first = server.post("/api/v1/sipgate/out", &body).await;
    assert!(first.body.contains("4930777000001"));

    // The rule changes, then sipgate (or an attacker) replays the push.
    settings
        .remove_routing_rule(proto::RemoveRoutingRuleRequest {
            dest: "49*".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let replay = server.post("/api/v1/sipgate/out", &body).await;
    assert_eq!(replay.status, 200);
    assert_eq!(
        replay.body, first.body,
        "a replay gets the original decision"
    );

    push(&server, &hangup("out", "dup1", "normalClearing")).await;
    push(&server, &hangup("out", "dup1", "normalClearing")).await;
    // dtmf may repeat: one per Gather.
    let dtmf = form(&[("event", "dtmf"), ("callId", "dup1"), ("dtmf", "1")]);
    push(&server, &dtmf).await;
    push(&server, &dtmf).await;

    let events = server.all_events().await;
    let kinds: Vec<proto::EventKind> = events.iter().map(|e| e.kind()).collect();
    assert_eq!(
        kinds,
        [
            proto::EventKind::NewCall,
            proto::EventKind::Hangup,
            proto::EventKind::Dtmf,
            proto::EventKind::Dtmf
        ]
    );
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
}

#[tokio::test]
async fn late_and_unknown_events_never_fail_or_reopen_a_call() {
    let server = TestServer::start().await;
    // answer and hangup for a call the sidecar never saw: the row is created.
    push(&server, &answer("in", "ghost", "Bob")).await;
    let ghost = server.call("ghost").await;
    assert_eq!(ghost.state(), CallState::Answer);
    push(&server, &hangup("in", "ghost", "normalClearing")).await;
    assert_eq!(server.call("ghost").await.state(), CallState::Hangup);

    // Out of order: the hangup overtakes the answer.
    push(
        &server,
        &new_call("in", "492111234567", "4930600000000", "ooo"),
    )
    .await;
    push(&server, &hangup("in", "ooo", "cancel")).await;
    push(&server, &answer("in", "ooo", "Alice")).await;
    let call = server.call("ooo").await;
    assert_eq!(
        call.state(),
        CallState::Hangup,
        "a late answer never reopens an ended call"
    );
    assert!(!call.done);
    assert_eq!(call.cause, "cancel");

    // A newCall arriving after its hangup fills in the numbers but keeps the end.
    push(&server, &hangup("in", "late-new", "cancel")).await;
    push(
        &server,
        &new_call("in", "492111234567", "4930600000001", "late-new"),
    )
    .await;
    let late = server.call("late-new").await;
    assert_eq!(late.state(), CallState::Hangup);
    assert_eq!(late.to, "4930600000001");
}

#[tokio::test]
async fn call_log_lists_newest_first_with_filters_and_paging() {
    let server = TestServer::start().await;
    for i in 0..5 {
        push(
            &server,
            &new_call("in", "492111234567", "4930600000000", &format!("list{i}")),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    push(
        &server,
        &new_call("out", "4930600000000", "4940999", "list-out"),
    )
    .await;
    let mut calls = server.calls().await;
    let page1 = calls
        .list_calls(proto::ListCallsRequest {
            limit: 3,
            direction: Some(proto::Direction::In.into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = page1.calls.iter().map(|c| c.call_id.as_str()).collect();
    assert_eq!(ids, ["list4", "list3", "list2"]);
    assert!(!page1.next_page_token.is_empty());
    let page2 = calls
        .list_calls(proto::ListCallsRequest {
            limit: 3,
            direction: Some(proto::Direction::In.into()),
            page_token: page1.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = page2.calls.iter().map(|c| c.call_id.as_str()).collect();
    assert_eq!(ids, ["list1", "list0"]);

    let bad_token = calls
        .list_calls(proto::ListCallsRequest {
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_token.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn a_lagging_subscriber_still_gets_every_event_in_order() {
    let server = TestServer::start_with(|c| {
        c.live_buffer = 2;
        // 300 pushes at once from this one address.
        c.http_listener.max_per_source = 1000;
    })
    .await;
    let mut stream = subscribe(&server, Some(0)).await;
    let total = 300;
    let posts = (0..total).map(|i| {
        let server = &server;
        async move {
            let body = form(&[
                ("event", "dtmf"),
                ("callId", &format!("lag{}", i % 7)),
                ("dtmf", "5"),
            ]);
            assert_eq!(server.post("/api/v1/sipgate/in", &body).await.status, 200);
        }
    });
    futures::future::join_all(posts).await;
    for expected in 1..=total {
        let event = next(&mut stream).await;
        assert_eq!(event.seq, expected, "no gap, no reordering");
    }
}

#[tokio::test]
async fn a_subscriber_resumes_after_a_disconnect_with_exactly_the_missed_events() {
    let server = TestServer::start().await;
    let mut stream = subscribe(&server, None).await;
    for i in 0..3 {
        push(
            &server,
            &new_call("in", "492111234567", "4930600000000", &format!("r{i}")),
        )
        .await;
    }
    let mut last = 0;
    for _ in 0..3 {
        last = next(&mut stream).await.seq;
    }
    assert_eq!(last, 3);
    drop(stream);

    for i in 3..8 {
        push(
            &server,
            &new_call("in", "492111234567", "4930600000000", &format!("r{i}")),
        )
        .await;
    }
    let mut resumed = subscribe(&server, Some(last)).await;
    let mut got = Vec::new();
    for _ in 0..5 {
        let e = next(&mut resumed).await;
        got.push((e.seq, e.call_id));
    }
    let expected: Vec<(u64, String)> = (4..=8).map(|s| (s, format!("r{}", s - 1))).collect();
    assert_eq!(got, expected);
    // Nothing more is pending.
    let extra = tokio::time::timeout(Duration::from_millis(300), resumed.message()).await;
    assert!(extra.is_err(), "no duplicate after the missed events");
}

#[tokio::test]
async fn subscription_filters_by_direction_kind_and_number() {
    let server = TestServer::start().await;
    let mut outbound_hangups = server
        .events()
        .await
        .subscribe(proto::SubscribeRequest {
            after_seq: Some(0),
            directions: vec![proto::Direction::Out.into()],
            kinds: vec![proto::EventKind::Hangup.into()],
            numbers: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    let mut by_number = server
        .events()
        .await
        .subscribe(proto::SubscribeRequest {
            after_seq: Some(0),
            numbers: vec!["+49 211 1234567".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    push(&server, &new_call("in", "4930111", "4930600000000", "f1")).await;
    push(&server, &new_call("out", "4930600000000", "4940222", "f2")).await;
    push(&server, &hangup("in", "f1", "cancel")).await;
    push(&server, &hangup("out", "f2", "normalClearing")).await;

    let e = next(&mut outbound_hangups).await;
    assert_eq!(
        (e.call_id.as_str(), e.kind()),
        ("f2", proto::EventKind::Hangup)
    );
    assert_eq!(e.seq, 4);
    // hangup() bodies carry from=492111234567.
    let first = next(&mut by_number).await;
    assert_eq!(first.seq, 3);
    assert_eq!(next(&mut by_number).await.seq, 4);
}

#[tokio::test]
async fn shutdown_ends_streams_with_unavailable_and_a_restart_continues_the_sequence() {
    let server = TestServer::start().await;
    push(
        &server,
        &new_call("in", "492111234567", "4930600000000", "s1"),
    )
    .await;
    let mut stream = subscribe(&server, Some(0)).await;
    assert_eq!(next(&mut stream).await.seq, 1);

    let running = server.running.as_ref().unwrap();
    running.shutdown();
    let end = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("stream ends promptly");
    match end {
        Err(status) => assert_eq!(status.code(), tonic::Code::Unavailable),
        Ok(other) => panic!("expected UNAVAILABLE, got {other:?}"),
    }
    let dir = server.stop().await;
    let config = test_config(&dir);
    let restarted = TestServer::start_in(dir, config).await;
    push(
        &restarted,
        &new_call("in", "492111234567", "4930600000000", "s2"),
    )
    .await;
    let seqs: Vec<u64> = restarted.all_events().await.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2]);
}
