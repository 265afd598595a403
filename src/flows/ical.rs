//! Closed dates from an iCalendar file: each all-day `VEVENT` (a `DTSTART`
//! that is a date) becomes a closed range; `RRULE:FREQ=YEARLY` (with
//! `COUNT` or `UNTIL`, or neither) repeats it every year. Events with a time
//! of day are not whole days: they are left out with a warning.

use jiff::civil::Date;

use super::schedule::Closed;

/// The closed ranges of `text`, and warnings for what was left out.
pub fn closed_dates(text: &str) -> Result<(Vec<Closed>, Vec<String>), String> {
    // Unfold: a line that starts with a space or tab continues the last one.
    let mut lines: Vec<String> = Vec::new();
    for raw in text.split('\n') {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        match raw.strip_prefix([' ', '\t']) {
            Some(rest) if !lines.is_empty() => lines.last_mut().unwrap().push_str(rest),
            _ => lines.push(raw.to_string()),
        }
    }
    if !lines
        .iter()
        .any(|l| l.trim().eq_ignore_ascii_case("BEGIN:VCALENDAR"))
    {
        return Err("not an iCalendar file (no BEGIN:VCALENDAR)".into());
    }
    let mut closed = Vec::new();
    let mut warnings = Vec::new();
    let mut event: Option<Vec<(String, String, String)>> = None;
    for (n, line) in lines.iter().enumerate() {
        let Some((head, value)) = line.split_once(':') else {
            continue;
        };
        let (name, params) = head.split_once(';').unwrap_or((head, ""));
        let name = name.trim().to_ascii_uppercase();
        match (name.as_str(), value.trim().to_ascii_uppercase().as_str()) {
            ("BEGIN", "VEVENT") => event = Some(Vec::new()),
            ("END", "VEVENT") => {
                let props = event.take().unwrap_or_default();
                match one_event(&props) {
                    Ok(Some(c)) => closed.push(c),
                    Ok(None) => warnings.push(format!(
                        "line {}: an event with a time of day (not a whole day) is left out",
                        n + 1
                    )),
                    Err(e) => return Err(format!("the event ending at line {}: {e}", n + 1)),
                }
            }
            _ => {
                if let Some(props) = event.as_mut() {
                    props.push((name, params.to_string(), value.trim().to_string()));
                }
            }
        }
    }
    Ok((closed, warnings))
}

fn basic_date(value: &str) -> Option<Date> {
    if value.len() != 8 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year: i16 = value[0..4].parse().ok()?;
    let month: i8 = value[4..6].parse().ok()?;
    let day: i8 = value[6..8].parse().ok()?;
    Date::new(year, month, day).ok()
}

/// One VEVENT's closed range; `None` when it is not an all-day event.
fn one_event(props: &[(String, String, String)]) -> Result<Option<Closed>, String> {
    let get = |name: &str| props.iter().find(|(n, _, _)| n == name);
    let Some((_, _, start)) = get("DTSTART") else {
        return Err("no DTSTART".into());
    };
    let Some(start) = basic_date(start) else {
        return Ok(None);
    };
    // DTEND of an all-day event is exclusive; without it the event is one day.
    let end = match get("DTEND") {
        Some((_, _, end)) => {
            let end = basic_date(end).ok_or_else(|| format!("DTEND {end} is not a date"))?;
            end.yesterday().map_err(|e| e.to_string())?.max(start)
        }
        None => start,
    };
    let Some((_, _, rule)) = get("RRULE") else {
        return Ok(Some(Closed::Dates(start, end)));
    };
    let mut freq = None;
    let mut last_year = i16::MAX;
    for part in rule.split(';') {
        let (key, value) = part.split_once('=').unwrap_or((part, ""));
        match key.to_ascii_uppercase().as_str() {
            "FREQ" => freq = Some(value.to_ascii_uppercase()),
            "COUNT" => {
                let count: i16 = value
                    .parse()
                    .ok()
                    .filter(|c| *c >= 1)
                    .ok_or_else(|| format!("RRULE COUNT={value} is not a positive number"))?;
                last_year = start.year().saturating_add(count - 1);
            }
            "UNTIL" => {
                let until = basic_date(value.get(..8).unwrap_or(value))
                    .ok_or_else(|| format!("RRULE UNTIL={value} is not a date"))?;
                last_year = until.year();
            }
            "INTERVAL" if value == "1" => {}
            // BYMONTH/BYMONTHDAY equal to DTSTART's are what FREQ=YEARLY means anyway.
            "BYMONTH" if value.parse::<i8>().ok() == Some(start.month()) => {}
            "BYMONTHDAY" if value.parse::<i8>().ok() == Some(start.day()) => {}
            _ => {
                return Err(format!(
                    "RRULE:{rule} is not supported (only FREQ=YEARLY, with COUNT or UNTIL)"
                ));
            }
        }
    }
    if freq.as_deref() != Some("YEARLY") {
        return Err(format!(
            "RRULE:{rule} is not supported (only FREQ=YEARLY, with COUNT or UNTIL)"
        ));
    }
    Ok(Some(Closed::Yearly {
        from: (start.month(), start.day()),
        to: (end.month(), end.day()),
        first_year: start.year(),
        last_year,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    const ICS: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\n\
BEGIN:VEVENT\r\nSUMMARY:Tag der Arbeit\r\nDTSTART;VALUE=DATE:20260501\r\nDTEND;VALUE=DATE:20260502\r\nRRULE:FREQ=YEARLY\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nSUMMARY:Betriebsferien\r\nDTSTART;VALUE=DATE:20261224\r\nDTEND;VALUE=DATE:\r\n 20261227\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nSUMMARY:Team meeting\r\nDTSTART:20261203T090000Z\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nDTSTART;VALUE=DATE:20261003\r\nRRULE:FREQ=YEARLY;COUNT=2\r\nEND:VEVENT\r\n\
END:VCALENDAR\r\n";

    #[test]
    fn all_day_events_and_yearly_rules_become_closed_dates() {
        let (closed, warnings) = closed_dates(ICS).unwrap();
        assert_eq!(closed.len(), 3, "{closed:?}");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("time of day"));
        let contains = |d| closed.iter().any(|c| c.contains(d));
        assert!(contains(date(2026, 5, 1)) && contains(date(2035, 5, 1)));
        assert!(!contains(date(2025, 5, 1)), "before DTSTART's year");
        assert!(!contains(date(2026, 5, 2)));
        // DTEND is exclusive: 24, 25, 26 (the folded line included).
        assert!(contains(date(2026, 12, 26)) && !contains(date(2026, 12, 27)));
        assert!(!contains(date(2027, 12, 24)), "not yearly");
        assert!(
            contains(date(2027, 10, 3)) && !contains(date(2028, 10, 3)),
            "COUNT=2"
        );
    }

    #[test]
    fn unsupported_rules_and_other_files_are_refused() {
        let weekly = ICS.replace("FREQ=YEARLY\r\n", "FREQ=WEEKLY\r\n");
        assert!(closed_dates(&weekly).unwrap_err().contains("not supported"));
        assert!(
            closed_dates("hello")
                .unwrap_err()
                .contains("not an iCalendar")
        );
    }
}
