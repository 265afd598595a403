//! PostgreSQL over TLS: `sslmode` and `sslrootcert` in the database URL are
//! honoured (the connection is encrypted and the server's certificate
//! checked), and a server whose certificate the given CA did not sign is
//! refused. `.ci/run` starts its PostgreSQL with TLS on and names the CA in
//! `SIDECAR_TEST_POSTGRES_CA`.

mod common;

use common::{TestServer, new_call, postgres_database, test_config};
use sqlx::Connection as _;

fn test_ca() -> Option<String> {
    match std::env::var("SIDECAR_TEST_POSTGRES_CA") {
        Ok(ca) if !ca.is_empty() => Some(ca),
        _ if std::env::var_os("CI").is_some() => {
            panic!("SIDECAR_TEST_POSTGRES_CA is not set (bash .ci/run starts PostgreSQL with TLS)")
        }
        _ => {
            eprintln!(
                "SKIPPED: set SIDECAR_TEST_POSTGRES_CA to the CA of a PostgreSQL with ssl=on"
            );
            None
        }
    }
}

fn with(database: &str, params: &str) -> String {
    let sep = if database.contains('?') { '&' } else { '?' };
    format!("{database}{sep}{params}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_url_s_sslmode_and_ca_are_honoured() {
    let Some(database) = postgres_database("pg_tls").await else {
        return;
    };
    let Some(ca) = test_ca() else { return };

    // verify-full against the server's CA: connected, and encrypted.
    let verified = with(&database, &format!("sslmode=verify-full&sslrootcert={ca}"));
    let mut connection = sqlx::PgConnection::connect(&verified)
        .await
        .expect("verify-full with the server's CA connects");
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&mut connection)
            .await
            .unwrap();
    assert!(encrypted, "the session is TLS");
    connection.close().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir);
    config.database = verified;
    config.spool_dir = Some(dir.path().join("spool"));
    let server = TestServer::start_in(dir, config).await;
    let reply = server
        .post(
            "/api/v1/sipgate/in",
            &new_call("in", "492111234567", "4930600000000", "over-tls"),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(server.head_seq().await, 1);
    let dir = server.stop().await;

    // A CA that did not sign the server's certificate: refused, loudly.
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, other.cert.pem()).unwrap();
    let mut config = test_config(&dir);
    config.database = with(
        &database,
        &format!("sslmode=verify-full&sslrootcert={}", other_ca.display()),
    );
    config.spool_dir = Some(dir.path().join("spool"));
    let error = sipgate_sidecar::start(config)
        .await
        .err()
        .expect("an untrusted server certificate is refused");
    let text = format!("{error:#}").to_lowercase();
    assert!(
        text.contains("certificate") || text.contains("unknownissuer"),
        "{text}"
    );
}
