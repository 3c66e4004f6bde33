//! Parquet encoding for the columns that repeat from row to row: top-level attribute maps and
//! names.
//!
//! A resource's attributes (and a scope's) are copied onto every row it sent, so a file holds
//! the same map thousands of times in a row; a span's or a log's attributes change values from
//! row to row but mostly keep their keys; a service's name is the same for a whole run of rows.
//! The generic Arrow column writer encodes every copy anew (hashing, levels, value bytes, grown
//! buffers), and zstd then takes the repetition out again; for a local sender that was over half
//! the flusher's work. [`MapColumn`] notices keys (and, for repeating maps, values) equal to the
//! previous row's and repeats that row's levels and dictionary indices instead, and
//! [`StringColumn`] hashes a name only when it differs from the previous row's. Each leaf becomes
//! a standard column chunk (a PLAIN dictionary page with RLE / bit-packed data pages, or PLAIN
//! data pages for values that rarely repeat), readable by any Parquet reader.

use std::collections::HashMap;

use bytes::Bytes;
use datafusion::arrow::array::{Array, AsArray, MapArray, StringArray};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::parquet::basic::{Compression, Encoding, EncodingMask, ZstdLevel};
use datafusion::parquet::column::page::{CompressedPage, Page, PageWriter};
use datafusion::parquet::column::writer::ColumnCloseResult;
use datafusion::parquet::data_type::ByteArray;
use datafusion::parquet::errors::{ParquetError, Result};
use datafusion::parquet::file::metadata::ColumnChunkMetaData;
use datafusion::parquet::file::page_index::offset_index::{OffsetIndexMetaData, PageLocation};
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::parquet::file::statistics::Statistics;
use datafusion::parquet::file::writer::{SerializedPageWriter, TrackedWrite};
use datafusion::parquet::schema::types::ColumnDescPtr;

/// A data page ends at the first row boundary after this many levels.
const PAGE_LEVELS: usize = 256 * 1024;

/// The zstd level the flusher writes with; the same for every column of a file.
pub(crate) const ZSTD_LEVEL: i32 = 1;

/// How a column's values (a map's values, or a string column's) are written.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Values {
    /// Through a dictionary: for maps whose whole content repeats (resource, scope) and names.
    Dictionary,
    /// PLAIN: for per-row maps' values and ids, which rarely repeat from row to row.
    Plain,
}

/// A column this module writes: a top-level attribute map or a non-null string.
pub(crate) enum OwnColumn {
    Map(Box<MapColumn>),
    String(StringColumn),
}

impl OwnColumn {
    /// An encoder for `field`, whose leaf columns are `leaves`, when its type is one this module
    /// writes; `None` leaves it to the generic writer. As there, `props` says which leaves go
    /// through a dictionary (a map's keys always do) and which carry statistics.
    pub(crate) fn new(
        field: &Field,
        leaves: &[ColumnDescPtr],
        props: &WriterProperties,
    ) -> Option<Self> {
        let values = |leaf: &ColumnDescPtr| match props.dictionary_enabled(leaf.path()) {
            true => Values::Dictionary,
            false => Values::Plain,
        };
        match (field.data_type(), leaves) {
            (DataType::Map(..), [keys, vals]) => {
                MapColumn::new(field, keys.clone(), vals.clone(), values(vals))
                    .map(|m| OwnColumn::Map(Box::new(m)))
            }
            (DataType::Utf8, [leaf]) => {
                let statistics = props.statistics_enabled(leaf.path()) != EnabledStatistics::None;
                StringColumn::new(field, leaf.clone(), values(leaf), statistics)
                    .map(OwnColumn::String)
            }
            _ => None,
        }
    }

    /// Appends rows `start..start + len` of `array` (of the field's type).
    pub(crate) fn append(&mut self, array: &dyn Array, start: usize, len: usize) {
        match self {
            OwnColumn::Map(m) => m.append(array.as_map(), start, len),
            OwnColumn::String(s) => s.append(array.as_string::<i32>(), start, len),
        }
    }

    /// The column's leaf chunks, in schema order: their bytes and what the row group needs to
    /// splice them.
    pub(crate) fn finish(
        self,
        zstd: &mut zstd::bulk::Compressor<'_>,
    ) -> Result<Vec<(Bytes, ColumnCloseResult)>> {
        match self {
            OwnColumn::Map(m) => m.finish(zstd),
            OwnColumn::String(s) => s.finish(zstd),
        }
    }
}

/// One row group's worth of a `Map<Utf8, Utf8>` column, encoded as rows arrive.
pub(crate) struct MapColumn {
    /// The `keys` and `values` leaves.
    leaves: [ColumnDescPtr; 2],
    values: Values,
    /// Definition levels of the `values` leaf: a null map, an empty map, an entry whose value is
    /// null, an entry with a value. The `keys` leaf's level is the same capped at `key_def`.
    null_map: u8,
    empty: u8,
    null_value: u8,
    value: u8,
    key_def: u8,
    dicts: [Dict; 2],
    rep: Vec<u8>,
    def: Vec<u8>,
    /// Dictionary indices of the keys and (with [`Values::Dictionary`]) of the non-null values.
    idx: [Vec<u32>; 2],
    /// The non-null values, PLAIN-encoded (with [`Values::Plain`]).
    plain: Vec<u8>,
    rows: usize,
    pages: Vec<PageEnd>,
    /// The last distinct keys and values seen, and what they encoded to.
    prev: [Run; 2],
}

/// Where a data page ends, in levels, indices, PLAIN bytes and rows.
#[derive(Clone, Copy, Default)]
struct PageEnd {
    levels: usize,
    idx: [usize; 2],
    plain: usize,
    rows: usize,
}

#[derive(Default)]
struct Dict {
    index: HashMap<Box<[u8]>, u32, foldhash::fast::RandomState>,
    /// The entries, PLAIN-encoded in index order.
    plain: Vec<u8>,
}

impl Dict {
    /// The smallest and the largest entry, by bytes.
    fn min_max(&self) -> Option<(&[u8], &[u8])> {
        let mut entries = self.index.keys().map(|k| &k[..]);
        let first = entries.next()?;
        Some(entries.fold((first, first), |(lo, hi), k| (lo.min(k), hi.max(k))))
    }

    fn intern(&mut self, v: &[u8]) -> u32 {
        if let Some(&i) = self.index.get(v) {
            return i;
        }
        let i = self.index.len() as u32;
        push_plain(&mut self.plain, v);
        self.index.insert(v.into(), i);
        i
    }
}

/// One leaf's strings from the last row that differed from its predecessor: their content, to
/// compare the next row with, and the levels and indices they encoded to. Before the first row
/// `offsets` is empty, which no row's (at least two offsets) equals.
#[derive(Default)]
struct Run {
    offsets: Vec<i32>,
    bytes: Vec<u8>,
    valid: Vec<bool>,
    levels: Vec<u8>,
    idx: Vec<u32>,
}

impl Run {
    fn same(&self, a: &StringArray, s: usize, e: usize) -> bool {
        let o = &a.value_offsets()[s..=e];
        o.len() == self.offsets.len()
            && same_bytes(
                &a.value_data()[o[0] as usize..o[e - s] as usize],
                &self.bytes,
            )
            && o.iter().zip(&self.offsets).all(|(x, r)| x - o[0] == *r)
            && (s..e).zip(&self.valid).all(|(i, v)| a.is_valid(i) == *v)
    }

    /// Takes entries `s..e` of `a` as the new run: `level(j, valid)` is entry `j`'s level, and
    /// each non-null string gets its dictionary index.
    fn set(
        &mut self,
        a: &StringArray,
        s: usize,
        e: usize,
        dict: &mut Dict,
        level: impl Fn(usize, bool) -> u8,
    ) {
        let o = &a.value_offsets()[s..=e];
        self.offsets.clear();
        self.offsets.extend(o.iter().map(|x| x - o[0]));
        self.bytes.clear();
        self.bytes
            .extend_from_slice(&a.value_data()[o[0] as usize..o[e - s] as usize]);
        self.valid.clear();
        self.levels.clear();
        self.idx.clear();
        for i in s..e {
            let valid = a.is_valid(i);
            self.valid.push(valid);
            self.levels.push(level(i - s, valid));
            if valid {
                self.idx.push(dict.intern(a.value(i).as_bytes()));
            }
        }
    }
}

impl MapColumn {
    /// An encoder for `field` when it is a `Map<Utf8, Utf8>` whose leaves have the levels this
    /// encoder writes (a top-level map); `None` leaves the column to the generic writer.
    pub(crate) fn new(
        field: &Field,
        keys: ColumnDescPtr,
        values: ColumnDescPtr,
        mode: Values,
    ) -> Option<Self> {
        let DataType::Map(entries, false) = field.data_type() else {
            return None;
        };
        let DataType::Struct(kv) = entries.data_type() else {
            return None;
        };
        let utf8 = |f: &Field| f.data_type() == &DataType::Utf8;
        if kv.len() != 2 || !utf8(&kv[0]) || !utf8(&kv[1]) || kv[0].is_nullable() {
            return None;
        }
        let key_def = 1 + i16::from(field.is_nullable());
        let value_def = key_def + i16::from(kv[1].is_nullable());
        if keys.max_rep_level() != 1
            || values.max_rep_level() != 1
            || keys.max_def_level() != key_def
            || values.max_def_level() != value_def
        {
            return None;
        }
        let (key_def, value_def) = (key_def as u8, value_def as u8);
        Some(MapColumn {
            leaves: [keys, values],
            values: mode,
            null_map: key_def.saturating_sub(2),
            empty: key_def - 1,
            null_value: key_def,
            value: value_def,
            key_def,
            dicts: Default::default(),
            rep: Vec::new(),
            def: Vec::new(),
            idx: Default::default(),
            plain: Vec::new(),
            rows: 0,
            pages: Vec::new(),
            prev: Default::default(),
        })
    }

    /// Appends rows `start..start + len` of `map`.
    pub(crate) fn append(&mut self, map: &MapArray, start: usize, len: usize) {
        let keys = map.keys().as_string::<i32>();
        let values = map.values().as_string::<i32>();
        let offsets = map.value_offsets();
        for r in start..start + len {
            let (s, e) = (offsets[r] as usize, offsets[r + 1] as usize);
            if map.is_null(r) {
                self.rep.push(0);
                self.def.push(self.null_map);
            } else if s == e {
                self.rep.push(0);
                self.def.push(self.empty);
            } else {
                self.append_entries(keys, values, s, e);
            }
            self.rows += 1;
            let end = self.end();
            end_page(&mut self.pages, end, PAGE_LEVELS);
        }
    }

    fn append_entries(&mut self, keys: &StringArray, values: &StringArray, s: usize, e: usize) {
        let [kp, vp] = &mut self.prev;
        if !kp.same(keys, s, e) {
            kp.set(keys, s, e, &mut self.dicts[0], |j, _| u8::from(j > 0));
        }
        self.rep.extend_from_slice(&kp.levels);
        self.idx[0].extend_from_slice(&kp.idx);
        let (value, null_value) = (self.value, self.null_value);
        let def = |_: usize, valid: bool| if valid { value } else { null_value };
        match self.values {
            Values::Dictionary => {
                if !vp.same(values, s, e) {
                    vp.set(values, s, e, &mut self.dicts[1], def);
                }
                self.def.extend_from_slice(&vp.levels);
                self.idx[1].extend_from_slice(&vp.idx);
            }
            Values::Plain => {
                for i in s..e {
                    let valid = values.is_valid(i);
                    self.def.push(def(0, valid));
                    if valid {
                        push_plain(&mut self.plain, values.value(i).as_bytes());
                    }
                }
            }
        }
    }

    fn end(&self) -> PageEnd {
        PageEnd {
            levels: self.rep.len(),
            idx: [self.idx[0].len(), self.idx[1].len()],
            plain: self.plain.len(),
            rows: self.rows,
        }
    }

    /// The two leaves' column chunks: their bytes and what the row group needs to splice them.
    pub(crate) fn finish(
        mut self,
        zstd: &mut zstd::bulk::Compressor<'_>,
    ) -> Result<Vec<(Bytes, ColumnCloseResult)>> {
        let end = self.end();
        end_page(&mut self.pages, end, 1);
        let key_defs: Vec<u8> = self.def.iter().map(|d| (*d).min(self.key_def)).collect();
        let keys = Leaf {
            descr: &self.leaves[0],
            rows: self.rows,
            pages: &self.pages,
            rep: &self.rep,
            def: &key_defs,
            dict: &self.dicts[0],
            idx: (&self.idx[0], 0),
            plain: None,
            statistics: None,
        };
        let values = Leaf {
            descr: &self.leaves[1],
            def: &self.def,
            dict: &self.dicts[1],
            idx: (&self.idx[1], 1),
            plain: (self.values == Values::Plain).then_some(&self.plain[..]),
            ..keys.clone()
        };
        Ok(vec![keys.write(zstd)?, values.write(zstd)?])
    }
}

/// One row group's worth of a non-null `Utf8` column, encoded as rows arrive: with
/// [`Values::Dictionary`], a row equal to the one before reuses its index without hashing.
pub(crate) struct StringColumn {
    descr: ColumnDescPtr,
    values: Values,
    dict: Dict,
    idx: Vec<u32>,
    plain: Vec<u8>,
    rows: usize,
    pages: Vec<PageEnd>,
    /// Whether the chunk carries its min and max (known from the dictionary, so only with
    /// [`Values::Dictionary`]).
    statistics: bool,
    /// The previous row's value and its index (with [`Values::Dictionary`]).
    prev: Vec<u8>,
    prev_idx: Option<u32>,
}

impl StringColumn {
    /// An encoder for `field` when it is a non-null, top-level `Utf8` column.
    pub(crate) fn new(
        field: &Field,
        descr: ColumnDescPtr,
        values: Values,
        statistics: bool,
    ) -> Option<Self> {
        if field.data_type() != &DataType::Utf8
            || field.is_nullable()
            || descr.max_def_level() != 0
            || descr.max_rep_level() != 0
        {
            return None;
        }
        Some(StringColumn {
            descr,
            values,
            dict: Dict::default(),
            idx: Vec::new(),
            plain: Vec::new(),
            rows: 0,
            pages: Vec::new(),
            statistics,
            prev: Vec::new(),
            prev_idx: None,
        })
    }

    /// Appends rows `start..start + len` of `a`.
    pub(crate) fn append(&mut self, a: &StringArray, start: usize, len: usize) {
        match self.values {
            Values::Dictionary => {
                for r in start..start + len {
                    let v = a.value(r).as_bytes();
                    let i = match self.prev_idx {
                        Some(i) if same_bytes(&self.prev, v) => i,
                        _ => {
                            let i = self.dict.intern(v);
                            self.prev.clear();
                            self.prev.extend_from_slice(v);
                            self.prev_idx = Some(i);
                            i
                        }
                    };
                    self.idx.push(i);
                }
            }
            Values::Plain => {
                let o = &a.value_offsets()[start..=start + len];
                self.plain.reserve((o[len] - o[0]) as usize + 4 * len);
                for r in start..start + len {
                    push_plain(&mut self.plain, a.value(r).as_bytes());
                }
            }
        }
        self.rows += len;
        let end = self.end();
        end_page(&mut self.pages, end, PAGE_LEVELS);
    }

    fn end(&self) -> PageEnd {
        PageEnd {
            levels: self.rows,
            idx: [self.idx.len(), 0],
            plain: self.plain.len(),
            rows: self.rows,
        }
    }

    /// The column chunk: its bytes and what the row group needs to splice it.
    pub(crate) fn finish(
        mut self,
        zstd: &mut zstd::bulk::Compressor<'_>,
    ) -> Result<Vec<(Bytes, ColumnCloseResult)>> {
        let end = self.end();
        end_page(&mut self.pages, end, 1);
        let leaf = Leaf {
            descr: &self.descr,
            rows: self.rows,
            pages: &self.pages,
            rep: &[],
            def: &[],
            dict: &self.dict,
            idx: (&self.idx, 0),
            plain: (self.values == Values::Plain).then_some(&self.plain[..]),
            statistics: self
                .dict
                .min_max()
                .filter(|_| self.statistics)
                .map(|(min, max)| {
                    Statistics::byte_array(
                        Some(ByteArray::from(min.to_vec())),
                        Some(ByteArray::from(max.to_vec())),
                        None,
                        Some(0),
                        false,
                    )
                }),
        };
        Ok(vec![leaf.write(zstd)?])
    }
}

/// What one leaf column chunk is made of: its pages' ends, levels (empty when the column has
/// none), dictionary indices (and which of [`PageEnd::idx`] counts them) or PLAIN values.
#[derive(Clone)]
struct Leaf<'a> {
    descr: &'a ColumnDescPtr,
    rows: usize,
    pages: &'a [PageEnd],
    rep: &'a [u8],
    def: &'a [u8],
    dict: &'a Dict,
    idx: (&'a [u32], usize),
    plain: Option<&'a [u8]>,
    /// The chunk's min and max, for readers to skip it by (names are compared by bytes, as
    /// Parquet orders UTF-8).
    statistics: Option<Statistics>,
}

impl Leaf<'_> {
    /// Writes the dictionary page (if any) and the data pages, version 1 and zstd-compressed.
    fn write(self, zstd: &mut zstd::bulk::Compressor<'_>) -> Result<(Bytes, ColumnCloseResult)> {
        let entries = self.dict.index.len() as u32;
        let def_width = bit_width(self.descr.max_def_level() as u32);
        let idx_width = bit_width(entries.saturating_sub(1)).max(1);
        let (idx, slot) = self.idx;
        let mut compress = |raw: &[u8]| -> Result<Bytes> {
            zstd.compress(raw)
                .map(Bytes::from)
                .map_err(|e| ParquetError::External(Box::new(e)))
        };
        let mut sink = TrackedWrite::new(Vec::new());
        let mut pages = SerializedPageWriter::new(&mut sink);
        let (mut compressed, mut uncompressed) = (0usize, 0usize);
        let mut dictionary_offset = None;
        if entries > 0 {
            let page = Page::DictionaryPage {
                buf: compress(&self.dict.plain)?,
                num_values: entries,
                encoding: Encoding::PLAIN,
                is_sorted: false,
            };
            let spec = pages.write_page(CompressedPage::new(page, self.dict.plain.len()))?;
            dictionary_offset = Some(spec.offset as i64);
            compressed += spec.compressed_size;
            uncompressed += spec.uncompressed_size;
        }
        let mut locations = Vec::with_capacity(self.pages.len());
        let mut from = PageEnd::default();
        let mut raw = Vec::new();
        for to in self.pages {
            raw.clear();
            if self.descr.max_rep_level() > 0 {
                let rep = &self.rep[from.levels..to.levels];
                with_length(&mut raw, |out| hybrid(rep, 1, out));
            }
            if self.descr.max_def_level() > 0 {
                let def = &self.def[from.levels..to.levels];
                with_length(&mut raw, |out| hybrid(def, def_width, out));
            }
            let encoding = if let Some(plain) = self.plain {
                raw.extend_from_slice(&plain[from.plain..to.plain]);
                Encoding::PLAIN
            } else if entries > 0 {
                raw.push(idx_width);
                hybrid(&idx[from.idx[slot]..to.idx[slot]], idx_width, &mut raw);
                Encoding::RLE_DICTIONARY
            } else {
                // Only empty or null maps: no values to write.
                Encoding::PLAIN
            };
            let page = Page::DataPage {
                buf: compress(&raw)?,
                num_values: (to.levels - from.levels) as u32,
                encoding,
                def_level_encoding: Encoding::RLE,
                rep_level_encoding: Encoding::RLE,
                statistics: None,
            };
            let spec = pages.write_page(CompressedPage::new(page, raw.len()))?;
            locations.push(PageLocation {
                offset: spec.offset as i64,
                compressed_page_size: spec.compressed_size as i32,
                first_row_index: from.rows as i64,
            });
            compressed += spec.compressed_size;
            uncompressed += spec.uncompressed_size;
            from = *to;
        }
        pages.close()?;
        let encodings = if entries > 0 {
            &[Encoding::PLAIN, Encoding::RLE, Encoding::RLE_DICTIONARY][..]
        } else {
            &[Encoding::PLAIN, Encoding::RLE][..]
        };
        let mut metadata = ColumnChunkMetaData::builder(self.descr.clone())
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(ZSTD_LEVEL)?))
            .set_encodings_mask(EncodingMask::new_from_encodings(encodings.iter()))
            .set_total_compressed_size(compressed as i64)
            .set_total_uncompressed_size(uncompressed as i64)
            .set_num_values(from.levels as i64)
            .set_data_page_offset(locations.first().map_or(0, |l| l.offset))
            .set_dictionary_page_offset(dictionary_offset);
        if let Some(statistics) = self.statistics {
            metadata = metadata.set_statistics(statistics);
        }
        let metadata = metadata.build()?;
        let close = ColumnCloseResult {
            bytes_written: compressed as u64,
            rows_written: self.rows as u64,
            metadata,
            bloom_filter: None,
            column_index: None,
            offset_index: Some(OffsetIndexMetaData {
                page_locations: locations,
                unencoded_byte_array_data_bytes: None,
            }),
        };
        Ok((Bytes::from(sink.into_inner()?), close))
    }
}

/// Whether two byte strings are equal, compared a word at a time in Rust. Slice `==` calls the C
/// library's `memcmp`, whose AVX-512 variant cost tens of nanoseconds per short comparison on a
/// 2-core AMD EPYC virtual machine (about 35 ns on average over the ~13 comparisons the flusher
/// makes per span: names and attribute maps against the row before; 40 % of its time); this
/// costs a few nanoseconds there and everywhere.
/// XOR-accumulating rather than exiting early keeps the loop from being turned back into a
/// `memcmp` call; the strings compared are short.
#[inline]
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (wa, wb) = (a.chunks_exact(8), b.chunks_exact(8));
    let mut diff = 0u64;
    for (x, y) in wa.remainder().iter().zip(wb.remainder()) {
        diff |= u64::from(x ^ y);
    }
    for (x, y) in wa.zip(wb) {
        let word = |c: &[u8]| u64::from_ne_bytes(c.try_into().unwrap_or_default());
        diff |= word(x) ^ word(y);
    }
    diff == 0
}

/// PLAIN encoding of a byte array: its length (u32 LE), then its bytes.
fn push_plain(out: &mut Vec<u8>, v: &[u8]) {
    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    out.extend_from_slice(v);
}

/// Ends the open data page at `end` once it holds at least `levels` levels (1 closes the chunk's
/// last page, [`PAGE_LEVELS`] cuts a full one).
fn end_page(pages: &mut Vec<PageEnd>, end: PageEnd, levels: usize) {
    let start = pages.last().map_or(0, |p| p.levels);
    if end.levels >= start + levels {
        pages.push(end);
    }
}

fn bit_width(max: u32) -> u8 {
    (32 - max.leading_zeros()) as u8
}

/// Runs `encode` and puts the byte length of what it wrote (u32 LE) in front, as version 1 data
/// pages frame their levels.
fn with_length(out: &mut Vec<u8>, encode: impl FnOnce(&mut Vec<u8>)) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    encode(out);
    let len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

/// Bit-packed runs are cut at this many groups of 8 values (a one-byte run header).
const MAX_PACKED_GROUPS: usize = 63;

/// Parquet's RLE / bit-packing hybrid: a run of 8 or more equal values is one RLE run; the rest
/// is bit-packed in groups of 8 (only the last group may be padded, at the end of the data).
fn hybrid<T: Copy + PartialEq + Into<u32>>(values: &[T], width: u8, out: &mut Vec<u8>) {
    let n = values.len();
    let run_at = |i: usize| values[i..].iter().take_while(|v| **v == values[i]).count();
    let mut i = 0;
    while i < n {
        let run = run_at(i);
        if run >= 8 {
            uleb(run << 1, out);
            let v: u32 = values[i].into();
            out.extend_from_slice(&v.to_le_bytes()[..usize::from(width).div_ceil(8)]);
            i += run;
            continue;
        }
        let mut j = i + 8;
        while j < n
            && (j - i) / 8 < MAX_PACKED_GROUPS
            && !(j + 8 <= n && values[j..j + 8].iter().all(|v| *v == values[j]))
        {
            j += 8;
        }
        let groups = (j - i) / 8;
        uleb((groups << 1) | 1, out);
        let (mut acc, mut bits) = (0u64, 0u32);
        for k in i..j {
            let v: u32 = values.get(k).map_or(0, |v| (*v).into());
            acc |= u64::from(v) << bits;
            bits += u32::from(width);
            while bits >= 8 {
                out.push(acc as u8);
                acc >>= 8;
                bits -= 8;
            }
        }
        i = j.min(n);
    }
}

fn uleb(mut v: usize, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, Int64Array, MapBuilder, RecordBatch, StringBuilder};
    use datafusion::arrow::compute::concat_batches;
    use datafusion::arrow::datatypes::Schema;
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use datafusion::parquet::basic::Encoding;
    use datafusion::parquet::schema::types::ColumnPath;

    use super::*;
    use crate::flush::FileWriter;
    use crate::table::{map_type, new_map_builder};

    /// A small deterministic generator (xorshift), so a failure can be replayed.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    type Entries = Option<Vec<(String, Option<String>)>>;

    /// A map's content: null, empty, or entries with long, short, unicode and null values.
    fn random_map(rng: &mut Rng, nullable: bool) -> Entries {
        if nullable && rng.next(10) == 0 {
            return None;
        }
        let n = [0, 1, 3, 8, 12][rng.next(5) as usize];
        Some(
            (0..n)
                .map(|i| {
                    let key = format!("k{}.{}", i, rng.next(3));
                    let value = match rng.next(8) {
                        0 => None,
                        1 => Some("é✓ ".repeat(rng.next(40) as usize)),
                        2 => Some("x".repeat(300 + rng.next(2000) as usize)),
                        _ => Some(format!("v{}", rng.next(5000))),
                    };
                    (key, value)
                })
                .collect(),
        )
    }

    fn append(b: &mut MapBuilder<StringBuilder, StringBuilder>, m: &Entries) {
        for (k, v) in m.iter().flatten() {
            b.keys().append_value(k);
            b.values().append_option(v.as_deref());
        }
        b.append(m.is_some()).unwrap();
    }

    /// Batches whose resource and scope maps come in runs of equal rows (as they do), of random
    /// lengths, and whose span maps keep their keys for a while but change values on every row.
    fn batches(rng: &mut Rng, schema: &Arc<Schema>, sizes: &[usize]) -> Vec<RecordBatch> {
        let mut id = 0i64;
        let (mut resource, mut scope, mut span) = (Some(Vec::new()), None, Some(Vec::new()));
        sizes
            .iter()
            .map(|&rows| {
                let (mut r, mut s) = (new_map_builder(), new_map_builder());
                let mut a = new_map_builder();
                let (mut ids, mut services, mut trace_ids) = (Vec::new(), Vec::new(), Vec::new());
                for _ in 0..rows {
                    if rng.next(200) == 0 {
                        resource = random_map(rng, false);
                    }
                    if rng.next(50) == 0 {
                        scope = random_map(rng, true);
                    }
                    if rng.next(20) == 0 {
                        span = random_map(rng, false);
                    }
                    for (_, v) in span.iter_mut().flatten() {
                        if let Some(v) = v {
                            *v = format!("{}", rng.next(1 << 40));
                        }
                    }
                    append(&mut r, &resource);
                    append(&mut s, &scope);
                    append(&mut a, &span);
                    if rng.next(30) == 0 || services.is_empty() {
                        services.push(format!("svc-{}", rng.next(400)));
                    } else {
                        services.push(services[services.len() - 1].clone());
                    }
                    trace_ids.push(format!("{:032x}", rng.next(u64::MAX)));
                    ids.push(id);
                    id += 1;
                }
                let columns: Vec<ArrayRef> = vec![
                    Arc::new(Int64Array::from(ids)),
                    Arc::new(r.finish()),
                    Arc::new(s.finish()),
                    Arc::new(a.finish()),
                    Arc::new(StringArray::from(services)),
                    Arc::new(StringArray::from(trace_ids)),
                ];
                RecordBatch::try_new(schema.clone(), columns).unwrap()
            })
            .collect()
    }

    #[test]
    fn own_columns_read_back_exactly_across_pages_and_row_groups() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("Id", DataType::Int64, false),
            Field::new("ResourceAttributes", map_type(), false),
            Field::new("ScopeAttributes", map_type(), true),
            Field::new("SpanAttributes", map_type(), false),
            Field::new("ServiceName", DataType::Utf8, false),
            Field::new("SpanId", DataType::Utf8, false),
        ]));
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let input = batches(&mut rng, &schema, &[40_000, 3, 1, 50_000, 9_000]);
        let plain = |path: &str| ColumnPath::new(path.split('.').map(String::from).collect());
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(ZSTD_LEVEL).unwrap()))
            .set_column_dictionary_enabled(plain("SpanAttributes.entries.values"), false)
            .set_column_dictionary_enabled(plain("SpanId"), false)
            .build();
        let mut w = FileWriter::new(Vec::new(), schema.clone(), props).unwrap();
        let mut expected = Vec::new();
        for b in &input {
            // Uneven slices, so rows of one row group come from several calls and batches.
            let mut start = 0;
            while start < b.num_rows() {
                let len = (1 + rng.next(7_000) as usize).min(b.num_rows() - start);
                w.write(b, start, len).unwrap();
                expected.push(b.slice(start, len));
                start += len;
            }
        }
        let file = Bytes::from(w.finish().unwrap());

        let reader = ParquetRecordBatchReaderBuilder::try_new(file.clone()).unwrap();
        let meta = reader.metadata().clone();
        let got: Vec<RecordBatch> = reader.build().unwrap().map(Result::unwrap).collect();
        let got = concat_batches(&schema, &got).unwrap();
        let expected = concat_batches(&schema, &expected).unwrap();
        assert_eq!(got.num_rows(), 99_004);
        for (i, f) in schema.fields().iter().enumerate() {
            assert_eq!(got.column(i), expected.column(i), "column {}", f.name());
        }

        // Two row groups (64 Ki rows each at most), every key, the resource and scope values and
        // the service names dictionary-encoded by this module, the span values and span ids
        // PLAIN, and the first group's resource leaves split into several pages.
        assert_eq!(meta.num_row_groups(), 2);
        for rg in meta.row_groups() {
            for c in &rg.columns()[1..] {
                let path = c.column_path().string();
                let enc: Vec<Encoding> = c.encodings().collect();
                let dictionary = !["SpanAttributes.entries.values", "SpanId"].contains(&&*path);
                assert_eq!(
                    enc.contains(&Encoding::RLE_DICTIONARY),
                    dictionary,
                    "{path}: {enc:?}"
                );
                assert_eq!(c.dictionary_page_offset().is_some(), dictionary, "{path}");
            }
        }
        // Service names carry their row group's exact min and max, for readers to skip it by.
        let services = expected.column(4).as_string::<i32>();
        let mut first_row = 0;
        for rg in meta.row_groups() {
            let rows = first_row..first_row + rg.num_rows() as usize;
            first_row = rows.end;
            let names: Vec<&str> = rows.map(|r| services.value(r)).collect();
            let stats = rg.column(7).statistics().expect("ServiceName statistics");
            let (min, max) = (names.iter().min().unwrap(), names.iter().max().unwrap());
            assert_eq!(stats.min_bytes_opt(), Some(min.as_bytes()));
            assert_eq!(stats.max_bytes_opt(), Some(max.as_bytes()));
            assert_eq!(stats.null_count_opt(), Some(0));
        }
        let pages = |c: usize| {
            let col = meta.row_group(0).column(c);
            let (start, len) = col.byte_range();
            let mut n = 0;
            let reader = datafusion::parquet::file::serialized_reader::SerializedPageReader::new(
                Arc::new(file.clone()),
                col,
                meta.row_group(0).num_rows() as usize,
                None,
            )
            .unwrap();
            for p in reader {
                n += usize::from(
                    p.unwrap().page_type() != datafusion::parquet::basic::PageType::DICTIONARY_PAGE,
                );
            }
            assert!(start > 0 && len > 0);
            n
        };
        assert!(pages(1) >= 2, "resource keys in {} data pages", pages(1));
    }

    #[test]
    fn same_bytes_agrees_with_slice_equality_at_every_length_and_position() {
        let base: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
        for len in 0..=base.len() {
            let a = &base[..len];
            let copy = a.to_vec();
            assert!(same_bytes(a, &copy), "len {len}");
            for at in 0..len {
                for flip in [1u8, 0x80] {
                    let mut b = a.to_vec();
                    b[at] ^= flip;
                    assert!(!same_bytes(a, &b), "len {len}, byte {at} ^ {flip}");
                }
            }
            if len > 0 {
                assert!(
                    !same_bytes(a, &a[..len - 1]),
                    "len {len} against {}",
                    len - 1
                );
            }
        }
    }

    #[test]
    fn hybrid_runs_and_packed_groups() {
        // 3 packed values (padded to a group), then a run of 10 sevens.
        let mut out = Vec::new();
        hybrid(&[1u32, 2, 3], 2, &mut out);
        assert_eq!(out, vec![0b11, 0b11_10_01, 0]);
        out.clear();
        hybrid(&[7u32; 10], 3, &mut out);
        assert_eq!(out, vec![10 << 1, 7]);
        out.clear();
        // A run shorter than 8 is packed with what follows; 8 equal at a group start is a run.
        let v: Vec<u8> = [0, 1, 1, 1, 1, 1, 1, 1].into_iter().chain([1; 8]).collect();
        hybrid(&v, 1, &mut out);
        assert_eq!(out, vec![0b11, 0b1111_1110, 8 << 1, 1]);
    }
}
