//! Settings snapshot -> decision for a newCall. Pure: no I/O, no allocation on
//! the common path beyond the returned decision.

use serde::{Deserialize, Serialize};

use crate::sipgate::event::Direction;

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
    /// Increases with every stored change.
    pub version: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    Accept,
    Reject,
    SetCallerId,
}

/// The setting that produced a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rule {
    None,
    Block {
        index: usize,
        pattern: String,
        note: String,
    },
    Route {
        index: usize,
        dest: String,
        note: String,
    },
    DefaultCallerId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub action: Action,
    /// Set for `SetCallerId`.
    pub caller_id: Option<String>,
    pub rule: Rule,
}
