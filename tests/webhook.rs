//! End to end: sipgate's pushes in, Zammad-identical XML out; the webhook
//! listener's checks (token, Basic auth, signature, source address) and health.

mod common;

use common::*;
use sipgate_sidecar::{config::SignatureMode, proto};

#[tokio::test]
async fn unblocked_inbound_call_gets_the_plain_response_with_callbacks() {
    let server = TestServer::start().await;
    let reply = server
        .post(
            "/api/v1/sipgate/in",
            &new_call("in", "492111234567", "4930600000000", "c1"),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.content_type, "application/xml; charset=UTF-8");
    let callback = format!("{}/api/v1/sipgate/in", server.http);
    assert_eq!(reply.body, plain_reply(&callback));
}

#[tokio::test]
async fn blocked_caller_is_rejected_busy_and_settings_apply_to_the_next_webhook() {
    let server = TestServer::start_with(|c| {
        c.public_url = Some("https://pbx.example.com".into());
    })
    .await;
    let body = new_call("in", "4930123456", "4930600000000", "b1");
    let before = server.post("/api/v1/sipgate/in", &body).await;
    assert!(!before.body.contains("Reject"), "{}", before.body);

    // Typed the way an admin writes it; sipgate sends 4930123456.
    server
        .settings()
        .await
        .add_block_entry(proto::AddBlockEntryRequest {
            pattern: "+49 30 123456".into(),
            note: "spam".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    let reply = server
        .post(
            "/api/v1/sipgate/in",
            &new_call("in", "4930123456", "4930600000000", "b2"),
        )
        .await;
    assert_eq!(reply.status, 200);
    let url = "https://pbx.example.com/api/v1/sipgate/in";
    assert_eq!(
        reply.body,
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response onHangup=\"{url}\" onAnswer=\"{url}\">\n  <Reject reason=\"busy\"/>\n</Response>\n"
        )
    );

    // Removing it takes effect on the next call too.
    server
        .settings()
        .await
        .remove_block_entry(proto::RemoveBlockEntryRequest {
            pattern: "030 123456".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let after = server
        .post(
            "/api/v1/sipgate/in",
            &new_call("in", "4930123456", "4930600000000", "b3"),
        )
        .await;
    assert_eq!(after.body, plain_reply(url));
}

#[tokio::test]
async fn prefix_and_anonymous_block_entries() {
    let server = TestServer::start().await;
    let mut settings = server.settings().await;
    for (pattern, note) in [
        ("0171*", "mobile spam range"),
        ("anonymous", "hidden callers"),
    ] {
        settings
            .add_block_entry(proto::AddBlockEntryRequest {
                pattern: pattern.into(),
                note: note.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let hidden = server
        .post(
            "/api/v1/sipgate/in",
            &new_call("in", "anonymous", "4930600000000", "a1"),
        )
        .await;
    assert!(
        hidden.body.contains("<Reject reason=\"busy\"/>"),
        "{}",
        hidden.body
    );
    let ranged = server
        .post(
            "/api/v1/sipgate/in",
            &new_call("in", "491711234567", "4930600000000", "a2"),
        )
        .await;
    assert!(
        ranged.body.contains("<Reject reason=\"busy\"/>"),
        "{}",
        ranged.body
    );
    let other = server
        .post(
            "/api/v1/sipgate/in",
            &new_call("in", "491721234567", "4930600000000", "a3"),
        )
        .await;
    assert!(!other.body.contains("Reject"), "{}", other.body);
    // Outbound calls are never blocked.
    let outbound = server
        .post(
            "/api/v1/sipgate/out",
            &new_call("out", "anonymous", "491711234567", "a4"),
        )
        .await;
    assert!(!outbound.body.contains("Reject"), "{}", outbound.body);
}

#[tokio::test]
async fn outbound_calls_get_the_routed_or_default_caller_id() {
    let server = TestServer::start_with(|c| {
        c.public_url = Some("https://pbx.example.com/".into());
        c.webhook_token = Some(sipgate_sidecar::config::Secret::new("tok3n"));
    })
    .await;
    let mut settings = server.settings().await;
    settings
        .add_routing_rule(proto::AddRoutingRuleRequest {
            dest: "4912347114711".into(),
            caller_id: "4930777000001".into(),
            note: "exact".into(),
            position: None,
            ..Default::default()
        })
        .await
        .unwrap();
    settings
        .add_routing_rule(proto::AddRoutingRuleRequest {
            dest: "+41*".into(),
            caller_id: "+41 44 000 00 00".into(),
            note: "switzerland".into(),
            position: None,
            ..Default::default()
        })
        .await
        .unwrap();
    let url = "https://pbx.example.com/api/v1/sipgate/tok3n/out";
    let dial = |caller: &str, number: &str| {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response onHangup=\"{url}\" onAnswer=\"{url}\">\n  <Dial callerId=\"{caller}\">\n    <Number>{number}</Number>\n  </Dial>\n</Response>\n"
        )
    };

    let exact = server
        .post(
            "/api/v1/sipgate/tok3n/out",
            &new_call("out", "4930600000000", "4912347114711", "o1"),
        )
        .await;
    assert_eq!(exact.status, 200);
    assert_eq!(exact.body, dial("4930777000001", "4912347114711"));

    let pattern = server
        .post(
            "/api/v1/sipgate/tok3n/out",
            &new_call("out", "4930600000000", "41441234567", "o2"),
        )
        .await;
    assert_eq!(pattern.body, dial("41440000000", "41441234567"));

    // No rule and no default: the plain response.
    let none = server
        .post(
            "/api/v1/sipgate/tok3n/out",
            &new_call("out", "4930600000000", "33123456789", "o3"),
        )
        .await;
    assert_eq!(none.body, plain_reply(url));

    settings
        .set_default_caller_id(proto::SetDefaultCallerIdRequest {
            caller_id: "030 777 000 000".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let default = server
        .post(
            "/api/v1/sipgate/tok3n/out",
            &new_call("out", "4930600000000", "33123456789", "o4"),
        )
        .await;
    assert_eq!(default.body, dial("4930777000000", "33123456789"));

    // `direction` decides, not the path segment: an outbound push to /in.
    let via_in = server
        .post(
            "/api/v1/sipgate/tok3n/in",
            &new_call("out", "4930600000000", "4912347114711", "o5"),
        )
        .await;
    assert_eq!(via_in.body, dial("4930777000001", "4912347114711"));
}

#[tokio::test]
async fn answer_and_hangup_get_an_empty_response_and_dtmf_keeps_the_callbacks() {
    let server = TestServer::start().await;
    server
        .post(
            "/api/v1/sipgate/in",
            &new_call("in", "492111234567", "4930600000000", "d1"),
        )
        .await;
    let answered = server
        .post("/api/v1/sipgate/in", &answer("in", "d1", "Alice"))
        .await;
    assert_eq!(answered.status, 200);
    assert_eq!(
        answered.body,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response/>\n"
    );
    let dtmf = server
        .post(
            "/api/v1/sipgate/in",
            &form(&[("event", "dtmf"), ("dtmf", "0815"), ("callId", "d1")]),
        )
        .await;
    assert_eq!(dtmf.status, 200);
    assert_eq!(
        dtmf.body,
        plain_reply(&format!("{}/api/v1/sipgate/in", server.http))
    );
    let hung_up = server
        .post("/api/v1/sipgate/in", &hangup("in", "d1", "normalClearing"))
        .await;
    assert_eq!(hung_up.status, 200);
    assert!(hung_up.body.contains("<Response/>"));
}

#[tokio::test]
async fn real_signed_push_passes_and_a_changed_byte_is_refused() {
    let server = TestServer::start_with(|c| c.signature = SignatureMode::Require).await;
    let body = std::fs::read("tests/fixtures/sipgate-vector-1.body").unwrap();
    let signature = std::fs::read_to_string("tests/fixtures/sipgate-vector-1.sig").unwrap();
    let signature = signature.trim();

    let ok = server
        .post_with(
            "/api/v1/sipgate/in",
            body.clone(),
            &[("x-sipgate-signature", signature)],
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(ok.body.contains("onAnswer"), "{}", ok.body);

    let mut tampered = body.clone();
    let at = tampered.iter().position(|b| *b == b'7').unwrap();
    tampered[at] = b'8';
    let refused = server
        .post_with(
            "/api/v1/sipgate/in",
            tampered,
            &[("x-sipgate-signature", signature)],
        )
        .await;
    assert_eq!(refused.status, 401);
    assert!(refused.body.contains("<Error>"), "{}", refused.body);

    let unsigned = server.post_with("/api/v1/sipgate/in", body, &[]).await;
    assert_eq!(unsigned.status, 401);
    assert!(
        unsigned.body.contains("X-Sipgate-Signature"),
        "{}",
        unsigned.body
    );
    assert_eq!(server.head_seq().await, 1, "only the valid push was stored");
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let server = TestServer::start_with(|c| {
        c.webhook_token = Some(sipgate_sidecar::config::Secret::new("right"));
        c.body_limit = 4096;
    })
    .await;
    let good = new_call("in", "492111234567", "4930600000000", "ok1");
    /// path, body, content type, expected status, words the reason must contain
    type Case<'a> = (&'a str, Vec<u8>, Option<&'a str>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "/api/v1/sipgate/wrong/in",
            good.clone().into(),
            None,
            401,
            "wrong webhook token",
        ),
        (
            "/api/v1/sipgate/in",
            good.clone().into(),
            None,
            401,
            "token missing",
        ),
        (
            "/api/v1/sipgate/right/in",
            vec![b'a'; 5000],
            None,
            413,
            "larger than",
        ),
        (
            "/api/v1/sipgate/right/in",
            good.clone().into(),
            Some("application/json"),
            400,
            "not application/x-www-form-urlencoded",
        ),
        (
            "/api/v1/sipgate/right/in",
            b"event=newCall&from=%FF%FE&callId=x&direction=in".to_vec(),
            None,
            400,
            "UTF-8",
        ),
        (
            "/api/v1/sipgate/right/in",
            b"event=newCall&callId=%ZZ".to_vec(),
            None,
            400,
            "percent",
        ),
        (
            "/api/v1/sipgate/right/in",
            form(&[("direction", "in"), ("callId", "x")]).into(),
            None,
            400,
            "event",
        ),
        (
            "/api/v1/sipgate/right/in",
            form(&[("event", "ringing"), ("callId", "x")]).into(),
            None,
            400,
            "ringing",
        ),
        (
            "/api/v1/sipgate/right/in",
            form(&[
                ("event", "newCall"),
                ("direction", "sideways"),
                ("callId", "x"),
            ])
            .into(),
            None,
            400,
            "sideways",
        ),
        (
            "/api/v1/sipgate/right/in",
            form(&[("event", "newCall"), ("callId", "x")]).into(),
            None,
            400,
            "direction",
        ),
        (
            "/api/v1/sipgate/right/in",
            form(&[("event", "newCall"), ("direction", "in")]).into(),
            None,
            400,
            "callId",
        ),
        (
            "/api/v1/sipgate/right/in",
            form(&[("event", "hangup"), ("callId", "")]).into(),
            None,
            400,
            "callId",
        ),
    ];
    for (path, body, content_type, status, reason) in cases {
        let headers: Vec<(&str, &str)> = content_type
            .map(|c| ("content-type", c))
            .into_iter()
            .collect();
        let reply = server.post_with(path, body, &headers).await;
        assert_eq!(reply.status, status, "{path} {reason}: {}", reply.body);
        assert!(
            reply.content_type.starts_with("application/xml"),
            "{}",
            reply.content_type
        );
        assert!(
            reply.body.contains("<Response>\n  <Error>"),
            "{}",
            reply.body
        );
        assert!(
            reply.body.contains(reason),
            "expected '{reason}' in {}",
            reply.body
        );
    }
    assert_eq!(server.head_seq().await, 0, "no bad request stored anything");

    // dtmf carries no direction and is fine; an unknown path segment is a 404.
    let dtmf = server
        .post(
            "/api/v1/sipgate/right/out",
            &form(&[("event", "dtmf"), ("callId", "x")]),
        )
        .await;
    assert_eq!(dtmf.status, 200);
    let sideways = server.post("/api/v1/sipgate/right/sideways", &good).await;
    assert_eq!(sideways.status, 404);
}

#[tokio::test]
async fn basic_auth_challenges_first_like_sipgate_expects() {
    let server = TestServer::start_with(|c| {
        c.basic_auth = Some(sipgate_sidecar::config::BasicAuth {
            user: "sipgate".into(),
            password: sipgate_sidecar::config::Secret::new("pw"),
        });
    })
    .await;
    let body = new_call("in", "492111234567", "4930600000000", "ba1");
    let challenged = server.post("/api/v1/sipgate/in", &body).await;
    assert_eq!(challenged.status, 401);
    assert_eq!(
        challenged.www_authenticate.as_deref(),
        Some("Basic realm=\"sipgate-sidecar\"")
    );
    // base64("sipgate:pw")
    let ok = server
        .post_with(
            "/api/v1/sipgate/in",
            body.into(),
            &[("authorization", "Basic c2lwZ2F0ZTpwdw==")],
        )
        .await;
    assert_eq!(ok.status, 200);
    // The follow-up URLs carry the credentials so answer/hangup pass too.
    let port = server.http.rsplit(':').next().unwrap();
    assert!(
        ok.body.contains(&format!(
            "http://sipgate:pw@127.0.0.1:{port}/api/v1/sipgate/in"
        )),
        "{}",
        ok.body
    );
}

#[tokio::test]
async fn source_allowlist_uses_the_tcp_peer() {
    let refused = TestServer::start_with(|c| {
        c.allow_sources = vec!["217.116.118.254/32".parse().unwrap()];
    })
    .await;
    let body = new_call("in", "492111234567", "4930600000000", "ip1");
    // A spoofed X-Forwarded-For from an untrusted peer does not help: the
    // connection is closed when it is accepted, before the request is read.
    let sent = refused
        .client
        .post(format!("{}/api/v1/sipgate/in", refused.http))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-forwarded-for", "217.116.118.254")
        .body(body.clone())
        .send()
        .await;
    assert!(sent.is_err(), "no answer to a stranger: {sent:?}");
    let stats = refused.running.as_ref().unwrap().webhook_connections();
    assert!(stats.forbidden() >= 1);
    assert_eq!(refused.head_seq().await, 0, "nothing stored");

    let allowed = TestServer::start_with(|c| {
        c.allow_sources = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    assert_eq!(allowed.post("/api/v1/sipgate/in", &body).await.status, 200);
}

#[tokio::test]
async fn health_endpoints_answer() {
    let server = TestServer::start().await;
    for path in ["/healthz", "/readyz"] {
        let response = server
            .client
            .get(format!("{}{path}", server.http))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
}

/// Invisible characters and Unicode look-alikes in `from` (RLM, ZWSP, BOM,
/// fullwidth or Arabic-Indic digits, a stray letter) never let a variant of
/// a blocked number through; other callers still pass.
#[tokio::test]
async fn look_alike_variants_of_a_blocked_number_are_rejected_too() {
    let server = TestServer::start().await;
    server
        .settings()
        .await
        .add_block_entry(proto::AddBlockEntryRequest {
            pattern: "4930123456".into(),
            note: String::new(),
            ..Default::default()
        })
        .await
        .unwrap();
    let variants = [
        "4930123456",
        "\u{200F}4930123456",
        "4930\u{200B}123456",
        "\u{FEFF}4930123456\u{200E}",
        "\u{FF14}\u{FF19}\u{FF13}\u{FF10}\u{FF11}\u{FF12}\u{FF13}\u{FF14}\u{FF15}\u{FF16}",
        "\u{664}\u{669}\u{663}\u{660}123456",
        "+49 30\u{3000}123456",
        "\u{FF0B}4930123456",
        "49301234x56",
        "0049\u{2060}30123456",
    ];
    for (i, from) in variants.iter().enumerate() {
        let reply = server
            .post(
                "/api/v1/sipgate/in",
                &new_call("in", from, "4921199999", &format!("la{i}")),
            )
            .await;
        assert_eq!(reply.status, 200);
        assert!(
            reply.body.contains("<Reject reason=\"busy\"/>"),
            "{from:?} got through: {}",
            reply.body
        );
    }
    let other = server
        .post(
            "/api/v1/sipgate/in",
            &new_call("in", "\u{200F}4930999999", "4921199999", "la-other"),
        )
        .await;
    assert!(!other.body.contains("Reject"), "{}", other.body);
    server.stop().await;
}
