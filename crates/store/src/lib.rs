//! The embedded store: a write-ahead log with group commit, recent data in memory as Arrow record
//! batches, older data in hour-partitioned Parquet files, all queried through DataFusion.
//!
//! Write path: [`Store::write`] encodes a batch to Arrow, hands it to the single writer thread, and
//! resolves once the fsync covering it returned. Read path: [`Store::sql`] and the typed reads in
//! [`read`] see memory and files as one table each.

mod encode;
mod flush;
pub mod insights;
pub mod profile_join;
pub mod profiles;
pub mod query;
pub mod read;
mod runcol;
pub mod security;
mod table;
mod wal;
mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use model::Batch;
use serde::Serialize;
use tokio::sync::oneshot;

pub use table::Table;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode batch: {0}")]
    Encode(#[from] datafusion::arrow::error::ArrowError),
    /// The data is not valid OTLP (found while reading it into columns): refused, nothing stored.
    #[error("{0}")]
    Malformed(model::otlp_wire::WireError),
    #[error("cannot write parquet: {0}")]
    Parquet(#[from] datafusion::parquet::errors::ParquetError),
    #[error("{0}")]
    Query(String),
    #[error("the store is read-only (opened by `oxeye query`)")]
    ReadOnly,
    #[error("the store is shutting down")]
    Closed,
    #[error(
        "data directory {dir} is in use by another oxeye (pid {pid}); stop it or choose another --data-dir"
    )]
    Locked { dir: PathBuf, pid: String },
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { path, source }
    }

    /// True when the error is the user's query, not the store's health.
    pub fn is_query_error(&self) -> bool {
        matches!(self, StoreError::Query(_))
    }
}

#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Flush memory to Parquet at least this often when there is data.
    pub flush_interval: Duration,
    /// Flush once this many bytes of Arrow data are in memory.
    pub flush_bytes: usize,
    /// Writes wait (and receivers push back) while memory holds more than this.
    pub max_memory_bytes: usize,
    /// Delete hour partitions older than this.
    pub retention_age: Option<Duration>,
    /// Delete the oldest hour partitions while the files take more than this.
    pub retention_bytes: Option<u64>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            flush_interval: Duration::from_secs(60),
            flush_bytes: 16 << 20,
            max_memory_bytes: 64 << 20,
            retention_age: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_bytes: None,
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct FileEntry {
    pub path: PathBuf,
    pub bytes: u64,
    /// Start of the hour partition, unix nanoseconds.
    pub hour_start_ns: i64,
}

#[derive(Default)]
pub(crate) struct State {
    pub mem: BTreeMap<Table, Vec<RecordBatch>>,
    pub mem_bytes: usize,
    /// Batches being written to Parquet: still served from memory until their files are in place.
    pub flushing: BTreeMap<Table, Vec<RecordBatch>>,
    pub files: BTreeMap<Table, Vec<FileEntry>>,
    /// Held by every query session; files dropped by retention are deleted once the last session
    /// that could still read them is gone.
    pub lease: Arc<FileLease>,
}

/// Files no longer listed in [`State::files`] but possibly still being read by a query that took
/// its snapshot before they were dropped; deleted when the lease is dropped.
#[derive(Default)]
pub(crate) struct FileLease {
    doomed: std::sync::Mutex<Vec<PathBuf>>,
}

impl FileLease {
    pub(crate) fn doom(&self, paths: Vec<PathBuf>) {
        self.doomed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(paths);
    }
}

impl Drop for FileLease {
    fn drop(&mut self) {
        let doomed = std::mem::take(self.doomed.get_mut().unwrap_or_else(|p| p.into_inner()));
        for p in doomed {
            tracing::info!(file = %p.display(), "retention: deleting");
            let _ = std::fs::remove_file(&p);
            // Remove the hour and day folders once empty.
            if let Some(hour) = p.parent()
                && std::fs::remove_dir(hour).is_ok()
                && let Some(day) = hour.parent()
            {
                let _ = std::fs::remove_dir(day);
            }
        }
    }
}

pub(crate) struct Shared {
    pub dir: PathBuf,
    pub config: StoreConfig,
    pub state: RwLock<State>,
    pub wal_bytes: AtomicU64,
    pub last_flush_ms: AtomicU64,
    pub torn_bytes: AtomicU64,
    pub flush_errors: AtomicU64,
}

impl Shared {
    pub(crate) fn read_state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }
    pub(crate) fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// A handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
    writer: Option<writer::WriterHandle>,
    _lock: Option<Arc<DirLock>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TableStats {
    pub memory_rows: usize,
    pub files: usize,
    pub file_bytes: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct StoreStats {
    pub tables: BTreeMap<&'static str, TableStats>,
    pub memory_bytes: usize,
    pub wal_bytes: u64,
    pub last_flush_ms: u64,
    pub torn_tail_bytes: u64,
    pub flush_errors: u64,
}

/// Held while a writer has the data directory: an exclusive `flock` on `<dir>/LOCK`, which the
/// kernel releases when the process dies, so a crash never leaves a stale lock.
struct DirLock {
    _file: std::fs::File,
}

fn lock_dir(dir: &Path) -> Result<DirLock, StoreError> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    let path = dir.join("LOCK");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(StoreError::io(&path))?;
    // SAFETY: flock on a file descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let mut pid = String::new();
        let _ = file.read_to_string(&mut pid);
        return Err(StoreError::Locked {
            dir: dir.to_path_buf(),
            pid: pid.trim().to_string(),
        });
    }
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = write!(file, "{}", std::process::id());
    Ok(DirLock { _file: file })
}

impl Store {
    /// Opens (creating if needed) the store in `dir`, replays the WAL and starts the writer.
    pub fn open(dir: &Path, config: StoreConfig) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir.join("wal")).map_err(StoreError::io(dir))?;
        let lock = lock_dir(dir)?;
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            config,
            state: RwLock::new(State::default()),
            wal_bytes: AtomicU64::new(0),
            last_flush_ms: AtomicU64::new(0),
            torn_bytes: AtomicU64::new(0),
            flush_errors: AtomicU64::new(0),
        });
        let next_seq = flush::recover(&shared, true)?;
        let writer = writer::start(shared.clone(), next_seq)?;
        Ok(Store {
            shared,
            writer: Some(writer),
            _lock: Some(Arc::new(lock)),
        })
    }

    /// Opens `dir` for queries only, alongside a running writer or none: reads files and the WAL,
    /// repairs nothing.
    pub fn open_read_only(dir: &Path) -> Result<Store, StoreError> {
        if !dir.join("wal").is_dir() {
            return Err(StoreError::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no oxeye store here (expected a wal/ folder)",
                ),
            });
        }
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            config: StoreConfig::default(),
            state: RwLock::new(State::default()),
            wal_bytes: AtomicU64::new(0),
            last_flush_ms: AtomicU64::new(0),
            torn_bytes: AtomicU64::new(0),
            flush_errors: AtomicU64::new(0),
        });
        flush::recover(&shared, false)?;
        Ok(Store {
            shared,
            writer: None,
            _lock: None,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Stores `batch`; resolves once it is on disk (fsynced in the WAL).
    pub async fn write(&self, batch: &Batch) -> Result<usize, StoreError> {
        let raw = match batch {
            Batch::RawSpans(raw) => Some(raw),
            _ => None,
        };
        self.write_tables(encode::encode(batch)?, raw).await
    }

    /// Stores rows already encoded for their tables; resolves once they are in the WAL. When
    /// they came from `raw`, the request itself is logged instead of the rows.
    pub(crate) async fn write_tables(
        &self,
        tables: Vec<(Table, RecordBatch)>,
        raw: Option<&model::otlp_wire::RawSpans>,
    ) -> Result<usize, StoreError> {
        let writer = self.writer.as_ref().ok_or(StoreError::ReadOnly)?;
        let rows: usize = tables.iter().map(|(_, b)| b.num_rows()).sum();
        if rows == 0 {
            return Ok(0);
        }
        let mut frames = wal::Frames::default();
        match raw {
            // The request itself is the log record: smaller than its rows, and already encoded.
            Some(raw) => wal::encode_raw_frame(&mut frames, raw),
            None => {
                for (t, b) in &tables {
                    wal::encode_frame(&mut frames, *t, b)?;
                }
            }
        }
        let (tx, rx) = oneshot::channel();
        writer.send(writer::Msg::Write {
            frames,
            batches: tables,
            done: tx,
        })?;
        rx.await.map_err(|_| StoreError::Closed)??;
        Ok(rows)
    }

    /// Writes everything in memory to Parquet now; returns the rows flushed.
    pub async fn flush(&self) -> Result<u64, StoreError> {
        let writer = self.writer.as_ref().ok_or(StoreError::ReadOnly)?;
        let (tx, rx) = oneshot::channel();
        writer.send(writer::Msg::Flush { done: tx })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    pub fn stats(&self) -> StoreStats {
        let st = self.shared.read_state();
        let tables = Table::ALL
            .iter()
            .map(|t| {
                let rows = |m: &BTreeMap<Table, Vec<RecordBatch>>| {
                    m.get(t)
                        .map(|v| v.iter().map(|b| b.num_rows()).sum::<usize>())
                        .unwrap_or(0)
                };
                let files = st.files.get(t).map(|f| f.as_slice()).unwrap_or(&[]);
                (
                    t.name(),
                    TableStats {
                        memory_rows: rows(&st.mem) + rows(&st.flushing),
                        files: files.len(),
                        file_bytes: files.iter().map(|f| f.bytes).sum(),
                    },
                )
            })
            .collect();
        StoreStats {
            tables,
            memory_bytes: st.mem_bytes,
            wal_bytes: self.shared.wal_bytes.load(Ordering::Relaxed),
            last_flush_ms: self.shared.last_flush_ms.load(Ordering::Relaxed),
            torn_tail_bytes: self.shared.torn_bytes.load(Ordering::Relaxed),
            flush_errors: self.shared.flush_errors.load(Ordering::Relaxed),
        }
    }

    /// Stops the writer after flushing what is in memory (the WAL would replay it anyway).
    pub async fn close(&self) {
        if let Some(w) = &self.writer {
            let (tx, rx) = oneshot::channel();
            if w.send(writer::Msg::Flush { done: tx }).is_ok() {
                let _ = rx.await;
            }
        }
    }
}
