//! The edits an admin can make to the settings, as values: each is validated
//! when it is built (so a bad input changes nothing), and applied to a copy of
//! the current settings under the settings lock (so it sees the latest list).
//! The gRPC service only translates requests into [`Change`]s.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::{
    Content, MAX_BLOCK_ENTRIES, MAX_ROUTING_RULES, SettingsError, shown, validate,
    zammad::ImportedSettings,
};
use crate::{
    numbers,
    settings::{BlockEntry, RoutingRule},
};

/// One validated settings edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    AddBlock {
        entry: BlockEntry,
        input: String,
    },
    RemoveBlock {
        pattern: String,
        input: String,
    },
    ReorderBlockList(Vec<String>),
    AddRoute {
        rule: RoutingRule,
        /// Index to insert at; `None` appends.
        position: Option<u32>,
    },
    RemoveRoute {
        dest: String,
        input: String,
    },
    ReorderRoutingTable(Vec<String>),
    SetDefaultCallerId(Option<String>),
    ImportZammad(Box<ImportedSettings>),
    /// Sets the call-flows document (checked by the manager, which has
    /// the announcements directory), or clears it with `None`.
    SetFlows(Option<String>),
    /// Puts back the settings from before audit entry `audit_id`.
    Restore {
        audit_id: u64,
        content: Box<Content>,
    },
}

/// The stored form of a block entry as typed, for lookups (remove, reorder).
fn block_key(input: &str, cc: &str) -> Result<String, SettingsError> {
    validate::block_entry(input, "", cc)
        .map(|e| e.pattern)
        .map_err(SettingsError::Invalid)
}

fn route_key(input: &str, cc: &str) -> Result<String, SettingsError> {
    if input.chars().count() > super::ECHO_CHARS {
        return Err(SettingsError::Invalid(format!(
            "routing destination '{}' is too long",
            shown(input)
        )));
    }
    numbers::normalize_pattern(input, cc)
        .map_err(|e| SettingsError::Invalid(format!("routing destination: {e}")))
}

impl Change {
    pub fn add_block(pattern: &str, note: &str, cc: &str) -> Result<Change, SettingsError> {
        let entry = validate::block_entry(pattern, note, cc).map_err(SettingsError::Invalid)?;
        Ok(Change::AddBlock {
            entry,
            input: shown(pattern),
        })
    }

    pub fn remove_block(input: &str, cc: &str) -> Result<Change, SettingsError> {
        Ok(Change::RemoveBlock {
            pattern: block_key(input, cc)?,
            input: shown(input),
        })
    }

    pub fn reorder_block_list(patterns: &[String], cc: &str) -> Result<Change, SettingsError> {
        let keys = patterns
            .iter()
            .map(|p| block_key(p, cc))
            .collect::<Result<_, _>>()?;
        Ok(Change::ReorderBlockList(keys))
    }

    pub fn add_route(
        dest: &str,
        caller_id: &str,
        note: &str,
        position: Option<u32>,
        cc: &str,
    ) -> Result<Change, SettingsError> {
        let rule =
            validate::routing_rule(dest, caller_id, note, cc).map_err(SettingsError::Invalid)?;
        Ok(Change::AddRoute { rule, position })
    }

    pub fn remove_route(input: &str, cc: &str) -> Result<Change, SettingsError> {
        Ok(Change::RemoveRoute {
            dest: route_key(input, cc)?,
            input: shown(input),
        })
    }

    pub fn reorder_routing_table(dests: &[String], cc: &str) -> Result<Change, SettingsError> {
        let keys = dests
            .iter()
            .map(|d| route_key(d, cc))
            .collect::<Result<_, _>>()?;
        Ok(Change::ReorderRoutingTable(keys))
    }

    /// An empty input clears the default caller ID.
    pub fn set_default_caller_id(input: &str, cc: &str) -> Result<Change, SettingsError> {
        let input = input.trim();
        let value = if input.is_empty() {
            None
        } else {
            Some(validate::caller_id(input, cc).map_err(SettingsError::Invalid)?)
        };
        Ok(Change::SetDefaultCallerId(value))
    }

    /// Parses and validates the whole document: linear in its size, but for
    /// a large one long enough to belong on a blocking thread.
    pub fn import_zammad(json: &str, cc: &str) -> Result<Change, SettingsError> {
        let imported = super::zammad::import(json, cc).map_err(|e| {
            SettingsError::Invalid(format!("Zammad sipgate_config not imported: {e}"))
        })?;
        Ok(Change::ImportZammad(Box::new(imported)))
    }

    /// The audit trail's name for this kind of change.
    pub fn action(&self) -> &'static str {
        match self {
            Change::AddBlock { .. } => "block.add",
            Change::RemoveBlock { .. } => "block.remove",
            Change::ReorderBlockList(_) => "block.reorder",
            Change::AddRoute { .. } => "route.add",
            Change::RemoveRoute { .. } => "route.remove",
            Change::ReorderRoutingTable(_) => "route.reorder",
            Change::SetDefaultCallerId(_) => "default_caller_id.set",
            Change::ImportZammad(_) => "import.zammad",
            Change::SetFlows(Some(_)) => "flows.set",
            Change::SetFlows(None) => "flows.clear",
            Change::Restore { .. } => "audit.restore",
        }
    }

    /// What the audit trail records about this change.
    pub fn detail(&self) -> Value {
        match self {
            Change::AddBlock { entry, input } => {
                json!({"pattern": entry.pattern, "note": entry.note, "input": input})
            }
            Change::RemoveBlock { pattern, input } => json!({"pattern": pattern, "input": input}),
            Change::ReorderBlockList(order) | Change::ReorderRoutingTable(order) => {
                json!({ "order": order })
            }
            Change::AddRoute { rule, position } => json!({
                "dest": rule.dest, "caller_id": rule.caller_id, "note": rule.note, "position": position
            }),
            Change::RemoveRoute { dest, input } => json!({"dest": dest, "input": input}),
            Change::SetDefaultCallerId(value) => json!({ "caller_id": value }),
            Change::ImportZammad(imported) => json!({
                "block_entries": imported.content.block_list.len(),
                "routing_rules": imported.content.routing_table.len(),
                "default_caller_id": imported.content.default_caller_id,
            }),
            Change::SetFlows(text) => json!({
                "bytes": text.as_ref().map(String::len),
                "sha256": text.as_ref().map(|t| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(t))),
            }),
            Change::Restore { audit_id, content } => json!({
                "restored_before_audit_id": audit_id,
                "block_entries": content.block_list.len(),
                "routing_rules": content.routing_table.len(),
                "default_caller_id": content.default_caller_id,
            }),
        }
    }

    /// Applies the change to `settings`; on error `settings` may be partly
    /// changed and must be thrown away (the manager works on a copy).
    pub fn apply(self, settings: &mut Content) -> Result<(), SettingsError> {
        self.apply_unchecked(settings)?;
        if settings.block_list.len() > MAX_BLOCK_ENTRIES {
            return Err(SettingsError::Invalid(format!(
                "the block list would have {} entries; at most {MAX_BLOCK_ENTRIES} are allowed",
                settings.block_list.len()
            )));
        }
        if settings.routing_table.len() > MAX_ROUTING_RULES {
            return Err(SettingsError::Invalid(format!(
                "the routing table would have {} rules; at most {MAX_ROUTING_RULES} are allowed",
                settings.routing_table.len()
            )));
        }
        Ok(())
    }

    fn apply_unchecked(self, settings: &mut Content) -> Result<(), SettingsError> {
        match self {
            Change::AddBlock { entry, .. } => {
                if settings
                    .block_list
                    .iter()
                    .any(|b| b.pattern == entry.pattern)
                {
                    return Err(SettingsError::AlreadyExists(format!(
                        "{} is already on the block list",
                        entry.pattern
                    )));
                }
                settings.block_list.push(entry);
            }
            Change::RemoveBlock { pattern, .. } => {
                let before = settings.block_list.len();
                settings.block_list.retain(|b| b.pattern != pattern);
                if settings.block_list.len() == before {
                    return Err(SettingsError::NotFound(format!(
                        "{pattern} is not on the block list"
                    )));
                }
            }
            Change::ReorderBlockList(keys) => {
                reorder(
                    &mut settings.block_list,
                    &keys,
                    |b| &b.pattern,
                    "block list",
                )?;
            }
            Change::AddRoute { rule, position } => {
                let table = &mut settings.routing_table;
                if table.iter().any(|x| x.dest == rule.dest) {
                    return Err(SettingsError::AlreadyExists(format!(
                        "a routing rule for {} exists already; remove it first",
                        rule.dest
                    )));
                }
                let at = match position {
                    None => table.len(),
                    Some(p) if (p as usize) <= table.len() => p as usize,
                    Some(p) => {
                        return Err(SettingsError::Invalid(format!(
                            "position {p} is past the end of the routing table ({} rules)",
                            table.len()
                        )));
                    }
                };
                table.insert(at, rule);
            }
            Change::RemoveRoute { dest, .. } => {
                let before = settings.routing_table.len();
                settings.routing_table.retain(|r| r.dest != dest);
                if settings.routing_table.len() == before {
                    return Err(SettingsError::NotFound(format!(
                        "no routing rule for {dest}"
                    )));
                }
            }
            Change::ReorderRoutingTable(keys) => {
                reorder(
                    &mut settings.routing_table,
                    &keys,
                    |r| &r.dest,
                    "routing table",
                )?;
            }
            Change::SetDefaultCallerId(value) => settings.default_caller_id = value,
            Change::ImportZammad(imported) => {
                // Zammad's configuration has no call flows: they stay.
                let flows = settings.flows.take();
                *settings = imported.content;
                settings.flows = flows;
            }
            Change::SetFlows(text) => {
                if let Some(text) = &text
                    && text.len() > crate::flows::MAX_DOCUMENT_BYTES
                {
                    return Err(SettingsError::Invalid(format!(
                        "the call flows document has {} bytes; at most {} (1 MiB) are accepted",
                        text.len(),
                        crate::flows::MAX_DOCUMENT_BYTES
                    )));
                }
                settings.flows = text;
            }
            Change::Restore { content, .. } => *settings = *content,
        }
        Ok(())
    }
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
    let index: HashMap<String, usize> = items
        .iter()
        .enumerate()
        .map(|(i, item)| (key(item).to_string(), i))
        .collect();
    let mut order = Vec::with_capacity(wanted.len());
    let mut taken = vec![false; items.len()];
    for name in wanted {
        match index.get(name.as_str()) {
            Some(&i) if !taken[i] => {
                taken[i] = true;
                order.push(i);
            }
            _ => {
                return Err(SettingsError::Invalid(format!(
                    "'{}' is not a {what} entry, or is named twice",
                    shown(name)
                )));
            }
        }
    }
    let mut slots: Vec<Option<T>> = items.drain(..).map(Some).collect();
    *items = order.into_iter().filter_map(|i| slots[i].take()).collect();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(changes: &[&str]) -> Result<Content, SettingsError> {
        let mut s = Content::default();
        for c in changes {
            Change::add_block(c, "", "49")?.apply(&mut s)?;
        }
        Ok(s)
    }

    #[test]
    fn block_entries_are_added_once_and_removed_by_any_spelling() {
        let mut s = applied(&["030 1234", "anonymous"]).unwrap();
        assert_eq!(s.block_list[0].pattern, "49301234");
        let again = Change::add_block("+49 30 1234", "", "49")
            .unwrap()
            .apply(&mut s.clone());
        assert!(matches!(again, Err(SettingsError::AlreadyExists(_))));
        Change::remove_block("0049301234", "49")
            .unwrap()
            .apply(&mut s)
            .unwrap();
        assert_eq!(s.block_list.len(), 1);
        let missing = Change::remove_block("0049301234", "49")
            .unwrap()
            .apply(&mut s);
        assert!(matches!(missing, Err(SettingsError::NotFound(_))));
    }

    #[test]
    fn reorder_names_every_entry_exactly_once() {
        let mut s = applied(&["4930*", "4940*", "anonymous"]).unwrap();
        let order = ["anonymous", "4940*", "4930*"].map(String::from);
        Change::reorder_block_list(&order, "49")
            .unwrap()
            .apply(&mut s)
            .unwrap();
        let patterns: Vec<_> = s.block_list.iter().map(|b| b.pattern.as_str()).collect();
        assert_eq!(patterns, ["anonymous", "4940*", "4930*"]);

        let short = Change::reorder_block_list(&order[..2], "49")
            .unwrap()
            .apply(&mut s.clone());
        assert!(matches!(short, Err(SettingsError::Invalid(m)) if m.contains("every entry")));
        let twice = ["anonymous", "anonymous", "4930*"].map(String::from);
        let twice = Change::reorder_block_list(&twice, "49")
            .unwrap()
            .apply(&mut s);
        assert!(matches!(twice, Err(SettingsError::Invalid(m)) if m.contains("named twice")));
    }

    #[test]
    fn routes_insert_at_a_position_within_the_table() {
        let mut s = Content::default();
        for (dest, at) in [("49*", None), ("4930*", Some(0))] {
            Change::add_route(dest, "4930777000002", "", at, "49")
                .unwrap()
                .apply(&mut s)
                .unwrap();
        }
        assert_eq!(s.routing_table[0].dest, "4930*");
        let past = Change::add_route("4940*", "4930777000002", "", Some(5), "49")
            .unwrap()
            .apply(&mut s);
        assert!(matches!(past, Err(SettingsError::Invalid(m)) if m.contains("past the end")));
    }

    #[test]
    fn invalid_input_is_refused_before_anything_is_applied() {
        assert!(matches!(
            Change::add_block("12ab", "", "49"),
            Err(SettingsError::Invalid(_))
        ));
        assert!(matches!(
            Change::set_default_caller_id("49*", "49"),
            Err(SettingsError::Invalid(_))
        ));
        assert_eq!(
            Change::set_default_caller_id("  ", "49").unwrap(),
            Change::SetDefaultCallerId(None)
        );
        assert!(matches!(
            Change::import_zammad("{nope", "49"),
            Err(SettingsError::Invalid(m)) if m.contains("not imported")
        ));
    }

    #[test]
    fn lists_are_capped() {
        let mut s = Content {
            block_list: (0..MAX_BLOCK_ENTRIES)
                .map(|i| BlockEntry {
                    pattern: format!("4930{i}"),
                    note: String::new(),
                })
                .collect(),
            ..Content::default()
        };
        let over = Change::add_block("4940123", "", "49")
            .unwrap()
            .apply(&mut s);
        assert!(matches!(over, Err(SettingsError::Invalid(m)) if m.contains("at most 10000")));
    }
}
