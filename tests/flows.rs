//! Call flows end to end: a document set over gRPC, pushes through the real
//! server, the XML checked byte for byte, keypad menus answered from the
//! onData URL (by either of two PostgreSQL replicas), announcements served,
//! refused documents that change nothing, undo, evaluate and the CLI.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{process::spawn_binary, *};
use sipgate_sidecar::{
    decide::MenuKey,
    proto::{self, flows_client::FlowsClient},
};
use tonic::transport::Channel;

const PUBLIC: &str = "https://sc.example";
const CALLBACK: &str = "https://sc.example/api/v1/sipgate/in";

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/flows")
}

/// A document whose rules do not depend on the time of day: `always` is
/// open around the clock, `never` never is.
const DOCUMENT: &str = r#"# the hotline's flows
time_zone = "Europe/Berlin"

[schedules.always]
open = ["mon-sun 00:00-24:00"]

[schedules.never]
open = []

[announcements]
closed = { file = "closed.wav" }
menu = { url = "https://cdn.example.com/menu.wav" }

[[rules]]
name = "vip"
when = { from = ["+49 30 1234*"] }
then = { forward = ["+49 170 1234567", "+49 170 7654321"] }

[[rules]]
name = "after-hours"
when = { to = ["+49 30 6000000"], open = "never" }
then = { play = "closed", voicemail = true }

[[rules]]
name = "hotline"
when = { to = ["+49 30 6000000"], closed = "never" }
then = { menu = "main" }

[[rules]]
name = "closed-line"
when = { to = ["+49 30 6000009"] }
then = { play = "closed", hangup = true }

[menus.main]
prompt = "menu"
timeout_ms = 5000
options = { "1" = { forward = ["+49 211 5550100"] }, "2" = { voicemail = true }, "9" = { menu = "main" } }
no_input = { voicemail = true }
invalid = { hangup = true }
"#;

async fn start() -> TestServer {
    TestServer::start_with(|c| {
        c.public_url = Some(PUBLIC.into());
        c.announcements_dir = Some(examples());
    })
    .await
}

async fn flows_client(grpc: &str) -> FlowsClient<Channel> {
    let channel = Channel::from_shared(grpc.to_owned())
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    FlowsClient::new(channel)
}

async fn set(grpc: &str, text: &str) -> Result<proto::SetFlowsResponse, tonic::Status> {
    flows_client(grpc)
        .await
        .set_flows(proto::SetFlowsRequest {
            text: text.into(),
            expected_version: None,
            dry_run: false,
        })
        .await
        .map(|r| r.into_inner())
}

/// The menu key the server signs with, read from its SQLite database.
async fn menu_key(server: &TestServer) -> MenuKey {
    let url = format!(
        "sqlite://{}",
        server.dir.path().join("sidecar.db").display()
    );
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let (hex_key,): (String,) =
        sqlx::query_as("SELECT value FROM settings_kv WHERE key = 'menu_key'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    MenuKey::new(hex::decode(hex_key).unwrap())
}

fn head() -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response onHangup=\"{CALLBACK}\" onAnswer=\"{CALLBACK}\">\n"
    )
}

fn gather(query: &str) -> String {
    format!(
        "{}  <Gather onData=\"{CALLBACK}?{}\" maxDigits=\"1\" timeout=\"5000\">\n    <Play>\n      <Url>https://cdn.example.com/menu.wav</Url>\n    </Play>\n  </Gather>\n</Response>\n",
        head(),
        query.replace('&', "&amp;")
    )
}

/// The onData URL's path and query in a reply.
fn on_data(reply: &str) -> String {
    let start = reply.find("onData=\"").expect("a Gather") + "onData=\"".len();
    let url = &reply[start..start + reply[start..].find('"').unwrap()];
    url.replace("&amp;", "&")
        .trim_start_matches(PUBLIC)
        .to_string()
}

fn dtmf(call_id: &str, digits: &str) -> String {
    if digits.is_empty() {
        form(&[("event", "dtmf"), ("callId", call_id)])
    } else {
        form(&[("event", "dtmf"), ("dtmf", digits), ("callId", call_id)])
    }
}

#[tokio::test]
async fn a_keypad_menu_end_to_end_byte_for_byte() {
    let server = start().await;
    let stored = set(&server.grpc, DOCUMENT).await.unwrap();
    assert!(stored.changed);
    assert!(
        stored.summary.contains("4 rules, 2 schedules, 1 menus"),
        "{}",
        stored.summary
    );
    // Stored as given, comments and all.
    let doc = flows_client(&server.grpc)
        .await
        .get_flows(proto::GetFlowsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(doc.text, DOCUMENT);
    assert_eq!(doc.version, stored.version);
    let key = menu_key(&server).await;

    let reply = server
        .post(
            "/api/v1/sipgate/in",
            &new_call("in", "492111234567", "49306000000", "m1"),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, gather(&key.query("m1", "main", 1, "hotline")));
    let url = on_data(&reply.body);

    // Option 1: forwarded.
    let one = server.post(&url, &dtmf("m1", "1")).await;
    assert_eq!(
        one.body,
        format!(
            "{}  <Dial>\n    <Number>492115550100</Number>\n  </Dial>\n</Response>\n",
            head()
        )
    );
    // The same push again (a replay): invalid, never the forward again.
    let replay = server.post(&url, &dtmf("m1", "1")).await;
    assert_eq!(replay.status, 200);
    assert_eq!(replay.body, format!("{}  <Hangup/>\n</Response>\n", head()));
    // Another call's body at this URL: the state was not offered to it.
    let other = server.post(&url, &dtmf("m2", "1")).await;
    assert_eq!(other.body, format!("{}  <Hangup/>\n</Response>\n", head()));
    // An edited URL.
    let edited = server
        .post(&url.replace("step=1", "step=2"), &dtmf("m1", "2"))
        .await;
    assert_eq!(edited.body, format!("{}  <Hangup/>\n</Response>\n", head()));

    // The events carry the rule, the menu and the option taken.
    let events = server.all_events().await;
    let dtmfs: Vec<&proto::CallEvent> = events
        .iter()
        .filter(|e| e.kind == proto::EventKind::Dtmf as i32)
        .collect();
    assert_eq!(dtmfs.len(), 3, "the replay is not stored again");
    let flow = dtmfs[0].decision.as_ref().unwrap().flow.as_ref().unwrap();
    assert_eq!(
        (flow.rule.as_str(), flow.menu.as_str(), flow.option.as_str()),
        ("hotline", "main", "1")
    );
    assert_eq!(flow.numbers, vec!["492115550100"]);
    let first = events
        .iter()
        .find(|e| e.kind == proto::EventKind::NewCall as i32)
        .unwrap();
    let decision = first.decision.as_ref().unwrap();
    assert_eq!(decision.action, proto::Action::Menu as i32);
    assert_eq!(decision.rule_kind, proto::RuleKind::Flow as i32);
    assert_eq!(
        (decision.rule_pattern.as_str(), decision.rule_index),
        ("hotline", 2)
    );
    // The call log keeps the newCall's decision and the menu choice.
    let call = server.call("m1").await;
    assert_eq!(
        call.decision.as_ref().unwrap().action,
        proto::Action::Menu as i32
    );
    let menu = call.menu_decision.as_ref().unwrap();
    assert_eq!(menu.action, proto::Action::Forward as i32);
    assert!(
        menu.explanation.contains("after option 1 in menu main"),
        "{}",
        menu.explanation
    );
    server.stop().await;
}

#[tokio::test]
async fn timeouts_invalid_digits_and_the_prompt_cap() {
    let server = start().await;
    set(&server.grpc, DOCUMENT).await.unwrap();
    let first = server
        .post(
            "/api/v1/sipgate/in",
            &new_call("in", "492111234567", "+4930 6000000", "c1"),
        )
        .await;
    // No digits: no_input (voicemail).
    let none = server.post(&on_data(&first.body), &dtmf("c1", "")).await;
    assert_eq!(
        none.body,
        format!(
            "{}  <Dial>\n    <Voicemail/>\n  </Dial>\n</Response>\n",
            head()
        )
    );
    // A digit with no option: invalid (hang up).
    let again = server
        .post(
            "/api/v1/sipgate/in",
            &new_call("in", "492111234567", "49306000000", "c2"),
        )
        .await;
    let bad = server.post(&on_data(&again.body), &dtmf("c2", "7")).await;
    assert_eq!(bad.body, format!("{}  <Hangup/>\n</Response>\n", head()));
    // "9" leads back to the menu; after five prompts no_input applies.
    let mut reply = server
        .post(
            "/api/v1/sipgate/in",
            &new_call("in", "492111234567", "49306000000", "c3"),
        )
        .await
        .body;
    let mut prompts = 1;
    while reply.contains("<Gather") {
        reply = server.post(&on_data(&reply), &dtmf("c3", "9")).await.body;
        if reply.contains("<Gather") {
            prompts += 1;
        }
    }
    assert_eq!(prompts, 5);
    assert_eq!(
        reply,
        format!(
            "{}  <Dial>\n    <Voicemail/>\n  </Dial>\n</Response>\n",
            head()
        )
    );
    server.stop().await;
}

#[tokio::test]
async fn forwards_announcements_and_the_block_list_first() {
    let server = start().await;
    set(&server.grpc, DOCUMENT).await.unwrap();
    let vip = server
        .post(
            "/api/v1/sipgate/in",
            &new_call("in", "49301234999", "49306000000", "v1"),
        )
        .await;
    assert_eq!(
        vip.body,
        format!(
            "{}  <Dial>\n    <Number>491701234567</Number>\n    <Number>491707654321</Number>\n  </Dial>\n</Response>\n",
            head()
        )
    );
    // An announcement file, served under its content hash.
    let closed = server
        .post(
            "/api/v1/sipgate/in",
            &new_call("in", "492111234567", "49306000009", "v2"),
        )
        .await;
    let wav = std::fs::read(examples().join("closed.wav")).unwrap();
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&wav));
    let url = format!("{PUBLIC}/announcements/{sha}.wav");
    assert_eq!(
        closed.body,
        format!(
            "{}  <Play>\n    <Url>{url}</Url>\n  </Play>\n  <Hangup/>\n</Response>\n",
            head()
        )
    );
    let served = server
        .client
        .get(format!("{}/announcements/{sha}.wav", server.http))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(served.headers()["content-type"], "audio/wav");
    assert_eq!(served.bytes().await.unwrap().as_ref(), wav.as_slice());
    let missing = server
        .client
        .get(format!(
            "{}/announcements/{}.wav",
            server.http,
            "0".repeat(64)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    // The block list is checked before the flows.
    server
        .settings()
        .await
        .add_block_entry(proto::AddBlockEntryRequest {
            pattern: "+49 30 1234999".into(),
            note: "spam".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let blocked = server
        .post(
            "/api/v1/sipgate/in",
            &new_call("in", "49301234999", "49306000000", "v3"),
        )
        .await;
    assert_eq!(
        blocked.body,
        format!("{}  <Reject reason=\"busy\"/>\n</Response>\n", head())
    );
    // Outbound calls keep the routing table; no rule matches: as today.
    let out = server
        .post(
            "/api/v1/sipgate/out",
            &new_call("out", "49306000000", "49301234999", "v4"),
        )
        .await;
    assert_eq!(
        out.body,
        plain_reply("https://sc.example/api/v1/sipgate/out")
    );
    let other = server
        .post(
            "/api/v1/sipgate/in",
            &new_call("in", "492111234567", "4940123", "v5"),
        )
        .await;
    assert_eq!(other.body, plain_reply(CALLBACK));
    server.stop().await;
}

#[tokio::test]
async fn refused_documents_change_nothing_and_undo_restores() {
    let server = start().await;
    let first = set(&server.grpc, DOCUMENT).await.unwrap();
    for (text, says) in [
        (
            DOCUMENT.replace("timeout_ms = 5000", "timeout_ms = 5000\ncolour = 1"),
            "unknown field `colour`",
        ),
        (
            DOCUMENT.replace("00:00-24:00", "00:00-25:00"),
            "line 5, column 9: schedule always: '25:00' is not a time of day",
        ),
        (
            DOCUMENT.replace("Europe/Berlin", "Europe/Nowhere"),
            "line 2, column 13: 'Europe/Nowhere' is not a time zone",
        ),
        (
            DOCUMENT.replace("closed.wav", "missing.wav"),
            "missing.wav cannot be read",
        ),
        (
            DOCUMENT.replace("https://cdn", "http://cdn"),
            "must be an https:// URL",
        ),
    ] {
        let e = set(&server.grpc, &text).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{}", e.message());
        assert!(
            e.message().contains(says),
            "{}\nwanted: {says}",
            e.message()
        );
    }
    let doc = flows_client(&server.grpc)
        .await
        .get_flows(proto::GetFlowsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((doc.text.as_str(), doc.version), (DOCUMENT, first.version));

    // A dry run of a change stores nothing.
    let changed = DOCUMENT.replace("timeout_ms = 5000", "timeout_ms = 3000");
    let dry = flows_client(&server.grpc)
        .await
        .set_flows(proto::SetFlowsRequest {
            text: changed.clone(),
            expected_version: Some(first.version),
            dry_run: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(dry.changed);
    assert_eq!(dry.version, first.version);
    // A stale version is refused.
    let stale = flows_client(&server.grpc)
        .await
        .set_flows(proto::SetFlowsRequest {
            text: changed.clone(),
            expected_version: Some(first.version + 7),
            dry_run: false,
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), tonic::Code::Aborted);
    let second = set(&server.grpc, &changed).await.unwrap();
    assert_eq!(second.version, first.version + 1);

    // Undo through the audit trail puts the first document back.
    let mut settings = server.settings().await;
    let audit = settings
        .list_audit(proto::ListAuditRequest {
            limit: 10,
            before_id: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(audit.entries[0].action, "flows.set");
    settings
        .restore_audit(proto::RestoreAuditRequest {
            id: audit.entries[0].id,
            ..Default::default()
        })
        .await
        .unwrap();
    let doc = flows_client(&server.grpc)
        .await
        .get_flows(proto::GetFlowsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(doc.text, DOCUMENT);
    // A Zammad import keeps the flows.
    settings
        .import_zammad(proto::ImportZammadRequest {
            json: r#"{"inbound":{"block_caller_ids":[]},"outbound":{"routing_table":[],"default_caller_id":""}}"#.into(), ..Default::default() })
        .await
        .unwrap();
    let doc = flows_client(&server.grpc)
        .await
        .get_flows(proto::GetFlowsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(doc.text, DOCUMENT);
    // Restarted, the flows are back and answer (the client's connection
    // closed first, so nothing of the old server holds the database).
    drop(settings);
    let dir = server.stop().await;
    let mut config = test_config(&dir);
    config.public_url = Some(PUBLIC.into());
    config.announcements_dir = Some(examples());
    let server = TestServer::start_in(dir, config).await;
    let reply = server
        .post(
            "/api/v1/sipgate/in",
            &new_call("in", "49301234999", "49306000000", "r1"),
        )
        .await;
    assert!(
        reply.body.contains("<Number>491701234567</Number>"),
        "{}",
        reply.body
    );
    server.stop().await;
}

#[tokio::test]
async fn a_wav_sipgate_cannot_play_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("closed.wav"),
        sipgate_sidecar::flows::wav::synthesize(44_100, 2, 16, 441),
    )
    .unwrap();
    let announcements = dir.path().to_path_buf();
    let server = TestServer::start_with(|c| c.announcements_dir = Some(announcements)).await;
    let e = set(&server.grpc, DOCUMENT).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message()
            .contains("line 11, column 19: closed.wav is 44.1 kHz stereo 16-bit PCM"),
        "{}",
        e.message()
    );
    server.stop().await;
}

#[tokio::test]
async fn evaluate_walks_the_menu_without_storing_anything() {
    let server = start().await;
    set(&server.grpc, DOCUMENT).await.unwrap();
    let head_before = server.head_seq().await;
    let r = flows_client(&server.grpc)
        .await
        .evaluate_flows(proto::EvaluateFlowsRequest {
            from: "+49 211 1234567".into(),
            to: "+49 30 6000000".into(),
            at: "2026-12-07T09:00:00+01:00".into(),
            digits: vec!["9".into(), "1".into()],
            text: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.local_time.as_str(), r.time_zone.as_str()),
        ("2026-12-07T09:00:00+01:00", "Europe/Berlin")
    );
    // 2026-12-07T08:00:00Z, also as a Timestamp both ways.
    let instant = prost_types::Timestamp {
        seconds: 1_796_630_400,
        nanos: 0,
    };
    assert_eq!(r.time, Some(instant));
    let by_timestamp = flows_client(&server.grpc)
        .await
        .evaluate_flows(proto::EvaluateFlowsRequest {
            from: "+49 211 1234567".into(),
            to: "+49 30 6000000".into(),
            at_time: Some(instant),
            digits: vec!["9".into(), "1".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_timestamp, r);
    let both = flows_client(&server.grpc)
        .await
        .evaluate_flows(proto::EvaluateFlowsRequest {
            at: "2026-12-07T09:00:00+01:00".into(),
            at_time: Some(instant),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(both.code(), tonic::Code::InvalidArgument, "{both:?}");
    let actions: Vec<i32> = r
        .steps
        .iter()
        .map(|s| s.decision.as_ref().unwrap().action)
        .collect();
    assert_eq!(
        actions,
        vec![
            proto::Action::Menu as i32,
            proto::Action::Menu as i32,
            proto::Action::Forward as i32
        ]
    );
    assert!(
        r.steps[0].reply.starts_with(&head()),
        "{}",
        r.steps[0].reply
    );
    assert!(r.steps[2].reply.contains("<Number>492115550100</Number>"));
    assert_eq!(server.head_seq().await, head_before);
    server.stop().await;
}

#[tokio::test]
async fn the_cli_checks_sets_shows_and_evaluates() {
    let server = start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flows.toml");
    std::fs::write(&file, DOCUMENT).unwrap();
    let cli = |args: Vec<String>| async move {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_sipgate-sidecar"))
            .args(args)
            .output()
            .await
            .unwrap()
    };
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let path = file.display().to_string();
    let examples = examples().display().to_string();
    // Offline, no server.
    let check = cli(s(&[
        "flows",
        "check",
        &path,
        "--announcements-dir",
        &examples,
    ]))
    .await;
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(
        out.contains("valid; time zone Europe/Berlin; 4 rules"),
        "{out}"
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, DOCUMENT.replace("mon-sun", "mon-funday")).unwrap();
    let refused = cli(s(&["flows", "check", &bad.display().to_string()])).await;
    assert_eq!(refused.status.code(), Some(2));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("line 5, column 9: schedule always: 'funday' is not a day"),
        "{err}"
    );
    // Against the server.
    let server_flag = |mut v: Vec<String>| {
        v.extend(["--server".to_string(), server.grpc.clone()]);
        v
    };
    let set = cli(server_flag(s(&["flows", "set", &path]))).await;
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    assert!(String::from_utf8_lossy(&set.stdout).contains("Call flows stored"));
    let show = cli(server_flag(s(&["flows", "show"]))).await;
    assert_eq!(String::from_utf8_lossy(&show.stdout), DOCUMENT);
    let evaluate = cli(server_flag(s(&[
        "flows",
        "evaluate",
        "--from",
        "0211 1234567",
        "--to",
        "030 6000000",
        "--at",
        "2026-12-07T09:00:00+01:00",
        "--digits",
        "2",
    ])))
    .await;
    let out = String::from_utf8_lossy(&evaluate.stdout);
    assert!(
        evaluate.status.success(),
        "{}",
        String::from_utf8_lossy(&evaluate.stderr)
    );
    assert!(
        out.starts_with(
            "At 2026-12-07T09:00:00+01:00 (Europe/Berlin):\nnewCall: menu main offered"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "dtmf 2: sent to the voicemail after option 2 in menu main: call flow rule hotline (#3)"
        ),
        "{out}"
    );
    let history = cli(server_flag(s(&["flows", "history"]))).await;
    assert!(String::from_utf8_lossy(&history.stdout).contains("flows.set"));
    server.stop().await;
}

#[tokio::test]
async fn two_replicas_share_the_flows_and_either_answers_a_menu() {
    let Some(database) =
        postgres_database("two_replicas_share_the_flows_and_either_answers_a_menu").await
    else {
        return;
    };
    let examples = examples().display().to_string();
    let flags = [
        "--metrics-addr",
        "off",
        "--database",
        &database,
        "--public-url",
        PUBLIC,
        "--announcements-dir",
        &examples,
    ];
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = spawn_binary(dir_a.path(), &flags).await;
    let b = spawn_binary(dir_b.path(), &flags).await;
    let stored = set(&a.grpc, DOCUMENT).await.unwrap();
    // Replica B has the document within a second.
    let mut b_flows = flows_client(&b.grpc).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    loop {
        let doc = b_flows
            .get_flows(proto::GetFlowsRequest {})
            .await
            .unwrap()
            .into_inner();
        if doc.version == stored.version {
            assert_eq!(doc.text, DOCUMENT);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replica B did not see the flows within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let client = reqwest::Client::new();
    let post = |http: String, path: String, body: String| {
        let client = client.clone();
        async move {
            client
                .post(format!("{http}{path}"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let menu = post(
        a.http.clone(),
        "/api/v1/sipgate/in".into(),
        new_call("in", "492111234567", "49306000000", "p1"),
    )
    .await;
    assert!(menu.contains("<Gather"), "{menu}");
    // The dtmf push reaches the other replica, which answers from the URL.
    let answer = post(b.http.clone(), on_data(&menu), dtmf("p1", "1")).await;
    assert_eq!(
        answer,
        format!(
            "{}  <Dial>\n    <Number>492115550100</Number>\n  </Dial>\n</Response>\n",
            head()
        )
    );
    // And a replay of it at replica A is invalid.
    let replay = post(a.http.clone(), on_data(&menu), dtmf("p1", "1")).await;
    assert_eq!(replay, format!("{}  <Hangup/>\n</Response>\n", head()));
}

/// The README's "Call flows" section: its example is the shipped file, and
/// the `flows evaluate` output it shows is what the commands print.
#[tokio::test]
async fn the_readme_call_flows_section_is_what_the_binary_does() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section =
        &readme[readme.find("## Call flows").unwrap()..readme.find("## Client commands").unwrap()];
    let example = std::fs::read_to_string(examples().join("flows.toml")).unwrap();
    assert!(
        section.contains(&format!("```toml\n{example}```")),
        "the README shows examples/flows/flows.toml"
    );
    let server = TestServer::start_with(|c| {
        c.public_url = Some("https://sidecar.example.com".into());
        c.announcements_dir = Some(examples());
    })
    .await;
    set(&server.grpc, &example).await.unwrap();
    let shell = &section[section.find("```sh\n").unwrap() + 6..];
    let shell = &shell[..shell.find("```").unwrap()];
    // Each `flows evaluate` command (joined across its continuation line)
    // and the lines it shows.
    let mut checked = 0;
    let mut lines = shell.lines().peekable();
    while let Some(line) = lines.next() {
        if !line.starts_with("sipgate-sidecar flows evaluate") {
            continue;
        }
        let mut command = line.trim_end_matches('\\').to_string();
        if line.ends_with('\\') {
            command.push_str(lines.next().unwrap());
        }
        let mut shown = Vec::new();
        while let Some(next) = lines.peek().filter(|l| l.starts_with("# ")) {
            if *next != "# ..." {
                shown.push(next[2..].to_string());
            }
            lines.next();
        }
        let words: Vec<String> = shell_words(&command["sipgate-sidecar ".len()..]);
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sipgate-sidecar"))
            .args(&words)
            .args(["--server", &server.grpc])
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in shown {
            assert!(
                stdout.lines().any(|l| l == line),
                "{command}\nprints:\n{stdout}\nnot: {line}"
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 2);
    server.stop().await;
}

/// Splits a command line on spaces, honouring double quotes.
fn shell_words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quoted) = (Vec::new(), String::new(), false);
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}
