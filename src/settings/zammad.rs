//! Zammad's `sipgate_config`, in and out, so a team moves over in one
//! command:
//!
//! ```text
//! {"inbound":  {"block_caller_ids": [{"caller_id", "note"}]},
//!  "outbound": {"routing_table": [{"dest", "caller_id", "note"}], "default_caller_id"},
//!  "user_remote_map": [{"remote_user_id", "user_id"}],
//!  "view_limit": 60}
//! ```
//!
//! The input may be JSON or what a Rails console prints (see [`super::ruby`]).
//! The rules, chosen so that no mistake wipes the settings:
//! - `inbound.block_caller_ids` and `outbound.routing_table` must both be
//!   there (Zammad itself treats a config without `inbound` or `outbound` as
//!   "not configured"); an import replaces everything, so an empty list must
//!   be written out (`[]`), never implied.
//! - A wrong type anywhere is refused, naming its path.
//! - An unknown key anywhere is refused, naming its path: a misspelt key
//!   (`block_caller_id`) would otherwise read as "no entries" and wipe the
//!   list. Only `api_user` / `api_password`, which Zammad no longer uses
//!   (zammad/zammad#3848), are dropped with a warning.
//! - `user_remote_map` and `view_limit` are Zammad's own; they are kept as
//!   they came and exported back unchanged. The Zammad bridge maps answering
//!   agents through `user_remote_map` (`crate::bridge::agents`).
//! - At most [`MAX_BLOCK_ENTRIES`] and [`MAX_ROUTING_RULES`] entries;
//!   duplicates are found with a hash map (linear time).

use std::collections::HashMap;

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Map, Number, Value, json};

use super::{Content, MAX_BLOCK_ENTRIES, MAX_ROUTING_RULES, clip, ruby, shown, validate};
use crate::settings::{BlockEntry, RoutingRule};

/// A string or a number, as Zammad stores ids and the view limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Text(String),
    Number(Number),
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::Text(s) => f.write_str(s),
            Scalar::Number(n) => write!(f, "{n}"),
        }
    }
}

/// "Phone Extension to Agent Mapping": sipgate's user id (`w0`) to a Zammad
/// user id or email.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteUser {
    pub remote_user_id: Option<Scalar>,
    pub user_id: Option<Scalar>,
}

/// The parts of `sipgate_config` the sidecar keeps but does not act on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZammadExtras {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_remote_map: Option<Vec<RemoteUser>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view_limit: Option<Scalar>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockCallerId {
    caller_id: Option<String>,
    note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutingRow {
    dest: Option<String>,
    caller_id: Option<String>,
    note: Option<String>,
}

/// A validated import: the whole new settings, plus what was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedSettings {
    pub content: Content,
    /// Things dropped on purpose (e.g. `api_password`), to tell the admin.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ImportError(String);

fn err(message: String) -> ImportError {
    ImportError(message)
}

const TOP_KEYS: &[&str] = &["inbound", "outbound", "user_remote_map", "view_limit"];
const RETIRED_KEYS: &[&str] = &["api_user", "api_password"];

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// `value` must be an object with only `allowed` keys.
fn object(value: Value, at: &str, allowed: &[&str]) -> Result<Map<String, Value>, ImportError> {
    let Value::Object(map) = value else {
        return Err(err(format!("{at} must be an object, not {}", kind(&value))));
    };
    if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(err(format!(
            "{at} has the unknown key '{}' (known: {}); remove it if it is not Zammad's",
            shown(unknown),
            allowed.join(", ")
        )));
    }
    Ok(map)
}

/// The required list `key` of `section`, at most `max` long.
fn list(
    section: &mut Map<String, Value>,
    at: &str,
    key: &str,
    max: usize,
) -> Result<Vec<Value>, ImportError> {
    match section.remove(key) {
        None => Err(err(format!(
            "{at}.{key} is missing; write \"{key}\": [] to import an empty list"
        ))),
        Some(Value::Array(items)) if items.len() > max => Err(err(format!(
            "{at}.{key} has {} entries; at most {max} are allowed",
            items.len()
        ))),
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(err(format!(
            "{at}.{key} must be a list, not {}",
            kind(&other)
        ))),
    }
}

fn typed<T: DeserializeOwned>(value: Value, at: &str) -> Result<T, ImportError> {
    serde_json::from_value(value).map_err(|e| err(format!("{at}: {}", clip(&e.to_string(), 160))))
}

/// Reads `sipgate_config` (JSON or a Rails console's output) and validates
/// every entry; `cc` is the country code for national numbers.
pub fn import(text: &str, cc: &str) -> Result<ImportedSettings, ImportError> {
    let root = ruby::read_console(text).map_err(err)?;
    import_value(root, cc)
}

fn import_value(root: Value, cc: &str) -> Result<ImportedSettings, ImportError> {
    let Value::Object(mut root) = root else {
        return Err(err(format!(
            "expected Zammad's sipgate_config, an object with 'inbound' and 'outbound', not {}",
            kind(&root)
        )));
    };
    let mut warnings = Vec::new();
    for retired in RETIRED_KEYS {
        if root.remove(*retired).is_some() {
            warnings.push(format!(
                "'{retired}' is not used by Zammad any more and was not imported"
            ));
        }
    }
    if let Some(unknown) = root.keys().find(|k| !TOP_KEYS.contains(&k.as_str())) {
        return Err(err(format!(
            "unknown key '{}' at the top level (Zammad's sipgate_config has {}); \
             is this the right setting? nothing was changed",
            shown(unknown),
            TOP_KEYS.join(", ")
        )));
    }
    let (inbound, outbound) = match (root.remove("inbound"), root.remove("outbound")) {
        (Some(i), Some(o)) => (i, o),
        (None, None) => {
            return Err(err(
                "none of Zammad's sipgate_config sections 'inbound' and 'outbound' is there; \
                 an import replaces every setting, so both are required (an empty config is \
                 {\"inbound\":{\"block_caller_ids\":[]},\"outbound\":{\"routing_table\":[],\"default_caller_id\":\"\"}})"
                    .into(),
            ));
        }
        (None, Some(_)) => return Err(err("'inbound' is missing; an import replaces every setting, so both 'inbound' and 'outbound' are required".into())),
        (Some(_), None) => return Err(err("'outbound' is missing; an import replaces every setting, so both 'inbound' and 'outbound' are required".into())),
    };

    let mut inbound = object(inbound, "inbound", &["block_caller_ids"])?;
    let rows = list(
        &mut inbound,
        "inbound",
        "block_caller_ids",
        MAX_BLOCK_ENTRIES,
    )?;
    let mut block_list: Vec<BlockEntry> = Vec::with_capacity(rows.len());
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(rows.len());
    for (i, row) in rows.into_iter().enumerate() {
        let at = format!("inbound.block_caller_ids[{i}]");
        let row: BlockCallerId = typed(row, &at)?;
        let raw = row.caller_id.unwrap_or_default();
        let entry = validate::block_entry(&raw, row.note.as_deref().unwrap_or(""), cc)
            .map_err(|e| err(format!("{at}: {e}")))?;
        if let Some(j) = seen.insert(entry.pattern.clone(), i) {
            return Err(err(format!(
                "{at} and inbound.block_caller_ids[{j}] are the same number {}",
                entry.pattern
            )));
        }
        block_list.push(entry);
    }

    let mut outbound = object(
        outbound,
        "outbound",
        &["routing_table", "default_caller_id"],
    )?;
    let rows = list(
        &mut outbound,
        "outbound",
        "routing_table",
        MAX_ROUTING_RULES,
    )?;
    let mut routing_table: Vec<RoutingRule> = Vec::with_capacity(rows.len());
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(rows.len());
    for (i, row) in rows.into_iter().enumerate() {
        let at = format!("outbound.routing_table[{i}]");
        let row: RoutingRow = typed(row, &at)?;
        let rule = validate::routing_rule(
            row.dest.as_deref().unwrap_or(""),
            row.caller_id.as_deref().unwrap_or(""),
            row.note.as_deref().unwrap_or(""),
            cc,
        )
        .map_err(|e| err(format!("{at}: {e}")))?;
        if let Some(j) = seen.insert(rule.dest.clone(), i) {
            return Err(err(format!(
                "{at} and outbound.routing_table[{j}] have the same destination {}",
                rule.dest
            )));
        }
        routing_table.push(rule);
    }
    let default_caller_id: Option<String> = match outbound.remove("default_caller_id") {
        None => None,
        Some(v) => typed(v, "outbound.default_caller_id")?,
    };
    let default_caller_id = match default_caller_id {
        Some(raw) if !raw.trim().is_empty() => Some(
            validate::caller_id(&raw, cc)
                .map_err(|e| err(format!("outbound.default_caller_id: {e}")))?,
        ),
        _ => None,
    };

    let user_remote_map = match root.remove("user_remote_map") {
        None | Some(Value::Null) => None,
        Some(Value::Array(rows)) => Some(
            rows.into_iter()
                .enumerate()
                .map(|(i, row)| typed(row, &format!("user_remote_map[{i}]")))
                .collect::<Result<Vec<RemoteUser>, _>>()?,
        ),
        Some(other) => {
            return Err(err(format!(
                "user_remote_map must be a list, not {}",
                kind(&other)
            )));
        }
    };
    let view_limit = match root.remove("view_limit") {
        None | Some(Value::Null) => None,
        Some(v) => Some(typed(v, "view_limit")?),
    };
    Ok(ImportedSettings {
        content: Content {
            block_list,
            routing_table,
            default_caller_id,
            zammad: ZammadExtras {
                user_remote_map,
                view_limit,
            },
            flows: None,
        },
        warnings,
    })
}

/// The settings in Zammad's shape (pretty-printed), with Zammad's own keys
/// as they were imported.
pub fn export(content: &Content) -> String {
    let mut value = json!({
        "inbound": {
            "block_caller_ids": content.block_list.iter()
                .map(|b| json!({"caller_id": b.pattern, "note": b.note}))
                .collect::<Vec<_>>(),
        },
        "outbound": {
            "routing_table": content.routing_table.iter()
                .map(|r| json!({"dest": r.dest, "caller_id": r.caller_id, "note": r.note}))
                .collect::<Vec<_>>(),
            "default_caller_id": content.default_caller_id.clone().unwrap_or_default(),
        },
    });
    if let (Value::Object(out), Ok(Value::Object(extras))) =
        (&mut value, serde_json::to_value(&content.zammad))
    {
        out.extend(extras);
    }
    serde_json::to_string_pretty(&value).expect("a JSON value always serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZAMMAD: &str = r#"{
        "inbound": {"block_caller_ids": [{"caller_id": "4930123456", "note": "spam"}, {"caller_id": "anonymous"}]},
        "outbound": {"routing_table": [{"dest": "49*", "caller_id": "4930777000002", "note": null}],
                     "default_caller_id": "4930777000000"},
        "user_remote_map": [{"remote_user_id": "w0", "user_id": "agent@example.com"}, {"remote_user_id": "w1", "user_id": 7}],
        "view_limit": 60
    }"#;

    #[test]
    fn imports_zammads_config_and_round_trips() {
        let imported = import(ZAMMAD, "49").unwrap().content;
        assert_eq!(imported.block_list.len(), 2);
        assert_eq!(imported.block_list[1].note, "");
        assert_eq!(imported.routing_table[0].dest, "49*");
        assert_eq!(imported.default_caller_id.as_deref(), Some("4930777000000"));
        let map = imported.zammad.user_remote_map.as_ref().unwrap();
        assert_eq!(map[1].user_id, Some(Scalar::Number(7.into())));
        assert_eq!(import(&export(&imported), "49").unwrap().content, imported);
        let exported: Value = serde_json::from_str(&export(&imported)).unwrap();
        let original: Value = serde_json::from_str(ZAMMAD).unwrap();
        assert_eq!(exported["user_remote_map"], original["user_remote_map"]);
        assert_eq!(exported["view_limit"], 60);
    }

    #[test]
    fn seeded_default_config_imports_and_nothing_else_empty_does() {
        let seeded = import(r#"{"outbound":{"routing_table":[],"default_caller_id":""},"inbound":{"block_caller_ids":[]}}"#, "49").unwrap();
        assert_eq!(seeded.content, Content::default());
        for (doc, expected) in [
            ("{}", "none of Zammad's sipgate_config sections"),
            (r#"{"foo":1}"#, "unknown key 'foo' at the top level"),
            (
                r#"{"inbound":{"block_caller_ids":[]}}"#,
                "'outbound' is missing",
            ),
            (
                r#"{"inbound":{},"outbound":{"routing_table":[]}}"#,
                "inbound.block_caller_ids is missing",
            ),
            (
                r#"{"inbound":{"block_caller_id":[]},"outbound":{"routing_table":[]}}"#,
                "inbound has the unknown key 'block_caller_id'",
            ),
        ] {
            let e = import(doc, "49").unwrap_err().to_string();
            assert!(e.contains(expected), "{doc}: {e}");
        }
    }

    #[test]
    fn wrong_types_and_unknown_keys_are_refused_with_their_path() {
        for (doc, expected) in [
            (
                r#"{"inbound":{"block_caller_ids":{}},"outbound":{"routing_table":[]}}"#,
                "inbound.block_caller_ids must be a list, not an object",
            ),
            (
                r#"{"inbound":{"block_caller_ids":[{"caller_id":4930}]},"outbound":{"routing_table":[]}}"#,
                "inbound.block_caller_ids[0]: invalid type: integer",
            ),
            (
                r#"{"inbound":{"block_caller_ids":[]},"outbound":{"routing_table":[{"dest":"49*","caller_id":"4930","colour":"red"}]}}"#,
                "outbound.routing_table[0]: unknown field `colour`",
            ),
            (
                r#"{"inbound":{"block_caller_ids":[]},"outbound":{"routing_table":[],"default_caller_id":["1"]}}"#,
                "outbound.default_caller_id: invalid type",
            ),
            (
                r#"{"inbound":{"block_caller_ids":[]},"outbound":{"routing_table":[]},"user_remote_map":[{"remote_user_id":"w0","agent":"x"}]}"#,
                "user_remote_map[0]: unknown field `agent`",
            ),
            (
                r#"{"inbound":[],"outbound":{"routing_table":[]}}"#,
                "inbound must be an object, not a list",
            ),
            ("[]", "not a list"),
        ] {
            let e = import(doc, "49").unwrap_err().to_string();
            assert!(e.contains(expected), "{doc}: {e}");
        }
    }

    #[test]
    fn retired_api_credentials_are_dropped_with_a_warning() {
        let imported = import(
            r#"{"inbound":{"block_caller_ids":[]},"outbound":{"routing_table":[]},"api_user":"u","api_password":"secret"}"#,
            "49",
        )
        .unwrap();
        assert_eq!(imported.warnings.len(), 2);
        assert!(!export(&imported.content).contains("secret"));
    }

    #[test]
    fn rails_console_forms_import_the_same() {
        let json = r#"{"inbound":{"block_caller_ids":[{"caller_id":"4930123456","note":null}]},"outbound":{"routing_table":[],"default_caller_id":"4930777000000"},"user_remote_map":[{"remote_user_id":"w0","user_id":"a@example.com"}]}"#;
        let quoted = serde_json::to_string(json).unwrap();
        let ruby = r#"{"inbound"=>{"block_caller_ids"=>[{"caller_id"=>"4930123456", "note"=>nil}]}, "outbound"=>{"routing_table"=>[], "default_caller_id"=>"4930777000000"}, "user_remote_map"=>[{"remote_user_id"=>"w0", "user_id"=>"a@example.com"}]}"#;
        let expected = import(json, "49").unwrap();
        assert_eq!(import(&quoted, "49").unwrap(), expected);
        assert_eq!(import(ruby, "49").unwrap(), expected);
    }

    #[test]
    fn errors_name_the_entry() {
        let wrap = |blocks: &str| {
            format!(
                r#"{{"inbound":{{"block_caller_ids":{blocks}}},"outbound":{{"routing_table":[]}}}}"#
            )
        };
        let bad = import(&wrap(r#"[{"caller_id":"1"},{"caller_id":"12ab"}]"#), "49").unwrap_err();
        assert!(bad.to_string().contains("block_caller_ids[1]"), "{bad}");
        let dup = import(
            &wrap(r#"[{"caller_id":"030 1"},{"caller_id":"+49301"}]"#),
            "49",
        )
        .unwrap_err();
        assert!(dup.to_string().contains("same number 49301"), "{dup}");
        let empty_caller = import(
            r#"{"inbound":{"block_caller_ids":[]},"outbound":{"routing_table":[{"dest":"49*","caller_id":""}]}}"#,
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
    }

    #[test]
    fn large_imports_validate_in_linear_time_and_are_capped() {
        let rows: Vec<Value> = (0..MAX_BLOCK_ENTRIES)
            .map(|i| json!({"caller_id": format!("4930{i:07}"), "note": ""}))
            .collect();
        let routes: Vec<Value> = (0..MAX_ROUTING_RULES)
            .map(|i| json!({"dest": format!("4940{i:07}*"), "caller_id": "4930777000000", "note": ""}))
            .collect();
        let doc =
            json!({"inbound": {"block_caller_ids": rows}, "outbound": {"routing_table": routes}});
        let imported = import(&doc.to_string(), "49").unwrap();
        assert_eq!(imported.content.block_list.len(), MAX_BLOCK_ENTRIES);
        let over: Vec<Value> = (0..=MAX_BLOCK_ENTRIES)
            .map(|i| json!({"caller_id": format!("4930{i:07}")}))
            .collect();
        let doc = json!({"inbound": {"block_caller_ids": over}, "outbound": {"routing_table": []}});
        let e = import(&doc.to_string(), "49").unwrap_err().to_string();
        assert!(e.contains("10001 entries; at most 10000"), "{e}");
    }

    #[test]
    fn a_huge_offending_value_is_echoed_as_a_short_prefix() {
        let key = "k".repeat(1_000_000);
        let e = import(&format!(r#"{{"{key}":1}}"#), "49")
            .unwrap_err()
            .to_string();
        assert!(e.len() < 400, "{}", e.len());
        let e = import(
            &format!(r#"{{"inbound":{{"block_caller_ids":[{{"caller_id":"{key}"}}]}},"outbound":{{"routing_table":[]}}}}"#),
            "49",
        )
        .unwrap_err()
        .to_string();
        assert!(e.len() < 400, "{}", e.len());
    }
}
