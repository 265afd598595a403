//! `sidecar.v1.Settings`: block list, routing table, default caller ID, dry
//! run, Zammad import/export, the audit trail and undo.
//!
//! Mutating calls read their preconditions from request metadata
//! ([`EXPECTED_VERSION`], [`FORCE`]), so requests built by existing clients
//! stay valid and simply skip the version check.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{client_identity, convert};
use crate::{
    decide, numbers, paging,
    proto::{self, settings_server},
    settings::{Change, Precondition, SettingsError, SettingsManager, clip, zammad},
};

/// Metadata key: the settings version a change is based on (ABORTED when stale).
pub const EXPECTED_VERSION: &str = "x-sidecar-expected-version";
/// Metadata key: `true` allows block patterns that block a country or everyone.
pub const FORCE: &str = "x-sidecar-force";

/// The longest error message sent back; the parts that echo input are
/// already cut to a short prefix where they are written.
const MAX_MESSAGE: usize = 1024;

fn status(e: SettingsError) -> Status {
    status_within(e, MAX_MESSAGE)
}

/// The status of `e`, its message cut to `max` characters.
pub(super) fn status_within(e: SettingsError, max: usize) -> Status {
    let status = Status::from(e);
    if status.message().chars().count() <= max {
        return status;
    }
    Status::new(status.code(), clip(status.message(), max))
}

/// A settings change's preconditions as request fields.
pub trait Preconditions {
    fn expected_version(&self) -> Option<u64>;
    fn force(&self) -> bool {
        false
    }
}

macro_rules! preconditions {
    ($($request:ident),* ; with force: $($forced:ident),*) => {
        $(impl Preconditions for proto::$request {
            fn expected_version(&self) -> Option<u64> {
                self.expected_version
            }
        })*
        $(impl Preconditions for proto::$forced {
            fn expected_version(&self) -> Option<u64> {
                self.expected_version
            }
            fn force(&self) -> bool {
                self.force
            }
        })*
    };
}

preconditions!(
    RemoveBlockEntryRequest, ReorderBlockListRequest, AddRoutingRuleRequest,
    RemoveRoutingRuleRequest, ReorderRoutingTableRequest, SetDefaultCallerIdRequest;
    with force: AddBlockEntryRequest, ImportZammadRequest, RestoreAuditRequest
);

/// A change's preconditions: the request's fields, else its metadata (older
/// clients). Both given and different is refused.
pub fn preconditions<T: Preconditions>(request: &Request<T>) -> Result<Precondition, Status> {
    let from_metadata = precondition(request)?;
    let fields = request.get_ref();
    let expected_version = match (fields.expected_version(), from_metadata.expected_version) {
        (Some(field), Some(meta)) if field != meta => {
            return Err(Status::invalid_argument(format!(
                "expected_version {field} and {EXPECTED_VERSION}: {meta} disagree: send one"
            )));
        }
        (Some(v), _) | (None, Some(v)) => Some(v),
        (None, None) => None,
    };
    Ok(Precondition {
        expected_version,
        force: fields.force() || from_metadata.force,
    })
}

/// The preconditions a request carries in its metadata.
pub fn precondition<T>(request: &Request<T>) -> Result<Precondition, Status> {
    let text = |key: &str| -> Result<Option<String>, Status> {
        match request.metadata().get(key) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .map(|s| Some(s.trim().to_string()))
                .map_err(|_| Status::invalid_argument(format!("{key} is not text"))),
        }
    };
    let expected_version = match text(EXPECTED_VERSION)? {
        None => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            Status::invalid_argument(format!(
                "{EXPECTED_VERSION} must be a settings version number, not '{}'",
                clip(&v, 32)
            ))
        })?),
    };
    let force = match text(FORCE)?.as_deref() {
        None | Some("") | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(other) => {
            return Err(Status::invalid_argument(format!(
                "{FORCE} must be true or false, not '{}'",
                clip(other, 32)
            )));
        }
    };
    Ok(Precondition {
        expected_version,
        force,
    })
}

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

    fn snapshot(&self) -> proto::SettingsSnapshot {
        let (content, version) = self.settings.content();
        convert::settings_with(&content.settings(version), &content.zammad)
    }

    /// Stores `change` (built from the request, or the reason it is invalid)
    /// under the request's preconditions and answers with the settings as
    /// stored.
    async fn update<T: Preconditions>(
        &self,
        request: &Request<T>,
        change: Result<Change, SettingsError>,
    ) -> Result<Response<proto::SettingsSnapshot>, Status> {
        let precondition = preconditions(request)?;
        let change = change.map_err(status)?;
        let stored = self
            .settings
            .update_checked(&client_identity(request), change, precondition)
            .await
            .map_err(status)?;
        let (content, _) = self.settings.content();
        Ok(Response::new(convert::settings_with(
            &stored,
            &content.zammad,
        )))
    }

    /// Parses and validates an import on a blocking thread: a large document
    /// takes long enough to stall webhook replies on an async worker.
    async fn parse_import(&self, json: String) -> Result<Change, Status> {
        let cc = self.cc().to_string();
        tokio::task::spawn_blocking(move || Change::import_zammad(&json, &cc))
            .await
            .map_err(|e| Status::internal(format!("the import could not be checked: {e}")))?
            .map_err(status)
    }
}

#[tonic::async_trait]
impl settings_server::Settings for SettingsService {
    async fn get_settings(
        &self,
        _request: Request<proto::GetSettingsRequest>,
    ) -> Result<Response<proto::SettingsSnapshot>, Status> {
        Ok(Response::new(self.snapshot()))
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
        let normalized = |n: &str| numbers::normalize_number(n, cc).unwrap_or_else(|_| clip(n, 64));
        let live = self.settings.live();
        let inputs = decide::Inputs {
            settings: &live.settings,
            flows: live.flows.as_deref(),
            now: jiff::Timestamp::now(),
            country_code: cc,
        };
        let decision = decide::new_call(&inputs, direction, &r.from, &r.to);
        Ok(Response::new(proto::EvaluateResponse {
            decision: Some(convert::decision(&decision)),
            normalized_from: normalized(&r.from),
            normalized_to: normalized(&r.to),
        }))
    }

    async fn import_zammad(
        &self,
        mut request: Request<proto::ImportZammadRequest>,
    ) -> Result<Response<proto::SettingsSnapshot>, Status> {
        let json = std::mem::take(&mut request.get_mut().json);
        let change = self.parse_import(json).await;
        if let Ok(Change::ImportZammad(imported)) = &change {
            for warning in &imported.warnings {
                tracing::warn!(%warning, "Zammad import");
            }
        }
        match change {
            Ok(change) => self.update(&request, Ok(change)).await,
            Err(status) => Err(status),
        }
    }

    async fn preview_import_zammad(
        &self,
        request: Request<proto::ImportZammadRequest>,
    ) -> Result<Response<proto::ImportPreview>, Status> {
        let change = self.parse_import(request.into_inner().json).await?;
        let preview = self.settings.preview(change).await.map_err(status)?;
        Ok(Response::new(proto::ImportPreview {
            diff: Some(convert::diff(&preview.diff)),
            base_version: preview.base_version,
            needs_force: preview.needs_force,
            warnings: preview.warnings,
        }))
    }

    async fn restore_audit(
        &self,
        request: Request<proto::RestoreAuditRequest>,
    ) -> Result<Response<proto::SettingsSnapshot>, Status> {
        let id = request.get_ref().id;
        let change = self.settings.restore_change((id != 0).then_some(id)).await;
        self.update(&request, change).await
    }

    async fn export_zammad(
        &self,
        _request: Request<proto::ExportZammadRequest>,
    ) -> Result<Response<proto::ExportZammadResponse>, Status> {
        let (content, _) = self.settings.content();
        Ok(Response::new(proto::ExportZammadResponse {
            json: zammad::export(&content),
        }))
    }

    async fn list_audit(
        &self,
        request: Request<proto::ListAuditRequest>,
    ) -> Result<Response<proto::ListAuditResponse>, Status> {
        let r = request.into_inner();
        let limit = paging::AUDIT.clamp(r.limit);
        let before =
            match paging::parse_token(&r.page_token, "before").map_err(Status::invalid_argument)? {
                Some(id) => Some(id),
                None => (r.before_id != 0).then_some(r.before_id),
            };
        let entries = self.settings.audit(limit, before).await?;
        // A full page may have older entries after it (the next page is
        // then empty at worst); a shorter one is the last.
        let next_page_token = match entries.last() {
            Some(last) if entries.len() == limit as usize => paging::token("before", last.id),
            _ => String::new(),
        };
        Ok(Response::new(proto::ListAuditResponse {
            entries: entries
                .into_iter()
                .map(|e| proto::AuditEntry {
                    id: e.id,
                    at_ms: e.at_ms,
                    at: Some(crate::encode::timestamp(e.at_ms)),
                    client: e.client,
                    action: e.action,
                    detail: e.detail,
                })
                .collect(),
            next_page_token,
        }))
    }
}
