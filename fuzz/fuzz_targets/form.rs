//! `parse_form` then `Event::from_form` on arbitrary bytes. Never panics;
//! every outcome agrees with a plain reading of the body:
//! - an error names a real fault (a bad `%` at the byte it names, bytes that
//!   are not UTF-8 after decoding, the missing or wrong field it names);
//! - a parse yields one pair per non-empty `&` segment, in order, and the
//!   pairs re-encoded parse back to themselves;
//! - an event's fields are the first value of their key, its lists every
//!   value of `name`, `name[]`, `name[i]`…, `raw` is every pair, and the
//!   event survives the JSON round trip the event log stores it with.

#![no_main]

use libfuzzer_sys::fuzz_target;
use percent_encoding::{NON_ALPHANUMERIC, percent_decode, utf8_percent_encode};
use sipgate_sidecar::sipgate::{
    event::{Direction, Event, EventKind},
    form::{EventError, FormError, parse_form},
};

fn encode(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

fn is_hex(b: Option<&u8>) -> bool {
    b.is_some_and(u8::is_ascii_hexdigit)
}

fuzz_target!(|body: &[u8]| {
    let plus_as_space: Vec<u8> = body
        .iter()
        .map(|b| if *b == b'+' { b' ' } else { *b })
        .collect();
    let whole_is_utf8 = percent_decode(&plus_as_space).decode_utf8().is_ok();
    let fields = match parse_form(body) {
        Ok(fields) => fields,
        Err(FormError::BadPercentEncoding(at)) => {
            assert_eq!(body.get(at), Some(&b'%'), "error names byte {at}");
            assert!(
                !(is_hex(body.get(at + 1)) && is_hex(body.get(at + 2))),
                "'%' at {at} is followed by two hex digits"
            );
            return;
        }
        Err(FormError::NotUtf8) => {
            assert!(!whole_is_utf8, "refused as not UTF-8, but it decodes");
            return;
        }
    };
    assert!(whole_is_utf8, "accepted, but the decoded body is not UTF-8");

    let segments: Vec<&[u8]> = body
        .split(|b| *b == b'&')
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(fields.len(), segments.len(), "one pair per segment");
    for (segment, (key, value)) in segments.iter().zip(&fields) {
        if !segment.contains(&b'%') && !segment.contains(&b'+') {
            let (raw_key, raw_value) = match segment.iter().position(|b| *b == b'=') {
                Some(eq) => (&segment[..eq], &segment[eq + 1..]),
                None => (&segment[..], &segment[..0]),
            };
            assert_eq!(key.as_bytes(), raw_key);
            assert_eq!(value.as_bytes(), raw_value);
        }
    }
    let encoded = fields
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    assert_eq!(
        parse_form(encoded.as_bytes()).as_ref(),
        Ok(&fields),
        "re-encoded: {encoded}"
    );

    let first = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let present = |name: &str| first(name).filter(|v| !v.is_empty());
    match Event::from_form(fields.clone()) {
        Ok(event) => {
            assert_eq!(Some(event.kind.as_str()), first("event"));
            assert!(!event.call_id.is_empty());
            assert_eq!(Some(event.call_id.as_str()), first("callId"));
            assert_eq!(event.direction.map(Direction::as_str), present("direction"));
            if event.kind == EventKind::NewCall {
                assert!(event.direction.is_some(), "a newCall without direction");
            }
            for (value, name) in [
                (&event.from, "from"),
                (&event.to, "to"),
                (&event.orig_call_id, "origCallId"),
                (&event.xcid, "xcid"),
                (&event.answering_number, "answeringNumber"),
                (&event.cause, "cause"),
                (&event.dtmf, "dtmf"),
                (&event.diversion, "diversion"),
            ] {
                assert_eq!(value, first(name).unwrap_or_default(), "field {name}");
            }
            for (values, name) in [
                (&event.users, "user"),
                (&event.user_ids, "userId"),
                (&event.full_user_ids, "fullUserId"),
            ] {
                let expected: Vec<&String> = fields
                    .iter()
                    .filter(|(k, _)| {
                        k == name
                            || (k.starts_with(name)
                                && k[name.len()..].starts_with('[')
                                && k.ends_with(']'))
                    })
                    .map(|(_, v)| v)
                    .collect();
                assert_eq!(values.iter().collect::<Vec<_>>(), expected, "list {name}");
            }
            assert_eq!(event.raw, fields);
            let json = serde_json::to_string(&event).expect("an event serialises");
            let back: Event = serde_json::from_str(&json).expect("a stored event reads back");
            assert_eq!(back, event, "JSON round trip");
        }
        Err(error) => {
            let _ = error.to_string();
            match error {
                EventError::MissingEvent => assert_eq!(present("event"), None),
                EventError::UnknownEvent(shown) => {
                    let sent = present("event").expect("an event was sent");
                    assert_eq!(EventKind::parse(sent), None);
                    assert!(sent.starts_with(&shown) && shown.chars().count() <= 64);
                }
                EventError::MissingCallId => {
                    assert!(present("event").and_then(EventKind::parse).is_some());
                    assert_eq!(present("callId"), None);
                }
                EventError::MissingDirection => {
                    assert_eq!(first("event"), Some("newCall"));
                    assert!(present("callId").is_some());
                    assert_eq!(present("direction"), None);
                }
                EventError::BadDirection(shown) => {
                    let sent = present("direction").expect("a direction was sent");
                    assert_eq!(Direction::parse(sent), None);
                    assert!(sent.starts_with(&shown) && shown.chars().count() <= 64);
                }
            }
        }
    }
});
