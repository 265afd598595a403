//! The typed form of one sipgate push, built from the decoded form fields.

use serde::{Deserialize, Serialize};

/// The four events sipgate sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    NewCall,
    Answer,
    Hangup,
    Dtmf,
}

impl EventKind {
    /// The wire name sipgate (and Zammad) use.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::NewCall => "newCall",
            EventKind::Answer => "answer",
            EventKind::Hangup => "hangup",
            EventKind::Dtmf => "dtmf",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "newCall" => Some(EventKind::NewCall),
            "answer" => Some(EventKind::Answer),
            "hangup" => Some(EventKind::Hangup),
            "dtmf" => Some(EventKind::Dtmf),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Direction {
    In,
    Out,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "in" => Some(Direction::In),
            "out" => Some(Direction::Out),
            _ => None,
        }
    }
}

/// One push from sipgate. Every field but `kind` and `call_id` may be empty:
/// an empty string means "absent or empty" (sipgate sends both).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub call_id: String,
    /// `None` for `dtmf` (which carries none) and for answer/hangup without one.
    pub direction: Option<Direction>,
    pub from: String,
    pub to: String,
    pub orig_call_id: String,
    pub xcid: String,
    /// `user[]` on newCall (in order, empty entries kept); `[user]` on answer
    /// when the field was sent (even empty), `[]` when it was not.
    pub users: Vec<String>,
    pub user_ids: Vec<String>,
    pub full_user_ids: Vec<String>,
    pub answering_number: String,
    /// Hangup cause, verbatim (an open set).
    pub cause: String,
    pub dtmf: String,
    pub diversion: String,
    /// Every decoded field in wire order, unknown ones included.
    pub raw: Vec<(String, String)>,
}

impl Event {
    /// An event of `kind` for `call_id` with every other field empty; set
    /// the fields that matter with struct update syntax
    /// (`Event { from: .., ..Event::new(kind, id) }`).
    pub fn new(kind: EventKind, call_id: impl Into<String>) -> Self {
        Event {
            kind,
            call_id: call_id.into(),
            direction: None,
            from: String::new(),
            to: String::new(),
            orig_call_id: String::new(),
            xcid: String::new(),
            users: Vec::new(),
            user_ids: Vec::new(),
            full_user_ids: Vec::new(),
            answering_number: String::new(),
            cause: String::new(),
            dtmf: String::new(),
            diversion: String::new(),
            raw: Vec::new(),
        }
    }
}
