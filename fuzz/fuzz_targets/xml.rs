//! `xml::render`, `xml::render_error` and `xml::callback_url` with arbitrary
//! strings. The output is well-formed XML 1.0 (only characters XML allows;
//! no raw tab, newline or carriage return in an attribute, no raw carriage
//! return in text, which a parser would normalise away), has exactly the
//! elements of its reply, and parsed back with quick-xml gives every
//! attribute and text as given (characters XML cannot carry as U+FFFD).

#![no_main]

use libfuzzer_sys::fuzz_target;
use quick_xml::{
    Reader,
    escape::resolve_xml_entity,
    events::{BytesStart, Event},
};
use sipgate_sidecar::sipgate::xml::{Reply, callback_url, render, render_error};

/// The first byte picks the reply (low bits: empty, plain, reject, dial,
/// error), whether its callback is the built URL (bit 7) and whether the URL
/// has a token (bit 6); the rest, as UTF-8 with U+001E between fields, is
/// callback, caller ID, number, error reason, base URL, token, direction.
struct Input {
    reply: u8,
    callback: String,
    caller_id: String,
    number: String,
    reason: String,
    base: String,
    token: Option<String>,
    direction: String,
}

impl Input {
    fn new(data: &[u8]) -> Option<Input> {
        let (&reply, rest) = data.split_first()?;
        let rest = String::from_utf8_lossy(rest);
        let mut fields = rest.split('\u{1e}').map(str::to_string);
        let mut next = || fields.next().unwrap_or_default();
        Some(Input {
            reply,
            callback: next(),
            caller_id: next(),
            number: next(),
            reason: next(),
            base: next(),
            token: Some(next()).filter(|_| reply & 0x40 != 0),
            direction: next(),
        })
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Element {
    name: String,
    attributes: Vec<(String, String)>,
    text: String,
}

fn element(name: &str, attributes: &[(&str, &str)], text: &str) -> Element {
    Element {
        name: name.into(),
        attributes: attributes
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        text: text.into(),
    }
}

fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// What a reply can carry of `s`.
fn carried(s: &str) -> String {
    s.chars()
        .map(|c| if is_xml_char(c) { c } else { '\u{FFFD}' })
        .collect()
}

fn start(e: &BytesStart, xml: &str) -> Element {
    let mut attributes = Vec::new();
    for a in e.attributes() {
        let a = a.unwrap_or_else(|err| panic!("bad attribute ({err}): {xml:?}"));
        assert!(
            !a.value.iter().any(|b| matches!(b, b'\t' | b'\n' | b'\r')),
            "a raw tab or line break in an attribute: {xml:?}"
        );
        attributes.push((
            String::from_utf8(a.key.as_ref().to_vec()).unwrap(),
            a.unescape_value().unwrap().into_owned(),
        ));
    }
    Element {
        name: String::from_utf8(e.name().as_ref().to_vec()).unwrap(),
        attributes,
        text: String::new(),
    }
}

/// The elements of `xml` in document order, each with its own text; panics
/// when `xml` is not one well-formed document with a UTF-8 declaration.
fn parse(xml: &str) -> Vec<Element> {
    assert!(
        xml.chars().all(is_xml_char),
        "a character XML forbids: {xml:?}"
    );
    assert!(xml.ends_with('\n'));
    let mut reader = Reader::from_str(xml);
    let mut elements: Vec<Element> = Vec::new();
    let mut open: Vec<usize> = Vec::new();
    let mut declared = false;
    loop {
        let event = reader
            .read_event()
            .unwrap_or_else(|e| panic!("not well-formed ({e}): {xml:?}"));
        let text = match event {
            Event::Eof => break,
            Event::Decl(d) => {
                assert!(
                    !declared && elements.is_empty(),
                    "declaration first: {xml:?}"
                );
                assert_eq!(d.version().unwrap().as_ref(), b"1.0");
                assert_eq!(d.encoding().unwrap().unwrap().as_ref(), b"UTF-8");
                declared = true;
                continue;
            }
            Event::Start(e) | Event::Empty(e) if open.is_empty() && !elements.is_empty() => {
                panic!("a second root element {:?}: {xml:?}", e.name())
            }
            Event::Start(e) => {
                elements.push(start(&e, xml));
                open.push(elements.len() - 1);
                continue;
            }
            Event::Empty(e) => {
                elements.push(start(&e, xml));
                continue;
            }
            Event::End(e) => {
                let i = open.pop().expect("an end tag with nothing open");
                assert_eq!(elements[i].name.as_bytes(), e.name().as_ref());
                continue;
            }
            Event::Text(t) => {
                assert!(!t.contains(&b'\r'), "a raw carriage return: {xml:?}");
                t.decode().unwrap().into_owned()
            }
            Event::GeneralRef(r) => {
                if r.is_char_ref() {
                    r.resolve_char_ref().unwrap().unwrap().to_string()
                } else {
                    let name = r.decode().unwrap();
                    resolve_xml_entity(&name)
                        .unwrap_or_else(|| panic!("an unknown entity {name}: {xml:?}"))
                        .to_string()
                }
            }
            other => panic!("unexpected {other:?}: {xml:?}"),
        };
        match open.last() {
            Some(&i) => elements[i].text.push_str(&text),
            None => assert!(text.trim().is_empty(), "text outside the root: {xml:?}"),
        }
    }
    assert!(declared, "no declaration: {xml:?}");
    assert!(open.is_empty(), "unclosed elements: {xml:?}");
    // Indentation between child elements is layout, not content.
    for e in &mut elements {
        if matches!(e.name.as_str(), "Response" | "Dial") && e.text.trim().is_empty() {
            e.text.clear();
        }
    }
    elements
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::new(data) else {
        return;
    };
    let url = callback_url(&input.base, input.token.as_deref(), &input.direction);
    let rest = url
        .strip_prefix(input.base.trim_end_matches('/'))
        .and_then(|rest| rest.strip_prefix("/api/v1/sipgate/"))
        .and_then(|rest| rest.strip_suffix(input.direction.as_str()))
        .unwrap_or_else(|| panic!("{url:?} is not base/api/v1/sipgate/…/direction"));
    match &input.token {
        Some(token) => assert_eq!(rest, format!("{token}/")),
        None => assert_eq!(rest, ""),
    }

    let callback = if input.reply & 0x80 == 0 {
        input.callback.clone()
    } else {
        url
    };
    let cb = carried(&callback);
    let hooks = [("onHangup", cb.as_str()), ("onAnswer", cb.as_str())];
    let (xml, expected) = match input.reply % 5 {
        0 => (render(&Reply::Empty), vec![element("Response", &[], "")]),
        1 => (
            render(&Reply::Plain { callback }),
            vec![element("Response", &hooks, "")],
        ),
        2 => (
            render(&Reply::Reject { callback }),
            vec![
                element("Response", &hooks, ""),
                element("Reject", &[("reason", "busy")], ""),
            ],
        ),
        3 => (
            render(&Reply::Dial {
                callback,
                caller_id: input.caller_id.clone(),
                number: input.number.clone(),
            }),
            vec![
                element("Response", &hooks, ""),
                element("Dial", &[("callerId", &carried(&input.caller_id))], ""),
                element("Number", &[], &carried(&input.number)),
            ],
        ),
        _ => (
            render_error(&input.reason),
            vec![
                element("Response", &[], ""),
                element("Error", &[], &carried(&input.reason)),
            ],
        ),
    };
    assert_eq!(parse(&xml), expected, "{xml:?}");
});
