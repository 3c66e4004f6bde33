//! The single writer: group commit into the WAL, then publish to memory; rotates the segment and
//! hands full memtables to the flusher.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use tokio::sync::oneshot;

use crate::flush::{self, FlushJob};
use crate::table::Table;
use crate::wal::{Frames, Segment};
use crate::{Shared, StoreError};

/// Frames beyond this many bytes wait for the next fsync, bounding one commit's latency.
const MAX_GROUP_BYTES: usize = 32 << 20;

/// Encoded WAL frames, the batches they hold, and who to tell once they are durable.
type PendingWrite = (
    Frames,
    Vec<(Table, RecordBatch)>,
    oneshot::Sender<Result<(), StoreError>>,
);

pub(crate) enum Msg {
    Write {
        frames: Frames,
        batches: Vec<(Table, RecordBatch)>,
        done: oneshot::Sender<Result<(), StoreError>>,
    },
    Flush {
        done: oneshot::Sender<Result<u64, StoreError>>,
    },
}

#[derive(Clone)]
pub(crate) struct WriterHandle(Sender<Msg>);

impl WriterHandle {
    pub fn send(&self, m: Msg) -> Result<(), StoreError> {
        self.0.send(m).map_err(|_| StoreError::Closed)
    }
}

pub(crate) fn start(shared: Arc<Shared>, next_seq: u64) -> Result<WriterHandle, StoreError> {
    let wal_dir = shared.dir.join("wal");
    let segment = Segment::create(&wal_dir, next_seq).map_err(StoreError::io(&wal_dir))?;
    let (tx, rx) = mpsc::channel();
    let flusher = flush::start(shared.clone());
    let mut w = Writer {
        shared,
        segment,
        flusher,
        flush_in_flight: false,
        first_unflushed: None,
    };
    std::thread::Builder::new()
        .name("oxeye-wal".into())
        .spawn(move || w.run(rx))
        .map_err(StoreError::io("thread"))?;
    Ok(WriterHandle(tx))
}

struct Writer {
    shared: Arc<Shared>,
    segment: Segment,
    flusher: flush::FlusherHandle,
    flush_in_flight: bool,
    first_unflushed: Option<Instant>,
}

impl Writer {
    fn run(&mut self, rx: Receiver<Msg>) {
        let tick = Duration::from_millis(500);
        loop {
            let first = match rx.recv_timeout(tick) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut writes = Vec::new();
            let mut flushes = Vec::new();
            let mut bytes = 0;
            let mut next = first;
            while let Some(m) = next {
                match m {
                    Msg::Write {
                        frames,
                        batches,
                        done,
                    } => {
                        bytes += frames.len();
                        writes.push((frames, batches, done));
                    }
                    Msg::Flush { done } => flushes.push(done),
                }
                next = if bytes < MAX_GROUP_BYTES {
                    rx.try_recv().ok()
                } else {
                    None
                };
            }
            if !writes.is_empty() {
                self.commit(writes);
            }
            self.poll_flusher(false);
            if !flushes.is_empty() {
                let res = self.flush_now();
                for d in flushes {
                    let _ = d.send(
                        res.as_ref()
                            .map(|n| *n)
                            .map_err(|e| StoreError::Query(e.to_string())),
                    );
                }
            } else if self.should_flush() {
                self.rotate();
            }
            // Memory over its bound: wait for the flusher before taking more writes (backpressure).
            while self.flush_in_flight
                && self.shared.read_state().mem_bytes >= self.shared.config.max_memory_bytes
            {
                self.poll_flusher(true);
            }
        }
    }

    fn commit(&mut self, mut writes: Vec<PendingWrite>) {
        let mut all = Frames::default();
        for w in &mut writes {
            all.append(std::mem::take(&mut w.0));
        }
        let total = all.len();
        match self.segment.append_durable(&all) {
            Ok(()) => {
                self.shared
                    .wal_bytes
                    .fetch_add(total as u64, Ordering::Relaxed);
                let mut dones = Vec::with_capacity(writes.len());
                {
                    let mut st = self.shared.write_state();
                    for (_, batches, done) in writes {
                        for (t, b) in batches {
                            st.mem_bytes += b.get_array_memory_size();
                            st.mem.entry(t).or_default().push(b);
                        }
                        dones.push(done);
                    }
                }
                self.first_unflushed.get_or_insert_with(Instant::now);
                for d in dones {
                    let _ = d.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "wal append failed; refusing the batches");
                let path = crate::wal::segment_path(&self.shared.dir.join("wal"), self.segment.seq);
                for (_, _, done) in writes {
                    let _ = done.send(Err(StoreError::Io {
                        path: path.clone(),
                        source: std::io::Error::new(e.kind(), e.to_string()),
                    }));
                }
            }
        }
    }

    fn should_flush(&self) -> bool {
        if self.flush_in_flight {
            return false;
        }
        let st = self.shared.read_state();
        if st.mem.is_empty() {
            return false;
        }
        st.mem_bytes >= self.shared.config.flush_bytes
            || self
                .first_unflushed
                .is_some_and(|t| t.elapsed() >= self.shared.config.flush_interval)
    }

    /// Starts a new segment and hands the memtable (covered by all older segments) to the flusher.
    fn rotate(&mut self) -> bool {
        let wal_dir = self.shared.dir.join("wal");
        let new = match Segment::create(&wal_dir, self.segment.seq + 1) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot start a new wal segment; flush postponed");
                return false;
            }
        };
        let old = std::mem::replace(&mut self.segment, new);
        let batches = {
            let mut st = self.shared.write_state();
            let mem = std::mem::take(&mut st.mem);
            st.mem_bytes = 0;
            st.flushing = mem.clone();
            mem
        };
        self.first_unflushed = None;
        self.flush_in_flight = true;
        self.flusher.submit(FlushJob {
            upto_seq: old.seq,
            batches,
        });
        true
    }

    fn poll_flusher(&mut self, block: bool) {
        if self.flush_in_flight && self.flusher.poll(block).is_some() {
            self.flush_in_flight = false;
        }
    }

    fn flush_now(&mut self) -> Result<u64, StoreError> {
        while self.flush_in_flight {
            self.poll_flusher(true);
        }
        let rows: usize = self
            .shared
            .read_state()
            .mem
            .values()
            .flatten()
            .map(|b| b.num_rows())
            .sum();
        if rows == 0 {
            return Ok(0);
        }
        if !self.rotate() {
            return Err(StoreError::Query(
                "cannot rotate the wal; see the server log".into(),
            ));
        }
        while self.flush_in_flight {
            self.poll_flusher(true);
        }
        Ok(rows as u64)
    }
}
