//! Decoding sipgate's `application/x-www-form-urlencoded` bodies, strictly:
//! repeated `user%5B%5D` keys, `+` for space, empty values kept, and a clear
//! error for malformed percent-encoding or bytes that are not UTF-8.
//!
//! The WHATWG decoders (`form_urlencoded`, `serde_urlencoded`) are lenient
//! where this one must not be (a stray `%` stays literal, bytes that are not
//! UTF-8 become U+FFFD). So each key and value is checked and decoded in one
//! pass here, with `percent_encoding` doing the percent-decoding; what it
//! accepts decodes as those crates would (a property test compares them).

use percent_encoding::percent_decode;

use super::event::{Direction, Event, EventKind};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error(
        "body is not form-encoded: malformed percent-encoding at byte {0} ('%' must be followed by two hex digits)"
    )]
    BadPercentEncoding(usize),
    #[error("body is not valid UTF-8 after percent-decoding")]
    NotUtf8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("missing 'event' field")]
    MissingEvent,
    #[error("unknown event '{0}' (expected newCall, answer, hangup or dtmf)")]
    UnknownEvent(String),
    #[error("missing 'callId'")]
    MissingCallId,
    #[error("missing 'direction' (a newCall must say 'in' or 'out')")]
    MissingDirection,
    #[error("direction '{0}' is not 'in' or 'out'")]
    BadDirection(String),
}

/// One key or value starting at byte `offset` of the body, decoded: `+`
/// is a space, every `%` is followed by two hex digits, and the decoded
/// bytes are UTF-8.
fn decode_part(part: &[u8], offset: usize) -> Result<String, FormError> {
    let mut plain = true;
    for (i, b) in part.iter().enumerate() {
        match *b {
            b'%' => {
                let hex = |j: usize| part.get(i + j).is_some_and(u8::is_ascii_hexdigit);
                if !(hex(1) && hex(2)) {
                    return Err(FormError::BadPercentEncoding(offset + i));
                }
                plain = false;
            }
            b'+' => plain = false,
            _ => {}
        }
    }
    let bytes = if plain {
        part.to_vec()
    } else {
        let spaced: Vec<u8> = part
            .iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect();
        percent_decode(&spaced).collect()
    };
    String::from_utf8(bytes).map_err(|_| FormError::NotUtf8)
}

/// Decodes a form body into (key, value) pairs in wire order, in one pass.
/// A segment without `=` is a key with an empty value; empty segments are
/// skipped. The first fault in wire order (key before value, segment by
/// segment) is the one reported, and nothing of a refused body is kept.
pub fn parse_form(body: &[u8]) -> Result<Vec<(String, String)>, FormError> {
    let mut fields = Vec::with_capacity(body.iter().filter(|b| **b == b'&').count() + 1);
    let mut offset = 0;
    for segment in body.split(|b| *b == b'&') {
        if !segment.is_empty() {
            let (key, value, value_offset) = match segment.iter().position(|b| *b == b'=') {
                Some(eq) => (&segment[..eq], &segment[eq + 1..], offset + eq + 1),
                None => (segment, &segment[..0], offset + segment.len()),
            };
            fields.push((decode_part(key, offset)?, decode_part(value, value_offset)?));
        }
        offset += segment.len() + 1;
    }
    Ok(fields)
}

/// `user[]`, `user`, `user[0]`, `user[][0]` all name the list `user`.
fn list_name(key: &str) -> &str {
    match key.find('[') {
        Some(i) if key.ends_with(']') => &key[..i],
        _ => key,
    }
}

impl Event {
    /// Builds the typed event from decoded fields, keeping every field in `raw`.
    pub fn from_form(fields: Vec<(String, String)>) -> Result<Event, EventError> {
        let get = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let kind_name = get("event")
            .filter(|e| !e.is_empty())
            .ok_or(EventError::MissingEvent)?;
        let kind = EventKind::parse(kind_name)
            .ok_or_else(|| EventError::UnknownEvent(kind_name.chars().take(64).collect()))?;
        let call_id = get("callId")
            .filter(|c| !c.is_empty())
            .ok_or(EventError::MissingCallId)?;
        let direction = match get("direction").filter(|d| !d.is_empty()) {
            Some(d) => Some(
                Direction::parse(d)
                    .ok_or_else(|| EventError::BadDirection(d.chars().take(64).collect()))?,
            ),
            None if kind == EventKind::NewCall => return Err(EventError::MissingDirection),
            None => None,
        };
        let list = |name: &str| -> Vec<String> {
            fields
                .iter()
                .filter(|(k, _)| list_name(k) == name)
                .map(|(_, v)| v.clone())
                .collect()
        };
        let text = |name: &str| get(name).unwrap_or_default().to_string();
        Ok(Event {
            kind,
            call_id: call_id.to_string(),
            direction,
            from: text("from"),
            to: text("to"),
            orig_call_id: text("origCallId"),
            xcid: text("xcid"),
            users: list("user"),
            user_ids: list("userId"),
            full_user_ids: list("fullUserId"),
            answering_number: text("answeringNumber"),
            cause: text("cause"),
            dtmf: text("dtmf"),
            diversion: text("diversion"),
            raw: fields,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const CAPTURED: &str = "event=newCall&direction=in&from=491776249000&to=4928559389086&callId=54566B150B0C0D3A5D534D5F565D7C5F54535A5C5B53525A7E5B5D5745504457444C425D5057&origCallId=54566B150B0C0D3A5D534D5F565D7C5F54535A5C5B53525A7E5B5D5745504457444C425D5057&user%5B%5D=&xcid=8419b3450b75cd19";

    fn event(body: &str) -> Event {
        Event::from_form(parse_form(body.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn the_captured_push_decodes_with_its_empty_user() {
        let e = event(CAPTURED);
        assert_eq!(e.kind, EventKind::NewCall);
        assert_eq!(e.direction, Some(Direction::In));
        assert_eq!(e.from, "491776249000");
        assert_eq!(e.to, "4928559389086");
        assert_eq!(e.orig_call_id, e.call_id);
        assert_eq!(e.users, [""]);
        assert!(e.user_ids.is_empty());
        assert_eq!(e.xcid, "8419b3450b75cd19");
        assert_eq!(e.raw.len(), 8);
        assert_eq!(e.raw[6], ("user[]".to_string(), String::new()));
    }

    #[test]
    fn documented_bodies_decode() {
        let group = event(
            "event=newCall&from=492111234567&to=4915791234567&direction=in&callId=123456&user%5B%5D=Alice&user%5B%5D=Bob&userId%5B%5D=w0&userId%5B%5D=w1&fullUserId%5B%5D=1234567w0&fullUserId%5B%5D=1234567w1",
        );
        assert_eq!(group.users, ["Alice", "Bob"]);
        assert_eq!(group.user_ids, ["w0", "w1"]);
        assert_eq!(group.full_user_ids, ["1234567w0", "1234567w1"]);

        let out = event(
            "event=newCall&direction=out&from=4930600000000&to=4912347114711&callId=8621106404543334274-3&user%5B%5D=user+1",
        );
        assert_eq!(out.direction, Some(Direction::Out));
        assert_eq!(out.users, ["user 1"]);

        let answer = event(
            "event=answer&callId=123456&user=John+Doe&userId=w0&fullUserId=1234567w0&from=492111234567&to=4915791234567&direction=in&answeringNumber=21199999999",
        );
        assert_eq!(answer.kind, EventKind::Answer);
        assert_eq!(answer.users, ["John Doe"]);
        assert_eq!(answer.user_ids, ["w0"]);
        assert_eq!(answer.answering_number, "21199999999");

        let hangup = event(
            "event=hangup&cause=normalClearing&callId=123456&from=492111234567&to=4915791234567&direction=in&answeringNumber=4921199999999",
        );
        assert_eq!(hangup.cause, "normalClearing");
        assert!(hangup.users.is_empty());

        let dtmf = event("event=dtmf&dtmf=1&callId=123456");
        assert_eq!(
            (dtmf.kind, dtmf.direction, dtmf.dtmf.as_str()),
            (EventKind::Dtmf, None, "1")
        );
        let no_digits = event(
            "event=dtmf&callId=54566B150B0C0D3A5D564D5F565F735B54565B54505E535E78595756455045544647465F5A57",
        );
        assert_eq!(no_digits.dtmf, "");

        let indexed =
            event("callId=x&direction=in&event=newCall&user%5B%5D%5B0%5D=TestUser&userId%5B0%5D=1");
        assert_eq!(indexed.users, ["TestUser"]);
        assert_eq!(indexed.user_ids, ["1"]);
        let unknown_cause = event("event=hangup&callId=1&cause=chanunavail");
        assert_eq!(unknown_cause.cause, "chanunavail");
    }

    #[test]
    fn edge_cases_of_the_encoding() {
        assert_eq!(
            parse_form(b"a=1&&b&c=&=d&").unwrap(),
            [("a", "1"), ("b", ""), ("c", ""), ("", "d")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert_eq!(parse_form(b"k=a%2Bb+c").unwrap()[0].1, "a+b c");
        assert_eq!(parse_form(b"k=%C3%BC").unwrap()[0].1, "ü");
        assert_eq!(parse_form(b"k=%zz"), Err(FormError::BadPercentEncoding(2)));
        assert_eq!(parse_form(b"k=%4"), Err(FormError::BadPercentEncoding(2)));
        assert_eq!(parse_form(b"k=%FF"), Err(FormError::NotUtf8));
        assert_eq!(parse_form(b"k=\xff"), Err(FormError::NotUtf8));
    }

    #[test]
    fn the_first_fault_in_wire_order_is_reported() {
        assert_eq!(parse_form(b"k=\xff&a=%zz"), Err(FormError::NotUtf8));
        assert_eq!(
            parse_form(b"%zz=\xff"),
            Err(FormError::BadPercentEncoding(0))
        );
        assert_eq!(
            parse_form(b"a=1&&k%=1"),
            Err(FormError::BadPercentEncoding(6))
        );
        // A character split by '&' or '=' is not UTF-8 in either half.
        assert_eq!(parse_form(b"k=%C3&%BC"), Err(FormError::NotUtf8));
        assert_eq!(parse_form(b"%C3=%BC"), Err(FormError::NotUtf8));
    }

    #[test]
    fn missing_and_wrong_fields_say_what_is_wrong() {
        let err = |body: &str| Event::from_form(parse_form(body.as_bytes()).unwrap()).unwrap_err();
        assert_eq!(err("callId=1"), EventError::MissingEvent);
        assert_eq!(err("event=&callId=1"), EventError::MissingEvent);
        assert_eq!(
            err("event=ringing&callId=1"),
            EventError::UnknownEvent("ringing".into())
        );
        assert_eq!(err("event=hangup"), EventError::MissingCallId);
        assert_eq!(err("event=hangup&callId="), EventError::MissingCallId);
        assert_eq!(err("event=newCall&callId=1"), EventError::MissingDirection);
        assert_eq!(
            err("event=answer&callId=1&direction=up"),
            EventError::BadDirection("up".into())
        );
        assert!(
            err("event=ringing&callId=1")
                .to_string()
                .contains("expected newCall")
        );
    }

    fn encode(s: &str) -> String {
        s.split(' ')
            .map(|p| {
                percent_encoding::utf8_percent_encode(p, percent_encoding::NON_ALPHANUMERIC)
                    .to_string()
            })
            .collect::<Vec<_>>()
            .join("+")
    }

    proptest! {
        #[test]
        fn encoded_pairs_round_trip(pairs in proptest::collection::vec(("\\PC{0,12}", "\\PC{0,12}"), 0..8)) {
            let body = pairs
                .iter()
                .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
                .collect::<Vec<_>>()
                .join("&");
            let decoded = parse_form(body.as_bytes()).unwrap();
            // Empty segments ("=" with empty key and value) are kept as ("", "").
            prop_assert_eq!(decoded, pairs);
        }

        /// What is accepted decodes as the WHATWG decoder decodes it; what
        /// is refused has a stray `%` or bytes that are not UTF-8.
        #[test]
        fn accepted_bodies_decode_as_serde_urlencoded_does(
            body in proptest::collection::vec(
                proptest::sample::select(b"ab=&%+2F4\xc3\xbc\xff".to_vec()),
                0..48,
            )
        ) {
            let lenient: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap();
            match parse_form(&body) {
                Ok(fields) => prop_assert_eq!(fields, lenient),
                Err(FormError::BadPercentEncoding(at)) => prop_assert_eq!(body[at], b'%'),
                Err(FormError::NotUtf8) => {
                    let replaced = |s: &String| s.contains(char::REPLACEMENT_CHARACTER);
                    let replaced = lenient.iter().any(|(k, v)| replaced(k) || replaced(v));
                    prop_assert!(replaced, "lenient: {:?}", lenient);
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(fields) = parse_form(&body) {
                let _ = Event::from_form(fields);
            }
        }
    }
}
