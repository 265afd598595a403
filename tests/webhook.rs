//! End to end: sipgate's pushes in, Zammad-identical XML out, settings over gRPC.

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
        })
        .await
        .unwrap();
    settings
        .add_routing_rule(proto::AddRoutingRuleRequest {
            dest: "+41*".into(),
            caller_id: "+41 44 000 00 00".into(),
            note: "switzerland".into(),
            position: None,
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
async fn zammad_config_round_trips_through_import_and_export() {
    let server = TestServer::start().await;
    let zammad = r#"{
      "inbound": {"block_caller_ids": [
        {"caller_id": "4930123456", "note": "spam"},
        {"caller_id": "anonymous", "note": "hidden"}
      ]},
      "outbound": {
        "routing_table": [
          {"dest": "4912347114711", "caller_id": "4930777000001", "note": "exact"},
          {"dest": "49*", "caller_id": "4930777000002", "note": "germany"}
        ],
        "default_caller_id": "4930777000000"
      },
      "user_remote_map": [{"remote_user_id": "w0", "user_id": "agent@example.com"}],
      "view_limit": 60
    }"#;
    let mut settings = server.settings().await;
    let imported = settings
        .import_zammad(proto::ImportZammadRequest {
            json: zammad.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(imported.block_list.len(), 2);
    assert_eq!(imported.routing_table[1].dest, "49*");
    assert_eq!(imported.default_caller_id, "4930777000000");

    let exported = settings
        .export_zammad(proto::ExportZammadRequest {})
        .await
        .unwrap()
        .into_inner()
        .json;
    let exported: serde_json::Value = serde_json::from_str(&exported).unwrap();
    let original: serde_json::Value = serde_json::from_str(zammad).unwrap();
    assert_eq!(exported["inbound"], original["inbound"]);
    assert_eq!(exported["outbound"], original["outbound"]);

    // And the imported rules decide calls.
    let routed = server
        .post(
            "/api/v1/sipgate/out",
            &new_call("out", "4930600000000", "4940123456", "z1"),
        )
        .await;
    assert!(
        routed.body.contains("callerId=\"4930777000002\""),
        "{}",
        routed.body
    );

    // Re-importing the export changes nothing but the version.
    let again = settings
        .import_zammad(proto::ImportZammadRequest {
            json: exported.to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.block_list, imported.block_list);
    assert_eq!(again.routing_table, imported.routing_table);
    assert_eq!(again.default_caller_id, imported.default_caller_id);
    assert!(again.version > imported.version);
}

#[tokio::test]
async fn evaluate_explains_the_decision_without_changing_anything() {
    let server = TestServer::start().await;
    let mut settings = server.settings().await;
    settings
        .add_routing_rule(proto::AddRoutingRuleRequest {
            dest: "49*".into(),
            caller_id: "4930777000002".into(),
            note: "germany".into(),
            position: None,
        })
        .await
        .unwrap();
    let version = settings
        .get_settings(proto::GetSettingsRequest {})
        .await
        .unwrap()
        .into_inner()
        .version;
    let result = settings
        .evaluate(proto::EvaluateRequest {
            direction: proto::Direction::Out.into(),
            from: "4930600000000".into(),
            to: "0221 1234567".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let decision = result.decision.unwrap();
    assert_eq!(decision.action(), proto::Action::SetCallerId);
    assert_eq!(decision.caller_id, "4930777000002");
    assert_eq!(decision.rule_kind(), proto::RuleKind::Route);
    assert_eq!(decision.rule_pattern, "49*");
    assert_eq!(decision.rule_index, 0);
    assert_eq!(result.normalized_to, "492211234567");
    assert!(!decision.explanation.is_empty());

    let missing_direction = settings
        .evaluate(proto::EvaluateRequest {
            direction: 0,
            from: "1".into(),
            to: "2".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing_direction.code(), tonic::Code::InvalidArgument);

    let after = settings
        .get_settings(proto::GetSettingsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.version, version);
    assert_eq!(server.head_seq().await, 0, "a dry run stores no event");
}

#[tokio::test]
async fn invalid_settings_are_refused_and_nothing_is_stored() {
    let server = TestServer::start().await;
    let mut settings = server.settings().await;
    let before = settings
        .get_settings(proto::GetSettingsRequest {})
        .await
        .unwrap()
        .into_inner();

    let cases = [
        settings
            .add_block_entry(proto::AddBlockEntryRequest {
                pattern: "12ab".into(),
                note: String::new(),
            })
            .await
            .unwrap_err(),
        settings
            .add_block_entry(proto::AddBlockEntryRequest {
                pattern: "".into(),
                note: String::new(),
            })
            .await
            .unwrap_err(),
        settings
            .add_routing_rule(proto::AddRoutingRuleRequest {
                dest: "49*".into(),
                caller_id: "anonymous".into(),
                note: String::new(),
                position: None,
            })
            .await
            .unwrap_err(),
        settings
            .add_routing_rule(proto::AddRoutingRuleRequest {
                dest: "".into(),
                caller_id: "4930777000000".into(),
                note: String::new(),
                position: None,
            })
            .await
            .unwrap_err(),
        settings
            .add_routing_rule(proto::AddRoutingRuleRequest {
                dest: "49*".into(),
                caller_id: "49*".into(),
                note: String::new(),
                position: None,
            })
            .await
            .unwrap_err(),
        settings
            .set_default_caller_id(proto::SetDefaultCallerIdRequest {
                caller_id: "not a number".into(),
            })
            .await
            .unwrap_err(),
        settings
            .import_zammad(proto::ImportZammadRequest {
                json: r#"{"inbound":{"block_caller_ids":[{"caller_id":"4930","note":""},{"caller_id":"x!","note":""}]}}"#.into(),
            })
            .await
            .unwrap_err(),
        settings
            .import_zammad(proto::ImportZammadRequest {
                json: "{not json".into(),
            })
            .await
            .unwrap_err(),
    ];
    for status in &cases {
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(!status.message().is_empty());
    }
    let not_found = settings
        .remove_block_entry(proto::RemoveBlockEntryRequest {
            pattern: "4999".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(not_found.code(), tonic::Code::NotFound);

    let after = settings
        .get_settings(proto::GetSettingsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after, before, "nothing was stored");
    let audit = settings
        .list_audit(proto::ListAuditRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(audit.entries.is_empty(), "{:?}", audit.entries);
}

#[tokio::test]
async fn routing_rules_can_be_inserted_and_reordered_and_changes_are_audited() {
    let server = TestServer::start().await;
    let mut settings = server.settings().await;
    for (dest, caller) in [("49*", "4930777000002"), ("4930*", "4930777000003")] {
        settings
            .add_routing_rule(proto::AddRoutingRuleRequest {
                dest: dest.into(),
                caller_id: caller.into(),
                note: String::new(),
                position: None,
            })
            .await
            .unwrap();
    }
    // 49* is first, so Berlin gets the German caller ID...
    let first = server
        .post(
            "/api/v1/sipgate/out",
            &new_call("out", "4930600000000", "4930123456", "r1"),
        )
        .await;
    assert!(
        first.body.contains("callerId=\"4930777000002\""),
        "{}",
        first.body
    );
    // ...until the more specific rule goes first.
    let reordered = settings
        .reorder_routing_table(proto::ReorderRoutingTableRequest {
            dests: vec!["4930*".into(), "49*".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reordered.routing_table[0].dest, "4930*");
    let second = server
        .post(
            "/api/v1/sipgate/out",
            &new_call("out", "4930600000000", "4930123456", "r2"),
        )
        .await;
    assert!(
        second.body.contains("callerId=\"4930777000003\""),
        "{}",
        second.body
    );

    let bad_order = settings
        .reorder_routing_table(proto::ReorderRoutingTableRequest {
            dests: vec!["49*".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(bad_order.code(), tonic::Code::InvalidArgument);

    let inserted = settings
        .add_routing_rule(proto::AddRoutingRuleRequest {
            dest: "41*".into(),
            caller_id: "41440000000".into(),
            note: "first".into(),
            position: Some(0),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(inserted.routing_table[0].dest, "41*");

    let audit = settings
        .list_audit(proto::ListAuditRequest::default())
        .await
        .unwrap()
        .into_inner();
    let actions: Vec<&str> = audit.entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        ["route.add", "route.reorder", "route.add", "route.add"]
    );
    assert!(
        audit.entries[0].client.contains("127.0.0.1"),
        "{:?}",
        audit.entries[0]
    );
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
    // A spoofed X-Forwarded-For from an untrusted peer does not help.
    let reply = refused
        .post_with(
            "/api/v1/sipgate/in",
            body.clone().into(),
            &[("x-forwarded-for", "217.116.118.254")],
        )
        .await;
    assert_eq!(reply.status, 403);
    assert!(reply.body.contains("127.0.0.1"), "{}", reply.body);

    let allowed = TestServer::start_with(|c| {
        c.allow_sources = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    assert_eq!(allowed.post("/api/v1/sipgate/in", &body).await.status, 200);
}

#[tokio::test]
async fn grpc_token_guards_every_call_including_health_and_reflection() {
    let server = TestServer::start_with(|c| {
        c.grpc_token = Some(sipgate_sidecar::config::Secret::new("let-me-in"));
    })
    .await;
    let denied = server
        .settings()
        .await
        .get_settings(proto::GetSettingsRequest {})
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::Unauthenticated);

    let channel = server.channel().await;
    let token: tonic::metadata::MetadataValue<_> = "Bearer let-me-in".parse().unwrap();
    let with_token = move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("authorization", token.clone());
        Ok(req)
    };
    let mut settings = proto::settings_client::SettingsClient::with_interceptor(
        channel.clone(),
        with_token.clone(),
    );
    assert!(
        settings
            .get_settings(proto::GetSettingsRequest {})
            .await
            .is_ok()
    );

    let mut health = tonic_health::pb::health_client::HealthClient::with_interceptor(
        channel.clone(),
        with_token.clone(),
    );
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "sidecar.v1.Settings".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    let mut unauthenticated_health = tonic_health::pb::health_client::HealthClient::new(channel);
    assert_eq!(
        unauthenticated_health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new()
            })
            .await
            .unwrap_err()
            .code(),
        tonic::Code::Unauthenticated
    );
}

#[tokio::test]
async fn reflection_lists_the_services_in_v1_and_v1alpha() {
    use tonic_reflection::pb::{v1, v1alpha};
    let server = TestServer::start().await;
    let channel = server.channel().await;

    let mut v1_client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut stream = v1_client
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = stream.message().await.unwrap().unwrap();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response.message_response
    else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for wanted in [
        "sidecar.v1.Settings",
        "sidecar.v1.CallEvents",
        "sidecar.v1.CallLog",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == wanted),
            "{wanted} missing from {names:?}"
        );
    }

    let mut alpha = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "sidecar.v1.Settings".into(),
            ),
        ),
    };
    let mut stream = alpha
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = stream.message().await.unwrap().unwrap();
    assert!(matches!(
        response.message_response,
        Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(_))
    ));
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

#[tokio::test]
async fn an_unusable_database_path_stops_start_with_the_path_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir);
    config.database = "/proc/sipgate-sidecar-test/nope.db".into();
    let error = match sipgate_sidecar::start(config).await {
        Ok(_) => panic!("start must fail"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        error.contains("/proc/sipgate-sidecar-test/nope.db"),
        "{error}"
    );
}

#[tokio::test]
async fn metrics_count_requests_by_outcome() {
    let server =
        TestServer::start_with(|c| c.metrics_addr = Some("127.0.0.1:0".parse().unwrap())).await;
    let metrics_addr = server.running.as_ref().unwrap().metrics_addr.unwrap();
    server
        .post(
            "/api/v1/sipgate/in",
            &new_call("in", "492111234567", "4930600000000", "m1"),
        )
        .await;
    server
        .post("/api/v1/sipgate/in", "event=ringing&callId=1")
        .await;
    let text = server
        .client
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("sidecar_webhook_requests_total{outcome=\"accepted\"}"),
        "{text}"
    );
    assert!(
        text.contains("sidecar_webhook_requests_total{outcome=\"bad_request\"}"),
        "{text}"
    );
    assert!(
        text.contains("sidecar_decision_latency_seconds_bucket"),
        "{text}"
    );
}
