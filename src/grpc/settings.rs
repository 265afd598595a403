//! `sidecar.v1.Settings`: block list, routing table, default caller ID, dry
//! run, Zammad import/export and the audit trail.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{client_identity, convert};
use crate::{
    decide, numbers, paging,
    proto::{self, settings_server},
    settings::{Change, SettingsError, SettingsManager, zammad},
};

pub struct SettingsService {
    settings: Arc<SettingsManager>,
}

impl SettingsService {
    pub fn new(settings: Arc<SettingsManager>) -> Self {
        SettingsService { settings }
    }

    fn cc(&self) -> &str {
        self.settings.country_code()
    }

    /// Stores `change` (built from the request, or the reason it is invalid)
    /// and answers with the settings as stored.
    async fn update<T>(
        &self,
        request: &Request<T>,
        change: Result<Change, SettingsError>,
    ) -> Result<Response<proto::SettingsSnapshot>, Status> {
        let stored = self
            .settings
            .update(&client_identity(request), change?)
            .await?;
        Ok(Response::new(convert::settings(&stored)))
    }
}

#[tonic::async_trait]
impl settings_server::Settings for SettingsService {
    async fn get_settings(
        &self,
        _request: Request<proto::GetSettingsRequest>,
    ) -> Result<Response<proto::SettingsSnapshot>, Status> {
        Ok(Response::new(convert::settings(&self.settings.snapshot())))
    }

    async fn add_block_entry(
        &self,
        request: Request<proto::AddBlockEntryRequest>,
    ) -> Result<Response<proto::SettingsSnapshot>, Status> {
        let r = request.get_ref();
        let change = Change::add_block(&r.pattern, &r.note, self.cc());
        self.update(&request, change).await
    }

    async fn remove_block_entry(
        &self,
        request: Request<proto::RemoveBlockEntryRequest>,
    ) -> Result<Response<proto::SettingsSnapshot>, Status> {
        let change = Change::remove_block(&request.get_ref().pattern, self.cc());
        self.update(&request, change).await
    }

    async fn reorder_block_list(
        &self,
        request: Request<proto::ReorderBlockListRequest>,
    ) -> Result<Response<proto::SettingsSnapshot>, Status> {
        let change = Change::reorder_block_list(&request.get_ref().patterns, self.cc());
        self.update(&request, change).await
    }

    async fn add_routing_rule(
        &self,
        request: Request<proto::AddRoutingRuleRequest>,
    ) -> Result<Response<proto::SettingsSnapshot>, Status> {
        let r = request.get_ref();
        let change = Change::add_route(&r.dest, &r.caller_id, &r.note, r.position, self.cc());
        self.update(&request, change).await
    }

    async fn remove_routing_rule(
        &self,
        request: Request<proto::RemoveRoutingRuleRequest>,
    ) -> Result<Response<proto::SettingsSnapshot>, Status> {
        let change = Change::remove_route(&request.get_ref().dest, self.cc());
        self.update(&request, change).await
    }

    async fn reorder_routing_table(
        &self,
        request: Request<proto::ReorderRoutingTableRequest>,
    ) -> Result<Response<proto::SettingsSnapshot>, Status> {
        let change = Change::reorder_routing_table(&request.get_ref().dests, self.cc());
        self.update(&request, change).await
    }

    async fn set_default_caller_id(
        &self,
        request: Request<proto::SetDefaultCallerIdRequest>,
    ) -> Result<Response<proto::SettingsSnapshot>, Status> {
        let change = Change::set_default_caller_id(&request.get_ref().caller_id, self.cc());
        self.update(&request, change).await
    }

    async fn evaluate(
        &self,
        request: Request<proto::EvaluateRequest>,
    ) -> Result<Response<proto::EvaluateResponse>, Status> {
        let r = request.into_inner();
        let direction = convert::direction_from(r.direction).ok_or_else(|| {
            Status::invalid_argument("direction must be DIRECTION_IN or DIRECTION_OUT")
        })?;
        let cc = self.cc();
        let normalized =
            |n: &str| numbers::normalize_number(n, cc).unwrap_or_else(|_| n.to_string());
        let decision = decide::decide(&self.settings.snapshot(), direction, &r.from, &r.to, cc);
        Ok(Response::new(proto::EvaluateResponse {
            decision: Some(convert::decision(&decision)),
            normalized_from: normalized(&r.from),
            normalized_to: normalized(&r.to),
        }))
    }

    async fn import_zammad(
        &self,
        request: Request<proto::ImportZammadRequest>,
    ) -> Result<Response<proto::SettingsSnapshot>, Status> {
        let change = Change::import_zammad(&request.get_ref().json, self.cc());
        self.update(&request, change).await
    }

    async fn export_zammad(
        &self,
        _request: Request<proto::ExportZammadRequest>,
    ) -> Result<Response<proto::ExportZammadResponse>, Status> {
        Ok(Response::new(proto::ExportZammadResponse {
            json: zammad::export(&self.settings.snapshot()),
        }))
    }

    async fn list_audit(
        &self,
        request: Request<proto::ListAuditRequest>,
    ) -> Result<Response<proto::ListAuditResponse>, Status> {
        let r = request.into_inner();
        let limit = paging::AUDIT.clamp(r.limit);
        let before = (r.before_id != 0).then_some(r.before_id);
        let entries = self.settings.audit(limit, before).await?;
        Ok(Response::new(proto::ListAuditResponse {
            entries: entries
                .into_iter()
                .map(|e| proto::AuditEntry {
                    id: e.id,
                    at_ms: e.at_ms,
                    client: e.client,
                    action: e.action,
                    detail: e.detail,
                })
                .collect(),
        }))
    }
}
