use std::path::PathBuf;

use jiff::{Timestamp, civil::date};

use super::*;

pub(crate) fn example_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/flows")
}

pub(crate) fn example() -> String {
    std::fs::read_to_string(example_dir().join("flows.toml")).unwrap()
}

fn compiled(text: &str) -> Flows {
    compile(text, "49", Files::Dir(&example_dir()))
        .unwrap()
        .flows
}

fn refused(text: &str) -> String {
    compile(text, "49", Files::Dir(&example_dir()))
        .unwrap_err()
        .to_string()
}

/// The rule name for a call at local Berlin time.
fn rule_at(flows: &Flows, from: &str, to: &str, at: Timestamp) -> Option<String> {
    flows
        .rule_for(from, to, flows.local(at))
        .map(|(_, r)| r.name.clone())
}

fn berlin_tz() -> jiff::tz::TimeZone {
    time_zones().get("Europe/Berlin").unwrap()
}

fn berlin(y: i16, m: i8, d: i8, h: i8, min: i8) -> Timestamp {
    date(y, m, d)
        .at(h, min, 0, 0)
        .to_zoned_datetime(berlin_tz())
        .unwrap()
        .timestamp()
}

#[test]
fn the_example_document_compiles_with_its_files() {
    let c = compile(&example(), "49", Files::Dir(&example_dir())).unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let f = &c.flows;
    assert_eq!(f.time_zone_name(), "Europe/Berlin");
    assert_eq!(f.rules.len(), 3);
    assert_eq!(f.rules[0].from, vec!["49301234*".to_string()]);
    assert_eq!(
        f.rules[0].then.step,
        Step::Forward(vec!["491701234567".into(), "491707654321".into()])
    );
    let (_, menu) = f.menu("main").unwrap();
    assert_eq!((menu.max_digits, menu.timeout_ms), (1, 5000));
    assert_eq!(menu.option("9").unwrap().step, Step::Menu(0));
    assert_eq!(menu.invalid.step, Step::Hangup);
    let closed = &f.announcements[0];
    let Some(Media::File { sha256, .. }) = &closed.media else {
        panic!("{closed:?}")
    };
    let bytes = std::fs::read(example_dir().join("closed.wav")).unwrap();
    assert_eq!(f.file(sha256).unwrap(), bytes);
    assert_eq!(f.source(), example());
    // Offline, without the directory, files are not read.
    let unchecked = compile(&example(), "49", Files::Unchecked).unwrap();
    assert_eq!(unchecked.flows.announcements[0].media, None);
    // A server without --announcements-dir refuses a file announcement.
    let e = compile(&example(), "49", Files::None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("line 9, column 19: announcement file 'closed.wav' needs --announcements-dir"),
        "{e}"
    );
}

#[test]
fn rules_fire_by_number_and_office_hours() {
    let f = compiled(&example());
    let hotline = "49306000000";
    // Monday 2026-12-07 09:00: open.
    assert_eq!(
        rule_at(&f, "4921112345", hotline, berlin(2026, 12, 7, 9, 0)).as_deref(),
        Some("hotline")
    );
    // Lunch break and evening: closed.
    assert_eq!(
        rule_at(&f, "4921112345", hotline, berlin(2026, 12, 7, 12, 30)).as_deref(),
        Some("after-hours")
    );
    assert_eq!(
        rule_at(&f, "4921112345", hotline, berlin(2026, 12, 7, 17, 30)).as_deref(),
        Some("after-hours")
    );
    // A VIP first, whatever the time; another number matches no rule.
    assert_eq!(
        rule_at(&f, "49301234999", hotline, berlin(2026, 12, 7, 9, 0)).as_deref(),
        Some("vip")
    );
    assert_eq!(
        rule_at(&f, "4921112345", "4930999", berlin(2026, 12, 7, 9, 0)),
        None
    );
}

#[test]
fn a_holiday_on_a_weekend_closes_the_saturday_hours() {
    let mut text = example();
    text = text.replace("\"05-01\"]", "\"05-01\", \"2026-12-26\"]");
    let f = compiled(&text);
    // 2026-12-19 and 2026-12-26 are Saturdays; the second is a holiday.
    assert_eq!(
        rule_at(&f, "4921112345", "49306000000", berlin(2026, 12, 19, 11, 0)).as_deref(),
        Some("hotline")
    );
    assert_eq!(
        rule_at(&f, "4921112345", "49306000000", berlin(2026, 12, 26, 11, 0)).as_deref(),
        Some("after-hours")
    );
    // Christmas Eve is a Thursday and closed; 1 May every year.
    assert_eq!(
        rule_at(&f, "4921112345", "49306000000", berlin(2026, 12, 24, 9, 0)).as_deref(),
        Some("after-hours")
    );
    assert_eq!(
        rule_at(&f, "4921112345", "49306000000", berlin(2028, 5, 1, 9, 0)).as_deref(),
        Some("after-hours")
    );
    // 2028-05-02 is a Tuesday.
    assert_eq!(
        rule_at(&f, "4921112345", "49306000000", berlin(2028, 5, 2, 9, 0)).as_deref(),
        Some("hotline")
    );
}

#[test]
fn yearly_closed_dates_across_the_year_end() {
    let text = r#"
time_zone = "Europe/Berlin"
[schedules.s]
open = ["mon-sun 00:00-24:00"]
closed = ["12-31..01-01"]
[[rules]]
name = "open"
when = { open = "s" }
then = { accept = true }
"#;
    let f = compiled(text);
    for (y, m, d, open) in [
        (2026, 12, 30, true),
        (2026, 12, 31, false),
        (2027, 1, 1, false),
        (2027, 1, 2, true),
        (2030, 12, 31, false),
        (2031, 1, 1, false),
    ] {
        let at = berlin(y, m, d, 12, 0);
        assert_eq!(rule_at(&f, "1", "2", at).is_some(), open, "{y}-{m}-{d}");
    }
}

/// The instants of one Berlin day, minute by minute, that `schedule` is open.
fn open_minutes(f: &Flows, day: jiff::civil::Date) -> i64 {
    let start = day.to_zoned_datetime(berlin_tz()).unwrap().timestamp();
    let end = day
        .tomorrow()
        .unwrap()
        .to_zoned_datetime(berlin_tz())
        .unwrap()
        .timestamp();
    let mut t = start;
    let mut n = 0;
    while t < end {
        if rule_at(f, "1", "2", t).is_some() {
            n += 1;
        }
        t = t.checked_add(jiff::SignedDuration::from_mins(1)).unwrap();
    }
    n
}

#[test]
fn dst_is_by_wall_clock_in_both_directions() {
    let text = r#"
time_zone = "Europe/Berlin"
[schedules.night]
open = ["sun 01:00-04:00"]
[[rules]]
name = "night"
when = { open = "night" }
then = { voicemail = true }
"#;
    let f = compiled(text);
    // 2026-03-29: 02:00 becomes 03:00; the range has one hour less.
    assert_eq!(open_minutes(&f, date(2026, 3, 29)), 120);
    // 2026-10-25: 03:00 becomes 02:00 again; the repeated hour counts twice.
    assert_eq!(open_minutes(&f, date(2026, 10, 25)), 240);
    // An ordinary Sunday.
    assert_eq!(open_minutes(&f, date(2026, 11, 1)), 180);
    // 02:30 on the spring day does not exist on the wall clock.
    let at = "2026-03-29T01:30:00Z".parse::<Timestamp>().unwrap();
    assert_eq!(f.local(at).hour(), 3);
}

#[test]
fn the_time_zone_database_is_bundled() {
    // Works with no system database at all: the bundled one is used.
    assert!(time_zones().get("Europe/Berlin").is_ok());
    assert!(time_zones().get("America/New_York").is_ok());
    assert!(time_zones().get("Mars/Olympus").is_err());
}

#[test]
fn rules_after_an_unconditional_rule_are_warned_about() {
    let text = r#"
time_zone = "UTC"
[[rules]]
name = "all"
then = { accept = true }
[[rules]]
name = "never"
when = { from = ["+49 30 1*"] }
then = { hangup = true }
"#;
    let c = compile(text, "49", Files::Unchecked).unwrap();
    assert_eq!(
        c.warnings,
        vec!["rule never can never fire: rule all before it matches every call"]
    );
}

#[test]
fn every_bad_document_is_refused_with_its_place() {
    let base = "time_zone = \"Europe/Berlin\"\n";
    let cases: Vec<(String, &str)> = vec![
        (
            format!("{base}colour = \"red\"\n"),
            "line 2, column 1: unknown field `colour`",
        ),
        (
            format!("{base}[[rules]]\nthen = {{ accept = true, extra = 1 }}\n"),
            "line 3, column 25: unknown field `extra`",
        ),
        (
            format!(
                "{base}[[rules]]\nwhen = {{ open = \"office\" }}\nthen = {{ accept = true }}\n"
            ),
            "line 3, column 17: rule #1: there is no schedule 'office'",
        ),
        (
            format!("{base}[[rules]]\nthen = {{ menu = \"nope\" }}\n"),
            "line 3, column 17: rule #1: there is no menu 'nope'",
        ),
        (
            format!("{base}[[rules]]\nthen = {{ play = \"nope\", hangup = true }}\n"),
            "line 3, column 17: rule #1: there is no announcement 'nope'",
        ),
        (
            format!(
                "{base}[[rules]]\nthen = {{ forward = [\"1\", \"2\", \"3\", \"4\", \"5\", \"6\"] }}\n"
            ),
            "line 3, column 20: rule #1: forward needs 1 to 5 numbers, not 6",
        ),
        (
            format!("{base}[[rules]]\nthen = {{ forward = [\"+49 30 abc\"] }}\n"),
            "line 3, column 21: rule #1: forward: '+49 30 abc' is not a phone number",
        ),
        (
            format!("{base}[[rules]]\nwhen = {{ from = [\"x*\"] }}\nthen = {{ accept = true }}\n"),
            "line 3, column 18: rule #1: from: pattern 'x*'",
        ),
        (
            "time_zone = \"Europe/Bielefeld\"\n".to_string(),
            "line 1, column 13: 'Europe/Bielefeld' is not a time zone",
        ),
        (
            format!("{base}[schedules.s]\nopen = [\"mon 25:00-26:00\"]\n"),
            "line 3, column 9: schedule s: '25:00' is not a time of day",
        ),
        (
            format!("{base}[schedules.s]\nopen = [\"mon 09:00-09:00\"]\n"),
            "line 3, column 9: schedule s: '09:00-09:00' is an empty range",
        ),
        (
            format!("{base}[schedules.s]\nclosed = [\"2026-02-30\"]\n"),
            "line 3, column 11: schedule s: '2026-02-30' is not a date",
        ),
        (
            format!(
                "{base}[announcements]\nbye = {{ url = \"https://x.example/bye.wav\" }}\n[[rules]]\nthen = {{ play = \"bye\", reject = \"busy\" }}\n"
            ),
            "line 5, column 17: rule #1: play cannot go with this action: sipgate cannot play before a reject",
        ),
        (
            format!("{base}[[rules]]\nthen = {{ reject = \"maybe\" }}\n"),
            "line 3, column 19: rule #1: reject must be \"busy\" or \"rejected\"",
        ),
        (
            format!("{base}[announcements]\nbye = {{ url = \"http://x.example/bye.wav\" }}\n"),
            "line 3, column 15: announcement bye: url 'http://x.example/bye.wav' must be an https:// URL",
        ),
        (
            format!("{base}[[rules]]\nthen = {{ hangup = true, voicemail = true }}\n"),
            "line 3, column 8: rule #1: has voicemail and hangup; give exactly one",
        ),
        (
            format!("{base}[[rules]]\nthen = {{}}\n"),
            "line 3, column 8: rule #1: needs one of accept",
        ),
        (
            format!("{base}[announcements]\nbad = {{ file = \"../etc/passwd\" }}\n"),
            "must be a file name inside the announcements directory",
        ),
        (
            format!("{base}[announcements]\ngone = {{ file = \"missing.wav\" }}\n"),
            "line 3, column 17: missing.wav cannot be read from",
        ),
        (
            format!("{base}[menus.m]\nprompt = \"p\"\nmax_digits = 0\n"),
            "menu m: there is no announcement 'p'",
        ),
        (
            format!(
                "{base}[announcements]\np = {{ url = \"https://x.example/p.wav\" }}\n[menus.m]\nprompt = \"p\"\ntimeout_ms = 0\noptions = {{ \"12\" = {{ hangup = true }} }}\n"
            ),
            "menu m: option '12' must be 1 to 1 keypad keys",
        ),
        (
            format!(
                "{base}[[rules]]\nname = \"a\"\nthen = {{ hangup = true }}\n[[rules]]\nname = \"a\"\nthen = {{ hangup = true }}\n"
            ),
            "rule name 'a' is used twice",
        ),
        (
            "[[rules]]\nthen = { hangup = true }\n".to_string(),
            "missing field `time_zone`",
        ),
        (
            format!("{base}rules = 3\n"),
            "line 2, column 9: invalid type",
        ),
    ];
    let mut wrong = Vec::new();
    for (text, says) in cases {
        let e = refused(&text);
        if !e.contains(says) {
            wrong.push(format!("{text}\n=> {e}\nwanted: {says}\n"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Every problem is named, not only the first.
    let e = refused(&format!(
        "{base}[[rules]]\nwhen = {{ open = \"a\", closed = \"b\" }}\nthen = {{ menu = \"c\" }}\n"
    ));
    assert!(
        e.contains("'a'") && e.contains("'b'") && e.contains("'c'"),
        "{e}"
    );
}

#[test]
fn a_refused_wav_names_what_the_file_is() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("closed.wav"),
        wav::synthesize(44100, 2, 16, 100),
    )
    .unwrap();
    let text = "time_zone = \"UTC\"\n[announcements]\nclosed = { file = \"closed.wav\" }\n";
    let e = compile(text, "49", Files::Dir(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(
            "line 3, column 19: closed.wav is 44.1 kHz stereo 16-bit PCM; sipgate plays only"
        ),
        "{e}"
    );
    std::fs::write(dir.path().join("closed.wav"), b"not audio").unwrap();
    let e = compile(text, "49", Files::Dir(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("closed.wav is not a WAV file"), "{e}");
}

#[test]
fn size_and_rule_limits() {
    let huge = format!("time_zone = \"UTC\"\n#{}\n", "x".repeat(MAX_DOCUMENT_BYTES));
    assert!(refused(&huge).contains("at most 1048576 (1 MiB)"));
    let mut many = String::from("time_zone = \"UTC\"\n");
    for i in 0..=MAX_RULES {
        many.push_str(&format!(
            "[[rules]]\nname = \"r{i}\"\nwhen = {{ to = [\"{i}\"] }}\nthen = {{ hangup = true }}\n"
        ));
    }
    assert!(refused(&many).contains("10001 rules; at most 10000"));
}

#[test]
fn ical_files_add_closed_dates() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("holidays.ics"),
        "BEGIN:VCALENDAR\nBEGIN:VEVENT\nDTSTART;VALUE=DATE:20261003\nRRULE:FREQ=YEARLY\nEND:VEVENT\nEND:VCALENDAR\n",
    )
    .unwrap();
    let text = r#"
time_zone = "Europe/Berlin"
[schedules.s]
open = ["mon-sun 00:00-24:00"]
ical = "holidays.ics"
[[rules]]
name = "open"
when = { open = "s" }
then = { accept = true }
"#;
    let f = compile(text, "49", Files::Dir(dir.path())).unwrap().flows;
    assert!(rule_at(&f, "1", "2", berlin(2027, 10, 3, 12, 0)).is_none());
    assert!(rule_at(&f, "1", "2", berlin(2027, 10, 4, 12, 0)).is_some());
}
