//! Settings snapshot -> decision for a newCall. Pure: no I/O, no allocation on
//! the common path beyond the returned decision.

use serde::{Deserialize, Serialize};

use crate::{
    numbers::{self, pattern_matches},
    sipgate::{event::Direction, xml::Reply},
};

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

impl Decision {
    /// No instruction: the call proceeds as sipgate routes it.
    pub fn accept() -> Self {
        Decision {
            action: Action::Accept,
            caller_id: None,
            rule: Rule::None,
        }
    }

    /// A sentence for people: what happens and which setting says so.
    pub fn explain(&self) -> String {
        let note = |note: &str| {
            if note.is_empty() {
                String::new()
            } else {
                format!(", note: {note}")
            }
        };
        match (&self.action, &self.rule) {
            (
                Action::Reject,
                Rule::Block {
                    index,
                    pattern,
                    note: n,
                },
            ) => format!(
                "rejected (busy): caller matches block entry {pattern} (#{}{})",
                index + 1,
                note(n)
            ),
            (
                Action::SetCallerId,
                Rule::Route {
                    index,
                    dest,
                    note: n,
                },
            ) => format!(
                "caller ID {} from routing rule {dest} (#{}{})",
                self.caller_id.as_deref().unwrap_or_default(),
                index + 1,
                note(n)
            ),
            (Action::SetCallerId, Rule::DefaultCallerId) => format!(
                "caller ID {} from the default caller ID (no routing rule matches)",
                self.caller_id.as_deref().unwrap_or_default()
            ),
            _ => "no rule applies: the call proceeds unchanged".to_string(),
        }
    }
}

/// The reply that carries a newCall's (or dtmf's) decision to sipgate: a
/// Reject, a Dial with the caller ID, or only the follow-up subscription.
/// `to` is the number dialled, repeated in the Dial.
pub fn reply_for(decision: Option<&Decision>, callback: String, to: String) -> Reply {
    match decision {
        Some(Decision {
            action: Action::Reject,
            ..
        }) => Reply::Reject { callback },
        Some(Decision {
            action: Action::SetCallerId,
            caller_id: Some(caller_id),
            ..
        }) => Reply::Dial {
            callback,
            caller_id: caller_id.clone(),
            number: to,
        },
        _ => Reply::Plain { callback },
    }
}

fn normalized_or_raw(number: &str, country_code: &str) -> String {
    numbers::normalize_number(number, country_code).unwrap_or_else(|_| number.trim().to_string())
}

/// The decision for a newCall from `from` to `to`.
pub fn decide(
    settings: &Settings,
    direction: Direction,
    from: &str,
    to: &str,
    country_code: &str,
) -> Decision {
    match direction {
        Direction::In => {
            let caller = normalized_or_raw(from, country_code);
            if caller.is_empty() {
                return Decision::accept();
            }
            settings
                .block_list
                .iter()
                .enumerate()
                .find(|(_, b)| pattern_matches(&b.pattern, &caller))
                .map_or_else(Decision::accept, |(index, b)| Decision {
                    action: Action::Reject,
                    caller_id: None,
                    rule: Rule::Block {
                        index,
                        pattern: b.pattern.clone(),
                        note: b.note.clone(),
                    },
                })
        }
        Direction::Out => {
            let callee = normalized_or_raw(to, country_code);
            if callee.is_empty() {
                return Decision::accept();
            }
            if let Some((index, rule)) = settings
                .routing_table
                .iter()
                .enumerate()
                .find(|(_, r)| pattern_matches(&r.dest, &callee))
            {
                return Decision {
                    action: Action::SetCallerId,
                    caller_id: Some(rule.caller_id.clone()),
                    rule: Rule::Route {
                        index,
                        dest: rule.dest.clone(),
                        note: rule.note.clone(),
                    },
                };
            }
            match settings
                .default_caller_id
                .as_deref()
                .filter(|c| !c.is_empty())
            {
                Some(caller_id) => Decision {
                    action: Action::SetCallerId,
                    caller_id: Some(caller_id.to_string()),
                    rule: Rule::DefaultCallerId,
                },
                None => Decision::accept(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            block_list: vec![
                BlockEntry {
                    pattern: "4912347114711".into(),
                    note: "exact".into(),
                },
                BlockEntry {
                    pattern: "49171*".into(),
                    note: "range".into(),
                },
                BlockEntry {
                    pattern: "anonymous".into(),
                    note: String::new(),
                },
            ],
            routing_table: vec![
                RoutingRule {
                    dest: "4930600000000".into(),
                    caller_id: "4930777000001".into(),
                    note: String::new(),
                },
                RoutingRule {
                    dest: "49*".into(),
                    caller_id: "4930777000002".into(),
                    note: "germany".into(),
                },
            ],
            default_caller_id: Some("4930777000000".into()),
            version: 3,
        }
    }

    #[test]
    fn inbound_blocking_matches_what_zammad_matches_and_more() {
        let s = settings();
        let reject = |from: &str| {
            decide(&s, Direction::In, from, "4930600000000", "49").action == Action::Reject
        };
        // Zammad's exact match.
        assert!(reject("4912347114711"));
        // Typed differently, same number.
        assert!(reject("+49 1234 7114711"));
        assert!(reject("01234 7114711"));
        assert!(reject("491711234567"));
        assert!(reject("anonymous"));
        assert!(!reject("491721234567"));
        assert!(!reject(""));
        let d = decide(&s, Direction::In, "491711234567", "x", "49");
        assert_eq!(
            d.rule,
            Rule::Block {
                index: 1,
                pattern: "49171*".into(),
                note: "range".into()
            }
        );
        assert!(d.explain().contains("49171*"), "{}", d.explain());
    }

    #[test]
    fn outbound_routing_first_match_then_default() {
        let s = settings();
        let caller = |to: &str| decide(&s, Direction::Out, "4930600000000", to, "49").caller_id;
        assert_eq!(caller("4930600000000").as_deref(), Some("4930777000001"));
        assert_eq!(caller("4912347114711").as_deref(), Some("4930777000002"));
        assert_eq!(caller("0221 1234567").as_deref(), Some("4930777000002"));
        assert_eq!(caller("33123456789").as_deref(), Some("4930777000000"));
        assert_eq!(
            decide(&s, Direction::Out, "x", "", "49"),
            Decision::accept()
        );
        // Outbound calls are never blocked, inbound calls never routed.
        assert_eq!(
            decide(&s, Direction::Out, "anonymous", "33123", "49").action,
            Action::SetCallerId
        );
        assert_eq!(
            decide(&s, Direction::In, "33123", "4930600000000", "49").action,
            Action::Accept
        );

        let mut no_default = settings();
        no_default.default_caller_id = None;
        assert_eq!(
            decide(&no_default, Direction::Out, "x", "33123", "49"),
            Decision::accept()
        );
        assert!(Decision::accept().explain().contains("no rule"));
    }
}
