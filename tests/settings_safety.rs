//! Safe settings changes end to end, against the real server: the Zammad
//! import refuses what it does not understand, takes what a Rails console
//! prints, keeps Zammad's own keys, has a dry run; blocking a whole country
//! needs --force; every change can be undone; concurrent admins do not
//! overwrite each other.

mod common;

use std::{path::PathBuf, time::Duration};

use common::with_metadata;
use serde_json::{Value, json};
use sipgate_sidecar::{
    Running,
    config::{Config, SignatureMode},
    proto::{self, settings_client::SettingsClient},
};
use tempfile::TempDir;
use tonic::{Code, transport::Channel};

struct Server {
    running: Running,
    grpc: String,
    dir: TempDir,
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let running = sipgate_sidecar::start(Config {
            http_addr: "127.0.0.1:0".parse().unwrap(),
            grpc_addr: "127.0.0.1:0".parse().unwrap(),
            metrics_addr: None,
            database: dir.path().join("sidecar.db").display().to_string(),
            signature: SignatureMode::Off,
            ..Config::default()
        })
        .await
        .expect("server starts");
        Server {
            grpc: format!("http://{}", running.grpc_addr),
            running,
            dir,
        }
    }

    async fn settings(&self) -> SettingsClient<Channel> {
        let channel = Channel::from_shared(self.grpc.clone())
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("gRPC connects");
        SettingsClient::new(channel)
    }

    async fn current(&self) -> proto::SettingsSnapshot {
        self.settings()
            .await
            .get_settings(proto::GetSettingsRequest {})
            .await
            .unwrap()
            .into_inner()
    }

    async fn audit_actions(&self) -> Vec<String> {
        self.settings()
            .await
            .list_audit(proto::ListAuditRequest::default())
            .await
            .unwrap()
            .into_inner()
            .entries
            .into_iter()
            .map(|e| e.action)
            .collect()
    }

    fn file(&self, name: &str, content: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    async fn cli(&self, args: &[&str]) -> Cli {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sipgate-sidecar"))
            .args(args)
            .args(["--server", &self.grpc])
            .output()
            .await
            .expect("binary runs");
        Cli {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    async fn stop(self) {
        self.running.stop().await.expect("clean shutdown");
    }
}

struct Cli {
    success: bool,
    stdout: String,
    stderr: String,
}

fn import(json: &str) -> proto::ImportZammadRequest {
    proto::ImportZammadRequest {
        json: json.into(),
        ..Default::default()
    }
}

async fn add_block(server: &Server, pattern: &str) -> proto::SettingsSnapshot {
    server
        .settings()
        .await
        .add_block_entry(proto::AddBlockEntryRequest {
            pattern: pattern.into(),
            note: "existing".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

const ZAMMAD: &str = r#"{
  "inbound": {"block_caller_ids": [{"caller_id": "4930123456", "note": "spam"}, {"caller_id": "anonymous", "note": null}]},
  "outbound": {"routing_table": [{"dest": "4930*", "caller_id": "4930777000001", "note": "berlin"}],
               "default_caller_id": "4930777000000"},
  "user_remote_map": [{"remote_user_id": "w0", "user_id": "agent@example.com"}, {"remote_user_id": "w1", "user_id": 7}],
  "view_limit": 120
}"#;

const RUBY: &str = r#"=> {"inbound"=>{"block_caller_ids"=>[{"caller_id"=>"4930123456", "note"=>"spam"}, {"caller_id"=>"anonymous", "note"=>nil}]}, "outbound"=>{"routing_table"=>[{"dest"=>"4930*", "caller_id"=>"4930777000001", "note"=>"berlin"}], "default_caller_id"=>"4930777000000"}, "user_remote_map"=>[{"remote_user_id"=>"w0", "user_id"=>"agent@example.com"}, {"remote_user_id"=>"w1", "user_id"=>7}], "view_limit"=>120}"#;

#[tokio::test]
async fn an_unknown_document_is_refused_and_nothing_changes() {
    let server = Server::start().await;
    add_block(&server, "4930111").await;
    let before = server.current().await;

    let refused = server
        .settings()
        .await
        .import_zammad(import(r#"{"foo":1}"#))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("unknown key 'foo'"),
        "{}",
        refused.message()
    );
    for doc in [
        "{}",
        r#"{"inbound":{"block_caller_ids":[]}}"#,
        r#"{"inbound":{"block_caller_ids":[{"caller_id":["4930"]}]},"outbound":{"routing_table":[]}}"#,
    ] {
        let status = server
            .settings()
            .await
            .import_zammad(import(doc))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{doc}");
    }

    let file = server.file("foo.json", r#"{"foo":1}"#);
    let cli = server
        .cli(&["settings", "import-zammad", file.to_str().unwrap()])
        .await;
    assert!(!cli.success, "{}", cli.stdout);
    assert!(cli.stderr.contains("foo"), "{}", cli.stderr);

    assert_eq!(server.current().await, before, "nothing was stored");
    assert_eq!(server.audit_actions().await, ["block.add"]);
    server.stop().await;
}

#[tokio::test]
async fn rails_console_forms_import_and_user_remote_map_round_trips() {
    let server = Server::start().await;
    let ruby = server.file("ruby.txt", RUBY);
    let cli = server
        .cli(&["settings", "import-zammad", ruby.to_str().unwrap()])
        .await;
    assert!(cli.success, "{}", cli.stderr);
    let shown = server.cli(&["settings", "show", "--json"]).await;
    let shown: Value = serde_json::from_str(&shown.stdout).unwrap();
    assert_eq!(shown["block_list"][0]["pattern"], "4930123456");
    assert_eq!(
        shown["user_remote_map"],
        json!([{"remote_user_id": "w0", "user_id": "agent@example.com"},
               {"remote_user_id": "w1", "user_id": "7"}])
    );

    let exported = server.cli(&["settings", "export-zammad"]).await;
    assert!(exported.success, "{}", exported.stderr);
    let exported: Value = serde_json::from_str(&exported.stdout).unwrap();
    let original: Value = serde_json::from_str(ZAMMAD).unwrap();
    assert_eq!(exported["user_remote_map"], original["user_remote_map"]);
    assert_eq!(exported["view_limit"], original["view_limit"]);
    assert_eq!(
        exported["inbound"]["block_caller_ids"][0],
        original["inbound"]["block_caller_ids"][0]
    );

    // `p Setting.get('sipgate_config').to_json`: the JSON as a quoted string.
    let quoted = serde_json::to_string(&serde_json::to_string(&original).unwrap()).unwrap();
    let version = server.current().await.version;
    let again = server
        .settings()
        .await
        .import_zammad(import(&quoted))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.version, version + 1);
    assert_eq!(again.user_remote_map.len(), 2);
    assert_eq!(again.block_list, server.current().await.block_list);
    server.stop().await;
}

#[tokio::test]
async fn dry_run_prints_the_diff_and_stores_nothing() {
    let server = Server::start().await;
    add_block(&server, "4940111").await;
    server
        .settings()
        .await
        .set_default_caller_id(proto::SetDefaultCallerIdRequest {
            caller_id: "4930555000000".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let before = server.current().await;
    let file = server.file("zammad.json", ZAMMAD);

    let dry = server
        .cli(&[
            "settings",
            "import-zammad",
            "--dry-run",
            file.to_str().unwrap(),
        ])
        .await;
    assert!(dry.success, "{}", dry.stderr);
    for expected in [
        "+ block 4930123456",
        "+ block anonymous",
        "- block 4940111",
        "+ route 4930*",
        "default caller ID 4930555000000 -> 4930777000000",
        "user_remote_map changed",
    ] {
        assert!(dry.stdout.contains(expected), "{expected}: {}", dry.stdout);
    }
    let json = server
        .cli(&[
            "settings",
            "import-zammad",
            "--dry-run",
            "--json",
            file.to_str().unwrap(),
        ])
        .await;
    let diff: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(diff["blocks_added"].as_array().unwrap().len(), 2);
    assert_eq!(diff["blocks_removed"][0]["pattern"], "4940111");
    assert_eq!(diff["default_caller_id"]["after"], "4930777000000");

    assert_eq!(server.current().await, before, "a dry run stores nothing");
    assert_eq!(
        server.audit_actions().await,
        ["default_caller_id.set", "block.add"]
    );

    let real = server
        .cli(&["settings", "import-zammad", file.to_str().unwrap()])
        .await;
    assert!(real.success, "{}", real.stderr);
    assert!(real.stdout.contains("- block 4940111"), "{}", real.stdout);
    assert_eq!(server.current().await.version, before.version + 1);
    server.stop().await;
}

#[tokio::test]
async fn blocking_a_whole_country_or_everyone_needs_force() {
    let server = Server::start().await;
    for pattern in ["*", "49*"] {
        let refused = server
            .settings()
            .await
            .add_block_entry(proto::AddBlockEntryRequest {
                pattern: pattern.into(),
                note: String::new(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition, "{pattern}");
        assert!(
            refused.message().contains("--force"),
            "{}",
            refused.message()
        );
    }
    let cli = server.cli(&["settings", "block", "add", "49*"]).await;
    assert!(!cli.success);
    assert!(
        cli.stderr
            .contains("pattern 49* blocks every call from Germany; repeat with --force"),
        "{}",
        cli.stderr
    );
    assert!(server.current().await.block_list.is_empty());

    let forced = server
        .cli(&["settings", "block", "add", "49*", "--force"])
        .await;
    assert!(forced.success, "{}", forced.stderr);
    let star = server
        .settings()
        .await
        .add_block_entry(with_metadata(
            proto::AddBlockEntryRequest {
                pattern: "*".into(),
                note: String::new(),
                ..Default::default()
            },
            &[("x-sidecar-force", "true")],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(star.block_list.len(), 2);

    // Inside an import too: a new country-wide pattern needs --force.
    let doc = r#"{"inbound":{"block_caller_ids":[{"caller_id":"41*","note":"all of Switzerland"}]},
                  "outbound":{"routing_table":[]}}"#;
    let refused = server
        .settings()
        .await
        .import_zammad(import(doc))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("Switzerland"),
        "{}",
        refused.message()
    );
    let file = server.file("broad.json", doc);
    let cli = server
        .cli(&["settings", "import-zammad", file.to_str().unwrap()])
        .await;
    assert!(!cli.success);
    assert!(cli.stderr.contains("41*"), "{}", cli.stderr);
    assert_eq!(server.current().await.block_list.len(), 2);
    let forced = server
        .cli(&[
            "settings",
            "import-zammad",
            "--force",
            file.to_str().unwrap(),
        ])
        .await;
    assert!(forced.success, "{}", forced.stderr);
    assert_eq!(server.current().await.block_list[0].pattern, "41*");
    server.stop().await;
}

#[tokio::test]
async fn undo_restores_the_settings_before_a_change() {
    let server = Server::start().await;
    let file = server.file("zammad.json", ZAMMAD);
    add_block(&server, "4940111").await;
    let before_import = server.current().await;
    let imported = server
        .cli(&["settings", "import-zammad", file.to_str().unwrap()])
        .await;
    assert!(imported.success, "{}", imported.stderr);
    assert_ne!(server.current().await.block_list, before_import.block_list);

    let undo = server.cli(&["settings", "undo"]).await;
    assert!(undo.success, "{}", undo.stderr);
    let restored = server.current().await;
    assert_eq!(restored.block_list, before_import.block_list);
    assert_eq!(restored.routing_table, before_import.routing_table);
    assert_eq!(restored.default_caller_id, before_import.default_caller_id);
    assert!(restored.user_remote_map.is_empty());
    assert_eq!(restored.version, before_import.version + 2);

    // Undo a named entry: the very first change (the block entry).
    let audit = server
        .settings()
        .await
        .list_audit(proto::ListAuditRequest::default())
        .await
        .unwrap()
        .into_inner();
    let actions: Vec<&str> = audit.entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["audit.restore", "import.zammad", "block.add"]);
    let first = audit.entries[2].id.to_string();
    let undo_first = server.cli(&["settings", "undo", &first]).await;
    assert!(undo_first.success, "{}", undo_first.stderr);
    assert!(server.current().await.block_list.is_empty());

    // Undo is a change like any other: a stale version is refused.
    let stale = server
        .settings()
        .await
        .restore_audit(with_metadata(
            proto::RestoreAuditRequest {
                id: 0,
                ..Default::default()
            },
            &[("x-sidecar-expected-version", "1")],
        ))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    let missing = server.cli(&["settings", "undo", "999"]).await;
    assert!(!missing.success);
    assert!(missing.stderr.contains("999"), "{}", missing.stderr);
    server.stop().await;
}

#[tokio::test]
async fn stale_versions_are_aborted_and_concurrent_cli_edits_all_land() {
    let server = Server::start().await;
    let stored = add_block(&server, "4940111").await;
    assert_eq!(stored.version, 1);
    let mut client = server.settings().await;
    let stale = client
        .add_block_entry(with_metadata(
            proto::AddBlockEntryRequest {
                pattern: "4940112".into(),
                note: String::new(),
                ..Default::default()
            },
            &[("x-sidecar-expected-version", "0")],
        ))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    assert!(stale.message().contains("version 1"), "{}", stale.message());
    let stale_import = client
        .import_zammad(with_metadata(
            import(ZAMMAD),
            &[("x-sidecar-expected-version", "0")],
        ))
        .await
        .unwrap_err();
    assert_eq!(stale_import.code(), Code::Aborted);
    assert_eq!(server.current().await.version, 1);
    let fresh = client
        .add_block_entry(with_metadata(
            proto::AddBlockEntryRequest {
                pattern: "4940112".into(),
                note: String::new(),
                ..Default::default()
            },
            &[("x-sidecar-expected-version", "1")],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fresh.version, 2);
    let garbage = client
        .add_block_entry(with_metadata(
            proto::AddBlockEntryRequest {
                pattern: "4940113".into(),
                note: String::new(),
                ..Default::default()
            },
            &[("x-sidecar-expected-version", "two")],
        ))
        .await
        .unwrap_err();
    assert_eq!(garbage.code(), Code::InvalidArgument);

    // Several admins at once: every single edit lands, retried on conflict.
    let numbers: Vec<String> = (0..6).map(|i| format!("49301000{i}")).collect();
    let args: Vec<[&str; 4]> = numbers
        .iter()
        .map(|n| ["settings", "block", "add", n.as_str()])
        .collect();
    let runs = futures::future::join_all(args.iter().map(|a| server.cli(a))).await;
    for run in &runs {
        assert!(run.success, "{}", run.stderr);
    }
    let blocked = server.current().await.block_list;
    for n in &numbers {
        assert!(blocked.iter().any(|b| &b.pattern == n), "{n} missing");
    }
    server.stop().await;
}

#[tokio::test]
async fn large_imports_are_capped_and_huge_inputs_are_not_echoed() {
    let server = Server::start().await;
    let entries = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"caller_id": format!("4930{i:07}"), "note": "bulk"}))
            .collect()
    };
    let routes: Vec<Value> = (0..10_000)
        .map(|i| json!({"dest": format!("4940{i:07}*"), "caller_id": "4930777000000", "note": ""}))
        .collect();
    let full = json!({"inbound": {"block_caller_ids": entries(10_000)},
                      "outbound": {"routing_table": routes}});
    let stored = server
        .settings()
        .await
        .import_zammad(import(&full.to_string()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.block_list.len(), 10_000);
    assert_eq!(stored.routing_table.len(), 10_000);

    let over = json!({"inbound": {"block_caller_ids": entries(10_001)},
                      "outbound": {"routing_table": []}});
    let refused = server
        .settings()
        .await
        .import_zammad(import(&over.to_string()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("at most 10000"),
        "{}",
        refused.message()
    );
    let full_list = server
        .settings()
        .await
        .add_block_entry(proto::AddBlockEntryRequest {
            pattern: "4999123".into(),
            note: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        full_list.message().contains("at most 10000"),
        "{}",
        full_list.message()
    );

    let huge = "1".repeat(2_000_000);
    let refused = server
        .settings()
        .await
        .add_block_entry(proto::AddBlockEntryRequest {
            pattern: huge.clone(),
            note: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().len() < 300, "{}", refused.message().len());
    let refused = server
        .settings()
        .await
        .import_zammad(import(&format!(r#"{{"{huge}":1}}"#)))
        .await
        .unwrap_err();
    assert!(refused.message().len() < 400, "{}", refused.message().len());
    assert_eq!(server.current().await.block_list.len(), 10_000);
    server.stop().await;
}
