//! The Settings gRPC service: Zammad import and export, dry-run evaluation,
//! validation, ordering of routing rules, the audit log.

mod common;

use common::*;
use sipgate_sidecar::proto;

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
            ..Default::default()
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
            ..Default::default()
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
            ..Default::default()
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
                note: String::new(), ..Default::default() })
            .await
            .unwrap_err(),
        settings
            .add_block_entry(proto::AddBlockEntryRequest {
                pattern: "".into(),
                note: String::new(), ..Default::default() })
            .await
            .unwrap_err(),
        settings
            .add_routing_rule(proto::AddRoutingRuleRequest {
                dest: "49*".into(),
                caller_id: "anonymous".into(),
                note: String::new(),
                position: None, ..Default::default() })
            .await
            .unwrap_err(),
        settings
            .add_routing_rule(proto::AddRoutingRuleRequest {
                dest: "".into(),
                caller_id: "4930777000000".into(),
                note: String::new(),
                position: None, ..Default::default() })
            .await
            .unwrap_err(),
        settings
            .add_routing_rule(proto::AddRoutingRuleRequest {
                dest: "49*".into(),
                caller_id: "49*".into(),
                note: String::new(),
                position: None, ..Default::default() })
            .await
            .unwrap_err(),
        settings
            .set_default_caller_id(proto::SetDefaultCallerIdRequest {
                caller_id: "not a number".into(), ..Default::default() })
            .await
            .unwrap_err(),
        settings
            .import_zammad(proto::ImportZammadRequest {
                json: r#"{"inbound":{"block_caller_ids":[{"caller_id":"4930","note":""},{"caller_id":"x!","note":""}]}}"#.into(), ..Default::default() })
            .await
            .unwrap_err(),
        settings
            .import_zammad(proto::ImportZammadRequest {
                json: "{not json".into(),
                ..Default::default()
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
            ..Default::default()
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
                ..Default::default()
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
            ..Default::default()
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
            ..Default::default()
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
            ..Default::default()
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
