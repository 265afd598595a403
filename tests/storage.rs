//! The database as the server sees it at start.

mod common;

use common::*;

#[tokio::test]
async fn an_unusable_database_path_stops_start_with_the_path_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir);
    config.database = "/proc/sipgate-sidecar-test/nope.db".into();
    let error = match sipgate_sidecar::start(config).await {
        Ok(_) => panic!("start must fail"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        error.contains("/proc/sipgate-sidecar-test/nope.db"),
        "{error}"
    );
}
