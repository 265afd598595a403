//! The settings model: what the webhook handler decides from. Plain data;
//! the manager publishes one immutable [`Settings`] after every change.

use serde::{Deserialize, Serialize};

/// A block-list entry: normalised E.164 digits, a prefix pattern ending in
/// `*`, or the literal `anonymous`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockEntry {
    pub pattern: String,
    pub note: String,
}

/// An outbound routing rule: `dest` is a normalised pattern (`*` = one or more
/// characters, everything else literal); `caller_id` normalised digits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingRule {
    pub dest: String,
    pub caller_id: String,
    pub note: String,
}

/// The immutable settings snapshot the webhook handler decides from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub block_list: Vec<BlockEntry>,
    pub routing_table: Vec<RoutingRule>,
    /// Normalised digits; `None` when unset.
    pub default_caller_id: Option<String>,
    /// The call-flows document as the operator gave it (TOML, comments
    /// kept); `None` when no flows are set. Compiled by the manager.
    #[serde(default)]
    pub flows: Option<String>,
    /// Increases with every stored change.
    pub version: u64,
}
