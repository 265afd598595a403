//! `sipgate-sidecar events list`: the stored event log, oldest first, paged
//! through as far as asked.

use super::{endpoint, output};
use crate::{
    client::{self, status_error},
    config::{ClientArgs, EventsCommand},
    paging,
    proto::{self, call_events_client::CallEventsClient},
};

pub async fn run_events(
    args: &ClientArgs,
    json: bool,
    command: EventsCommand,
) -> anyhow::Result<()> {
    let EventsCommand::List {
        after_seq,
        limit,
        all,
    } = command;
    let mut client = CallEventsClient::new(client::connect(&endpoint(args)).await?);
    let mut remaining = (!all).then_some(limit);
    let mut after_seq = after_seq;
    loop {
        let page_size = remaining.map_or(paging::EVENTS.max, |r| {
            u32::try_from(r).unwrap_or(u32::MAX).min(paging::EVENTS.max)
        });
        let response = client
            .list_events(proto::ListEventsRequest {
                after_seq,
                limit: page_size,
                ..Default::default()
            })
            .await
            .map_err(status_error)?
            .into_inner();
        let take = remaining.map_or(response.events.len(), |r| {
            response
                .events
                .len()
                .min(usize::try_from(r).unwrap_or(usize::MAX))
        });
        for event in &response.events[..take] {
            output::event(event, json);
        }
        if let Some(r) = &mut remaining {
            *r -= take as u64;
            if *r == 0 {
                break;
            }
        }
        if response.events.is_empty() || response.next_after_seq >= response.head_seq {
            break;
        }
        after_seq = response.next_after_seq;
    }
    Ok(())
}
