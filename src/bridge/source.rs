//! Where a bridge reads events from: the sidecar's gRPC API (a separate
//! process) or the in-process fan-out (a bridge inside `serve`).

use futures::{StreamExt, stream::BoxStream};
use tonic::Status;

use tokio_util::sync::CancellationToken;

use crate::{
    cli::{ClientArgs, connect},
    fanout::{EventFilter, Fanout},
    grpc::convert,
    proto::{self, call_events_client::CallEventsClient},
};

pub type EventStream = BoxStream<'static, Result<proto::CallEvent, Status>>;

#[async_trait::async_trait]
pub trait EventSource: Send + Sync {
    /// Events with seq > `after_seq`; `None` = from now on.
    async fn subscribe(&self, after_seq: Option<u64>) -> anyhow::Result<EventStream>;
}

/// Subscribes over gRPC, like any other client.
pub struct GrpcSource {
    pub client: ClientArgs,
}

#[async_trait::async_trait]
impl EventSource for GrpcSource {
    async fn subscribe(&self, after_seq: Option<u64>) -> anyhow::Result<EventStream> {
        let mut client = CallEventsClient::new(connect(&self.client).await?);
        let stream = client
            .subscribe(proto::SubscribeRequest {
                after_seq,
                ..Default::default()
            })
            .await
            .map_err(|s| anyhow::anyhow!("subscribe refused: {}", s.message()))?
            .into_inner();
        Ok(stream.boxed())
    }
}

/// Subscribes to the fan-out of the server it runs in.
pub struct LocalSource {
    pub fanout: Fanout,
    /// Ends the stream when the server shuts down.
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
