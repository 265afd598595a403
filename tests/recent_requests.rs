//! The recent-requests view (gRPC `Diagnostics` and `sipgate-sidecar
//! requests`): what an operator looks at when a call was not blocked.

mod common;

use common::*;
use sipgate_sidecar::{
    config::{BasicAuth, Secret},
    proto::{self, diagnostics_client::DiagnosticsClient},
};

const TOKEN: &str = "path-t0ken";

async fn recent(server: &TestServer, limit: u32) -> proto::ListRecentRequestsResponse {
    DiagnosticsClient::new(server.channel().await)
        .list_recent_requests(proto::ListRecentRequestsRequest { limit })
        .await
        .expect("ListRecentRequests")
        .into_inner()
}

/// A server with a path token and one block entry; a push with a wrong
/// token, one with a form sipgate never sends, and a blocked caller's newCall.
async fn server_with_three_pushes() -> TestServer {
    let server =
        TestServer::start_with(|c| c.webhook_token = Some(Secret::new(TOKEN.to_string()))).await;
    server
        .settings()
        .await
        .add_block_entry(proto::AddBlockEntryRequest {
            pattern: "+49 211 1234567".into(),
            note: "spam".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let wrong_token = server
        .post(
            "/api/v1/sipgate/not-the-token/in",
            &new_call("in", "492111234567", "4930600000000", "r1"),
        )
        .await;
    assert_eq!(wrong_token.status, 401);
    let bad_form = server
        .post(
            &format!("/api/v1/sipgate/{TOKEN}/in"),
            "event=ringing&callId=r0",
        )
        .await;
    assert_eq!(bad_form.status, 400);
    let blocked = server
        .post(
            &format!("/api/v1/sipgate/{TOKEN}/in"),
            &new_call("in", "492111234567", "4930600000000", "r2"),
        )
        .await;
    assert_eq!(blocked.status, 200);
    assert!(blocked.body.contains("<Reject reason=\"busy\"/>"));
    server
}

#[tokio::test]
async fn refused_and_accepted_pushes_are_listed_newest_first() {
    let server = server_with_three_pushes().await;
    let response = recent(&server, 0).await;
    assert_eq!(response.capacity, 100);
    let requests = response.requests;
    assert_eq!(requests.len(), 3, "{requests:#?}");

    // Newest first: the blocked newCall.
    let blocked = &requests[0];
    assert_eq!(blocked.status, 200);
    assert_eq!(blocked.outcome, "accepted");
    assert_eq!(blocked.reason, "");
    assert_eq!(blocked.method, "POST");
    assert_eq!(blocked.path, "/api/v1/sipgate/<redacted>/in");
    assert_eq!(blocked.kind(), proto::EventKind::NewCall);
    assert_eq!(blocked.direction(), proto::Direction::In);
    assert_eq!(
        (
            blocked.call_id.as_str(),
            blocked.from.as_str(),
            blocked.to.as_str()
        ),
        ("r2", "492111234567", "4930600000000")
    );
    let decision = blocked.decision.as_ref().expect("a newCall has a decision");
    assert_eq!(decision.action(), proto::Action::Reject);
    assert_eq!(decision.rule_pattern, "492111234567");
    assert!(
        decision.explanation.contains("spam"),
        "{}",
        decision.explanation
    );
    assert!(
        blocked.reply.contains("<Reject reason=\"busy\"/>"),
        "{}",
        blocked.reply
    );
    assert!(!blocked.reply_truncated && !blocked.duplicate);
    assert!(blocked.seq > 0, "a stored event has its seq");
    assert!(blocked.remote_addr.starts_with("127.0.0.1:"), "{blocked:?}");
    assert!(blocked.received_at_ms > 0 && blocked.duration_us > 0);

    // The form with an event sipgate never sends: refused after the body
    // was read, so the call ID shows.
    let bad_form = &requests[1];
    assert_eq!(bad_form.status, 400);
    assert_eq!(bad_form.outcome, "bad_request");
    assert!(bad_form.reason.contains("ringing"), "{}", bad_form.reason);
    assert_eq!(bad_form.call_id, "r0");
    assert!(
        bad_form.reply.contains("<Error>unknown event"),
        "{bad_form:?}"
    );
    assert_eq!((bad_form.seq, bad_form.decision.is_none()), (0, true));

    // The wrong token: refused before the body was read.
    let wrong_token = &requests[2];
    assert_eq!(wrong_token.status, 401);
    assert_eq!(wrong_token.outcome, "unauthorized");
    assert_eq!(wrong_token.reason, "wrong webhook token");
    assert!(wrong_token.reply.contains("wrong webhook token"));
    assert_eq!(wrong_token.path, "/api/v1/sipgate/<redacted>/in");
    assert_eq!(wrong_token.kind(), proto::EventKind::Unspecified);
    assert_eq!((wrong_token.call_id.as_str(), wrong_token.seq), ("", 0));

    for r in &requests {
        assert!(!format!("{r:?}").contains(TOKEN), "{r:?}");
    }

    let newest = recent(&server, 1).await.requests;
    assert_eq!(newest.len(), 1);
    assert_eq!(newest[0].call_id, "r2");
    server.stop().await;
}

#[tokio::test]
async fn a_replayed_push_is_listed_as_a_duplicate_with_the_original_seq() {
    let server = TestServer::start().await;
    let push = new_call("in", "492111234567", "4930600000000", "d1");
    server.post("/api/v1/sipgate/in", &push).await;
    server.post("/api/v1/sipgate/in", &push).await;
    let requests = recent(&server, 0).await.requests;
    assert_eq!(requests.len(), 2);
    let (replay, original) = (&requests[0], &requests[1]);
    assert!(replay.duplicate && !original.duplicate);
    assert_eq!(replay.outcome, "duplicate");
    assert_eq!(replay.seq, original.seq);
    assert_eq!(replay.reply, original.reply);
    assert_eq!(
        replay.decision.as_ref().map(|d| d.action()),
        Some(proto::Action::Accept)
    );
    server.stop().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_listed_with_its_refusal() {
    let server = TestServer::start_with(|c| c.body_limit = 1024).await;
    let reply = server.post("/api/v1/sipgate/in", &"x".repeat(4096)).await;
    assert_eq!(reply.status, 413);
    let requests = recent(&server, 0).await.requests;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].status, 413);
    assert_eq!(requests[0].outcome, "too_large");
    assert_eq!(requests[0].reason, "body larger than 1024 bytes");
    assert!(requests[0].reply.contains("body larger than 1024 bytes"));
    server.stop().await;
}

#[tokio::test]
async fn zero_recent_requests_records_nothing() {
    let server = TestServer::start_with(|c| c.recent_requests = 0).await;
    server
        .post(
            "/api/v1/sipgate/in",
            &new_call("in", "492111234567", "4930600000000", "z1"),
        )
        .await;
    let response = recent(&server, 0).await;
    assert_eq!(response.capacity, 0);
    assert!(response.requests.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn the_requests_command_prints_them_as_json_and_text() {
    let server = server_with_three_pushes().await;
    let run = |args: &'static [&'static str]| {
        let grpc = server.grpc.clone();
        async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sipgate-sidecar"))
                .args(args)
                .args(["--server", &grpc])
                .output()
                .await
                .expect("binary runs");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        }
    };

    let json = run(&["requests", "--json"]).await;
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 3, "{json}");
    assert_eq!(lines[0]["status"], 200);
    assert_eq!(lines[0]["event"], "newCall");
    assert_eq!(lines[0]["decision"]["action"], "reject");
    assert_eq!(lines[0]["path"], "/api/v1/sipgate/<redacted>/in");
    assert!(lines[0]["seq"].as_u64().unwrap() > 0);
    assert_eq!(lines[2]["status"], 401);
    assert_eq!(lines[2]["reason"], "wrong webhook token");
    assert_eq!(lines[2]["event"], serde_json::Value::Null);
    assert!(!json.contains(TOKEN), "{json}");

    let text = run(&["requests", "--limit", "2"]).await;
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 3, "a header and two requests: {text}");
    assert!(rows[1].contains("rejected (busy)"), "{text}");
    assert!(rows[2].contains("refused: "), "{text}");
    assert!(!text.contains(TOKEN), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn basic_credentials_and_the_token_never_show_in_the_reply() {
    let server = TestServer::start_with(|c| {
        c.webhook_token = Some(Secret::new(TOKEN.to_string()));
        c.basic_auth = Some(BasicAuth {
            user: "sipgate".into(),
            password: Secret::new("basic-pw-1"),
        });
    })
    .await;
    let push = new_call("in", "492111234567", "4930600000000", "b1");
    let path = format!("/api/v1/sipgate/{TOKEN}/in");
    // "sipgate:basic-pw-1"
    let credentials = [("authorization", "Basic c2lwZ2F0ZTpiYXNpYy1wdy0x")];
    let reply = server
        .post_with(&path, push.as_bytes().to_vec(), &credentials)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    // The callback URLs sipgate gets carry both secrets.
    assert!(
        reply.body.contains("sipgate:basic%2Dpw%2D1@") && reply.body.contains(TOKEN),
        "{}",
        reply.body
    );
    let without = server.post(&path, &push).await;
    assert_eq!(without.status, 401);

    let requests = recent(&server, 0).await.requests;
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].outcome, "basic_auth_required");
    let answered = &requests[1];
    // "<redacted>" in an XML attribute.
    assert!(
        answered.reply.contains("://&lt;redacted&gt;@127.0.0.1:")
            && answered
                .reply
                .contains("/api/v1/sipgate/&lt;redacted&gt;/in\""),
        "{}",
        answered.reply
    );
    for r in &requests {
        let shown = format!("{r:?}");
        assert!(
            !shown.contains("basic-pw")
                && !shown.contains("basic%2Dpw")
                && !shown.contains(TOKEN)
                && !shown.contains("c2lw"),
            "{shown}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_shown() {
    let server = TestServer::start_with(|c| {
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let push = new_call("in", "492111234567", "4930600000000", "p1");
    let reply = server
        .post_with(
            "/api/v1/sipgate/in",
            push.into_bytes(),
            &[("x-forwarded-for", "217.116.118.254")],
        )
        .await;
    assert_eq!(reply.status, 200);
    let requests = recent(&server, 0).await.requests;
    assert!(
        requests[0]
            .remote_addr
            .starts_with("217.116.118.254 via 127.0.0.1:"),
        "{}",
        requests[0].remote_addr
    );
    server.stop().await;
}

#[tokio::test]
async fn a_flood_of_refused_requests_does_not_push_sipgates_pushes_out_of_view() {
    let server = TestServer::start_with(|c| c.recent_requests = 10).await;
    for i in 0..3 {
        let reply = server
            .post(
                "/api/v1/sipgate/in",
                &new_call("in", "492111234567", "4930600000000", &format!("kept-{i}")),
            )
            .await;
        assert_eq!(reply.status, 200);
    }
    // 300 requests to paths that do not exist, as a scanner sends them.
    for i in 0..300 {
        let reply = server
            .post(&format!("/api/v1/sipgate/nope-{i}/x/y"), "event=newCall")
            .await;
        assert_eq!(reply.status, 404);
    }
    let listed = recent(&server, 0).await.requests;
    let kept: Vec<&str> = listed
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.call_id.as_str())
        .collect();
    assert_eq!(kept, ["kept-2", "kept-1", "kept-0"]);
    assert_eq!(listed.iter().filter(|r| r.status == 404).count(), 10);
    // Newest first across both.
    assert_eq!(listed[0].status, 404);
}
