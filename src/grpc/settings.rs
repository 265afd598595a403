//! `sidecar.v1.Settings`: block list, routing table, default caller ID, dry
//! run, Zammad import/export and the audit trail.

use std::sync::Arc;

use serde_json::json;
use tonic::{Request, Response, Status};

use super::{client_identity, convert};
use crate::{
    App,
    decide::{self, Settings},
    numbers,
    proto::{self, settings_server},
    settings::{manager::SettingsError, validate, zammad},
};

pub struct SettingsService {
    app: Arc<App>,
}

impl SettingsService {
    pub fn new(app: Arc<App>) -> Self {
        SettingsService { app }
    }

    fn cc(&self) -> &str {
        self.app.settings.country_code()
    }

    async fn update<T>(
        &self,
        request: &Request<T>,
        action: &str,
        detail: serde_json::Value,
        change: impl FnOnce(&mut Settings) -> Result<(), SettingsError>,
    ) -> Result<Response<proto::SettingsSnapshot>, Status> {
        let client = client_identity(request);
        let stored = self
            .app
            .settings
            .update(&client, action, detail, change)
            .await
            .map_err(settings_status)?;
        Ok(Response::new(convert::settings(&stored)))
    }
}

pub fn settings_status(e: SettingsError) -> Status {
    match e {
        SettingsError::Invalid(m) => Status::invalid_argument(m),
        SettingsError::NotFound(m) => Status::not_found(m),
        SettingsError::AlreadyExists(m) => Status::already_exists(m),
        SettingsError::Store(e) => {
            tracing::error!(error = %e, "settings store failed");
            Status::unavailable("the settings database is unavailable; nothing was changed")
        }
    }
}

/// The stored form of a block entry as typed, for lookups (remove, reorder).
fn block_key(input: &str, cc: &str) -> Result<String, SettingsError> {
    validate::block_entry(input, "", cc)
        .map(|e| e.pattern)
        .map_err(SettingsError::Invalid)
}

fn route_key(input: &str, cc: &str) -> Result<String, SettingsError> {
    numbers::normalize_pattern(input, cc)
        .map_err(|e| SettingsError::Invalid(format!("routing destination: {e}")))
}

/// Puts `items` in the order of `wanted`, which must name each exactly once.
fn reorder<T>(
    items: &mut Vec<T>,
    wanted: &[String],
    key: impl Fn(&T) -> &str,
    what: &str,
) -> Result<(), SettingsError> {
    if wanted.len() != items.len() {
        return Err(SettingsError::Invalid(format!(
            "the new order names {} {what} entries, but there are {}: list every entry exactly once",
            wanted.len(),
            items.len()
        )));
    }
    let mut remaining: Vec<Option<T>> = items.drain(..).map(Some).collect();
    let mut ordered = Vec::with_capacity(remaining.len());
    for name in wanted {
        let position = remaining
            .iter()
            .position(|slot| slot.as_ref().is_some_and(|item| key(item) == name));
        match position.and_then(|p| remaining[p].take()) {
            Some(item) => ordered.push(item),
            None => {
                return Err(SettingsError::Invalid(format!(
                    "'{name}' is not a {what} entry, or is named twice"
                )));
            }
        }
    }
    *items = ordered;
    Ok(())
}

#[tonic::async_trait]
impl settings_server::Settings for SettingsService {
    async fn get_settings(
        &self,
        _request: Request<proto::GetSettingsRequest>,
    ) -> Result<Response<proto::SettingsSnapshot>, Status> {
        Ok(Response::new(convert::settings(
            &self.app.settings.snapshot(),
        )))
    }

    async fn add_block_entry(
        &self,
        request: Request<proto::AddBlockEntryRequest>,
    ) -> Result<Response<proto::SettingsSnapshot>, Status> {
        let r = request.get_ref();
        let entry = validate::block_entry(&r.pattern, &r.note, self.cc())
            .map_err(Status::invalid_argument)?;
        let detail = json!({"pattern": entry.pattern, "note": entry.note, "input": r.pattern});
        self.update(&request, "block.add", detail, |s| {
            if s.block_list.iter().any(|b| b.pattern == entry.pattern) {
                return Err(SettingsError::AlreadyExists(format!(
                    "{} is already on the block list",
                    entry.pattern
                )));
            }
            s.block_list.push(entry);
            Ok(())
        })
        .await
    }

    async fn remove_block_entry(
        &self,
        request: Request<proto::RemoveBlockEntryRequest>,
    ) -> Result<Response<proto::SettingsSnapshot>, Status> {
        let input = request.get_ref().pattern.clone();
        let key = block_key(&input, self.cc()).map_err(settings_status)?;
        let detail = json!({"pattern": key, "input": input});
        self.update(&request, "block.remove", detail, |s| {
            let before = s.block_list.len();
            s.block_list.retain(|b| b.pattern != key);
            if s.block_list.len() == before {
                return Err(SettingsError::NotFound(format!(
                    "{key} is not on the block list"
                )));
            }
            Ok(())
        })
        .await
    }

    async fn reorder_block_list(
        &self,
        request: Request<proto::ReorderBlockListRequest>,
    ) -> Result<Response<proto::SettingsSnapshot>, Status> {
        let keys = request
            .get_ref()
            .patterns
            .iter()
            .map(|p| block_key(p, self.cc()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(settings_status)?;
        let detail = json!({ "order": keys });
        self.update(&request, "block.reorder", detail, |s| {
            reorder(&mut s.block_list, &keys, |b| &b.pattern, "block list")
        })
        .await
    }

    async fn add_routing_rule(
        &self,
        request: Request<proto::AddRoutingRuleRequest>,
    ) -> Result<Response<proto::SettingsSnapshot>, Status> {
        let r = request.get_ref();
        let rule = validate::routing_rule(&r.dest, &r.caller_id, &r.note, self.cc())
            .map_err(Status::invalid_argument)?;
        let position = r.position;
        let detail = json!({"dest": rule.dest, "caller_id": rule.caller_id, "note": rule.note, "position": position});
        self.update(&request, "route.add", detail, |s| {
            if s.routing_table.iter().any(|x| x.dest == rule.dest) {
                return Err(SettingsError::AlreadyExists(format!(
                    "a routing rule for {} exists already; remove it first",
                    rule.dest
                )));
            }
            let at = match position {
                None => s.routing_table.len(),
                Some(p) if (p as usize) <= s.routing_table.len() => p as usize,
                Some(p) => {
                    return Err(SettingsError::Invalid(format!(
                        "position {p} is past the end of the routing table ({} rules)",
                        s.routing_table.len()
                    )));
                }
            };
            s.routing_table.insert(at, rule);
            Ok(())
        })
        .await
    }

    async fn remove_routing_rule(
        &self,
        request: Request<proto::RemoveRoutingRuleRequest>,
    ) -> Result<Response<proto::SettingsSnapshot>, Status> {
        let input = request.get_ref().dest.clone();
        let key = route_key(&input, self.cc()).map_err(settings_status)?;
        let detail = json!({"dest": key, "input": input});
        self.update(&request, "route.remove", detail, |s| {
            let before = s.routing_table.len();
            s.routing_table.retain(|r| r.dest != key);
            if s.routing_table.len() == before {
                return Err(SettingsError::NotFound(format!(
                    "no routing rule for {key}"
                )));
            }
            Ok(())
        })
        .await
    }

    async fn reorder_routing_table(
        &self,
        request: Request<proto::ReorderRoutingTableRequest>,
    ) -> Result<Response<proto::SettingsSnapshot>, Status> {
        let keys = request
            .get_ref()
            .dests
            .iter()
            .map(|d| route_key(d, self.cc()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(settings_status)?;
        let detail = json!({ "order": keys });
        self.update(&request, "route.reorder", detail, |s| {
            reorder(&mut s.routing_table, &keys, |r| &r.dest, "routing table")
        })
        .await
    }

    async fn set_default_caller_id(
        &self,
        request: Request<proto::SetDefaultCallerIdRequest>,
    ) -> Result<Response<proto::SettingsSnapshot>, Status> {
        let input = request.get_ref().caller_id.trim().to_string();
        let value = if input.is_empty() {
            None
        } else {
            Some(validate::caller_id(&input, self.cc()).map_err(Status::invalid_argument)?)
        };
        let detail = json!({ "caller_id": value });
        self.update(&request, "default_caller_id.set", detail, |s| {
            s.default_caller_id = value;
            Ok(())
        })
        .await
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
        let decision = decide::decide(&self.app.settings.snapshot(), direction, &r.from, &r.to, cc);
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
        let imported = zammad::import(&request.get_ref().json, self.cc()).map_err(|e| {
            Status::invalid_argument(format!("Zammad sipgate_config not imported: {e}"))
        })?;
        let detail = json!({
            "block_entries": imported.block_list.len(),
            "routing_rules": imported.routing_table.len(),
            "default_caller_id": imported.default_caller_id,
        });
        self.update(&request, "import.zammad", detail, |s| {
            s.block_list = imported.block_list;
            s.routing_table = imported.routing_table;
            s.default_caller_id = imported.default_caller_id;
            Ok(())
        })
        .await
    }

    async fn export_zammad(
        &self,
        _request: Request<proto::ExportZammadRequest>,
    ) -> Result<Response<proto::ExportZammadResponse>, Status> {
        Ok(Response::new(proto::ExportZammadResponse {
            json: zammad::export(&self.app.settings.snapshot()),
        }))
    }

    async fn list_audit(
        &self,
        request: Request<proto::ListAuditRequest>,
    ) -> Result<Response<proto::ListAuditResponse>, Status> {
        let r = request.into_inner();
        let limit = if r.limit == 0 { 100 } else { r.limit.min(1000) };
        let before = (r.before_id != 0).then_some(r.before_id);
        let entries = self
            .app
            .store
            .list_audit(limit, before)
            .await
            .map_err(super::store_status)?;
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
