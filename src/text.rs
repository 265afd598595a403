//! Echoing input back in messages: short, and marked where it was cut.

/// How much of an offending input an error message repeats.
pub const ECHO_CHARS: usize = 64;

/// The first `max` characters of `input`, with "…" when there were more:
/// errors name what was wrong without sending a huge input back.
pub fn clip(input: &str, max: usize) -> String {
    match input.char_indices().nth(max) {
        None => input.to_string(),
        Some((at, _)) => format!("{}…", &input[..at]),
    }
}

/// [`clip`] at [`ECHO_CHARS`].
pub fn shown(input: &str) -> String {
    clip(input, ECHO_CHARS)
}

#[cfg(test)]
mod tests {
    use super::clip;

    #[test]
    fn clip_keeps_short_input_and_marks_cut_input() {
        assert_eq!(clip("4930", 64), "4930");
        assert_eq!(clip("äöüß", 2), "äö…");
        assert_eq!(clip(&"1".repeat(100), 64).chars().count(), 65);
    }
}
