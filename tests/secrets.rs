//! Secrets given as files (`SIDECAR_X_FILE`) and kept out of `--help`.

use std::{process::Command, time::Duration};

const BINARY: &str = env!("CARGO_BIN_EXE_sipgate-sidecar");

#[tokio::test]
async fn a_webhook_token_from_a_file_guards_the_webhook_path() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("webhook-token");
    std::fs::write(&token_file, "from-a-file\n").unwrap();
    let ready_file = dir.path().join("ready.json");
    let mut child = tokio::process::Command::new(BINARY)
        .args([
            "serve",
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
        ])
        .args(["--metrics-addr", "off", "--signature", "off", "--database"])
        .arg(dir.path().join("s.db"))
        .arg("--ready-file")
        .arg(&ready_file)
        .env("SIDECAR_WEBHOOK_TOKEN_FILE", &token_file)
        .env_remove("SIDECAR_WEBHOOK_TOKEN")
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut ready = None;
    for _ in 0..1500 {
        if let Some(value) = std::fs::read_to_string(&ready_file)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        {
            ready = Some(value);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready = ready.expect("server ready within 30 s");
    let http = format!("http://{}", ready["http_addr"].as_str().unwrap());
    let body = "event=newCall&direction=in&from=492111234567&to=4930600000000&callId=f1";
    let client = reqwest::Client::new();
    let post = |path: String| {
        client
            .post(format!("{http}{path}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    // The trailing newline of the file is not part of the token.
    assert_eq!(
        post("/api/v1/sipgate/from-a-file/in".into())
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        post("/api/v1/sipgate/wrong/in".into())
            .await
            .unwrap()
            .status(),
        401
    );
    child.kill().await.unwrap();
}

#[test]
fn a_variable_and_its_file_together_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "a").unwrap();
    let output = Command::new(BINARY)
        .args(["serve", "--help"])
        .env("SIDECAR_WEBHOOK_TOKEN", "b")
        .env("SIDECAR_WEBHOOK_TOKEN_FILE", &token_file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("SIDECAR_WEBHOOK_TOKEN or SIDECAR_WEBHOOK_TOKEN_FILE, not both"),
        "{stderr}"
    );
}

#[test]
fn help_never_prints_secret_values() {
    let output = Command::new(BINARY)
        .args(["serve", "--help"])
        .env(
            "SIDECAR_FORWARD_URL",
            "https://crm:hunter2@crm.example.com/hook",
        )
        .env(
            "SIDECAR_ZAMMAD_CTI_URL",
            "https://z.example.com/api/v1/cti/tok3n",
        )
        .env("SIDECAR_WEBHOOK_TOKEN", "w3bh00k")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("SIDECAR_FORWARD_URL"), "{help}");
    for secret in ["hunter2", "tok3n", "w3bh00k"] {
        assert!(!help.contains(secret), "{secret} shown in --help");
    }
}

/// `serve` with `setup` applied, on a database in `dir`: its exit code and stderr.
fn serve_refusal(dir: &std::path::Path, setup: impl FnOnce(&mut Command)) -> (Option<i32>, String) {
    let mut command = Command::new(BINARY);
    command
        .args([
            "serve",
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
        ])
        .args(["--metrics-addr", "off", "--database"])
        .arg(dir.join("s.db"))
        .env_remove("SIDECAR_WEBHOOK_TOKEN")
        .env_remove("SIDECAR_GRPC_TOKEN");
    setup(&mut command);
    let output = command.output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn an_empty_secret_is_refused_naming_the_setting_instead_of_turning_the_check_off() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let config = dir.path().join("sidecar.toml");
    std::fs::write(&config, "webhook-token = \"\"\n").unwrap();
    type Setup<'a> = Box<dyn FnOnce(&mut Command) + 'a>;
    let cases: Vec<(&str, Setup)> = vec![
        (
            "--webhook-token",
            Box::new(|c: &mut Command| {
                c.args(["--webhook-token", ""]);
            }),
        ),
        (
            "--webhook-token",
            Box::new(|c: &mut Command| {
                c.env("SIDECAR_WEBHOOK_TOKEN_FILE", &empty);
            }),
        ),
        (
            "--webhook-token",
            Box::new(|c: &mut Command| {
                c.arg("--config").arg(&config);
            }),
        ),
        (
            "--grpc-token",
            Box::new(|c: &mut Command| {
                c.env("SIDECAR_GRPC_TOKEN_FILE", &empty);
            }),
        ),
        (
            "--forward-secret",
            Box::new(|c: &mut Command| {
                c.args([
                    "--forward-url",
                    "http://127.0.0.1:9/hook",
                    "--forward-secret",
                    "",
                ]);
            }),
        ),
    ];
    for (setting, setup) in cases {
        let (code, stderr) = serve_refusal(dir.path(), setup);
        assert_eq!(code, Some(2), "{setting}: {stderr}");
        assert!(stderr.contains(setting), "{setting}: {stderr}");
        assert!(stderr.contains("empty"), "{setting}: {stderr}");
    }
    assert!(!dir.path().join("s.db").exists(), "nothing was opened");
}

#[test]
fn a_database_password_is_never_printed_by_check_config_or_help() {
    let url = "postgres://sidecar:user-part-pw@127.0.0.1:1/calls?password=query-pw&sslmode=disable";
    for args in [&["serve", "--check-config"][..], &["serve", "--help"][..]] {
        let output = Command::new(BINARY)
            .args(args)
            .env("SIDECAR_DATABASE", url)
            .output()
            .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(!all.contains("user-part-pw"), "{args:?}: {all}");
        assert!(!all.contains("query-pw"), "{args:?}: {all}");
        if args[1] == "--check-config" {
            assert!(
                all.contains(
                    "postgres://sidecar@127.0.0.1:1/calls?password=<redacted>&sslmode=disable"
                ),
                "{all}"
            );
        }
    }
    // And from a file, like the other secrets.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("database-url");
    std::fs::write(&file, format!("{url}\n")).unwrap();
    let output = Command::new(BINARY)
        .args(["serve", "--check-config"])
        .env("SIDECAR_DATABASE_FILE", &file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("database = \"postgres://sidecar@127.0.0.1:1/calls?password=<redacted>"),
        "{stdout}"
    );
}

#[test]
fn a_standard_webhooks_secret_that_is_not_whsec_base64_is_refused_without_echoing_it() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = serve_refusal(dir.path(), |c| {
        c.args(["--forward-url", "http://127.0.0.1:9/hook"]).env(
            "SIDECAR_FORWARD_STANDARD_SECRET_FILE",
            dir.path().join("whsec"),
        );
        std::fs::write(dir.path().join("whsec"), "whsec_c2hvcnQ=,plain-s3cret\n").unwrap();
    });
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--forward-standard-secret"), "{stderr}");
    assert!(stderr.contains("24 to 64 bytes"), "{stderr}");
    assert!(
        !stderr.contains("c2hvcnQ") && !stderr.contains("s3cret"),
        "{stderr}"
    );
    assert!(!dir.path().join("s.db").exists(), "nothing was opened");
}
