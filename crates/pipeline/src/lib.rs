//! Between receivers and sinks: a byte-bounded admission queue, resource enrichment, and the
//! acknowledgement that travels back to the receiver once the durable sink has the data.
//!
//! Receivers call [`Pipeline::submit`]; `Err(Busy)` is backpressure (HTTP 429 / gRPC
//! RESOURCE_EXHAUSTED). The bound is on bytes of decoded data in flight, so memory stays bounded
//! whatever the request sizes.

pub mod auth;
mod enrich;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use model::Batch;
use tokio::sync::oneshot;

pub use enrich::{EnrichConfig, Enricher};

/// The durable sink whose commit completes an acknowledgement (the store).
/// What [`DurableSink::write`] returns: resolves once the batch is durable, or why it is not.
pub type WriteFuture<'a> = Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send + 'a>>;

pub trait DurableSink: Send + Sync + 'static {
    fn write(&self, batch: Batch) -> WriteFuture<'_>;
}

/// Why a batch was not stored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
    /// The sink cannot take it now (disk full, store error, shutting down): retry later.
    #[error("{0}")]
    Unavailable(String),
    /// The data is not valid OTLP, found when the sink read it: refused, retrying will not help.
    #[error("{0}")]
    Malformed(model::otlp_wire::WireError),
}

/// The queue is full: try again later.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("ingest queue is full ({used} of {capacity} bytes in flight); retry later")]
pub struct Busy {
    pub used: usize,
    pub capacity: usize,
}

/// Resolves when the batch is durable, or with the reason it was not stored.
pub struct Ack(oneshot::Receiver<Result<(), SinkError>>);

impl Ack {
    pub async fn wait(self) -> Result<(), SinkError> {
        self.0.await.unwrap_or_else(|_| {
            Err(SinkError::Unavailable(
                "the pipeline stopped before the data was stored".into(),
            ))
        })
    }
}

/// Where a batch came from, for enrichment.
#[derive(Clone, Copy, Debug, Default)]
pub struct Origin {
    pub peer: Option<SocketAddr>,
}

#[derive(Clone)]
pub struct Pipeline {
    inner: Arc<Inner>,
}

struct Inner {
    sink: Box<dyn DurableSink>,
    enricher: Enricher,
    capacity: usize,
    used: AtomicUsize,
}

/// Releases its share of the budget when dropped, whatever happens to the task.
struct Reservation {
    inner: Arc<Inner>,
    bytes: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.inner.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

impl Pipeline {
    pub fn new(sink: impl DurableSink, enricher: Enricher, capacity_bytes: usize) -> Pipeline {
        Pipeline {
            inner: Arc::new(Inner {
                sink: Box::new(sink),
                enricher,
                capacity: capacity_bytes.max(1),
                used: AtomicUsize::new(0),
            }),
        }
    }

    pub fn capacity_bytes(&self) -> usize {
        self.inner.capacity
    }

    pub fn used_bytes(&self) -> usize {
        self.inner.used.load(Ordering::Acquire)
    }

    /// Admits `batch` (whose in-memory size the caller estimates as `bytes`, usually a small
    /// multiple of its wire size) or refuses it at once when the budget is spent.
    ///
    /// A single batch larger than the whole budget is admitted only when nothing else is in flight,
    /// so it cannot starve forever yet the bound holds up to one batch.
    pub fn submit(&self, mut batch: Batch, bytes: usize, origin: Origin) -> Result<Ack, Busy> {
        let inner = &self.inner;
        let mut used = inner.used.load(Ordering::Acquire);
        loop {
            let fits = used + bytes <= inner.capacity || used == 0;
            if !fits {
                return Err(Busy {
                    used,
                    capacity: inner.capacity,
                });
            }
            match inner.used.compare_exchange_weak(
                used,
                used + bytes,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => used = now,
            }
        }
        let reservation = Reservation {
            inner: inner.clone(),
            bytes,
        };
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let r = reservation;
            r.inner.enricher.enrich(&mut batch, origin).await;
            let res = r.inner.sink.write(batch).await;
            drop(r);
            let _ = tx.send(res);
        });
        Ok(Ack(rx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Gate(Arc<Mutex<Vec<usize>>>, Arc<tokio::sync::Notify>);

    impl DurableSink for Gate {
        fn write(&self, b: Batch) -> WriteFuture<'_> {
            Box::pin(async move {
                self.1.notified().await;
                self.0.lock().unwrap().push(b.len());
                Ok(())
            })
        }
    }

    #[tokio::test]
    async fn refuses_when_the_byte_budget_is_spent_and_recovers_after_acks() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(tokio::sync::Notify::new());
        let p = Pipeline::new(Gate(seen.clone(), gate.clone()), Enricher::disabled(), 100);
        let a = p
            .submit(Batch::Spans(vec![]), 60, Origin::default())
            .unwrap();
        let busy = p
            .submit(Batch::Spans(vec![]), 60, Origin::default())
            .err()
            .unwrap();
        assert_eq!((busy.used, busy.capacity), (60, 100));
        gate.notify_one();
        a.wait().await.unwrap();
        assert_eq!(p.used_bytes(), 0);
        let b = p
            .submit(Batch::Spans(vec![]), 60, Origin::default())
            .unwrap();
        gate.notify_one();
        b.wait().await.unwrap();
        assert_eq!(seen.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn an_oversize_batch_passes_only_alone() {
        let gate = Arc::new(tokio::sync::Notify::new());
        let p = Pipeline::new(
            Gate(Default::default(), gate.clone()),
            Enricher::disabled(),
            10,
        );
        let a = p
            .submit(Batch::Spans(vec![]), 50, Origin::default())
            .unwrap();
        assert!(
            p.submit(Batch::Spans(vec![]), 1, Origin::default())
                .is_err()
        );
        gate.notify_one();
        a.wait().await.unwrap();
    }
}
