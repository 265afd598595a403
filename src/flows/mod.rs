//! Call flows: what happens to an inbound call, by time of day, holidays,
//! the numbers involved and the caller's keypad choices.
//!
//! The operator writes one TOML document ([`document`]); [`compile`] checks
//! it whole (every error with its line and column) and turns it into
//! [`Flows`], which the decision core reads with no I/O: the time zone from
//! the bundled database, schedules as minute ranges per weekday
//! ([`schedule`]), closed dates (also from iCalendar files, [`ical`]),
//! announcement files read, checked ([`wav`]) and kept in memory under their
//! content hash, and every name resolved to an index.

pub mod document;
pub mod ical;
pub mod menu;
pub mod schedule;
pub mod wav;

use std::{
    collections::HashMap,
    ops::Range,
    path::{Component, Path},
    sync::OnceLock,
};

use bytes::Bytes;
use jiff::{Timestamp, civil::DateTime, tz::TimeZone};
use sha2::{Digest, Sha256};
use toml::Spanned;

use crate::numbers::{normalize_number, normalize_pattern, pattern_matches};
use document::{ActionDoc, Doc, MenuDoc, RuleDoc};
use schedule::Schedule;

/// The largest document accepted.
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// At most this many rules.
pub const MAX_RULES: usize = 10_000;
/// At most this many numbers in one `forward` (sipgate's parallel-call limit).
pub const MAX_FORWARD: usize = 5;
/// A call passes through at most this many menu prompts.
pub const MAX_PROMPTS: u32 = 5;
/// The largest announcement file.
pub const MAX_ANNOUNCEMENT_BYTES: usize = 16 << 20;
const MAX_DIGITS: i64 = 20;
const MAX_TIMEOUT_MS: i64 = 120_000;
const MAX_NAME: usize = 64;

/// The bundled time-zone database: the same answers on every host and
/// replica, with or without `/usr/share/zoneinfo`.
pub fn time_zones() -> &'static jiff::tz::TimeZoneDatabase {
    static DB: OnceLock<jiff::tz::TimeZoneDatabase> = OnceLock::new();
    DB.get_or_init(jiff::tz::TimeZoneDatabase::bundled)
}

/// Where an announcement's audio comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Media {
    /// Hosted elsewhere (`https://` only).
    Url(String),
    /// A file the sidecar serves, under the hex SHA-256 of its content.
    File { file: String, sha256: String },
}

impl Media {
    /// The URL sipgate fetches, with `base` the sidecar's public URL.
    pub fn url(&self, base: &str) -> String {
        match self {
            Media::Url(url) => url.clone(),
            Media::File { sha256, .. } => announcement_url(base, sha256),
        }
    }
}

/// `{base}/announcements/{sha256}.wav`: a path valid only for that content.
pub fn announcement_url(base: &str, sha256: &str) -> String {
    format!("{}/announcements/{sha256}.wav", base.trim_end_matches('/'))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    pub name: String,
    /// `None` when the file was not checked (`flows check` without a directory).
    pub media: Option<Media>,
}

/// What to do with the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// No instruction: the call proceeds as sipgate routes it.
    Accept,
    /// Ring these numbers (normalised digits) at once.
    Forward(Vec<String>),
    Voicemail,
    /// `busy` or `rejected`.
    Reject(String),
    Hangup,
    /// Offer menu `n` (an index into [`Flows::menus`]).
    Menu(usize),
}

/// An action: an optional announcement (index), then a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Then {
    pub play: Option<usize>,
    pub step: Step,
}

impl Then {
    const ACCEPT: Then = Then {
        play: None,
        step: Step::Accept,
    };
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowRule {
    pub name: String,
    /// Normalised patterns; empty = any.
    pub from: Vec<String>,
    pub to: Vec<String>,
    /// Schedule indexes that must be open / closed.
    pub open: Option<usize>,
    pub closed: Option<usize>,
    pub then: Then,
}

impl FlowRule {
    fn is_unconditional(&self) -> bool {
        self.from.is_empty() && self.to.is_empty() && self.open.is_none() && self.closed.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Menu {
    pub name: String,
    /// Announcement index of the prompt.
    pub prompt: usize,
    pub max_digits: u32,
    pub timeout_ms: u32,
    /// Digits and what they do, in key order.
    pub options: Vec<(String, Then)>,
    /// The dtmf push came without digits (or the prompt cap was reached).
    pub no_input: Then,
    /// Digits that match no option, or a state that was not offered.
    pub invalid: Then,
}

impl Menu {
    pub fn option(&self, digits: &str) -> Option<&Then> {
        self.options
            .iter()
            .find(|(d, _)| d == digits)
            .map(|(_, then)| then)
    }
}

/// A compiled flows document.
#[derive(Debug, Clone)]
pub struct Flows {
    source: String,
    time_zone_name: String,
    time_zone: TimeZone,
    pub schedules: Vec<(String, Schedule)>,
    pub announcements: Vec<Announcement>,
    pub rules: Vec<FlowRule>,
    pub menus: Vec<Menu>,
    /// Announcement files by content hash, as served.
    files: HashMap<String, Bytes>,
}

impl PartialEq for Flows {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source && self.files.len() == other.files.len()
    }
}

impl Flows {
    /// The document as the operator gave it.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn time_zone(&self) -> &TimeZone {
        &self.time_zone
    }

    pub fn time_zone_name(&self) -> &str {
        &self.time_zone_name
    }

    /// `at` as wall-clock time in the document's time zone.
    pub fn local(&self, at: Timestamp) -> DateTime {
        self.time_zone.to_datetime(at)
    }

    /// The first rule that matches an inbound call from `from` to `to`
    /// (normalised) at local time `local`.
    pub fn rule_for(&self, from: &str, to: &str, local: DateTime) -> Option<(usize, &FlowRule)> {
        // Each schedule is looked at once at most per call.
        let mut open: [Option<bool>; 64] = [None; 64];
        let mut is_open = |i: usize| -> bool {
            if let Some(slot) = open.get_mut(i) {
                *slot.get_or_insert_with(|| self.schedules[i].1.is_open(local))
            } else {
                self.schedules[i].1.is_open(local)
            }
        };
        self.rules.iter().enumerate().find(|(_, rule)| {
            let matches = |patterns: &[String], number: &str| {
                patterns.is_empty() || patterns.iter().any(|p| pattern_matches(p, number))
            };
            matches(&rule.from, from)
                && matches(&rule.to, to)
                && rule.open.is_none_or(&mut is_open)
                && rule.closed.is_none_or(|s| !is_open(s))
        })
    }

    pub fn menu(&self, name: &str) -> Option<(usize, &Menu)> {
        self.menus.iter().enumerate().find(|(_, m)| m.name == name)
    }

    pub fn announcement(&self, index: usize) -> Option<&Announcement> {
        self.announcements.get(index)
    }

    /// An announcement file's content, by the hash in its URL.
    pub fn file(&self, sha256: &str) -> Option<Bytes> {
        self.files.get(sha256).cloned()
    }

    /// One line for people: what the document holds.
    pub fn summary(&self) -> String {
        format!(
            "time zone {}; {} rules, {} schedules, {} menus, {} announcements",
            self.time_zone_name,
            self.rules.len(),
            self.schedules.len(),
            self.menus.len(),
            self.announcements.len()
        )
    }
}

/// Where announcement (and iCalendar) files are read from.
#[derive(Debug, Clone, Copy)]
pub enum Files<'a> {
    /// Not read: `file` announcements and `ical` are not checked.
    Unchecked,
    /// No directory was configured: a `file` or `ical` is an error.
    None,
    /// Read from this directory.
    Dir(&'a Path),
}

/// A compiled document and what it warns about.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub flows: Flows,
    pub warnings: Vec<String>,
}

/// One thing wrong with a document, at a place in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.message)
        } else {
            write!(
                f,
                "line {}, column {}: {}",
                self.line, self.column, self.message
            )
        }
    }
}

/// Why a document was refused: every problem found, in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowsError(pub Vec<Problem>);

impl std::fmt::Display for FlowsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the call flows are not valid:")?;
        for problem in &self.0 {
            write!(f, "\n  {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for FlowsError {}

/// Line and column (1-based, in characters) of byte `offset` in `text`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

struct Compiler<'a> {
    text: &'a str,
    country_code: &'a str,
    files: Files<'a>,
    problems: Vec<Problem>,
    warnings: Vec<String>,
}

impl Compiler<'_> {
    fn problem(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, column) = position(self.text, span.start);
        self.problems.push(Problem {
            line,
            column,
            message: message.into(),
        });
    }

    fn name(&mut self, what: &str, name: &str, span: Range<usize>) {
        if name.is_empty()
            || name.len() > MAX_NAME
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            self.problem(
                span,
                format!(
                    "{what} name '{}' must be 1 to {MAX_NAME} letters, digits, '_' or '-'",
                    crate::text::shown(name)
                ),
            );
        }
    }

    /// The bytes of `file` in the files directory, when there is one.
    fn read(&mut self, what: &str, file: &Spanned<String>) -> Option<Vec<u8>> {
        let name = file.get_ref();
        let plain = !name.is_empty()
            && Path::new(name)
                .components()
                .all(|c| matches!(c, Component::Normal(_)));
        if !plain {
            self.problem(
                file.span(),
                format!("{what} '{name}' must be a file name inside the announcements directory"),
            );
            return None;
        }
        let dir = match self.files {
            Files::Unchecked => return None,
            Files::None => {
                self.problem(
                    file.span(),
                    format!("{what} '{name}' needs --announcements-dir, which is not set"),
                );
                return None;
            }
            Files::Dir(dir) => dir,
        };
        let path = dir.join(name);
        let too_large = std::fs::metadata(&path)
            .map(|m| m.len() > MAX_ANNOUNCEMENT_BYTES as u64)
            .unwrap_or(false);
        if too_large {
            self.problem(
                file.span(),
                format!("{name} is larger than {} MiB", MAX_ANNOUNCEMENT_BYTES >> 20),
            );
            return None;
        }
        match std::fs::read(&path) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                self.problem(
                    file.span(),
                    format!("{name} cannot be read from {}: {e}", dir.display()),
                );
                None
            }
        }
    }
}

/// Checks `text` whole and compiles it. Numbers are normalised with
/// `country_code`; files are read as `files` says.
pub fn compile(text: &str, country_code: &str, files: Files<'_>) -> Result<Compiled, FlowsError> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(FlowsError(vec![Problem {
            line: 0,
            column: 0,
            message: format!(
                "the document has {} bytes; at most {} (1 MiB) are accepted",
                text.len(),
                MAX_DOCUMENT_BYTES
            ),
        }]));
    }
    let doc: Doc = match toml::from_str(text) {
        Ok(doc) => doc,
        Err(e) => {
            let (line, column) = e.span().map_or((0, 0), |s| position(text, s.start));
            return Err(FlowsError(vec![Problem {
                line,
                column,
                message: e.message().trim().to_string(),
            }]));
        }
    };
    if doc.rules.len() > MAX_RULES {
        return Err(FlowsError(vec![Problem {
            line: 0,
            column: 0,
            message: format!(
                "the document has {} rules; at most {MAX_RULES} are accepted",
                doc.rules.len()
            ),
        }]));
    }
    let mut c = Compiler {
        text,
        country_code,
        files,
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let time_zone = match time_zones().get(doc.time_zone.get_ref()) {
        Ok(tz) => tz,
        Err(_) => {
            c.problem(
                doc.time_zone.span(),
                format!(
                    "'{}' is not a time zone (an IANA name such as \"Europe/Berlin\")",
                    crate::text::shown(doc.time_zone.get_ref())
                ),
            );
            TimeZone::UTC
        }
    };
    let schedules = compile_schedules(&mut c, &doc);
    let mut files = HashMap::new();
    let announcements = compile_announcements(&mut c, &doc, &mut files);
    let names = Names {
        schedules: index(schedules.iter().map(|(n, _)| n.as_str())),
        announcements: index(announcements.iter().map(|a| a.name.as_str())),
        menus: index(doc.menus.keys().map(String::as_str)),
    };
    let rules = compile_rules(&mut c, &doc.rules, &names);
    let menus: Vec<Menu> = doc
        .menus
        .iter()
        .map(|(name, menu)| compile_menu(&mut c, name, menu, &names))
        .collect();
    if !c.problems.is_empty() {
        c.problems.sort_by_key(|p| (p.line, p.column));
        return Err(FlowsError(c.problems));
    }
    Ok(Compiled {
        flows: Flows {
            source: text.to_string(),
            time_zone_name: doc.time_zone.into_inner(),
            time_zone,
            schedules,
            announcements,
            rules,
            menus,
            files,
        },
        warnings: c.warnings,
    })
}

fn index<'a>(names: impl Iterator<Item = &'a str>) -> HashMap<String, usize> {
    names.enumerate().map(|(i, n)| (n.to_string(), i)).collect()
}

struct Names {
    schedules: HashMap<String, usize>,
    announcements: HashMap<String, usize>,
    menus: HashMap<String, usize>,
}

fn compile_schedules(c: &mut Compiler<'_>, doc: &Doc) -> Vec<(String, Schedule)> {
    let mut out = Vec::new();
    for (name, doc_schedule) in &doc.schedules {
        c.name("schedule", name, doc_schedule.span());
        let mut schedule = Schedule::default();
        let s = doc_schedule.get_ref();
        for entry in &s.open {
            if let Err(e) = schedule.add_open(entry.get_ref()) {
                c.problem(entry.span(), format!("schedule {name}: {e}"));
            }
        }
        for entry in &s.closed {
            match schedule::parse_closed(entry.get_ref()) {
                Ok(closed) => schedule.add_closed(closed),
                Err(e) => c.problem(entry.span(), format!("schedule {name}: {e}")),
            }
        }
        if let Some(ical) = &s.ical
            && let Some(bytes) = c.read("ical file", ical)
        {
            let parsed = String::from_utf8(bytes)
                .map_err(|_| "not UTF-8 text".to_string())
                .and_then(|text| ical::closed_dates(&text));
            match parsed {
                Ok((closed, warnings)) => {
                    for entry in closed {
                        schedule.add_closed(entry);
                    }
                    for w in warnings {
                        c.warnings
                            .push(format!("schedule {name}: {}: {w}", ical.get_ref()));
                    }
                }
                Err(e) => c.problem(ical.span(), format!("{}: {e}", ical.get_ref())),
            }
        }
        out.push((name.clone(), schedule));
    }
    out
}

fn compile_announcements(
    c: &mut Compiler<'_>,
    doc: &Doc,
    files: &mut HashMap<String, Bytes>,
) -> Vec<Announcement> {
    let mut out = Vec::new();
    for (name, a) in &doc.announcements {
        c.name("announcement", name, a.span());
        let media = match (&a.get_ref().file, &a.get_ref().url) {
            (Some(file), None) => c.read("announcement file", file).and_then(|bytes| {
                match wav::check_playable(&bytes) {
                    Ok(()) => {
                        let sha256 = hex::encode(Sha256::digest(&bytes));
                        files.insert(sha256.clone(), Bytes::from(bytes));
                        Some(Media::File {
                            file: file.get_ref().clone(),
                            sha256,
                        })
                    }
                    Err(what) => {
                        c.problem(
                            file.span(),
                            format!(
                                "{} is {what}; sipgate plays only WAV files in PCM signed \
                                 16-bit, mono, 8 kHz (e.g. sox IN -r 8000 -c 1 -b 16 OUT.wav)",
                                file.get_ref()
                            ),
                        );
                        None
                    }
                }
            }),
            (None, Some(url)) => {
                let u = url.get_ref();
                let valid = u.len() <= 2048
                    && u.strip_prefix("https://").is_some_and(|rest| {
                        !rest.is_empty() && !rest.contains(char::is_whitespace)
                    });
                if valid {
                    Some(Media::Url(u.clone()))
                } else {
                    c.problem(
                        url.span(),
                        format!(
                            "announcement {name}: url '{}' must be an https:// URL",
                            crate::text::shown(u)
                        ),
                    );
                    None
                }
            }
            _ => {
                c.problem(
                    a.span(),
                    format!("announcement {name} needs exactly one of file or url"),
                );
                None
            }
        };
        out.push(Announcement {
            name: name.clone(),
            media,
        });
    }
    out
}

fn compile_rules(c: &mut Compiler<'_>, rules: &[Spanned<RuleDoc>], names: &Names) -> Vec<FlowRule> {
    let mut out: Vec<FlowRule> = Vec::with_capacity(rules.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut unconditional: Option<String> = None;
    for (i, rule) in rules.iter().enumerate() {
        let r = rule.get_ref();
        let name = match &r.name {
            Some(name) => {
                let n = name.get_ref();
                if n.is_empty() || n.chars().count() > MAX_NAME || n.chars().any(char::is_control) {
                    c.problem(
                        name.span(),
                        format!(
                            "rule name '{}' must be 1 to {MAX_NAME} characters",
                            crate::text::shown(n)
                        ),
                    );
                }
                n.clone()
            }
            None => format!("#{}", i + 1),
        };
        if let Some(first) = seen.insert(name.clone(), i) {
            c.problem(
                rule.span(),
                format!(
                    "rule name '{name}' is used twice (rules {} and {})",
                    first + 1,
                    i + 1
                ),
            );
        }
        let when = r.when.as_ref().map(|w| w.get_ref());
        let mut patterns = |list: Option<&Vec<Spanned<String>>>, what: &str| -> Vec<String> {
            let mut out = Vec::new();
            for p in list.into_iter().flatten() {
                match normalize_pattern(p.get_ref(), c.country_code) {
                    Ok(n) => out.push(n),
                    Err(e) => c.problem(p.span(), format!("rule {name}: {what}: {e}")),
                }
            }
            out
        };
        let from = patterns(when.and_then(|w| w.from.as_ref()), "from");
        let to = patterns(when.and_then(|w| w.to.as_ref()), "to");
        let mut schedule = |s: Option<&Spanned<String>>| -> Option<usize> {
            let s = s?;
            let found = names.schedules.get(s.get_ref()).copied();
            if found.is_none() {
                c.problem(
                    s.span(),
                    format!(
                        "rule {name}: there is no schedule '{}'",
                        crate::text::shown(s.get_ref())
                    ),
                );
            }
            found
        };
        let open = schedule(when.and_then(|w| w.open.as_ref()));
        let closed = schedule(when.and_then(|w| w.closed.as_ref()));
        let then = action(c, &format!("rule {name}"), &r.then, names);
        let compiled = FlowRule {
            name: name.clone(),
            from,
            to,
            open,
            closed,
            then,
        };
        if let Some(first) = &unconditional {
            c.warnings.push(format!(
                "rule {name} can never fire: rule {first} before it matches every call"
            ));
        } else if compiled.is_unconditional() {
            unconditional = Some(name.clone());
        }
        out.push(compiled);
    }
    out
}

fn compile_menu(c: &mut Compiler<'_>, name: &str, menu: &Spanned<MenuDoc>, names: &Names) -> Menu {
    c.name("menu", name, menu.span());
    let m = menu.get_ref();
    let prompt = match names.announcements.get(m.prompt.get_ref()) {
        Some(&i) => i,
        None => {
            c.problem(
                m.prompt.span(),
                format!(
                    "menu {name}: there is no announcement '{}'",
                    crate::text::shown(m.prompt.get_ref())
                ),
            );
            0
        }
    };
    let bounded = |c: &mut Compiler<'_>,
                   v: &Option<Spanned<i64>>,
                   what: &str,
                   max: i64,
                   default: u32| {
        match v {
            None => default,
            Some(v) if (1..=max).contains(v.get_ref()) => *v.get_ref() as u32,
            Some(v) => {
                c.problem(
                    v.span(),
                    format!(
                        "menu {name}: {what} must be 1 to {max}, not {}",
                        v.get_ref()
                    ),
                );
                default
            }
        }
    };
    let max_digits = bounded(c, &m.max_digits, "max_digits", MAX_DIGITS, 1);
    let timeout_ms = bounded(c, &m.timeout_ms, "timeout_ms", MAX_TIMEOUT_MS, 2000);
    let mut options = Vec::new();
    for (digits, then) in &m.options {
        let valid = !digits.is_empty()
            && digits.len() <= max_digits as usize
            && digits
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'*' || b == b'#');
        if !valid {
            c.problem(
                then.span(),
                format!(
                    "menu {name}: option '{}' must be 1 to {max_digits} keypad keys (0-9, *, #)",
                    crate::text::shown(digits)
                ),
            );
        }
        let compiled = action(c, &format!("menu {name} option {digits}"), then, names);
        options.push((digits.clone(), compiled));
    }
    let optional = |c: &mut Compiler<'_>, a: &Option<Spanned<ActionDoc>>, what: &str| match a {
        Some(a) => action(c, &format!("menu {name} {what}"), a, names),
        None => Then::ACCEPT,
    };
    let no_input = optional(c, &m.no_input, "no_input");
    let invalid = optional(c, &m.invalid, "invalid");
    Menu {
        name: name.to_string(),
        prompt,
        max_digits,
        timeout_ms,
        options,
        no_input,
        invalid,
    }
}

/// One `then` (or menu option): exactly one step, and an optional `play`.
fn action(c: &mut Compiler<'_>, what: &str, a: &Spanned<ActionDoc>, names: &Names) -> Then {
    let span = a.span();
    let d = a.get_ref();
    let mut steps: Vec<(&str, Step)> = Vec::new();
    let flag = |c: &mut Compiler<'_>, v: &Option<Spanned<bool>>, key: &str| -> bool {
        match v {
            Some(v) if *v.get_ref() => true,
            Some(v) => {
                c.problem(
                    v.span(),
                    format!("{what}: {key} = false means nothing; leave it out"),
                );
                false
            }
            None => false,
        }
    };
    if flag(c, &d.accept, "accept") {
        steps.push(("accept", Step::Accept));
    }
    if let Some(numbers) = &d.forward {
        let list = numbers.get_ref();
        if list.is_empty() || list.len() > MAX_FORWARD {
            c.problem(
                numbers.span(),
                format!(
                    "{what}: forward needs 1 to {MAX_FORWARD} numbers, not {}",
                    list.len()
                ),
            );
        }
        let mut out = Vec::new();
        for n in list {
            match normalize_number(n.get_ref(), c.country_code) {
                Ok(digits) if digits != "anonymous" => out.push(digits),
                Ok(_) => c.problem(n.span(), format!("{what}: cannot forward to 'anonymous'")),
                Err(e) => c.problem(n.span(), format!("{what}: forward: {e}")),
            }
        }
        steps.push(("forward", Step::Forward(out)));
    }
    if flag(c, &d.voicemail, "voicemail") {
        steps.push(("voicemail", Step::Voicemail));
    }
    if let Some(reason) = &d.reject {
        if !matches!(reason.get_ref().as_str(), "busy" | "rejected") {
            c.problem(
                reason.span(),
                format!(
                    "{what}: reject must be \"busy\" or \"rejected\", not '{}'",
                    crate::text::shown(reason.get_ref())
                ),
            );
        }
        steps.push(("reject", Step::Reject(reason.get_ref().clone())));
    }
    if flag(c, &d.hangup, "hangup") {
        steps.push(("hangup", Step::Hangup));
    }
    if let Some(menu) = &d.menu {
        match names.menus.get(menu.get_ref()) {
            Some(&i) => steps.push(("menu", Step::Menu(i))),
            None => {
                c.problem(
                    menu.span(),
                    format!(
                        "{what}: there is no menu '{}'",
                        crate::text::shown(menu.get_ref())
                    ),
                );
                steps.push(("menu", Step::Accept));
            }
        }
    }
    let step = match steps.len() {
        1 => steps.pop().map(|(_, s)| s).unwrap_or(Step::Accept),
        0 => {
            c.problem(
                span,
                format!("{what}: needs one of accept, forward, voicemail, reject, hangup or menu"),
            );
            Step::Accept
        }
        _ => {
            let keys: Vec<&str> = steps.iter().map(|(k, _)| *k).collect();
            c.problem(
                span,
                format!("{what}: has {}; give exactly one", keys.join(" and ")),
            );
            Step::Accept
        }
    };
    let play = d.play.as_ref().and_then(|p| {
        if matches!(step, Step::Reject(_) | Step::Menu(_)) {
            let why = if matches!(step, Step::Menu(_)) {
                "a menu plays its own prompt"
            } else {
                "sipgate cannot play before a reject"
            };
            c.problem(
                p.span(),
                format!("{what}: play cannot go with this action: {why}"),
            );
            return None;
        }
        let found = names.announcements.get(p.get_ref()).copied();
        if found.is_none() {
            c.problem(
                p.span(),
                format!(
                    "{what}: there is no announcement '{}'",
                    crate::text::shown(p.get_ref())
                ),
            );
        }
        found
    });
    Then { play, step }
}

#[cfg(test)]
pub(crate) mod tests;
