//! `sipgate-sidecar calls list|get|set-done`: the call log, newest first,
//! paged through as far as asked.

use super::{endpoint, output};
use crate::{
    client::{self, Authed, status_error},
    config::{CallDirection, CallStateFilter, CallsCommand, ClientArgs},
    paging,
    proto::{self, call_log_client::CallLogClient},
};

pub async fn run_calls(args: &ClientArgs, json: bool, command: CallsCommand) -> anyhow::Result<()> {
    let mut client = CallLogClient::new(client::connect(&endpoint(args)).await?);
    match command {
        CallsCommand::List {
            limit,
            all,
            direction,
            done,
            state,
            number,
        } => {
            let filter = proto::ListCallsRequest {
                direction: direction.map(|d| match d {
                    CallDirection::In => proto::Direction::In.into(),
                    CallDirection::Out => proto::Direction::Out.into(),
                }),
                done,
                state: state.map(|s| match s {
                    CallStateFilter::NewCall => proto::CallState::NewCall.into(),
                    CallStateFilter::Answer => proto::CallState::Answer.into(),
                    CallStateFilter::Hangup => proto::CallState::Hangup.into(),
                }),
                number: number.unwrap_or_default(),
                ..Default::default()
            };
            list(&mut client, filter, (!all).then_some(limit), json).await
        }
        CallsCommand::Get { call_id } => {
            let call = client
                .get_call(proto::GetCallRequest { call_id })
                .await
                .map_err(status_error)?
                .into_inner();
            output::call(&call, json);
            Ok(())
        }
        CallsCommand::SetDone { call_id, not_done } => {
            let call = client
                .set_done(proto::SetDoneRequest {
                    call_id,
                    done: !not_done,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            output::call(&call, json);
            Ok(())
        }
    }
}

/// Prints calls page by page (a page holds at most the server's maximum)
/// until `limit` rows are out or the log ends; `None` prints them all.
async fn list(
    client: &mut CallLogClient<Authed>,
    filter: proto::ListCallsRequest,
    limit: Option<u64>,
    json: bool,
) -> anyhow::Result<()> {
    let mut remaining = limit;
    let mut page_token = String::new();
    let mut table = output::CallTable::new(json);
    loop {
        let page_size = remaining.map_or(paging::CALLS.max, |r| {
            u32::try_from(r).unwrap_or(u32::MAX).min(paging::CALLS.max)
        });
        let response = client
            .list_calls(proto::ListCallsRequest {
                limit: page_size,
                page_token: page_token.clone(),
                ..filter.clone()
            })
            .await
            .map_err(status_error)?
            .into_inner();
        let take = remaining.map_or(response.calls.len(), |r| {
            response
                .calls
                .len()
                .min(usize::try_from(r).unwrap_or(usize::MAX))
        });
        for call in &response.calls[..take] {
            table.row(call);
        }
        if let Some(r) = &mut remaining {
            *r -= take as u64;
            if *r == 0 {
                break;
            }
        }
        if response.calls.is_empty() || response.next_page_token.is_empty() {
            break;
        }
        page_token = response.next_page_token;
    }
    table.finish();
    Ok(())
}
