//! The protobuf form of the event log: events, calls and decisions as
//! `sidecar.v1` messages. Each event's encoded `CallEvent` is made once,
//! when it is stored, and is what every subscriber and page is sent.

use crate::{
    calls::{CallRecord, CallState},
    decide::{Action, Decision, FlowDetail, Gather, Play, Rule},
    proto,
    sipgate::event::{Direction, Event, EventKind},
};

pub fn direction(d: Option<Direction>) -> i32 {
    match d {
        None => proto::Direction::Unspecified,
        Some(Direction::In) => proto::Direction::In,
        Some(Direction::Out) => proto::Direction::Out,
    }
    .into()
}

pub fn event_kind(k: EventKind) -> i32 {
    match k {
        EventKind::NewCall => proto::EventKind::NewCall,
        EventKind::Answer => proto::EventKind::Answer,
        EventKind::Hangup => proto::EventKind::Hangup,
        EventKind::Dtmf => proto::EventKind::Dtmf,
    }
    .into()
}

pub fn call_state(s: CallState) -> i32 {
    match s {
        CallState::NewCall => proto::CallState::NewCall,
        CallState::Answer => proto::CallState::Answer,
        CallState::Hangup => proto::CallState::Hangup,
    }
    .into()
}

pub fn decision(d: &Decision) -> proto::Decision {
    let action = match d.action {
        Action::Accept => proto::Action::Accept,
        Action::Reject => proto::Action::Reject,
        Action::SetCallerId => proto::Action::SetCallerId,
        Action::Forward => proto::Action::Forward,
        Action::Voicemail => proto::Action::Voicemail,
        Action::Hangup => proto::Action::Hangup,
        Action::Menu => proto::Action::Menu,
    };
    let (rule_kind, rule_pattern, rule_index, rule_note) = match &d.rule {
        Rule::None => (proto::RuleKind::None, String::new(), -1, String::new()),
        Rule::Block {
            index,
            pattern,
            note,
        } => (
            proto::RuleKind::Block,
            pattern.clone(),
            *index as i32,
            note.clone(),
        ),
        Rule::Route { index, dest, note } => (
            proto::RuleKind::Route,
            dest.clone(),
            *index as i32,
            note.clone(),
        ),
        Rule::DefaultCallerId => (
            proto::RuleKind::DefaultCallerId,
            String::new(),
            -1,
            String::new(),
        ),
        Rule::Flow { index, name } => (
            proto::RuleKind::Flow,
            name.clone(),
            index.map_or(-1, |i| i as i32),
            String::new(),
        ),
    };
    proto::Decision {
        action: action.into(),
        caller_id: d.caller_id.clone().unwrap_or_default(),
        rule_kind: rule_kind.into(),
        rule_pattern,
        rule_index,
        rule_note,
        explanation: d.explain(),
        flow: d.flow.as_ref().map(|f| flow(d, f)),
    }
}

fn flow(d: &Decision, f: &FlowDetail) -> proto::FlowDecision {
    proto::FlowDecision {
        rule: d.flow_rule().unwrap_or_default().to_string(),
        numbers: f.numbers.clone(),
        reject_reason: f.reason.clone(),
        play: f.play.as_ref().map(|p| proto::Announcement {
            name: p.announcement.clone(),
            url: p.url.clone(),
            sha256: p.sha256.clone(),
        }),
        menu: f.menu.clone(),
        option: f.option.clone(),
        answered_step: f.answered_step,
        gather: f.gather.as_ref().map(|g| proto::MenuPrompt {
            menu: g.menu.clone(),
            max_digits: g.max_digits,
            timeout_ms: g.timeout_ms,
            step: g.step,
        }),
    }
}

fn flow_from(f: &proto::FlowDecision) -> FlowDetail {
    FlowDetail {
        numbers: f.numbers.clone(),
        reason: f.reject_reason.clone(),
        play: f.play.as_ref().map(|p| Play {
            announcement: p.name.clone(),
            url: p.url.clone(),
            sha256: p.sha256.clone(),
        }),
        menu: f.menu.clone(),
        option: f.option.clone(),
        answered_step: f.answered_step,
        gather: f.gather.as_ref().map(|g| Gather {
            menu: g.menu.clone(),
            max_digits: g.max_digits,
            timeout_ms: g.timeout_ms,
            step: g.step,
        }),
    }
}

/// `ms` (milliseconds since the Unix epoch) as a protobuf Timestamp.
pub fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// `t` as a protobuf Timestamp.
pub fn timestamp_of(t: jiff::Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.as_second(),
        nanos: t.subsec_nanosecond(),
    }
}

pub fn call(c: &CallRecord) -> proto::Call {
    proto::Call {
        initialized_at: Some(timestamp(c.initialized_at_ms)),
        start_at: c.start_at_ms.map(timestamp),
        end_at: c.end_at_ms.map(timestamp),
        updated_at: Some(timestamp(c.updated_at_ms)),
        call_id: c.call_id.clone(),
        direction: direction(c.direction),
        from: c.from.clone(),
        to: c.to.clone(),
        state: call_state(c.state),
        done: c.done,
        cause: c.cause.clone(),
        users: c.users.clone(),
        answering_number: c.answering_number.clone(),
        initialized_at_ms: c.initialized_at_ms,
        start_at_ms: c.start_at_ms.unwrap_or(0),
        end_at_ms: c.end_at_ms.unwrap_or(0),
        duration_waiting_secs: c.duration_waiting_secs,
        duration_talking_secs: c.duration_talking_secs,
        orig_call_id: c.orig_call_id.clone(),
        xcid: c.xcid.clone(),
        first_leg_call_id: c.first_leg_call_id.clone(),
        decision: c.decision.as_ref().map(decision),
        menu_decision: c.menu_decision.as_ref().map(decision),
        ended_synthetically: c.ended_synthetically,
        diversion: c.diversion.clone(),
        updated_at_ms: c.updated_at_ms,
    }
}

/// The `CallEvent` of event `seq`: `ev` as received, the decision sent back
/// (newCall only) and the call after it.
pub fn call_event(
    seq: u64,
    ev: &Event,
    received_at_ms: i64,
    synthetic: bool,
    decision_sent: Option<&Decision>,
    call_after: &CallRecord,
) -> proto::CallEvent {
    proto::CallEvent {
        seq,
        kind: event_kind(ev.kind),
        call_id: ev.call_id.clone(),
        direction: direction(ev.direction),
        from: ev.from.clone(),
        to: ev.to.clone(),
        orig_call_id: ev.orig_call_id.clone(),
        xcid: ev.xcid.clone(),
        users: ev.users.clone(),
        user_ids: ev.user_ids.clone(),
        full_user_ids: ev.full_user_ids.clone(),
        answering_number: ev.answering_number.clone(),
        cause: ev.cause.clone(),
        dtmf: ev.dtmf.clone(),
        diversion: ev.diversion.clone(),
        received_at_ms,
        received_at: Some(timestamp(received_at_ms)),
        synthetic,
        raw_form: ev
            .raw
            .iter()
            .map(|(key, value)| proto::FormField {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        decision: decision_sent.map(decision),
        call: Some(call(call_after)),
    }
}

/// `None` for unspecified or unknown values.
pub fn direction_from(value: i32) -> Option<Direction> {
    match proto::Direction::try_from(value).ok()? {
        proto::Direction::In => Some(Direction::In),
        proto::Direction::Out => Some(Direction::Out),
        proto::Direction::Unspecified => None,
    }
}

pub fn event_kind_from(value: i32) -> Option<EventKind> {
    match proto::EventKind::try_from(value).ok()? {
        proto::EventKind::NewCall => Some(EventKind::NewCall),
        proto::EventKind::Answer => Some(EventKind::Answer),
        proto::EventKind::Hangup => Some(EventKind::Hangup),
        proto::EventKind::Dtmf => Some(EventKind::Dtmf),
        proto::EventKind::Unspecified => None,
    }
}

pub fn call_state_from(value: i32) -> Option<CallState> {
    match proto::CallState::try_from(value).ok()? {
        proto::CallState::NewCall => Some(CallState::NewCall),
        proto::CallState::Answer => Some(CallState::Answer),
        proto::CallState::Hangup => Some(CallState::Hangup),
        proto::CallState::Unspecified => None,
    }
}

/// A stored `Decision` back from its protobuf form.
pub fn decision_from(d: &proto::Decision) -> Result<Decision, String> {
    let action = match proto::Action::try_from(d.action) {
        Ok(proto::Action::Accept) => Action::Accept,
        Ok(proto::Action::Reject) => Action::Reject,
        Ok(proto::Action::SetCallerId) => Action::SetCallerId,
        Ok(proto::Action::Forward) => Action::Forward,
        Ok(proto::Action::Voicemail) => Action::Voicemail,
        Ok(proto::Action::Hangup) => Action::Hangup,
        Ok(proto::Action::Menu) => Action::Menu,
        _ => return Err(format!("unknown decision action {}", d.action)),
    };
    let index = || usize::try_from(d.rule_index).map_err(|_| "negative rule index".to_string());
    let rule = match proto::RuleKind::try_from(d.rule_kind) {
        Ok(proto::RuleKind::None) => Rule::None,
        Ok(proto::RuleKind::Block) => Rule::Block {
            index: index()?,
            pattern: d.rule_pattern.clone(),
            note: d.rule_note.clone(),
        },
        Ok(proto::RuleKind::Route) => Rule::Route {
            index: index()?,
            dest: d.rule_pattern.clone(),
            note: d.rule_note.clone(),
        },
        Ok(proto::RuleKind::DefaultCallerId) => Rule::DefaultCallerId,
        Ok(proto::RuleKind::Flow) => Rule::Flow {
            index: usize::try_from(d.rule_index).ok(),
            name: d.rule_pattern.clone(),
        },
        _ => return Err(format!("unknown rule kind {}", d.rule_kind)),
    };
    Ok(Decision {
        action,
        caller_id: (!d.caller_id.is_empty()).then(|| d.caller_id.clone()),
        rule,
        flow: d.flow.as_ref().map(|f| Box::new(flow_from(f))),
    })
}

/// A stored call back from its protobuf form.
pub fn call_from(c: proto::Call) -> Result<CallRecord, String> {
    let nonzero = |ms: i64| (ms != 0).then_some(ms);
    Ok(CallRecord {
        state: call_state_from(c.state).ok_or_else(|| format!("unknown call state {}", c.state))?,
        decision: c.decision.as_ref().map(decision_from).transpose()?,
        menu_decision: c.menu_decision.as_ref().map(decision_from).transpose()?,
        direction: direction_from(c.direction),
        start_at_ms: nonzero(c.start_at_ms),
        end_at_ms: nonzero(c.end_at_ms),
        call_id: c.call_id,
        from: c.from,
        to: c.to,
        done: c.done,
        cause: c.cause,
        users: c.users,
        answering_number: c.answering_number,
        initialized_at_ms: c.initialized_at_ms,
        duration_waiting_secs: c.duration_waiting_secs,
        duration_talking_secs: c.duration_talking_secs,
        orig_call_id: c.orig_call_id,
        xcid: c.xcid,
        first_leg_call_id: c.first_leg_call_id,
        diversion: c.diversion,
        ended_synthetically: c.ended_synthetically,
        updated_at_ms: c.updated_at_ms,
    })
}

/// The parts of a stored event back from its `CallEvent`: the event as
/// received, the decision sent back and the call after it.
pub fn event_from(e: proto::CallEvent) -> Result<(Event, Option<Decision>, CallRecord), String> {
    let decision = e.decision.as_ref().map(decision_from).transpose()?;
    let call = call_from(e.call.ok_or("the event has no call")?)?;
    let event = Event {
        kind: event_kind_from(e.kind).ok_or_else(|| format!("unknown event kind {}", e.kind))?,
        direction: direction_from(e.direction),
        call_id: e.call_id,
        from: e.from,
        to: e.to,
        orig_call_id: e.orig_call_id,
        xcid: e.xcid,
        users: e.users,
        user_ids: e.user_ids,
        full_user_ids: e.full_user_ids,
        answering_number: e.answering_number,
        cause: e.cause,
        dtmf: e.dtmf,
        diversion: e.diversion,
        raw: e.raw_form.into_iter().map(|f| (f.key, f.value)).collect(),
    };
    Ok((event, decision, call))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_and_calls_come_back_from_their_protobuf_form() {
        let decisions = [
            Decision::accept(),
            Decision {
                action: Action::Reject,
                caller_id: None,
                rule: Rule::Block {
                    index: 3,
                    pattern: "4930*".into(),
                    note: "spam".into(),
                },
                flow: None,
            },
            Decision {
                action: Action::SetCallerId,
                caller_id: Some("4930123".into()),
                rule: Rule::Route {
                    index: 0,
                    dest: "49*".into(),
                    note: String::new(),
                },
                flow: None,
            },
            Decision {
                action: Action::SetCallerId,
                caller_id: Some("4930999".into()),
                rule: Rule::DefaultCallerId,
                flow: None,
            },
            Decision {
                action: Action::Menu,
                caller_id: None,
                rule: Rule::Flow {
                    index: Some(2),
                    name: "hotline".into(),
                },
                flow: Some(Box::new(crate::decide::FlowDetail {
                    play: Some(crate::decide::Play {
                        announcement: "menu".into(),
                        url: String::new(),
                        sha256: "ab".repeat(32),
                    }),
                    menu: "main".into(),
                    option: "9".into(),
                    answered_step: 1,
                    gather: Some(crate::decide::Gather {
                        menu: "main".into(),
                        max_digits: 1,
                        timeout_ms: 5000,
                        step: 2,
                    }),
                    ..Default::default()
                })),
            },
            Decision {
                action: Action::Forward,
                caller_id: None,
                rule: Rule::Flow {
                    index: None,
                    name: "gone".into(),
                },
                flow: Some(Box::new(crate::decide::FlowDetail {
                    numbers: vec!["491701234567".into(), "4930123".into()],
                    ..Default::default()
                })),
            },
        ];
        for d in decisions {
            assert_eq!(decision_from(&decision(&d)).unwrap(), d);
            let call = CallRecord {
                call_id: "c1".into(),
                direction: Some(Direction::Out),
                from: "4930123".into(),
                to: "4940456".into(),
                state: CallState::Hangup,
                done: true,
                cause: "normalClearing".into(),
                users: vec!["Alice".into(), String::new()],
                answering_number: "4930777".into(),
                initialized_at_ms: 1_000,
                start_at_ms: Some(2_000),
                end_at_ms: None,
                duration_waiting_secs: Some(1),
                duration_talking_secs: None,
                orig_call_id: "o1".into(),
                xcid: "x1".into(),
                first_leg_call_id: "c0".into(),
                diversion: "4930555".into(),
                decision: Some(d.clone()),
                menu_decision: Some(d.clone()),
                ended_synthetically: true,
                updated_at_ms: 3_000,
            };
            assert_eq!(call_from(super::call(&call)).unwrap(), call);
        }
        let unknown = proto::Decision {
            action: 99,
            ..Default::default()
        };
        assert!(decision_from(&unknown).is_err());
    }
}
