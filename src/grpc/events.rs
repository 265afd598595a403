//! `sidecar.v1.CallEvents`: the resumable live stream and paging over the log.

use std::{pin::Pin, sync::Arc};

use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::{
    convert,
    wire::{
        self, EncodedCallEvent,
        generated::{self as proto, call_events_server},
    },
};
use crate::{
    fanout::{EventFilter, Fanout},
    numbers, paging,
    store::Store,
};

pub struct EventsService {
    store: Store,
    fanout: Fanout,
    country_code: Arc<str>,
    streams_end: CancellationToken,
}

impl EventsService {
    pub fn new(
        store: Store,
        fanout: Fanout,
        country_code: Arc<str>,
        streams_end: CancellationToken,
    ) -> Self {
        EventsService {
            store,
            fanout,
            country_code,
            streams_end,
        }
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
        let cc = &self.country_code;
        for n in &r.numbers {
            filter.numbers.push(
                numbers::normalize_number(n, cc)
                    .map_err(|e| Status::invalid_argument(format!("number filter: {e}")))?,
            );
        }
        let stream = self
            .fanout
            .subscribe(r.after_seq, filter, self.streams_end.clone())
            .map(|item| match item {
                Ok(event) => Ok(wire::encoded(&event)),
                Err(e) => Err(Status::from(e)),
            });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_events(
        &self,
        request: Request<proto::ListEventsRequest>,
    ) -> Result<Response<proto::ListEventsResponse>, Status> {
        let r = request.into_inner();
        let limit = paging::EVENTS.clamp(r.limit);
        let events = self.store.events_after(r.after_seq, limit).await?;
        let head_seq = self.store.head_seq().await?;
        let next_after_seq = events.last().map_or(r.after_seq, |e| e.seq);
        Ok(Response::new(proto::ListEventsResponse {
            events: events.iter().map(wire::encode).collect(),
            next_after_seq,
            head_seq,
        }))
    }
}
