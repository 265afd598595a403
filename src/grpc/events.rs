//! `sidecar.v1.CallEvents`: the resumable live stream and paging over the log.

use std::{pin::Pin, sync::Arc};

use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::{
    convert,
    status::invalid_input,
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
                    .map_err(|e| invalid_input("number filter", n, e))?,
            );
        }
        let stream = self
            .fanout
            .open(r.after_seq, filter, self.streams_end.clone())
            .await?
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
        let mut r = request.into_inner();
        if let Some(after) =
            paging::parse_token(&r.page_token, "after").map_err(Status::invalid_argument)?
        {
            r.after_seq = after;
        }
        self.fanout.check_resume(r.after_seq).await?;
        let limit = paging::EVENTS.clamp(r.limit);
        let page = self
            .store
            .event_page(r.after_seq, limit, paging::EVENTS_RESPONSE_BYTES)
            .await?;
        let head_seq = self.store.head_seq().await?;
        // The page is bounded as stored; bound it as sent too.
        let mut events = Vec::with_capacity(page.events.len());
        let mut bytes = 0usize;
        let mut next_after_seq = r.after_seq;
        for event in page.events {
            let encoded = EncodedCallEvent(event.wire);
            // Each element: a tag byte, its length, itself.
            let size =
                1 + prost::encoding::encoded_len_varint(encoded.0.len() as u64) + encoded.0.len();
            if !events.is_empty() && bytes + size > paging::EVENTS_RESPONSE_BYTES {
                break;
            }
            bytes += size;
            next_after_seq = event.seq;
            events.push(encoded);
        }
        let head_seq = head_seq.max(next_after_seq);
        Ok(Response::new(proto::ListEventsResponse {
            events,
            next_after_seq,
            head_seq,
            next_page_token: if next_after_seq < head_seq {
                paging::token("after", next_after_seq)
            } else {
                String::new()
            },
        }))
    }
}
