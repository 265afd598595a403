//! `sipgate-sidecar requests`: the last webhook requests and their answers.

use super::{endpoint, output};
use crate::{
    client::{self, status_error},
    config::ClientArgs,
    proto::{self, diagnostics_client::DiagnosticsClient},
};

pub async fn run_requests(args: &ClientArgs, limit: u32, json: bool) -> anyhow::Result<()> {
    let mut client = DiagnosticsClient::new(client::connect(&endpoint(args)).await?);
    let response = client
        .list_recent_requests(proto::ListRecentRequestsRequest { limit })
        .await
        .map_err(status_error)?
        .into_inner();
    output::recent_requests(&response, json);
    Ok(())
}
