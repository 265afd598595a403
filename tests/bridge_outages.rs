//! Bridges against receivers that fail: outages (502, 429, refused
//! connections) are waited out and every event arrives once, in order;
//! redirects are refusals and the redirect target gets nothing; a stopped
//! in-process bridge makes `/readyz` fail with the reason; a cursor from
//! after the newest event (a restored database) stops the bridge.

mod common;

use std::{
    collections::VecDeque,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use common::*;
use sipgate_sidecar::{
    cli::run_bridge,
    config::{BridgeCommand, BridgeConfig, BridgeTarget, ClientArgs, DeliveryArgs, OnRefusal},
};
use tokio_util::sync::CancellationToken;

/// One scripted answer.
#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
}

impl Reply {
    fn status(status: u16) -> Self {
        Reply {
            status,
            headers: Vec::new(),
        }
    }

    fn with(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// A request the receiver got, and what it answered.
#[derive(Clone, Debug)]
struct Hit {
    at: Instant,
    method: String,
    path: String,
    seq: Option<u64>,
    body: String,
    answered: u16,
}

#[derive(Default)]
struct Script {
    replies: VecDeque<Reply>,
    hits: Vec<Hit>,
}

/// An HTTP receiver that answers from a script, then 200.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Script>>);

impl Receiver {
    async fn start(replies: impl IntoIterator<Item = Reply>) -> (Receiver, SocketAddr) {
        let receiver = Receiver::default();
        receiver.0.lock().unwrap().replies.extend(replies);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new()
            .fallback(scripted_answer)
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        (receiver, addr)
    }

    fn hits(&self) -> Vec<Hit> {
        self.0.lock().unwrap().hits.clone()
    }

    fn delivered(&self) -> Vec<Hit> {
        self.hits()
            .into_iter()
            .filter(|h| h.answered == 200)
            .collect()
    }
}

async fn scripted_answer(State(receiver): State<Receiver>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_else(|_| Bytes::new());
    let seq = parts
        .headers
        .get("x-sidecar-seq")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let mut script = receiver.0.lock().unwrap();
    let reply = script.replies.pop_front().unwrap_or(Reply::status(200));
    script.hits.push(Hit {
        at: Instant::now(),
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        seq,
        body: String::from_utf8_lossy(&body).into_owned(),
        answered: reply.status,
    });
    let mut headers = HeaderMap::new();
    for (name, value) in reply.headers {
        headers.insert(name, HeaderValue::from_str(&value).unwrap());
    }
    (
        StatusCode::from_u16(reply.status).unwrap(),
        headers,
        "{}".to_string(),
    )
        .into_response()
}

fn fast_delivery() -> DeliveryArgs {
    DeliveryArgs {
        max_attempts: 2,
        on_refusal: OnRefusal::Stop,
        backoff_ms: 20,
        max_backoff_ms: 100,
        timeout_ms: 2000,
    }
}

/// A server with the JSON forwarder running inside it, posting to `url`.
async fn server_forwarding_to(url: String) -> TestServer {
    TestServer::start_with(|c| {
        c.bridges.push(BridgeConfig {
            target: BridgeTarget::Webhook {
                url,
                secret: None,
                conventions: Default::default(),
            },
            state: PathBuf::from(format!("{}.webhook.cursor", c.database)),
            delivery: fast_delivery().policy(),
            start: sipgate_sidecar::config::NewBridgeStart::Beginning,
        });
    })
    .await
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

async fn readyz(server: &TestServer) -> (u16, String) {
    let response = server
        .client
        .get(format!("{}/readyz", server.http))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `/readyz` until its body satisfies `done`; returns status and body.
async fn wait_for_readyz(server: &TestServer, done: impl Fn(u16, &str) -> bool) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = readyz(server).await;
        if done(status, &body) {
            return (status, body);
        }
        assert!(Instant::now() < deadline, "/readyz stayed {status}: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn client_args(server: &TestServer) -> ClientArgs {
    ClientArgs {
        server: server.grpc.clone(),
        grpc_token: None,
        ca_cert: None,
        client_cert: None,
        client_key: None,
    }
}

#[tokio::test]
async fn a_receiver_answering_502_then_200_gets_every_event_once_in_order() {
    // More 502s than --max-attempts: an outage never counts as a refusal.
    let (receiver, addr) = Receiver::start(vec![Reply::status(502); 8]).await;
    let server = server_forwarding_to(format!("http://{addr}/hook")).await;
    answered_call(&server, "o1").await;

    // While the receiver fails, the bridge retries and says so; still ready.
    let (status, body) = wait_for_readyz(&server, |_, b| b.contains("retrying")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("ready\n"), "{body}");
    assert!(body.contains("bridge webhook: retrying"), "{body}");
    assert!(body.contains("502 Bad Gateway"), "{body}");

    wait_for("3 deliveries", || receiver.delivered().len() >= 3).await;
    answered_call(&server, "o2").await;
    wait_for("6 deliveries", || receiver.delivered().len() >= 6).await;
    let (status, body) = wait_for_readyz(&server, |_, b| b.contains("0 events behind")).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("bridge webhook: delivering, delivered up to #6"),
        "{body}"
    );

    let seqs: Vec<u64> = receiver.delivered().iter().filter_map(|h| h.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6], "each event once, in order");
    let failed: Vec<u64> = receiver
        .hits()
        .iter()
        .filter(|h| h.answered == 502)
        .filter_map(|h| h.seq)
        .collect();
    assert_eq!(failed, [1; 8], "the first event retried through the outage");
    server.stop().await;
}

#[tokio::test]
async fn the_grpc_bridge_waits_out_a_502_outage() {
    let server = TestServer::start().await;
    let (receiver, addr) = Receiver::start(vec![Reply::status(502); 5]).await;
    answered_call(&server, "g1").await;
    let token = CancellationToken::new();
    let command = BridgeCommand::Zammad {
        cti_url: format!("http://{addr}/api/v1/cti/t0k"),
        state: server.dir.path().join("zammad.cursor"),
        start_from_now: false,
        blocked_calls: Default::default(),
        delivery: fast_delivery(),
    };
    let args = client_args(&server);
    let stop = token.clone();
    let task = tokio::spawn(async move { run_bridge(&args, command, stop).await });
    wait_for("3 deliveries", || receiver.delivered().len() >= 3).await;
    token.cancel();
    task.await.unwrap().unwrap();
    let events: Vec<String> = receiver
        .delivered()
        .iter()
        .map(|h| {
            let form: Vec<(String, String)> =
                sipgate_sidecar::sipgate::form::parse_form(h.body.as_bytes()).unwrap();
            let get = |k: &str| form.iter().find(|(key, _)| key == k).unwrap().1.clone();
            format!("{}:{}", get("event"), get("call_id"))
        })
        .collect();
    assert_eq!(events, ["newCall:g1", "answer:g1", "hangup:g1"]);
    assert_eq!(receiver.hits().len(), 8, "5 failures, 3 deliveries");
}

#[tokio::test]
async fn redirects_are_refused_and_the_location_gets_nothing() {
    for code in [302, 307] {
        let (elsewhere, elsewhere_addr) = Receiver::start([]).await;
        let location = format!("http://{elsewhere_addr}/stolen");
        let (receiver, addr) =
            Receiver::start(vec![Reply::status(code).with("location", &location); 10]).await;
        let server = server_forwarding_to(format!("http://{addr}/hook")).await;
        answered_call(&server, "r1").await;

        let (status, body) = wait_for_readyz(&server, |s, _| s == 503).await;
        assert!(
            body.starts_with("not ready: bridge webhook stopped"),
            "{code}: {body}"
        );
        assert!(body.contains("bridge webhook: stopped"), "{code}: {body}");
        assert!(
            body.contains(&location),
            "{code}: the reason names the Location: {body}"
        );
        assert!(body.contains("refused 2 times"), "{code}: {body}");
        assert_eq!(status, 503);
        assert!(
            elsewhere.hits().is_empty(),
            "{code}: the redirect was followed"
        );
        assert_eq!(
            receiver.hits().len(),
            2,
            "{code}: --max-attempts 2, then stop"
        );
        assert!(receiver.delivered().is_empty());
        assert!(
            !PathBuf::from(format!(
                "{}/sidecar.db.webhook.cursor",
                server.dir.path().display()
            ))
            .exists(),
            "{code}: the refused event is not marked delivered"
        );

        // `bridge status` shows it and fails.
        let command = BridgeCommand::Status {
            http_url: server.http.clone(),
            json: false,
        };
        let error = run_bridge(&client_args(&server), command, CancellationToken::new())
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("bridge webhook stopped"), "{error}");
        server.stop().await;
    }
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let (receiver, addr) = Receiver::start([
        Reply::status(429).with("retry-after", "1"),
        Reply::status(503).with("retry-after", "1"),
    ])
    .await;
    let server = server_forwarding_to(format!("http://{addr}/hook")).await;
    assert_eq!(
        server
            .post(
                "/api/v1/sipgate/in",
                &new_call("in", "492111234567", "4930600000000", "ra1"),
            )
            .await
            .status,
        200
    );
    wait_for("the delivery", || !receiver.delivered().is_empty()).await;
    let hits = receiver.hits();
    assert_eq!(hits.len(), 3, "{hits:?}");
    for pair in hits.windows(2) {
        let waited = pair[1].at - pair[0].at;
        // The backoff alone would be 20-40 ms.
        assert!(waited >= Duration::from_millis(950), "waited {waited:?}");
    }
    assert!(hits.iter().all(|h| h.method == "POST" && h.path == "/hook"));
    server.stop().await;
}

#[tokio::test]
async fn a_status_check_of_a_server_without_bridges_succeeds() {
    let server = TestServer::start().await;
    let (status, body) = readyz(&server).await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    let command = BridgeCommand::Status {
        http_url: server.http.clone(),
        json: false,
    };
    run_bridge(&client_args(&server), command, CancellationToken::new())
        .await
        .unwrap();
    server.stop().await;
}

/// A server whose log ends at #3, with a bridge cursor at #50: what a
/// database restored from a backup older than the cursor looks like.
async fn restored_server(
    configure: impl FnOnce(&mut sipgate_sidecar::config::Config),
) -> TestServer {
    let server = TestServer::start().await;
    answered_call(&server, "old").await;
    let dir = server.stop().await;
    let config = {
        let mut config = test_config(&dir);
        configure(&mut config);
        config
    };
    std::fs::write(
        format!("{}.webhook.cursor", config.database),
        "{\"after_seq\":50}",
    )
    .unwrap();
    TestServer::start_in(dir, config).await
}

#[tokio::test]
async fn an_in_process_bridge_with_a_cursor_beyond_the_log_stops_and_says_why() {
    let (receiver, addr) = Receiver::start([]).await;
    let server = restored_server(|c| {
        c.bridges.push(BridgeConfig {
            target: BridgeTarget::Webhook {
                url: format!("http://{addr}/hook"),
                secret: None,
                conventions: Default::default(),
            },
            state: PathBuf::from(format!("{}.webhook.cursor", c.database)),
            delivery: fast_delivery().policy(),
            start: sipgate_sidecar::config::NewBridgeStart::Beginning,
        });
    })
    .await;
    let (status, body) = wait_for_readyz(&server, |s, _| s == 503).await;
    assert_eq!(status, 503);
    assert!(
        body.contains("is at seq 50 but the newest event is #3"),
        "{body}"
    );
    assert!(body.contains("restored"), "{body}");
    // New events are not delivered past the gap either.
    answered_call(&server, "new").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(receiver.hits().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_grpc_bridge_with_a_cursor_beyond_the_log_stops_and_says_why() {
    let (receiver, addr) = Receiver::start([]).await;
    let server = restored_server(|_| {}).await;
    let state = PathBuf::from(format!(
        "{}/sidecar.db.webhook.cursor",
        server.dir.path().display()
    ));
    let command = BridgeCommand::Webhook {
        url: format!("http://{addr}/hook"),
        secret: None,
        state: state.clone(),
        start_from_now: false,
        delivery: fast_delivery(),
        format: Default::default(),
        source: "/sipgate-sidecar".into(),
        standard_secret: Vec::new(),
    };
    let error = tokio::time::timeout(
        Duration::from_secs(20),
        run_bridge(&client_args(&server), command, CancellationToken::new()),
    )
    .await
    .expect("the bridge stops instead of retrying")
    .unwrap_err()
    .to_string();
    assert!(
        error.contains(&format!(
            "cursor file {} is at seq 50 but the newest event is #3",
            state.display()
        )),
        "{error}"
    );
    assert!(error.contains("delete it"), "{error}");
    assert!(receiver.hits().is_empty());
    assert_eq!(
        std::fs::read_to_string(&state).unwrap(),
        "{\"after_seq\":50}",
        "the cursor is left for the operator"
    );
    server.stop().await;
}

/// A server that answers `Subscribe` with OUT_OF_RANGE, as the sidecar does
/// for a resume point beyond its newest event.
struct RefusesToResume;

#[tonic::async_trait]
impl sipgate_sidecar::proto::call_events_server::CallEvents for RefusesToResume {
    type SubscribeStream =
        futures::stream::Empty<Result<sipgate_sidecar::proto::CallEvent, tonic::Status>>;

    async fn subscribe(
        &self,
        request: tonic::Request<sipgate_sidecar::proto::SubscribeRequest>,
    ) -> Result<tonic::Response<Self::SubscribeStream>, tonic::Status> {
        let after = request.into_inner().after_seq.unwrap_or(0);
        Err(tonic::Status::out_of_range(format!(
            "after_seq {after} is beyond the newest event #1"
        )))
    }

    async fn list_events(
        &self,
        _request: tonic::Request<sipgate_sidecar::proto::ListEventsRequest>,
    ) -> Result<tonic::Response<sipgate_sidecar::proto::ListEventsResponse>, tonic::Status> {
        // A head that passes the bridge's own check: only the server's answer stops it.
        Ok(tonic::Response::new(
            sipgate_sidecar::proto::ListEventsResponse {
                head_seq: 100,
                ..Default::default()
            },
        ))
    }
}

#[tokio::test]
async fn a_grpc_bridge_stops_on_out_of_range_instead_of_retrying() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                sipgate_sidecar::proto::call_events_server::CallEventsServer::new(RefusesToResume),
            )
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("webhook.cursor");
    std::fs::write(&state, "{\"after_seq\":7}").unwrap();
    let (receiver, receiver_addr) = Receiver::start([]).await;
    let command = BridgeCommand::Webhook {
        url: format!("http://{receiver_addr}/hook"),
        secret: None,
        state: state.clone(),
        start_from_now: false,
        delivery: fast_delivery(),
        format: Default::default(),
        source: "/sipgate-sidecar".into(),
        standard_secret: Vec::new(),
    };
    let args = ClientArgs {
        server: format!("http://{addr}"),
        grpc_token: None,
        ca_cert: None,
        client_cert: None,
        client_key: None,
    };
    let error = tokio::time::timeout(
        Duration::from_secs(20),
        run_bridge(&args, command, CancellationToken::new()),
    )
    .await
    .expect("OUT_OF_RANGE is final")
    .unwrap_err()
    .to_string();
    assert!(
        error.contains(&format!(
            "cursor file {} is at seq 7 and the server refused to resume there",
            state.display()
        )),
        "{error}"
    );
    assert!(
        error.contains("after_seq 7 is beyond the newest event #1"),
        "{error}"
    );
    assert!(receiver.hits().is_empty());
}
