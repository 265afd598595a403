//! The operator's side of the client commands: the configuration file and
//! `serve --check-config`, paging through the call log, the commands for
//! every part of the API, exit codes, completions, the manual page, colour.

mod common;

use std::{path::Path, process::Stdio, time::Duration};

use common::*;
use futures::StreamExt;

const BIN: &str = env!("CARGO_BIN_EXE_sipgate-sidecar");

struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the binary with `args` and `env`, nothing else of the sidecar's
/// environment, and no input.
async fn run_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(BIN);
    for (name, _) in std::env::vars() {
        if name.starts_with("SIDECAR_") || name == "NO_COLOR" || name.starts_with("CLICOLOR") {
            command.env_remove(name);
        }
    }
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        command
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("the command ends within 60 s")
    .expect("binary runs");
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn run(server: &TestServer, args: &[&str]) -> Output {
    let mut all = args.to_vec();
    all.extend(["--server", &server.grpc]);
    run_env(&all, &[]).await
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

#[tokio::test]
async fn calls_list_pages_past_a_thousand_and_filters() {
    let server = TestServer::start().await;
    // 1,500 inbound calls and 5 outbound ones, posted 16 at a time.
    let posts = (0..1505).map(|i| {
        let server = &server;
        async move {
            let (dir, from, to) = if i < 1500 {
                ("in", "492111234567", "4930600000000")
            } else {
                ("out", "4930600000000", "4940123456")
            };
            let reply = server
                .post(
                    &format!("/api/v1/sipgate/{dir}"),
                    &new_call(dir, from, to, &format!("p{i}")),
                )
                .await;
            assert_eq!(reply.status, 200, "{}", reply.body);
        }
    });
    futures::stream::iter(posts)
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;

    let listed = run(&server, &["calls", "list", "--limit", "1500", "--json"]).await;
    assert_eq!(listed.code, Some(0), "{}", listed.stderr);
    let calls = json_lines(&listed.stdout);
    assert_eq!(calls.len(), 1500);
    let ids: std::collections::HashSet<&str> = calls
        .iter()
        .map(|c| c["call_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 1500, "no call twice");
    assert!(
        calls[0]["initialized_at"].as_str().unwrap().ends_with('Z'),
        "{}",
        calls[0]
    );

    // More than there are: all of them, not silently 1,000.
    let everything = run(&server, &["calls", "list", "--limit", "1000000", "--json"]).await;
    assert_eq!(json_lines(&everything.stdout).len(), 1505);
    let all_text = run(&server, &["calls", "list", "--all"]).await;
    assert_eq!(
        all_text.stdout.lines().count(),
        1506,
        "a header and every call"
    );

    let out = run(
        &server,
        &[
            "calls",
            "list",
            "--direction",
            "out",
            "--json",
            "--limit",
            "100",
        ],
    )
    .await;
    let out = json_lines(&out.stdout);
    assert_eq!(out.len(), 5);
    assert!(out.iter().all(|c| c["direction"] == "out"));
    let by_number = run(
        &server,
        &["calls", "list", "--number", "+49 40 123456", "--json"],
    )
    .await;
    assert_eq!(json_lines(&by_number.stdout).len(), 5);
    let ringing = run(
        &server,
        &[
            "calls",
            "list",
            "--state",
            "newCall",
            "--done",
            "false",
            "--direction",
            "in",
            "--limit",
            "3",
            "--json",
        ],
    )
    .await;
    assert_eq!(json_lines(&ringing.stdout).len(), 3, "{}", ringing.stderr);
}

#[tokio::test]
async fn get_set_done_events_and_route_move() {
    let server = TestServer::start().await;
    server
        .post(
            "/api/v1/sipgate/in",
            &new_call("in", "492111234567", "4930600000000", "g1"),
        )
        .await;
    server
        .post("/api/v1/sipgate/in", &hangup("in", "g1", "cancel"))
        .await;

    let got = run(&server, &["calls", "get", "g1", "--json"]).await;
    assert_eq!(got.code, Some(0), "{}", got.stderr);
    let call: serde_json::Value = serde_json::from_str(got.stdout.trim()).unwrap();
    assert_eq!(
        (call["call_id"].as_str(), call["done"].as_bool()),
        (Some("g1"), Some(false))
    );
    let done = run(&server, &["calls", "set-done", "g1", "--json"]).await;
    let call: serde_json::Value = serde_json::from_str(done.stdout.trim()).unwrap();
    assert_eq!(call["done"], true);
    assert!(server.call("g1").await.done, "stored");
    let text = run(&server, &["calls", "set-done", "g1", "--not-done"]).await;
    assert!(text.stdout.contains("done           no"), "{}", text.stdout);
    assert!(
        text.stdout.contains("T") && text.stdout.contains("Z"),
        "{}",
        text.stdout
    );

    let events = run(&server, &["events", "list", "--json"]).await;
    let events = json_lines(&events.stdout);
    assert_eq!(
        events
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(events[1]["event"], "hangup");
    let received = events[0]["received_at"].as_str().unwrap();
    assert!(
        received.len() == 24 && received.ends_with('Z'),
        "{received}"
    );
    let after = run(
        &server,
        &["events", "list", "--after-seq", "1", "--limit", "5"],
    )
    .await;
    assert_eq!(after.stdout.lines().count(), 1, "{}", after.stdout);
    assert!(after.stdout.starts_with("#2"), "{}", after.stdout);

    for (pattern, caller) in [("4930*", "4930111"), ("49*", "4930222"), ("44*", "4930333")] {
        let added = run(&server, &["settings", "route", "add", pattern, caller]).await;
        assert_eq!(added.code, Some(0), "{}", added.stderr);
    }
    let moved = run(
        &server,
        &["settings", "route", "move", "+44*", "--to", "1", "--json"],
    )
    .await;
    assert_eq!(moved.code, Some(0), "{}", moved.stderr);
    let shown: serde_json::Value = serde_json::from_str(moved.stdout.trim()).unwrap();
    let order: Vec<&str> = shown["routing_table"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["dest"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["44*", "4930*", "49*"]);
    let audit = run(&server, &["settings", "audit", "--limit", "1"]).await;
    assert!(audit.stdout.contains("route"), "{}", audit.stdout);
}

#[tokio::test]
async fn exit_codes_tell_usage_not_found_conflict_and_unreachable_apart() {
    let server = TestServer::start().await;
    let usage = run(&server, &["calls", "list", "--limit", "many"]).await;
    assert_eq!(usage.code, Some(2), "{}", usage.stderr);
    let not_found = run(&server, &["calls", "get", "no-such-call"]).await;
    assert_eq!(not_found.code, Some(3), "{}", not_found.stderr);
    assert!(
        not_found.stderr.contains("not found"),
        "{}",
        not_found.stderr
    );
    let no_rule = run(&server, &["settings", "route", "move", "43*", "--to", "1"]).await;
    assert_eq!(no_rule.code, Some(3), "{}", no_rule.stderr);
    let first = run(&server, &["settings", "block", "add", "4930123"]).await;
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    let again = run(&server, &["settings", "block", "add", "4930123"]).await;
    assert_eq!(again.code, Some(4), "{}", again.stderr);
    let everyone = run(&server, &["settings", "block", "add", "*"]).await;
    assert_eq!(everyone.code, Some(4), "needs --force: {}", everyone.stderr);

    // Nothing listens on port 1; host:port works as --grpc-addr takes it.
    let unreachable = run_env(&["calls", "list", "--server", "127.0.0.1:1"], &[]).await;
    assert_eq!(unreachable.code, Some(5), "{}", unreachable.stderr);
    assert!(
        unreachable
            .stderr
            .contains("cannot reach the sidecar at http://127.0.0.1:1"),
        "{}",
        unreachable.stderr
    );
    let status = run_env(
        &["bridge", "status", "--http-url", "http://127.0.0.1:1"],
        &[],
    )
    .await;
    assert_eq!(status.code, Some(5), "{}", status.stderr);
}

#[tokio::test]
async fn watch_against_a_wrong_address_says_so_and_ends() {
    let started = std::time::Instant::now();
    let watch = run_env(&["watch", "--server", "127.0.0.1:1"], &[]).await;
    assert_eq!(watch.code, Some(5), "{}", watch.stderr);
    assert!(
        watch.stderr.contains("http://127.0.0.1:1"),
        "{}",
        watch.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(20), "no retrying");
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[tokio::test]
async fn check_config_shows_flag_over_env_over_file_over_default_and_redacts() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("never-created.db");
    let file = dir.path().join("sidecar.toml");
    write(
        &file,
        &format!(
            "database = \"{}\"\ngrpc-addr = \"127.0.0.1:7001\"\nhttp-addr = \"127.0.0.1:7002\"\n\
             stale-call-secs = 600\nwebhook-token = \"file-token-secret\"\n\
             basic-auth = \"sipgate:file-password-secret\"\ntrusted-proxies = [\"127.0.0.1\", \"::1\"]\n",
            database.display()
        ),
    );
    let file_arg = file.display().to_string();
    let out = run_env(
        &["serve", "--check-config", "--http-addr", "127.0.0.1:7003"],
        &[
            ("SIDECAR_CONFIG", &file_arg),
            ("SIDECAR_HTTP_ADDR", "127.0.0.1:7004"),
            ("SIDECAR_GRPC_ADDR", "127.0.0.1:7005"),
            ("SIDECAR_GRPC_TOKEN", "env-grpc-secret"),
        ],
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let report = out.stdout;
    for line in [
        "http-addr = \"127.0.0.1:7003\"  # flag",
        "grpc-addr = \"127.0.0.1:7005\"  # env SIDECAR_GRPC_ADDR",
        "stale-call-secs = 600  # file",
        "trusted-proxies = [\"127.0.0.1\", \"::1\"]  # file",
        "retention-days = 365  # default",
        "webhook-token = \"<redacted>\"  # file",
        "basic-auth = \"<redacted>\"  # file",
        "grpc-token = \"<redacted>\"  # env SIDECAR_GRPC_TOKEN",
    ] {
        assert!(report.contains(line), "{line} in:\n{report}");
    }
    for secret in [
        "file-token-secret",
        "file-password-secret",
        "env-grpc-secret",
    ] {
        assert!(!report.contains(secret), "{secret} in:\n{report}");
    }
    assert!(!database.exists(), "--check-config opens no database");

    // The same file starts a real server; flags still win.
    let spawned = common::process::spawn_binary(dir.path(), &["--config", &file_arg]).await;
    assert!(
        spawned.ready["grpc_addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(database.exists(), "the database named in the file");
    drop(spawned);

    // Invalid: exit 2 with the reason; a wrong key names itself and the file.
    write(&file, "country-code = \"+49\"\n");
    let invalid = run_env(&["serve", "--check-config", "--config", &file_arg], &[]).await;
    assert_eq!(invalid.code, Some(2));
    assert!(
        invalid.stderr.contains("--country-code"),
        "{}",
        invalid.stderr
    );
    write(&file, "grpc-adress = \"127.0.0.1:1\"\n");
    let unknown = run_env(&["serve", "--check-config", "--config", &file_arg], &[]).await;
    assert_eq!(unknown.code, Some(2));
    assert!(
        unknown.stderr.contains("unknown key 'grpc-adress'") && unknown.stderr.contains(&file_arg),
        "{}",
        unknown.stderr
    );
}

#[tokio::test]
async fn completions_man_page_and_no_color() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run_env(&["completions", shell], &[]).await;
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert!(
            out.stdout.contains("sipgate-sidecar") && out.stdout.contains("set-done"),
            "{shell}"
        );
    }
    let man = run_env(&["man"], &[]).await;
    assert_eq!(man.code, Some(0));
    assert!(man.stdout.contains(".TH sipgate-sidecar"), "{}", man.stdout);
    // One subcommand's page, and every page into a directory.
    let zammad = run_env(&["man", "bridge", "zammad"], &[]).await;
    assert_eq!(zammad.code, Some(0), "{}", zammad.stderr);
    assert!(
        zammad.stdout.contains(".SH ENVIRONMENT"),
        "{}",
        zammad.stdout
    );
    assert!(
        zammad.stdout.contains("SIDECAR_BRIDGE_CTI_URL"),
        "{}",
        zammad.stdout
    );
    let wrong = run_env(&["man", "bridge", "nope"], &[]).await;
    assert_eq!(wrong.code, Some(2));
    assert!(wrong.stderr.contains("bridge nope"), "{}", wrong.stderr);
    let dir = tempfile::tempdir().unwrap();
    let all = run_env(&["man", "--dir", dir.path().to_str().unwrap()], &[]).await;
    assert_eq!(all.code, Some(0), "{}", all.stderr);
    let written =
        std::fs::read_to_string(dir.path().join("sipgate-sidecar-bridge-zammad.1")).unwrap();
    assert_eq!(written, zammad.stdout);
    assert!(dir.path().join("sipgate-sidecar-serve.1").exists());

    let forced = run_env(&["--help"], &[("CLICOLOR_FORCE", "1")]).await;
    assert!(forced.stdout.contains('\u{1b}'), "colour when forced");
    let plain = run_env(&["--help"], &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]).await;
    assert!(
        !plain.stdout.contains('\u{1b}'),
        "NO_COLOR wins: {}",
        plain.stdout
    );
    let usage = run_env(
        &["calls", "bogus"],
        &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")],
    )
    .await;
    assert_eq!(usage.code, Some(2));
    assert!(!usage.stderr.contains('\u{1b}'), "{}", usage.stderr);
}

#[tokio::test]
async fn bridge_status_finds_the_server_through_the_config_file_and_speaks_json() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let file = dir.path().join("sidecar.toml");
    write(
        &file,
        &format!(
            "database = \"{}\"\nhttp-addr = \"127.0.0.1:{port}\"\n",
            dir.path().join("s.db").display()
        ),
    );
    let file_arg = file.display().to_string();
    let http_addr = format!("127.0.0.1:{port}");
    let server = tokio::process::Command::new(BIN)
        .args(["--config", &file_arg, "serve", "--grpc-addr", "127.0.0.1:0"])
        .args(["--metrics-addr", "off", "--signature", "off"])
        .env("SIDECAR_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // No --http-url: the config file's http-addr (polled until it listens).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let out = loop {
        let out = run_env(&["--config", &file_arg, "bridge", "status", "--json"], &[]).await;
        if out.code == Some(0) || std::time::Instant::now() > deadline {
            break out;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let status: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(status["ready"], true, "{status}");
    assert_eq!(status["status"], "ready");
    assert_eq!(status["bridges"], serde_json::json!([]));
    drop(server);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // The server gone: unreachable (exit 5), naming the URL it tried.
    let out = run_env(&["--config", &file_arg, "bridge", "status", "--json"], &[]).await;
    assert_eq!(out.code, Some(5), "{}", out.stderr);
    assert!(out.stderr.contains(&http_addr), "{}", out.stderr);
}

#[tokio::test]
async fn global_flags_have_their_own_help_heading() {
    let out = run_env(&["settings", "show", "--help"], &[]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let help = out.stdout;
    let (own, global) = help
        .split_once("Global options (any subcommand, anywhere on the line):")
        .unwrap_or_else(|| panic!("no global heading in:\n{help}"));
    assert!(own.contains("--json"), "{help}");
    for flag in [
        "--server",
        "--grpc-token",
        "--ca-cert",
        "--config",
        "--log-format",
    ] {
        assert!(
            global.contains(flag),
            "{flag} under the global heading:\n{help}"
        );
        assert!(
            !own.contains(flag),
            "{flag} not among the subcommand's own:\n{help}"
        );
    }
}
