//! Forwards events to Zammad's generic CTI API (`POST /api/v1/cti/{token}`),
//! so Zammad's caller log and agent pop-ups work while sipgate talks to the
//! sidecar. Parameters as Zammad's `Cti::Driver::Cti` reads them: `event`,
//! `from`, `to`, `direction`, `call_id`, `user`, `user_id`, `cause`,
//! `answeringNumber`. The agent who answered is mapped through Zammad's
//! `user_remote_map` ([`super::agents`]).
//!
//! Calls the sidecar rejected: Zammad notifies every agent of an inbound
//! newCall unless its own CTI block list (`cti_config.inbound.block_caller_ids`,
//! exact string comparison with `from`) rejects the caller; then it logs the
//! call (not done) and notifies nobody. So a blocked call is sent only when
//! that list, mirrored from the sidecar's ([`cti_block_list`]), rejects it too
//! ([`BlockedCalls`]).

use std::sync::Arc;

use super::{
    Answer, Verdict,
    agents::{AgentMap, Agents, ZammadUser},
    delivery::Sink,
    http_client,
    schema::{direction_name, event_kind_name},
    verdict_for_error,
};
use crate::{
    config::{BlockedCalls, DeliveryPolicy},
    proto,
};

pub struct ZammadSink {
    client: reqwest::Client,
    url: String,
    /// The token (last path segment), as written and decoded: never logged.
    token: Vec<String>,
    described: String,
    blocked_calls: BlockedCalls,
    agents: Option<Arc<dyn Agents>>,
}

impl ZammadSink {
    pub fn new(cti_url: &str, policy: &DeliveryPolicy) -> anyhow::Result<Self> {
        // The text is not echoed: its last segment is a secret.
        let url = reqwest::Url::parse(cti_url).map_err(|e| {
            anyhow::anyhow!(
                "--cti-url is not a URL like https://zammad.example.com/api/v1/cti/TOKEN: {e}"
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            anyhow::bail!("--cti-url must be an http:// or https:// URL");
        }
        let (described, token) = redact_cti_url(&url);
        Ok(ZammadSink {
            client: http_client(policy)?,
            url: cti_url.to_string(),
            token,
            described,
            blocked_calls: BlockedCalls::default(),
            agents: None,
        })
    }

    /// The same sink, treating calls the sidecar rejected per `mode`.
    pub fn with_blocked_calls(mut self, mode: BlockedCalls) -> Self {
        self.blocked_calls = mode;
        self
    }
}

/// Whether `event` goes to Zammad under `mode`: every event of a call the
/// sidecar did not reject does; one of a rejected call as `mode` says.
pub fn sends_call(mode: BlockedCalls, event: &proto::CallEvent) -> bool {
    let call = event.call.as_ref();
    let decision = event
        .decision
        .as_ref()
        .or_else(|| call.and_then(|c| c.decision.as_ref()));
    let Some(decision) = decision.filter(|d| d.action() == proto::Action::Reject) else {
        return true;
    };
    match mode {
        BlockedCalls::All => true,
        BlockedCalls::Skip => false,
        BlockedCalls::Mirrored => {
            let call_from = call.map(|c| c.from.as_str()).unwrap_or_default();
            // The `from` the call's newCall was posted with.
            let caller = match (event.kind(), event.from.is_empty(), call_from.is_empty()) {
                (proto::EventKind::NewCall, false, _) | (_, false, true) => event.from.as_str(),
                _ => call_from,
            };
            zammad_rejects_too(decision, caller)
        }
    }
}

/// Whether Zammad's CTI block list, mirrored from the sidecar's, rejects a
/// call the sidecar rejected with `decision`: Zammad compares each entry
/// with `from` as an exact string, so only an exact entry (a number or
/// `anonymous`) equal to the caller does.
fn zammad_rejects_too(decision: &proto::Decision, from: &str) -> bool {
    decision.rule_kind() == proto::RuleKind::Block
        && !decision.rule_pattern.contains('*')
        && decision.rule_pattern == from
}

/// The sidecar's block list as Zammad's `cti_config.inbound.block_caller_ids`.
#[derive(Debug, Clone, PartialEq)]
pub struct CtiBlockList {
    /// `[{"caller_id", "note"}]`: the exact entries (numbers, `anonymous`).
    pub block_caller_ids: Vec<serde_json::Value>,
    /// Prefix entries, which Zammad's exact comparison cannot match: the
    /// bridge (`--blocked-calls mirrored`) does not send the calls they block.
    pub not_mirrored: Vec<String>,
}

pub fn cti_block_list(entries: &[proto::BlockEntry]) -> CtiBlockList {
    let (exact, prefixes): (Vec<_>, Vec<_>) =
        entries.iter().partition(|e| !e.pattern.contains('*'));
    CtiBlockList {
        block_caller_ids: exact
            .iter()
            .map(|e| serde_json::json!({"caller_id": e.pattern, "note": e.note}))
            .collect(),
        not_mirrored: prefixes.iter().map(|e| e.pattern.clone()).collect(),
    }
}

/// A one-line Rails console command (`zammad run rails c`) that stores
/// `list` as the inbound block list of Zammad's generic CTI config, keeps
/// its other keys (`notify_map`, `view_limit`, `outbound`; an empty
/// `outbound` is written if there is none, as Zammad refuses a config
/// without one), and prints the result.
pub fn rails_mirror_command(list: &CtiBlockList) -> String {
    let json = serde_json::to_string(&list.block_caller_ids).expect("JSON values serialise");
    // A Ruby single-quoted string: only `\` and `\'` are escapes.
    let literal = json.replace('\\', "\\\\").replace('\'', "\\'");
    format!(
        "c = (Setting.get('cti_config') || {{}}).deep_dup; \
         c['inbound'] = {{ 'block_caller_ids' => JSON.parse('{literal}') }}; \
         c['outbound'] = {{ 'routing_table' => [], 'default_caller_id' => '' }} if c['outbound'].blank?; \
         Setting.set('cti_config', c); puts Setting.get('cti_config').to_json"
    )
}

/// The CTI URL with its token replaced by `<redacted>`, and the token's
/// spellings (as in the URL, percent-decoded, as given).
fn redact_cti_url(url: &reqwest::Url) -> (String, Vec<String>) {
    let mut shown = url.clone();
    let mut token = Vec::new();
    let last = url
        .path_segments()
        .and_then(|mut s| s.next_back())
        .filter(|s| !s.is_empty());
    if let Some(last) = last {
        token.push(last.to_string());
        if let Ok(decoded) = percent_encoding::percent_decode_str(last).decode_utf8()
            && decoded != last
        {
            token.push(decoded.into_owned());
        }
        if let Ok(mut segments) = shown.path_segments_mut() {
            segments.pop().push("<redacted>");
        }
    }
    for secret in [url.password(), url.query()].into_iter().flatten() {
        token.push(secret.to_string());
    }
    if url.password().is_some() {
        let _ = shown.set_password(Some("<redacted>"));
    }
    if url.query().is_some() {
        shown.set_query(Some("<redacted>"));
    }
    // `<` and `>` are percent-encoded in a path; show them as written.
    let shown = shown.to_string().replace("%3Credacted%3E", "<redacted>");
    (shown, token)
}

/// The form Zammad's generic CTI endpoint takes for `event`, or `None` for
/// events Zammad has no use for (dtmf) or cannot take (no direction known).
pub fn zammad_form(event: &proto::CallEvent) -> Option<Vec<(&'static str, String)>> {
    zammad_form_with(event, &AgentMap::default())
}

/// [`zammad_form`], with the answering agent mapped through `agents`.
pub fn zammad_form_with(
    event: &proto::CallEvent,
    agents: &AgentMap,
) -> Option<Vec<(&'static str, String)>> {
    let kind = proto::EventKind::try_from(event.kind).ok()?;
    if !matches!(
        kind,
        proto::EventKind::NewCall | proto::EventKind::Answer | proto::EventKind::Hangup
    ) {
        return None;
    }
    let call = event.call.clone().unwrap_or_default();
    let direction = match direction_name(event.direction) {
        "" => direction_name(call.direction),
        d => d,
    };
    if direction.is_empty() {
        return None;
    }
    let pick = |own: &str, fallback: &str| {
        if own.is_empty() {
            fallback.to_string()
        } else {
            own.to_string()
        }
    };
    let mut from = pick(&event.from, &call.from);
    // Zammad's sipgate integration logs the rewritten caller ID as `from`.
    if let Some(decision) = &event.decision
        && decision.action() == proto::Action::SetCallerId
        && !decision.caller_id.is_empty()
    {
        from = decision.caller_id.clone();
    }
    let mut form = vec![
        ("event", event_kind_name(event.kind).to_string()),
        ("direction", direction.to_string()),
        ("from", from),
        ("to", pick(&event.to, &call.to)),
        ("call_id", event.call_id.clone()),
    ];
    match kind {
        proto::EventKind::NewCall if !event.users.is_empty() => {
            form.push(("user", event.users.join(", ")))
        }
        proto::EventKind::Answer => match agents.agent_for(event) {
            // Zammad looks the agent up by answeringNumber first: a mapped
            // answer leaves it out so the map decides.
            Some(ZammadUser::Id(id)) => {
                if let Some(name) = event.users.first() {
                    form.push(("user", name.clone()));
                }
                form.push(("user_id", id.to_string()));
                return Some(form);
            }
            Some(ZammadUser::Login(login)) => {
                form.push(("user", login.clone()));
                return Some(form);
            }
            // A scalar: Zammad's agent lookup breaks on an array here.
            None => {
                if let Some(name) = event.users.first() {
                    form.push(("user", name.clone()))
                }
            }
        },
        proto::EventKind::Hangup => form.push(("cause", event.cause.clone())),
        _ => {}
    }
    if !event.answering_number.is_empty() {
        form.push(("answeringNumber", event.answering_number.clone()));
    }
    Some(form)
}

/// Compares Zammad's JSON answer to a newCall with the sidecar's decision.
/// `None` when they agree.
pub fn disagreement(event: &proto::CallEvent, zammad_reply: &str) -> Option<String> {
    let ours = event.decision.as_ref()?;
    let reply: serde_json::Value = serde_json::from_str(zammad_reply).ok()?;
    let theirs = match reply.get("action").and_then(|a| a.as_str()) {
        Some("reject") => "reject".to_string(),
        Some("dial") => format!(
            "caller ID {}",
            reply
                .get("caller_id")
                .and_then(|c| c.as_str())
                .unwrap_or("?")
        ),
        _ => "no instruction".to_string(),
    };
    let ours_said = match ours.action() {
        proto::Action::Reject => "reject".to_string(),
        proto::Action::SetCallerId => format!("caller ID {}", ours.caller_id),
        _ => "no instruction".to_string(),
    };
    if theirs == ours_said {
        return None;
    }
    let mut difference = format!("Zammad would say {theirs}, the sidecar said {ours_said}");
    if ours_said == "reject" && theirs != "reject" {
        difference.push_str(
            " (so Zammad notified its agents of this blocked call: copy the block list \
             into Zammad with `sipgate-sidecar settings export-zammad --cti`, or send \
             no such calls with --blocked-calls skip)",
        );
    }
    Some(difference)
}

#[async_trait::async_trait]
impl Sink for ZammadSink {
    fn name(&self) -> &'static str {
        "zammad"
    }

    fn describe(&self) -> String {
        self.described.clone()
    }

    fn use_agents(&mut self, agents: Arc<dyn Agents>) {
        self.agents = Some(agents);
    }

    fn wants(&self, event: &proto::CallEvent) -> bool {
        if zammad_form(event).is_none() {
            return false;
        }
        let sends = sends_call(self.blocked_calls, event);
        if !sends && event.kind() == proto::EventKind::NewCall {
            let rule = event
                .decision
                .as_ref()
                .map(|d| d.rule_pattern.as_str())
                .unwrap_or_default();
            tracing::info!(
                seq = event.seq,
                call_id = %event.call_id,
                rule,
                mode = ?self.blocked_calls,
                "blocked call not sent to Zammad (no pop-up, not in its caller log)"
            );
        }
        sends
    }

    async fn deliver(&self, event: &proto::CallEvent) -> Verdict {
        let agents = match &self.agents {
            Some(agents) if event.kind() == proto::EventKind::Answer => agents.map().await,
            _ => Arc::default(),
        };
        let Some(form) = zammad_form_with(event, &agents) else {
            return Verdict::Delivered;
        };
        let answer = match self.client.post(&self.url).form(&form).send().await {
            Ok(response) => Answer::read(response).await,
            Err(e) => return verdict_for_error(e).scrubbed(&self.token),
        };
        let (status, body) = (answer.status, &answer.body);
        // Zammad answers a newCall it has seen with 500 "Object already exists!".
        if status.is_server_error() && body.contains("already exists") {
            tracing::info!(seq = event.seq, call_id = %event.call_id, "Zammad had this call already");
            return Verdict::Delivered;
        }
        if status.is_success()
            && event.kind == i32::from(proto::EventKind::NewCall)
            && let Some(difference) = disagreement(event, body)
        {
            tracing::warn!(seq = event.seq, call_id = %event.call_id, %difference, "Zammad's CTI settings disagree with the sidecar's");
        }
        answer.verdict().scrubbed(&self.token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: proto::EventKind) -> proto::CallEvent {
        proto::CallEvent {
            seq: 7,
            kind: kind.into(),
            call_id: "c1".into(),
            direction: proto::Direction::In.into(),
            from: "492111234567".into(),
            to: "4930600000000".into(),
            ..Default::default()
        }
    }

    fn get<'a>(form: &'a [(&str, String)], key: &str) -> Option<&'a str> {
        form.iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn the_token_is_redacted_in_the_description_and_every_reason() {
        let policy = DeliveryPolicy::default();
        let sink =
            ZammadSink::new("https://zammad.example.com/api/v1/cti/s3cr3tT0k", &policy).unwrap();
        assert_eq!(
            sink.describe(),
            "https://zammad.example.com/api/v1/cti/<redacted>"
        );
        let moved = Answer {
            status: reqwest::StatusCode::MOVED_PERMANENTLY,
            location: Some("https://zammad.example.com/api/v1/cti/s3cr3tT0k".into()),
            retry_after: None,
            body: String::new(),
        };
        let Verdict::Refused(why) = moved.verdict().scrubbed(&sink.token) else {
            panic!("a redirect is refused");
        };
        assert_eq!(
            why,
            "HTTP 301 Moved Permanently, redirect to https://zammad.example.com/api/v1/cti/<redacted> not followed: set the receiver's final URL"
        );
        let error = ZammadSink::new("zammad.example.com/api/v1/cti/s3cr3tT0k", &policy)
            .err()
            .unwrap()
            .to_string();
        assert!(!error.contains("s3cr3tT0k"), "{error}");
    }

    #[test]
    fn new_call_joins_users_like_zammad_and_answer_sends_one() {
        let mut e = event(proto::EventKind::NewCall);
        e.users = vec!["Alice".into(), "Bob".into()];
        let form = zammad_form(&e).unwrap();
        assert_eq!(get(&form, "event"), Some("newCall"));
        assert_eq!(get(&form, "user"), Some("Alice, Bob"));
        assert_eq!(get(&form, "call_id"), Some("c1"));
        assert_eq!(get(&form, "direction"), Some("in"));

        let mut a = event(proto::EventKind::Answer);
        a.users = vec!["voicemail".into()];
        a.answering_number = "4930600000001".into();
        let form = zammad_form(&a).unwrap();
        assert_eq!(get(&form, "user"), Some("voicemail"));
        assert_eq!(get(&form, "answeringNumber"), Some("4930600000001"));
    }

    #[test]
    fn a_mapped_answer_names_the_agent_and_leaves_the_answering_number_out() {
        let agents = AgentMap::new([("w0", "7"), ("1234567w1", "Bob@Example.com")]);
        let mut a = event(proto::EventKind::Answer);
        a.users = vec!["Alice Agent".into()];
        a.user_ids = vec!["w0".into()];
        a.answering_number = "4930600000001".into();
        let form = zammad_form_with(&a, &agents).unwrap();
        assert_eq!(get(&form, "user"), Some("Alice Agent"));
        assert_eq!(get(&form, "user_id"), Some("7"));
        assert_eq!(get(&form, "answeringNumber"), None);

        a.user_ids = vec!["w1".into()];
        a.full_user_ids = vec!["1234567w1".into()];
        let form = zammad_form_with(&a, &agents).unwrap();
        assert_eq!(get(&form, "user"), Some("bob@example.com"));
        assert_eq!(get(&form, "user_id"), None);

        // Unmapped: as before, Zammad finds the agent by number or name.
        a.user_ids = vec!["w9".into()];
        a.full_user_ids.clear();
        let form = zammad_form_with(&a, &agents).unwrap();
        assert_eq!(get(&form, "user"), Some("Alice Agent"));
        assert_eq!(get(&form, "answeringNumber"), Some("4930600000001"));
        assert_eq!(zammad_form(&a), Some(form));
    }

    #[test]
    fn hangup_takes_direction_and_numbers_from_the_call_when_missing() {
        let mut h = event(proto::EventKind::Hangup);
        h.direction = 0;
        h.from.clear();
        h.cause = "rejected".into();
        h.call = Some(proto::Call {
            direction: proto::Direction::Out.into(),
            from: "4930600000000".into(),
            ..Default::default()
        });
        let form = zammad_form(&h).unwrap();
        assert_eq!(get(&form, "direction"), Some("out"));
        assert_eq!(get(&form, "from"), Some("4930600000000"));
        assert_eq!(get(&form, "cause"), Some("rejected"));
    }

    #[test]
    fn dtmf_and_directionless_events_are_not_for_zammad() {
        assert!(zammad_form(&event(proto::EventKind::Dtmf)).is_none());
        let mut h = event(proto::EventKind::Hangup);
        h.direction = 0;
        assert!(zammad_form(&h).is_none());
    }

    #[test]
    fn rewritten_caller_id_is_logged_as_from_and_disagreements_are_found() {
        let mut e = event(proto::EventKind::NewCall);
        e.direction = proto::Direction::Out.into();
        e.decision = Some(proto::Decision {
            action: proto::Action::SetCallerId.into(),
            caller_id: "4930777000000".into(),
            ..Default::default()
        });
        let form = zammad_form(&e).unwrap();
        assert_eq!(get(&form, "from"), Some("4930777000000"));
        assert_eq!(
            disagreement(
                &e,
                r#"{"action":"dial","caller_id":"4930777000000","number":"x"}"#
            ),
            None
        );
        assert!(disagreement(&e, "{}").unwrap().contains("no instruction"));
    }

    fn rejected(kind: proto::EventKind, from: &str, pattern: &str) -> proto::CallEvent {
        let decision = proto::Decision {
            action: proto::Action::Reject.into(),
            rule_kind: proto::RuleKind::Block.into(),
            rule_pattern: pattern.into(),
            ..Default::default()
        };
        let mut e = event(kind);
        e.from = from.into();
        e.call = Some(proto::Call {
            from: from.into(),
            decision: Some(decision.clone()),
            ..Default::default()
        });
        if kind == proto::EventKind::NewCall {
            e.decision = Some(decision);
        } else {
            // A synthetic end carries no numbers of its own.
            e.from.clear();
        }
        e
    }

    #[test]
    fn mirrored_sends_only_the_blocked_calls_zammads_exact_list_rejects() {
        use proto::EventKind::{Hangup, NewCall};
        for kind in [NewCall, Hangup] {
            let exact = rejected(kind, "492111111111", "492111111111");
            let hidden = rejected(kind, "anonymous", "anonymous");
            let prefix = rejected(kind, "491521234567", "49152*");
            assert!(sends_call(BlockedCalls::Mirrored, &exact), "{kind:?}");
            assert!(sends_call(BlockedCalls::Mirrored, &hidden), "{kind:?}");
            assert!(!sends_call(BlockedCalls::Mirrored, &prefix), "{kind:?}");
            assert!(!sends_call(BlockedCalls::Skip, &exact), "{kind:?}");
            assert!(sends_call(BlockedCalls::All, &prefix), "{kind:?}");
        }
        // Calls the sidecar let through go out in every mode.
        let mut accepted = event(proto::EventKind::NewCall);
        accepted.decision = Some(proto::Decision {
            action: proto::Action::Accept.into(),
            ..Default::default()
        });
        for mode in [
            BlockedCalls::Mirrored,
            BlockedCalls::Skip,
            BlockedCalls::All,
        ] {
            assert!(sends_call(mode, &accepted));
            assert!(sends_call(mode, &event(proto::EventKind::Answer)));
        }
    }

    #[test]
    fn the_block_list_mirror_keeps_exact_entries_and_names_prefixes() {
        let entries = [
            proto::BlockEntry {
                pattern: "492111111111".into(),
                note: "it's \\ spam".into(),
            },
            proto::BlockEntry {
                pattern: "4930*".into(),
                note: "range".into(),
            },
            proto::BlockEntry {
                pattern: "anonymous".into(),
                note: String::new(),
            },
        ];
        let list = cti_block_list(&entries);
        assert_eq!(
            list.block_caller_ids,
            [
                serde_json::json!({"caller_id": "492111111111", "note": "it's \\ spam"}),
                serde_json::json!({"caller_id": "anonymous", "note": ""}),
            ]
        );
        assert_eq!(list.not_mirrored, ["4930*"]);
        let command = rails_mirror_command(&list);
        assert!(!command.contains('\n'), "one line: {command}");
        assert!(
            command.starts_with("c = (Setting.get('cti_config') || {}).deep_dup; "),
            "{command}"
        );
        assert!(
            command
                .ends_with("Setting.set('cti_config', c); puts Setting.get('cti_config').to_json"),
            "{command}"
        );
        // The JSON inside the Ruby single-quoted string, unescaped as Ruby does.
        let start = command.find("JSON.parse('").unwrap() + "JSON.parse('".len();
        let end = command.find("') }").unwrap();
        let literal = &command[start..end];
        assert!(literal.contains("it\\'s"), "{literal}");
        let ruby_value = literal
            .replace("\\\\", "\u{0}")
            .replace("\\'", "'")
            .replace('\u{0}', "\\");
        let parsed: Vec<serde_json::Value> = serde_json::from_str(&ruby_value).unwrap();
        assert_eq!(parsed, list.block_caller_ids);
    }

    #[test]
    fn a_blocked_call_zammad_did_not_reject_says_how_to_fix_it() {
        let e = rejected(proto::EventKind::NewCall, "492111111111", "492111111111");
        assert_eq!(
            disagreement(&e, r#"{"action":"reject","reason":"busy"}"#),
            None
        );
        let difference = disagreement(&e, "{}").unwrap();
        assert!(
            difference.starts_with("Zammad would say no instruction, the sidecar said reject"),
            "{difference}"
        );
        assert!(difference.contains("export-zammad --cti"), "{difference}");
    }
}
