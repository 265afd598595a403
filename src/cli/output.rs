//! How client subcommands print: aligned text for people, JSON for scripts.

use serde_json::{Value, json};

use crate::{
    bridge::schema::{self, direction_name, event_kind_name, state_name},
    proto,
};

fn print_json(v: &Value) {
    println!("{v}");
}

pub fn settings(s: &proto::SettingsSnapshot, as_json: bool) {
    if as_json {
        print_json(&json!({
            "block_list": s.block_list.iter().map(|b| json!({"pattern": b.pattern, "note": b.note})).collect::<Vec<_>>(),
            "routing_table": s.routing_table.iter().map(|r| json!({"dest": r.dest, "caller_id": r.caller_id, "note": r.note})).collect::<Vec<_>>(),
            "default_caller_id": s.default_caller_id,
            "version": s.version,
        }));
        return;
    }
    println!(
        "Block list ({} entries, inbound calls):",
        s.block_list.len()
    );
    for (i, b) in s.block_list.iter().enumerate() {
        println!("  {:>3}. {:<24} {}", i + 1, b.pattern, b.note);
    }
    println!(
        "Routing table ({} rules, outbound calls, first match wins):",
        s.routing_table.len()
    );
    for (i, r) in s.routing_table.iter().enumerate() {
        println!(
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
    println!("Default caller ID: {default}");
    println!("Settings version: {}", s.version);
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
    println!("from {} to {}", r.normalized_from, r.normalized_to);
    println!("{}", decision.explanation);
}

pub fn audit(r: &proto::ListAuditResponse, as_json: bool) {
    for e in &r.entries {
        if as_json {
            print_json(&json!({
                "id": e.id, "at_ms": e.at_ms, "client": e.client, "action": e.action,
                "detail": serde_json::from_str::<Value>(&e.detail).unwrap_or(Value::String(e.detail.clone())),
            }));
        } else {
            println!(
                "{:>5}  {}  {:<22} {}  by {}",
                e.id,
                format_ms(e.at_ms),
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

pub fn calls(calls: &[proto::Call], as_json: bool) {
    if as_json {
        for c in calls {
            print_json(&call_json(c));
        }
        return;
    }
    println!(
        "{:<19}  {:<3}  {:<15}  {:<15}  {:<7}  {:<4}  {:<14}  {:>4}  {:>5}",
        "started (UTC)", "dir", "from", "to", "state", "done", "cause", "wait", "talk"
    );
    for c in calls {
        let secs = |v: Option<i64>| v.map(|s| s.to_string()).unwrap_or_else(|| "-".into());
        println!(
            "{:<19}  {:<3}  {:<15}  {:<15}  {:<7}  {:<4}  {:<14}  {:>4}  {:>5}",
            format_ms(c.initialized_at_ms),
            direction_name(c.direction),
            c.from,
            c.to,
            state_name(c.state),
            if c.done { "yes" } else { "no" },
            c.cause,
            secs(c.duration_waiting_secs),
            secs(c.duration_talking_secs),
        );
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
        Ok(proto::EventKind::Dtmf) => format!("dtmf={}", e.dtmf),
        _ => String::new(),
    };
    println!(
        "#{:<6} {}  {:<7} {:<3} {} -> {}  call={}{}  {}",
        e.seq,
        format_ms(e.received_at_ms),
        event_kind_name(e.kind),
        direction_name(e.direction),
        e.from,
        e.to,
        e.call_id,
        if e.synthetic { " (synthetic)" } else { "" },
        extra
    );
}

/// `YYYY-MM-DD HH:MM:SS` in UTC, without a date crate.
pub fn format_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::format_ms;

    #[test]
    fn formats_utc_timestamps() {
        assert_eq!(format_ms(0), "1970-01-01 00:00:00");
        assert_eq!(format_ms(1_795_000_000_000), "2026-11-18 11:06:40");
        assert_eq!(format_ms(951_782_400_000), "2000-02-29 00:00:00");
    }
}
