//! The event stream's wire form. A `CallEvent` is encoded once per event and
//! the same bytes go to every subscriber, instead of converting and encoding
//! it again for each of them. Clients see an ordinary `sidecar.v1.CallEvent`.

use bytes::{BufMut, Bytes};
use prost::Message;

use crate::fanout::Published;

/// Server-side code generated with `CallEvent` replaced by [`EncodedCallEvent`].
/// Only the service and its request/response types are used; the event's
/// nested messages (e.g. `FormField`) are encoded through `proto` instead.
#[allow(dead_code)]
pub mod generated {
    include!(concat!(env!("OUT_DIR"), "/wire/sidecar.v1.rs"));
}

/// An already encoded `sidecar.v1.CallEvent`; only ever sent, never received.
#[derive(Clone, Default, PartialEq)]
pub struct EncodedCallEvent(pub Bytes);

impl std::fmt::Debug for EncodedCallEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EncodedCallEvent({} bytes)", self.0.len())
    }
}

impl Message for EncodedCallEvent {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0 = Bytes::new();
    }
}

/// A committed event as sent: its stored wire form, as is.
pub fn encoded(event: &Published) -> EncodedCallEvent {
    EncodedCallEvent(event.wire().clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto;

    #[test]
    fn the_encoded_form_decodes_as_an_ordinary_call_event() {
        let message = proto::CallEvent {
            seq: 7,
            call_id: "c7".into(),
            from: "492111234567".into(),
            ..Default::default()
        };
        let wrapped = EncodedCallEvent(Bytes::from(message.encode_to_vec()));
        let response = generated::ListEventsResponse {
            events: vec![wrapped.clone(), wrapped],
            next_after_seq: 7,
            head_seq: 9,
            next_page_token: "after:7".into(),
        };
        let decoded =
            proto::ListEventsResponse::decode(response.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded.events, vec![message.clone(), message]);
        assert_eq!((decoded.next_after_seq, decoded.head_seq), (7, 9));
    }
}
