//! Single settings edits sent with the version they are based on, and
//! re-sent on top of the new settings when another change won the race.

use std::time::Duration;

use tonic::{Code, Request, Status};

use crate::{
    client::Authed,
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
pub(super) fn with_precondition<T>(message: T, version: u64, force: bool) -> Request<T> {
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
    /// Move the rule for `pattern` to `position` (0-based), as a reorder of
    /// the table as it is when sent.
    MoveRoute {
        pattern: String,
        position: usize,
    },
}

/// Where the rule for `pattern` is: its stored form, or as typed with `+`,
/// `00`, spaces, dashes, dots, slashes or parentheses.
pub(crate) fn find_route(table: &[proto::RoutingRule], pattern: &str) -> Option<usize> {
    if let Some(i) = table.iter().position(|r| r.dest == pattern) {
        return Some(i);
    }
    let typed: String = pattern
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '/' | '(' | ')' | '+'))
        .collect();
    let typed = match pattern.trim_start().strip_prefix('+') {
        Some(_) => typed,
        None => typed
            .strip_prefix("00")
            .map(str::to_string)
            .unwrap_or(typed),
    };
    table.iter().position(|r| r.dest == typed)
}

/// The table's destinations with the rule at `from` moved to `to` (clamped to the end).
pub(crate) fn moved(table: &[proto::RoutingRule], from: usize, to: usize) -> Vec<String> {
    let mut dests: Vec<String> = table.iter().map(|r| r.dest.clone()).collect();
    let dest = dests.remove(from);
    dests.insert(to.min(dests.len()), dest);
    dests
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
            SingleEdit::MoveRoute { pattern, position } => {
                // The order is computed from the table as it is now; the
                // version it was read at guards the reorder.
                let current = self
                    .get_settings(proto::GetSettingsRequest {})
                    .await?
                    .into_inner();
                let from = find_route(&current.routing_table, &pattern).ok_or_else(|| {
                    Status::not_found(format!(
                        "no routing rule for '{pattern}' (`settings show` lists them)"
                    ))
                })?;
                let dests = moved(&current.routing_table, from, position);
                self.reorder_routing_table(with_precondition(
                    proto::ReorderRoutingTableRequest {
                        dests,
                        ..Default::default()
                    },
                    current.version,
                    force,
                ))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client;
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
                        ..Default::default()
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

    #[test]
    fn a_rule_is_found_as_stored_or_as_typed_and_moved() {
        let rule = |dest: &str| proto::RoutingRule {
            dest: dest.into(),
            ..Default::default()
        };
        let table = [rule("4930*"), rule("49*"), rule("4420*")];
        assert_eq!(find_route(&table, "49*"), Some(1));
        assert_eq!(find_route(&table, "+49 30*"), Some(0));
        assert_eq!(find_route(&table, "0044 20*"), Some(2));
        assert_eq!(find_route(&table, "43*"), None);
        assert_eq!(moved(&table, 2, 0), ["4420*", "4930*", "49*"]);
        assert_eq!(moved(&table, 0, 9), ["49*", "4420*", "4930*"]);
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
            ..Default::default()
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
                    ..Default::default()
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
