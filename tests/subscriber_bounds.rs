//! End to end: memory and size bounds of the event stream. `ListEvents`
//! answers stay under the 4 MiB a gRPC client accepts by default however
//! large the events, subscribers are capped (RESOURCE_EXHAUSTED), and an
//! error quotes only a short excerpt of a huge client value.
//!
//! The memory of a subscriber storm is measured by the benchmark, not here:
//! `cargo bench --bench sidecar -- --only storm`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use prost::Message as _;
use sipgate_sidecar::proto::{
    self, call_events_client::CallEventsClient, call_log_client::CallLogClient,
};
use tonic::{Code, transport::Channel};

/// The largest message a tonic client decodes unless told otherwise.
const CLIENT_DEFAULT_LIMIT: usize = 4 * 1024 * 1024;

/// A newCall whose raw form carries a `padding` field of `bytes` bytes.
fn large_call(call_id: &str, bytes: usize) -> String {
    let padding = "x".repeat(bytes);
    form(&[
        ("event", "newCall"),
        ("direction", "in"),
        ("from", "492111234567"),
        ("to", "4930600000000"),
        ("callId", call_id),
        ("user[]", "Alice Agent"),
        ("padding", &padding),
    ])
}

/// Pushes `n` large events to `http` (a base URL), eight at a time, with
/// call ids `{prefix}0`, `{prefix}1`, ... (a repeated newCall is not stored twice).
async fn push_large(http: &str, prefix: &str, n: usize, bytes: usize) {
    let client = reqwest::Client::new();
    let mut pending = futures::stream::FuturesUnordered::new();
    for i in 0..n {
        let body = large_call(&format!("{prefix}{i}"), bytes);
        let request = client
            .post(format!("{http}/api/v1/sipgate/in"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send();
        pending.push(request);
        if pending.len() >= 8 {
            let reply = futures::StreamExt::next(&mut pending)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(reply.status(), 200);
        }
    }
    while let Some(reply) = futures::StreamExt::next(&mut pending).await {
        assert_eq!(reply.unwrap().status(), 200);
    }
}

async fn start_large() -> TestServer {
    TestServer::start_with(|c| c.body_limit = 256 * 1024).await
}

#[tokio::test]
async fn list_events_with_large_events_stays_under_4_mb_and_pages_through_all() {
    let server = start_large().await;
    // 100 events of ~60 KB: 6 MB, more than a client takes in one answer.
    push_large(&server.http, "a", 100, 60_000).await;

    let mut client = server.events().await;
    let mut after = 0;
    let mut seqs = Vec::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_events(proto::ListEventsRequest {
                after_seq: after,
                limit: 1000,
                ..Default::default()
            })
            .await
            .expect("the answer fits the client's default 4 MiB")
            .into_inner();
        assert!(page.encoded_len() < CLIENT_DEFAULT_LIMIT);
        assert_eq!(page.head_seq, 100);
        if page.events.is_empty() {
            assert_eq!(page.next_after_seq, after);
            break;
        }
        pages += 1;
        assert!(page.events.len() < 100, "a page of {}", page.events.len());
        assert_eq!(page.next_after_seq, page.events.last().unwrap().seq);
        assert!(page.events.iter().all(|e| {
            e.raw_form
                .iter()
                .any(|f| f.key == "padding" && f.value.len() == 60_000)
        }));
        seqs.extend(page.events.iter().map(|e| e.seq));
        after = page.next_after_seq;
    }
    assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
    assert!(pages >= 2, "{pages} pages");
}

#[tokio::test]
async fn a_subscriber_from_zero_gets_every_large_event_in_order() {
    let server = start_large().await;
    push_large(&server.http, "a", 60, 60_000).await;
    let mut stream = server
        .events()
        .await
        .subscribe(proto::SubscribeRequest {
            after_seq: Some(0),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let pushing = tokio::spawn({
        let http = server.http.clone();
        async move { push_large(&http, "b", 20, 60_000).await }
    });
    for seq in 1..=80 {
        let event = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .expect("an event within 20 s")
            .unwrap()
            .unwrap();
        assert_eq!(event.seq, seq);
    }
    pushing.await.unwrap();
}

async fn open_subscription(
    client: &mut CallEventsClient<Channel>,
) -> Result<tonic::Streaming<proto::CallEvent>, tonic::Status> {
    client
        .subscribe(proto::SubscribeRequest {
            after_seq: Some(0),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn subscribers_beyond_the_cap_are_refused_until_one_leaves() {
    let server = TestServer::start_with(|c| c.max_subscribers = 2).await;
    let mut a_client = server.events().await;
    let a = open_subscription(&mut a_client).await.unwrap();
    let _b = open_subscription(&mut server.events().await).await.unwrap();

    let status = open_subscription(&mut server.events().await)
        .await
        .expect_err("a third subscriber is refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        status.message(),
        "the sidecar already serves 2 event subscribers, its limit (--max-subscribers); \
         try again later"
    );
    // Unary calls are not subscribers.
    assert_eq!(server.head_seq().await, 0);

    // Once one leaves (the server notices the reset), there is room again.
    drop(a);
    drop(a_client);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut client = server.events().await;
    loop {
        match open_subscription(&mut client).await {
            Ok(_) => break,
            Err(status) if status.code() == Code::ResourceExhausted => {
                assert!(
                    Instant::now() < deadline,
                    "no room 10 s after a subscriber left"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    }
}

#[tokio::test]
async fn a_huge_client_value_is_quoted_as_a_short_excerpt() {
    let server = TestServer::start().await;
    let huge = "9".repeat(3 * 1024 * 1024);
    let short = |status: tonic::Status, code: Code| {
        assert_eq!(
            status.code(),
            code,
            "{}",
            &status.message()[..200.min(status.message().len())]
        );
        assert!(
            status.message().len() < 300,
            "a message of {} bytes",
            status.message().len()
        );
        assert!(
            status.message().contains(&"9".repeat(60)),
            "{}",
            status.message()
        );
        assert!(status.message().contains("…"), "{}", status.message());
    };

    let mut events = server.events().await;
    let status = events
        .subscribe(proto::SubscribeRequest {
            numbers: vec![huge.clone()],
            ..Default::default()
        })
        .await
        .expect_err("refused");
    short(status, Code::InvalidArgument);

    let mut calls: CallLogClient<Channel> = server.calls().await;
    let status = calls
        .list_calls(proto::ListCallsRequest {
            number: format!("abc{huge}"),
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert!(
        status.message().starts_with("number filter: 'abc999"),
        "{}",
        &status.message()[..80]
    );
    short(status, Code::InvalidArgument);
    let status = calls
        .get_call(proto::GetCallRequest {
            call_id: huge.clone(),
        })
        .await
        .expect_err("no such call");
    short(status, Code::NotFound);
    let status = calls
        .set_done(proto::SetDoneRequest {
            call_id: huge,
            done: true,
        })
        .await
        .expect_err("no such call");
    short(status, Code::NotFound);
}

#[tokio::test]
async fn list_calls_with_large_calls_stays_under_4_mb_and_pages_through_all() {
    let server = start_large().await;
    // 80 calls whose agent list is ~60 KB each: 4.8 MB of calls.
    let client = reqwest::Client::new();
    let agent = "A".repeat(60_000);
    for i in 0..80 {
        let body = form(&[
            ("event", "newCall"),
            ("direction", "in"),
            ("from", "492111234567"),
            ("to", "4930600000000"),
            ("callId", &format!("big-{i:02}")),
            ("user[]", &agent),
        ]);
        let reply = client
            .post(format!("{}/api/v1/sipgate/in", server.http))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200);
    }
    let mut calls = server.calls().await;
    let mut token = String::new();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = calls
            .list_calls(proto::ListCallsRequest {
                limit: 1000,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("the answer fits the client's default 4 MiB")
            .into_inner();
        assert!(page.encoded_len() < CLIENT_DEFAULT_LIMIT);
        pages += 1;
        assert!(page.calls.iter().all(|c| c.users == [agent.clone()]));
        seen.extend(page.calls.into_iter().map(|c| c.call_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut expected: Vec<String> = (0..80).map(|i| format!("big-{i:02}")).collect();
    seen.sort();
    expected.sort();
    assert_eq!(seen, expected, "every call once");
    assert!(pages >= 2, "{pages} pages");
}
