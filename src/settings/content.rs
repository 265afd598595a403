//! The whole settings as one value ([`Content`]): what the audit trail keeps
//! before and after each change, what an undo restores, and what a dry run
//! compares ([`SettingsDiff`]).

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::zammad::ZammadExtras;
use crate::settings::{BlockEntry, RoutingRule, Settings};

/// Everything an admin can set, without the version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Content {
    pub block_list: Vec<BlockEntry>,
    pub routing_table: Vec<RoutingRule>,
    pub default_caller_id: Option<String>,
    /// Zammad's keys the sidecar does not use, kept for export.
    #[serde(default)]
    pub zammad: ZammadExtras,
    /// The call-flows document, as set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flows: Option<String>,
}

impl Content {
    pub fn new(settings: &Settings, zammad: ZammadExtras) -> Content {
        Content {
            block_list: settings.block_list.clone(),
            routing_table: settings.routing_table.clone(),
            default_caller_id: settings.default_caller_id.clone(),
            zammad,
            flows: settings.flows.clone(),
        }
    }

    pub fn settings(&self, version: u64) -> Settings {
        Settings {
            block_list: self.block_list.clone(),
            routing_table: self.routing_table.clone(),
            default_caller_id: self.default_caller_id.clone().filter(|v| !v.is_empty()),
            flows: self.flows.clone(),
            version,
        }
    }

    /// What changes from `self` to `next`.
    pub fn diff(&self, next: &Content) -> SettingsDiff {
        let (blocks_added, blocks_removed, blocks_changed, block_order_changed) =
            diff_lists(&self.block_list, &next.block_list, |b: &BlockEntry| {
                b.pattern.as_str()
            });
        let (routes_added, routes_removed, routes_changed, routing_order_changed) = diff_lists(
            &self.routing_table,
            &next.routing_table,
            |r: &RoutingRule| r.dest.as_str(),
        );
        let default_caller_id = (self.default_caller_id != next.default_caller_id).then(|| {
            (
                self.default_caller_id.clone(),
                next.default_caller_id.clone(),
            )
        });
        SettingsDiff {
            blocks_added,
            blocks_removed,
            blocks_changed,
            block_order_changed,
            routes_added,
            routes_removed,
            routes_changed,
            routing_order_changed,
            default_caller_id,
            user_remote_map_changed: self.zammad.user_remote_map != next.zammad.user_remote_map,
            flows_changed: self.flows != next.flows,
        }
    }
}

/// Entries added, removed and changed (same key, other content), keyed by
/// pattern or destination, and whether the entries both lists have are in
/// another order. Linear in the list sizes.
#[allow(clippy::type_complexity)]
fn diff_lists<T: Clone + PartialEq>(
    before: &[T],
    after: &[T],
    key: impl Fn(&T) -> &str,
) -> (Vec<T>, Vec<T>, Vec<(T, T)>, bool) {
    let old: HashMap<&str, &T> = before.iter().map(|x| (key(x), x)).collect();
    let new: HashSet<&str> = after.iter().map(&key).collect();
    let mut added = Vec::new();
    let mut changed = Vec::new();
    for x in after {
        match old.get(key(x)) {
            None => added.push(x.clone()),
            Some(&was) if was != x => changed.push((was.clone(), x.clone())),
            Some(_) => {}
        }
    }
    let removed = before
        .iter()
        .filter(|x| !new.contains(key(x)))
        .cloned()
        .collect();
    let kept_before = before.iter().map(&key).filter(|k| new.contains(k));
    let kept_after = after.iter().map(&key).filter(|k| old.contains_key(k));
    let reordered = !kept_before.eq(kept_after);
    (added, removed, changed, reordered)
}

/// What a change does, entry by entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SettingsDiff {
    pub blocks_added: Vec<BlockEntry>,
    pub blocks_removed: Vec<BlockEntry>,
    /// (before, after) for entries whose note changed.
    pub blocks_changed: Vec<(BlockEntry, BlockEntry)>,
    pub block_order_changed: bool,
    pub routes_added: Vec<RoutingRule>,
    pub routes_removed: Vec<RoutingRule>,
    /// (before, after) for rules whose caller ID or note changed.
    pub routes_changed: Vec<(RoutingRule, RoutingRule)>,
    pub routing_order_changed: bool,
    /// (before, after) when the default caller ID changes.
    pub default_caller_id: Option<(Option<String>, Option<String>)>,
    pub user_remote_map_changed: bool,
    /// The call-flows document is set, replaced or cleared.
    pub flows_changed: bool,
}

impl SettingsDiff {
    pub fn is_empty(&self) -> bool {
        *self == SettingsDiff::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(p: &str, note: &str) -> BlockEntry {
        BlockEntry {
            pattern: p.into(),
            note: note.into(),
        }
    }

    fn route(d: &str, c: &str) -> RoutingRule {
        RoutingRule {
            dest: d.into(),
            caller_id: c.into(),
            note: String::new(),
        }
    }

    #[test]
    fn diff_names_added_removed_and_changed_entries() {
        let before = Content {
            block_list: vec![block("4930*", "spam"), block("anonymous", "")],
            routing_table: vec![route("4930*", "4930777"), route("49*", "4930888")],
            default_caller_id: Some("4930777000".into()),
            zammad: ZammadExtras::default(),
            flows: None,
        };
        let after = Content {
            block_list: vec![block("4930*", "spam range"), block("4940123", "")],
            routing_table: vec![route("49*", "4930888"), route("4930*", "4930777")],
            default_caller_id: None,
            zammad: ZammadExtras::default(),
            flows: None,
        };
        let d = before.diff(&after);
        assert_eq!(d.blocks_added, [block("4940123", "")]);
        assert_eq!(d.blocks_removed, [block("anonymous", "")]);
        assert_eq!(
            d.blocks_changed,
            [(block("4930*", "spam"), block("4930*", "spam range"))]
        );
        assert!(!d.block_order_changed);
        assert!(d.routes_added.is_empty() && d.routes_removed.is_empty());
        assert!(d.routing_order_changed);
        assert_eq!(d.default_caller_id, Some((Some("4930777000".into()), None)));
        assert!(!d.user_remote_map_changed);
        assert!(before.diff(&before).is_empty());
    }

    #[test]
    fn diff_of_large_lists_is_linear() {
        let many: Vec<BlockEntry> = (0..10_000)
            .map(|i| block(&format!("4930{i}"), ""))
            .collect();
        let before = Content {
            block_list: many.clone(),
            ..Content::default()
        };
        let after = Content {
            block_list: many.into_iter().rev().collect(),
            ..Content::default()
        };
        let started = std::time::Instant::now();
        let d = before.diff(&after);
        assert!(d.block_order_changed && d.blocks_added.is_empty());
        // Quadratic would be 10^8 string compares; linear is milliseconds.
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
