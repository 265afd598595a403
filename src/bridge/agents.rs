//! Zammad's "Phone Extension to Agent Mapping" (`user_remote_map`) applied
//! by the Zammad bridge, so the pop-up of an answered call reaches the agent
//! who picked up.
//!
//! Zammad's own sipgate integration maps sipgate's `userId` (`w0`) through
//! the map; a row's `user_id` is a Zammad user id or an email. Its generic
//! CTI endpoint, which the bridge posts to, finds the agent by
//! `answeringNumber` (their phone), then `user` (a login), then `user_id`
//! (an id). So a mapped answer carries `user_id=<id>` (and keeps the
//! caller-log name in `user`), or `user=<login>` for an email or login,
//! and no `answeringNumber`, which would be looked at first.
//!
//! A row matches sipgate's `userId` first, then `fullUserId`
//! (`<masterSipId><userId>`), then the user's display name; the first row
//! that matches wins, as in Zammad.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::Mutex;

use crate::{
    client,
    proto::{self, settings_client::SettingsClient},
    settings::{SettingsManager, zammad::Scalar},
};

/// The Zammad user a sipgate user is mapped to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZammadUser {
    /// A Zammad user id: sent as `user_id`.
    Id(u64),
    /// An email or login: sent as `user` (Zammad looks it up lowercased).
    Login(String),
}

impl ZammadUser {
    fn parse(text: &str) -> Option<ZammadUser> {
        let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        if text.is_empty() {
            return None;
        }
        Some(match text.parse::<u64>() {
            Ok(id) => ZammadUser::Id(id),
            Err(_) => ZammadUser::Login(text.to_lowercase()),
        })
    }
}

/// The map as the bridge applies it: rows with an empty side left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentMap {
    rows: Vec<(String, ZammadUser)>,
}

impl AgentMap {
    /// From `(remote_user_id, user_id)` rows as stored.
    pub fn new<'a>(rows: impl IntoIterator<Item = (&'a str, &'a str)>) -> AgentMap {
        AgentMap {
            rows: rows
                .into_iter()
                .filter_map(|(remote, user)| {
                    let remote = remote.trim();
                    (!remote.is_empty())
                        .then_some(())
                        .and_then(|()| ZammadUser::parse(user))
                        .map(|user| (remote.to_string(), user))
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The agent of an answer: by `userId`, `fullUserId`, then user name.
    pub fn agent_for(&self, event: &proto::CallEvent) -> Option<&ZammadUser> {
        if self.rows.is_empty() {
            return None;
        }
        [&event.user_ids, &event.full_user_ids, &event.users]
            .into_iter()
            .flat_map(|keys| keys.iter())
            .map(|key| key.trim())
            .filter(|key| !key.is_empty())
            .find_map(|key| {
                self.rows
                    .iter()
                    .find(|(remote, _)| remote == key)
                    .map(|(_, user)| user)
            })
    }

    fn from_snapshot(snapshot: &proto::SettingsSnapshot) -> AgentMap {
        AgentMap::new(
            snapshot
                .user_remote_map
                .iter()
                .map(|m| (m.remote_user_id.as_str(), m.user_id.as_str())),
        )
    }
}

/// Where the bridge reads the map: it is one of the server's settings, so
/// a change applies to the next answer.
#[async_trait::async_trait]
pub trait Agents: Send + Sync {
    async fn map(&self) -> Arc<AgentMap>;
}

/// Inside `serve`: the settings in effect.
pub struct LocalAgents(pub Arc<SettingsManager>);

#[async_trait::async_trait]
impl Agents for LocalAgents {
    async fn map(&self) -> Arc<AgentMap> {
        let (content, _) = self.0.content();
        let text = |v: &Option<Scalar>| v.as_ref().map(ToString::to_string).unwrap_or_default();
        let rows: Vec<(String, String)> = content
            .zammad
            .user_remote_map
            .iter()
            .flatten()
            .map(|row| (text(&row.remote_user_id), text(&row.user_id)))
            .collect();
        Arc::new(AgentMap::new(
            rows.iter().map(|(r, u)| (r.as_str(), u.as_str())),
        ))
    }
}

/// How long a bridge in its own process uses the map it read.
const REFRESH: Duration = Duration::from_secs(10);

/// A bridge in its own process: the server's `GetSettings`, read at most
/// every [`REFRESH`]; while it cannot be read, the last map read is used.
pub struct RemoteAgents {
    endpoint: client::Endpoint,
    cached: Mutex<Option<(Instant, Arc<AgentMap>)>>,
    failing: std::sync::atomic::AtomicBool,
}

impl RemoteAgents {
    pub fn new(endpoint: client::Endpoint) -> RemoteAgents {
        RemoteAgents {
            endpoint,
            cached: Mutex::new(None),
            failing: Default::default(),
        }
    }

    async fn fetch(&self) -> anyhow::Result<AgentMap> {
        let mut settings = SettingsClient::new(client::connect(&self.endpoint).await?);
        let snapshot = settings
            .get_settings(proto::GetSettingsRequest {})
            .await?
            .into_inner();
        Ok(AgentMap::from_snapshot(&snapshot))
    }
}

#[async_trait::async_trait]
impl Agents for RemoteAgents {
    async fn map(&self) -> Arc<AgentMap> {
        use std::sync::atomic::Ordering;
        let mut cached = self.cached.lock().await;
        if let Some((read_at, map)) = cached.as_ref()
            && read_at.elapsed() < REFRESH
        {
            return map.clone();
        }
        match self.fetch().await {
            Ok(map) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("the agent map can be read from the server again");
                }
                let map = Arc::new(map);
                *cached = Some((Instant::now(), map.clone()));
                map
            }
            Err(error) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %format!("{error:#}"), "cannot read the agent map (user_remote_map) from the server; using the last one read");
                }
                let map = cached
                    .as_ref()
                    .map(|(_, map)| map.clone())
                    .unwrap_or_default();
                // Tried again at the next answer, not at once.
                *cached = Some((Instant::now(), map.clone()));
                map
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(user: &str, user_id: &str, full_user_id: &str) -> proto::CallEvent {
        let one = |v: &str| {
            if v.is_empty() {
                Vec::new()
            } else {
                vec![v.to_string()]
            }
        };
        proto::CallEvent {
            kind: proto::EventKind::Answer.into(),
            users: one(user),
            user_ids: one(user_id),
            full_user_ids: one(full_user_id),
            ..Default::default()
        }
    }

    #[test]
    fn user_id_then_full_user_id_then_name_and_the_first_row_wins() {
        let map = AgentMap::new([
            ("John Doe", "name@example.com"),
            ("1234567w1", "12"),
            ("w0", " 7 "),
            ("w0", "8"),
            ("", "9"),
            ("w5", ""),
        ]);
        assert_eq!(
            map.agent_for(&answer("John Doe", "w0", "1234567w0")),
            Some(&ZammadUser::Id(7))
        );
        assert_eq!(
            map.agent_for(&answer("John Doe", "w1", "1234567w1")),
            Some(&ZammadUser::Id(12))
        );
        assert_eq!(
            map.agent_for(&answer("John Doe", "w9", "")),
            Some(&ZammadUser::Login("name@example.com".into()))
        );
        assert_eq!(map.agent_for(&answer("", "w5", "")), None);
        assert_eq!(map.agent_for(&answer("voicemail", "", "")), None);
        assert_eq!(map.rows.len(), 4, "rows with an empty side are left out");
    }

    #[test]
    fn an_email_is_a_login_lowercased_and_whitespace_is_dropped() {
        let map = AgentMap::new([("w0", " Agent@Example.COM ")]);
        assert_eq!(
            map.agent_for(&answer("", "w0", "")),
            Some(&ZammadUser::Login("agent@example.com".into()))
        );
    }
}
