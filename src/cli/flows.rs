//! `sipgate-sidecar flows ...`: check a call-flows document offline, set it
//! (with a dry run), show it, evaluate a call against it, list its history.

use serde_json::json;
use tonic::Code;

use super::{endpoint, output, settings::read_input};
use crate::{
    bridge::schema,
    client::{self, Failure, FailureKind, status_error},
    config::{ClientArgs, FlowsCommand},
    flows::{self, Files},
    proto::{self, flows_client::FlowsClient, settings_client::SettingsClient},
};

fn invalid(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Failure::new(FailureKind::Usage, message))
}

fn refusal(status: tonic::Status) -> anyhow::Error {
    match status.code() {
        Code::Aborted | Code::FailedPrecondition => anyhow::Error::new(Failure::new(
            FailureKind::Conflict,
            format!("refused: {}; nothing was changed", status.message()),
        )),
        _ => status_error(status),
    }
}

pub async fn run_flows(args: &ClientArgs, json: bool, command: FlowsCommand) -> anyhow::Result<()> {
    if let FlowsCommand::Check {
        file,
        announcements_dir,
        country_code,
    } = &command
    {
        return check(file, announcements_dir.as_deref(), country_code, json);
    }
    let channel = client::connect(&endpoint(args)).await?;
    let mut flows_client = FlowsClient::new(channel.clone());
    match command {
        FlowsCommand::Check { .. } => unreachable!("handled above"),
        FlowsCommand::Show => {
            let doc = flows_client
                .get_flows(proto::GetFlowsRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            if json {
                output::print_json(&json!({
                    "text": doc.text, "version": doc.version, "summary": doc.summary,
                }));
            } else if doc.text.is_empty() {
                eprintln!("# no call flows are set (settings version {})", doc.version);
            } else {
                eprintln!("# {} (settings version {})", doc.summary, doc.version);
                print!("{}", doc.text);
            }
        }
        FlowsCommand::Set { file, dry_run } => {
            let text = read_input(&file)?;
            if text.trim().is_empty() {
                return Err(invalid(format!(
                    "{} is empty; to remove the flows use `flows clear`",
                    file.display()
                )));
            }
            set(&mut flows_client, text, dry_run, json).await?;
        }
        FlowsCommand::Clear => set(&mut flows_client, String::new(), false, json).await?,
        FlowsCommand::Evaluate {
            from,
            to,
            at,
            digits,
            file,
        } => {
            let text = file
                .as_deref()
                .map(read_input)
                .transpose()?
                .unwrap_or_default();
            let r = flows_client
                .evaluate_flows(proto::EvaluateFlowsRequest {
                    from,
                    to,
                    at: at.unwrap_or_default(),
                    digits,
                    text,
                    ..Default::default()
                })
                .await
                .map_err(status_error)?
                .into_inner();
            evaluation(&r, json);
        }
        FlowsCommand::History { limit } => {
            let mut settings = SettingsClient::new(channel);
            let mut response = settings
                .list_audit(proto::ListAuditRequest {
                    limit,
                    before_id: 0,
                    ..Default::default()
                })
                .await
                .map_err(status_error)?
                .into_inner();
            response.entries.retain(|e| e.action.starts_with("flows."));
            output::audit(&response, json);
        }
    }
    Ok(())
}

async fn set(
    client: &mut FlowsClient<client::Authed>,
    text: String,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<()> {
    let r = client
        .set_flows(proto::SetFlowsRequest {
            text,
            expected_version: None,
            dry_run,
        })
        .await
        .map_err(refusal)?
        .into_inner();
    if json {
        output::print_json(&json!({
            "version": r.version, "changed": r.changed, "dry_run": dry_run,
            "summary": r.summary, "warnings": r.warnings,
        }));
        return Ok(());
    }
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    let what = match (dry_run, r.changed) {
        (true, true) => "valid; not stored (dry run)",
        (true, false) | (false, false) => "unchanged: the same document is set",
        (false, true) => "stored",
    };
    println!("Call flows {what}: {}", r.summary);
    println!("Settings version: {}", r.version);
    Ok(())
}

/// `flows check`: compile the document here, no server.
fn check(
    file: &std::path::Path,
    dir: Option<&std::path::Path>,
    country_code: &str,
    json: bool,
) -> anyhow::Result<()> {
    let text = read_input(file)?;
    let files = dir.map_or(Files::Unchecked, Files::Dir);
    let compiled =
        flows::compile(&text, country_code, files).map_err(|e| invalid(e.to_string()))?;
    let f = &compiled.flows;
    if json {
        output::print_json(&json!({
            "valid": true,
            "time_zone": f.time_zone_name(),
            "rules": f.rules.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
            "schedules": f.schedules.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
            "menus": f.menus.iter().map(|m| m.name.clone()).collect::<Vec<_>>(),
            "announcements": f.announcements.iter().map(|a| a.name.clone()).collect::<Vec<_>>(),
            "files_checked": dir.is_some(),
            "warnings": compiled.warnings,
        }));
        return Ok(());
    }
    for w in &compiled.warnings {
        eprintln!("warning: {w}");
    }
    println!("{}: valid; {}", file.display(), f.summary());
    for (i, rule) in f.rules.iter().enumerate() {
        println!("  rule {:>3}. {}", i + 1, rule.name);
    }
    if dir.is_none() && f.announcements.iter().any(|a| a.media.is_none()) {
        println!("  (file announcements and ical files not checked: give --announcements-dir)");
    }
    Ok(())
}

fn evaluation(r: &proto::EvaluateFlowsResponse, json: bool) {
    if json {
        let steps: Vec<_> = r
            .steps
            .iter()
            .map(|s| {
                json!({
                    "event": s.event,
                    "digits": s.digits,
                    "decision": s.decision.as_ref().map(|d| schema::to_value(&schema::Decision::from(d))),
                    "reply": s.reply,
                })
            })
            .collect();
        output::print_json(&json!({
            "local_time": r.local_time, "time_zone": r.time_zone, "steps": steps,
        }));
        return;
    }
    println!("At {} ({}):", r.local_time, r.time_zone);
    for s in &r.steps {
        let explanation = s.decision.as_ref().map_or("", |d| d.explanation.as_str());
        match s.event.as_str() {
            "dtmf" if s.digits.is_empty() => println!("dtmf (no input): {explanation}"),
            "dtmf" => println!("dtmf {}: {explanation}", s.digits),
            _ => println!("{}: {explanation}", s.event),
        }
        print!("{}", s.reply);
    }
}
