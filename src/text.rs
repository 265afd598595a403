//! Echoing input back in messages: short, and marked where it was cut.

/// `url` without its password: the one of the user part
/// (`postgres://user:password@host`) and any `password=` parameter.
pub fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => {
            let user = user.split_once(':').map_or(user, |(name, _)| name);
            format!("{user}@{host}")
        }
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                        format!("{key}=<redacted>")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

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

/// `text` safe for a terminal: control characters (C0 other than newline
/// and tab, DEL, C1) and the bidirectional overrides are written as
/// `\u{…}` escapes, so a push or a note cannot move the cursor, recolour
/// the screen or reorder what is shown.
pub fn for_terminal(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        (c.is_control() && c != '\n' && c != '\t')
            || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// [`clip`] at [`ECHO_CHARS`].
pub fn shown(input: &str) -> String {
    clip(input, ECHO_CHARS)
}

#[cfg(test)]
mod tests {
    use super::{clip, for_terminal};

    #[test]
    fn terminal_output_escapes_control_characters_and_bidi_overrides() {
        assert_eq!(
            for_terminal("Support Team\tline 2\n"),
            "Support Team\tline 2\n"
        );
        assert_eq!(
            for_terminal("\u{1b}[2J\u{1b}]0;pwned\u{7}"),
            "\\u{1b}[2J\\u{1b}]0;pwned\\u{7}"
        );
        assert_eq!(
            for_terminal("a\u{202E}b\u{9b}c\r"),
            "a\\u{202e}b\\u{9b}c\\u{d}"
        );
    }

    #[test]
    fn clip_keeps_short_input_and_marks_cut_input() {
        assert_eq!(clip("4930", 64), "4930");
        assert_eq!(clip("äöüß", 2), "äö…");
        assert_eq!(clip(&"1".repeat(100), 64).chars().count(), 65);
    }
}
