//! `sidecar.v1.Flows`: the call-flows document (get, set with a dry run,
//! evaluate). Setting it is a settings change: versioned, audited, undone
//! through `Settings.RestoreAudit`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{client_identity, convert};
use crate::{
    decide::{self, Decision, Gather, Inputs, MenuKey, MenuState, ReplyUrls},
    flows::{self, Files, Flows as CompiledFlows},
    proto::{self, flows_server},
    settings::{Change, Precondition, SettingsError, SettingsManager, clip},
    sipgate::{
        event::{Direction, EventKind},
        xml,
    },
};

/// The longest error message sent back: a refused document lists every
/// problem, so more than a settings refusal.
const MAX_MESSAGE: usize = 8 * 1024;
/// At most this many menu answers in one evaluation.
const MAX_DIGIT_STEPS: usize = 16;

fn status(e: SettingsError) -> Status {
    super::settings::status_within(e, MAX_MESSAGE)
}

pub struct FlowsService {
    settings: Arc<SettingsManager>,
    /// Where replies' URLs point in an evaluation (secrets redacted).
    reply_base: Arc<str>,
}

impl FlowsService {
    /// `reply_base`: the webhook URLs' base as sipgate sees it, with the
    /// path token (if any) already shown as `<redacted>`: e.g.
    /// `https://pbx.example.com/api/v1/sipgate/<redacted>`.
    pub fn new(settings: Arc<SettingsManager>, reply_base: Arc<str>) -> Self {
        FlowsService {
            settings,
            reply_base,
        }
    }

    fn document(&self) -> proto::FlowsDocument {
        let live = self.settings.live();
        proto::FlowsDocument {
            text: live.settings.flows.clone().unwrap_or_default(),
            version: live.settings.version,
            summary: live
                .flows
                .as_ref()
                .map_or_else(|| "no call flows are set".to_string(), |f| f.summary()),
        }
    }
}

/// `text` as a whole number of a time: RFC 3339, or now when empty.
fn instant(text: &str) -> Result<jiff::Timestamp, Status> {
    if text.trim().is_empty() {
        return Ok(jiff::Timestamp::now());
    }
    text.trim().parse().map_err(|e| {
        Status::invalid_argument(format!(
            "at '{}' is not an RFC 3339 time such as 2026-12-24T10:00:00+01:00: {e}",
            clip(text, 64)
        ))
    })
}

/// The walk of one evaluated call: the newCall's decision and reply, then
/// one dtmf push per entry of `digits` while the reply offers a menu.
pub fn walk(
    inputs: &Inputs<'_>,
    from: &str,
    to: &str,
    digits: &[String],
    reply_base: &str,
) -> Vec<proto::FlowStep> {
    const CALL_ID: &str = "evaluate";
    // A key of its own: evaluation never makes state a real push would take.
    let key = MenuKey::new(b"flows evaluate: not a serving key".to_vec());
    let callback = format!("{}/in", reply_base.trim_end_matches('/'));
    let base = reply_base
        .split_once("/api/v1/sipgate")
        .map_or(reply_base, |(b, _)| b)
        .to_string();
    let render = |d: &Decision| {
        let query = |g: &Gather, rule: &str| key.query(CALL_ID, &g.menu, g.step, rule);
        let urls = ReplyUrls {
            callback: &callback,
            base: &base,
            menu_query: &query,
        };
        xml::render(&decide::reply(Some(d), &urls, to))
    };
    let mut steps = Vec::new();
    let mut decision = decide::new_call(inputs, Direction::In, from, to);
    steps.push(proto::FlowStep {
        event: EventKind::NewCall.as_str().into(),
        digits: String::new(),
        decision: Some(convert::decision(&decision)),
        reply: render(&decision),
    });
    for d in digits.iter().take(MAX_DIGIT_STEPS) {
        let Some(gather) = decision.gather().cloned() else {
            break;
        };
        let state = MenuState::Offered {
            menu: gather.menu.clone(),
            step: gather.step,
            rule: decision.flow_rule().unwrap_or_default().to_string(),
        };
        decision = decide::dtmf(inputs, &state, d, false);
        steps.push(proto::FlowStep {
            event: EventKind::Dtmf.as_str().into(),
            digits: d.clone(),
            decision: Some(convert::decision(&decision)),
            reply: render(&decision),
        });
    }
    steps
}

#[tonic::async_trait]
impl flows_server::Flows for FlowsService {
    async fn get_flows(
        &self,
        _request: Request<proto::GetFlowsRequest>,
    ) -> Result<Response<proto::FlowsDocument>, Status> {
        Ok(Response::new(self.document()))
    }

    async fn set_flows(
        &self,
        request: Request<proto::SetFlowsRequest>,
    ) -> Result<Response<proto::SetFlowsResponse>, Status> {
        let client = client_identity(&request);
        let r = request.into_inner();
        let live = self.settings.live();
        let text = (!r.text.trim().is_empty()).then_some(r.text);
        let changed = text != live.settings.flows;
        if let Some(expected) = r.expected_version
            && expected != live.settings.version
        {
            return Err(status(SettingsError::Stale {
                expected,
                current: live.settings.version,
            }));
        }
        let summary = |flows: Option<&CompiledFlows>| {
            flows.map_or_else(|| "no call flows are set".to_string(), |f| f.summary())
        };
        if r.dry_run || !changed {
            // Checked once here; nothing is stored.
            let (warnings, summary) = match text {
                Some(text) => {
                    let compiled = self.settings.check_flows(text).await.map_err(status)?;
                    (compiled.warnings, summary(Some(&compiled.flows)))
                }
                None => (Vec::new(), summary(None)),
            };
            return Ok(Response::new(proto::SetFlowsResponse {
                version: live.settings.version,
                warnings,
                summary,
                changed,
            }));
        }
        // Checked once, by the change itself.
        let updated = self
            .settings
            .update_reporting(
                &client,
                Change::SetFlows(text),
                Precondition {
                    expected_version: r.expected_version,
                    force: false,
                },
            )
            .await
            .map_err(status)?;
        Ok(Response::new(proto::SetFlowsResponse {
            version: updated.settings.version,
            warnings: updated.warnings,
            summary: summary(updated.flows.as_deref()),
            changed: true,
        }))
    }

    async fn evaluate_flows(
        &self,
        request: Request<proto::EvaluateFlowsRequest>,
    ) -> Result<Response<proto::EvaluateFlowsResponse>, Status> {
        let r = request.into_inner();
        let now = match &r.at_time {
            Some(_) if !r.at.trim().is_empty() => {
                return Err(Status::invalid_argument(
                    "set at (RFC 3339) or at_time (a Timestamp), not both",
                ));
            }
            Some(t) => jiff::Timestamp::new(t.seconds, t.nanos).map_err(|e| {
                Status::invalid_argument(format!("at_time is not a time this server can use: {e}"))
            })?,
            None => instant(&r.at)?,
        };
        let live = self.settings.live();
        let cc = self.settings.country_code().to_string();
        let given: Option<Arc<CompiledFlows>> = if r.text.trim().is_empty() {
            live.flows.clone()
        } else {
            let text = r.text.clone();
            let compiled =
                tokio::task::spawn_blocking(move || flows::compile(&text, &cc, Files::Unchecked))
                    .await
                    .map_err(|e| {
                        Status::internal(format!("the document could not be checked: {e}"))
                    })?
                    .map_err(|e| Status::invalid_argument(clip(&e.to_string(), MAX_MESSAGE)))?;
            Some(Arc::new(compiled.flows))
        };
        let inputs = Inputs {
            settings: &live.settings,
            flows: given.as_deref(),
            now,
            country_code: self.settings.country_code(),
        };
        let steps = walk(&inputs, &r.from, &r.to, &r.digits, &self.reply_base);
        let (local_time, time_zone) = match &given {
            Some(f) => (
                now.to_zoned_datetime(f.time_zone().clone())
                    .strftime("%Y-%m-%dT%H:%M:%S%:z")
                    .to_string(),
                f.time_zone_name().to_string(),
            ),
            None => (
                now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                "UTC".to_string(),
            ),
        };
        Ok(Response::new(proto::EvaluateFlowsResponse {
            steps,
            local_time,
            time_zone,
            time: Some(crate::encode::timestamp_of(now)),
        }))
    }
}
