//! The protobuf form of the event log: events, calls and decisions as
//! `sidecar.v1` messages. Each event's encoded `CallEvent` is made once,
//! when it is stored, and is what every subscriber and page is sent.

use crate::{
    calls::{CallRecord, CallState},
    decide::{Action, Decision, Rule},
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
    };
    proto::Decision {
        action: action.into(),
        caller_id: d.caller_id.clone().unwrap_or_default(),
        rule_kind: rule_kind.into(),
        rule_pattern,
        rule_index,
        rule_note,
        explanation: d.explain(),
    }
}

pub fn call(c: &CallRecord) -> proto::Call {
    proto::Call {
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
