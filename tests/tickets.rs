//! The missed-call ticket bridge against a stand-in for Zammad's REST API
//! (users search/create, tickets create/show/update/search, articles, the
//! token check; answers shaped like Zammad's), driven by real pushes
//! through the real server: one open ticket per caller, notes for later
//! missed calls and for reaching the caller, nothing for answered,
//! forwarded or blocked calls, exactly once through `kill -9` and outages,
//! and a wrong token stops the bridge before anything is written.

mod common;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use common::*;
use serde_json::{Value, json};
use sipgate_sidecar::config::{
    BridgeConfig, BridgeTarget, DeliveryArgs, Secret, TicketsTarget, UnknownCaller,
};

const TOKEN: &str = "good-token";

#[derive(Debug, Clone)]
struct Ticket {
    id: u64,
    title: String,
    customer_id: u64,
    state: String,
    articles: Vec<String>,
    deleted: bool,
}

#[derive(Default)]
struct Zammad {
    users: Vec<Value>,
    tickets: Vec<Ticket>,
    /// Answer this many requests with 502 (an outage).
    failing: u32,
    /// Carry out the next ticket create, then answer it with 502 (an answer
    /// lost after Zammad did the work).
    lose_next_create_answer: bool,
    /// Every request as "METHOD path".
    requests: Vec<String>,
}

type Shared = Arc<Mutex<Zammad>>;

fn authorised(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok())
        == Some(&format!("Token token={TOKEN}"))
}

/// The outage and token checks every route makes first.
fn gate(zammad: &Shared, headers: &HeaderMap, what: String) -> Option<Response> {
    let mut z = zammad.lock().unwrap();
    z.requests.push(what);
    if z.failing > 0 {
        z.failing -= 1;
        return Some((StatusCode::BAD_GATEWAY, "502 Bad Gateway").into_response());
    }
    if !authorised(headers) {
        return Some(
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": "Invalid token"})),
            )
                .into_response(),
        );
    }
    None
}

async fn me(State(z): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(r) = gate(&z, &headers, "GET me".into()) {
        return r;
    }
    Json(json!({"id": 1, "login": "agent"})).into_response()
}

async fn search_users(
    State(z): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let query = q.get("query").cloned().unwrap_or_default();
    if let Some(r) = gate(&z, &headers, format!("GET users/search {query}")) {
        return r;
    }
    // Text matching, like Elasticsearch's: any field that contains the query.
    let z = z.lock().unwrap();
    let found: Vec<Value> = z
        .users
        .iter()
        .filter(|u| {
            ["phone", "mobile", "lastname"].iter().any(|f| {
                u.get(f)
                    .and_then(Value::as_str)
                    .is_some_and(|v| v.contains(&query))
            })
        })
        .cloned()
        .collect();
    Json(Value::Array(found)).into_response()
}

async fn create_user(
    State(z): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Some(r) = gate(&z, &headers, "POST users".into()) {
        return r;
    }
    let mut z = z.lock().unwrap();
    let id = 100 + z.users.len() as u64;
    let mut user = body.clone();
    user["id"] = json!(id);
    z.users.push(user.clone());
    (StatusCode::CREATED, Json(user)).into_response()
}

async fn create_ticket(
    State(z): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Some(r) = gate(&z, &headers, "POST tickets".into()) {
        return r;
    }
    let mut z = z.lock().unwrap();
    if body["group"] != "Support" {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": format!("No lookup value found for 'group': {}", body["group"])})),
        )
            .into_response();
    }
    let Some(article) = body["article"]["body"].as_str() else {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": "article hash is missing"})),
        )
            .into_response();
    };
    let id = 1 + z.tickets.len() as u64;
    z.tickets.push(Ticket {
        id,
        title: body["title"].as_str().unwrap_or_default().into(),
        customer_id: body["customer_id"].as_u64().unwrap_or_default(),
        state: "new".into(),
        articles: vec![article.to_string()],
        deleted: false,
    });
    if std::mem::take(&mut z.lose_next_create_answer) {
        return (StatusCode::BAD_GATEWAY, "502 Bad Gateway").into_response();
    }
    (StatusCode::CREATED, Json(json!({"id": id, "state_id": 1}))).into_response()
}

fn ticket_mut(z: &mut Zammad, id: u64) -> Option<&mut Ticket> {
    z.tickets.iter_mut().find(|t| t.id == id && !t.deleted)
}

async fn show_ticket(State(z): State<Shared>, headers: HeaderMap, Path(id): Path<u64>) -> Response {
    if let Some(r) = gate(&z, &headers, format!("GET tickets/{id}")) {
        return r;
    }
    let mut z = z.lock().unwrap();
    match ticket_mut(&mut z, id) {
        Some(t) => Json(json!({"id": t.id, "state": t.state, "title": t.title})).into_response(),
        None => (StatusCode::NOT_FOUND, Json(json!({"error": "Not found"}))).into_response(),
    }
}

async fn update_ticket(
    State(z): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<u64>,
    Json(body): Json<Value>,
) -> Response {
    if let Some(r) = gate(&z, &headers, format!("PUT tickets/{id}")) {
        return r;
    }
    let mut z = z.lock().unwrap();
    let Some(t) = ticket_mut(&mut z, id) else {
        return (StatusCode::NOT_FOUND, Json(json!({"error": "Not found"}))).into_response();
    };
    if let Some(state) = body["state"].as_str() {
        t.state = state.into();
    }
    if let Some(article) = body["article"]["body"].as_str() {
        t.articles.push(article.into());
    }
    Json(json!({"id": id, "state": t.state})).into_response()
}

async fn add_article(
    State(z): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Some(r) = gate(&z, &headers, "POST ticket_articles".into()) {
        return r;
    }
    let mut z = z.lock().unwrap();
    let id = body["ticket_id"].as_u64().unwrap_or_default();
    let Some(t) = ticket_mut(&mut z, id) else {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": "ticket not found"})),
        )
            .into_response();
    };
    t.articles
        .push(body["body"].as_str().unwrap_or_default().into());
    (
        StatusCode::CREATED,
        Json(json!({"id": 1000 + t.articles.len()})),
    )
        .into_response()
}

async fn articles(State(z): State<Shared>, headers: HeaderMap, Path(id): Path<u64>) -> Response {
    if let Some(r) = gate(&z, &headers, format!("GET articles/{id}")) {
        return r;
    }
    let mut z = z.lock().unwrap();
    match ticket_mut(&mut z, id) {
        Some(t) => Json(Value::Array(
            t.articles.iter().map(|b| json!({"body": b})).collect(),
        ))
        .into_response(),
        None => (StatusCode::NOT_FOUND, Json(json!({"error": "Not found"}))).into_response(),
    }
}

async fn search_tickets(
    State(z): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let query = q.get("query").cloned().unwrap_or_default();
    if let Some(r) = gate(&z, &headers, format!("GET tickets/search {query}")) {
        return r;
    }
    let phrase = query.trim_matches('"');
    let z = z.lock().unwrap();
    let ids: Vec<u64> = z
        .tickets
        .iter()
        .filter(|t| !t.deleted && t.articles.iter().any(|a| a.contains(phrase)))
        .map(|t| t.id)
        .collect();
    Json(json!({"tickets": ids, "tickets_count": ids.len(), "assets": {}})).into_response()
}

async fn stand_in() -> (Shared, SocketAddr) {
    let zammad: Shared = Arc::default();
    zammad.lock().unwrap().users.push(json!({
        "id": 10, "firstname": "Known", "lastname": "Customer",
        "phone": "+49 211 1234567", "mobile": null,
    }));
    let app = Router::new()
        .route("/api/v1/users/me", get(me))
        .route("/api/v1/users/search", get(search_users))
        .route("/api/v1/users", post(create_user))
        .route("/api/v1/tickets", post(create_ticket))
        .route("/api/v1/tickets/search", get(search_tickets))
        .route("/api/v1/tickets/{id}", get(show_ticket).put(update_ticket))
        .route("/api/v1/ticket_articles", post(add_article))
        .route("/api/v1/ticket_articles/by_ticket/{id}", get(articles))
        .with_state(zammad.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (zammad, addr)
}

fn target(addr: SocketAddr, token: &str) -> TicketsTarget {
    TicketsTarget {
        zammad_url: format!("http://{addr}"),
        api_token: Secret::new(token),
        group: "Support".into(),
        close_when_reached: true,
        unknown_caller: UnknownCaller::Create,
        include_blocked: false,
        include_anonymous: false,
        country_code: "49".into(),
    }
}

fn fast() -> DeliveryArgs {
    use clap::Parser;
    #[derive(Parser)]
    struct P {
        #[command(flatten)]
        d: DeliveryArgs,
    }
    P::parse_from([
        "p",
        "--backoff-ms",
        "20",
        "--max-backoff-ms",
        "100",
        "--timeout-ms",
        "2000",
    ])
    .d
}

async fn push(server: &str, client: &reqwest::Client, body: String) {
    let reply = client
        .post(format!("{server}/api/v1/sipgate/in"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
}

fn pushes_for(kind: &str, from: &str, to: &str, id: &str) -> Vec<String> {
    let f = |pairs: &[(&str, &str)]| form(pairs);
    let new = |direction: &str| {
        f(&[
            ("event", "newCall"),
            ("direction", direction),
            ("from", from),
            ("to", to),
            ("callId", id),
            ("user[]", "Support Team"),
        ])
    };
    let answer = |direction: &str, user: &str| {
        f(&[
            ("event", "answer"),
            ("direction", direction),
            ("callId", id),
            ("user", user),
            ("from", from),
            ("to", to),
            ("answeringNumber", "4921199999"),
        ])
    };
    let hangup = |direction: &str, cause: &str| {
        f(&[
            ("event", "hangup"),
            ("direction", direction),
            ("callId", id),
            ("cause", cause),
            ("from", from),
            ("to", to),
        ])
    };
    match kind {
        "missed" => vec![new("in"), hangup("in", "cancel")],
        "voicemail" => vec![
            new("in"),
            answer("in", "voicemail"),
            hangup("in", "normalClearing"),
        ],
        "answered" => vec![
            new("in"),
            answer("in", "Alice Agent"),
            hangup("in", "normalClearing"),
        ],
        "forwarded" => vec![new("in"), hangup("in", "forwarded")],
        "blocked" => vec![new("in")],
        "called-back" => vec![
            new("out"),
            answer("out", "Alice Agent"),
            hangup("out", "normalClearing"),
        ],
        other => panic!("no such call: {other}"),
    }
}

async fn call(server: &str, client: &reqwest::Client, kind: &str, from: &str, to: &str, id: &str) {
    for body in pushes_for(kind, from, to, id) {
        push(server, client, body).await;
    }
}

/// Waits until `done` holds for the stand-in's state.
async fn until(zammad: &Shared, what: &str, done: impl Fn(&Zammad) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if done(&zammad.lock().unwrap()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: tickets {:#?}\nrequests {:?}",
            zammad.lock().unwrap().tickets,
            zammad.lock().unwrap().requests
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn live(z: &Zammad) -> Vec<Ticket> {
    z.tickets.iter().filter(|t| !t.deleted).cloned().collect()
}

#[tokio::test]
async fn missed_calls_become_one_ticket_per_caller_and_reaching_them_closes_it() {
    let (zammad, addr) = stand_in().await;
    let server = TestServer::start_with(|c| {
        c.bridges.push(BridgeConfig {
            target: BridgeTarget::Tickets(target(addr, TOKEN)),
            state: std::path::PathBuf::from(format!("{}.zammad-tickets.cursor", c.database)),
            delivery: fast().policy(),
            start: sipgate_sidecar::config::NewBridgeStart::Beginning,
        });
    })
    .await;
    server
        .settings()
        .await
        .add_block_entry(sipgate_sidecar::proto::AddBlockEntryRequest {
            pattern: "4970111222".into(),
            note: "spam".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let (http, client) = (server.http.as_str(), &server.client);
    let line = "4921199999";

    // A known caller (Zammad has "+49 211 1234567"): a ticket for that customer.
    call(http, client, "missed", "492111234567", line, "m1").await;
    until(&zammad, "the first ticket", |z| z.tickets.len() == 1).await;
    {
        let z = zammad.lock().unwrap();
        let t = &z.tickets[0];
        assert_eq!(t.customer_id, 10, "the known customer");
        assert_eq!(t.title, "Missed call from +492111234567");
        assert!(
            t.articles[0].contains("Called: +4921199999"),
            "{}",
            t.articles[0]
        );
        assert!(
            t.articles[0].contains("Hangup cause: cancel"),
            "{}",
            t.articles[0]
        );
        assert!(
            t.articles[0].contains("sipgate call id: m1"),
            "{}",
            t.articles[0]
        );
    }
    // The same caller again: a note on the open ticket, no new ticket.
    call(http, client, "missed", "492111234567", line, "m2").await;
    until(&zammad, "the note", |z| z.tickets[0].articles.len() == 2).await;
    // Unknown caller: a customer is created with the number as phone.
    call(http, client, "missed", "4930555000", line, "m3").await;
    until(&zammad, "the unknown caller's ticket", |z| {
        z.tickets.len() == 2
    })
    .await;
    {
        let z = zammad.lock().unwrap();
        let created = z.users.iter().find(|u| u["phone"] == "+4930555000");
        let created = created.expect("a customer with the number as phone");
        assert_eq!(z.tickets[1].customer_id, created["id"].as_u64().unwrap());
    }
    // Taken by the voicemail: missed.
    call(http, client, "voicemail", "4940111222", line, "v1").await;
    until(&zammad, "the voicemail caller's ticket", |z| {
        z.tickets.len() == 3
    })
    .await;
    assert!(zammad.lock().unwrap().tickets[2].articles[0].contains("Taken by the voicemail"));
    // Answered, a forwarded leg, a blocked caller: none of them.
    call(http, client, "answered", "4950111222", line, "a1").await;
    call(http, client, "forwarded", "4960111222", line, "f1").await;
    call(http, client, "blocked", "4970111222", line, "b1").await;
    // Reached: the agent calls the first caller back; the ticket is noted and closed.
    call(http, client, "called-back", line, "492111234567", "r1").await;
    until(&zammad, "the close", |z| z.tickets[0].state == "closed").await;
    {
        let z = zammad.lock().unwrap();
        assert_eq!(z.tickets[0].articles.len(), 3);
        assert!(
            z.tickets[0].articles[2].contains("Reached: +492111234567 called back"),
            "{}",
            z.tickets[0].articles[2]
        );
        assert!(
            z.tickets[0].articles[2].contains("Alice Agent"),
            "{}",
            z.tickets[0].articles[2]
        );
    }
    // Missed again after the close: a new ticket.
    call(http, client, "missed", "492111234567", line, "m4").await;
    until(&zammad, "the new ticket after the close", |z| {
        z.tickets.len() == 4
    })
    .await;
    // A ticket deleted in Zammad: the next missed call opens a new one.
    zammad.lock().unwrap().tickets[3].deleted = true;
    call(http, client, "missed", "492111234567", line, "m5").await;
    until(&zammad, "the ticket after the delete", |z| {
        z.tickets.len() == 5
    })
    .await;

    // Everything is delivered: the answered, forwarded and blocked calls made nothing.
    let head = server.head_seq().await;
    let cursor = std::path::PathBuf::from(format!(
        "{}/sidecar.db.zammad-tickets.cursor",
        server.dir.path().display()
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&cursor).unwrap_or_default()
        != format!("{{\"after_seq\":{head}}}")
    {
        assert!(
            Instant::now() < deadline,
            "the bridge reaches the head #{head}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    {
        let z = zammad.lock().unwrap();
        let titles: Vec<&str> = z.tickets.iter().map(|t| t.title.as_str()).collect();
        assert_eq!(
            titles,
            [
                "Missed call from +492111234567",
                "Missed call from +4930555000",
                "Missed call from +4940111222",
                "Missed call from +492111234567",
                "Missed call from +492111234567",
            ]
        );
        assert_eq!(live(&z).len(), 4);
        assert_eq!(
            z.users.len(),
            3,
            "two customers created, the known one reused"
        );
    }
    server.stop().await;
}

/// The server binary on a new database in a new directory.
async fn spawn_server() -> (tempfile::TempDir, process::Spawned) {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("s.db").display().to_string();
    let server = process::spawn_binary(
        dir.path(),
        &["--metrics-addr", "off", "--database", &database],
    )
    .await;
    (dir, server)
}

/// The bridge binary as its own process.
async fn spawn_bridge(
    dir: &std::path::Path,
    grpc: &str,
    addr: SocketAddr,
    token: &str,
) -> tokio::process::Child {
    let token_file = dir.join("zammad.token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    tokio::process::Command::new(env!("CARGO_BIN_EXE_sipgate-sidecar"))
        .args(["bridge", "zammad-tickets", "--server", grpc])
        .arg("--zammad-url")
        .arg(format!("http://{addr}"))
        .arg("--api-token-file")
        .arg(&token_file)
        .args(["--group", "Support", "--close-when-reached"])
        .arg("--state")
        .arg(dir.join("tickets.cursor"))
        .args([
            "--backoff-ms",
            "20",
            "--max-backoff-ms",
            "100",
            "--timeout-ms",
            "2000",
        ])
        .env("SIDECAR_LOG", "info")
        .stderr(std::fs::File::create(dir.join(format!("bridge-{}.log", rand_suffix()))).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[tokio::test]
async fn kill_9_between_calls_and_during_an_outage_makes_no_duplicate_and_misses_none() {
    let (zammad, addr) = stand_in().await;
    let (dir, mut server) = spawn_server().await;
    let client = reqwest::Client::new();
    let line = "4921199999";

    let mut bridge = spawn_bridge(dir.path(), &server.grpc, addr, TOKEN).await;
    call(&server.http, &client, "missed", "492111234567", line, "k1").await;
    until(&zammad, "the first ticket", |z| z.tickets.len() == 1).await;
    // kill -9 between calls.
    bridge.kill().await.unwrap();
    call(&server.http, &client, "missed", "492111234567", line, "k2").await;
    call(&server.http, &client, "missed", "4930555000", line, "k3").await;
    // Zammad down: the bridge retries; killed in the middle of it.
    zammad.lock().unwrap().failing = u32::MAX;
    let mut bridge = spawn_bridge(dir.path(), &server.grpc, addr, TOKEN).await;
    until(&zammad, "the bridge retrying", |z| z.requests.len() > 8).await;
    bridge.kill().await.unwrap();
    // Back up, but the next ticket create is carried out and its answer lost.
    {
        let mut z = zammad.lock().unwrap();
        z.failing = 0;
        z.lose_next_create_answer = true;
    }
    let mut bridge = spawn_bridge(dir.path(), &server.grpc, addr, TOKEN).await;
    until(&zammad, "both callers' tickets", |z| {
        z.tickets.len() >= 2 && z.tickets[0].articles.len() >= 2
    })
    .await;
    call(&server.http, &client, "missed", "4930555000", line, "k4").await;
    until(&zammad, "the second caller's note", |z| {
        z.tickets.get(1).is_some_and(|t| t.articles.len() >= 2)
    })
    .await;
    // Settle, then count: one ticket per caller, one article per missed call.
    tokio::time::sleep(Duration::from_millis(500)).await;
    bridge.kill().await.unwrap();
    {
        let z = zammad.lock().unwrap();
        assert!(!z.lose_next_create_answer, "the lost answer happened");
        assert_eq!(z.tickets.len(), 2, "no duplicate ticket: {:#?}", z.tickets);
        let marks = |t: &Ticket| -> Vec<String> {
            t.articles
                .iter()
                .map(|a| a.lines().last().unwrap_or_default().to_string())
                .collect()
        };
        assert_eq!(
            marks(&z.tickets[0]),
            ["sipgate call id: k1", "sipgate call id: k2"]
        );
        assert_eq!(
            marks(&z.tickets[1]),
            ["sipgate call id: k3", "sipgate call id: k4"]
        );
        assert_eq!(
            z.users.len(),
            2,
            "one customer created for the unknown caller"
        );
    }
    server.child.kill().await.unwrap();
}

#[tokio::test]
async fn a_wrong_token_stops_the_bridge_with_a_non_zero_exit_and_writes_nothing() {
    let (zammad, addr) = stand_in().await;
    let (dir, mut server) = spawn_server().await;
    let client = reqwest::Client::new();
    call(
        &server.http,
        &client,
        "missed",
        "492111234567",
        "4921199999",
        "w1",
    )
    .await;
    let mut bridge = spawn_bridge(dir.path(), &server.grpc, addr, "wrong-token").await;
    let status = tokio::time::timeout(Duration::from_secs(20), bridge.wait())
        .await
        .expect("the bridge stops by itself")
        .unwrap();
    assert!(!status.success(), "exit status {status}");
    {
        let z = zammad.lock().unwrap();
        assert!(z.tickets.is_empty());
        assert_eq!(z.users.len(), 1, "no customer created");
        let logs: String = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("bridge-"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect();
        assert!(logs.contains("refused the API token"), "{logs}");
        assert!(
            !logs.contains("wrong-token"),
            "the token is never printed: {logs}"
        );
    }
    server.child.kill().await.unwrap();
}

#[tokio::test]
async fn a_new_in_process_ticket_bridge_starts_at_the_newest_event() {
    let (zammad, addr) = stand_in().await;
    // Calls missed before the bridge was configured.
    let server = TestServer::start().await;
    call(
        &server.http,
        &server.client,
        "missed",
        "492111234567",
        "4921199999",
        "old1",
    )
    .await;
    call(
        &server.http,
        &server.client,
        "missed",
        "4930555000",
        "4921199999",
        "old2",
    )
    .await;
    let dir = server.stop().await;
    let mut config = test_config(&dir);
    config.bridges.push(BridgeConfig {
        target: BridgeTarget::Tickets(target(addr, TOKEN)),
        state: std::path::PathBuf::from(format!("{}.zammad-tickets.cursor", config.database)),
        delivery: fast().policy(),
        start: sipgate_sidecar::config::NewBridgeStart::Beginning,
    });
    let server = TestServer::start_in(dir, config).await;
    call(
        &server.http,
        &server.client,
        "missed",
        "4940111222",
        "4921199999",
        "new1",
    )
    .await;
    until(&zammad, "the new call's ticket", |z| !z.tickets.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    {
        let z = zammad.lock().unwrap();
        assert_eq!(
            z.tickets.len(),
            1,
            "only the call after the start: {:#?}",
            z.tickets
        );
        assert!(z.tickets[0].articles[0].contains("sipgate call id: new1"));
    }
    server.stop().await;
}

#[tokio::test]
async fn an_unknown_group_is_a_refusal_named_in_readyz_with_the_call() {
    let (zammad, addr) = stand_in().await;
    let server = TestServer::start_with(|c| {
        let mut wrong = target(addr, TOKEN);
        wrong.group = "No Such Group".into();
        c.bridges.push(BridgeConfig {
            target: BridgeTarget::Tickets(wrong),
            state: std::path::PathBuf::from(format!("{}.zammad-tickets.cursor", c.database)),
            delivery: fast().policy(),
            start: sipgate_sidecar::config::NewBridgeStart::Beginning,
        });
    })
    .await;
    call(
        &server.http,
        &server.client,
        "missed",
        "492111234567",
        "4921199999",
        "g1",
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let reply = server
            .client
            .get(format!("{}/readyz", server.http))
            .send()
            .await
            .unwrap();
        let status = reply.status();
        let body = reply.text().await.unwrap();
        if status == 503 && body.contains("stopped") {
            break body;
        }
        assert!(Instant::now() < deadline, "the bridge stops: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(body.contains("bridge zammad-tickets"), "{body}");
    assert!(body.contains("No lookup value found for 'group'"), "{body}");
    assert!(body.contains("call g1"), "{body}");
    assert!(zammad.lock().unwrap().tickets.is_empty());
    server.stop().await;
}
