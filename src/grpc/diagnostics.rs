//! `sidecar.v1.Diagnostics`: the last webhook requests, from memory.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert;
use crate::{
    proto::{self, diagnostics_server},
    recent::{RecentRequest, RecentRequests},
};

pub struct DiagnosticsService {
    recent: Arc<RecentRequests>,
}

impl DiagnosticsService {
    pub fn new(recent: Arc<RecentRequests>) -> Self {
        DiagnosticsService { recent }
    }
}

fn recent_request(r: RecentRequest) -> proto::RecentRequest {
    proto::RecentRequest {
        received_at_ms: r.received_at_ms,
        received_at: Some(crate::encode::timestamp(r.received_at_ms)),
        remote_addr: r.remote_addr,
        method: r.method,
        path: r.path,
        kind: r.kind.map_or(0, convert::event_kind),
        call_id: r.call_id,
        direction: convert::direction(r.direction),
        from: r.from,
        to: r.to,
        status: u32::from(r.status),
        outcome: r.outcome.map_or("", |o| o.as_str()).to_owned(),
        reason: r.reason,
        decision: r.decision.as_ref().map(convert::decision),
        reply: r.reply,
        reply_truncated: r.reply_truncated,
        duplicate: r.duplicate,
        seq: r.seq.unwrap_or(0),
        duration_us: r.duration_us,
    }
}

#[tonic::async_trait]
impl diagnostics_server::Diagnostics for DiagnosticsService {
    async fn list_recent_requests(
        &self,
        request: Request<proto::ListRecentRequestsRequest>,
    ) -> Result<Response<proto::ListRecentRequestsResponse>, Status> {
        let limit = request.into_inner().limit as usize;
        let requests = self
            .recent
            .newest_first(limit)
            .into_iter()
            .map(recent_request)
            .collect();
        Ok(Response::new(proto::ListRecentRequestsResponse {
            requests,
            capacity: u32::try_from(self.recent.capacity()).unwrap_or(u32::MAX),
        }))
    }
}
