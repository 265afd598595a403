//! Which ended calls concern a callback ticket, and the notes written about
//! them. Pure: the event in, the verdict and the texts out.
//!
//! Missed, as Zammad counts it (`zammad-cti.md` §4.4, the call's `done`
//! flag): an inbound call nobody took, or one only the voicemail took; a
//! `forwarded` leg is not missed (the next leg is the call). Reached: any
//! later call with that number that a person answered, inbound or outbound.

use jiff::Timestamp;

use crate::proto::{self, Action, CallState, Direction, EventKind, RuleKind};

/// What a call that ended means for the callback tickets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Concern {
    /// Nobody took the call from `number` (E.164 digits, or `anonymous`).
    Missed { number: String },
    /// Somebody talked with `number`: its open ticket, if any, is settled.
    Reached { number: String },
}

/// What decides beyond Zammad's rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Include {
    /// Calls the sidecar rejected through the block list.
    pub blocked: bool,
    /// Callers without a number: one ticket per call.
    pub anonymous: bool,
}

/// The number a call is with: the caller of an inbound call, the callee of
/// an outbound one.
fn other_party(call: &proto::Call) -> &str {
    match call.direction() {
        Direction::Out => &call.to,
        _ => &call.from,
    }
}

pub fn is_anonymous(number: &str) -> bool {
    number.is_empty() || number.eq_ignore_ascii_case("anonymous")
}

/// What `event` means for the tickets: only the end of a call (sipgate's
/// hangup or the sidecar's synthetic one) concerns them.
pub fn classify(event: &proto::CallEvent, include: Include) -> Option<Concern> {
    if event.kind() != EventKind::Hangup {
        return None;
    }
    let call = event.call.as_ref()?;
    if call.state() != CallState::Hangup {
        return None;
    }
    let number = other_party(call);
    let anonymous = is_anonymous(number);
    let number = if anonymous {
        "anonymous".to_string()
    } else {
        number.to_string()
    };
    let inbound = call.direction() == Direction::In;
    if inbound && !call.done {
        if call.cause == "forwarded" {
            return None;
        }
        let blocked = call
            .decision
            .as_ref()
            .is_some_and(|d| d.action() == Action::Reject && d.rule_kind() == RuleKind::Block);
        if (blocked && !include.blocked) || (anonymous && !include.anonymous) {
            return None;
        }
        return Some(Concern::Missed { number });
    }
    let answered = call.start_at_ms != 0;
    if answered && !anonymous && (call.done || !inbound) {
        return Some(Concern::Reached { number });
    }
    None
}

/// The marker every article the bridge writes carries: how a retry after a
/// crash finds what it already wrote (Zammad has no idempotency key).
pub fn marker(call_id: &str) -> String {
    format!("sipgate call id: {call_id}")
}

/// A number as people read it: `+` and the digits.
pub fn shown(number: &str) -> String {
    if is_anonymous(number) {
        "an anonymous caller".to_string()
    } else {
        format!("+{number}")
    }
}

pub fn ticket_title(number: &str) -> String {
    format!("Missed call from {}", shown(number))
}

fn when(ms: i64) -> String {
    Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|_| format!("{ms} ms"))
}

fn seconds(secs: Option<i64>) -> String {
    match secs {
        Some(s) if s >= 60 => format!("{} min {} s", s / 60, s % 60),
        Some(s) => format!("{s} s"),
        None => "unknown".to_string(),
    }
}

/// The note about a missed call: when, to which number and line, how long
/// it rang, the hangup cause, what the call flow decided; and the marker.
pub fn missed_note(call: &proto::Call) -> String {
    let mut lines = vec![format!(
        "Missed call from {} at {}.",
        shown(other_party(call)),
        when(call.initialized_at_ms)
    )];
    let mut to = format!("Called: +{}", call.to);
    let people: Vec<&str> = call
        .users
        .iter()
        .map(String::as_str)
        .filter(|u| *u != "voicemail")
        .collect();
    if !people.is_empty() {
        to.push_str(&format!(" (line: {})", people.join(", ")));
    }
    lines.push(to);
    lines.push(format!("Rang: {}", seconds(call.duration_waiting_secs)));
    if call.users.iter().any(|u| u == "voicemail") {
        lines.push("Taken by the voicemail.".to_string());
    }
    lines.push(format!(
        "Hangup cause: {}",
        if call.cause.is_empty() {
            "none given"
        } else {
            &call.cause
        }
    ));
    if let Some(decision) = &call.decision
        && decision.rule_kind() != RuleKind::None
        && decision.rule_kind() != RuleKind::Unspecified
        && !decision.explanation.is_empty()
    {
        lines.push(format!("Decided: {}", decision.explanation));
    }
    if let Some(menu) = &call.menu_decision {
        let flow = menu.flow.as_ref();
        match flow {
            Some(f) if !f.menu.is_empty() => lines.push(format!(
                "Menu {}: option {}{}",
                f.menu,
                f.option,
                if menu.explanation.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", menu.explanation)
                }
            )),
            _ if !menu.explanation.is_empty() => lines.push(format!("Menu: {}", menu.explanation)),
            _ => {}
        }
    }
    lines.push(marker(&call.call_id));
    lines.join("\n")
}

/// The note about reaching the caller: who talked with them, how long.
pub fn reached_note(call: &proto::Call) -> String {
    let who = if call.users.is_empty() {
        if call.answering_number.is_empty() {
            "someone".to_string()
        } else {
            format!("+{}", call.answering_number)
        }
    } else {
        call.users.join(", ")
    };
    let direction = match call.direction() {
        Direction::Out => "called back",
        _ => "called again and was answered",
    };
    [
        format!(
            "Reached: {} {} at {}; {} talked with them for {}.",
            shown(other_party(call)),
            direction,
            when(call.start_at_ms),
            who,
            seconds(call.duration_talking_secs)
        ),
        marker(&call.call_id),
    ]
    .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(direction: Direction, done: bool, start_at_ms: i64, cause: &str) -> proto::CallEvent {
        proto::CallEvent {
            kind: EventKind::Hangup as i32,
            call_id: "c1".into(),
            call: Some(proto::Call {
                call_id: "c1".into(),
                direction: direction as i32,
                from: "492111234567".into(),
                to: "4921199999".into(),
                state: CallState::Hangup as i32,
                done,
                cause: cause.into(),
                start_at_ms,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn with_decision(
        mut event: proto::CallEvent,
        action: Action,
        kind: RuleKind,
    ) -> proto::CallEvent {
        event.call.as_mut().unwrap().decision = Some(proto::Decision {
            action: action as i32,
            rule_kind: kind as i32,
            explanation: "blocked by entry 49211*".into(),
            ..Default::default()
        });
        event
    }

    #[test]
    fn missed_reached_and_the_calls_that_are_neither() {
        let missed = Some(Concern::Missed {
            number: "492111234567".into(),
        });
        let all = Include::default();
        assert_eq!(
            classify(&ended(Direction::In, false, 0, "cancel"), all),
            missed
        );
        // Voicemail took it: not done, so missed.
        assert_eq!(
            classify(&ended(Direction::In, false, 1, "normalClearing"), all),
            missed
        );
        assert_eq!(
            classify(&ended(Direction::In, false, 0, "forwarded"), all),
            None
        );
        assert_eq!(
            classify(&ended(Direction::In, true, 5, "normalClearing"), all),
            Some(Concern::Reached {
                number: "492111234567".into()
            })
        );
        assert_eq!(
            classify(&ended(Direction::Out, true, 5, "normalClearing"), all),
            Some(Concern::Reached {
                number: "4921199999".into()
            })
        );
        // An outbound call nobody took reaches nobody.
        assert_eq!(
            classify(&ended(Direction::Out, true, 0, "cancel"), all),
            None
        );
        let mut answer = ended(Direction::In, false, 0, "");
        answer.kind = EventKind::Answer as i32;
        assert_eq!(classify(&answer, all), None);
    }

    #[test]
    fn blocked_and_anonymous_calls_only_when_included() {
        let blocked = with_decision(
            ended(Direction::In, false, 0, "rejected"),
            Action::Reject,
            RuleKind::Block,
        );
        assert_eq!(classify(&blocked, Include::default()), None);
        assert!(matches!(
            classify(
                &blocked,
                Include {
                    blocked: true,
                    anonymous: false
                }
            ),
            Some(Concern::Missed { .. })
        ));
        // A flow's hangup is not the block list: missed.
        let flow = with_decision(
            ended(Direction::In, false, 0, "normalClearing"),
            Action::Hangup,
            RuleKind::Flow,
        );
        assert!(matches!(
            classify(&flow, Include::default()),
            Some(Concern::Missed { .. })
        ));
        let mut anonymous = ended(Direction::In, false, 0, "cancel");
        anonymous.call.as_mut().unwrap().from = "anonymous".into();
        assert_eq!(classify(&anonymous, Include::default()), None);
        assert_eq!(
            classify(
                &anonymous,
                Include {
                    blocked: false,
                    anonymous: true
                }
            ),
            Some(Concern::Missed {
                number: "anonymous".into()
            })
        );
    }

    #[test]
    fn the_missed_note_says_when_where_how_long_why_and_carries_the_marker() {
        let mut event = with_decision(
            ended(Direction::In, false, 0, "cancel"),
            Action::Voicemail,
            RuleKind::Flow,
        );
        let call = event.call.as_mut().unwrap();
        call.initialized_at_ms = 1_764_750_000_000;
        call.duration_waiting_secs = Some(75);
        call.users = vec!["Support Team".into()];
        call.decision.as_mut().unwrap().explanation = "flow rule after-hours: voicemail".into();
        let note = missed_note(call);
        assert!(
            note.contains("Missed call from +492111234567 at 2025-12-03 08:20:00 UTC"),
            "{note}"
        );
        assert!(
            note.contains("Called: +4921199999 (line: Support Team)"),
            "{note}"
        );
        assert!(note.contains("Rang: 1 min 15 s"), "{note}");
        assert!(note.contains("Hangup cause: cancel"), "{note}");
        assert!(
            note.contains("Decided: flow rule after-hours: voicemail"),
            "{note}"
        );
        assert!(note.ends_with("sipgate call id: c1"), "{note}");
    }
}
