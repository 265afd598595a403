//! The shipped subscribers against the real sidecar and a local stand-in for
//! Zammad's generic CTI endpoint (and for a CRM's JSON webhook).

mod common;

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::post,
};
use common::*;
use sipgate_sidecar::{
    cli::run_bridge,
    config::{
        BlockedCalls, BridgeCommand, BridgeConfig, BridgeTarget, ClientArgs, DeliveryArgs,
        OnRefusal,
    },
};
use tokio_util::sync::CancellationToken;

/// What the fake Zammad saw and how it answers, like Zammad's generic CTI
/// controller and driver (`Cti::Driver::Base#process`, `Cti::Log.process`).
#[derive(Default)]
struct Zammad {
    posts: Vec<HashMap<String, String>>,
    /// The caller log (`cti_logs`), by call_id.
    log: HashMap<String, LogRow>,
    /// `cti_config.inbound.block_caller_ids[].caller_id`.
    block_caller_ids: Vec<String>,
    /// call_ids of the `cti_event` pop-ups pushed to agents.
    notified: Vec<String>,
    /// call_ids answered 422 (e.g. a setting Zammad refuses).
    refuse: HashSet<String>,
    /// Zammad's users: (id, login, phone).
    agents: Vec<(u64, &'static str, &'static str)>,
    /// (call_id, agent id) of the pop-ups an inbound answer pushed, `None`
    /// when no agent was found (then nobody gets one).
    answered_by: Vec<(String, Option<u64>)>,
}

/// A caller-log row: the columns the done rules use.
#[derive(Debug, Clone, PartialEq)]
struct LogRow {
    direction: String,
    from: String,
    state: String,
    done: bool,
    to_comment: Option<String>,
    comment: Option<String>,
}

type Shared = Arc<Mutex<Zammad>>;

async fn cti(
    State(zammad): State<Shared>,
    Path(token): Path<String>,
    body: Bytes,
) -> (StatusCode, String) {
    let form: HashMap<String, String> = form_urlencoded_pairs(&body);
    let mut z = zammad.lock().unwrap();
    z.posts.push(form.clone());
    if token != "good-token" {
        return (
            StatusCode::UNAUTHORIZED,
            r#"{"error":"Invalid token, please contact your admin!"}"#.into(),
        );
    }
    let call_id = form.get("call_id").cloned().unwrap_or_default();
    if z.refuse.contains(&call_id) {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            r#"{"error":"refused"}"#.into(),
        );
    }
    let param = |k: &str| form.get(k).cloned().unwrap_or_default();
    let direction = param("direction");
    if direction != "in" && direction != "out" {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            r#"{"error":"Invalid 'direction'!"}"#.into(),
        );
    }
    let event = param("event");
    // reject_check: inbound newCall, exact string comparison with `from`.
    let rejected =
        event == "newCall" && direction == "in" && z.block_caller_ids.contains(&param("from"));
    let no_such_call = || {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"error":"Error ID abc: Please contact your administrator."}"#.to_string(),
        )
    };
    match event.as_str() {
        "newCall" => {
            if z.log.contains_key(&call_id) {
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    r#"{"error":"Object already exists!","error_human":"Object already exists!"}"#
                        .into(),
                );
            }
            let row = LogRow {
                done: direction != "in",
                direction: direction.clone(),
                from: param("from"),
                state: "newCall".into(),
                to_comment: form.get("user").cloned().filter(|u| !u.is_empty()),
                comment: form.get("cause").cloned(),
            };
            z.log.insert(call_id.clone(), row);
            if rejected {
                // Logged, nobody notified.
                return (
                    StatusCode::OK,
                    r#"{"action":"reject","reason":"busy"}"#.into(),
                );
            }
            // push_incoming_call: every agent (no notify_map).
            if direction == "in" {
                z.notified.push(call_id);
            }
            (StatusCode::OK, "{}".into())
        }
        "answer" => {
            if !z.log.contains_key(&call_id) {
                return no_such_call();
            }
            // Finding the recipient as the generic driver does: by
            // answeringNumber (phone), then `user` (login), then `user_id`.
            if direction == "in" {
                let user = param("user").to_lowercase();
                let recipient = z
                    .agents
                    .iter()
                    .find(|a| {
                        !param("answeringNumber").is_empty() && a.2 == param("answeringNumber")
                    })
                    .or_else(|| z.agents.iter().find(|a| !user.is_empty() && a.1 == user))
                    .or_else(|| {
                        z.agents
                            .iter()
                            .find(|a| a.0.to_string() == param("user_id"))
                    })
                    .map(|a| a.0);
                z.answered_by.push((call_id.clone(), recipient));
            }
            let Some(row) = z.log.get_mut(&call_id) else {
                return no_such_call();
            };
            if row.state != "hangup" {
                row.state = "answer".into();
                row.done = true;
                if let Some(user) = form.get("user") {
                    row.to_comment = Some(user.clone());
                }
                row.comment = form.get("cause").cloned();
            }
            (StatusCode::OK, "{}".into())
        }
        "hangup" => {
            let Some(row) = z.log.get_mut(&call_id) else {
                return no_such_call();
            };
            let cause = param("cause");
            row.done = !(direction == "in"
                && ((row.state == "newCall" && cause != "forwarded")
                    || row.to_comment.as_deref() == Some("voicemail")));
            row.state = "hangup".into();
            row.comment = Some(cause);
            (StatusCode::OK, "{}".into())
        }
        _ => (
            StatusCode::UNPROCESSABLE_ENTITY,
            r#"{"error":"Unknown event"}"#.into(),
        ),
    }
}

fn form_urlencoded_pairs(body: &[u8]) -> HashMap<String, String> {
    sipgate_sidecar::sipgate::form::parse_form(body)
        .unwrap()
        .into_iter()
        .collect()
}

async fn serve_on(listener: tokio::net::TcpListener, router: Router) {
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
}

async fn fake_zammad() -> (Shared, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shared = Shared::default();
    serve_on(
        listener,
        Router::new()
            .route("/api/v1/cti/{token}", post(cti))
            .with_state(shared.clone()),
    )
    .await;
    (shared, addr)
}

fn fast_delivery() -> DeliveryArgs {
    DeliveryArgs {
        max_attempts: 3,
        on_refusal: OnRefusal::Stop,
        backoff_ms: 20,
        max_backoff_ms: 200,
        timeout_ms: 2000,
    }
}

fn spawn_zammad_bridge(
    server: &TestServer,
    cti_url: String,
    state: std::path::PathBuf,
    delivery: DeliveryArgs,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    spawn_zammad_bridge_with(server, cti_url, state, delivery, BlockedCalls::default())
}

fn spawn_zammad_bridge_with(
    server: &TestServer,
    cti_url: String,
    state: std::path::PathBuf,
    delivery: DeliveryArgs,
    blocked_calls: BlockedCalls,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let token = CancellationToken::new();
    let args = ClientArgs {
        server: server.grpc.clone(),
        grpc_token: None,
        ca_cert: None,
        client_cert: None,
        client_key: None,
    };
    let command = BridgeCommand::Zammad {
        cti_url,
        state,
        start_from_now: false,
        blocked_calls,
        delivery,
    };
    let task = tokio::spawn(run_bridge_owned(args, command, token.clone()));
    (token, task)
}

async fn run_bridge_owned(
    args: ClientArgs,
    command: BridgeCommand,
    token: CancellationToken,
) -> anyhow::Result<()> {
    run_bridge(&args, command, token).await
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn answered_call(server: &TestServer, call_id: &str) {
    for body in [
        new_call("in", "492111234567", "4930600000000", call_id),
        answer("in", call_id, "Alice Agent"),
        hangup("in", call_id, "normalClearing"),
    ] {
        assert_eq!(server.post("/api/v1/sipgate/in", &body).await.status, 200);
    }
}

#[tokio::test]
async fn zammad_gets_every_event_with_its_parameters_in_order() {
    let server = TestServer::start().await;
    let (zammad, addr) = fake_zammad().await;
    server
        .settings()
        .await
        .add_block_entry(sipgate_sidecar::proto::AddBlockEntryRequest {
            pattern: "4930123456".into(),
            note: String::new(),
            ..Default::default()
        })
        .await
        .unwrap();
    answered_call(&server, "z1").await;
    // A blocked call: the synthetic end goes to Zammad too. dtmf does not.
    server
        .post(
            "/api/v1/sipgate/in",
            &new_call("in", "4930123456", "4930600000000", "z2"),
        )
        .await;
    server
        .post(
            "/api/v1/sipgate/in",
            &form(&[("event", "dtmf"), ("callId", "z1"), ("dtmf", "1")]),
        )
        .await;

    let state = server.dir.path().join("zammad.cursor");
    let (stop, task) = spawn_zammad_bridge(
        &server,
        format!("http://{addr}/api/v1/cti/good-token"),
        state.clone(),
        fast_delivery(),
    );
    wait_for("5 posts", || zammad.lock().unwrap().posts.len() >= 5).await;
    // Stopping while a delivery is in flight leaves the cursor before it (by
    // design): let the bridge record the last post and pass over the dtmf first.
    wait_for("the cursor past the dtmf", || {
        std::fs::read_to_string(&state).is_ok_and(|c| c.contains("\"after_seq\":6"))
    })
    .await;
    stop.cancel();
    task.await.unwrap().unwrap();

    let posts = zammad.lock().unwrap().posts.clone();
    let summary: Vec<(String, String)> = posts
        .iter()
        .map(|p| (p["event"].clone(), p["call_id"].clone()))
        .collect();
    let expected: Vec<(String, String)> = [
        ("newCall", "z1"),
        ("answer", "z1"),
        ("hangup", "z1"),
        ("newCall", "z2"),
        ("hangup", "z2"),
    ]
    .iter()
    .map(|(e, c)| (e.to_string(), c.to_string()))
    .collect();
    assert_eq!(summary, expected);
    assert_eq!(posts[0]["from"], "492111234567");
    assert_eq!(posts[0]["to"], "4930600000000");
    assert_eq!(posts[0]["direction"], "in");
    assert_eq!(posts[0]["user"], "Alice Agent");
    assert_eq!(posts[1]["user"], "Alice Agent");
    assert_eq!(posts[1]["answeringNumber"], "4921199999999");
    assert_eq!(posts[2]["cause"], "normalClearing");
    assert_eq!(posts[4]["cause"], "rejected");
    assert_eq!(posts[4]["direction"], "in");
    // The cursor sits on the last event (the dtmf, passed over).
    let cursor = std::fs::read_to_string(&state).unwrap();
    assert!(cursor.contains("\"after_seq\":6"), "{cursor}");
}

#[tokio::test]
async fn a_bridge_restart_loses_nothing_and_duplicates_count_as_delivered() {
    let server = TestServer::start().await;
    let (zammad, addr) = fake_zammad().await;
    let url = format!("http://{addr}/api/v1/cti/good-token");
    let state = server.dir.path().join("zammad.cursor");
    answered_call(&server, "r1").await;
    let (stop, task) = spawn_zammad_bridge(&server, url.clone(), state.clone(), fast_delivery());
    wait_for("first call", || zammad.lock().unwrap().posts.len() >= 3).await;
    stop.cancel();
    task.await.unwrap().unwrap();

    answered_call(&server, "r2").await;
    answered_call(&server, "r3").await;
    // Pretend the last cursor write was lost: the in-flight newCall of r1 repeats
    // and Zammad's "already exists" counts as delivered.
    std::fs::write(&state, "{\"after_seq\":0}").unwrap();
    let (stop, task) = spawn_zammad_bridge(&server, url, state, fast_delivery());
    wait_for("all calls", || {
        let z = zammad.lock().unwrap();
        // r1's hangup twice (the replay), r2's and r3's once.
        z.posts.iter().filter(|p| p["event"] == "hangup").count() >= 4
    })
    .await;
    stop.cancel();
    task.await.unwrap().unwrap();

    let z = zammad.lock().unwrap();
    for call in ["r1", "r2", "r3"] {
        for event in ["newCall", "answer", "hangup"] {
            assert!(
                z.posts
                    .iter()
                    .any(|p| p["call_id"] == call && p["event"] == event),
                "{event} of {call} missing"
            );
        }
    }
    let r2: Vec<&str> = z
        .posts
        .iter()
        .filter(|p| p["call_id"] == "r2")
        .map(|p| p["event"].as_str())
        .collect();
    assert_eq!(
        r2,
        ["newCall", "answer", "hangup"],
        "r2 exactly once, in order"
    );
}

#[tokio::test]
async fn a_receiver_that_is_down_gets_everything_once_it_is_back() {
    let server = TestServer::start().await;
    // Connections are refused until Zammad "comes back": a socket bound but
    // not listening refuses them and keeps the port from every other server.
    let reserved = tokio::net::TcpSocket::new_v4().unwrap();
    reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = reserved.local_addr().unwrap();
    answered_call(&server, "down1").await;
    let state = server.dir.path().join("zammad.cursor");
    let (stop, task) = spawn_zammad_bridge(
        &server,
        format!("http://{addr}/api/v1/cti/good-token"),
        state,
        fast_delivery(),
    );
    answered_call(&server, "down2").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        !task.is_finished(),
        "an unreachable receiver never stops the bridge"
    );

    let listener = reserved.listen(128).unwrap();
    let zammad = Shared::default();
    serve_on(
        listener,
        Router::new()
            .route("/api/v1/cti/{token}", post(cti))
            .with_state(zammad.clone()),
    )
    .await;
    wait_for("6 posts", || zammad.lock().unwrap().posts.len() >= 6).await;
    stop.cancel();
    task.await.unwrap().unwrap();
    let events: Vec<String> = zammad
        .lock()
        .unwrap()
        .posts
        .iter()
        .map(|p| format!("{}:{}", p["event"], p["call_id"]))
        .collect();
    assert_eq!(
        events,
        [
            "newCall:down1",
            "answer:down1",
            "hangup:down1",
            "newCall:down2",
            "answer:down2",
            "hangup:down2"
        ]
    );
}

#[tokio::test]
async fn a_wrong_token_stops_the_bridge_instead_of_spinning_and_skip_moves_on() {
    let server = TestServer::start().await;
    let (zammad, addr) = fake_zammad().await;
    answered_call(&server, "t1").await;
    let state = server.dir.path().join("zammad.cursor");
    let (_stop, task) = spawn_zammad_bridge(
        &server,
        format!("http://{addr}/api/v1/cti/wrong-token"),
        state.clone(),
        fast_delivery(),
    );
    let result = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the bridge gives up on a permanent 401")
        .unwrap();
    let error = format!("{:#}", result.unwrap_err());
    assert!(
        error.contains("401") && error.contains("refused 3 times"),
        "{error}"
    );
    assert!(
        !state.exists(),
        "the refused event was not marked delivered"
    );
    assert_eq!(
        zammad.lock().unwrap().posts.len(),
        3,
        "three attempts, then stop"
    );

    // With --on-refusal skip, a refused event is logged and passed over.
    zammad.lock().unwrap().refuse.insert("t1".into());
    answered_call(&server, "t2").await;
    let delivery = DeliveryArgs {
        on_refusal: OnRefusal::Skip,
        ..fast_delivery()
    };
    let (stop, task) = spawn_zammad_bridge(
        &server,
        format!("http://{addr}/api/v1/cti/good-token"),
        state,
        delivery,
    );
    wait_for("t2 hangup", || {
        zammad
            .lock()
            .unwrap()
            .posts
            .iter()
            .any(|p| p["call_id"] == "t2" && p["event"] == "hangup")
    })
    .await;
    stop.cancel();
    task.await.unwrap().unwrap();
}

/// `settings export-zammad --cti` against `server`: the Rails console
/// command it prints, and its stderr.
async fn export_for_zammad_cti(server: &TestServer) -> (String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_sipgate-sidecar"))
        .args([
            "--server",
            &server.grpc,
            "settings",
            "export-zammad",
            "--cti",
        ])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    (
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// The caller IDs a Rails console stores from the command: the JSON inside
/// `JSON.parse('...')`, unescaped as a Ruby single-quoted string.
fn caller_ids_stored_by(rails_command: &str) -> Vec<String> {
    let start = rails_command.find("JSON.parse('").unwrap() + "JSON.parse('".len();
    let end = start + rails_command[start..].find("')").unwrap();
    let json = rails_command[start..end]
        .replace("\\\\", "\u{0}")
        .replace("\\'", "'")
        .replace('\u{0}', "\\");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    rows.iter()
        .map(|row| row["caller_id"].as_str().unwrap().to_string())
        .collect()
}

async fn wait_for_cursor(state: &std::path::Path, seq: u64) {
    let want = format!("\"after_seq\":{seq}");
    wait_for("the cursor at the head", || {
        std::fs::read_to_string(state).is_ok_and(|c| c.contains(&want))
    })
    .await;
}

#[tokio::test]
async fn blocked_callers_reach_zammads_caller_log_without_a_pop_up() {
    let server = TestServer::start().await;
    let mut settings = server.settings().await;
    for (pattern, note) in [
        ("492111111111", "it's spam"),
        ("49152*", "a whole range"),
        ("anonymous", "hidden callers"),
    ] {
        settings
            .add_block_entry(sipgate_sidecar::proto::AddBlockEntryRequest {
                pattern: pattern.into(),
                note: note.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    // Step one of the move: the block list into Zammad's CTI config.
    let (rails_command, not_copied) = export_for_zammad_cti(&server).await;
    assert!(not_copied.contains("not copied: 49152*"), "{not_copied}");
    let (zammad, addr) = fake_zammad().await;
    let stored = caller_ids_stored_by(&rails_command);
    assert_eq!(stored, ["492111111111", "anonymous"]);
    zammad.lock().unwrap().block_caller_ids = stored;

    answered_call(&server, "n1").await;
    for (from, call_id) in [
        ("492111111111", "b1"),
        ("491521234567", "p1"),
        ("anonymous", "a1"),
    ] {
        let reply = server
            .post(
                "/api/v1/sipgate/in",
                &new_call("in", from, "4930600000000", call_id),
            )
            .await;
        assert!(
            reply.body.contains("<Reject reason=\"busy\"/>"),
            "{}",
            reply.body
        );
    }
    // 3 events of n1, newCall and the synthetic hangup of each blocked call.
    let head = server.head_seq().await;
    assert_eq!(head, 9);

    let state = server.dir.path().join("zammad.cursor");
    let url = format!("http://{addr}/api/v1/cti/good-token");
    let (stop, task) = spawn_zammad_bridge(&server, url.clone(), state.clone(), fast_delivery());
    wait_for_cursor(&state, head).await;
    stop.cancel();
    task.await.unwrap().unwrap();

    {
        let z = zammad.lock().unwrap();
        assert_eq!(z.notified, ["n1"], "a pop-up for the normal call only");
        let sent: HashSet<&str> = z.posts.iter().map(|p| p["call_id"].as_str()).collect();
        assert_eq!(sent, HashSet::from(["n1", "b1", "a1"]));
        // Zammad's caller log: the normal call taken; the blocked ones missed
        // (not done), ended by the sidecar's synthetic hangup.
        assert_eq!(z.log["n1"].state, "hangup");
        assert!(z.log["n1"].done);
        for (call_id, from) in [("b1", "492111111111"), ("a1", "anonymous")] {
            let row = &z.log[call_id];
            assert_eq!(row.direction, "in", "{call_id}");
            assert_eq!(row.from, from, "{call_id}");
            assert_eq!(row.state, "hangup", "{call_id}");
            assert!(!row.done, "{call_id}");
            assert_eq!(row.comment.as_deref(), Some("rejected"), "{call_id}");
        }
        assert!(
            !z.log.contains_key("p1"),
            "a prefix-blocked call is not sent"
        );
    }

    // Without the copied block list, every blocked call Zammad is sent pops up:
    // what `--blocked-calls all` does for calls Zammad's own list lacks.
    let (unmirrored, addr) = fake_zammad().await;
    let state = server.dir.path().join("all.cursor");
    let (stop, task) = spawn_zammad_bridge_with(
        &server,
        format!("http://{addr}/api/v1/cti/good-token"),
        state.clone(),
        fast_delivery(),
        BlockedCalls::All,
    );
    wait_for_cursor(&state, head).await;
    stop.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(
        unmirrored.lock().unwrap().notified,
        ["n1", "b1", "p1", "a1"]
    );

    // --blocked-calls skip: Zammad hears of none of them.
    let (skipping, addr) = fake_zammad().await;
    let state = server.dir.path().join("skip.cursor");
    let (stop, task) = spawn_zammad_bridge_with(
        &server,
        format!("http://{addr}/api/v1/cti/good-token"),
        state.clone(),
        fast_delivery(),
        BlockedCalls::Skip,
    );
    wait_for_cursor(&state, head).await;
    stop.cancel();
    task.await.unwrap().unwrap();
    let z = skipping.lock().unwrap();
    assert_eq!(z.notified, ["n1"]);
    assert!(z.posts.iter().all(|p| p["call_id"] == "n1"));
}

/// A CRM endpoint that checks the forwarder's signature itself.
#[derive(Default)]
struct Crm {
    events: Vec<serde_json::Value>,
    bad_signatures: usize,
}

async fn crm(State(crm): State<Arc<Mutex<Crm>>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"crm-shared-secret").unwrap();
    mac.update(&body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let given = headers
        .get("x-sidecar-signature")
        .and_then(|v| v.to_str().ok());
    let mut crm = crm.lock().unwrap();
    if given != Some(expected.as_str()) {
        crm.bad_signatures += 1;
        return StatusCode::UNAUTHORIZED;
    }
    let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        headers.get("x-sidecar-seq").unwrap().to_str().unwrap(),
        event["seq"].to_string()
    );
    crm.events.push(event);
    StatusCode::NO_CONTENT
}

async fn fake_crm() -> (Arc<Mutex<Crm>>, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received: Arc<Mutex<Crm>> = Arc::default();
    serve_on(
        listener,
        Router::new()
            .route("/hook", post(crm))
            .with_state(received.clone()),
    )
    .await;
    (received, addr)
}

#[tokio::test]
async fn the_json_forwarder_runs_inside_serve_and_signs_every_body() {
    let (received, addr) = fake_crm().await;

    let server = TestServer::start_with(|c| {
        c.bridges.push(BridgeConfig {
            target: BridgeTarget::Webhook {
                url: format!("http://{addr}/hook"),
                secret: Some(sipgate_sidecar::config::Secret::new("crm-shared-secret")),
                conventions: Default::default(),
            },
            state: std::path::PathBuf::from(format!("{}.webhook.cursor", c.database)),
            delivery: fast_delivery().policy(),
            start: sipgate_sidecar::config::NewBridgeStart::Beginning,
        });
    })
    .await;
    answered_call(&server, "crm1").await;
    server
        .post(
            "/api/v1/sipgate/in",
            &form(&[("event", "dtmf"), ("callId", "crm1"), ("dtmf", "42")]),
        )
        .await;
    wait_for("4 events", || received.lock().unwrap().events.len() >= 4).await;

    let crm = received.lock().unwrap();
    assert_eq!(crm.bad_signatures, 0);
    let seqs: Vec<u64> = crm
        .events
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    let first = &crm.events[0];
    assert_eq!(first["schema"], "sipgate-sidecar.event.v1");
    assert_eq!(first["event"], "newCall");
    assert_eq!(first["call_id"], "crm1");
    assert_eq!(first["from"], "492111234567");
    assert_eq!(crm.events[3]["dtmf"], "42");
    assert_eq!(crm.events[2]["call"]["state"], "hangup");
}

#[tokio::test]
async fn a_wrong_forwarder_secret_is_caught_by_the_receiver() {
    let (received, addr) = fake_crm().await;
    let server = TestServer::start().await;
    answered_call(&server, "s1").await;
    let token = CancellationToken::new();
    let command = BridgeCommand::Webhook {
        url: format!("http://{addr}/hook"),
        secret: Some("not-the-secret".into()),
        state: server.dir.path().join("webhook.cursor"),
        start_from_now: false,
        delivery: fast_delivery(),
        format: Default::default(),
        source: "/sipgate-sidecar".into(),
        standard_secret: Vec::new(),
    };
    let args = ClientArgs {
        server: server.grpc.clone(),
        grpc_token: None,
        ca_cert: None,
        client_cert: None,
        client_key: None,
    };
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        run_bridge_owned(args, command, token),
    )
    .await
    .unwrap();
    assert!(result.is_err());
    let crm = received.lock().unwrap();
    assert_eq!(crm.bad_signatures, 3);
    assert!(crm.events.is_empty());
}

#[tokio::test]
async fn a_new_in_process_bridge_starts_now_by_default_or_at_the_beginning_when_asked() {
    use sipgate_sidecar::config::NewBridgeStart;
    // Calls stored before any bridge was configured.
    let server = TestServer::start().await;
    answered_call(&server, "before-1").await;
    answered_call(&server, "before-2").await;
    let dir = server.stop().await;

    let (from_now, now_addr) = fake_crm().await;
    let (from_start, start_addr) = fake_crm().await;
    let mut config = test_config(&dir);
    for (addr, name, start) in [
        (now_addr, "now", NewBridgeStart::default()),
        (start_addr, "beginning", NewBridgeStart::Beginning),
    ] {
        config.bridges.push(BridgeConfig {
            target: BridgeTarget::Webhook {
                url: format!("http://{addr}/hook"),
                secret: Some(sipgate_sidecar::config::Secret::new("crm-shared-secret")),
                conventions: Default::default(),
            },
            state: dir.path().join(format!("{name}.cursor")),
            delivery: fast_delivery().policy(),
            start,
        });
    }
    let server = TestServer::start_in(dir, config.clone()).await;
    answered_call(&server, "after-1").await;
    wait_for("the whole log at the beginning one", || {
        from_start.lock().unwrap().events.len() >= 9
    })
    .await;
    wait_for("the new call at the now one", || {
        from_now.lock().unwrap().events.len() >= 3
    })
    .await;
    let calls = |crm: &Arc<Mutex<Crm>>| -> Vec<String> {
        crm.lock()
            .unwrap()
            .events
            .iter()
            .map(|e| e["call_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(calls(&from_now), ["after-1"; 3], "no replay of older calls");
    assert_eq!(
        calls(&from_start),
        [
            "before-1", "before-1", "before-1", "before-2", "before-2", "before-2", "after-1",
            "after-1", "after-1"
        ]
    );
    // Once it has delivered, a bridge continues from its cursor, whatever the setting.
    let dir = server.stop().await;
    let server = TestServer::start_in(dir, config).await;
    answered_call(&server, "after-2").await;
    wait_for("after-2 at the now one", || {
        from_now.lock().unwrap().events.len() >= 6
    })
    .await;
    assert_eq!(calls(&from_now)[3..], ["after-2"; 3]);
    server.stop().await;
}

/// Imports Zammad's CTI settings with an agent mapping (as `settings
/// import-zammad` does).
async fn import_agent_map(server: &TestServer) {
    let zammad = r#"{
      "inbound": {"block_caller_ids": []},
      "outbound": {"routing_table": [], "default_caller_id": ""},
      "user_remote_map": [
        {"remote_user_id": "w0", "user_id": "7"},
        {"remote_user_id": "1234567w1", "user_id": "Bob@Example.com"}
      ]
    }"#;
    server
        .settings()
        .await
        .import_zammad(sipgate_sidecar::proto::ImportZammadRequest {
            json: zammad.into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// An inbound call answered by the sipgate user `user_id`/`full_user_id`.
async fn call_answered_by(server: &TestServer, call_id: &str, user_id: &str, full_user_id: &str) {
    for body in [
        new_call("in", "492111234567", "4930600000000", call_id),
        form(&[
            ("event", "answer"),
            ("direction", "in"),
            ("callId", call_id),
            ("user", "Sipgate Name"),
            ("userId", user_id),
            ("fullUserId", full_user_id),
            ("from", "492111234567"),
            ("to", "4930600000000"),
            // A number no Zammad user has: only the map finds the agent.
            ("answeringNumber", "4921199999999"),
        ]),
    ] {
        assert_eq!(server.post("/api/v1/sipgate/in", &body).await.status, 200);
    }
}

fn zammad_users(zammad: &Shared) {
    zammad.lock().unwrap().agents = vec![
        (7, "alice@example.com", "4930600000007"),
        (8, "bob@example.com", "4930600000008"),
    ];
}

#[tokio::test]
async fn the_pop_up_of_an_answer_reaches_the_agent_mapped_by_user_remote_map() {
    let server = TestServer::start().await;
    let (zammad, addr) = fake_zammad().await;
    zammad_users(&zammad);
    import_agent_map(&server).await;
    call_answered_by(&server, "by-id", "w0", "1234567w0").await;
    call_answered_by(&server, "by-full-id", "w1", "1234567w1").await;
    call_answered_by(&server, "unmapped", "w5", "1234567w5").await;

    let (stop, task) = spawn_zammad_bridge(
        &server,
        format!("http://{addr}/api/v1/cti/good-token"),
        server.dir.path().join("zammad.cursor"),
        fast_delivery(),
    );
    wait_for("three answers", || {
        zammad.lock().unwrap().answered_by.len() >= 3
    })
    .await;
    stop.cancel();
    task.await.unwrap().unwrap();

    let z = zammad.lock().unwrap();
    assert_eq!(
        z.answered_by,
        [
            ("by-id".to_string(), Some(7)),
            ("by-full-id".to_string(), Some(8)),
            // Unmapped: Zammad looks for the answering number and the name
            // and finds nobody, as it would without the sidecar.
            ("unmapped".to_string(), None),
        ]
    );
    // The caller log keeps the sipgate name for an id, the login otherwise.
    assert_eq!(z.log["by-id"].to_comment.as_deref(), Some("Sipgate Name"));
    assert_eq!(
        z.log["by-full-id"].to_comment.as_deref(),
        Some("bob@example.com")
    );
    let answer = |call: &str| {
        z.posts
            .iter()
            .find(|p| p["event"] == "answer" && p["call_id"] == call)
            .unwrap()
            .clone()
    };
    assert!(!answer("by-id").contains_key("answeringNumber"));
    assert_eq!(answer("unmapped")["answeringNumber"], "4921199999999");
}

#[tokio::test]
async fn an_in_process_zammad_bridge_maps_agents_and_sees_a_changed_map() {
    let (zammad, addr) = fake_zammad().await;
    zammad_users(&zammad);
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir);
    config.bridges.push(BridgeConfig {
        target: BridgeTarget::Zammad {
            cti_url: sipgate_sidecar::config::Secret::new(format!(
                "http://{addr}/api/v1/cti/good-token"
            )),
            blocked_calls: BlockedCalls::default(),
        },
        state: dir.path().join("zammad.cursor"),
        delivery: fast_delivery().policy(),
        start: Default::default(),
    });
    let server = TestServer::start_in(dir, config).await;
    call_answered_by(&server, "before-map", "w0", "1234567w0").await;
    wait_for("the first answer", || {
        !zammad.lock().unwrap().answered_by.is_empty()
    })
    .await;
    import_agent_map(&server).await;
    call_answered_by(&server, "after-map", "w0", "1234567w0").await;
    wait_for("the second answer", || {
        zammad.lock().unwrap().answered_by.len() >= 2
    })
    .await;
    assert_eq!(
        zammad.lock().unwrap().answered_by,
        [
            ("before-map".to_string(), None),
            ("after-map".to_string(), Some(7))
        ]
    );
    server.stop().await;
}

/// What a receiver of CloudEvents with Standard Webhooks signatures got.
type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

async fn recording_receiver() -> (Received, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Received::default();
    serve_on(
        listener,
        Router::new()
            .route(
                "/events",
                post(
                    |State(r): State<Received>, headers: HeaderMap, body: Bytes| async move {
                        r.lock().unwrap().push((headers, body));
                        StatusCode::NO_CONTENT
                    },
                ),
            )
            .with_state(received.clone()),
    )
    .await;
    (received, addr)
}

/// A Standard Webhooks verification, written from the specification:
/// HMAC-SHA256 over "id.timestamp.body" with the base64 key after whsec_,
/// compared with each `v1,` signature of the header.
fn standard_webhooks_verifies(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let header = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_string();
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", header("webhook-id"), header("webhook-timestamp")).as_bytes());
    mac.update(body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    header("webhook-signature")
        .split(' ')
        .any(|s| s.strip_prefix("v1,") == Some(expected.as_str()))
}

#[tokio::test]
async fn the_forwarder_sends_cloudevents_signed_the_standard_webhooks_way_with_two_keys() {
    use sipgate_sidecar::config::{ForwardFormat, WebhookConventions};
    let (received, addr) = recording_receiver().await;
    let (old_key, new_key) = (
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "whsec_c2lwZ2F0ZS1zaWRlY2FyIHJvdGF0ZWQga2V5IDIwMjY=",
    );
    let server = TestServer::start_with(|c| {
        c.bridges.push(BridgeConfig {
            target: BridgeTarget::Webhook {
                url: format!("http://{addr}/events"),
                secret: Some(sipgate_sidecar::config::Secret::new("crm-shared-secret")),
                conventions: WebhookConventions::new(
                    ForwardFormat::Cloudevents,
                    "https://pbx.example.com".into(),
                    vec![new_key.into(), old_key.into()],
                    "test",
                )
                .unwrap(),
            },
            state: std::path::PathBuf::from(format!("{}.webhook.cursor", c.database)),
            delivery: fast_delivery().policy(),
            start: sipgate_sidecar::config::NewBridgeStart::Beginning,
        });
    })
    .await;
    answered_call(&server, "ce1").await;
    wait_for("3 events", || received.lock().unwrap().len() >= 3).await;

    let received = received.lock().unwrap().clone();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for (i, (headers, body)) in received.iter().enumerate() {
        let header = |name: &str| headers.get(name).unwrap().to_str().unwrap();
        assert_eq!(
            header("content-type"),
            "application/cloudevents+json; charset=utf-8"
        );
        // Both keys verify (a receiver may hold either during a rotation),
        // a third does not.
        assert!(standard_webhooks_verifies(old_key, headers, body));
        assert!(standard_webhooks_verifies(new_key, headers, body));
        assert!(!standard_webhooks_verifies(
            "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            headers,
            body
        ));
        assert_eq!(header("webhook-signature").split(' ').count(), 2);
        let sent_at: i64 = header("webhook-timestamp").parse().unwrap();
        assert!((now - sent_at).abs() < 60, "{sent_at} vs {now}");
        // The sidecar's own signature is over the same bytes.
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"crm-shared-secret").unwrap();
        mac.update(body);
        assert_eq!(
            header("x-sidecar-signature"),
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        );

        let envelope: serde_json::Value = serde_json::from_slice(body).unwrap();
        let seq = (i + 1) as u64;
        assert_eq!(envelope["specversion"], "1.0");
        assert_eq!(envelope["id"], seq.to_string());
        assert_eq!(header("webhook-id"), seq.to_string());
        assert_eq!(header("x-sidecar-seq"), seq.to_string());
        assert_eq!(envelope["source"], "https://pbx.example.com");
        assert_eq!(envelope["subject"], "ce1");
        assert_eq!(envelope["datacontenttype"], "application/json");
        assert_eq!(envelope["data"]["seq"], seq);
        assert_eq!(envelope["data"]["schema"], "sipgate-sidecar.event.v1");
        let time: jiff::Timestamp = envelope["time"].as_str().unwrap().parse().unwrap();
        assert!((now - time.as_second()).abs() < 60);
    }
    let types: Vec<&str> = received
        .iter()
        .map(|(_, b)| serde_json::from_slice::<serde_json::Value>(b).unwrap())
        .map(|e| match e["type"].as_str().unwrap() {
            "io.sipgate.call.newcall" => "newcall",
            "io.sipgate.call.answer" => "answer",
            "io.sipgate.call.hangup" => "hangup",
            other => panic!("{other}"),
        })
        .collect();
    assert_eq!(types, ["newcall", "answer", "hangup"]);
    server.stop().await;
}
