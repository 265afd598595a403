//! SQLite's own decoding of rows stored before the wire form was kept. What
//! both backends run is in [`super::sql`]; the writer's statements are in
//! `writer::sqlite`.

use bytes::Bytes;

use crate::store::StoreError;
use crate::store::sql::Payload;

/// The wire form of an event stored before the wire form was kept
/// (migration 0003): encoded from its JSON payload.
pub(super) fn legacy_wire(
    seq: u64,
    payload: &str,
    received_at_ms: i64,
    synthetic: bool,
) -> Result<Bytes, StoreError> {
    Ok(Payload::parse(payload, seq, received_at_ms, synthetic)?.encode())
}
