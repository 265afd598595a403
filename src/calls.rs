//! The call log: one [`CallRecord`] per sipgate `callId`, advanced by
//! [`apply`] for every event. Pure (no I/O), so every transition is tested here.
//!
//! The rules follow Zammad's `Cti::Log.process` (newCall -> answer -> hangup,
//! the `done` flag, whole-second durations) and go beyond it where Zammad
//! fails: events for unknown calls create the row, late or repeated events
//! never reopen an ended call, and out-of-order newCalls only fill gaps.

use serde::{Deserialize, Serialize};

use crate::decide::{Action, Decision};
use crate::sipgate::event::{Direction, Event, EventKind};

/// Zammad's call states, in the only order a call moves through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CallState {
    NewCall,
    Answer,
    Hangup,
}

impl CallState {
    /// Zammad's name for the state (`cti_logs.state`).
    pub fn as_str(self) -> &'static str {
        match self {
            CallState::NewCall => "newCall",
            CallState::Answer => "answer",
            CallState::Hangup => "hangup",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "newCall" => Some(CallState::NewCall),
            "answer" => Some(CallState::Answer),
            "hangup" => Some(CallState::Hangup),
            _ => None,
        }
    }
}

/// One row of the call log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    pub call_id: String,
    pub direction: Option<Direction>,
    pub from: String,
    pub to: String,
    pub state: CallState,
    /// Zammad's `done`: false for inbound calls nobody took (missed, voicemail).
    pub done: bool,
    /// The hangup cause verbatim ("rejected"/"timeout" for synthetic ends).
    pub cause: String,
    /// `user[]` of the newCall, replaced by the answering user.
    pub users: Vec<String>,
    pub answering_number: String,
    pub initialized_at_ms: i64,
    pub start_at_ms: Option<i64>,
    pub end_at_ms: Option<i64>,
    pub duration_waiting_secs: Option<i64>,
    pub duration_talking_secs: Option<i64>,
    pub orig_call_id: String,
    pub xcid: String,
    /// The callId of the first leg of this call flow (forward, voicemail), "" if this is it.
    pub first_leg_call_id: String,
    pub diversion: String,
    /// The decision sent to sipgate for this call's newCall.
    pub decision: Option<Decision>,
    /// The decision of the last dtmf push that answered a call-flow menu
    /// prompt the call was offered: the menu, the option taken, what followed.
    #[serde(default)]
    pub menu_decision: Option<Decision>,
    /// True when the call was ended by the sidecar (reject, sweep), not by sipgate.
    pub ended_synthetically: bool,
    pub updated_at_ms: i64,
}

/// Zammad's `to_comment == 'voicemail'`: the leg was taken by the voicemail.
const VOICEMAIL: &str = "voicemail";

/// The call after `event`, received at `at_ms`, given the stored row `prev`.
/// `decision` is recorded when the event is a newCall.
pub fn apply(
    prev: Option<&CallRecord>,
    event: &Event,
    decision: Option<&Decision>,
    at_ms: i64,
    synthetic: bool,
) -> CallRecord {
    let mut call = match prev {
        Some(prev) => prev.clone(),
        None => created(event, at_ms),
    };
    call.updated_at_ms = at_ms;

    if event.kind == EventKind::NewCall {
        fill_missing(&mut call, event, decision);
    }
    // Only answers to a prompt this call was offered count as its menu
    // progress: a push with forged state must not reset it.
    if event.kind == EventKind::Dtmf
        && let Some(decision) =
            decision.filter(|d| d.flow.as_ref().is_some_and(|f| f.answered_step > 0))
    {
        call.menu_decision = Some(decision.clone());
    }
    // An ended call stays ended: Zammad ignores answer-after-hangup, and a
    // second hangup must not flip `done` (Zammad's bug, reference §4.4).
    if call.state == CallState::Hangup {
        return call;
    }
    if let Some(direction) = event.direction {
        call.direction = Some(direction);
    }
    match event.kind {
        EventKind::NewCall | EventKind::Dtmf => {}
        EventKind::Answer => answer(&mut call, event, at_ms),
        EventKind::Hangup => hangup(&mut call, event, at_ms, synthetic),
    }
    // Zammad's inbound rules never apply to outbound calls.
    if call.direction == Some(Direction::Out) {
        call.done = true;
    }
    call
}

/// The row for a call seen for the first time, as a newCall at `at_ms` makes it.
/// Answer and hangup for unknown calls start from here too.
fn created(event: &Event, at_ms: i64) -> CallRecord {
    CallRecord {
        call_id: event.call_id.clone(),
        direction: event.direction,
        from: event.from.clone(),
        to: event.to.clone(),
        state: CallState::NewCall,
        done: event.direction != Some(Direction::In),
        cause: String::new(),
        users: if event.kind == EventKind::NewCall {
            event.users.clone()
        } else {
            Vec::new()
        },
        answering_number: String::new(),
        initialized_at_ms: at_ms,
        start_at_ms: None,
        end_at_ms: None,
        duration_waiting_secs: None,
        duration_talking_secs: None,
        orig_call_id: event.orig_call_id.clone(),
        xcid: event.xcid.clone(),
        first_leg_call_id: first_leg(&event.call_id, &event.orig_call_id),
        diversion: event.diversion.clone(),
        decision: None,
        menu_decision: None,
        ended_synthetically: false,
        updated_at_ms: at_ms,
    }
}

/// A newCall for a call whose row an earlier answer/hangup created (repeats
/// never get here: the writer drops them). Its numbers and leg ids are
/// authoritative, as Zammad only takes `from`/`to` from a newCall; state and
/// times stay as they are.
fn fill_missing(call: &mut CallRecord, event: &Event, decision: Option<&Decision>) {
    fn fill(field: &mut String, value: &str) {
        if !value.is_empty() {
            *field = value.to_owned();
        }
    }
    fill(&mut call.from, &event.from);
    fill(&mut call.to, &event.to);
    fill(&mut call.orig_call_id, &event.orig_call_id);
    fill(&mut call.xcid, &event.xcid);
    fill(&mut call.diversion, &event.diversion);
    if call.users.is_empty() {
        call.users = event.users.clone();
    }
    if call.direction.is_none() {
        call.direction = event.direction;
    }
    if call.decision.is_none() {
        call.decision = decision.cloned();
    }
    call.first_leg_call_id = first_leg(&call.call_id, &call.orig_call_id);
}

fn answer(call: &mut CallRecord, event: &Event, at_ms: i64) {
    // A repeated answer keeps the first one (Zammad would reset start_at).
    if call.state == CallState::Answer {
        return;
    }
    call.state = CallState::Answer;
    call.start_at_ms = Some(at_ms);
    call.duration_waiting_secs = Some(whole_secs_between(call.initialized_at_ms, at_ms));
    // Zammad's `to_comment = user if user`: an answer carrying `user`, even
    // empty, replaces who the call is with.
    if let Some(user) = event.users.first() {
        call.users = if user.is_empty() {
            Vec::new()
        } else {
            vec![user.clone()]
        };
    }
    if !event.answering_number.is_empty() {
        call.answering_number = event.answering_number.clone();
    }
    call.cause = event.cause.clone();
    call.done = true;
}

fn hangup(call: &mut CallRecord, event: &Event, at_ms: i64, synthetic: bool) {
    let inbound = event.direction.or(call.direction) == Some(Direction::In);
    let missed = call.state == CallState::NewCall && event.cause != "forwarded";
    let voicemail = call.users.len() == 1 && call.users[0] == VOICEMAIL;
    call.done = !(inbound && (missed || voicemail));

    call.end_at_ms = Some(at_ms);
    if let Some(start) = call.start_at_ms {
        call.duration_talking_secs = Some(whole_secs_between(start, at_ms));
    } else if call.duration_waiting_secs.is_none() {
        call.duration_waiting_secs = Some(whole_secs_between(call.initialized_at_ms, at_ms));
    }
    if !event.answering_number.is_empty() {
        call.answering_number = event.answering_number.clone();
    }
    call.state = CallState::Hangup;
    call.cause = event.cause.clone();
    call.ended_synthetically = synthetic;
}

/// Whole seconds as Zammad computes them (`end.to_i - start.to_i`); never
/// negative, so a clock step back cannot produce a nonsense duration.
fn whole_secs_between(start_ms: i64, end_ms: i64) -> i64 {
    (end_ms.div_euclid(1000) - start_ms.div_euclid(1000)).max(0)
}

fn first_leg(call_id: &str, orig_call_id: &str) -> String {
    if orig_call_id.is_empty() || orig_call_id == call_id {
        String::new()
    } else {
        orig_call_id.to_owned()
    }
}

/// The events sipgate sends at most once per call, so a repeat is a
/// duplicate (a retried webhook); dtmf may repeat within a call.
pub const DEDUPED_KINDS: [EventKind; 3] =
    [EventKind::NewCall, EventKind::Answer, EventKind::Hangup];

/// The key under which the one event of `kind` for `call_id` is stored
/// (`"newCall:<callId>"`); `None` for kinds that may repeat.
pub fn dedupe_key(kind: EventKind, call_id: &str) -> Option<String> {
    DEDUPED_KINDS
        .contains(&kind)
        .then(|| format!("{}:{call_id}", kind.as_str()))
}

/// A hangup the sidecar records itself because sipgate will send none, and
/// the call it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticEnd {
    pub hangup: Event,
    /// The call after `hangup`.
    pub call: CallRecord,
}

/// A reject ends the call: sipgate sends no hangup after a Reject, so a
/// newCall whose `decision` rejected it is followed by a synthetic hangup
/// (cause "rejected") at `at_ms`, unless the call has ended already.
/// `call` is the call after `event`.
pub fn end_if_rejected(
    event: &Event,
    decision: Option<&Decision>,
    call: &CallRecord,
    at_ms: i64,
) -> Option<SyntheticEnd> {
    let rejected = decision.is_some_and(|d| d.action == Action::Reject);
    (event.kind == EventKind::NewCall && rejected && call.state != CallState::Hangup)
        .then(|| end_synthetically(call, "rejected", at_ms))
}

/// Whether `event`, a dtmf push with `decision`, answers a menu prompt the
/// call `prev` has answered already: a replayed push, which is answered
/// `invalid` and not stored again.
pub fn answers_a_prompt_again(
    prev: Option<&CallRecord>,
    event: &Event,
    decision: Option<&Decision>,
) -> bool {
    let step = |d: Option<&Decision>| {
        d.and_then(|d| d.flow.as_ref())
            .map_or(0, |f| f.answered_step)
    };
    let answers = step(decision);
    event.kind == EventKind::Dtmf
        && answers > 0
        && step(prev.and_then(|c| c.menu_decision.as_ref())) >= answers
}

/// A call is stale when it has not ended and nothing has happened to it
/// since `cutoff_ms`: sipgate lost its hangup.
pub fn is_stale(call: &CallRecord, cutoff_ms: i64) -> bool {
    call.state != CallState::Hangup
        && call.initialized_at_ms < cutoff_ms
        && call.updated_at_ms < cutoff_ms
}

/// The sweep ends stale calls: a synthetic hangup (cause "timeout") at
/// `now_ms` for each call of `open` that is stale at `cutoff_ms`, in order.
pub fn end_stale(open: &[CallRecord], cutoff_ms: i64, now_ms: i64) -> Vec<SyntheticEnd> {
    open.iter()
        .filter(|call| is_stale(call, cutoff_ms))
        .map(|call| end_synthetically(call, "timeout", now_ms))
        .collect()
}

fn end_synthetically(call: &CallRecord, cause: &str, at_ms: i64) -> SyntheticEnd {
    let hangup = synthetic_hangup(call, cause);
    let call = apply(Some(call), &hangup, None, at_ms, true);
    SyntheticEnd { hangup, call }
}

/// The hangup for `call` as sipgate would have sent it, with `cause`.
fn synthetic_hangup(call: &CallRecord, cause: &str) -> Event {
    Event {
        direction: call.direction,
        from: call.from.clone(),
        to: call.to.clone(),
        orig_call_id: call.orig_call_id.clone(),
        xcid: call.xcid.clone(),
        cause: cause.to_owned(),
        diversion: call.diversion.clone(),
        ..Event::new(EventKind::Hangup, call.call_id.clone())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A bare event of `kind` for `call_id`; tests set what they need.
    pub(crate) fn event(kind: EventKind, call_id: &str, direction: Option<Direction>) -> Event {
        Event {
            direction,
            ..Event::new(kind, call_id)
        }
    }

    pub(crate) fn dtmf(call_id: &str, digits: &str) -> Event {
        Event {
            dtmf: digits.to_owned(),
            ..Event::new(EventKind::Dtmf, call_id)
        }
    }

    /// The decision of a block-list match.
    pub(crate) fn reject() -> Decision {
        Decision {
            action: Action::Reject,
            caller_id: None,
            rule: crate::decide::Rule::Block {
                index: 0,
                pattern: "4930*".into(),
                note: "spam".into(),
            },
            flow: None,
        }
    }

    pub(crate) fn new_call(call_id: &str, direction: Direction, users: &[&str]) -> Event {
        Event {
            from: "492111234567".into(),
            to: "4915791234567".into(),
            orig_call_id: call_id.into(),
            xcid: "5aada1e696b94cec".into(),
            users: users.iter().map(|u| u.to_string()).collect(),
            ..event(EventKind::NewCall, call_id, Some(direction))
        }
    }

    fn answer_by(call_id: &str, direction: Direction, user: Option<&str>) -> Event {
        Event {
            users: user.map(|u| vec![u.to_owned()]).unwrap_or_default(),
            answering_number: "21199999999".into(),
            ..event(EventKind::Answer, call_id, Some(direction))
        }
    }

    fn hangup_with(call_id: &str, direction: Direction, cause: &str) -> Event {
        Event {
            cause: cause.into(),
            ..event(EventKind::Hangup, call_id, Some(direction))
        }
    }

    /// Applies `events` in order, one second apart starting at t = 1000 s.
    fn run(events: &[Event]) -> CallRecord {
        let mut call: Option<CallRecord> = None;
        for (i, e) in events.iter().enumerate() {
            let at = 1_000_000 + i as i64 * 1000;
            call = Some(apply(call.as_ref(), e, None, at, false));
        }
        call.expect("at least one event")
    }

    #[test]
    fn state_names_are_zammads() {
        assert_eq!(CallState::NewCall.as_str(), "newCall");
        assert_eq!(CallState::Answer.as_str(), "answer");
        assert_eq!(CallState::Hangup.as_str(), "hangup");
        assert_eq!(
            serde_json::to_string(&CallState::NewCall).unwrap(),
            "\"newCall\""
        );
        for s in [CallState::NewCall, CallState::Answer, CallState::Hangup] {
            assert_eq!(CallState::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn inbound_new_call_is_not_done_and_records_decision() {
        let d = Decision::accept();
        let c = apply(
            None,
            &new_call("A", Direction::In, &["Alice", "Bob"]),
            Some(&d),
            5_500,
            false,
        );
        assert_eq!(c.state, CallState::NewCall);
        assert!(!c.done);
        assert_eq!(c.initialized_at_ms, 5_500);
        assert_eq!(c.users, ["Alice", "Bob"]);
        assert_eq!(c.decision, Some(d));
        assert_eq!(
            c.first_leg_call_id, "",
            "origCallId == callId is no leg link"
        );
        assert_eq!(c.from, "492111234567");
    }

    #[test]
    fn inbound_answered_by_a_person_is_done_with_durations() {
        let mut c = apply(
            None,
            &new_call("A", Direction::In, &["Alice", "Bob"]),
            None,
            10_900,
            false,
        );
        c = apply(
            Some(&c),
            &answer_by("A", Direction::In, Some("Bob")),
            None,
            13_100,
            false,
        );
        assert_eq!(c.state, CallState::Answer);
        assert!(c.done);
        assert_eq!(c.users, ["Bob"]);
        assert_eq!(c.start_at_ms, Some(13_100));
        // Zammad: 13 - 10, whole seconds of each timestamp.
        assert_eq!(c.duration_waiting_secs, Some(3));
        assert_eq!(c.answering_number, "21199999999");
        c = apply(
            Some(&c),
            &hangup_with("A", Direction::In, "normalClearing"),
            None,
            73_000,
            false,
        );
        assert_eq!(c.state, CallState::Hangup);
        assert!(c.done);
        assert_eq!(c.cause, "normalClearing");
        assert_eq!(c.end_at_ms, Some(73_000));
        assert_eq!(c.duration_talking_secs, Some(60));
        assert_eq!(c.duration_waiting_secs, Some(3));
        assert!(!c.ended_synthetically);
    }

    #[test]
    fn inbound_to_voicemail_links_legs_and_stays_not_done() {
        // Leg A rings a person, then is forwarded to the voicemail.
        let a = run(&[
            new_call("A", Direction::In, &["Oliver"]),
            hangup_with("A", Direction::In, "forwarded"),
        ]);
        assert!(a.done, "a forwarded leg is done, as in Zammad");
        assert_eq!(a.duration_waiting_secs, Some(1));
        // Leg B: the voicemail leg.
        let mut b_new = new_call("B", Direction::In, &["voicemail"]);
        b_new.orig_call_id = "A".into();
        b_new.diversion = "4920312345".into();
        let b = run(&[
            b_new,
            answer_by("B", Direction::In, Some("voicemail")),
            hangup_with("B", Direction::In, "normalClearing"),
        ]);
        assert_eq!(b.first_leg_call_id, "A");
        assert_eq!(b.xcid, a.xcid);
        assert_eq!(b.diversion, "4920312345");
        assert_eq!(b.state, CallState::Hangup);
        assert!(!b.done, "a voicemail leg stays not done");
        assert_eq!(b.duration_talking_secs, Some(1));
    }

    #[test]
    fn voicemail_leg_answered_without_user_keeps_zammads_result() {
        let mut b_new = new_call("B", Direction::In, &["voicemail"]);
        b_new.orig_call_id = "A".into();
        let b = run(&[
            b_new.clone(),
            hangup_with("B", Direction::In, "normalClearing"),
        ]);
        assert!(!b.done, "voicemail leg never answered: not done");
        // sipgate #70: an empty `user` overwrites to_comment, so Zammad says done.
        let b = run(&[
            b_new,
            answer_by("B", Direction::In, Some("")),
            hangup_with("B", Direction::In, "normalClearing"),
        ]);
        assert!(b.done);
        assert!(b.users.is_empty());
    }

    #[test]
    fn answer_without_user_keeps_the_rung_users() {
        let c = run(&[
            new_call("A", Direction::In, &["voicemail"]),
            answer_by("A", Direction::In, None),
            hangup_with("A", Direction::In, "normalClearing"),
        ]);
        assert_eq!(c.users, ["voicemail"]);
        assert!(!c.done);
    }

    #[test]
    fn inbound_unanswered_is_missed() {
        for cause in [
            "cancel",
            "noAnswer",
            "busy",
            "normalClearing",
            "somethingNew",
        ] {
            let c = run(&[
                new_call("A", Direction::In, &["Alice"]),
                hangup_with("A", Direction::In, cause),
            ]);
            assert_eq!(c.state, CallState::Hangup);
            assert!(!c.done, "cause {cause}");
            assert_eq!(c.cause, cause, "cause is kept verbatim");
            assert_eq!(c.duration_waiting_secs, Some(1));
            assert_eq!(c.duration_talking_secs, None);
            assert_eq!(c.start_at_ms, None);
        }
    }

    #[test]
    fn outbound_calls_are_always_done() {
        let c = run(&[new_call("O", Direction::Out, &["user 1"])]);
        assert!(c.done);
        let c = run(&[
            new_call("O", Direction::Out, &["user 1"]),
            hangup_with("O", Direction::Out, "busy"),
        ]);
        assert!(c.done);
        assert_eq!(c.cause, "busy");
        let c = run(&[
            new_call("O", Direction::Out, &["user 1"]),
            answer_by("O", Direction::Out, Some("voicemail")),
            hangup_with("O", Direction::Out, "normalClearing"),
        ]);
        assert!(c.done);
    }

    #[test]
    fn rejected_call_ends_with_synthetic_hangup() {
        let reject = reject();
        let new = new_call("R", Direction::In, &["Alice"]);
        let c = apply(None, &new, Some(&reject), 2_000, false);
        let SyntheticEnd { hangup: end, call } =
            end_if_rejected(&new, Some(&reject), &c, 2_000).expect("a reject ends the call");
        assert_eq!(end.kind, EventKind::Hangup);
        assert_eq!(end.call_id, "R");
        assert_eq!(end.direction, Some(Direction::In));
        assert_eq!(end.from, c.from);
        assert_eq!(end.to, c.to);
        assert!(end.raw.is_empty());
        assert_eq!(call, apply(Some(&c), &end, None, 2_000, true));
        let c = call;
        assert_eq!(c.state, CallState::Hangup);
        assert!(!c.done, "Zammad shows a rejected call as not done");
        assert_eq!(c.cause, "rejected");
        assert!(c.ended_synthetically);
        assert_eq!(c.decision, Some(reject));
        assert_eq!(c.duration_waiting_secs, Some(0));
    }

    #[test]
    fn only_a_rejected_new_call_not_ended_yet_is_ended() {
        let new = new_call("R", Direction::In, &[]);
        let accept = Decision::accept();
        let open = apply(None, &new, Some(&accept), 2_000, false);
        assert_eq!(end_if_rejected(&new, Some(&accept), &open, 2_000), None);
        assert_eq!(end_if_rejected(&new, None, &open, 2_000), None);
        // A late newCall of a call that has ended already.
        let ended = apply(
            None,
            &hangup_with("R", Direction::In, "cancel"),
            None,
            1_000,
            false,
        );
        let late = apply(Some(&ended), &new, Some(&reject()), 2_000, false);
        assert_eq!(end_if_rejected(&new, Some(&reject()), &late, 2_000), None);
        // Only a newCall carries the decision.
        let answer = answer_by("R", Direction::In, None);
        assert_eq!(
            end_if_rejected(&answer, Some(&reject()), &open, 2_000),
            None
        );
    }

    #[test]
    fn sweep_ends_open_calls_quiet_since_the_cutoff() {
        let at = |call_id: &str, initialized: i64, updated: i64| CallRecord {
            initialized_at_ms: initialized,
            updated_at_ms: updated,
            ..apply(None, &new_call(call_id, Direction::In, &[]), None, 0, false)
        };
        let quiet = at("quiet", 1_000, 5_000);
        let recent_event = at("recent", 1_000, 50_000);
        let recent_call = at("young", 50_000, 50_000);
        let ended = apply(
            Some(&quiet),
            &hangup_with("quiet", Direction::In, "cancel"),
            None,
            6_000,
            false,
        );
        assert!(is_stale(&quiet, 10_000));
        assert!(!is_stale(&recent_event, 10_000));
        assert!(!is_stale(&recent_call, 10_000));
        assert!(!is_stale(&ended, 10_000));

        let ends = end_stale(
            &[quiet.clone(), recent_event, recent_call, ended],
            10_000,
            100_000,
        );
        assert_eq!(ends.len(), 1);
        let SyntheticEnd { hangup, call } = &ends[0];
        assert_eq!(hangup.call_id, "quiet");
        assert_eq!(hangup.cause, "timeout");
        assert_eq!(call.state, CallState::Hangup);
        assert_eq!(call.cause, "timeout");
        assert_eq!(call.end_at_ms, Some(100_000));
        assert!(call.ended_synthetically);
        assert!(!call.done, "an inbound call nobody took stays missed");
    }

    #[test]
    fn only_once_per_call_events_have_a_dedupe_key() {
        assert_eq!(
            dedupe_key(EventKind::NewCall, "c1").as_deref(),
            Some("newCall:c1")
        );
        assert_eq!(
            dedupe_key(EventKind::Answer, "c1").as_deref(),
            Some("answer:c1")
        );
        assert_eq!(
            dedupe_key(EventKind::Hangup, "c1").as_deref(),
            Some("hangup:c1")
        );
        assert_eq!(dedupe_key(EventKind::Dtmf, "c1"), None);
    }

    #[test]
    fn duplicate_events_change_nothing_but_updated_at() {
        let answered = run(&[
            new_call("A", Direction::In, &["Alice"]),
            answer_by("A", Direction::In, Some("Alice")),
        ]);
        let again = apply(
            Some(&answered),
            &answer_by("A", Direction::In, Some("Bob")),
            None,
            9_999_000,
            false,
        );
        assert_eq!(again.start_at_ms, answered.start_at_ms);
        assert_eq!(again.users, ["Alice"]);
        assert_eq!(again.updated_at_ms, 9_999_000);

        let ended = apply(
            Some(&answered),
            &hangup_with("A", Direction::In, "normalClearing"),
            None,
            1_010_000,
            false,
        );
        let twice = apply(
            Some(&ended),
            &hangup_with("A", Direction::In, "cancel"),
            None,
            1_020_000,
            false,
        );
        assert_eq!(
            CallRecord {
                updated_at_ms: ended.updated_at_ms,
                ..twice.clone()
            },
            ended
        );

        let dup_new = apply(
            Some(&answered),
            &new_call("A", Direction::In, &["Zed"]),
            Some(&Decision::accept()),
            1_030_000,
            false,
        );
        assert_eq!(dup_new.state, CallState::Answer);
        assert_eq!(dup_new.users, ["Alice"]);
        assert_eq!(dup_new.initialized_at_ms, answered.initialized_at_ms);
    }

    #[test]
    fn second_hangup_on_a_missed_call_does_not_flip_done() {
        let c = run(&[
            new_call("A", Direction::In, &[]),
            hangup_with("A", Direction::In, "cancel"),
            hangup_with("A", Direction::In, "cancel"),
        ]);
        assert!(!c.done, "Zammad would say done here; we keep it missed");
        assert_eq!(c.end_at_ms, Some(1_001_000));
    }

    #[test]
    fn answer_for_unknown_call_creates_the_row() {
        let mut e = answer_by("U", Direction::In, Some("Alice"));
        e.from = "491".into();
        e.to = "492".into();
        let c = apply(None, &e, None, 7_000, false);
        assert_eq!(c.state, CallState::Answer);
        assert_eq!(c.initialized_at_ms, 7_000);
        assert_eq!(c.start_at_ms, Some(7_000));
        assert_eq!(c.duration_waiting_secs, Some(0));
        assert_eq!((c.from.as_str(), c.to.as_str()), ("491", "492"));
        assert_eq!(c.users, ["Alice"]);
        assert!(c.done);
    }

    #[test]
    fn hangup_for_unknown_call_creates_an_ended_row() {
        let c = apply(
            None,
            &hangup_with("U", Direction::In, "cancel"),
            None,
            7_000,
            false,
        );
        assert_eq!(c.state, CallState::Hangup);
        assert!(!c.done, "an inbound call nobody answered is missed");
        assert_eq!(c.duration_waiting_secs, Some(0));
        let c = apply(
            None,
            &event(EventKind::Hangup, "U", None),
            None,
            7_000,
            false,
        );
        assert_eq!(c.state, CallState::Hangup);
        assert!(
            c.done,
            "without a direction Zammad's inbound rule cannot apply"
        );
    }

    #[test]
    fn hangup_before_answer_is_final() {
        let c = run(&[
            new_call("A", Direction::In, &["Alice"]),
            hangup_with("A", Direction::In, "normalClearing"),
            answer_by("A", Direction::In, Some("Alice")),
        ]);
        assert_eq!(c.state, CallState::Hangup);
        assert!(!c.done);
        assert_eq!(c.start_at_ms, None);
        assert_eq!(c.users, ["Alice"]);
    }

    #[test]
    fn new_call_after_hangup_fills_gaps_but_keeps_the_end() {
        let d = Decision::accept();
        let ended = apply(
            None,
            &hangup_with("L", Direction::In, "cancel"),
            None,
            3_000,
            false,
        );
        let mut late = new_call("L", Direction::In, &["Alice"]);
        late.orig_call_id = "K".into();
        let c = apply(Some(&ended), &late, Some(&d), 4_000, false);
        assert_eq!(c.state, CallState::Hangup);
        assert_eq!(c.done, ended.done);
        assert_eq!(c.end_at_ms, Some(3_000));
        assert_eq!(c.from, "492111234567");
        assert_eq!(c.users, ["Alice"]);
        assert_eq!(c.orig_call_id, "K");
        assert_eq!(c.first_leg_call_id, "K");
        assert_eq!(c.xcid, "5aada1e696b94cec");
        assert_eq!(c.decision, Some(d));
        assert_eq!(c.updated_at_ms, 4_000);
    }

    #[test]
    fn new_call_after_answer_does_not_move_state_back() {
        let c = run(&[
            answer_by("A", Direction::In, None),
            new_call("A", Direction::In, &["Alice"]),
            hangup_with("A", Direction::In, "normalClearing"),
        ]);
        assert_eq!(c.state, CallState::Hangup);
        assert!(c.done, "it was answered");
        assert_eq!(c.users, ["Alice"]);
        assert_eq!(c.duration_talking_secs, Some(2));
    }

    #[test]
    fn dtmf_changes_only_updated_at() {
        let c = run(&[new_call("A", Direction::In, &["Alice"])]);
        let mut d = event(EventKind::Dtmf, "A", None);
        d.dtmf = "1".into();
        let after = apply(Some(&c), &d, None, 5_000_000, false);
        assert_eq!(after.updated_at_ms, 5_000_000);
        assert_eq!(
            CallRecord {
                updated_at_ms: c.updated_at_ms,
                ..after
            },
            c
        );
    }

    #[test]
    fn event_direction_wins_else_stored() {
        let c = run(&[
            new_call("A", Direction::In, &[]),
            event(EventKind::Hangup, "A", None),
        ]);
        assert_eq!(c.direction, Some(Direction::In));
        assert!(!c.done, "stored direction applies the inbound rule");
    }

    #[test]
    fn durations_use_whole_seconds_of_each_timestamp() {
        assert_eq!(whole_secs_between(10_999, 11_000), 1);
        assert_eq!(whole_secs_between(10_000, 10_999), 0);
        assert_eq!(whole_secs_between(20_000, 10_000), 0);
    }

    fn arb_event() -> impl Strategy<Value = Event> {
        (
            prop_oneof![
                Just(EventKind::NewCall),
                Just(EventKind::Answer),
                Just(EventKind::Hangup),
                Just(EventKind::Dtmf),
            ],
            prop_oneof![
                Just(None),
                Just(Some(Direction::In)),
                Just(Some(Direction::Out))
            ],
            prop_oneof![Just(""), Just("voicemail"), Just("Alice")],
            prop_oneof![
                Just(""),
                Just("forwarded"),
                Just("cancel"),
                Just("normalClearing")
            ],
        )
            .prop_map(|(kind, direction, user, cause)| Event {
                users: if user.is_empty() {
                    vec![]
                } else {
                    vec![user.to_owned()]
                },
                cause: cause.to_owned(),
                ..event(kind, "P", direction)
            })
    }

    proptest! {
        #[test]
        fn ended_calls_stay_ended_and_outbound_is_done(
            events in proptest::collection::vec(arb_event(), 1..12),
            steps in proptest::collection::vec(0i64..5_000, 12),
        ) {
            let mut call: Option<CallRecord> = None;
            let mut ended: Option<CallRecord> = None;
            let mut at = 1_000_000;
            for (e, step) in events.iter().zip(&steps) {
                at += step;
                let next = apply(call.as_ref(), e, None, at, false);
                if let Some(end) = &ended {
                    prop_assert_eq!(next.state, CallState::Hangup);
                    prop_assert_eq!(next.done, end.done);
                    prop_assert_eq!(next.end_at_ms, end.end_at_ms);
                    prop_assert_eq!(next.cause.as_str(), end.cause.as_str());
                    prop_assert_eq!(next.duration_waiting_secs, end.duration_waiting_secs);
                    prop_assert_eq!(next.duration_talking_secs, end.duration_talking_secs);
                }
                if next.direction == Some(Direction::Out) {
                    prop_assert!(next.done, "outbound call not done: {:?}", next);
                }
                prop_assert!(next.duration_waiting_secs.unwrap_or(0) >= 0);
                prop_assert!(next.duration_talking_secs.unwrap_or(0) >= 0);
                if next.state == CallState::Hangup && ended.is_none() {
                    ended = Some(next.clone());
                }
                call = Some(next);
            }
        }
    }
}
