//! `sipgate-sidecar watch`: tail the live event stream.

use std::time::Duration;

use futures::StreamExt;

use super::{endpoint, output};
use crate::{
    client::{self, Backoff, Followed, Reconnect},
    config::ClientArgs,
};

/// An unreachable server at the start is an error; a dropped stream is
/// retried 1 s, 2 s, 4 s, 8 s, 16 s apart, then given up.
const RECONNECT: Reconnect = Reconnect {
    backoff: Backoff {
        first: Duration::from_secs(1),
        max: Duration::from_secs(16),
    },
    give_up_after: Some(5),
    retry_first: false,
};

/// `--retry`: keep trying from the start, and for ever.
const RETRY: Reconnect = Reconnect {
    backoff: RECONNECT.backoff,
    give_up_after: None,
    retry_first: true,
};

/// Streams events until interrupted; reconnects and resumes after the last
/// sequence number it printed when the connection drops.
pub async fn run_watch(
    args: &ClientArgs,
    json: bool,
    after_seq: Option<u64>,
    retry: bool,
) -> anyhow::Result<()> {
    let reconnect = if retry { RETRY } else { RECONNECT };
    let mut events = client::follow_events(endpoint(args), after_seq, reconnect);
    while let Some(item) = events.next().await {
        match item? {
            Followed::Event(event) => output::event(&event, json),
            Followed::Interrupted { error, retry_in } => {
                eprintln!("stream interrupted: {error:#}; resuming in {retry_in:?}");
            }
        }
    }
    Ok(())
}
