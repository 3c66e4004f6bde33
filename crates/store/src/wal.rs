//! The write-ahead log: numbered segment files of checksummed frames, one Arrow IPC record batch
//! per frame. A segment becomes obsolete once a flush that covers it has committed its Parquet files.
//!
//! Frame: `len: u32 LE | crc32(tag ++ payload): u32 LE | tag: u8 | payload`. The payload is an
//! Arrow IPC stream for a table's tag, or, for [`RAW_SPANS`], an OTLP/protobuf trace request as it
//! came (with the resources as enrichment left them): a tenth of the bytes to write, and no IPC
//! encoding on the way in. Replay turns it into the same rows the write put in memory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Read, Write};
use std::path::{Path, PathBuf};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;

use std::sync::Arc;

use bytes::Bytes;
use model::Resource;
use model::otlp_wire::{RawSpans, scan_traces};

use crate::encode;
use crate::table::Table;

const HEADER: usize = 9;

/// Tag of a frame holding an OTLP trace request (`Batch::RawSpans`), not an Arrow batch.
const RAW_SPANS: u8 = 0xF0;

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

/// Encoded frames, as the pieces to write in order: a request's bytes are written from the
/// buffer they arrived in rather than copied into the frame.
#[derive(Default)]
pub struct Frames {
    pieces: Vec<Bytes>,
}

impl Frames {
    /// Bytes across all pieces.
    pub fn len(&self) -> usize {
        self.pieces.iter().map(Bytes::len).sum()
    }

    /// Appends `other`'s pieces (no bytes are copied).
    pub fn append(&mut self, other: Frames) {
        self.pieces.extend(other.pieces);
    }

    /// The frames as one contiguous buffer.
    #[cfg(test)]
    fn to_vec(&self) -> Vec<u8> {
        self.pieces.concat()
    }
}

/// Appends one frame for `batch`.
pub fn encode_frame(
    frames: &mut Frames,
    table: Table,
    batch: &RecordBatch,
) -> Result<(), ArrowError> {
    let mut buf = vec![0u8; HEADER];
    buf[8] = table.tag();
    {
        let mut w = StreamWriter::try_new(&mut buf, &batch.schema())?;
        w.write(batch)?;
        w.finish()?;
    }
    let len = (buf.len() - HEADER) as u32;
    let crc = crc32fast::hash(&buf[8..]);
    buf[..4].copy_from_slice(&len.to_le_bytes());
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
    frames.pieces.push(buf.into());
    Ok(())
}

/// Appends one frame holding `raw`: its resources (enriched), then the request bytes, which stay
/// where they are (the frame's last piece is `raw.bytes` itself).
pub fn encode_raw_frame(frames: &mut Frames, raw: &RawSpans) {
    let mut head = vec![0u8; HEADER];
    head[8] = RAW_SPANS;
    let put = |buf: &mut Vec<u8>, b: &[u8]| {
        buf.extend_from_slice(&(b.len() as u32).to_le_bytes());
        buf.extend_from_slice(b);
    };
    head.extend_from_slice(&(raw.groups.len() as u32).to_le_bytes());
    for g in &raw.groups {
        put(&mut head, g.resource.schema_url.as_bytes());
        head.extend_from_slice(&(g.resource.attributes.len() as u32).to_le_bytes());
        for (k, v) in &g.resource.attributes {
            put(&mut head, k.as_bytes());
            put(&mut head, v.as_bytes());
        }
    }
    head.extend_from_slice(&(raw.bytes.len() as u32).to_le_bytes());
    let len = (head.len() - HEADER + raw.bytes.len()) as u32;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head[8..]);
    crc.update(&raw.bytes);
    head[..4].copy_from_slice(&len.to_le_bytes());
    head[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
    frames.pieces.push(head.into());
    frames.pieces.push(raw.bytes.clone());
}

/// The rows of a [`RAW_SPANS`] payload; `None` when it does not parse (a corrupt frame).
fn decode_raw_frame(payload: &[u8]) -> Option<RecordBatch> {
    struct Cursor<'a>(&'a [u8]);
    impl<'a> Cursor<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            let (head, rest) = self.0.split_at_checked(n)?;
            self.0 = rest;
            Some(head)
        }
        fn count(&mut self) -> Option<usize> {
            Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize)
        }
        fn text(&mut self) -> Option<String> {
            let n = self.count()?;
            Some(std::str::from_utf8(self.take(n)?).ok()?.to_string())
        }
    }
    let mut c = Cursor(payload);
    let groups = c.count()?;
    let mut resources = Vec::with_capacity(groups.min(1 << 16));
    for _ in 0..groups {
        let schema_url = c.text()?;
        let n = c.count()?;
        let mut attributes = Vec::with_capacity(n.min(1 << 16));
        for _ in 0..n {
            attributes.push((c.text()?, c.text()?));
        }
        resources.push(Resource {
            attributes,
            schema_url,
        });
    }
    let n = c.count()?;
    let mut raw = scan_traces(Bytes::copy_from_slice(c.take(n)?)).ok()?;
    if raw.groups.len() != resources.len() {
        return None;
    }
    for (g, r) in raw.groups.iter_mut().zip(resources) {
        g.resource = Arc::new(r);
    }
    encode::raw_spans(&raw).ok()
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
        if data[pos + 8] == RAW_SPANS {
            match decode_raw_frame(&data[pos + HEADER..end]) {
                Some(b) => batches.push((Table::Traces, b)),
                None => break,
            }
            pos = end;
            continue;
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
    pub fn append_durable(&mut self, frames: &Frames) -> io::Result<()> {
        let res =
            write_all_vectored(&mut self.file, &frames.pieces).and_then(|_| self.file.sync_data());
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

/// Writes every piece, in order, with as few `writev` calls as the kernel allows.
fn write_all_vectored(file: &mut File, pieces: &[Bytes]) -> io::Result<()> {
    // No empty slices: a write of only empty ones would look like a device that takes nothing.
    let mut slices: Vec<IoSlice<'_>> = pieces
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| IoSlice::new(p))
        .collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::Batch;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
    use opentelemetry_proto::tonic::resource::v1::Resource as OtlpResource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(v.into())),
            }),
            ..Default::default()
        }
    }

    fn request() -> ExportTraceServiceRequest {
        let span = |i: u8, name: &str| Span {
            trace_id: vec![i; 16],
            span_id: vec![i + 1; 8],
            name: name.into(),
            start_time_unix_nano: 1_700_000_000_000_000_000 + u64::from(i),
            end_time_unix_nano: 1_700_000_000_100_000_000,
            attributes: vec![kv("http.route", "/a"), kv("n", name)],
            ..Default::default()
        };
        let rs = |svc: &str, spans| ResourceSpans {
            resource: Some(OtlpResource {
                attributes: vec![kv("service.name", svc)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            schema_url: "s".into(),
        };
        ExportTraceServiceRequest {
            resource_spans: vec![
                rs("web", vec![span(3, "b"), span(1, "a")]),
                rs("db", vec![span(5, "q")]),
            ],
        }
    }

    #[test]
    fn a_raw_spans_frame_replays_into_the_rows_it_was_written_as() {
        let mut raw = scan_traces(Bytes::from(request().encode_to_vec())).unwrap();
        // Enrichment happened before the write: the replay must keep it.
        Arc::make_mut(&mut raw.groups[1].resource).set_default("host.name", "replay-host");
        let batch = Batch::RawSpans(raw.clone());
        let want = encode::encode(&batch).unwrap().remove(0).1;
        let mut frames = Frames::default();
        encode_raw_frame(&mut frames, &raw);
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), 1);
        Segment::create(dir.path(), 1)
            .unwrap()
            .append_durable(&frames)
            .unwrap();
        let buf = std::fs::read(&path).unwrap();
        assert_eq!(buf, frames.to_vec());
        let replay = read_segment(&path).unwrap();
        assert_eq!(replay.valid_len, buf.len() as u64);
        assert_eq!(replay.batches.len(), 1);
        assert_eq!(replay.batches[0].0, Table::Traces);
        assert_eq!(replay.batches[0].1, want);
        let text = format!(
            "{:?}",
            replay.batches[0].1.column_by_name("ResourceAttributes")
        );
        assert!(text.contains("replay-host"), "{text}");
        // A torn tail is cut at the last whole frame.
        std::fs::write(&path, &buf[..buf.len() - 3]).unwrap();
        let replay = read_segment(&path).unwrap();
        assert_eq!((replay.batches.len(), replay.valid_len), (0, 0));
    }
}
