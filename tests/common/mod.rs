//! Starts the real server on loopback port 0 with a temporary database, and
//! talks to it with a real HTTP client and the generated tonic clients.
#![allow(dead_code)]

pub mod disk;
pub mod process;

use std::time::Duration;

use sipgate_sidecar::{
    Running,
    config::{Config, SignatureMode},
    proto::{
        self, call_events_client::CallEventsClient, call_log_client::CallLogClient,
        settings_client::SettingsClient,
    },
};
use tempfile::TempDir;
use tonic::transport::Channel;

pub struct TestServer {
    pub running: Option<Running>,
    pub http: String,
    pub grpc: String,
    pub dir: TempDir,
    pub client: reqwest::Client,
}

pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: String,
    pub www_authenticate: Option<String>,
}

pub fn test_config(dir: &TempDir) -> Config {
    Config {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        metrics_addr: None,
        database: dir.path().join("sidecar.db").display().to_string(),
        signature: SignatureMode::Off,
        ..Config::default()
    }
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(configure: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(&dir);
        configure(&mut config);
        Self::start_in(dir, config).await
    }

    /// Starts on an existing directory (restart on the same database).
    pub async fn start_in(dir: TempDir, config: Config) -> Self {
        let running = sipgate_sidecar::start(config).await.expect("server starts");
        TestServer {
            http: format!("http://{}", running.http_addr),
            grpc: format!("http://{}", running.grpc_addr),
            running: Some(running),
            dir,
            client: reqwest::Client::new(),
        }
    }

    /// Graceful stop; returns the temp dir so the database can be reopened.
    pub async fn stop(mut self) -> TempDir {
        if let Some(running) = self.running.take() {
            running.stop().await.expect("clean shutdown");
        }
        self.dir
    }

    pub async fn post(&self, path: &str, body: &str) -> Reply {
        self.post_with(path, body.as_bytes().to_vec(), &[]).await
    }

    pub async fn post_with(&self, path: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> Reply {
        let mut request = self
            .client
            .post(format!("{}{}", self.http, path))
            .header("user-agent", "sipgate.io")
            .body(body);
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            request = request.header(
                "content-type",
                "application/x-www-form-urlencoded; charset=UTF-8",
            );
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await.expect("request reaches the server");
        Reply {
            status: response.status().as_u16(),
            content_type: response
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default(),
            www_authenticate: response
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_string()),
            body: response.text().await.unwrap(),
        }
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.grpc.clone())
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("gRPC connects")
    }

    pub async fn settings(&self) -> SettingsClient<Channel> {
        SettingsClient::new(self.channel().await)
    }

    pub async fn events(&self) -> CallEventsClient<Channel> {
        CallEventsClient::new(self.channel().await)
    }

    pub async fn calls(&self) -> CallLogClient<Channel> {
        CallLogClient::new(self.channel().await)
    }

    pub async fn head_seq(&self) -> u64 {
        self.events()
            .await
            .list_events(proto::ListEventsRequest {
                after_seq: 0,
                limit: 1,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .head_seq
    }

    pub async fn all_events(&self) -> Vec<proto::CallEvent> {
        let mut client = self.events().await;
        let mut after = 0;
        let mut all = Vec::new();
        loop {
            let page = client
                .list_events(proto::ListEventsRequest {
                    after_seq: after,
                    limit: 1000,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            if page.events.is_empty() {
                return all;
            }
            after = page.next_after_seq;
            all.extend(page.events);
        }
    }

    pub async fn call(&self, call_id: &str) -> proto::Call {
        self.calls()
            .await
            .get_call(proto::GetCallRequest {
                call_id: call_id.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("call {call_id}: {e}"))
            .into_inner()
    }
}

/// Form-encodes pairs the way sipgate does (brackets percent-encoded, `+` for space).
pub fn form(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.split(' ')
            .map(|part| {
                percent_encoding::utf8_percent_encode(part, percent_encoding::NON_ALPHANUMERIC)
                    .to_string()
            })
            .collect::<Vec<_>>()
            .join("+")
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

pub fn new_call(direction: &str, from: &str, to: &str, call_id: &str) -> String {
    form(&[
        ("event", "newCall"),
        ("direction", direction),
        ("from", from),
        ("to", to),
        ("callId", call_id),
        ("origCallId", call_id),
        ("user[]", "Alice Agent"),
        ("xcid", "5aada1e696b94cec"),
    ])
}

pub fn answer(direction: &str, call_id: &str, user: &str) -> String {
    form(&[
        ("event", "answer"),
        ("direction", direction),
        ("callId", call_id),
        ("user", user),
        ("from", "492111234567"),
        ("to", "4915791234567"),
        ("answeringNumber", "4921199999999"),
    ])
}

pub fn hangup(direction: &str, call_id: &str, cause: &str) -> String {
    form(&[
        ("event", "hangup"),
        ("direction", direction),
        ("callId", call_id),
        ("cause", cause),
        ("from", "492111234567"),
        ("to", "4915791234567"),
    ])
}

/// The reply Zammad gives for a plain newCall, for `base`/`direction`.
pub fn plain_reply(callback: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response onHangup=\"{callback}\" onAnswer=\"{callback}\"/>\n"
    )
}

/// A new, empty database on the PostgreSQL server tests use
/// (`SIDECAR_TEST_POSTGRES`, a URL whose role may create databases); its
/// URL. Unset, the test fails under CI (`CI` set) and is skipped, loudly,
/// elsewhere (`None`).
pub async fn postgres_database(test: &str) -> Option<String> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let server = match std::env::var("SIDECAR_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => url,
        _ if std::env::var_os("CI").is_some() => {
            panic!("{test}: SIDECAR_TEST_POSTGRES is not set (CI runs the PostgreSQL tests too)")
        }
        _ => {
            eprintln!(
                "SKIPPED {test}: set SIDECAR_TEST_POSTGRES=postgres://… (bash .ci/run starts a server)"
            );
            return None;
        }
    };
    let name = format!(
        "sidecar_it_{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    );
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&server)
        .await
        .expect("connect to SIDECAR_TEST_POSTGRES");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create a test database");
    let (base, query) = match server.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (server.as_str(), String::new()),
    };
    let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
    Some(format!("{base}/{name}{query}"))
}

/// A request with metadata `pairs` (e.g. the preconditions older clients send).
pub fn with_metadata<T>(message: T, pairs: &[(&'static str, &str)]) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    for (key, value) in pairs {
        request.metadata_mut().insert(*key, value.parse().unwrap());
    }
    request
}

/// The ```sh blocks of the README between two markers.
pub fn readme_blocks(from: &str, to: &str) -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find(from)
        .unwrap_or_else(|| panic!("README: {from}"));
    let end = start
        + readme[start..]
            .find(to)
            .unwrap_or_else(|| panic!("README: {to}"));
    readme[start..end]
        .split("```sh\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap().to_string())
        .collect()
}
