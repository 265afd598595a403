//! `sipgate-sidecar calls list`: the call log, newest first.

use super::{endpoint, output};
use crate::{
    client::{self, status_error},
    config::{CallsCommand, ClientArgs},
    proto::{self, call_log_client::CallLogClient},
};

pub async fn run_calls(args: &ClientArgs, command: CallsCommand) -> anyhow::Result<()> {
    let CallsCommand::List { json, limit } = command;
    let mut client = CallLogClient::new(client::connect(&endpoint(args)).await?);
    let response = client
        .list_calls(proto::ListCallsRequest {
            limit,
            ..Default::default()
        })
        .await
        .map_err(status_error)?
        .into_inner();
    output::calls(&response.calls, json);
    Ok(())
}
