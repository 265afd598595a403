//! Domain types <-> generated protobuf types.

pub use crate::encode::{
    call, call_state_from, decision, direction, direction_from, event_kind, event_kind_from,
};
use crate::{
    proto,
    settings::{BlockEntry, RoutingRule, Settings},
    settings::{SettingsDiff, zammad::ZammadExtras},
};

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
