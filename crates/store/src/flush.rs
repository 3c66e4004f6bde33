//! Memory → Parquet, recovery at open, and retention.
//!
//! Files live at `<data>/<table>/<yyyy-mm-dd>/<hh>/<seq>.parquet`, where `seq` is the last WAL
//! segment the flush covered. A flush is committed by writing `wal/flushed` (that `seq`); only then
//! are the covered segments deleted. Recovery drops Parquet files newer than the marker (a flush that
//! did not commit) and replays the segments after it, so a crash anywhere loses and duplicates nothing.

use std::collections::BTreeMap;
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::compute::interleave_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::datatypes::TimestampNanosecondType;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_writer::{
    ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves,
};
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::parquet::file::writer::SerializedFileWriter;
use datafusion::parquet::schema::types::ColumnPath;

use crate::runcol::{OwnColumn, ZSTD_LEVEL, same_bytes};
use crate::table::Table;
use crate::wal;
use crate::{FileEntry, Shared, StoreError};

const HOUR_NS: i64 = 3_600_000_000_000;

pub(crate) struct FlushJob {
    pub upto_seq: u64,
    pub batches: BTreeMap<Table, Vec<RecordBatch>>,
}

pub(crate) struct FlusherHandle {
    tx: Sender<FlushJob>,
    done: Receiver<()>,
}

impl FlusherHandle {
    pub fn submit(&self, job: FlushJob) {
        let _ = self.tx.send(job);
    }

    /// Whether the submitted job finished (waiting for it when `block`).
    pub fn poll(&self, block: bool) -> Option<()> {
        if block {
            self.done.recv().ok()
        } else {
            self.done.try_recv().ok()
        }
    }
}

pub(crate) fn start(shared: Arc<Shared>) -> FlusherHandle {
    let (tx, rx) = mpsc::channel::<FlushJob>();
    let (done_tx, done) = mpsc::channel();
    let spawned = std::thread::Builder::new().name("oxeye-flush".into()).spawn(move || {
        loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(job) => {
                    let mut delay = Duration::from_millis(500);
                    while let Err(e) = run_job(&shared, &job) {
                        shared.flush_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(error = %e, "flush to parquet failed; data stays in the wal, retrying");
                        std::thread::sleep(delay);
                        delay = (delay * 2).min(Duration::from_secs(10));
                    }
                    let _ = done_tx.send(());
                    enforce_retention(&shared);
                }
                Err(RecvTimeoutError::Timeout) => enforce_retention(&shared),
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the flush thread");
    }
    FlusherHandle { tx, done }
}

fn run_job(shared: &Shared, job: &FlushJob) -> Result<(), StoreError> {
    let mut new_files: Vec<(Table, FileEntry)> = Vec::new();
    for (table, batches) in &job.batches {
        for f in write_table(&shared.dir, *table, batches, job.upto_seq)? {
            new_files.push((*table, f));
        }
    }
    let wal_dir = shared.dir.join("wal");
    let marker = wal_dir.join("flushed");
    let tmp = wal_dir.join("flushed.tmp");
    fs::write(&tmp, job.upto_seq.to_string()).map_err(StoreError::io(&tmp))?;
    fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(StoreError::io(&tmp))?;
    fs::rename(&tmp, &marker).map_err(StoreError::io(&marker))?;
    wal::sync_dir(&wal_dir).map_err(StoreError::io(&wal_dir))?;
    {
        let mut st = shared.write_state();
        st.flushing.clear();
        for (t, f) in new_files {
            st.files.entry(t).or_default().push(f);
        }
    }
    let mut freed = 0;
    for seq in wal::list_segments(&wal_dir).map_err(StoreError::io(&wal_dir))? {
        if seq <= job.upto_seq {
            let p = wal::segment_path(&wal_dir, seq);
            freed += fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            let _ = fs::remove_file(p);
        }
    }
    let _ = shared
        .wal_bytes
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
            Some(b.saturating_sub(freed))
        });
    shared.last_flush_ms.store(now_ms(), Ordering::Relaxed);
    Ok(())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn partition_dir(dir: &Path, table: Table, hour: i64) -> PathBuf {
    let secs = hour * 3600;
    let dt = chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default();
    dir.join(table.name())
        .join(dt.format("%Y-%m-%d").to_string())
        .join(dt.format("%H").to_string())
}

/// Rows of one memtable batch that share service, metric name and hour: the unit a flush writes.
struct Run<'a> {
    service: &'a str,
    name: &'a str,
    hour: i64,
    batch: usize,
    start: usize,
    len: usize,
}

/// Splits every batch into runs. Batches arrive sorted by service, name and time (see
/// `encode`), so a batch holds one run per service and hour, but nothing here relies on it.
fn runs<'a>(table: Table, batches: &'a [RecordBatch]) -> Result<Vec<Run<'a>>, StoreError> {
    let missing = |c: &str| StoreError::Query(format!("{} has no column {c}", table.name()));
    let mut out = Vec::new();
    for (bi, b) in batches.iter().enumerate() {
        let svc = b
            .column_by_name("ServiceName")
            .ok_or_else(|| missing("ServiceName"))?
            .as_string::<i32>();
        let name = b.column_by_name("MetricName").map(|c| c.as_string::<i32>());
        let time = b
            .column_by_name(table.time_column())
            .ok_or_else(|| missing(table.time_column()))?
            .as_primitive::<TimestampNanosecondType>();
        let key = |r: usize| {
            (
                svc.value(r),
                name.map_or("", |n| n.value(r)),
                time.value(r).div_euclid(HOUR_NS),
            )
        };
        // The strings are compared with `same_bytes`, not `==` (see there).
        let same = |(s1, n1, h1): (&str, &str, i64), (s2, n2, h2): (&str, &str, i64)| {
            h1 == h2
                && same_bytes(s1.as_bytes(), s2.as_bytes())
                && same_bytes(n1.as_bytes(), n2.as_bytes())
        };
        let mut start = 0;
        for r in 1..=b.num_rows() {
            if r == b.num_rows() || !same(key(r), key(start)) {
                let (service, name, hour) = key(start);
                out.push(Run {
                    service,
                    name,
                    hour,
                    batch: bi,
                    start,
                    len: r - start,
                });
                start = r;
            }
        }
    }
    // Stable by arrival within a service: batches are time-ordered inside, and arrive roughly in
    // time order, so each file is sorted by service and close to sorted by time.
    out.sort_by(|a, b| (a.hour, a.service, a.name).cmp(&(b.hour, b.service, b.name)));
    Ok(out)
}

/// Where readers look first; other columns carry no statistics, which costs less to write.
const STATISTICS_COLUMNS: [&str; 8] = [
    "ServiceName",
    "Timestamp",
    "TimeUnix",
    "SpanName",
    "MetricName",
    "Duration",
    "StatusCode",
    "SeverityNumber",
];

/// Random ids never repeat within a file, and nanosecond times and durations hardly do: a
/// dictionary only costs hashing before it is dropped.
const NO_DICTIONARY_COLUMNS: [&str; 8] = [
    "TraceId",
    "SpanId",
    "ParentSpanId",
    "Timestamp",
    "ObservedTimestamp",
    "TimeUnix",
    "StartTimeUnix",
    "Duration",
];

fn writer_properties(table: Table) -> WriterProperties {
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(ZSTD_LEVEL).unwrap_or_default(),
        ))
        .set_statistics_enabled(EnabledStatistics::None);
    for c in STATISTICS_COLUMNS {
        props = props.set_column_statistics_enabled(c.into(), EnabledStatistics::Page);
    }
    for c in NO_DICTIONARY_COLUMNS {
        props = props.set_column_dictionary_enabled(c.into(), false);
    }
    for m in PER_ROW_MAPS {
        let values = ColumnPath::new(vec![m.into(), "entries".into(), "values".into()]);
        props = props.set_column_dictionary_enabled(values, false);
    }
    if matches!(table, Table::Traces | Table::Logs) {
        // Trace lookups by id cannot use min/max statistics (ids are random); a bloom filter can.
        props = props.set_column_bloom_filter_enabled("TraceId".into(), true);
    }
    props.build()
}

/// Writes one file per hour partition, rows grouped by service (then metric name) and in time
/// order within each acknowledged batch. Runs of rows are written as slices of the memtable's
/// batches; gathering rows one by one into a fully sorted copy was most of a flush's cost.
fn write_table(
    dir: &Path,
    table: Table,
    batches: &[RecordBatch],
    seq: u64,
) -> Result<Vec<FileEntry>, StoreError> {
    let runs = runs(table, batches)?;
    if runs.is_empty() {
        return Ok(Vec::new());
    }
    let props = writer_properties(table);
    let sources: Vec<&RecordBatch> = batches.iter().collect();
    let mut out = Vec::new();
    for hour_runs in runs.chunk_by(|a, b| a.hour == b.hour) {
        let hour = hour_runs[0].hour;
        let pdir = partition_dir(dir, table, hour);
        fs::create_dir_all(&pdir).map_err(StoreError::io(&pdir))?;
        let path = pdir.join(format!("{seq:020}.parquet"));
        let tmp = pdir.join(format!("{seq:020}.parquet.tmp"));
        let file = fs::File::create(&tmp).map_err(StoreError::io(&tmp))?;
        let mut w = FileWriter::new(file, table.schema(), props.clone())?;
        let rows: usize = hour_runs.iter().map(|r| r.len).sum();
        if hour_runs.len() * 64 > rows {
            // Many short runs (batches that were not sorted when written): one gathered copy
            // writes faster than thousands of tiny slices.
            let idx: Vec<(usize, usize)> = hour_runs
                .iter()
                .flat_map(|r| (r.start..r.start + r.len).map(move |i| (r.batch, i)))
                .collect();
            let gathered = interleave_record_batch(&sources, &idx)?;
            w.write(&gathered, 0, gathered.num_rows())?;
        } else {
            for r in hour_runs {
                w.write(&batches[r.batch], r.start, r.len)?;
            }
        }
        let file = w.finish()?;
        file.sync_all().map_err(StoreError::io(&tmp))?;
        drop(file);
        fs::rename(&tmp, &path).map_err(StoreError::io(&path))?;
        wal::sync_dir(&pdir).map_err(StoreError::io(&pdir))?;
        let bytes = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        out.push(FileEntry {
            path,
            bytes,
            hour_start_ns: hour * HOUR_NS,
        });
    }
    Ok(out)
}

const ROW_GROUP_ROWS: usize = 64 * 1024;

/// The values of a span's, log's or point's attributes mostly change from row to row (their keys
/// go through a dictionary all the same): hashing them would cost more than zstd's taking out
/// what does repeat, so they are written PLAIN. A resource's or scope's map repeats whole on
/// every row of a run, so its values keep the dictionary.
const PER_ROW_MAPS: [&str; 3] = ["SpanAttributes", "LogAttributes", "Attributes"];

/// The columns written by [`OwnColumn`] rather than the generic Arrow column writer: the
/// top-level attribute maps, names that repeat from row to row (a row equal to the previous one
/// costs a comparison, not a hash) and span ids. `TraceId` stays with the generic writer, which
/// builds its bloom filter. Both writers take dictionaries and statistics from the same
/// [`writer_properties`].
fn written_by_runcol(name: &str) -> bool {
    matches!(
        name,
        "ResourceAttributes"
            | "ScopeAttributes"
            | "SpanAttributes"
            | "LogAttributes"
            | "Attributes"
            | "ServiceName"
            | "SpanName"
            | "SpanKind"
            | "StatusCode"
            | "StatusMessage"
            | "TraceState"
            | "ScopeName"
            | "ScopeVersion"
            | "SeverityText"
            | "MetricName"
            | "MetricDescription"
            | "MetricUnit"
            | "SpanId"
            | "ParentSpanId"
    )
}

/// An Arrow-to-Parquet file writer that hands the columns named by [`written_by_runcol`] to
/// [`OwnColumn`] and every other column to parquet's own Arrow column writers; the file is the
/// same a plain `ArrowWriter` writes (schema, row groups of [`ROW_GROUP_ROWS`], properties),
/// apart from those columns' encoding.
pub(crate) struct FileWriter<W: std::io::Write + Send> {
    file: SerializedFileWriter<W>,
    factory: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    /// Each field's leaf columns, by index.
    leaves: Vec<Range<usize>>,
    /// The open row group: one writer per leaf column, and per field its own encoder if any.
    writers: Vec<ArrowColumnWriter>,
    own: Vec<Option<OwnColumn>>,
    rows: usize,
    row_groups: usize,
    zstd: zstd::bulk::Compressor<'static>,
}

impl<W: std::io::Write + Send> FileWriter<W> {
    pub(crate) fn new(
        out: W,
        schema: SchemaRef,
        props: WriterProperties,
    ) -> Result<Self, StoreError> {
        let (file, factory) =
            ArrowWriter::try_new(out, schema.clone(), Some(props))?.into_serialized_writer()?;
        let parquet = file.schema_descr();
        // Leaves come in their fields' order: each starts its field's range or extends it.
        let mut leaves: Vec<Range<usize>> = Vec::with_capacity(schema.fields().len());
        for leaf in 0..parquet.num_columns() {
            match leaves.get_mut(parquet.get_column_root_idx(leaf)) {
                Some(field) => field.end = leaf + 1,
                None => leaves.push(leaf..leaf + 1),
            }
        }
        Ok(FileWriter {
            file,
            factory,
            schema,
            leaves,
            writers: Vec::new(),
            own: Vec::new(),
            rows: 0,
            row_groups: 0,
            zstd: zstd::bulk::Compressor::new(ZSTD_LEVEL)
                .map_err(|e| StoreError::Parquet(ParquetError::External(Box::new(e))))?,
        })
    }

    /// Writes rows `start..start + len` of `batch`.
    pub(crate) fn write(
        &mut self,
        batch: &RecordBatch,
        mut start: usize,
        mut len: usize,
    ) -> Result<(), StoreError> {
        while len > 0 {
            let n = len.min(ROW_GROUP_ROWS - self.rows);
            self.write_part(batch, start, n)?;
            start += n;
            len -= n;
            if self.rows == ROW_GROUP_ROWS {
                self.close_row_group()?;
            }
        }
        Ok(())
    }

    fn write_part(
        &mut self,
        batch: &RecordBatch,
        start: usize,
        n: usize,
    ) -> Result<(), StoreError> {
        if self.rows == 0 {
            self.writers = self.factory.create_column_writers(self.row_groups)?;
            let (parquet, props) = (self.file.schema_descr(), self.file.properties());
            self.own.clear();
            for (field, leaves) in self.schema.fields().iter().zip(&self.leaves) {
                let leaves = &parquet.columns()[leaves.clone()];
                self.own.push(
                    written_by_runcol(field.name())
                        .then(|| OwnColumn::new(field, leaves, props))
                        .flatten(),
                );
            }
        }
        for (i, field) in self.schema.fields().iter().enumerate() {
            let column = batch.column(i);
            if let Some(own) = &mut self.own[i] {
                own.append(column, start, n);
            } else {
                let writers = &mut self.writers[self.leaves[i].clone()];
                for (w, l) in writers
                    .iter_mut()
                    .zip(compute_leaves(field, &column.slice(start, n))?)
                {
                    w.write(&l)?;
                }
            }
        }
        self.rows += n;
        Ok(())
    }

    fn close_row_group(&mut self) -> Result<(), StoreError> {
        let mut group = self.file.next_row_group()?;
        let mut writers = std::mem::take(&mut self.writers).into_iter();
        for (i, own) in self.own.iter_mut().enumerate() {
            let field_writers = writers.by_ref().take(self.leaves[i].len());
            match own.take() {
                Some(own) => {
                    // Its leaves' generic writers were made with the row group and go unused.
                    field_writers.for_each(drop);
                    for (bytes, close) in own.finish(&mut self.zstd)? {
                        group.append_column(&bytes, close)?;
                    }
                }
                None => {
                    for w in field_writers {
                        w.close()?.append_to_row_group(&mut group)?;
                    }
                }
            }
        }
        group.close()?;
        self.rows = 0;
        self.row_groups += 1;
        Ok(())
    }

    /// Closes the last row group, writes the footer and returns the output.
    pub(crate) fn finish(mut self) -> Result<W, StoreError> {
        if self.rows > 0 {
            self.close_row_group()?;
        }
        Ok(self.file.into_inner()?)
    }
}

/// Loads the file list and replays the WAL into memory. With `repair`, also removes what an
/// interrupted flush left and cuts torn WAL tails. Returns the next segment number.
pub(crate) fn recover(shared: &Shared, repair: bool) -> Result<u64, StoreError> {
    let wal_dir = shared.dir.join("wal");
    let marker: u64 = fs::read_to_string(wal_dir.join("flushed"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let mut files: BTreeMap<Table, Vec<FileEntry>> = BTreeMap::new();
    for table in Table::ALL {
        let tdir = shared.dir.join(table.name());
        let Ok(days) = fs::read_dir(&tdir) else {
            continue;
        };
        for day in days.flatten() {
            let Ok(hours) = fs::read_dir(day.path()) else {
                continue;
            };
            let day_name = day.file_name().to_string_lossy().to_string();
            for hour in hours.flatten() {
                let hour_name = hour.file_name().to_string_lossy().to_string();
                let Some(hour_start_ns) = parse_partition(&day_name, &hour_name) else {
                    continue;
                };
                let Ok(entries) = fs::read_dir(hour.path()) else {
                    continue;
                };
                for f in entries.flatten() {
                    let path = f.path();
                    let name = f.file_name().to_string_lossy().to_string();
                    if name.ends_with(".tmp") {
                        if repair {
                            let _ = fs::remove_file(&path);
                        }
                        continue;
                    }
                    let Some(seq) = name
                        .strip_suffix(".parquet")
                        .and_then(|s| s.parse::<u64>().ok())
                    else {
                        continue;
                    };
                    if seq > marker {
                        // Written by a flush that never committed: the WAL still has these rows.
                        if repair {
                            tracing::warn!(file = %path.display(), "removing parquet file of an uncommitted flush");
                            let _ = fs::remove_file(&path);
                        }
                        continue;
                    }
                    let bytes = f.metadata().map(|m| m.len()).unwrap_or(0);
                    files.entry(table).or_default().push(FileEntry {
                        path,
                        bytes,
                        hour_start_ns,
                    });
                }
            }
        }
    }
    let mut mem: BTreeMap<Table, Vec<RecordBatch>> = BTreeMap::new();
    let mut mem_bytes = 0;
    let mut wal_bytes = 0;
    let mut max_seq = marker;
    for seq in wal::list_segments(&wal_dir).map_err(StoreError::io(&wal_dir))? {
        let path = wal::segment_path(&wal_dir, seq);
        max_seq = max_seq.max(seq);
        if seq <= marker {
            if repair {
                let _ = fs::remove_file(&path);
            }
            continue;
        }
        let replay = wal::read_segment(&path).map_err(StoreError::io(&path))?;
        if replay.valid_len < replay.file_len {
            let torn = replay.file_len - replay.valid_len;
            shared.torn_bytes.fetch_add(torn, Ordering::Relaxed);
            if repair {
                tracing::warn!(
                    segment = %path.display(),
                    at = replay.valid_len,
                    bytes = torn,
                    "wal segment ends in a torn or corrupt frame (never acknowledged); cutting it"
                );
                fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| {
                        f.set_len(replay.valid_len)?;
                        f.sync_all()
                    })
                    .map_err(StoreError::io(&path))?;
            }
        }
        wal_bytes += replay.valid_len;
        for (t, b) in replay.batches {
            let b = crate::table::conform(t, b)?;
            mem_bytes += b.get_array_memory_size();
            mem.entry(t).or_default().push(b);
        }
    }
    {
        let mut st = shared.write_state();
        st.files = files;
        st.mem = mem;
        st.mem_bytes = mem_bytes;
    }
    shared.wal_bytes.store(wal_bytes, Ordering::Relaxed);
    Ok(max_seq + 1)
}

fn parse_partition(day: &str, hour: &str) -> Option<i64> {
    let d = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()?;
    let h: u32 = hour.parse().ok().filter(|h| *h < 24)?;
    let t = d.and_hms_opt(h, 0, 0)?.and_utc().timestamp();
    Some(t * 1_000_000_000)
}

/// Deletes whole hour partitions: those older than the age limit, then the oldest ones while the
/// files exceed the size limit.
pub(crate) fn enforce_retention(shared: &Shared) {
    let cfg = &shared.config;
    retain(shared, cfg.retention_age, cfg.retention_bytes);
}

/// [`enforce_retention`] with the given limits.
pub(crate) fn retain(
    shared: &Shared,
    retention_age: Option<Duration>,
    retention_bytes: Option<u64>,
) {
    let now_ns = now_ms() as i64 * 1_000_000;
    let mut doomed: Vec<PathBuf> = Vec::new();
    let retired = {
        let mut st = shared.write_state();
        if let Some(age) = retention_age {
            let cutoff = now_ns - age.as_nanos() as i64;
            for files in st.files.values_mut() {
                files.retain(|f| {
                    let keep = f.hour_start_ns + HOUR_NS > cutoff;
                    if !keep {
                        doomed.push(f.path.clone());
                    }
                    keep
                });
            }
        }
        if let Some(limit) = retention_bytes {
            let mut total: u64 = st.files.values().flatten().map(|f| f.bytes).sum();
            while total > limit {
                let Some(oldest) = st.files.values().flatten().map(|f| f.hour_start_ns).min()
                else {
                    break;
                };
                for files in st.files.values_mut() {
                    files.retain(|f| {
                        let keep = f.hour_start_ns != oldest;
                        if !keep {
                            total = total.saturating_sub(f.bytes);
                            doomed.push(f.path.clone());
                        }
                        keep
                    });
                }
            }
        }
        if doomed.is_empty() {
            return;
        }
        // Queries that started before this point may still open the doomed files: hand them to
        // the lease those queries hold, and give later queries a fresh one.
        std::mem::take(&mut st.lease)
    };
    retired.doom(doomed);
}
