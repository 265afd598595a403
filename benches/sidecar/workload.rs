//! What the load generator sends: real-looking call flows, and the settings
//! that give them something to decide.

use proto::settings_client::SettingsClient;
use sipgate_sidecar::proto;
use tonic::transport::Channel;

/// Real-looking bodies: a share of blocked inbound callers, routed outbound
/// calls, and plain inbound calls, each a newCall -> answer -> hangup flow.
pub struct Workload {
    pub run: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum CallKind {
    Blocked,
    Routed,
    Plain,
}

impl Workload {
    fn kind(&self, call: u64) -> CallKind {
        match call % 10 {
            0 => CallKind::Blocked,
            1..=3 => CallKind::Routed,
            _ => CallKind::Plain,
        }
    }

    fn call_id(&self, call: u64) -> String {
        format!(
            "54566B150B0C0D3A5D534D5F565D7C5F54535A5C5B53525A7E5B5D57455044{:06X}{call:012X}",
            self.run
        )
    }

    /// The `stage`th webhook (0 newCall, 1 answer, 2 hangup) of call `call`,
    /// tagged with the send time for latency measurement. `None` where
    /// sipgate sends nothing: no answer or hangup follows a Reject.
    pub fn webhook(&self, call: u64, stage: u64, sent_us: u64) -> Option<(&'static str, String)> {
        if stage > 0 && self.kind(call) == CallKind::Blocked {
            return None;
        }
        let id = self.call_id(call);
        let (direction, from, to) = match self.kind(call) {
            CallKind::Blocked => (
                "in",
                format!("4930100000{:02}", call % 50),
                "4928559389086".to_string(),
            ),
            CallKind::Routed => (
                "out",
                "4928559389086".to_string(),
                format!("49{}{:07}", 40 + call % 20, call % 9_999_999),
            ),
            CallKind::Plain => (
                "in",
                format!("49176{:07}", call % 9_999_999),
                "4928559389086".to_string(),
            ),
        };
        let path = if direction == "in" {
            "/api/v1/sipgate/in"
        } else {
            "/api/v1/sipgate/out"
        };
        let body = match stage {
            0 => format!(
                "event=newCall&direction={direction}&from={from}&to={to}&callId={id}&origCallId={id}&user%5B%5D=Support+Team&userId%5B%5D=w0&fullUserId%5B%5D=1234567w0&xcid=8419b3450b75cd19&benchUs={sent_us}"
            ),
            1 => format!(
                "event=answer&callId={id}&user=Alice+Agent&userId=w0&fullUserId=1234567w0&from={from}&to={to}&direction={direction}&answeringNumber=4928559389086&benchUs={sent_us}"
            ),
            _ => format!(
                "event=hangup&cause=normalClearing&callId={id}&from={from}&to={to}&direction={direction}&answeringNumber=4928559389086&benchUs={sent_us}"
            ),
        };
        Some((path, body))
    }
}

/// 51 block entries, 20 routing rules and a default caller ID.
pub async fn configure_settings(grpc: &str) -> anyhow::Result<()> {
    let mut settings =
        SettingsClient::new(Channel::from_shared(grpc.to_string())?.connect().await?);
    for i in 0..50 {
        settings
            .add_block_entry(proto::AddBlockEntryRequest {
                pattern: format!("4930100000{i:02}"),
                note: format!("spam {i}"),
                ..Default::default()
            })
            .await?;
    }
    settings
        .add_block_entry(proto::AddBlockEntryRequest {
            pattern: "anonymous".into(),
            note: "hidden".into(),
            ..Default::default()
        })
        .await?;
    for i in 0..20 {
        settings
            .add_routing_rule(proto::AddRoutingRuleRequest {
                dest: format!("49{}*", 40 + i),
                caller_id: format!("49301234{i:03}"),
                note: format!("area {i}"),
                position: None,
                ..Default::default()
            })
            .await?;
    }
    settings
        .set_default_caller_id(proto::SetDefaultCallerIdRequest {
            caller_id: "4930123456000".into(),
            ..Default::default()
        })
        .await?;
    Ok(())
}
