//! Where a bridge reads events from: the sidecar's gRPC API (a separate
//! process) or the in-process fan-out (a bridge inside `serve`).

use futures::{StreamExt, stream::BoxStream};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::{
    client::{self, Authed, Backoff, Followed, Reconnect},
    fanout::{EventFilter, Fanout},
    proto::{self, call_events_client::CallEventsClient},
    store::Store,
};

pub type EventStream = BoxStream<'static, Result<proto::CallEvent, Status>>;

#[async_trait::async_trait]
pub trait EventSource: Send + Sync {
    /// Events with seq > `after_seq`; `None` = from now on. A resume point
    /// beyond the newest event ends the stream with `OUT_OF_RANGE`.
    async fn subscribe(&self, after_seq: Option<u64>) -> anyhow::Result<EventStream>;

    /// The newest sequence number in the log (0 when it is empty).
    async fn head(&self) -> anyhow::Result<u64>;
}

/// Subscribes over gRPC, like any other client, reconnecting with `backoff`
/// for as long as it takes (but not past an `OUT_OF_RANGE`).
pub struct GrpcSource {
    pub endpoint: client::Endpoint,
    pub backoff: Backoff,
    /// For [`EventSource::head`]; connected on first use, dropped on error.
    events: Mutex<Option<CallEventsClient<Authed>>>,
}

impl GrpcSource {
    pub fn new(endpoint: client::Endpoint, backoff: Backoff) -> Self {
        GrpcSource {
            endpoint,
            backoff,
            events: Mutex::new(None),
        }
    }
}

#[async_trait::async_trait]
impl EventSource for GrpcSource {
    async fn subscribe(&self, after_seq: Option<u64>) -> anyhow::Result<EventStream> {
        let reconnect = Reconnect {
            backoff: self.backoff,
            give_up_after: None,
            retry_first: true,
        };
        let stream = client::follow_events(self.endpoint.clone(), after_seq, reconnect)
            .filter_map(|item| async move {
                match item {
                    Ok(Followed::Event(event)) => Some(Ok(*event)),
                    Ok(Followed::Interrupted { error, retry_in }) => {
                        tracing::warn!(error = %format!("{error:#}"), ?retry_in, "event stream interrupted; resuming");
                        None
                    }
                    Err(e) => Some(Err(match e.downcast_ref::<client::ResumeRefused>() {
                        Some(refused) => Status::out_of_range(refused.0.clone()),
                        None => Status::unavailable(format!("{e:#}")),
                    })),
                }
            });
        Ok(stream.boxed())
    }

    async fn head(&self) -> anyhow::Result<u64> {
        let mut events = self.events.lock().await;
        let client = match events.as_mut() {
            Some(client) => client,
            None => events.insert(CallEventsClient::new(
                client::connect(&self.endpoint).await?,
            )),
        };
        let request = proto::ListEventsRequest {
            after_seq: 0,
            limit: 1,
            ..Default::default()
        };
        match client.list_events(request).await {
            Ok(page) => Ok(page.into_inner().head_seq),
            Err(status) => {
                *events = None;
                Err(client::status_error(status))
            }
        }
    }
}

/// Subscribes to the fan-out of the server it runs in.
pub struct LocalSource {
    pub fanout: Fanout,
    pub store: Store,
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
                Ok(event) => event.decode().map_err(|e| {
                    Status::data_loss(format!("event {} does not decode: {e}", event.seq()))
                }),
                Err(e) => Err(Status::from(e)),
            });
        Ok(stream.boxed())
    }

    async fn head(&self) -> anyhow::Result<u64> {
        Ok(self.store.head_seq().await?)
    }
}
