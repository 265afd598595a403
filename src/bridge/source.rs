//! Where a bridge reads events from: the sidecar's gRPC API (a separate
//! process) or the in-process fan-out (a bridge inside `serve`).

use futures::{StreamExt, stream::BoxStream};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::{
    client::{self, Backoff, Followed, Reconnect},
    fanout::{EventFilter, Fanout},
    grpc::convert,
    proto,
};

pub type EventStream = BoxStream<'static, Result<proto::CallEvent, Status>>;

#[async_trait::async_trait]
pub trait EventSource: Send + Sync {
    /// Events with seq > `after_seq`; `None` = from now on.
    async fn subscribe(&self, after_seq: Option<u64>) -> anyhow::Result<EventStream>;
}

/// Subscribes over gRPC, like any other client, reconnecting with `backoff`
/// for as long as it takes.
pub struct GrpcSource {
    pub endpoint: client::Endpoint,
    pub backoff: Backoff,
}

#[async_trait::async_trait]
impl EventSource for GrpcSource {
    async fn subscribe(&self, after_seq: Option<u64>) -> anyhow::Result<EventStream> {
        let reconnect = Reconnect {
            backoff: self.backoff,
            give_up_after: None,
        };
        let stream = client::follow_events(self.endpoint.clone(), after_seq, reconnect)
            .filter_map(|item| async move {
                match item {
                    Ok(Followed::Event(event)) => Some(Ok(*event)),
                    Ok(Followed::Interrupted { error, retry_in }) => {
                        tracing::warn!(error = %format!("{error:#}"), ?retry_in, "event stream interrupted; resuming");
                        None
                    }
                    Err(e) => Some(Err(Status::unavailable(format!("{e:#}")))),
                }
            });
        Ok(stream.boxed())
    }
}

/// Subscribes to the fan-out of the server it runs in.
pub struct LocalSource {
    pub fanout: Fanout,
    /// The server's shutdown: ends the stream.
    pub shutdown: CancellationToken,
}

#[async_trait::async_trait]
impl EventSource for LocalSource {
    async fn subscribe(&self, after_seq: Option<u64>) -> anyhow::Result<EventStream> {
        let stream = self
            .fanout
            .subscribe(after_seq, EventFilter::default(), self.shutdown.clone())
            .map(|item| match item {
                Ok(event) => Ok(convert::event(&event)),
                Err(e) => Err(Status::from(e)),
            });
        Ok(stream.boxed())
    }
}
