//! The decision core: *(event, settings, flows, now, menu state) →
//! decision*, and *decision → reply*. Pure: no I/O and no clock of its own
//! (the caller passes `now`), so every answer can be tested with the time
//! pinned and any replica gives the same one.
//!
//! A `newCall` inbound is checked against the block list, then the call
//! flows' rules (first match wins), else accepted; outbound it gets its
//! caller ID from the routing table. A `dtmf` push answers the menu its URL
//! names ([`crate::flows::menu`]). Answer and hangup need no decision.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

pub use crate::flows::menu::{MenuKey, MenuState};

use crate::{
    flows::{Flows, MAX_PROMPTS, Media, Step, Then},
    numbers::{self, pattern_matches},
    settings::Settings,
    sipgate::{
        event::{Direction, Event, EventKind},
        xml::{Element, Reply},
    },
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    Accept,
    Reject,
    SetCallerId,
    Forward,
    Voicemail,
    Hangup,
    Menu,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Accept => "accept",
            Action::Reject => "reject",
            Action::SetCallerId => "set_caller_id",
            Action::Forward => "forward",
            Action::Voicemail => "voicemail",
            Action::Hangup => "hangup",
            Action::Menu => "menu",
        }
    }
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
    /// A call-flow rule; `index` is its place in the document that decided
    /// (unknown for a dtmf push when the rule has since been removed).
    Flow {
        index: Option<usize>,
        name: String,
    },
}

/// An announcement played before the action, or a menu's prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Play {
    pub announcement: String,
    /// What sipgate fetches: an `https://` URL, or the content hash of a
    /// file the sidecar serves (`/announcements/{sha256}.wav`).
    pub url: String,
    pub sha256: String,
}

/// The menu a reply offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gather {
    pub menu: String,
    pub max_digits: u32,
    pub timeout_ms: u32,
    /// Which prompt of the call this is (1-based).
    pub step: u32,
}

/// What a call flow decided, beyond the action.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowDetail {
    /// Forward: the numbers rung (normalised digits).
    #[serde(default)]
    pub numbers: Vec<String>,
    /// Reject: `busy` or `rejected`.
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub play: Option<Play>,
    /// dtmf: the menu the push answered, and the option taken (its digits,
    /// `no_input` or `invalid`); the prompt number it answered.
    #[serde(default)]
    pub menu: String,
    #[serde(default)]
    pub option: String,
    #[serde(default)]
    pub answered_step: u32,
    /// Menu: what the reply's `<Gather>` asks.
    #[serde(default)]
    pub gather: Option<Gather>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub action: Action,
    /// Set for `SetCallerId`.
    pub caller_id: Option<String>,
    pub rule: Rule,
    /// Set when a call flow decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<Box<FlowDetail>>,
}

/// What the core decides from, besides the event.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub settings: &'a Settings,
    pub flows: Option<&'a Flows>,
    /// When the push arrived.
    pub now: Timestamp,
    pub country_code: &'a str,
}

impl Decision {
    /// No instruction: the call proceeds as sipgate routes it.
    pub fn accept() -> Self {
        Decision {
            action: Action::Accept,
            caller_id: None,
            rule: Rule::None,
            flow: None,
        }
    }

    /// The menu state a `dtmf` answer to this decision must carry, if the
    /// reply offers a menu.
    pub fn gather(&self) -> Option<&Gather> {
        self.flow.as_ref()?.gather.as_ref()
    }

    /// The flow rule's name, when a call flow decided.
    pub fn flow_rule(&self) -> Option<&str> {
        match &self.rule {
            Rule::Flow { name, .. } => Some(name),
            _ => None,
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
            (action, Rule::Flow { index, name }) => {
                let none = FlowDetail::default();
                let flow = self.flow.as_deref().unwrap_or(&none);
                let what = match action {
                    Action::Forward => format!("forwarded to {}", flow.numbers.join(", ")),
                    Action::Voicemail => "sent to the voicemail".to_string(),
                    Action::Reject => format!("rejected ({})", flow.reason),
                    Action::Hangup => "hung up".to_string(),
                    Action::Menu => format!(
                        "menu {} offered (prompt {} of at most {MAX_PROMPTS})",
                        flow.gather.as_ref().map_or("", |g| g.menu.as_str()),
                        flow.gather.as_ref().map_or(0, |g| g.step)
                    ),
                    Action::Accept | Action::SetCallerId => "proceeds unchanged".to_string(),
                };
                let play = flow
                    .play
                    .as_ref()
                    .filter(|_| *action != Action::Menu)
                    .map(|p| format!(" after announcement {}", p.announcement))
                    .unwrap_or_default();
                let choice = if flow.menu.is_empty() {
                    String::new()
                } else {
                    format!(" after option {} in menu {}", flow.option, flow.menu)
                };
                let position = index.map(|i| format!(" (#{})", i + 1)).unwrap_or_default();
                format!("{what}{play}{choice}: call flow rule {name}{position}")
            }
            _ => "no rule applies: the call proceeds unchanged".to_string(),
        }
    }
}

/// The number rules are matched against. One that is not a number as it
/// stands (a stray letter or symbol among the digits) is matched by its
/// digits, so no variant of a blocked number gets through; one without
/// digits is matched as written.
fn normalized_or_raw(number: &str, country_code: &str) -> String {
    numbers::normalize_number(number, country_code).unwrap_or_else(|_| {
        let folded = numbers::fold_number(number);
        let plus = folded.trim_start().starts_with('+');
        let digits: String = folded.chars().filter(char::is_ascii_digit).collect();
        let candidate = if plus { format!("+{digits}") } else { digits };
        numbers::normalize_number(&candidate, country_code)
            .unwrap_or_else(|_| number.trim().to_string())
    })
}

/// The decision for `event`: for a newCall always, for a dtmf push with
/// menu state in its URL (`menu`), `None` for everything else (no
/// instruction to give).
pub fn decide(event: &Event, inputs: &Inputs<'_>, menu: Option<&MenuState>) -> Option<Decision> {
    match (event.kind, event.direction) {
        (EventKind::NewCall, Some(direction)) => {
            Some(new_call(inputs, direction, &event.from, &event.to))
        }
        (EventKind::Dtmf, _) => menu.map(|state| dtmf(inputs, state, &event.dtmf, false)),
        _ => None,
    }
}

/// The decision for a newCall from `from` to `to`.
pub fn new_call(inputs: &Inputs<'_>, direction: Direction, from: &str, to: &str) -> Decision {
    let settings = inputs.settings;
    let country_code = inputs.country_code;
    match direction {
        Direction::In => {
            let caller = normalized_or_raw(from, country_code);
            if caller.is_empty() {
                return Decision::accept();
            }
            if let Some((index, b)) = settings
                .block_list
                .iter()
                .enumerate()
                .find(|(_, b)| pattern_matches(&b.pattern, &caller))
            {
                return Decision {
                    action: Action::Reject,
                    caller_id: None,
                    rule: Rule::Block {
                        index,
                        pattern: b.pattern.clone(),
                        note: b.note.clone(),
                    },
                    flow: None,
                };
            }
            let Some(flows) = inputs.flows else {
                return Decision::accept();
            };
            let callee = normalized_or_raw(to, country_code);
            match flows.rule_for(&caller, &callee, flows.local(inputs.now)) {
                Some((index, rule)) => {
                    let rule_ref = Rule::Flow {
                        index: Some(index),
                        name: rule.name.clone(),
                    };
                    from_then(flows, &rule.then, rule_ref, FlowDetail::default(), 0)
                }
                None => Decision::accept(),
            }
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
                    flow: None,
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
                    flow: None,
                },
                None => Decision::accept(),
            }
        }
    }
}

/// The answer to a dtmf push with `digits` for menu state `state`.
/// `replayed`: the push answers a prompt this call has answered already.
/// A state that was not offered (or replayed) gets the menu's `invalid`,
/// and never another menu (a menu there becomes a hangup).
pub fn dtmf(inputs: &Inputs<'_>, state: &MenuState, digits: &str, replayed: bool) -> Decision {
    let (step, rule_name) = match state {
        MenuState::Offered { step, rule, .. } => (*step, rule.clone()),
        MenuState::NotOffered { .. } => (0, String::new()),
    };
    let rule_index = inputs
        .flows
        .and_then(|f| f.rules.iter().position(|r| r.name == rule_name));
    let rule = Rule::Flow {
        index: rule_index,
        name: rule_name,
    };
    let hangup = |option: &str| Decision {
        action: Action::Hangup,
        caller_id: None,
        rule: rule.clone(),
        flow: Some(Box::new(FlowDetail {
            menu: state.menu().to_string(),
            option: option.to_string(),
            answered_step: step,
            ..FlowDetail::default()
        })),
    };
    let Some((flows, (_, menu))) = inputs
        .flows
        .and_then(|f| f.menu(state.menu()).map(|m| (f, m)))
    else {
        // The menu is gone (the document changed) or never existed.
        return hangup("invalid");
    };
    let offered = matches!(state, MenuState::Offered { .. }) && !replayed;
    let (option, then, may_offer_menu) = if !offered {
        ("invalid".to_string(), &menu.invalid, false)
    } else if digits.is_empty() {
        ("no_input".to_string(), &menu.no_input, true)
    } else {
        match menu.option(digits) {
            Some(then) => (digits.to_string(), then, true),
            None => ("invalid".to_string(), &menu.invalid, true),
        }
    };
    // Past the prompt cap, a menu gives way to no_input.
    let then = match then.step {
        Step::Menu(_) if may_offer_menu && step >= MAX_PROMPTS => &menu.no_input,
        _ => then,
    };
    if matches!(then.step, Step::Menu(_)) && !(may_offer_menu && step < MAX_PROMPTS) {
        return hangup(&option);
    }
    let detail = FlowDetail {
        menu: menu.name.clone(),
        option,
        answered_step: step,
        ..FlowDetail::default()
    };
    from_then(flows, then, rule, detail, step)
}

/// The decision that carries out `then`; `step` is the number of prompts
/// the call has had so far.
fn from_then(
    flows: &Flows,
    then: &Then,
    rule: Rule,
    mut detail: FlowDetail,
    step: u32,
) -> Decision {
    let play_of = |index: usize| -> Option<Play> {
        let a = flows.announcement(index)?;
        let (url, sha256) = match a.media.as_ref()? {
            Media::Url(url) => (url.clone(), String::new()),
            Media::File { sha256, .. } => (String::new(), sha256.clone()),
        };
        Some(Play {
            announcement: a.name.clone(),
            url,
            sha256,
        })
    };
    detail.play = then.play.and_then(play_of);
    let action = match &then.step {
        Step::Accept => Action::Accept,
        Step::Forward(numbers) => {
            detail.numbers = numbers.clone();
            Action::Forward
        }
        Step::Voicemail => Action::Voicemail,
        Step::Reject(reason) => {
            detail.reason = reason.clone();
            Action::Reject
        }
        Step::Hangup => Action::Hangup,
        Step::Menu(index) => {
            let menu = &flows.menus[*index];
            detail.play = play_of(menu.prompt);
            detail.gather = Some(Gather {
                menu: menu.name.clone(),
                max_digits: menu.max_digits,
                timeout_ms: menu.timeout_ms,
                step: step + 1,
            });
            Action::Menu
        }
    };
    Decision {
        action,
        caller_id: None,
        rule,
        flow: Some(Box::new(detail)),
    }
}

/// Where the reply's URLs point.
pub struct ReplyUrls<'a> {
    /// `onAnswer`/`onHangup` (and, with menu state, `onData`).
    pub callback: &'a str,
    /// The sidecar's public base URL, for the announcements it serves.
    pub base: &'a str,
    /// The menu state's query string for a `<Gather>`.
    pub menu_query: &'a dyn Fn(&Gather, &str) -> String,
}

/// The reply that carries `decision` to sipgate. `to` is the number
/// dialled, repeated in a caller-ID Dial.
pub fn reply(decision: Option<&Decision>, urls: &ReplyUrls<'_>, to: &str) -> Reply {
    let callback = urls.callback.to_string();
    let Some(decision) = decision else {
        return Reply::Plain { callback };
    };
    let Some(flow) = &decision.flow else {
        return match decision {
            Decision {
                action: Action::Reject,
                ..
            } => Reply::Reject { callback },
            Decision {
                action: Action::SetCallerId,
                caller_id: Some(caller_id),
                ..
            } => Reply::Dial {
                callback,
                caller_id: caller_id.clone(),
                number: to.to_string(),
            },
            _ => Reply::Plain { callback },
        };
    };
    let play_url = |p: &Play| {
        if p.sha256.is_empty() {
            p.url.clone()
        } else {
            crate::flows::announcement_url(urls.base, &p.sha256)
        }
    };
    let mut elements = Vec::new();
    if decision.action != Action::Menu
        && let Some(play) = &flow.play
    {
        elements.push(Element::Play(play_url(play)));
    }
    match decision.action {
        Action::Accept | Action::SetCallerId => {}
        Action::Forward => elements.push(Element::Dial(flow.numbers.clone())),
        Action::Voicemail => elements.push(Element::Voicemail),
        Action::Reject => elements.push(Element::Reject(flow.reason.clone())),
        Action::Hangup => elements.push(Element::Hangup),
        Action::Menu => {
            if let Some(gather) = &flow.gather {
                let rule = decision.flow_rule().unwrap_or_default();
                let on_data = format!("{}?{}", urls.callback, (urls.menu_query)(gather, rule));
                elements.push(Element::Gather {
                    on_data,
                    max_digits: gather.max_digits,
                    timeout_ms: gather.timeout_ms,
                    prompt: flow.play.as_ref().map(play_url),
                });
            }
        }
    }
    if elements.is_empty() {
        return Reply::Plain { callback };
    }
    Reply::Flow { callback, elements }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{BlockEntry, RoutingRule};

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
            flows: None,
            version: 3,
        }
    }

    fn decide(s: &Settings, direction: Direction, from: &str, to: &str, cc: &str) -> Decision {
        let inputs = Inputs {
            settings: s,
            flows: None,
            now: Timestamp::UNIX_EPOCH,
            country_code: cc,
        };
        new_call(&inputs, direction, from, to)
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

    mod flows {
        use super::*;
        use crate::flows::{Files, compile, tests::example_dir};

        const KEY: &[u8] = b"a key of thirty-two bytes, exact";

        fn flows_of(text: &str) -> Flows {
            compile(text, "49", Files::Dir(&example_dir()))
                .unwrap()
                .flows
        }

        fn example() -> Flows {
            flows_of(&crate::flows::tests::example())
        }

        fn at(rfc3339: &str) -> Timestamp {
            rfc3339.parse().unwrap()
        }

        fn inputs<'a>(settings: &'a Settings, flows: &'a Flows, now: Timestamp) -> Inputs<'a> {
            Inputs {
                settings,
                flows: Some(flows),
                now,
                country_code: "49",
            }
        }

        fn render(d: &Decision, call_id: &str) -> String {
            let key = MenuKey::new(KEY.to_vec());
            let q = |g: &Gather, rule: &str| key.query(call_id, &g.menu, g.step, rule);
            let urls = ReplyUrls {
                callback: "https://sc.example/api/v1/sipgate/in",
                base: "https://sc.example",
                menu_query: &q,
            };
            crate::sipgate::xml::render(&reply(Some(d), &urls, "49306000000"))
        }

        /// The state the reply's onData URL carries, as the next dtmf push sees it.
        fn state_of(d: &Decision, call_id: &str) -> MenuState {
            let key = MenuKey::new(KEY.to_vec());
            let g = d.gather().expect("a menu");
            let query = key.query(call_id, &g.menu, g.step, d.flow_rule().unwrap());
            key.verify(call_id, Some(&query)).unwrap()
        }

        const HEAD: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response onHangup=\"https://sc.example/api/v1/sipgate/in\" onAnswer=\"https://sc.example/api/v1/sipgate/in\">\n";

        #[test]
        fn the_block_list_comes_first_then_the_first_matching_rule() {
            let f = example();
            let mut s = Settings::default();
            let monday_9 = at("2026-12-07T08:00:00Z");
            let i = inputs(&s, &f, monday_9);
            let vip = new_call(&i, Direction::In, "+49 30 1234 99", "4930600000");
            assert_eq!(vip.action, Action::Forward);
            assert_eq!(vip.flow_rule(), Some("vip"));
            assert_eq!(
                render(&vip, "c1"),
                format!(
                    "{HEAD}  <Dial>\n    <Number>491701234567</Number>\n    <Number>491707654321</Number>\n  </Dial>\n</Response>\n"
                )
            );
            s.block_list.push(crate::settings::BlockEntry {
                pattern: "49301234*".into(),
                note: String::new(),
            });
            let i = inputs(&s, &f, monday_9);
            let blocked = new_call(&i, Direction::In, "4930123499", "49306000000");
            assert_eq!(blocked.action, Action::Reject);
            assert!(matches!(blocked.rule, Rule::Block { .. }));
            // Outbound calls keep the routing table; flows are inbound only.
            let out = new_call(&i, Direction::Out, "49306000000", "4930123499");
            assert_eq!(out, Decision::accept());
        }

        #[test]
        fn after_hours_plays_the_served_file_then_voicemail() {
            let f = example();
            let s = Settings::default();
            // Christmas Eve, 10:00 in Berlin: a closed date.
            let d = new_call(
                &inputs(&s, &f, at("2026-12-24T09:00:00Z")),
                Direction::In,
                "4921199",
                "+49 30 6000000",
            );
            assert_eq!(d.flow_rule(), Some("after-hours"));
            let sha = &d.flow.as_ref().unwrap().play.as_ref().unwrap().sha256;
            assert_eq!(sha.len(), 64);
            assert_eq!(
                render(&d, "c2"),
                format!(
                    "{HEAD}  <Play>\n    <Url>https://sc.example/announcements/{sha}.wav</Url>\n  </Play>\n  <Dial>\n    <Voicemail/>\n  </Dial>\n</Response>\n"
                )
            );
            assert!(d.explain().contains("sent to the voicemail after announcement closed: call flow rule after-hours (#2)"), "{}", d.explain());
        }

        #[test]
        fn a_menu_walk_its_options_timeout_invalid_digits_and_replays() {
            let f = example();
            let s = Settings::default();
            let i = inputs(&s, &f, at("2026-12-07T09:00:00Z"));
            let menu = new_call(&i, Direction::In, "4921199", "49306000000");
            assert_eq!(menu.action, Action::Menu);
            let xml = render(&menu, "c3");
            let key = MenuKey::new(KEY.to_vec());
            let query = key.query("c3", "main", 1, "hotline").replace('&', "&amp;");
            assert_eq!(
                xml,
                format!(
                    "{HEAD}  <Gather onData=\"https://sc.example/api/v1/sipgate/in?{query}\" maxDigits=\"1\" timeout=\"5000\">\n    <Play>\n      <Url>https://cdn.example.com/menu.wav</Url>\n    </Play>\n  </Gather>\n</Response>\n"
                )
            );
            let state = state_of(&menu, "c3");
            let one = dtmf(&i, &state, "1", false);
            assert_eq!(one.action, Action::Forward);
            assert_eq!(one.flow.as_ref().unwrap().numbers, vec!["492115550100"]);
            assert_eq!(
                (
                    one.flow.as_ref().unwrap().menu.as_str(),
                    one.flow.as_ref().unwrap().option.as_str()
                ),
                ("main", "1")
            );
            assert_eq!(one.flow_rule(), Some("hotline"));
            // Timeout: the dtmf push came without digits.
            let none = dtmf(&i, &state, "", false);
            assert_eq!(none.action, Action::Voicemail);
            assert_eq!(none.flow.as_ref().unwrap().option, "no_input");
            // A digit no option has.
            let bad = dtmf(&i, &state, "7", false);
            assert_eq!(
                (bad.action, bad.flow.as_ref().unwrap().option.as_str()),
                (Action::Hangup, "invalid")
            );
            assert_eq!(
                render(&bad, "c3"),
                format!("{HEAD}  <Hangup/>\n</Response>\n")
            );
            // A replayed push gets invalid, even for a valid option.
            let replay = dtmf(&i, &state, "1", true);
            assert_eq!(
                (replay.action, replay.flow.as_ref().unwrap().option.as_str()),
                (Action::Hangup, "invalid")
            );
            // A state from another call's URL does not verify: invalid.
            let forged = key
                .verify("c4", Some(&key.query("c3", "main", 1, "hotline")))
                .unwrap();
            assert_eq!(
                forged,
                MenuState::NotOffered {
                    menu: "main".into()
                }
            );
            assert_eq!(dtmf(&i, &forged, "1", false).action, Action::Hangup);
        }

        #[test]
        fn a_menu_loop_stops_at_five_prompts() {
            let f = example();
            let s = Settings::default();
            let i = inputs(&s, &f, at("2026-12-07T09:00:00Z"));
            let mut d = new_call(&i, Direction::In, "4921199", "49306000000");
            let mut prompts = 1;
            loop {
                let state = state_of(&d, "c5");
                d = dtmf(&i, &state, "9", false);
                if d.action != Action::Menu {
                    break;
                }
                prompts += 1;
                assert_eq!(d.gather().unwrap().step, prompts);
            }
            assert_eq!(prompts, MAX_PROMPTS);
            // Past the cap, no_input applies (the voicemail).
            assert_eq!(d.action, Action::Voicemail);
            assert_eq!(d.flow.as_ref().unwrap().option, "9");
            assert_eq!(d.flow.as_ref().unwrap().answered_step, MAX_PROMPTS);
        }

        #[test]
        fn a_replayed_or_forged_state_never_offers_another_menu() {
            let text = crate::flows::tests::example().replace(
                "invalid  = { hangup = true }",
                "invalid  = { menu = \"main\" }",
            );
            let f = flows_of(&text);
            let s = Settings::default();
            let i = inputs(&s, &f, at("2026-12-07T09:00:00Z"));
            let state = MenuState::Offered {
                menu: "main".into(),
                step: 1,
                rule: "hotline".into(),
            };
            // An honest invalid digit may lead back to the menu...
            assert_eq!(dtmf(&i, &state, "5", false).action, Action::Menu);
            // ...a replay or a forged state may not.
            assert_eq!(dtmf(&i, &state, "5", true).action, Action::Hangup);
            let forged = MenuState::NotOffered {
                menu: "main".into(),
            };
            assert_eq!(dtmf(&i, &forged, "1", false).action, Action::Hangup);
            // A menu that is gone from the document: hang up.
            let gone = MenuState::Offered {
                menu: "gone".into(),
                step: 1,
                rule: "hotline".into(),
            };
            assert_eq!(dtmf(&i, &gone, "1", false).action, Action::Hangup);
        }

        #[test]
        fn no_rule_matches_keeps_todays_answer() {
            let f = example();
            let s = Settings::default();
            let i = inputs(&s, &f, at("2026-12-07T09:00:00Z"));
            assert_eq!(
                new_call(&i, Direction::In, "4921199", "4940123"),
                Decision::accept()
            );
            assert_eq!(
                super::super::decide(&Event::new(EventKind::Dtmf, "c"), &i, None),
                None
            );
        }
    }
}
