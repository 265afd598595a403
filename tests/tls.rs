//! TLS on both listeners, with a CA and certificates made at test time:
//! webhooks over https, gRPC over TLS (with and without client
//! certificates), the CLI against a TLS server, and a bridge that trusts an
//! internal CA.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, routing::post};
use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use sipgate_sidecar::{
    client,
    config::{BridgeConfig, BridgeTarget, DeliveryPolicy, HttpListenerConfig, TlsFiles},
    listener::{self, Listener},
    proto::{self, call_events_client::CallEventsClient},
};
use tempfile::TempDir;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// A CA, a server certificate for 127.0.0.1/localhost and a client
/// certificate, all signed by the CA, as PEM files in a temp dir.
struct Pki {
    dir: TempDir,
    ca_pem: String,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);

        let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose, name: &str| {
            let mut params = CertificateParams::new(names).unwrap();
            params.extended_key_usages = vec![usage];
            params.use_authority_key_identifier_extension = true;
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &issuer).unwrap();
            std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.path().join(format!("{name}.key")), key.serialize_pem()).unwrap();
        };
        leaf(
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
            "server",
        );
        leaf(
            vec!["sidecar-admin".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
            "client",
        );
        // A CA nobody here trusts, for the negative cases.
        let other = CertificateParams::new(vec!["127.0.0.1".into()]).unwrap();
        let other_key = KeyPair::generate().unwrap();
        let other = other.self_signed(&other_key).unwrap();
        std::fs::write(dir.path().join("other-ca.pem"), other.pem()).unwrap();

        let ca_pem = ca_cert.pem();
        std::fs::write(dir.path().join("ca.pem"), &ca_pem).unwrap();
        Pki { dir, ca_pem }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn server_files(&self) -> TlsFiles {
        TlsFiles {
            cert: self.path("server.pem"),
            key: self.path("server.key"),
        }
    }

    fn client_identity(&self) -> Identity {
        Identity::from_pem(
            std::fs::read(self.path("client.pem")).unwrap(),
            std::fs::read(self.path("client.key")).unwrap(),
        )
    }

    fn https_client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap())
            .build()
            .unwrap()
    }
}

async fn grpc_channel(url: &str, tls: ClientTlsConfig) -> Result<Channel, tonic::transport::Error> {
    Channel::from_shared(url.to_string())
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

async fn head_seq(channel: Channel) -> Result<u64, tonic::Status> {
    Ok(CallEventsClient::new(channel)
        .list_events(proto::ListEventsRequest {
            after_seq: 0,
            limit: 1,
            ..Default::default()
        })
        .await?
        .into_inner()
        .head_seq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_over_https_trusting_the_test_ca() {
    let pki = Pki::new();
    let server = TestServer::start_with(|c| {
        c.http_listener.tls = Some(pki.server_files());
    })
    .await;
    let addr = server.running.as_ref().unwrap().http_addr;
    let https = format!("https://{addr}");

    let reply = pki
        .https_client()
        .post(format!("{https}/api/v1/sipgate/in"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(new_call("in", "492111234567", "4930600000000", "tls-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.version(), reqwest::Version::HTTP_11);
    let body = reply.text().await.unwrap();
    assert!(
        body.contains(&format!("onAnswer=\"{https}/api/v1/sipgate/in\"")),
        "callbacks keep the https scheme: {body}"
    );
    assert_eq!(server.call("tls-1").await.call_id, "tls-1");

    // Plain HTTP on the TLS port, and a client that does not trust the CA, fail.
    let plain = server
        .client
        .get(format!("http://{addr}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        plain.is_err() || plain.unwrap().status() != 200,
        "plain HTTP answered"
    );
    let untrusting = reqwest::Client::new()
        .get(format!("{https}/healthz"))
        .send()
        .await;
    let error = format!("{:?}", untrusting.unwrap_err());
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_with_the_generated_client() {
    let pki = Pki::new();
    let server = TestServer::start_with(|c| {
        c.grpc_listener.tls = Some(pki.server_files());
    })
    .await;
    let url = format!("https://{}", server.running.as_ref().unwrap().grpc_addr);
    let trusted = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&pki.ca_pem));
    let channel = grpc_channel(&url, trusted).await.expect("TLS connects");
    assert_eq!(head_seq(channel).await.unwrap(), 0);

    // An untrusted CA is refused, and so is plaintext.
    let other = std::fs::read(pki.path("other-ca.pem")).unwrap();
    let untrusted = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(other));
    let refused = match grpc_channel(&url, untrusted).await {
        Err(e) => Err(e.to_string()),
        Ok(channel) => head_seq(channel).await.map_err(|s| s.to_string()),
    };
    assert!(
        refused.is_err(),
        "an untrusted server certificate was accepted"
    );
    let plain = Channel::from_shared(url.replace("https://", "http://"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await;
    let plain = match plain {
        Err(e) => Err(e.to_string()),
        Ok(channel) => head_seq(channel).await.map_err(|s| s.to_string()),
    };
    assert!(plain.is_err(), "plaintext gRPC answered on the TLS port");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_client_certificates_are_required_when_configured() {
    let pki = Pki::new();
    let server = TestServer::start_with(|c| {
        c.grpc_listener.tls = Some(pki.server_files());
        c.grpc_listener.client_ca = Some(pki.path("ca.pem"));
    })
    .await;
    let url = format!("https://{}", server.running.as_ref().unwrap().grpc_addr);
    let ca = || ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&pki.ca_pem));

    let without = match grpc_channel(&url, ca()).await {
        Err(e) => Err(format!("{e:?}")),
        Ok(channel) => head_seq(channel).await.map_err(|s| format!("{s:?}")),
    };
    assert!(without.is_err(), "served without a client certificate");

    let with = grpc_channel(&url, ca().identity(pki.client_identity()))
        .await
        .expect("connects with a client certificate");
    assert_eq!(head_seq(with).await.unwrap(), 0);

    // The client layer the CLI and bridges use does the same from file paths.
    let mut endpoint = client::Endpoint::plain(url.clone(), None);
    endpoint.ca_cert = Some(pki.path("ca.pem"));
    endpoint.client_cert = Some(pki.path("client.pem"));
    endpoint.client_key = Some(pki.path("client.key"));
    let mut events = CallEventsClient::new(client::connect(&endpoint).await.unwrap());
    let page = events
        .list_events(proto::ListEventsRequest {
            after_seq: 0,
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.into_inner().head_seq, 0);
    server.stop().await;
}

/// Runs the binary with `args`; (success, stdout, stderr).
async fn run_cli(args: &[&str]) -> (bool, String, String) {
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        Command::new(env!("CARGO_BIN_EXE_sipgate-sidecar"))
            .args(args)
            .env_remove("SIDECAR_SERVER")
            .env_remove("SIDECAR_CA_CERT")
            .output(),
    )
    .await
    .expect("the CLI finishes")
    .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_against_a_tls_server_started_with_the_tls_flags() {
    let pki = Pki::new();
    let database = pki.path("cli.db");
    let mut server = Command::new(env!("CARGO_BIN_EXE_sipgate-sidecar"))
        .args(["serve", "--http-addr", "127.0.0.1:0", "--grpc-addr"])
        .args(["127.0.0.1:0", "--metrics-addr", "off", "--signature", "off"])
        .args(["--database", arg(&database)])
        .args(["--tls-cert", arg(&pki.path("server.pem"))])
        .args(["--tls-key", arg(&pki.path("server.key"))])
        .args(["--grpc-tls-cert", arg(&pki.path("server.pem"))])
        .args(["--grpc-tls-key", arg(&pki.path("server.key"))])
        .args(["--grpc-client-ca", arg(&pki.path("ca.pem"))])
        .env("SIDECAR_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stderr.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("listening:") {
                return line;
            }
        }
        panic!("server exited before listening");
    })
    .await
    .unwrap();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let field = |marker: &str| {
        line.split(marker)
            .nth(1)
            .and_then(|s| s.split(',').next())
            .unwrap()
            .trim()
            .to_string()
    };
    let webhooks = field("webhooks on ");
    assert!(webhooks.starts_with("https://"), "{line}");
    let grpc = format!("https://{}", field("gRPC on "));

    let reply = pki
        .https_client()
        .post(format!("{webhooks}/api/v1/sipgate/in"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(new_call("in", "492111234567", "4930600000000", "cli-tls"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);

    let ca = arg(&pki.path("ca.pem")).to_string();
    let cert = arg(&pki.path("client.pem")).to_string();
    let key = arg(&pki.path("client.key")).to_string();
    let (ok, stdout, stderr) = run_cli(&[
        "calls",
        "list",
        "--json",
        "--server",
        &grpc,
        "--ca-cert",
        &ca,
        "--client-cert",
        &cert,
        "--client-key",
        &key,
    ])
    .await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("cli-tls"), "{stdout}");

    // Without a client certificate it fails (TLS 1.3 lets the client finish
    // its handshake before the server checks, so the first call fails) ...
    let (ok, stdout, stderr) =
        run_cli(&["calls", "list", "--server", &grpc, "--ca-cert", &ca]).await;
    assert!(!ok, "listed calls without a client certificate: {stdout}");
    assert!(stderr.contains("transport error"), "{stderr}");
    // ... and without the CA it does not trust the server.
    let (ok, _, stderr) = run_cli(&[
        "calls",
        "list",
        "--server",
        &grpc,
        "--client-cert",
        &cert,
        "--client-key",
        &key,
    ])
    .await;
    assert!(!ok, "trusted the server without --ca-cert");
    assert!(stderr.contains(&grpc), "{stderr}");
    // Plaintext to the TLS port: the error names the likely cause.
    let plain = grpc.replace("https://", "http://");
    let (ok, _, stderr) = run_cli(&["calls", "list", "--server", &plain]).await;
    assert!(!ok);
    assert!(
        stderr.contains("speaks TLS: use --server https://"),
        "{stderr}"
    );

    server.start_kill().unwrap();
    server.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_trusts_an_internal_ca_given_with_ca_cert() {
    let pki = Pki::new();
    // An https receiver with a certificate from the test CA, served by the
    // sidecar's own listener code.
    let received: Arc<Mutex<Vec<String>>> = Arc::default();
    let store = received.clone();
    let router = Router::new().route(
        "/hook",
        post(move |body: String| {
            let store = store.clone();
            async move {
                store.lock().unwrap().push(body);
                "ok"
            }
        }),
    );
    let config = HttpListenerConfig {
        tls: Some(pki.server_files()),
        ..HttpListenerConfig::default()
    };
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver = Listener::webhook(tcp, &config).unwrap();
    let receiver_addr = receiver.local_addr().unwrap();
    let stop = CancellationToken::new();
    let receiver_task = tokio::spawn(listener::serve_http(
        receiver,
        router,
        config,
        stop.clone(),
        stop.clone(),
    ));

    let state = pki.path("webhook.cursor");
    let server = TestServer::start_with(|c| {
        c.bridges.push(BridgeConfig {
            target: BridgeTarget::Webhook {
                url: format!("https://{receiver_addr}/hook"),
                secret: None,
                conventions: Default::default(),
            },
            state,
            delivery: DeliveryPolicy {
                ca_cert: Some(pki.path("ca.pem")),
                backoff: Duration::from_millis(50),
                ..DeliveryPolicy::default()
            },
            start: sipgate_sidecar::config::NewBridgeStart::Beginning,
        });
    })
    .await;
    let reply = server
        .post(
            "/api/v1/sipgate/in",
            &new_call("in", "492111234567", "4930600000000", "bridged-tls"),
        )
        .await;
    assert_eq!(reply.status, 200);
    let start = std::time::Instant::now();
    while !received
        .lock()
        .unwrap()
        .iter()
        .any(|b| b.contains("bridged-tls"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the receiver got nothing over https"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
    stop.cancel();
    receiver_task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_without_dropping_a_connection_or_the_server() {
    let (first, second) = (Pki::new(), Pki::new());
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let install = |pki: &Pki| {
        std::fs::copy(pki.path("server.pem"), &cert).unwrap();
        std::fs::copy(pki.path("server.key"), &key).unwrap();
    };
    install(&first);
    let database = dir.path().join("sidecar.db").display().to_string();
    let server = common::process::spawn_binary_logging(
        dir.path(),
        &[
            "--metrics-addr",
            "off",
            "--database",
            &database,
            "--tls-cert",
            arg(&cert),
            "--tls-key",
            arg(&key),
        ],
        "info",
    )
    .await;
    let mut child = server.child;
    let https = server.http.replace("http://", "https://");
    let health = |client: &reqwest::Client| {
        let url = format!("{https}/healthz");
        let client = client.clone();
        async move { client.get(url).send().await.map(|r| r.status().as_u16()) }
    };
    // A keep-alive connection opened with the first certificate.
    let kept = first.https_client();
    assert_eq!(health(&kept).await.unwrap(), 200);

    let log = dir.path().join("server.log");
    let hangup = |child: &tokio::process::Child| {
        let pid = child.id().unwrap() as libc::pid_t;
        // SAFETY: kill(2) with a pid this test started and a valid signal.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    };
    let logged = |what: &'static str| {
        let log = log.clone();
        async move {
            for _ in 0..100 {
                if std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains(what)
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!(
                "not logged: {what}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
    };

    install(&second);
    hangup(&child);
    logged("TLS certificate and key reloaded").await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP does not stop the server"
    );
    // New connections get the new certificate ...
    assert_eq!(health(&second.https_client()).await.unwrap(), 200);
    assert!(
        health(&first.https_client()).await.is_err(),
        "the old one is gone"
    );
    // ... and the connection opened before is still served.
    assert_eq!(health(&kept).await.unwrap(), 200);

    // A broken file: the reload is refused, the certificate in use stays.
    std::fs::write(&cert, "not a certificate").unwrap();
    hangup(&child);
    logged("cannot be loaded; keeping the ones in use").await;
    assert!(child.try_wait().unwrap().is_none());
    assert_eq!(health(&second.https_client()).await.unwrap(), 200);
    let status = common::process::terminate(&mut child).await;
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_a_plaintext_port_and_the_webhook_port_are_named_as_the_likely_cause() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::process::spawn_binary(dir.path(), &["--metrics-addr", "off"]).await;
    let tls = server.grpc.replace("http://", "https://");
    let (ok, _, stderr) = run_cli(&["settings", "show", "--server", &tls]).await;
    assert!(!ok);
    assert!(
        stderr.contains("speaks plaintext gRPC, not TLS: use --server http://"),
        "{stderr}"
    );
    let (ok, _, stderr) = run_cli(&["settings", "show", "--server", &server.http]).await;
    assert!(!ok);
    assert!(
        stderr.contains("looks like the webhook listener (--http-addr)"),
        "{stderr}"
    );
    // A refused connection is not second-guessed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (ok, _, stderr) = run_cli(&[
        "settings",
        "show",
        "--server",
        &format!("http://127.0.0.1:{port}"),
    ])
    .await;
    assert!(!ok);
    assert!(!stderr.contains("hint:"), "{stderr}");
    drop(server);
}
