//! The write-ahead log: numbered segment files of checksummed frames, one Arrow IPC record batch
//! per frame. A segment becomes obsolete once a flush that covers it has committed its Parquet files.
//!
//! Frame: `len: u32 LE | crc32(tag ++ payload): u32 LE | tag: u8 | payload: Arrow IPC stream`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;

use crate::table::Table;

const HEADER: usize = 9;

pub fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.wal"))
}

/// Segment numbers present in `dir`, ascending.
pub fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let name = e?.file_name();
        let name = name.to_string_lossy();
        if let Some(seq) = name.strip_suffix(".wal").and_then(|s| s.parse().ok()) {
            out.push(seq);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Appends one frame for `batch` to `buf`.
pub fn encode_frame(
    buf: &mut Vec<u8>,
    table: Table,
    batch: &RecordBatch,
) -> Result<(), ArrowError> {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; HEADER]);
    buf[start + 8] = table.tag();
    {
        let mut w = StreamWriter::try_new(&mut *buf, &batch.schema())?;
        w.write(batch)?;
        w.finish()?;
    }
    let len = (buf.len() - start - HEADER) as u32;
    let crc = crc32fast::hash(&buf[start + 8..]);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// What replaying one segment found.
pub struct Replay {
    pub batches: Vec<(Table, RecordBatch)>,
    /// Bytes of valid frames; anything after this is a torn or corrupt tail.
    pub valid_len: u64,
    pub file_len: u64,
}

pub fn read_segment(path: &Path) -> io::Result<Replay> {
    let mut data = Vec::new();
    File::open(path)?.read_to_end(&mut data)?;
    let mut batches = Vec::new();
    let mut pos = 0usize;
    while pos + HEADER <= data.len() {
        let len = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().unwrap_or_default());
        let end = pos + HEADER + len;
        if end > data.len() || crc32fast::hash(&data[pos + 8..end]) != crc {
            break;
        }
        let Some(table) = Table::from_tag(data[pos + 8]) else {
            break;
        };
        let reader = match StreamReader::try_new(&data[pos + HEADER..end], None) {
            Ok(r) => r,
            Err(_) => break,
        };
        let mut ok = true;
        for b in reader {
            match b {
                Ok(b) => batches.push((table, b)),
                Err(_) => ok = false,
            }
        }
        if !ok {
            break;
        }
        pos = end;
    }
    Ok(Replay {
        batches,
        valid_len: pos as u64,
        file_len: data.len() as u64,
    })
}

/// The segment currently being appended to.
pub struct Segment {
    pub seq: u64,
    file: File,
    len: u64,
}

impl Segment {
    pub fn create(dir: &Path, seq: u64) -> io::Result<Segment> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(dir, seq))?;
        let len = file.metadata()?.len();
        sync_dir(dir)?;
        Ok(Segment { seq, file, len })
    }

    /// Appends and fsyncs. On failure the segment is cut back to where it was, so a half-written
    /// frame can never sit in front of later good ones.
    pub fn append_durable(&mut self, frames: &[u8]) -> io::Result<()> {
        let res = self
            .file
            .write_all(frames)
            .and_then(|_| self.file.sync_data());
        match res {
            Ok(()) => {
                self.len += frames.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = self.file.set_len(self.len);
                Err(e)
            }
        }
    }
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
