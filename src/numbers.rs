//! Phone numbers as E.164 digits without `+` (the form sipgate sends), and
//! `*` patterns over them. What an admin types (`+49 30 1234-5`,
//! `0049 30 12345`, `030 12345`) is normalised the same way, so it matches.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NumberError(String);

const MAX_DIGITS: usize = 20;

fn is_separator(c: char) -> bool {
    matches!(c, ' ' | '\t' | '-' | '/' | '.')
}

/// Zammad's trunk-zero rule: `^(00)?(\+?\d\d)\(0?(\d*)\)` -> `\1\2\3`,
/// so `+49(0)30…` becomes `+4930…`.
fn drop_trunk_zero(s: &str) -> String {
    let b = s.as_bytes();
    let mut i = if s.starts_with("00") { 2 } else { 0 };
    if b.get(i) == Some(&b'+') {
        i += 1;
    }
    if !(b.get(i).is_some_and(u8::is_ascii_digit)
        && b.get(i + 1).is_some_and(u8::is_ascii_digit)
        && b.get(i + 2) == Some(&b'('))
    {
        return s.to_string();
    }
    let open = i + 2;
    let mut j = open + 1;
    if b.get(j) == Some(&b'0') {
        j += 1;
    }
    let digits_start = j;
    while b.get(j).is_some_and(u8::is_ascii_digit) {
        j += 1;
    }
    if b.get(j) != Some(&b')') {
        return s.to_string();
    }
    format!("{}{}{}", &s[..open], &s[digits_start..j], &s[j + 1..])
}

/// The zero of each block of Unicode decimal digits (category Nd) besides
/// ASCII, so `０３０` or `٠٣٠` read as `030`.
const DIGIT_ZEROS: &[u32] = &[
    0x0660, 0x06F0, 0x07C0, 0x0966, 0x09E6, 0x0A66, 0x0AE6, 0x0B66, 0x0BE6, 0x0C66, 0x0CE6, 0x0D66,
    0x0DE6, 0x0E50, 0x0ED0, 0x0F20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90,
    0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0, 0xFF10,
    0x104A0, 0x11066, 0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6,
];

/// Invisible format characters (Unicode category Cf, as far as they turn
/// up in text) that change nothing a person sees in a number.
fn is_format_char(c: char) -> bool {
    matches!(c,
        '\u{AD}' | '\u{600}'..='\u{605}' | '\u{61C}' | '\u{6DD}' | '\u{70F}' | '\u{180E}'
        | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

/// `input` with invisible format characters removed, Unicode digits as
/// ASCII digits, Unicode spaces as spaces and the fullwidth `+` `-` `(`
/// `)` as ASCII: a number that looks like a blocked one matches it.
pub fn fold_number(input: &str) -> std::borrow::Cow<'_, str> {
    if input.is_ascii() {
        return std::borrow::Cow::Borrowed(input);
    }
    let folded = input
        .chars()
        .filter(|c| !is_format_char(*c))
        .map(|c| {
            let code = c as u32;
            if let Some(zero) = DIGIT_ZEROS.iter().find(|&&z| (z..z + 10).contains(&code)) {
                return char::from(b'0' + (code - zero) as u8);
            }
            match c {
                '\u{FF0B}' => '+',
                '\u{FF0D}' | '\u{2010}'..='\u{2015}' | '\u{2212}' => '-',
                '\u{FF08}' => '(',
                '\u{FF09}' => ')',
                c if c.is_whitespace() => ' ',
                c => c,
            }
        })
        .collect();
    std::borrow::Cow::Owned(folded)
}

/// Normalises one number; `anonymous` (any case) stays `anonymous`.
/// Unicode look-alikes are folded first ([`fold_number`]).
pub fn normalize_number(input: &str, country_code: &str) -> Result<String, NumberError> {
    let folded = fold_number(input);
    let trimmed = folded.trim();
    if trimmed.eq_ignore_ascii_case("anonymous") {
        return Ok("anonymous".into());
    }
    if trimmed.is_empty() {
        return Err(NumberError("the number is empty".into()));
    }
    if let Some(bad) = trimmed
        .chars()
        .find(|c| !(c.is_ascii_digit() || is_separator(*c) || matches!(c, '+' | '(' | ')')))
    {
        return Err(NumberError(format!(
            "'{trimmed}' is not a phone number: '{bad}' is not allowed (only digits, spaces, +, -, /, ., ( and ))"
        )));
    }
    let compact: String = trimmed.chars().filter(|c| !is_separator(*c)).collect();
    let compact = drop_trunk_zero(&compact);
    if compact.chars().skip(1).any(|c| c == '+') || compact == "+" {
        return Err(NumberError(format!(
            "'{trimmed}' is not a phone number: '+' may only come first"
        )));
    }
    let plus = compact.starts_with('+');
    let digits: String = compact.chars().filter(char::is_ascii_digit).collect();
    let e164 = if plus {
        digits
    } else if let Some(rest) = digits.strip_prefix("00") {
        rest.to_string()
    } else if let Some(rest) = digits.strip_prefix('0') {
        format!("{country_code}{rest}")
    } else {
        digits
    };
    if e164.is_empty() {
        return Err(NumberError(format!("'{trimmed}' has no digits")));
    }
    if e164.starts_with('0') {
        return Err(NumberError(format!(
            "'{trimmed}' is not a phone number: no country code starts with 0"
        )));
    }
    if e164.len() > MAX_DIGITS {
        return Err(NumberError(format!(
            "'{trimmed}' has too many digits (at most {MAX_DIGITS})"
        )));
    }
    Ok(e164)
}

/// Normalises a pattern: digit segments separated by `*` (one or more
/// characters). The part before the first `*` is normalised like a number
/// (`030*` -> `4930*`, `+49 30*` -> `4930*`); later parts only lose separators.
pub fn normalize_pattern(input: &str, country_code: &str) -> Result<String, NumberError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(NumberError("the pattern is empty".into()));
    }
    if !trimmed.contains('*') {
        return normalize_number(trimmed, country_code);
    }
    let mut segments = trimmed.split('*');
    let first = segments.next().unwrap_or_default();
    let mut out = if first.trim().is_empty() {
        String::new()
    } else {
        let n = normalize_number(first, country_code)
            .map_err(|e| NumberError(format!("pattern '{trimmed}': {e}")))?;
        if n == "anonymous" {
            return Err(NumberError(format!(
                "pattern '{trimmed}': 'anonymous' cannot be combined with '*'"
            )));
        }
        n
    };
    for segment in segments {
        let digits: String = segment
            .chars()
            .filter(|c| !(is_separator(*c) || matches!(c, '(' | ')')))
            .collect();
        if let Some(bad) = digits.chars().find(|c| !c.is_ascii_digit()) {
            return Err(NumberError(format!(
                "pattern '{trimmed}': '{bad}' is not allowed after '*' (only digits)"
            )));
        }
        if !out.ends_with('*') {
            out.push('*');
        }
        out.push_str(&digits);
    }
    if out.chars().filter(char::is_ascii_digit).count() > MAX_DIGITS {
        return Err(NumberError(format!(
            "pattern '{trimmed}' has too many digits"
        )));
    }
    Ok(out)
}

/// Anchored glob match: `*` matches one or more characters, everything else
/// itself. No regex, no allocation, O(pattern × number) at worst.
pub fn pattern_matches(pattern: &str, number: &str) -> bool {
    let (p, s) = (pattern.as_bytes(), number.as_bytes());
    let (mut pi, mut si) = (0usize, 0usize);
    // After the last `*`: where the pattern resumes, and where the star's match ends.
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if p.get(pi) == Some(&b'*') {
            pi += 1;
            si += 1;
            star = Some((pi, si));
        } else if p.get(pi) == Some(&s[si]) {
            pi += 1;
            si += 1;
        } else if let Some((resume, end)) = star {
            pi = resume;
            si = end + 1;
            star = Some((resume, end + 1));
        } else {
            return false;
        }
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn n(s: &str) -> String {
        normalize_number(s, "49").unwrap()
    }

    #[test]
    fn zammads_examples_and_sipgates_form() {
        for (input, expected) in [
            ("+49 30 53 00 00 000", "4930530000000"),
            ("0049 1234 123456789", "491234123456789"),
            ("0271233211", "49271233211"),
            ("+49 (0) 30 60 00 00 00-0", "4930600000000"),
            ("(09)1234321", "4991234321"),
            ("1-888-407-4747", "18884074747"),
            ("+1 (949) 431 0000", "19494310000"),
            ("492111234567", "492111234567"),
            ("+49 30 1234-5", "493012345"),
            ("030 12345", "493012345"),
            ("0049301234 5", "493012345"),
            ("Anonymous", "anonymous"),
            (" 030/123.45 ", "493012345"),
        ] {
            assert_eq!(n(input), expected, "{input}");
        }
        assert_eq!(normalize_number("0301234", "41").unwrap(), "41301234");
    }

    #[test]
    fn garbage_is_refused_with_the_reason() {
        for (input, says) in [
            ("12ab", "'a' is not allowed"),
            ("", "empty"),
            ("  ", "empty"),
            ("49+30", "'+' may only come first"),
            ("+", "'+' may only come first"),
            ("()", "no digits"),
            ("+0301234", "no country code starts with 0"),
            ("000301234", "no country code starts with 0"),
            ("123456789012345678901", "too many digits"),
        ] {
            let e = normalize_number(input, "49").unwrap_err().to_string();
            assert!(e.contains(says), "{input}: {e}");
        }
    }

    #[test]
    fn patterns_normalise_their_prefix() {
        let p = |s: &str| normalize_pattern(s, "49").unwrap();
        assert_eq!(p("+49 30*"), "4930*");
        assert_eq!(p("030*"), "4930*");
        assert_eq!(p("0049*"), "49*");
        assert_eq!(p("49*"), "49*");
        assert_eq!(p("*"), "*");
        assert_eq!(p("4930**12"), "4930*12");
        assert_eq!(p("49*1 2*"), "49*12*");
        assert_eq!(p("+49 30 1234"), "49301234");
        assert_eq!(p("anonymous"), "anonymous");
        assert!(normalize_pattern("", "49").is_err());
        assert!(
            normalize_pattern("49*x", "49")
                .unwrap_err()
                .to_string()
                .contains("'x'")
        );
        assert!(normalize_pattern("4.9.*", "49").is_ok());
    }

    #[test]
    fn star_needs_at_least_one_character() {
        assert!(pattern_matches("49*", "4912347114711"));
        assert!(!pattern_matches("49*", "49"));
        assert!(pattern_matches("*", "1"));
        assert!(!pattern_matches("*", ""));
        assert!(pattern_matches("4930600000000", "4930600000000"));
        assert!(!pattern_matches("4930600000000", "49306000000001"));
        assert!(pattern_matches("49*11", "4912347114711"));
        assert!(!pattern_matches("49*11", "4911"));
        assert!(pattern_matches("4*1*1", "41111"));
        assert!(!pattern_matches("4*1*1", "4111"));
    }

    /// Straightforward recursive matcher to check the fast one against.
    fn reference(p: &[u8], s: &[u8]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some(b'*') => (1..=s.len()).any(|k| reference(&p[1..], &s[k..])),
            Some(c) => s.first() == Some(c) && reference(&p[1..], &s[1..]),
        }
    }

    proptest! {
        #[test]
        fn matcher_agrees_with_the_reference(p in "[12*]{0,8}", s in "[12]{0,10}") {
            prop_assert_eq!(pattern_matches(&p, &s), reference(p.as_bytes(), s.as_bytes()));
        }

        #[test]
        fn normalising_is_idempotent(s in "[+]?[0-9 ()/.-]{1,18}") {
            if let Ok(once) = normalize_number(&s, "49") {
                prop_assert_eq!(normalize_number(&once, "49").unwrap(), once);
            }
        }

        #[test]
        fn plus_double_zero_and_bare_forms_agree(cc in "[1-9][0-9]{0,2}", rest in "[1-9][0-9]{3,10}") {
            let bare = normalize_number(&format!("{cc}{rest}"), "49").unwrap();
            prop_assert_eq!(normalize_number(&format!("+{cc} {rest}"), "49").unwrap(), bare.clone());
            prop_assert_eq!(normalize_number(&format!("00{cc}-{rest}"), "49").unwrap(), bare);
        }

        #[test]
        fn separators_disappear(digits in "[1-9][0-9]{2,12}", seps in proptest::collection::vec("[ ./-]", 0..4)) {
            let mut spaced = digits.clone();
            for (i, sep) in seps.iter().enumerate() {
                let at = (i * 3 + 1).min(spaced.len());
                spaced.insert_str(at, sep);
            }
            prop_assert_eq!(normalize_number(&spaced, "49").unwrap(), digits);
        }

        #[test]
        fn a_pattern_without_star_matches_only_itself(a in "[0-9]{1,12}", b in "[0-9]{1,12}") {
            prop_assert!(pattern_matches(&a, &a));
            prop_assert_eq!(pattern_matches(&a, &b), a == b);
        }
    }
}

#[cfg(test)]
mod fold_tests {
    use super::*;

    #[test]
    fn look_alikes_fold_to_the_number_they_show() {
        for input in [
            "\u{200F}+49 30 123456",
            "\u{FF0B}\u{FF14}\u{FF19} 30 123456",
            "+49\u{3000}30\u{2011}123456",
            "\u{6F4}\u{6F9}30123456",
        ] {
            assert_eq!(
                normalize_number(input, "49").unwrap(),
                "4930123456",
                "{input:?}"
            );
        }
        assert_eq!(fold_number("4930"), "4930");
        assert!(
            normalize_number("49x30", "49").is_err(),
            "letters stay refused"
        );
    }
}
