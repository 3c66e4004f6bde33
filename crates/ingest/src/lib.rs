//! Receivers: each turns a wire format into a [`model::Batch`] (`decode`) and serves it on a
//! listener, acknowledging the client only after the pipeline's durable sink has the data.

pub mod otlp;

use std::sync::Arc;

use pipeline::Pipeline;

/// What every receiver needs from the outside.
#[derive(Clone)]
pub struct ReceiverContext {
    pub pipeline: Pipeline,
    /// When set, clients must send `Authorization: Bearer <token>`.
    pub token: Option<Arc<str>>,
    /// Largest request body accepted, compressed.
    pub max_body_bytes: usize,
}

impl ReceiverContext {
    /// Largest body accepted after decompression (guards against gzip bombs).
    pub fn max_decoded_bytes(&self) -> usize {
        self.max_body_bytes.saturating_mul(4)
    }

    pub(crate) fn authorized(&self, header: Option<&str>) -> bool {
        match &self.token {
            None => true,
            Some(t) => pipeline::auth::bearer_matches(header, t),
        }
    }
}

/// How much memory a decoded request takes relative to its protobuf size (model + Arrow copies).
pub const DECODED_SIZE_FACTOR: usize = 6;

/// Memory one decoded profile row takes (a sample with its strings, then its Arrow copy): OTLP
/// profiles expand, 8 bytes of timestamp on the wire becoming one row.
const PROFILE_ROW_BYTES: usize = 256;

/// The bytes to reserve in the pipeline for a decoded batch that came as `wire_bytes`.
pub(crate) fn reservation(batch: &model::Batch, wire_bytes: usize) -> usize {
    let by_wire = wire_bytes.saturating_mul(DECODED_SIZE_FACTOR);
    match batch {
        model::Batch::Profiles(p) => by_wire.max(p.samples.len().saturating_mul(PROFILE_ROW_BYTES)),
        _ => by_wire,
    }
}
