//! How client subcommands print: aligned text for people, JSON for scripts
//! (one object per line; every `…_at_ms` field also comes as `…_at` in
//! RFC 3339, UTC). Times in text are RFC 3339 in UTC too.

use std::io::Write;

use serde_json::{Value, json};

use crate::{
    bridge::schema::{self, direction_name, event_kind_name, state_name},
    proto,
};

/// Like `println!`, but a reader that stopped early (`| head`) ends the
/// process quietly instead of a panic, and another write error ends it with
/// the reason.
macro_rules! out {
    ($($arg:tt)*) => {
        write_line(format_args!($($arg)*))
    };
}

/// Every human-readable line goes through here: what came from a push or
/// a note is escaped for the terminal ([`crate::text::for_terminal`]).
fn write_line(line: std::fmt::Arguments<'_>) {
    let line = line.to_string();
    let line = crate::text::for_terminal(&line);
    if let Err(e) = writeln!(std::io::stdout().lock(), "{line}") {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

pub fn print_json(v: &Value) {
    let mut v = v.clone();
    add_rfc3339(&mut v);
    out!("{v}");
}

/// Beside every `X_at_ms` number (or `at_ms`), an `X_at` string in RFC 3339
/// (`null` stays `null`), at every level.
fn add_rfc3339(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            let mut added = Vec::new();
            for (key, field) in fields.iter_mut() {
                if let Some(name) = key
                    .strip_suffix("_ms")
                    .filter(|n| *n == "at" || n.ends_with("_at"))
                {
                    let time = match field.as_i64() {
                        Some(ms) => Value::String(rfc3339_ms(ms)),
                        None => Value::Null,
                    };
                    added.push((name.to_string(), time));
                } else {
                    add_rfc3339(field);
                }
            }
            fields.extend(added);
        }
        Value::Array(items) => items.iter_mut().for_each(add_rfc3339),
        _ => {}
    }
}

pub fn settings(s: &proto::SettingsSnapshot, as_json: bool) {
    if as_json {
        print_json(&json!({
            "block_list": s.block_list.iter().map(|b| json!({"pattern": b.pattern, "note": b.note})).collect::<Vec<_>>(),
            "routing_table": s.routing_table.iter().map(|r| json!({"dest": r.dest, "caller_id": r.caller_id, "note": r.note})).collect::<Vec<_>>(),
            "default_caller_id": s.default_caller_id,
            "version": s.version,
            "user_remote_map": s.user_remote_map.iter().map(|m| json!({"remote_user_id": m.remote_user_id, "user_id": m.user_id})).collect::<Vec<_>>(),
        }));
        return;
    }
    out!(
        "Block list ({} entries, inbound calls):",
        s.block_list.len()
    );
    for (i, b) in s.block_list.iter().enumerate() {
        out!("  {:>3}. {:<24} {}", i + 1, b.pattern, b.note);
    }
    out!(
        "Routing table ({} rules, outbound calls, first match wins):",
        s.routing_table.len()
    );
    for (i, r) in s.routing_table.iter().enumerate() {
        out!(
            "  {:>3}. {:<24} -> {:<16} {}",
            i + 1,
            r.dest,
            r.caller_id,
            r.note
        );
    }
    let default = if s.default_caller_id.is_empty() {
        "(none)"
    } else {
        &s.default_caller_id
    };
    out!("Default caller ID: {default}");
    if !s.user_remote_map.is_empty() {
        out!(
            "Agent mapping, Zammad user_remote_map ({} entries, first match wins):",
            s.user_remote_map.len()
        );
        for m in &s.user_remote_map {
            out!("       {:<24} -> {}", m.remote_user_id, m.user_id);
        }
    }
    out!("Settings version: {}", s.version);
}

/// What a change does (a dry run's answer), entry by entry.
pub fn diff(d: &proto::SettingsDiff, needs_force: &[String], as_json: bool) {
    let block = |b: &proto::BlockEntry| json!({"pattern": b.pattern, "note": b.note});
    let rule =
        |r: &proto::RoutingRule| json!({"dest": r.dest, "caller_id": r.caller_id, "note": r.note});
    if as_json {
        let none = proto::BlockEntry::default;
        let no_rule = proto::RoutingRule::default;
        print_json(&json!({
            "blocks_added": d.blocks_added.iter().map(block).collect::<Vec<_>>(),
            "blocks_removed": d.blocks_removed.iter().map(block).collect::<Vec<_>>(),
            "blocks_changed": d.blocks_changed.iter().map(|c| json!({
                "before": block(&c.before.clone().unwrap_or_else(none)),
                "after": block(&c.after.clone().unwrap_or_else(none)),
            })).collect::<Vec<_>>(),
            "block_order_changed": d.block_order_changed,
            "routes_added": d.routes_added.iter().map(rule).collect::<Vec<_>>(),
            "routes_removed": d.routes_removed.iter().map(rule).collect::<Vec<_>>(),
            "routes_changed": d.routes_changed.iter().map(|c| json!({
                "before": rule(&c.before.clone().unwrap_or_else(no_rule)),
                "after": rule(&c.after.clone().unwrap_or_else(no_rule)),
            })).collect::<Vec<_>>(),
            "routing_order_changed": d.routing_order_changed,
            "default_caller_id": d.default_caller_id_changed.then(|| json!({
                "before": d.default_caller_id_before, "after": d.default_caller_id_after,
            })),
            "user_remote_map_changed": d.user_remote_map_changed,
            "needs_force": needs_force,
        }));
        return;
    }
    let shown = |v: &str| {
        if v.is_empty() {
            "(none)".to_string()
        } else {
            v.to_string()
        }
    };
    let mut lines = Vec::new();
    for b in &d.blocks_added {
        lines.push(format!("  + block {:<24} {}", b.pattern, b.note));
    }
    for b in &d.blocks_removed {
        lines.push(format!("  - block {:<24} {}", b.pattern, b.note));
    }
    for c in &d.blocks_changed {
        let (b, a) = (
            c.before.clone().unwrap_or_default(),
            c.after.clone().unwrap_or_default(),
        );
        lines.push(format!(
            "  ~ block {:<24} note '{}' -> '{}'",
            a.pattern, b.note, a.note
        ));
    }
    if d.block_order_changed {
        lines.push("  ~ block list order changed".into());
    }
    for r in &d.routes_added {
        lines.push(format!(
            "  + route {:<24} -> {:<16} {}",
            r.dest, r.caller_id, r.note
        ));
    }
    for r in &d.routes_removed {
        lines.push(format!(
            "  - route {:<24} -> {:<16} {}",
            r.dest, r.caller_id, r.note
        ));
    }
    for c in &d.routes_changed {
        let (b, a) = (
            c.before.clone().unwrap_or_default(),
            c.after.clone().unwrap_or_default(),
        );
        lines.push(format!(
            "  ~ route {:<24} -> {} (was {}) {}",
            a.dest, a.caller_id, b.caller_id, a.note
        ));
    }
    if d.routing_order_changed {
        lines.push("  ~ routing table order changed (first match wins)".into());
    }
    if d.default_caller_id_changed {
        lines.push(format!(
            "  ~ default caller ID {} -> {}",
            shown(&d.default_caller_id_before),
            shown(&d.default_caller_id_after)
        ));
    }
    if d.user_remote_map_changed {
        lines.push("  ~ Zammad user_remote_map changed".into());
    }
    out!(
        "Changes: {} block entries added, {} removed, {} changed; {} routing rules added, {} removed, {} changed",
        d.blocks_added.len(),
        d.blocks_removed.len(),
        d.blocks_changed.len(),
        d.routes_added.len(),
        d.routes_removed.len(),
        d.routes_changed.len()
    );
    for line in lines {
        out!("{line}");
    }
    for reason in needs_force {
        out!("  ! {reason}: needs --force");
    }
}

pub fn evaluation(r: &proto::EvaluateResponse, as_json: bool) {
    let decision = r.decision.clone().unwrap_or_default();
    if as_json {
        print_json(&json!({
            "decision": schema::to_value(&schema::Decision::from(&decision)),
            "normalized_from": r.normalized_from,
            "normalized_to": r.normalized_to,
        }));
        return;
    }
    out!("from {} to {}", r.normalized_from, r.normalized_to);
    out!("{}", decision.explanation);
}

pub fn audit(r: &proto::ListAuditResponse, as_json: bool) {
    for e in &r.entries {
        if as_json {
            print_json(&json!({
                "id": e.id, "at_ms": e.at_ms, "client": e.client, "action": e.action,
                "detail": serde_json::from_str::<Value>(&e.detail).unwrap_or(Value::String(e.detail.clone())),
            }));
        } else {
            out!(
                "{:>5}  {}  {:<22} {}  by {}",
                e.id,
                rfc3339(e.at_ms),
                e.action,
                e.detail,
                e.client
            );
        }
    }
}

fn call_json(c: &proto::Call) -> Value {
    schema::to_value(&schema::Call::from(c))
}

/// The call list, printed row by row as pages arrive: a header line first
/// (text), or one JSON object per call.
pub struct CallTable {
    json: bool,
    header_done: bool,
}

impl CallTable {
    pub fn new(json: bool) -> Self {
        CallTable {
            json,
            header_done: false,
        }
    }

    fn header(&mut self) {
        if !self.json && !self.header_done {
            self.header_done = true;
            out!(
                "{:<20}  {:<3}  {:<15}  {:<15}  {:<7}  {:<4}  {:<14}  {:>4}  {:>5}  call_id",
                "started",
                "dir",
                "from",
                "to",
                "state",
                "done",
                "cause",
                "wait",
                "talk"
            );
        }
    }

    pub fn row(&mut self, c: &proto::Call) {
        if self.json {
            print_json(&call_json(c));
            return;
        }
        self.header();
        let secs = |v: Option<i64>| v.map(|s| s.to_string()).unwrap_or_else(|| "-".into());
        out!(
            "{:<20}  {:<3}  {:<15}  {:<15}  {:<7}  {:<4}  {:<14}  {:>4}  {:>5}  {}",
            rfc3339(c.initialized_at_ms),
            direction_name(c.direction),
            c.from,
            c.to,
            state_name(c.state),
            if c.done { "yes" } else { "no" },
            c.cause,
            secs(c.duration_waiting_secs),
            secs(c.duration_talking_secs),
            c.call_id,
        );
    }

    /// Ends the table (a header even when no call matched).
    pub fn finish(mut self) {
        self.header();
    }
}

/// One call, field by field (text) or as one JSON object.
pub fn call(c: &proto::Call, as_json: bool) {
    if as_json {
        print_json(&call_json(c));
        return;
    }
    let time = |ms: i64| {
        if ms == 0 {
            "-".to_string()
        } else {
            rfc3339(ms)
        }
    };
    let secs = |v: Option<i64>| v.map(|s| format!("{s} s")).unwrap_or_else(|| "-".into());
    let decision = c
        .decision
        .as_ref()
        .map(|d| d.explanation.as_str())
        .unwrap_or("-");
    let fields = [
        ("call_id", c.call_id.clone()),
        ("direction", direction_name(c.direction).to_string()),
        ("from", c.from.clone()),
        ("to", c.to.clone()),
        ("state", state_name(c.state).to_string()),
        ("done", if c.done { "yes" } else { "no" }.to_string()),
        ("cause", c.cause.clone()),
        ("users", c.users.join(", ")),
        ("answering", c.answering_number.clone()),
        ("started", time(c.initialized_at_ms)),
        ("answered", time(c.start_at_ms)),
        ("ended", time(c.end_at_ms)),
        ("waiting", secs(c.duration_waiting_secs)),
        ("talking", secs(c.duration_talking_secs)),
        ("first leg", c.first_leg_call_id.clone()),
        ("decision", decision.to_string()),
        (
            "menu",
            c.menu_decision
                .as_ref()
                .map(|d| d.explanation.clone())
                .unwrap_or_default(),
        ),
        (
            "synthetic end",
            if c.ended_synthetically { "yes" } else { "no" }.to_string(),
        ),
    ];
    for (name, value) in fields {
        let value = if value.is_empty() { "-" } else { &value };
        out!("{name:<14} {value}");
    }
}

/// The webhook bridge's event object without its `schema` key.
pub fn event_json(e: &proto::CallEvent) -> Value {
    let mut json = schema::to_value(&schema::Event::from(e));
    if let Value::Object(fields) = &mut json {
        fields.remove("schema");
    }
    json
}

pub fn event(e: &proto::CallEvent, as_json: bool) {
    if as_json {
        print_json(&event_json(e));
        return;
    }
    let extra = match proto::EventKind::try_from(e.kind) {
        Ok(proto::EventKind::NewCall) => e
            .decision
            .as_ref()
            .map(|d| d.explanation.clone())
            .unwrap_or_default(),
        Ok(proto::EventKind::Hangup) => format!("cause={}", e.cause),
        Ok(proto::EventKind::Answer) => format!("user={}", e.users.join(",")),
        Ok(proto::EventKind::Dtmf) => match &e.decision {
            Some(d) => format!("dtmf={} {}", e.dtmf, d.explanation),
            None => format!("dtmf={}", e.dtmf),
        },
        _ => String::new(),
    };
    out!(
        "#{:<6} {}  {:<7} {:<3} {} -> {}  call={}{}  {}",
        e.seq,
        rfc3339(e.received_at_ms),
        event_kind_name(e.kind),
        direction_name(e.direction),
        e.from,
        e.to,
        e.call_id,
        if e.synthetic { " (synthetic)" } else { "" },
        extra
    );
}

/// The last webhook requests, newest first: one line each, or one JSON
/// object per line.
pub fn recent_requests(r: &proto::ListRecentRequestsResponse, as_json: bool) {
    if r.capacity == 0 {
        eprintln!("the server records no webhook requests (serve --recent-requests 0)");
    }
    if as_json {
        for q in &r.requests {
            print_json(&recent_request_json(q));
        }
        return;
    }
    if r.requests.is_empty() {
        if r.capacity > 0 {
            out!("no webhook requests since the server started");
        }
        return;
    }
    out!(
        "{:<20}  {:>3}  {:<17}  {:<7}  {:<3}  {:<15}  {:<15}  {:<20}  {:>6}  {:>7}  what",
        "received (UTC)",
        "st",
        "outcome",
        "event",
        "dir",
        "from",
        "to",
        "call",
        "seq",
        "ms"
    );
    for q in &r.requests {
        let or_dash = |s: &str| {
            if s.is_empty() {
                "-".to_owned()
            } else {
                s.to_owned()
            }
        };
        let event = if q.kind == 0 {
            "-"
        } else {
            event_kind_name(q.kind)
        };
        let what = if !q.reason.is_empty() {
            format!("refused: {}", q.reason)
        } else if let Some(d) = &q.decision {
            d.explanation.clone()
        } else {
            String::new()
        };
        let seq = if q.seq == 0 {
            "-".to_owned()
        } else {
            format!("#{}", q.seq)
        };
        out!(
            "{:<20}  {:>3}  {:<17}  {:<7}  {:<3}  {:<15}  {:<15}  {:<20}  {:>6}  {:>7.1}  {}{} [{} {} from {}]",
            rfc3339(q.received_at_ms),
            q.status,
            or_dash(&q.outcome),
            event,
            or_dash(direction_name(q.direction)),
            or_dash(&q.from),
            or_dash(&q.to),
            or_dash(&q.call_id),
            seq,
            q.duration_us as f64 / 1000.0,
            what,
            if q.duplicate { " (duplicate)" } else { "" },
            q.method,
            q.path,
            q.remote_addr,
        );
    }
}

pub fn recent_request_json(q: &proto::RecentRequest) -> Value {
    json!({
        "received_at_ms": q.received_at_ms,
        "received_at": rfc3339_ms(q.received_at_ms),
        "remote_addr": q.remote_addr,
        "method": q.method,
        "path": q.path,
        "event": if q.kind == 0 { Value::Null } else { event_kind_name(q.kind).into() },
        "call_id": q.call_id,
        "direction": direction_name(q.direction),
        "from": q.from,
        "to": q.to,
        "status": q.status,
        "outcome": q.outcome,
        "reason": q.reason,
        "decision": q.decision.as_ref().map(|d| schema::to_value(&schema::Decision::from(d))),
        "reply": q.reply,
        "reply_truncated": q.reply_truncated,
        "duplicate": q.duplicate,
        "seq": if q.seq == 0 { Value::Null } else { q.seq.into() },
        "duration_us": q.duration_us,
    })
}

/// `YYYY-MM-DDTHH:MM:SSZ`: RFC 3339 in UTC, to the second (for text).
pub fn rfc3339(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(at) => format!("{}Z", at.strftime("%Y-%m-%dT%H:%M:%S")),
        Err(_) => format!("{ms} ms"),
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`: RFC 3339 in UTC, to the millisecond (for JSON).
pub fn rfc3339_ms(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(at) => format!("{}Z", at.strftime("%Y-%m-%dT%H:%M:%S%.3f")),
        Err(_) => format!("{ms} ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_in_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000_000), "2026-11-18T11:06:40Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_ms(1_795_000_000_123), "2026-11-18T11:06:40.123Z");
        assert_eq!(rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn json_gets_rfc3339_beside_every_millisecond_time() {
        let mut v = json!({
            "received_at_ms": 1_795_000_000_123_i64,
            "call": {"initialized_at_ms": 0, "end_at_ms": null, "duration_talking_secs": 5},
            "entries": [{"at_ms": 1_795_000_000_000_i64}],
        });
        add_rfc3339(&mut v);
        assert_eq!(v["received_at"], "2026-11-18T11:06:40.123Z");
        assert_eq!(
            v["received_at_ms"], 1_795_000_000_123_i64,
            "the number stays"
        );
        assert_eq!(v["call"]["initialized_at"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["call"]["end_at"], Value::Null);
        assert!(v["call"].get("duration_talking").is_none());
        assert_eq!(v["entries"][0]["at"], "2026-11-18T11:06:40.000Z");
    }
}
