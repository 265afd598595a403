//! Zammad's `sipgate_config` JSON, in and out, so a team moves over in one
//! command: `{"inbound":{"block_caller_ids":[{caller_id,note}]},
//! "outbound":{"routing_table":[{dest,caller_id,note}],"default_caller_id"}}`.
//! Other keys (`user_remote_map`, `view_limit`) are Zammad's own and ignored.

use serde_json::{Value, json};

use super::validate;
use crate::decide::{BlockEntry, RoutingRule, Settings};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedSettings {
    pub block_list: Vec<BlockEntry>,
    pub routing_table: Vec<RoutingRule>,
    pub default_caller_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ImportError(String);

fn text<'a>(item: &'a Value, key: &str, at: &str) -> Result<&'a str, ImportError> {
    match item.get(key) {
        None | Some(Value::Null) => Ok(""),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(ImportError(format!(
            "{at}.{key} must be a string, not {other}"
        ))),
    }
}

fn list<'a>(root: &'a Value, section: &str, key: &str) -> Result<&'a [Value], ImportError> {
    match root.get(section).and_then(|s| s.get(key)) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(ImportError(format!("{section}.{key} must be a list"))),
    }
}

pub fn import(json: &str, cc: &str) -> Result<ImportedSettings, ImportError> {
    let root: Value =
        serde_json::from_str(json).map_err(|e| ImportError(format!("not valid JSON: {e}")))?;
    if !root.is_object() {
        return Err(ImportError(
            "expected a JSON object with 'inbound' and 'outbound'".into(),
        ));
    }
    let mut block_list: Vec<BlockEntry> = Vec::new();
    for (i, item) in list(&root, "inbound", "block_caller_ids")?
        .iter()
        .enumerate()
    {
        let at = format!("inbound.block_caller_ids[{i}]");
        let raw = text(item, "caller_id", &at)?;
        let entry = validate::block_entry(raw, text(item, "note", &at)?, cc)
            .map_err(|e| ImportError(format!("{at}.caller_id '{raw}': {e}")))?;
        if let Some(j) = block_list.iter().position(|b| b.pattern == entry.pattern) {
            return Err(ImportError(format!(
                "{at} and inbound.block_caller_ids[{j}] are the same number {}",
                entry.pattern
            )));
        }
        block_list.push(entry);
    }
    let mut routing_table: Vec<RoutingRule> = Vec::new();
    for (i, item) in list(&root, "outbound", "routing_table")?.iter().enumerate() {
        let at = format!("outbound.routing_table[{i}]");
        let dest = text(item, "dest", &at)?;
        let rule = validate::routing_rule(
            dest,
            text(item, "caller_id", &at)?,
            text(item, "note", &at)?,
            cc,
        )
        .map_err(|e| ImportError(format!("{at} (dest '{dest}'): {e}")))?;
        if let Some(j) = routing_table.iter().position(|r| r.dest == rule.dest) {
            return Err(ImportError(format!(
                "{at} and outbound.routing_table[{j}] have the same destination {}",
                rule.dest
            )));
        }
        routing_table.push(rule);
    }
    let default_caller_id =
        match root
            .get("outbound")
            .map(|o| text(o, "default_caller_id", "outbound"))
        {
            None => None,
            Some(raw) => {
                let raw = raw?;
                if raw.trim().is_empty() {
                    None
                } else {
                    Some(validate::caller_id(raw, cc).map_err(|e| {
                        ImportError(format!("outbound.default_caller_id '{raw}': {e}"))
                    })?)
                }
            }
        };
    Ok(ImportedSettings {
        block_list,
        routing_table,
        default_caller_id,
    })
}

/// The settings in Zammad's shape (pretty-printed).
pub fn export(settings: &Settings) -> String {
    let value = json!({
        "inbound": {
            "block_caller_ids": settings.block_list.iter()
                .map(|b| json!({"caller_id": b.pattern, "note": b.note}))
                .collect::<Vec<_>>(),
        },
        "outbound": {
            "routing_table": settings.routing_table.iter()
                .map(|r| json!({"dest": r.dest, "caller_id": r.caller_id, "note": r.note}))
                .collect::<Vec<_>>(),
            "default_caller_id": settings.default_caller_id.clone().unwrap_or_default(),
        },
    });
    serde_json::to_string_pretty(&value).expect("a JSON value always serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZAMMAD: &str = r#"{
        "inbound": {"block_caller_ids": [{"caller_id": "4930123456", "note": "spam"}, {"caller_id": "anonymous"}]},
        "outbound": {"routing_table": [{"dest": "49*", "caller_id": "4930777000002", "note": null}],
                     "default_caller_id": "4930777000000"},
        "user_remote_map": [], "view_limit": 60
    }"#;

    #[test]
    fn imports_zammads_config_and_round_trips() {
        let imported = import(ZAMMAD, "49").unwrap();
        assert_eq!(imported.block_list.len(), 2);
        assert_eq!(imported.block_list[1].note, "");
        assert_eq!(imported.routing_table[0].dest, "49*");
        assert_eq!(imported.default_caller_id.as_deref(), Some("4930777000000"));
        let settings = Settings {
            block_list: imported.block_list.clone(),
            routing_table: imported.routing_table.clone(),
            default_caller_id: imported.default_caller_id.clone(),
            version: 1,
        };
        assert_eq!(import(&export(&settings), "49").unwrap(), imported);
    }

    #[test]
    fn empty_and_default_configs_import() {
        let empty = import("{}", "49").unwrap();
        assert!(empty.block_list.is_empty() && empty.routing_table.is_empty());
        let seeded = import(r#"{"outbound":{"routing_table":[],"default_caller_id":""},"inbound":{"block_caller_ids":[]}}"#, "49").unwrap();
        assert_eq!(seeded.default_caller_id, None);
    }

    #[test]
    fn errors_name_the_entry() {
        let bad = import(
            r#"{"inbound":{"block_caller_ids":[{"caller_id":"1"},{"caller_id":"12ab"}]}}"#,
            "49",
        )
        .unwrap_err();
        assert!(bad.to_string().contains("block_caller_ids[1]"), "{bad}");
        let dup = import(
            r#"{"inbound":{"block_caller_ids":[{"caller_id":"030 1"},{"caller_id":"+49301"}]}}"#,
            "49",
        )
        .unwrap_err();
        assert!(dup.to_string().contains("same number 49301"), "{dup}");
        let empty_caller = import(
            r#"{"outbound":{"routing_table":[{"dest":"49*","caller_id":""}]}}"#,
            "49",
        )
        .unwrap_err();
        assert!(
            empty_caller.to_string().contains("routing_table[0]"),
            "{empty_caller}"
        );
        assert!(
            import("{nope", "49")
                .unwrap_err()
                .to_string()
                .contains("not valid JSON")
        );
        assert!(import("[]", "49").is_err());
    }
}
