//! What an admin may enter, normalised; errors are sentences saying what to fix.

use super::{ECHO_CHARS, shown};
use crate::{
    numbers::{normalize_number, normalize_pattern},
    settings::{BlockEntry, RoutingRule},
};

pub const MAX_NOTE: usize = 500;

/// A `*` pattern with fewer digits than this blocks a whole country or more:
/// every country code has at most 3 digits, and one area needs at least 4.
pub const MIN_BLOCK_PATTERN_DIGITS: usize = 4;

/// Numbers and patterns longer than this are refused before they are read,
/// so no error repeats a huge input ([`ECHO_CHARS`] at most).
fn bounded(input: &str) -> Result<&str, String> {
    let n = input.chars().count();
    if n > ECHO_CHARS {
        return Err(format!(
            "'{}' is too long for a phone number or pattern ({n} characters, at most {ECHO_CHARS})",
            shown(input)
        ));
    }
    Ok(input)
}

/// Why the stored block pattern `pattern` would block every caller or
/// nearly (a `*` pattern with fewer than [`MIN_BLOCK_PATTERN_DIGITS`]
/// digits), or `None` for a pattern narrow enough to add without `force`.
pub fn blocks_too_many(pattern: &str) -> Option<String> {
    if !pattern.contains('*') {
        return None;
    }
    let digits = pattern.chars().filter(char::is_ascii_digit).count();
    if digits >= MIN_BLOCK_PATTERN_DIGITS {
        return None;
    }
    let prefix: String = pattern.chars().take_while(char::is_ascii_digit).collect();
    let whom = if digits == 0 {
        "every call".to_string()
    } else if prefix.is_empty() {
        format!("every call from a number that matches {pattern}")
    } else {
        match country_name(&prefix) {
            Some(name) => format!("every call from {name}"),
            None => format!(
                "every call from a number starting with {prefix} (a whole country code or more)"
            ),
        }
    };
    Some(format!("pattern {pattern} blocks {whom}"))
}

/// Names of the country codes a short pattern most likely means.
fn country_name(code: &str) -> Option<&'static str> {
    Some(match code {
        "1" => "the USA, Canada and the Caribbean (+1)",
        "30" => "Greece",
        "31" => "the Netherlands",
        "32" => "Belgium",
        "33" => "France",
        "34" => "Spain",
        "36" => "Hungary",
        "39" => "Italy",
        "40" => "Romania",
        "41" => "Switzerland",
        "43" => "Austria",
        "44" => "the United Kingdom",
        "45" => "Denmark",
        "46" => "Sweden",
        "47" => "Norway",
        "48" => "Poland",
        "49" => "Germany",
        "352" => "Luxembourg",
        "353" => "Ireland",
        "358" => "Finland",
        "420" => "the Czech Republic",
        "423" => "Liechtenstein",
        "7" => "Russia and Kazakhstan (+7)",
        "90" => "Turkey",
        _ => return None,
    })
}

fn note(note: &str) -> Result<String, String> {
    let note = note.trim();
    if note.chars().count() > MAX_NOTE {
        return Err(format!("the note is longer than {MAX_NOTE} characters"));
    }
    Ok(note.to_string())
}

/// A block-list entry: a number, a `*` pattern, or `anonymous`.
pub fn block_entry(pattern: &str, note_text: &str, cc: &str) -> Result<BlockEntry, String> {
    let pattern =
        normalize_pattern(bounded(pattern)?, cc).map_err(|e| format!("block entry: {e}"))?;
    Ok(BlockEntry {
        pattern,
        note: note(note_text)?,
    })
}

/// A caller ID: exactly one phone number.
pub fn caller_id(input: &str, cc: &str) -> Result<String, String> {
    let input = bounded(input)?;
    if input.contains('*') {
        return Err(format!(
            "caller ID '{}' must be one phone number, not a pattern",
            input.trim()
        ));
    }
    match normalize_number(input, cc) {
        Ok(n) if n == "anonymous" => {
            Err("caller ID must be a phone number; 'anonymous' is not one".to_string())
        }
        Ok(n) => Ok(n),
        Err(e) => Err(format!("caller ID must be a phone number: {e}")),
    }
}

/// A routing rule: destination pattern and the caller ID to use for it.
pub fn routing_rule(
    dest: &str,
    caller: &str,
    note_text: &str,
    cc: &str,
) -> Result<RoutingRule, String> {
    let dest =
        normalize_pattern(bounded(dest)?, cc).map_err(|e| format!("routing destination: {e}"))?;
    if dest == "anonymous" {
        return Err("routing destination must be a number or pattern, not 'anonymous'".into());
    }
    Ok(RoutingRule {
        dest,
        caller_id: caller_id(caller, cc)?,
        note: note(note_text)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_normalised_and_bad_ones_explained() {
        assert_eq!(
            block_entry("+49 30 1234", " spam ", "49").unwrap().pattern,
            "49301234"
        );
        assert_eq!(
            block_entry("+49 30 1234", " spam ", "49").unwrap().note,
            "spam"
        );
        assert!(block_entry("12ab", "", "49").unwrap_err().contains("12ab"));
        assert!(block_entry("", "", "49").unwrap_err().contains("empty"));
        assert!(
            block_entry("1", &"x".repeat(501), "49")
                .unwrap_err()
                .contains("500")
        );
        let rule = routing_rule("030*", "030 777", "", "49").unwrap();
        assert_eq!(
            (rule.dest.as_str(), rule.caller_id.as_str()),
            ("4930*", "4930777")
        );
        assert!(
            routing_rule("49*", "49*", "", "49")
                .unwrap_err()
                .contains("not a pattern")
        );
        assert!(
            routing_rule("49*", "anonymous", "", "49")
                .unwrap_err()
                .contains("anonymous")
        );
        assert!(
            routing_rule("49*", "", "", "49")
                .unwrap_err()
                .contains("phone number")
        );
        assert!(routing_rule("anonymous", "4930", "", "49").is_err());
    }

    #[test]
    fn long_input_is_refused_with_a_short_echo() {
        let huge = "1".repeat(3_000_000);
        for e in [
            block_entry(&huge, "", "49").unwrap_err(),
            caller_id(&huge, "49").unwrap_err(),
            routing_rule(&huge, "4930", "", "49").unwrap_err(),
        ] {
            assert!(e.len() < 200, "{}", e.len());
            assert!(e.contains("too long") && e.contains('…'), "{e}");
        }
    }

    #[test]
    fn patterns_that_block_a_country_or_more_are_named() {
        assert_eq!(
            blocks_too_many("49*").unwrap(),
            "pattern 49* blocks every call from Germany"
        );
        assert!(blocks_too_many("*").unwrap().contains("every call"));
        assert!(
            blocks_too_many("493*")
                .unwrap()
                .contains("starting with 493")
        );
        assert!(blocks_too_many("*12").is_some());
        for narrow in ["4930*", "4930123456", "anonymous", "49*1234", "1212*"] {
            assert_eq!(blocks_too_many(narrow), None, "{narrow}");
        }
    }
}
