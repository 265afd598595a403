//! Domain types <-> generated protobuf types.

use crate::{
    calls::{CallRecord, CallState},
    decide::{Action, BlockEntry, Decision, RoutingRule, Rule, Settings},
    proto,
    settings::{SettingsDiff, zammad::ZammadExtras},
    sipgate::event::{Direction, EventKind},
    store::StoredEvent,
};

pub fn direction(d: Option<Direction>) -> i32 {
    match d {
        None => proto::Direction::Unspecified,
        Some(Direction::In) => proto::Direction::In,
        Some(Direction::Out) => proto::Direction::Out,
    }
    .into()
}

/// `None` for unspecified or unknown values.
pub fn direction_from(value: i32) -> Option<Direction> {
    match proto::Direction::try_from(value).ok()? {
        proto::Direction::In => Some(Direction::In),
        proto::Direction::Out => Some(Direction::Out),
        proto::Direction::Unspecified => None,
    }
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

pub fn event_kind_from(value: i32) -> Option<EventKind> {
    match proto::EventKind::try_from(value).ok()? {
        proto::EventKind::NewCall => Some(EventKind::NewCall),
        proto::EventKind::Answer => Some(EventKind::Answer),
        proto::EventKind::Hangup => Some(EventKind::Hangup),
        proto::EventKind::Dtmf => Some(EventKind::Dtmf),
        proto::EventKind::Unspecified => None,
    }
}

pub fn call_state(s: CallState) -> i32 {
    match s {
        CallState::NewCall => proto::CallState::NewCall,
        CallState::Answer => proto::CallState::Answer,
        CallState::Hangup => proto::CallState::Hangup,
    }
    .into()
}

pub fn call_state_from(value: i32) -> Option<CallState> {
    match proto::CallState::try_from(value).ok()? {
        proto::CallState::NewCall => Some(CallState::NewCall),
        proto::CallState::Answer => Some(CallState::Answer),
        proto::CallState::Hangup => Some(CallState::Hangup),
        proto::CallState::Unspecified => None,
    }
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

pub fn event(e: &StoredEvent) -> proto::CallEvent {
    let ev = &e.event;
    proto::CallEvent {
        seq: e.seq,
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
        received_at_ms: e.received_at_ms,
        synthetic: e.synthetic,
        raw_form: ev
            .raw
            .iter()
            .map(|(key, value)| proto::FormField {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        decision: e.decision.as_ref().map(decision),
        call: Some(call(&e.call)),
    }
}

fn block_entry(b: &BlockEntry) -> proto::BlockEntry {
    proto::BlockEntry {
        pattern: b.pattern.clone(),
        note: b.note.clone(),
    }
}

fn routing_rule(r: &RoutingRule) -> proto::RoutingRule {
    proto::RoutingRule {
        dest: r.dest.clone(),
        caller_id: r.caller_id.clone(),
        note: r.note.clone(),
    }
}

pub fn settings(s: &Settings) -> proto::SettingsSnapshot {
    proto::SettingsSnapshot {
        block_list: s.block_list.iter().map(block_entry).collect(),
        routing_table: s.routing_table.iter().map(routing_rule).collect(),
        default_caller_id: s.default_caller_id.clone().unwrap_or_default(),
        version: s.version,
        user_remote_map: Vec::new(),
    }
}

/// The snapshot plus Zammad's kept `user_remote_map`.
pub fn settings_with(s: &Settings, zammad: &ZammadExtras) -> proto::SettingsSnapshot {
    let text = |v: &Option<crate::settings::zammad::Scalar>| {
        v.as_ref().map(ToString::to_string).unwrap_or_default()
    };
    proto::SettingsSnapshot {
        user_remote_map: zammad
            .user_remote_map
            .iter()
            .flatten()
            .map(|m| proto::UserRemoteMapping {
                remote_user_id: text(&m.remote_user_id),
                user_id: text(&m.user_id),
            })
            .collect(),
        ..settings(s)
    }
}

pub fn diff(d: &SettingsDiff) -> proto::SettingsDiff {
    let (default_caller_id_changed, before, after) = match &d.default_caller_id {
        Some((before, after)) => (true, before.clone(), after.clone()),
        None => (false, None, None),
    };
    proto::SettingsDiff {
        blocks_added: d.blocks_added.iter().map(block_entry).collect(),
        blocks_removed: d.blocks_removed.iter().map(block_entry).collect(),
        blocks_changed: d
            .blocks_changed
            .iter()
            .map(|(b, a)| proto::BlockEntryChange {
                before: Some(block_entry(b)),
                after: Some(block_entry(a)),
            })
            .collect(),
        block_order_changed: d.block_order_changed,
        routes_added: d.routes_added.iter().map(routing_rule).collect(),
        routes_removed: d.routes_removed.iter().map(routing_rule).collect(),
        routes_changed: d
            .routes_changed
            .iter()
            .map(|(b, a)| proto::RoutingRuleChange {
                before: Some(routing_rule(b)),
                after: Some(routing_rule(a)),
            })
            .collect(),
        routing_order_changed: d.routing_order_changed,
        default_caller_id_changed,
        default_caller_id_before: before.unwrap_or_default(),
        default_caller_id_after: after.unwrap_or_default(),
        user_remote_map_changed: d.user_remote_map_changed,
    }
}
