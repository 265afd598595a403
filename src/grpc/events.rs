//! `sidecar.v1.CallEvents`: the resumable live stream and paging over the log.

use std::{pin::Pin, sync::Arc};

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::{
    convert, store_status,
    wire::{
        self, EncodedCallEvent,
        generated::{self as proto, call_events_server},
    },
};
use crate::{
    App,
    fanout::{EventFilter, SubscribeError},
    numbers, paging,
};

pub struct EventsService {
    app: Arc<App>,
}

impl EventsService {
    pub fn new(app: Arc<App>) -> Self {
        EventsService { app }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<EncodedCallEvent, Status>> + Send>>;

#[tonic::async_trait]
impl call_events_server::CallEvents for EventsService {
    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        request: Request<proto::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let r = request.into_inner();
        let mut filter = EventFilter::default();
        for d in &r.directions {
            filter
                .directions
                .push(convert::direction_from(*d).ok_or_else(|| {
                    Status::invalid_argument(format!("unknown direction {d} in the filter"))
                })?);
        }
        for k in &r.kinds {
            filter
                .kinds
                .push(convert::event_kind_from(*k).ok_or_else(|| {
                    Status::invalid_argument(format!("unknown event kind {k} in the filter"))
                })?);
        }
        let cc = self.app.settings.country_code();
        for n in &r.numbers {
            filter.numbers.push(
                numbers::normalize_number(n, cc)
                    .map_err(|e| Status::invalid_argument(format!("number filter: {e}")))?,
            );
        }
        let stream = self
            .app
            .fanout
            .subscribe(r.after_seq, filter, self.app.shutdown.clone())
            .map(|item| match item {
                Ok(event) => Ok(wire::encoded(&event)),
                Err(SubscribeError::ShuttingDown) => Err(Status::unavailable(
                    "the sidecar is shutting down; reconnect and resume with after_seq",
                )),
                Err(SubscribeError::Store(e)) => {
                    tracing::error!(error = %e, "subscriber catch-up failed");
                    Err(Status::unavailable(
                        "the event database is unavailable; resume with after_seq",
                    ))
                }
            });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_events(
        &self,
        request: Request<proto::ListEventsRequest>,
    ) -> Result<Response<proto::ListEventsResponse>, Status> {
        let r = request.into_inner();
        let limit = paging::EVENTS.clamp(r.limit);
        let events = self
            .app
            .store
            .events_after(r.after_seq, limit)
            .await
            .map_err(store_status)?;
        let head_seq = self.app.store.head_seq().await.map_err(store_status)?;
        let next_after_seq = events.last().map_or(r.after_seq, |e| e.seq);
        Ok(Response::new(proto::ListEventsResponse {
            events: events.iter().map(wire::encode).collect(),
            next_after_seq,
            head_seq,
        }))
    }
}
