//! `sipgate-sidecar settings ...`: show and change the block list, routing
//! table and default caller ID.

use anyhow::Context;

use super::{endpoint, output};
use crate::{
    client::{self, status_error},
    config::{BlockCommand, ClientArgs, DefaultCallerIdCommand, RouteCommand, SettingsCommand},
    proto::{self, settings_client::SettingsClient},
};

pub async fn run_settings(
    args: &ClientArgs,
    json: bool,
    command: SettingsCommand,
) -> anyhow::Result<()> {
    let mut client = SettingsClient::new(client::connect(&endpoint(args)).await?);
    let snapshot = match command {
        SettingsCommand::Show => client.get_settings(proto::GetSettingsRequest {}).await,
        SettingsCommand::ImportZammad { file } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?
            };
            client
                .import_zammad(proto::ImportZammadRequest { json: text })
                .await
        }
        SettingsCommand::ExportZammad => {
            let exported = client
                .export_zammad(proto::ExportZammadRequest {})
                .await
                .map_err(status_error)?;
            println!("{}", exported.into_inner().json);
            return Ok(());
        }
        SettingsCommand::Block { command } => match command {
            BlockCommand::Add { number, note } => {
                client
                    .add_block_entry(proto::AddBlockEntryRequest {
                        pattern: number,
                        note,
                    })
                    .await
            }
            BlockCommand::Remove { number } => {
                client
                    .remove_block_entry(proto::RemoveBlockEntryRequest { pattern: number })
                    .await
            }
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
                client
                    .add_routing_rule(proto::AddRoutingRuleRequest {
                        dest: pattern,
                        caller_id,
                        note,
                        position,
                    })
                    .await
            }
            RouteCommand::Remove { pattern } => {
                client
                    .remove_routing_rule(proto::RemoveRoutingRuleRequest { dest: pattern })
                    .await
            }
        },
        SettingsCommand::DefaultCallerId { command } => {
            let caller_id = match command {
                DefaultCallerIdCommand::Set { number } => number,
                DefaultCallerIdCommand::Clear => String::new(),
            };
            client
                .set_default_caller_id(proto::SetDefaultCallerIdRequest { caller_id })
                .await
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
    let snapshot = snapshot.map_err(status_error)?.into_inner();
    output::settings(&snapshot, json);
    Ok(())
}
