//! `sidecar.v1.CallLog`: one row per sipgate callId.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{
    convert,
    status::{excerpt, invalid_input},
};
use crate::{
    numbers, paging,
    proto::{self, call_log_server},
    store::{self, CallQuery, Store, WriterHandle},
};

pub struct CallLogService {
    store: Store,
    writer: WriterHandle,
    country_code: Arc<str>,
}

impl CallLogService {
    pub fn new(store: Store, writer: WriterHandle, country_code: Arc<str>) -> Self {
        CallLogService {
            store,
            writer,
            country_code,
        }
    }
}

fn require_call_id(call_id: &str) -> Result<(), Status> {
    if call_id.is_empty() {
        return Err(Status::invalid_argument("call_id is required"));
    }
    Ok(())
}

#[tonic::async_trait]
impl call_log_server::CallLog for CallLogService {
    async fn list_calls(
        &self,
        request: Request<proto::ListCallsRequest>,
    ) -> Result<Response<proto::ListCallsResponse>, Status> {
        let r = request.into_inner();
        let direction = match r.direction {
            None => None,
            Some(d) => Some(convert::direction_from(d).ok_or_else(|| {
                Status::invalid_argument("direction filter must be DIRECTION_IN or DIRECTION_OUT")
            })?),
        };
        let state = match r.state {
            None => None,
            Some(s) => Some(convert::call_state_from(s).ok_or_else(|| {
                Status::invalid_argument("state filter must be NEW_CALL, ANSWER or HANGUP")
            })?),
        };
        let number = if r.number.is_empty() {
            None
        } else {
            Some(
                numbers::normalize_number(&r.number, &self.country_code)
                    .map_err(|e| invalid_input("number filter", &r.number, e))?,
            )
        };
        let query = CallQuery {
            limit: paging::CALLS.clamp(r.limit),
            page_token: (!r.page_token.is_empty()).then_some(r.page_token),
            direction,
            done: r.done,
            state,
            number,
        };
        let (calls, next) = self.store.list_calls(&query).await?;
        // Bounded in bytes too: a page of large calls stays under what a
        // gRPC client accepts; it holds at least one call.
        let mut page = Vec::with_capacity(calls.len());
        let mut bytes = 0usize;
        let mut next_page_token = next.unwrap_or_default();
        for call in &calls {
            let encoded = convert::call(call);
            let len = prost::Message::encoded_len(&encoded);
            let size = 1 + prost::encoding::encoded_len_varint(len as u64) + len;
            if !page.is_empty() && bytes + size > paging::CALLS_RESPONSE_BYTES {
                next_page_token = store::call_page_token(&calls[page.len() - 1]);
                break;
            }
            bytes += size;
            page.push(encoded);
        }
        Ok(Response::new(proto::ListCallsResponse {
            calls: page,
            next_page_token,
        }))
    }

    async fn get_call(
        &self,
        request: Request<proto::GetCallRequest>,
    ) -> Result<Response<proto::Call>, Status> {
        let call_id = request.into_inner().call_id;
        require_call_id(&call_id)?;
        match self.store.get_call(&call_id).await? {
            Some(call) => Ok(Response::new(convert::call(&call))),
            None => Err(Status::not_found(format!(
                "no call with call_id {}",
                excerpt(&call_id)
            ))),
        }
    }

    async fn set_done(
        &self,
        request: Request<proto::SetDoneRequest>,
    ) -> Result<Response<proto::Call>, Status> {
        let r = request.into_inner();
        require_call_id(&r.call_id)?;
        match self.writer.set_done(r.call_id.clone(), r.done).await? {
            Some(call) => Ok(Response::new(convert::call(&call))),
            None => Err(Status::not_found(format!(
                "no call with call_id {}",
                excerpt(&r.call_id)
            ))),
        }
    }
}
