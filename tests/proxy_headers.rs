//! Forwarding headers behind a trusted proxy: they can narrow who is let in,
//! never widen it.

mod common;

use common::{TestServer, new_call};

#[tokio::test]
async fn forwarded_for_cannot_open_the_allow_list() {
    // The test client connects from 127.0.0.1, configured as our proxy.
    let server = TestServer::start_with(|c| {
        c.allow_sources = vec!["217.116.118.254/32".parse().unwrap()];
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let body = new_call("in", "492111234567", "4930600000000", "xff1");
    for forwarded in [
        "217.116.118.254, 198.51.100.7:4444",
        "217.116.118.254, unknown",
        "217.116.118.254, [2001:db8::1]",
    ] {
        let reply = server
            .post_with(
                "/api/v1/sipgate/in",
                body.clone().into(),
                &[("x-forwarded-for", forwarded)],
            )
            .await;
        assert_eq!(reply.status, 403, "{forwarded}: {}", reply.body);
        assert!(reply.body.contains("<Error>"), "{}", reply.body);
    }
    assert_eq!(server.head_seq().await, 0);

    let reply = server
        .post_with(
            "/api/v1/sipgate/in",
            body.into(),
            &[("x-forwarded-for", "10.1.2.3, 217.116.118.254:5060")],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(server.head_seq().await, 1);
}
