//! The state the API tests serve from: a real store, a pipeline that discards, token `t`.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use model::Batch;
use pipeline::{DurableSink, Enricher, Pipeline};
use store::Store;

use crate::{SecurityControl, ServerState};

struct NoSink;

impl DurableSink for NoSink {
    fn write(&self, _: Batch) -> pipeline::WriteFuture<'_> {
        Box::pin(async { Ok(()) })
    }
}

pub(crate) fn test_state(
    store: Store,
    dir: &Path,
    security: Option<Arc<dyn SecurityControl>>,
) -> ServerState {
    ServerState {
        store,
        pipeline: Pipeline::new(NoSink, Enricher::disabled(), 1 << 20),
        api_token: Arc::from("t"),
        data_dir: dir.to_path_buf(),
        started: Instant::now(),
        security,
        profiler: crate::ProfilerStatus::default(),
        latency_objective_ms: 500.0,
    }
}
