//! The client subcommands against a real server: what an operator types.

mod common;

use std::{process::Stdio, time::Duration};

use common::*;
use tokio::io::{AsyncBufReadExt, BufReader};

struct Output {
    success: bool,
    stdout: String,
    stderr: String,
}

async fn run(server: &TestServer, args: &[&str]) -> Output {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sipgate-sidecar"))
        .args(args)
        .args(["--server", &server.grpc])
        .output()
        .await
        .expect("binary runs");
    Output {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test]
async fn settings_commands_change_what_the_webhook_answers() {
    let server = TestServer::start().await;

    let added = run(
        &server,
        &[
            "settings",
            "block",
            "add",
            "+49 30 1234567",
            "--note",
            "spam",
        ],
    )
    .await;
    assert!(added.success, "{}", added.stderr);
    assert!(added.stdout.contains("49301234567"), "{}", added.stdout);

    let routed = run(
        &server,
        &[
            "settings",
            "route",
            "add",
            "49*",
            "030 777 000 01",
            "--note",
            "de",
        ],
    )
    .await;
    assert!(routed.success, "{}", routed.stderr);
    let default = run(
        &server,
        &["settings", "default-caller-id", "set", "4930777000000"],
    )
    .await;
    assert!(default.success, "{}", default.stderr);

    let shown = run(&server, &["settings", "show", "--json"]).await;
    assert!(shown.success, "{}", shown.stderr);
    let json: serde_json::Value = serde_json::from_str(&shown.stdout).unwrap();
    assert_eq!(json["block_list"][0]["pattern"], "49301234567");
    assert_eq!(json["routing_table"][0]["caller_id"], "493077700001");
    assert_eq!(json["default_caller_id"], "4930777000000");

    let evaluated = run(
        &server,
        &[
            "settings",
            "evaluate",
            "--direction",
            "in",
            "--from",
            "030 1234567",
            "--to",
            "4930600000000",
            "--json",
        ],
    )
    .await;
    assert!(evaluated.success, "{}", evaluated.stderr);
    let json: serde_json::Value = serde_json::from_str(&evaluated.stdout).unwrap();
    assert_eq!(json["decision"]["action"], "reject");

    let reply = server
        .post(
            "/api/v1/sipgate/in",
            &new_call("in", "49301234567", "4930600000000", "cli1"),
        )
        .await;
    assert!(reply.body.contains("Reject"), "{}", reply.body);

    // Export, change, re-import: the team's config moves in one command.
    let exported = run(&server, &["settings", "export-zammad"]).await;
    assert!(exported.success, "{}", exported.stderr);
    let file = server.dir.path().join("sipgate_config.json");
    std::fs::write(&file, &exported.stdout).unwrap();
    let removed = run(&server, &["settings", "block", "remove", "030 1234567"]).await;
    assert!(removed.success, "{}", removed.stderr);
    let imported = run(
        &server,
        &["settings", "import-zammad", file.to_str().unwrap()],
    )
    .await;
    assert!(imported.success, "{}", imported.stderr);
    assert!(
        imported.stdout.contains("49301234567"),
        "{}",
        imported.stdout
    );

    let audit = run(&server, &["settings", "audit"]).await;
    assert!(audit.success);
    assert!(audit.stdout.contains("import.zammad"), "{}", audit.stdout);
    assert!(
        audit.stdout.contains("sipgate-sidecar-cli"),
        "{}",
        audit.stdout
    );
}

#[tokio::test]
async fn mistakes_say_what_to_fix_and_exit_non_zero() {
    let server = TestServer::start().await;
    let bad = run(&server, &["settings", "block", "add", "12ab"]).await;
    assert!(!bad.success);
    assert!(bad.stderr.contains("invalid input"), "{}", bad.stderr);
    assert!(bad.stderr.contains("12ab"), "{}", bad.stderr);

    let missing = run(
        &server,
        &["settings", "import-zammad", "/nonexistent/file.json"],
    )
    .await;
    assert!(!missing.success);
    assert!(
        missing.stderr.contains("/nonexistent/file.json"),
        "{}",
        missing.stderr
    );

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sipgate-sidecar"))
        .args(["settings", "show", "--server", "http://127.0.0.1:1"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the sidecar"));
}

#[tokio::test]
async fn calls_list_and_watch_print_json_lines() {
    let server = TestServer::start().await;
    server
        .post(
            "/api/v1/sipgate/in",
            &new_call("in", "492111234567", "4930600000000", "w1"),
        )
        .await;
    server
        .post("/api/v1/sipgate/in", &hangup("in", "w1", "cancel"))
        .await;

    let listed = run(&server, &["calls", "list", "--json", "--limit", "10"]).await;
    assert!(listed.success, "{}", listed.stderr);
    let call: serde_json::Value =
        serde_json::from_str(listed.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(call["call_id"], "w1");
    assert_eq!(call["state"], "hangup");
    assert_eq!(call["done"], false);
    assert_eq!(call["cause"], "cancel");
    assert_eq!(call["direction"], "in");

    let mut watch = tokio::process::Command::new(env!("CARGO_BIN_EXE_sipgate-sidecar"))
        .args([
            "watch",
            "--json",
            "--after-seq",
            "1",
            "--server",
            &server.grpc,
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("watch prints within 20 s")
        .unwrap()
        .unwrap();
    let event: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["seq"], 2);
    assert_eq!(event["event"], "hangup");
    assert_eq!(event["call_id"], "w1");
    assert_eq!(event["from"], "492111234567");
    // Live events follow.
    server
        .post(
            "/api/v1/sipgate/out",
            &new_call("out", "4930600000000", "4940123", "w2"),
        )
        .await;
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let event: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        (
            event["seq"].as_u64(),
            event["event"].as_str(),
            event["direction"].as_str()
        ),
        (Some(3), Some("newCall"), Some("out"))
    );
    watch.kill().await.unwrap();
}

/// Terminal escape codes in a push (a user name) or a note: every human
/// view shows them escaped, never raw; JSON keeps them JSON-escaped.
#[tokio::test]
async fn escape_codes_from_pushes_and_notes_are_shown_escaped() {
    let server = TestServer::start().await;
    let evil = "Team\u{1b}[2J\u{1b}]0;pwned\u{7}";
    server
        .post(
            "/api/v1/sipgate/in",
            &form(&[
                ("event", "newCall"),
                ("direction", "in"),
                ("from", "492111234567"),
                ("to", "4921199999"),
                ("callId", "esc1"),
                ("user[]", evil),
            ]),
        )
        .await;
    let noted = run(
        &server,
        &[
            "settings",
            "block",
            "add",
            "4930111",
            "--note",
            "spam\u{1b}[31m red",
        ],
    )
    .await;
    assert!(noted.success, "{}", noted.stderr);
    for args in [
        &["requests"][..],
        &["events", "list"][..],
        &["calls", "list"][..],
        &["settings", "show"][..],
        &["calls", "get", "esc1"][..],
    ] {
        let out = run(&server, args).await;
        assert!(out.success, "{args:?}: {}", out.stderr);
        assert!(
            !out.stdout.contains('\u{1b}'),
            "{args:?} printed a raw escape: {:?}",
            out.stdout
        );
        assert!(!out.stdout.contains('\u{7}'), "{args:?}: {:?}", out.stdout);
    }
    let shown = run(&server, &["calls", "get", "esc1"]).await.stdout;
    assert!(shown.contains("Team\\u{1b}[2J"), "{shown}");
    let settings = run(&server, &["settings", "show"]).await.stdout;
    assert!(settings.contains("spam\\u{1b}[31m red"), "{settings}");
    server.stop().await;
}
