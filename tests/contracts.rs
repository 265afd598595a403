//! The interfaces as contracts: the proto passes `buf lint` and `buf
//! breaking` against the last released proto (`.ci/proto-baseline`); the
//! preconditions, paging and times it promises hold against the real server;
//! the forwarder's AsyncAPI document is valid and names exactly the fields
//! the forwarder sends. buf and the AsyncAPI parser come from npm
//! (`.ci/tools`, installed by `bash .ci/run`).

mod common;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use common::*;
use sipgate_sidecar::{bridge::webhook, proto};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A tool from `.ci/tools/node_modules`, or `None` (then, outside CI,
/// the check is skipped).
fn ci_tool(name: &str) -> Option<PathBuf> {
    let path = Path::new(ROOT).join(".ci/tools/node_modules").join(name);
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{name} is missing: bash .ci/run installs it (npm ci --prefix .ci/tools)"
    );
    eprintln!("SKIPPED: {name} not installed (npm ci --prefix .ci/tools)");
    None
}

fn run(command: &mut Command) -> (bool, String) {
    let out = command.output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_proto_passes_buf_lint() {
    let Some(buf) = ci_tool(".bin/buf") else {
        return;
    };
    let (ok, out) = run(Command::new(&buf).arg("lint").current_dir(ROOT));
    assert!(ok, "buf lint:\n{out}");
}

/// The commit of the last released proto.
fn baseline() -> String {
    std::fs::read_to_string(Path::new(ROOT).join(".ci/proto-baseline"))
        .unwrap()
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn the_proto_keeps_the_released_contract_and_buf_breaking_catches_a_break() {
    let Some(buf) = ci_tool(".bin/buf") else {
        return;
    };
    if !Path::new(ROOT).join(".git").exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "buf breaking needs the git history"
        );
        eprintln!("SKIPPED: no .git here");
        return;
    }
    let against = format!(".git#ref={},subdir=proto", baseline());
    let (ok, out) = run(Command::new(&buf)
        .args(["breaking", "--against", &against])
        .current_dir(ROOT));
    assert!(ok, "buf breaking against {against}:\n{out}");

    // The same check on a copy with a field's type changed fails, naming it.
    let copy = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(copy.path().join("proto/sidecar/v1")).unwrap();
    std::fs::copy(
        Path::new(ROOT).join("buf.yaml"),
        copy.path().join("buf.yaml"),
    )
    .unwrap();
    let proto = std::fs::read_to_string(Path::new(ROOT).join("proto/sidecar/v1/sidecar.proto"))
        .unwrap()
        .replace("uint64 head_seq = 3;", "uint32 head_seq = 3;");
    std::fs::write(copy.path().join("proto/sidecar/v1/sidecar.proto"), proto).unwrap();
    let (ok, out) = run(Command::new(&buf)
        .args(["breaking", "--against"])
        .arg(Path::new(ROOT).join("proto"))
        .current_dir(copy.path()));
    assert!(!ok && out.contains("head_seq"), "{out}");
}

#[tokio::test]
async fn expected_version_and_force_work_as_request_fields_and_as_metadata() {
    let server = TestServer::start().await;
    let mut settings = server.settings().await;
    let version = settings
        .get_settings(proto::GetSettingsRequest {})
        .await
        .unwrap()
        .into_inner()
        .version;
    // A stale version in the field: ABORTED, nothing stored.
    let stale = settings
        .add_block_entry(proto::AddBlockEntryRequest {
            pattern: "4930123456".into(),
            expected_version: Some(version + 5),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), tonic::Code::Aborted, "{stale:?}");
    // The field and the metadata disagreeing: refused, naming both.
    let both = settings
        .add_block_entry(with_metadata(
            proto::AddBlockEntryRequest {
                pattern: "4930123456".into(),
                expected_version: Some(version),
                ..Default::default()
            },
            &[("x-sidecar-expected-version", &(version + 1).to_string())],
        ))
        .await
        .unwrap_err();
    assert_eq!(both.code(), tonic::Code::InvalidArgument, "{both:?}");
    assert!(both.message().contains("disagree"), "{both:?}");
    assert_eq!(
        settings
            .get_settings(proto::GetSettingsRequest {})
            .await
            .unwrap()
            .into_inner()
            .version,
        version,
        "nothing was stored"
    );
    // The right version in the field: stored.
    let stored = settings
        .add_block_entry(proto::AddBlockEntryRequest {
            pattern: "4930123456".into(),
            expected_version: Some(version),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.version, version + 1);
    // Metadata alone still works (older clients).
    let stale = settings
        .remove_block_entry(with_metadata(
            proto::RemoveBlockEntryRequest {
                pattern: "4930123456".into(),
                ..Default::default()
            },
            &[("x-sidecar-expected-version", &version.to_string())],
        ))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), tonic::Code::Aborted);
    // Blocking a country: only with force, as a field or as metadata.
    let refused = settings
        .add_block_entry(proto::AddBlockEntryRequest {
            pattern: "49*".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    settings
        .add_block_entry(proto::AddBlockEntryRequest {
            pattern: "49*".into(),
            force: true,
            ..Default::default()
        })
        .await
        .unwrap();
    settings
        .add_block_entry(with_metadata(
            proto::AddBlockEntryRequest {
                pattern: "43*".into(),
                ..Default::default()
            },
            &[("x-sidecar-force", "true")],
        ))
        .await
        .unwrap();
    server.stop().await;
}

fn ms(t: &Option<prost_types::Timestamp>) -> Option<i64> {
    t.as_ref()
        .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

#[tokio::test]
async fn pages_follow_next_page_token_to_the_end_and_times_are_timestamps_too() {
    let server = TestServer::start().await;
    for i in 0..7 {
        let call = format!("page-{i}");
        server
            .post(
                "/api/v1/sipgate/in",
                &new_call("in", "492111234567", "4930600000000", &call),
            )
            .await;
        server
            .post("/api/v1/sipgate/in", &answer("in", &call, "Alice"))
            .await;
    }
    // Events, three at a time, by token only.
    let mut events = server.events().await;
    let (mut token, mut seqs) = (String::new(), Vec::new());
    loop {
        let page = events
            .list_events(proto::ListEventsRequest {
                limit: 3,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.events.len() <= 3);
        for e in &page.events {
            assert_eq!(ms(&e.received_at), Some(e.received_at_ms), "seq {}", e.seq);
            let call = e.call.as_ref().unwrap();
            assert_eq!(ms(&call.initialized_at), Some(call.initialized_at_ms));
            assert_eq!(ms(&call.updated_at), Some(call.updated_at_ms));
            assert_eq!(
                ms(&call.start_at),
                (call.start_at_ms != 0).then_some(call.start_at_ms)
            );
            assert_eq!(call.end_at, None, "no call has ended");
        }
        seqs.extend(page.events.iter().map(|e| e.seq));
        if page.next_page_token.is_empty() {
            assert_eq!(page.next_after_seq, page.head_seq);
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seqs, (1..=14).collect::<Vec<u64>>());
    let bad = events
        .list_events(proto::ListEventsRequest {
            page_token: "before:3".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    // The audit trail, two at a time.
    let mut settings = server.settings().await;
    for n in 0..5 {
        settings
            .add_block_entry(proto::AddBlockEntryRequest {
                pattern: format!("49301000{n}"),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let (mut token, mut ids) = (String::new(), Vec::new());
    loop {
        let page = settings
            .list_audit(proto::ListAuditRequest {
                limit: 2,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        for e in &page.entries {
            assert_eq!(ms(&e.at), Some(e.at_ms));
        }
        ids.extend(page.entries.iter().map(|e| e.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(ids.len(), 5, "{ids:?}");
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");

    // And the call log, as before.
    let calls = server
        .calls()
        .await
        .list_calls(proto::ListCallsRequest {
            limit: 4,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(calls.calls.len(), 4);
    assert!(!calls.next_page_token.is_empty());
    server.stop().await;
}

/// An event with every optional part present.
fn full_event() -> proto::CallEvent {
    let decision = proto::Decision {
        action: proto::Action::Menu.into(),
        explanation: "menu".into(),
        flow: Some(proto::FlowDecision {
            rule: "hotline".into(),
            play: Some(proto::Announcement {
                name: "welcome".into(),
                ..Default::default()
            }),
            gather: Some(proto::MenuPrompt {
                menu: "main".into(),
                max_digits: 1,
                timeout_ms: 5000,
                step: 1,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    proto::CallEvent {
        seq: 3,
        kind: proto::EventKind::NewCall.into(),
        call_id: "c3".into(),
        direction: proto::Direction::In.into(),
        received_at_ms: 1_764_600_000_000,
        raw_form: vec![proto::FormField {
            key: "event".into(),
            value: "newCall".into(),
        }],
        decision: Some(decision.clone()),
        call: Some(proto::Call {
            call_id: "c3".into(),
            start_at_ms: 1,
            end_at_ms: 2,
            duration_waiting_secs: Some(1),
            duration_talking_secs: Some(1),
            decision: Some(decision.clone()),
            menu_decision: Some(decision),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn keys(value: &serde_json::Value) -> BTreeSet<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

fn properties(schemas: &serde_json::Value, name: &str) -> BTreeSet<String> {
    keys(&schemas[name]["properties"])
}

#[test]
fn the_asyncapi_document_is_valid_and_names_exactly_what_the_forwarder_sends() {
    let Some(_) = ci_tool("@asyncapi/parser") else {
        return;
    };
    let script = Path::new(ROOT).join(".ci/tools/check-asyncapi.mjs");
    let (ok, out) = run(Command::new("node")
        .arg(&script)
        .arg(Path::new(ROOT).join("docs/forwarder.asyncapi.yaml")));
    assert!(ok, "the AsyncAPI parser refuses the document:\n{out}");
    let document: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(document["asyncapi"], "3.0.0");
    let schemas = &document["components"]["schemas"];

    let event = full_event();
    let body: serde_json::Value = serde_json::from_slice(&webhook::body(&event)).unwrap();
    assert_eq!(properties(schemas, "Event"), keys(&body), "Event");
    assert_eq!(
        properties(schemas, "Decision"),
        keys(&body["decision"]),
        "Decision"
    );
    assert_eq!(
        properties(schemas, "Flow"),
        keys(&body["decision"]["flow"]),
        "Flow"
    );
    assert_eq!(
        properties(schemas, "Announcement"),
        keys(&body["decision"]["flow"]["play"])
    );
    assert_eq!(
        properties(schemas, "MenuPrompt"),
        keys(&body["decision"]["flow"]["gather"])
    );
    assert_eq!(properties(schemas, "Call"), keys(&body["call"]), "Call");

    let envelope: serde_json::Value =
        serde_json::from_slice(&webhook::cloudevent(&event, "/sipgate-sidecar")).unwrap();
    assert_eq!(properties(schemas, "CloudEventEnvelope"), keys(&envelope));
    let required: BTreeSet<String> = schemas["CloudEventEnvelope"]["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(required, keys(&envelope));
    let types: Vec<&str> = schemas["CloudEventEnvelope"]["properties"]["type"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(types.contains(&envelope["type"].as_str().unwrap()));
    let headers = properties(schemas, "Headers");
    for header in [
        "X-Sidecar-Seq",
        "X-Sidecar-Signature",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    ] {
        assert!(headers.contains(header), "{header}");
    }
}
