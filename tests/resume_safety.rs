//! End to end: a resume point beyond the newest event (a cursor from before
//! a database restore, or from another database) is refused with
//! OUT_OF_RANGE naming the newest seq, for `Subscribe` and `ListEvents`;
//! the newest seq itself is a fine resume point.

mod common;

use std::time::Duration;

use common::*;
use sipgate_sidecar::proto;
use tonic::Code;

async fn push_calls(server: &TestServer, prefix: &str, n: usize) {
    for i in 0..n {
        let body = new_call(
            "in",
            "492111234567",
            "4930600000000",
            &format!("{prefix}{i}"),
        );
        let reply = server.post("/api/v1/sipgate/in", &body).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
}

async fn subscribe_status(server: &TestServer, after_seq: u64) -> tonic::Status {
    let mut client = server.events().await;
    let opened = client
        .subscribe(proto::SubscribeRequest {
            after_seq: Some(after_seq),
            ..Default::default()
        })
        .await;
    match opened {
        Err(status) => status,
        Ok(stream) => panic!("subscribe after {after_seq} accepted: {stream:?}"),
    }
}

async fn list_status(server: &TestServer, after_seq: u64) -> tonic::Status {
    server
        .events()
        .await
        .list_events(proto::ListEventsRequest {
            after_seq,
            limit: 10,
            ..Default::default()
        })
        .await
        .expect_err("list_events beyond the head is refused")
}

#[tokio::test]
async fn a_cursor_beyond_the_newest_event_is_refused_naming_it() {
    let server = TestServer::start().await;
    push_calls(&server, "c", 3).await;

    let status = subscribe_status(&server, 1200).await;
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert_eq!(
        status.message(),
        "after_seq 1200 is beyond the newest event (seq 3): this log was restored or \
         replaced; resume from 3 or earlier"
    );
    let status = list_status(&server, 4).await;
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("(seq 3)"), "{}", status.message());

    // An empty log: any resume point but 0 is beyond it.
    let empty = TestServer::start().await;
    let status = subscribe_status(&empty, 1).await;
    assert_eq!(status.code(), Code::OutOfRange);
    assert!(status.message().contains("(seq 0)"), "{}", status.message());
}

#[tokio::test]
async fn the_newest_seq_itself_is_a_fine_resume_point() {
    let server = TestServer::start().await;
    push_calls(&server, "c", 3).await;

    let page = server
        .events()
        .await
        .list_events(proto::ListEventsRequest {
            after_seq: 3,
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("after_seq == head is accepted")
        .into_inner();
    assert!(page.events.is_empty());
    assert_eq!((page.next_after_seq, page.head_seq), (3, 3));

    let mut stream = server
        .events()
        .await
        .subscribe(proto::SubscribeRequest {
            after_seq: Some(3),
            ..Default::default()
        })
        .await
        .expect("after_seq == head is accepted")
        .into_inner();
    push_calls(&server, "d", 1).await;
    let event = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an event within 10 s")
        .expect("stream healthy")
        .expect("stream open");
    assert_eq!(event.seq, 4);
}

#[tokio::test]
async fn a_cursor_from_before_a_restore_is_refused_not_skipped() {
    // The log a bridge followed up to seq 5 ...
    let before = TestServer::start().await;
    push_calls(&before, "old", 5).await;
    let cursor = before.head_seq().await;
    assert_eq!(cursor, 5);
    before.stop().await;

    // ... is replaced by an older backup holding 2 events; new calls would
    // get seqs 3, 4, 5, which that cursor says were delivered already.
    let restored = TestServer::start().await;
    push_calls(&restored, "backup", 2).await;
    let status = subscribe_status(&restored, cursor).await;
    assert_eq!(status.code(), Code::OutOfRange);
    assert!(
        status.message().contains("resume from 2 or earlier"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn resuming_at_the_head_while_it_moves_is_never_refused() {
    let server = TestServer::start().await;
    push_calls(&server, "a", 1).await;
    let pushing = {
        let http = server.http.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            for i in 0..40 {
                let body = new_call("in", "492111234567", "4930600000000", &format!("m{i}"));
                let reply = client
                    .post(format!("{http}/api/v1/sipgate/in"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(reply.status(), 200);
            }
        })
    };
    let mut client = server.events().await;
    while !pushing.is_finished() {
        let head = server.head_seq().await;
        client
            .subscribe(proto::SubscribeRequest {
                after_seq: Some(head),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("after_seq {head} refused: {e}"));
        client
            .list_events(proto::ListEventsRequest {
                after_seq: head,
                limit: 1,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("after_seq {head} refused: {e}"));
    }
    pushing.await.unwrap();
    assert_eq!(server.head_seq().await, 41);
}
