//! Schedules: weekly opening hours by wall clock, and closed dates.
//!
//! An instant is open when its local date and time fall in an `open` range
//! of that weekday and its local date is not closed. Ranges are
//! `[start, end)` in minutes of the local day; `24:00` may end one; a range
//! whose end is before its start runs into the next day (`fri 22:00-02:00`
//! is Friday 22:00–24:00 and Saturday 00:00–02:00). Local time is wall-clock
//! time: on a DST switch day a range over the skipped hour is an hour
//! shorter, and the repeated hour is inside it twice.

use jiff::civil::{Date, DateTime, Weekday};

/// Minutes in a day: the end of a range that ends at `24:00`.
const DAY_MINUTES: u16 = 24 * 60;

/// A compiled schedule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schedule {
    /// Per weekday (Monday = 0) the open intervals, in minutes `[start, end)`.
    week: [Vec<(u16, u16)>; 7],
    closed: Vec<Closed>,
}

/// Days the schedule is closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// From one date to another, both included.
    Dates(Date, Date),
    /// Every year from month/day to month/day, both included (wrapping over
    /// the year end when `to` is before `from`), in the years given.
    Yearly {
        from: (i8, i8),
        to: (i8, i8),
        first_year: i16,
        last_year: i16,
    },
}

impl Closed {
    pub(crate) fn contains(&self, date: Date) -> bool {
        match *self {
            Closed::Dates(from, to) => from <= date && date <= to,
            Closed::Yearly {
                from,
                to,
                first_year,
                last_year,
            } => {
                let md = (date.month(), date.day());
                let year = date.year();
                if from <= to {
                    (first_year..=last_year).contains(&year) && from <= md && md <= to
                } else if md >= from {
                    // The part in the year the range starts.
                    (first_year..=last_year).contains(&year)
                } else if md <= to {
                    // The part after the year end: the range began last year.
                    (first_year..=last_year).contains(&(year - 1))
                } else {
                    false
                }
            }
        }
    }
}

fn weekday_index(day: Weekday) -> usize {
    day.to_monday_zero_offset() as usize
}

impl Schedule {
    /// Whether the schedule is open at local `at`.
    pub fn is_open(&self, at: DateTime) -> bool {
        let date = at.date();
        if self.closed.iter().any(|c| c.contains(date)) {
            return false;
        }
        let minute = at.hour() as u16 * 60 + at.minute() as u16;
        self.week[weekday_index(date.weekday())]
            .iter()
            .any(|&(start, end)| start <= minute && minute < end)
    }

    pub fn add_closed(&mut self, closed: Closed) {
        self.closed.push(closed);
    }

    /// The number of open ranges and closed entries, for summaries.
    pub fn counts(&self) -> (usize, usize) {
        (self.week.iter().map(Vec::len).sum(), self.closed.len())
    }

    /// Parses and adds one `open` entry: `DAYS HH:MM-HH:MM`.
    pub fn add_open(&mut self, entry: &str) -> Result<(), String> {
        let (days, times) = entry
            .trim()
            .split_once(char::is_whitespace)
            .ok_or_else(|| {
                format!("'{entry}' is not 'DAYS HH:MM-HH:MM' (e.g. \"mon-fri 08:00-17:00\")")
            })?;
        let days = parse_days(days)?;
        let (start, end) = times
            .trim()
            .split_once('-')
            .ok_or_else(|| format!("'{}' is not a time range HH:MM-HH:MM", times.trim()))?;
        let start = parse_time(start, false)?;
        let end = parse_time(end, true)?;
        if start == end {
            return Err(format!("'{}' is an empty range", times.trim()));
        }
        for day in days {
            if start < end {
                self.week[day].push((start, end));
            } else {
                // Runs into the next day.
                self.week[day].push((start, DAY_MINUTES));
                if end > 0 {
                    self.week[(day + 1) % 7].push((0, end));
                }
            }
        }
        Ok(())
    }
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn day(name: &str) -> Result<usize, String> {
    let lower = name.trim().to_ascii_lowercase();
    DAY_NAMES.iter().position(|d| *d == lower).ok_or_else(|| {
        format!(
            "'{}' is not a day (mon, tue, wed, thu, fri, sat, sun)",
            name.trim()
        )
    })
}

/// `mon`, `mon-fri`, `mon,wed`, `mon-wed,fri`, `fri-mon` (wrapping).
fn parse_days(spec: &str) -> Result<Vec<usize>, String> {
    let mut days = Vec::new();
    for part in spec.split(',') {
        match part.split_once('-') {
            Some((from, to)) => {
                let (from, to) = (day(from)?, day(to)?);
                let mut d = from;
                loop {
                    days.push(d);
                    if d == to {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => days.push(day(part)?),
        }
    }
    days.sort_unstable();
    days.dedup();
    Ok(days)
}

/// `HH:MM` as minutes of the day; `24:00` only as a range's end.
fn parse_time(s: &str, is_end: bool) -> Result<u16, String> {
    let s = s.trim();
    let bad =
        || format!("'{s}' is not a time of day HH:MM (00:00 to 23:59, or 24:00 to end a range)");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u16 = h.parse().map_err(|_| bad())?;
    let m: u16 = m.parse().map_err(|_| bad())?;
    if m > 59 || h > 24 || (h == 24 && (m != 0 || !is_end)) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

fn parse_date(s: &str) -> Result<Date, String> {
    let s = s.trim();
    s.parse::<Date>()
        .ok()
        .filter(|_| s.len() == 10)
        .ok_or_else(|| format!("'{s}' is not a date YYYY-MM-DD"))
}

fn parse_month_day(s: &str) -> Result<(i8, i8), String> {
    let s = s.trim();
    let bad = || format!("'{s}' is not a date YYYY-MM-DD or a yearly date MM-DD");
    let (m, d) = s.split_once('-').ok_or_else(bad)?;
    if m.len() != 2 || d.len() != 2 {
        return Err(bad());
    }
    let (m, d): (i8, i8) = (m.parse().map_err(|_| bad())?, d.parse().map_err(|_| bad())?);
    // 2024 is a leap year: 02-29 is a yearly date (closed in leap years).
    Date::new(2024, m, d).map_err(|_| bad())?;
    Ok((m, d))
}

/// One `closed` entry: `YYYY-MM-DD`, `YYYY-MM-DD..YYYY-MM-DD`, `MM-DD` or
/// `MM-DD..MM-DD` (every year).
pub fn parse_closed(entry: &str) -> Result<Closed, String> {
    let entry = entry.trim();
    let (from, to) = match entry.split_once("..") {
        Some((from, to)) => (from.trim(), to.trim()),
        None => (entry, entry),
    };
    if from.len() == 5 && to.len() == 5 {
        return Ok(Closed::Yearly {
            from: parse_month_day(from)?,
            to: parse_month_day(to)?,
            first_year: i16::MIN,
            last_year: i16::MAX,
        });
    }
    let (from, to) = (parse_date(from)?, parse_date(to)?);
    if to < from {
        return Err(format!("'{entry}' ends before it starts"));
    }
    Ok(Closed::Dates(from, to))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn schedule(open: &[&str], closed: &[&str]) -> Schedule {
        let mut s = Schedule::default();
        for o in open {
            s.add_open(o).unwrap();
        }
        for c in closed {
            s.add_closed(parse_closed(c).unwrap());
        }
        s
    }

    #[test]
    fn weekday_ranges_are_half_open() {
        let s = schedule(
            &[
                "mon-fri 08:00-12:00",
                "mon-fri 13:00-17:30",
                "sat 10:00-14:00",
            ],
            &[],
        );
        // 2026-12-07 is a Monday.
        assert!(!s.is_open(date(2026, 12, 7).at(7, 59, 59, 0)));
        assert!(s.is_open(date(2026, 12, 7).at(8, 0, 0, 0)));
        assert!(s.is_open(date(2026, 12, 7).at(11, 59, 59, 999)));
        assert!(!s.is_open(date(2026, 12, 7).at(12, 0, 0, 0)));
        assert!(s.is_open(date(2026, 12, 11).at(17, 29, 0, 0)));
        assert!(!s.is_open(date(2026, 12, 11).at(17, 30, 0, 0)));
        assert!(s.is_open(date(2026, 12, 12).at(10, 0, 0, 0)));
        assert!(!s.is_open(date(2026, 12, 13).at(11, 0, 0, 0)));
    }

    #[test]
    fn a_range_across_midnight_runs_into_the_next_day() {
        let s = schedule(&["fri 22:00-02:00", "sun 20:00-24:00"], &[]);
        assert!(s.is_open(date(2026, 12, 11).at(23, 0, 0, 0))); // Friday
        assert!(s.is_open(date(2026, 12, 12).at(1, 59, 0, 0))); // Saturday
        assert!(!s.is_open(date(2026, 12, 12).at(2, 0, 0, 0)));
        assert!(!s.is_open(date(2026, 12, 11).at(1, 0, 0, 0))); // Friday early: no
        assert!(s.is_open(date(2026, 12, 13).at(23, 59, 59, 0))); // Sunday to 24:00
        assert!(!s.is_open(date(2026, 12, 14).at(0, 0, 0, 0)));
    }

    #[test]
    fn day_lists_and_wrapping_ranges() {
        assert_eq!(parse_days("mon,wed").unwrap(), vec![0, 2]);
        assert_eq!(parse_days("fri-mon").unwrap(), vec![0, 4, 5, 6]);
        assert_eq!(parse_days("mon-wed,fri").unwrap(), vec![0, 1, 2, 4]);
        assert!(parse_days("funday").unwrap_err().contains("not a day"));
    }

    #[test]
    fn bad_times_are_refused() {
        let mut s = Schedule::default();
        for (entry, says) in [
            ("mon 25:00-26:00", "not a time of day"),
            ("mon 08:60-09:00", "not a time of day"),
            ("mon 24:00-08:00", "not a time of day"),
            ("mon 08:00-08:00", "empty range"),
            ("mon", "not 'DAYS HH:MM-HH:MM'"),
            ("mon 8-9", "not a time of day"),
            ("xyz 08:00-09:00", "not a day"),
        ] {
            let e = s.add_open(entry).unwrap_err();
            assert!(e.contains(says), "{entry}: {e}");
        }
    }

    #[test]
    fn closed_dates_ranges_and_yearly_dates() {
        let s = schedule(
            &["mon-sun 00:00-24:00"],
            &[
                "2026-12-24",
                "2026-12-31..2027-01-02",
                "05-01",
                "12-30..01-01",
            ],
        );
        assert!(!s.is_open(date(2026, 12, 24).at(12, 0, 0, 0)));
        assert!(s.is_open(date(2027, 12, 24).at(12, 0, 0, 0)));
        assert!(!s.is_open(date(2027, 1, 2).at(23, 0, 0, 0)));
        assert!(s.is_open(date(2027, 1, 3).at(0, 0, 0, 0)));
        for year in [2026, 2027, 2031] {
            assert!(!s.is_open(date(year, 5, 1).at(9, 0, 0, 0)));
            assert!(s.is_open(date(year, 5, 2).at(9, 0, 0, 0)));
        }
        // MM-DD..MM-DD across the year end, in every year.
        assert!(!s.is_open(date(2029, 12, 30).at(9, 0, 0, 0)));
        assert!(!s.is_open(date(2030, 1, 1).at(9, 0, 0, 0)));
        assert!(s.is_open(date(2030, 1, 2).at(9, 0, 0, 0)));
        assert!(s.is_open(date(2029, 12, 29).at(9, 0, 0, 0)));
    }

    #[test]
    fn bad_closed_dates_are_refused() {
        for (entry, says) in [
            ("2026-02-30", "not a date"),
            ("2026-13-01", "not a date"),
            ("02-30", "not a date"),
            ("2027-01-02..2026-12-31", "ends before it starts"),
            ("tomorrow", "not a date"),
        ] {
            let e = parse_closed(entry).unwrap_err();
            assert!(e.contains(says), "{entry}: {e}");
        }
        assert!(parse_closed("02-29").is_ok());
    }
}
