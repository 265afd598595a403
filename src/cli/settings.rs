//! `sipgate-sidecar settings ...`: show and change the block list, routing
//! table and default caller ID; import from Zammad (with a dry run); undo.
//!
//! Every change carries the settings version it was based on. A single edit
//! that loses a race with another admin is re-sent on top of the new
//! settings (a few times); an import or an undo, which replace everything,
//! report the conflict instead, so nobody overwrites a change unseen.

mod edit;

use anyhow::Context;
use tonic::{Code, Status};

use super::{endpoint, output};
use crate::{
    client::{self, Authed, Failure, FailureKind, status_error},
    config::{BlockCommand, ClientArgs, DefaultCallerIdCommand, RouteCommand, SettingsCommand},
    proto::{self, settings_client::SettingsClient},
};
use edit::{EditTarget, SingleEdit, edit_with_retry, with_precondition};

/// Explains a refusal: a conflict names what to do about it.
fn refusal(status: Status) -> anyhow::Error {
    let conflict =
        |message: String| anyhow::Error::new(Failure::new(FailureKind::Conflict, message));
    match status.code() {
        Code::Aborted => conflict(format!(
            "conflict: {}; nothing was changed (check `settings show` and run the command again)",
            status.message()
        )),
        Code::FailedPrecondition => conflict(format!("refused: {}", status.message())),
        _ => status_error(status),
    }
}

/// The text of `file`, or of stdin for `-`.
pub(super) fn read_input(file: &std::path::Path) -> anyhow::Result<String> {
    if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read stdin")
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))
    }
}

pub async fn run_settings(
    args: &ClientArgs,
    json: bool,
    command: SettingsCommand,
) -> anyhow::Result<()> {
    let mut client = SettingsClient::new(client::connect(&endpoint(args)).await?);
    let (edit, force) = match command {
        SettingsCommand::Show => {
            let snapshot = client
                .get_settings(proto::GetSettingsRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            output::settings(&snapshot, json);
            return Ok(());
        }
        SettingsCommand::ImportZammad {
            file,
            dry_run,
            force,
        } => return import(&mut client, &read_input(&file)?, dry_run, force, json).await,
        SettingsCommand::ExportZammad { cti: true } => {
            let snapshot = client
                .get_settings(proto::GetSettingsRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            let list = crate::bridge::zammad::cti_block_list(&snapshot.block_list);
            for pattern in &list.not_mirrored {
                eprintln!(
                    "not copied: {pattern} (Zammad compares exact numbers; with \
                     --blocked-calls mirrored the Zammad bridge does not send the calls it blocks)"
                );
            }
            println!("{}", crate::bridge::zammad::rails_mirror_command(&list));
            return Ok(());
        }
        SettingsCommand::ExportZammad { cti: false } => {
            let exported = client
                .export_zammad(proto::ExportZammadRequest {})
                .await
                .map_err(status_error)?;
            println!("{}", exported.into_inner().json);
            return Ok(());
        }
        SettingsCommand::Undo { audit_id, force } => {
            let version = client.version().await.map_err(status_error)?;
            let request = proto::RestoreAuditRequest {
                id: audit_id.unwrap_or(0),
                ..Default::default()
            };
            let snapshot = client
                .restore_audit(with_precondition(request, version, force))
                .await
                .map_err(refusal)?
                .into_inner();
            output::settings(&snapshot, json);
            return Ok(());
        }
        SettingsCommand::Block { command } => match command {
            BlockCommand::Add {
                number,
                note,
                force,
            } => (
                SingleEdit::AddBlock(proto::AddBlockEntryRequest {
                    pattern: number,
                    note,
                    ..Default::default()
                }),
                force,
            ),
            BlockCommand::Remove { number } => (
                SingleEdit::RemoveBlock(proto::RemoveBlockEntryRequest {
                    pattern: number,
                    ..Default::default()
                }),
                false,
            ),
        },
        SettingsCommand::Route { command } => match command {
            RouteCommand::Add {
                pattern,
                caller_id,
                note,
                position,
            } => {
                let position = match position {
                    Some(0) => anyhow::bail!("--position counts from 1"),
                    Some(p) => Some(p - 1),
                    None => None,
                };
                (
                    SingleEdit::AddRoute(proto::AddRoutingRuleRequest {
                        dest: pattern,
                        caller_id,
                        note,
                        position,
                        ..Default::default()
                    }),
                    false,
                )
            }
            RouteCommand::Remove { pattern } => (
                SingleEdit::RemoveRoute(proto::RemoveRoutingRuleRequest {
                    dest: pattern,
                    ..Default::default()
                }),
                false,
            ),
            RouteCommand::Move { pattern, to } => (
                SingleEdit::MoveRoute {
                    pattern,
                    position: usize::try_from(to.saturating_sub(1)).unwrap_or(usize::MAX),
                },
                false,
            ),
        },
        SettingsCommand::DefaultCallerId { command } => {
            let caller_id = match command {
                DefaultCallerIdCommand::Set { number } => number,
                DefaultCallerIdCommand::Clear => String::new(),
            };
            (
                SingleEdit::SetDefaultCallerId(proto::SetDefaultCallerIdRequest {
                    caller_id,
                    ..Default::default()
                }),
                false,
            )
        }
        SettingsCommand::Evaluate {
            direction,
            from,
            to,
        } => {
            let direction = if direction == "in" {
                proto::Direction::In
            } else {
                proto::Direction::Out
            };
            let response = client
                .evaluate(proto::EvaluateRequest {
                    direction: direction.into(),
                    from,
                    to,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            output::evaluation(&response, json);
            return Ok(());
        }
        SettingsCommand::Audit { limit } => {
            let response = client
                .list_audit(proto::ListAuditRequest {
                    limit,
                    before_id: 0,
                    ..Default::default()
                })
                .await
                .map_err(status_error)?
                .into_inner();
            output::audit(&response, json);
            return Ok(());
        }
    };
    let snapshot = edit_with_retry(&mut client, &edit, force)
        .await
        .map_err(refusal)?;
    output::settings(&snapshot, json);
    Ok(())
}

/// Preview first (the server parses and validates), then import exactly
/// what was previewed: the import carries the previewed version, so a
/// change made in between is reported, not overwritten.
async fn import(
    client: &mut SettingsClient<Authed>,
    text: &str,
    dry_run: bool,
    force: bool,
    json: bool,
) -> anyhow::Result<()> {
    let request = || proto::ImportZammadRequest {
        json: text.to_string(),
        ..Default::default()
    };
    let preview = client
        .preview_import_zammad(request())
        .await
        .map_err(status_error)?
        .into_inner();
    for warning in &preview.warnings {
        eprintln!("warning: {warning}");
    }
    let diff = preview.diff.clone().unwrap_or_default();
    if dry_run {
        output::diff(&diff, &preview.needs_force, json);
        return Ok(());
    }
    if !force && !preview.needs_force.is_empty() {
        return Err(anyhow::Error::new(Failure::new(
            FailureKind::Conflict,
            format!(
                "refused: {}; repeat with --force if that is what you want (nothing was changed)",
                preview.needs_force.join("; ")
            ),
        )));
    }
    let snapshot = client
        .import_zammad(with_precondition(request(), preview.base_version, force))
        .await
        .map_err(refusal)?
        .into_inner();
    if !json {
        output::diff(&diff, &[], false);
    }
    output::settings(&snapshot, json);
    Ok(())
}
