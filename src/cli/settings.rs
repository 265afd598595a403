//! `sipgate-sidecar settings ...`: show and change the block list, routing
//! table and default caller ID; import from Zammad (with a dry run); undo.
//!
//! Every change carries the settings version it was based on. A single edit
//! that loses a race with another admin is re-sent on top of the new
//! settings (a few times); an import or an undo, which replace everything,
//! report the conflict instead, so nobody overwrites a change unseen.

use std::time::Duration;

use anyhow::Context;
use tonic::{Code, Request, Status};

use super::{endpoint, output};
use crate::{
    client::{self, Authed, status_error},
    config::{BlockCommand, ClientArgs, DefaultCallerIdCommand, RouteCommand, SettingsCommand},
    grpc::settings::{EXPECTED_VERSION, FORCE},
    proto::{self, settings_client::SettingsClient},
};

/// How often a single edit is sent at most when other changes keep winning
/// the race.
const EDIT_ATTEMPTS: u32 = 10;

/// A pause before the next attempt that grows with `attempt` and differs
/// between processes, so admins racing each other do not retry in lockstep.
fn retry_pause(attempt: u32) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let jitter =
        (u64::from(nanos) ^ u64::from(std::process::id()).wrapping_mul(2_654_435_761)) % 50;
    Duration::from_millis(10 * u64::from(attempt) + jitter)
}

/// `request` with the version it is based on and the force flag as metadata.
fn with_precondition<T>(message: T, version: u64, force: bool) -> Request<T> {
    let mut request = Request::new(message);
    let metadata = request.metadata_mut();
    metadata.insert(
        EXPECTED_VERSION,
        version
            .to_string()
            .parse()
            .expect("digits are valid metadata"),
    );
    if force {
        metadata.insert(FORCE, "true".parse().expect("valid metadata"));
    }
    request
}

/// An edit of one entry: safe to re-apply on top of someone else's change.
#[derive(Debug, Clone)]
pub(crate) enum SingleEdit {
    AddBlock(proto::AddBlockEntryRequest),
    RemoveBlock(proto::RemoveBlockEntryRequest),
    AddRoute(proto::AddRoutingRuleRequest),
    RemoveRoute(proto::RemoveRoutingRuleRequest),
    SetDefaultCallerId(proto::SetDefaultCallerIdRequest),
}

/// Where single edits go: the server, or in tests a wrapper around it.
pub(crate) trait EditTarget {
    async fn version(&mut self) -> Result<u64, Status>;
    async fn send(
        &mut self,
        edit: &SingleEdit,
        version: u64,
        force: bool,
    ) -> Result<proto::SettingsSnapshot, Status>;
}

impl EditTarget for SettingsClient<Authed> {
    async fn version(&mut self) -> Result<u64, Status> {
        Ok(self
            .get_settings(proto::GetSettingsRequest {})
            .await?
            .into_inner()
            .version)
    }

    async fn send(
        &mut self,
        edit: &SingleEdit,
        version: u64,
        force: bool,
    ) -> Result<proto::SettingsSnapshot, Status> {
        let response = match edit.clone() {
            SingleEdit::AddBlock(r) => {
                self.add_block_entry(with_precondition(r, version, force))
                    .await
            }
            SingleEdit::RemoveBlock(r) => {
                self.remove_block_entry(with_precondition(r, version, force))
                    .await
            }
            SingleEdit::AddRoute(r) => {
                self.add_routing_rule(with_precondition(r, version, force))
                    .await
            }
            SingleEdit::RemoveRoute(r) => {
                self.remove_routing_rule(with_precondition(r, version, force))
                    .await
            }
            SingleEdit::SetDefaultCallerId(r) => {
                self.set_default_caller_id(with_precondition(r, version, force))
                    .await
            }
        };
        Ok(response?.into_inner())
    }
}

/// Reads the current version and sends `edit` based on it; when another
/// change came in between (ABORTED), reads again and re-sends, at most
/// [`EDIT_ATTEMPTS`] times.
pub(crate) async fn edit_with_retry(
    target: &mut impl EditTarget,
    edit: &SingleEdit,
    force: bool,
) -> Result<proto::SettingsSnapshot, Status> {
    let mut attempt = 1;
    loop {
        let version = target.version().await?;
        match target.send(edit, version, force).await {
            Err(status) if status.code() == Code::Aborted && attempt < EDIT_ATTEMPTS => {
                eprintln!(
                    "settings changed while this edit was sent; applying it to the new settings"
                );
                tokio::time::sleep(retry_pause(attempt)).await;
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// Explains a refusal: a conflict names what to do about it.
fn refusal(status: Status) -> anyhow::Error {
    match status.code() {
        Code::Aborted => anyhow::anyhow!(
            "conflict: {}; nothing was changed (check `settings show` and run the command again)",
            status.message()
        ),
        Code::FailedPrecondition => anyhow::anyhow!("refused: {}", status.message()),
        _ => status_error(status),
    }
}

fn read_input(file: &std::path::Path) -> anyhow::Result<String> {
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
        SettingsCommand::ExportZammad => {
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
                }),
                force,
            ),
            BlockCommand::Remove { number } => (
                SingleEdit::RemoveBlock(proto::RemoveBlockEntryRequest { pattern: number }),
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
                    }),
                    false,
                )
            }
            RouteCommand::Remove { pattern } => (
                SingleEdit::RemoveRoute(proto::RemoveRoutingRuleRequest { dest: pattern }),
                false,
            ),
        },
        SettingsCommand::DefaultCallerId { command } => {
            let caller_id = match command {
                DefaultCallerIdCommand::Set { number } => number,
                DefaultCallerIdCommand::Clear => String::new(),
            };
            (
                SingleEdit::SetDefaultCallerId(proto::SetDefaultCallerIdRequest { caller_id }),
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
        anyhow::bail!(
            "refused: {}; repeat with --force if that is what you want (nothing was changed)",
            preview.needs_force.join("; ")
        );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, SignatureMode};

    /// Sends through the real server, but right after reading the version
    /// (once) another admin changes the settings: the first attempt is stale.
    struct RacedOnce {
        client: SettingsClient<Authed>,
        other: SettingsClient<Authed>,
        raced: bool,
        sends: u32,
    }

    impl EditTarget for RacedOnce {
        async fn version(&mut self) -> Result<u64, Status> {
            let version = self.client.version().await?;
            if !self.raced {
                self.raced = true;
                self.other
                    .add_block_entry(proto::AddBlockEntryRequest {
                        pattern: "4940999".into(),
                        note: "the other admin".into(),
                    })
                    .await?;
            }
            Ok(version)
        }

        async fn send(
            &mut self,
            edit: &SingleEdit,
            version: u64,
            force: bool,
        ) -> Result<proto::SettingsSnapshot, Status> {
            self.sends += 1;
            self.client.send(edit, version, force).await
        }
    }

    #[tokio::test]
    async fn a_single_edit_that_loses_a_race_is_applied_to_the_new_settings() {
        let dir = tempfile::tempdir().unwrap();
        let running = crate::start(Config {
            http_addr: "127.0.0.1:0".parse().unwrap(),
            grpc_addr: "127.0.0.1:0".parse().unwrap(),
            metrics_addr: None,
            database: dir.path().join("sidecar.db").display().to_string(),
            signature: SignatureMode::Off,
            ..Config::default()
        })
        .await
        .unwrap();
        let endpoint = client::Endpoint::plain(format!("http://{}", running.grpc_addr), None);
        let connect = || async { SettingsClient::new(client::connect(&endpoint).await.unwrap()) };
        let mut target = RacedOnce {
            client: connect().await,
            other: connect().await,
            raced: false,
            sends: 0,
        };
        let edit = SingleEdit::AddBlock(proto::AddBlockEntryRequest {
            pattern: "4930123".into(),
            note: String::new(),
        });
        let stored = edit_with_retry(&mut target, &edit, false).await.unwrap();
        assert_eq!(
            target.sends, 2,
            "the stale first attempt was refused and retried"
        );
        let patterns: Vec<&str> = stored
            .block_list
            .iter()
            .map(|b| b.pattern.as_str())
            .collect();
        assert_eq!(patterns, ["4940999", "4930123"]);
        assert_eq!(stored.version, 2);

        // Without retries left, the conflict is the answer.
        let mut stale = connect().await;
        let refused = stale
            .add_block_entry(with_precondition(
                proto::AddBlockEntryRequest {
                    pattern: "4930124".into(),
                    note: String::new(),
                },
                1,
                false,
            ))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Aborted);
        assert!(
            refused.message().contains("version 2"),
            "{}",
            refused.message()
        );
        running.stop().await.unwrap();
    }
}
