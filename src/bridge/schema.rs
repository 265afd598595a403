//! `sipgate-sidecar.event.v1`: the JSON object the webhook bridge POSTs for
//! every event (and, without its `schema` key, what `watch --json` prints).
//!
//! Keys are written in alphabetical order, at every level. Fields are only
//! ever added within a version; a change in meaning or a removal gets a new
//! `schema` value.

use serde::Serialize;

use crate::proto;

/// The `schema` value of this version.
pub const SCHEMA: &str = "sipgate-sidecar.event.v1";

/// `"in"`, `"out"`, or `""` when the event carries no direction (dtmf).
pub fn direction_name(d: i32) -> &'static str {
    match proto::Direction::try_from(d) {
        Ok(proto::Direction::In) => "in",
        Ok(proto::Direction::Out) => "out",
        _ => "",
    }
}

/// sipgate's event names: `newCall`, `answer`, `hangup`, `dtmf`.
pub fn event_kind_name(k: i32) -> &'static str {
    match proto::EventKind::try_from(k) {
        Ok(proto::EventKind::NewCall) => "newCall",
        Ok(proto::EventKind::Answer) => "answer",
        Ok(proto::EventKind::Hangup) => "hangup",
        Ok(proto::EventKind::Dtmf) => "dtmf",
        _ => "unknown",
    }
}

/// A call's state, named after the last event that moved it.
pub fn state_name(s: i32) -> &'static str {
    match proto::CallState::try_from(s) {
        Ok(proto::CallState::NewCall) => "newCall",
        Ok(proto::CallState::Answer) => "answer",
        Ok(proto::CallState::Hangup) => "hangup",
        _ => "unknown",
    }
}

/// `accept`, `reject`, `set_caller_id`, or `""`.
pub fn action_name(a: i32) -> &'static str {
    match proto::Action::try_from(a) {
        Ok(proto::Action::Accept) => "accept",
        Ok(proto::Action::Reject) => "reject",
        Ok(proto::Action::SetCallerId) => "set_caller_id",
        Ok(proto::Action::Forward) => "forward",
        Ok(proto::Action::Voicemail) => "voicemail",
        Ok(proto::Action::Hangup) => "hangup",
        Ok(proto::Action::Menu) => "menu",
        _ => "",
    }
}

/// One event of the log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event<'a> {
    /// Always [`SCHEMA`].
    pub schema: &'static str,
    /// Gap-free, strictly increasing sequence number; also sent as `X-Sidecar-Seq`.
    pub seq: u64,
    /// `newCall`, `answer`, `hangup` or `dtmf`.
    pub event: &'static str,
    /// sipgate's callId.
    pub call_id: &'a str,
    /// `in`, `out`, or `""` (dtmf carries none).
    pub direction: &'static str,
    /// Caller, E.164 digits without `+` (as sipgate sent it).
    pub from: &'a str,
    /// Callee, E.164 digits without `+`.
    pub to: &'a str,
    /// sipgate's origCallId (`""` if absent).
    pub orig_call_id: &'a str,
    /// sipgate's xcid (`""` if absent).
    pub xcid: &'a str,
    /// `user[]` on newCall; the single answering user on answer.
    pub users: &'a [String],
    /// `userId[]` as sipgate sent them.
    pub user_ids: &'a [String],
    /// answeringNumber of an answer (`""` otherwise).
    pub answering_number: &'a str,
    /// The hangup cause, verbatim (`""` for other events).
    pub cause: &'a str,
    /// The digits of a dtmf event (`""` otherwise).
    pub dtmf: &'a str,
    /// sipgate's diversion (`""` if absent).
    pub diversion: &'a str,
    /// When the sidecar received the webhook, milliseconds since the Unix epoch.
    pub received_at_ms: i64,
    /// True for events the sidecar made itself (end of a rejected call, sweep).
    pub synthetic: bool,
    /// The decision sent back to sipgate (newCall only), else `null`.
    pub decision: Option<Decision<'a>>,
    /// The call after this event was applied, or `null`.
    pub call: Option<Call<'a>>,
    /// Every field of sipgate's form as `[key, value]`, in order.
    pub raw_form: Vec<[&'a str; 2]>,
}

/// What the sidecar told sipgate for a newCall (or a dtmf push that
/// answered a call-flow menu).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision<'a> {
    /// `accept`, `reject`, `set_caller_id`, or from a call flow `forward`,
    /// `voicemail`, `hangup`, `menu`.
    pub action: &'static str,
    /// The caller ID set (`set_caller_id` only, else `""`).
    pub caller_id: &'a str,
    /// The matching block entry or routing pattern as stored (`""` for none/default).
    pub rule_pattern: &'a str,
    /// Position of the rule in its list (0-based), -1 when no list entry matched.
    pub rule_index: i32,
    /// The note of the matching rule.
    pub rule_note: &'a str,
    /// A sentence a person can read, e.g. "blocked by entry 4930* (spam range)".
    pub explanation: &'a str,
    /// What a call flow decided, or `null` when none did.
    pub flow: Option<Flow<'a>>,
}

/// What a call flow decided, beyond the action.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Flow<'a> {
    /// The flow rule's name (for dtmf: the rule that offered the first menu).
    pub rule: &'a str,
    /// `forward`: the numbers rung.
    pub numbers: &'a [String],
    /// `reject` from a flow: `busy` or `rejected` (else `""`).
    pub reject_reason: &'a str,
    /// The announcement played before the action (for `menu` its prompt), or `null`.
    pub play: Option<Announcement<'a>>,
    /// dtmf: the menu answered (else `""`).
    pub menu: &'a str,
    /// dtmf: the option taken: its digits, `no_input` or `invalid` (else `""`).
    pub option: &'a str,
    /// dtmf: the prompt number answered (else 0).
    pub answered_step: u32,
    /// `menu`: the menu offered, or `null`.
    pub gather: Option<MenuPrompt<'a>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Announcement<'a> {
    pub name: &'a str,
    /// An `https://` URL, or `""` for a file the sidecar serves.
    pub url: &'a str,
    /// The served file's SHA-256 (`/announcements/{sha256}.wav`), or `""`.
    pub sha256: &'a str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MenuPrompt<'a> {
    pub menu: &'a str,
    pub max_digits: u32,
    pub timeout_ms: u32,
    /// Which prompt of the call (1-based).
    pub step: u32,
}

impl<'a> From<&'a proto::FlowDecision> for Flow<'a> {
    fn from(f: &'a proto::FlowDecision) -> Self {
        Flow {
            rule: &f.rule,
            numbers: &f.numbers,
            reject_reason: &f.reject_reason,
            play: f.play.as_ref().map(|p| Announcement {
                name: &p.name,
                url: &p.url,
                sha256: &p.sha256,
            }),
            menu: &f.menu,
            option: &f.option,
            answered_step: f.answered_step,
            gather: f.gather.as_ref().map(|g| MenuPrompt {
                menu: &g.menu,
                max_digits: g.max_digits,
                timeout_ms: g.timeout_ms,
                step: g.step,
            }),
        }
    }
}

/// A call of the call log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Call<'a> {
    /// sipgate's callId.
    pub call_id: &'a str,
    /// `in`, `out`, or `""`.
    pub direction: &'static str,
    /// Caller, E.164 digits.
    pub from: &'a str,
    /// Callee, E.164 digits.
    pub to: &'a str,
    /// `newCall`, `answer` or `hangup`.
    pub state: &'static str,
    /// Zammad's "done": false for inbound calls nobody took (missed, voicemail).
    pub done: bool,
    /// The hangup cause, verbatim (sipgate's, or `rejected`/`timeout` for synthetic ends).
    pub cause: &'a str,
    /// `user[]` of the newCall, or the answering user.
    pub users: &'a [String],
    /// The number that answered (`""` if none).
    pub answering_number: &'a str,
    /// When the newCall came in, milliseconds since the Unix epoch.
    pub initialized_at_ms: i64,
    /// When the call was answered, or `null`.
    pub start_at_ms: Option<i64>,
    /// When the call ended, or `null`.
    pub end_at_ms: Option<i64>,
    /// Whole seconds until answer or end, as Zammad computes them; `null` when not known.
    pub duration_waiting_secs: Option<i64>,
    /// Whole seconds talked; `null` when not known.
    pub duration_talking_secs: Option<i64>,
    /// sipgate's origCallId (`""` if absent).
    pub orig_call_id: &'a str,
    /// sipgate's xcid (`""` if absent).
    pub xcid: &'a str,
    /// The callId of the first leg of this call flow (forwards, voicemail), `""` if this is it.
    pub first_leg_call_id: &'a str,
    /// True once the call ended without sipgate's hangup (reject, sweep).
    pub ended_synthetically: bool,
    /// The decision given for this call's newCall, or `null`.
    pub decision: Option<Decision<'a>>,
    /// The decision of the last dtmf push that answered a call-flow menu, or `null`.
    pub menu_decision: Option<Decision<'a>>,
}

impl<'a> From<&'a proto::Decision> for Decision<'a> {
    fn from(d: &'a proto::Decision) -> Self {
        Decision {
            action: action_name(d.action),
            caller_id: &d.caller_id,
            rule_pattern: &d.rule_pattern,
            rule_index: d.rule_index,
            rule_note: &d.rule_note,
            explanation: &d.explanation,
            flow: d.flow.as_ref().map(Flow::from),
        }
    }
}

impl<'a> From<&'a proto::Call> for Call<'a> {
    fn from(c: &'a proto::Call) -> Self {
        Call {
            call_id: &c.call_id,
            direction: direction_name(c.direction),
            from: &c.from,
            to: &c.to,
            state: state_name(c.state),
            done: c.done,
            cause: &c.cause,
            users: &c.users,
            answering_number: &c.answering_number,
            initialized_at_ms: c.initialized_at_ms,
            start_at_ms: (c.start_at_ms != 0).then_some(c.start_at_ms),
            end_at_ms: (c.end_at_ms != 0).then_some(c.end_at_ms),
            duration_waiting_secs: c.duration_waiting_secs,
            duration_talking_secs: c.duration_talking_secs,
            orig_call_id: &c.orig_call_id,
            xcid: &c.xcid,
            first_leg_call_id: &c.first_leg_call_id,
            ended_synthetically: c.ended_synthetically,
            decision: c.decision.as_ref().map(Decision::from),
            menu_decision: c.menu_decision.as_ref().map(Decision::from),
        }
    }
}

impl<'a> From<&'a proto::CallEvent> for Event<'a> {
    fn from(e: &'a proto::CallEvent) -> Self {
        Event {
            schema: SCHEMA,
            seq: e.seq,
            event: event_kind_name(e.kind),
            call_id: &e.call_id,
            direction: direction_name(e.direction),
            from: &e.from,
            to: &e.to,
            orig_call_id: &e.orig_call_id,
            xcid: &e.xcid,
            users: &e.users,
            user_ids: &e.user_ids,
            answering_number: &e.answering_number,
            cause: &e.cause,
            dtmf: &e.dtmf,
            diversion: &e.diversion,
            received_at_ms: e.received_at_ms,
            synthetic: e.synthetic,
            decision: e.decision.as_ref().map(Decision::from),
            call: e.call.as_ref().map(Call::from),
            raw_form: e
                .raw_form
                .iter()
                .map(|f| [f.key.as_str(), f.value.as_str()])
                .collect(),
        }
    }
}

/// `value` as a JSON tree; its objects keep their keys sorted.
pub fn to_value(value: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(value).expect("schema types always serialise")
}

/// The JSON body the webhook bridge sends for `event`.
pub fn body(event: &proto::CallEvent) -> Vec<u8> {
    // Through a `Value`, whose objects sort their keys: the order is part of the bytes.
    serde_json::to_vec(&to_value(&Event::from(event))).expect("a JSON value always serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> proto::CallEvent {
        proto::CallEvent {
            seq: 42,
            kind: proto::EventKind::Hangup.into(),
            call_id: "c\"1".into(),
            direction: proto::Direction::Out.into(),
            from: "4930600000000".into(),
            to: "492111234567".into(),
            orig_call_id: "o1".into(),
            xcid: "x1".into(),
            users: vec!["Alice".into(), "Bö b".into()],
            user_ids: vec!["u1".into()],
            full_user_ids: vec!["f1".into()],
            answering_number: "4930600000001".into(),
            cause: "normalClearing".into(),
            dtmf: "12".into(),
            diversion: "d1".into(),
            received_at_ms: 1_795_000_000_123,
            synthetic: true,
            raw_form: vec![
                proto::FormField {
                    key: "event".into(),
                    value: "hangup".into(),
                },
                proto::FormField {
                    key: "x&y".into(),
                    value: "<\n>".into(),
                },
            ],
            decision: Some(proto::Decision {
                action: proto::Action::SetCallerId.into(),
                caller_id: "4930777".into(),
                rule_kind: 2,
                rule_pattern: "49*".into(),
                rule_index: -1,
                rule_note: "n".into(),
                explanation: "e".into(),
                flow: None,
            }),
            // Timestamps are the *_ms fields again; the JSON has only those.
            received_at: None,
            call: Some(proto::Call {
                initialized_at: None,
                start_at: None,
                end_at: None,
                updated_at: None,
                call_id: "c\"1".into(),
                direction: proto::Direction::Out.into(),
                from: "a".into(),
                to: "b".into(),
                state: proto::CallState::Hangup.into(),
                done: true,
                cause: "cc".into(),
                users: vec!["U".into()],
                answering_number: "an".into(),
                initialized_at_ms: 5,
                start_at_ms: 0,
                end_at_ms: 9,
                duration_waiting_secs: Some(3),
                duration_talking_secs: None,
                orig_call_id: "oc".into(),
                xcid: "xc".into(),
                first_leg_call_id: "fl".into(),
                menu_decision: None,
                decision: None,
                ended_synthetically: true,
                diversion: "dv".into(),
                updated_at_ms: 11,
            }),
        }
    }

    #[test]
    fn the_body_is_byte_for_byte_the_v1_json() {
        let expected = concat!(
            r#"{"answering_number":"4930600000001","call":{"answering_number":"an","call_id":"c\"1","#,
            r#""cause":"cc","decision":null,"direction":"out","done":true,"duration_talking_secs":null,"#,
            r#""duration_waiting_secs":3,"end_at_ms":9,"ended_synthetically":true,"first_leg_call_id":"fl","#,
            r#""from":"a","initialized_at_ms":5,"menu_decision":null,"orig_call_id":"oc","start_at_ms":null,"state":"hangup","#,
            r#""to":"b","users":["U"],"xcid":"xc"},"call_id":"c\"1","cause":"normalClearing","#,
            r#""decision":{"action":"set_caller_id","caller_id":"4930777","explanation":"e","flow":null,"rule_index":-1,"#,
            r#""rule_note":"n","rule_pattern":"49*"},"direction":"out","diversion":"d1","dtmf":"12","#,
            r#""event":"hangup","from":"4930600000000","orig_call_id":"o1","raw_form":[["event","hangup"],"#,
            r#"["x&y","<\n>"]],"received_at_ms":1795000000123,"schema":"sipgate-sidecar.event.v1","seq":42,"#,
            r#""synthetic":true,"to":"492111234567","user_ids":["u1"],"users":["Alice","Bö b"],"xcid":"x1"}"#,
        );
        assert_eq!(String::from_utf8(body(&full())).unwrap(), expected);

        let empty = concat!(
            r#"{"answering_number":"","call":null,"call_id":"","cause":"","decision":null,"direction":"","#,
            r#""diversion":"","dtmf":"","event":"unknown","from":"","orig_call_id":"","raw_form":[],"#,
            r#""received_at_ms":0,"schema":"sipgate-sidecar.event.v1","seq":0,"synthetic":false,"to":"","#,
            r#""user_ids":[],"users":[],"xcid":""}"#,
        );
        assert_eq!(
            String::from_utf8(body(&proto::CallEvent::default())).unwrap(),
            empty
        );
    }
}
