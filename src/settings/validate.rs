//! What an admin may enter, normalised; errors are sentences saying what to fix.

use crate::{
    decide::{BlockEntry, RoutingRule},
    numbers::{normalize_number, normalize_pattern},
};

pub const MAX_NOTE: usize = 500;

fn note(note: &str) -> Result<String, String> {
    let note = note.trim();
    if note.chars().count() > MAX_NOTE {
        return Err(format!("the note is longer than {MAX_NOTE} characters"));
    }
    Ok(note.to_string())
}

/// A block-list entry: a number, a `*` pattern, or `anonymous`.
pub fn block_entry(pattern: &str, note_text: &str, cc: &str) -> Result<BlockEntry, String> {
    let pattern = normalize_pattern(pattern, cc).map_err(|e| format!("block entry: {e}"))?;
    Ok(BlockEntry {
        pattern,
        note: note(note_text)?,
    })
}

/// A caller ID: exactly one phone number.
pub fn caller_id(input: &str, cc: &str) -> Result<String, String> {
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
    let dest = normalize_pattern(dest, cc).map_err(|e| format!("routing destination: {e}"))?;
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
}
