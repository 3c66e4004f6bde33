//! Reading a BPF ring buffer into parsed records.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use libbpf_rs::{MapCore, RingBuffer, RingBufferBuilder};

use crate::error::{EbpfError, Result};

/// Collects the records of one ring buffer, parsed by `parse`, until the next [`RecordReader::drain`].
pub(crate) struct RecordReader<T> {
    ring: RingBuffer<'static>,
    records: Arc<Mutex<Vec<T>>>,
    malformed: Arc<AtomicU64>,
}

impl<T: Send + 'static> RecordReader<T> {
    pub(crate) fn new(map: &dyn MapCore, parse: fn(&[u8]) -> Option<T>) -> Result<Self> {
        let records = Arc::new(Mutex::new(Vec::new()));
        let malformed = Arc::new(AtomicU64::new(0));
        let mut builder = RingBufferBuilder::new();
        let (sink, bad) = (records.clone(), malformed.clone());
        builder
            .add(map, move |data: &[u8]| {
                match parse(data) {
                    Some(record) => sink
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .push(record),
                    None => {
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                }
                0
            })
            .map_err(|source| EbpfError::Map {
                what: "adding the ring buffer reader",
                source,
            })?;
        let ring = builder.build().map_err(|source| EbpfError::Map {
            what: "creating the ring buffer reader",
            source,
        })?;
        Ok(Self {
            ring,
            records,
            malformed,
        })
    }

    /// Everything committed to the ring buffer so far, without waiting.
    pub(crate) fn drain(&mut self) -> Result<Vec<T>> {
        self.ring.consume().map_err(|source| EbpfError::Map {
            what: "consuming the ring buffer",
            source,
        })?;
        let mut records = self
            .records
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(std::mem::take(&mut *records))
    }

    /// Waits up to `timeout` for the first record; returns at once when there is one.
    pub(crate) fn wait(&self, timeout: std::time::Duration) -> Result<()> {
        // A positive return is a record count, negative an errno; EINTR is only a short wait.
        let rc = self.ring.poll_raw(timeout);
        if rc < 0 && rc != -libc::EINTR {
            return Err(EbpfError::Io {
                what: "waiting on the ring buffer",
                source: std::io::Error::from_raw_os_error(-rc),
            });
        }
        Ok(())
    }

    /// Records whose size did not match their layout (a kernel/userspace mismatch).
    pub(crate) fn malformed(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }
}

/// Little helpers to read a record field at a byte offset; records are native-endian C structs.
pub(crate) fn u64_at(data: &[u8], offset: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&data[offset..offset + 8]);
    u64::from_ne_bytes(bytes)
}

pub(crate) fn u32_at(data: &[u8], offset: usize) -> u32 {
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(&data[offset..offset + 4]);
    u32::from_ne_bytes(bytes)
}

pub(crate) fn i32_at(data: &[u8], offset: usize) -> i32 {
    u32_at(data, offset) as i32
}

/// A kernel `comm` (NUL-padded, at most 16 bytes) as text.
pub(crate) fn comm_at(data: &[u8], offset: usize) -> String {
    let raw = &data[offset..offset + 16];
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

pub(crate) fn u16_at(data: &[u8], offset: usize) -> u16 {
    let mut bytes = [0u8; 2];
    bytes.copy_from_slice(&data[offset..offset + 2]);
    u16::from_ne_bytes(bytes)
}
