//! model → Arrow record batches, one per table the batch touches.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, ListArray, ListBuilder,
    MapBuilder, RecordBatch, StringArray, StringBuilder, StructArray, TimestampNanosecondArray,
    UInt32Builder, UInt64Builder,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field, Fields};
use datafusion::arrow::error::ArrowError;
use model::otlp_wire::{RawSpans, SpanView};
use model::{
    Attrs, Batch, Group, LogRecord, Metric, MetricPoint, PointValue, ProfileBatch, Resource, Scope,
    Span,
};

use crate::StoreError;
use crate::table::{
    Table, event_fields, link_fields, new_map_builder, new_map_builder_with_capacity,
    quantile_fields,
};

pub(crate) fn ts(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

struct MapCol(MapBuilder<StringBuilder, StringBuilder>);

impl MapCol {
    fn new() -> Self {
        MapCol(new_map_builder())
    }
    /// A builder that will not reallocate for `rows` maps holding `size` in all.
    fn with_capacity(rows: usize, size: AttrsSize) -> Self {
        MapCol(new_map_builder_with_capacity(
            rows,
            size.entries,
            size.key_bytes,
            size.value_bytes,
        ))
    }
    fn append<K: AsRef<str>, V: AsRef<str>>(&mut self, attrs: &[(K, V)]) {
        for (k, v) in attrs {
            self.0.keys().append_value(k.as_ref());
            self.0.values().append_value(v.as_ref());
        }
        // Appending to a fresh builder cannot fail: the entry is never null.
        let _ = self.0.append(true);
    }
    /// Appends a map prepared once for many rows: two copies instead of two per entry.
    fn append_prepared(&mut self, m: &PreparedMap) {
        // Neither can fail: offsets stay far below i32::MAX for a batch.
        let _ = self.0.keys().append_array(&m.keys);
        let _ = self.0.values().append_array(&m.values);
        let _ = self.0.append(true);
    }
    fn finish(&mut self) -> ArrayRef {
        Arc::new(self.0.finish())
    }
}

/// One map (a resource's attributes) as the keys and values every row of its group repeats.
struct PreparedMap {
    keys: StringArray,
    values: StringArray,
}

impl PreparedMap {
    fn new(attrs: &Attrs) -> Self {
        PreparedMap {
            keys: attrs.iter().map(|(k, _)| Some(k.as_str())).collect(),
            values: attrs.iter().map(|(_, v)| Some(v.as_str())).collect(),
        }
    }
}

/// A `List<Struct<..>>` column built from flat child columns plus offsets.
struct ListOfStruct {
    offsets: Vec<i32>,
}

impl ListOfStruct {
    fn new() -> Self {
        ListOfStruct { offsets: vec![0] }
    }
    fn end_row(&mut self, children_len: usize) {
        self.offsets.push(children_len as i32);
    }
    fn finish(&mut self, fields: Fields, children: Vec<ArrayRef>) -> Result<ArrayRef, ArrowError> {
        let s = StructArray::try_new(fields.clone(), children, None)?;
        let offsets = std::mem::replace(&mut self.offsets, vec![0]);
        Ok(Arc::new(ListArray::try_new(
            Arc::new(Field::new("item", DataType::Struct(fields), true)),
            OffsetBuffer::new(offsets.into()),
            Arc::new(s),
            None,
        )?))
    }
}

pub fn encode(batch: &Batch) -> Result<Vec<(Table, RecordBatch)>, StoreError> {
    Ok(match batch {
        Batch::Spans(g) => vec![(Table::Traces, spans(g)?)],
        Batch::RawSpans(r) => vec![(Table::Traces, raw_spans(r)?)],
        Batch::Logs(g) => vec![(Table::Logs, logs(g)?)],
        Batch::Metrics(g) => metrics(g)?,
        Batch::Profiles(p) => profiles(p)?,
        Batch::Security(s) => crate::security::encode(s)?,
        Batch::Anomalies(a) => vec![(Table::Anomalies, crate::insights::encode(a)?)],
    })
}

/// How much room attribute maps need, summed over rows.
#[derive(Clone, Copy, Default)]
struct AttrsSize {
    entries: usize,
    key_bytes: usize,
    value_bytes: usize,
}

impl AttrsSize {
    fn of(attrs: &Attrs) -> Self {
        let mut s = AttrsSize {
            entries: attrs.len(),
            ..Default::default()
        };
        for (k, v) in attrs {
            s.key_bytes += k.len();
            s.value_bytes += v.len();
        }
        s
    }
    fn times(self, n: usize) -> Self {
        AttrsSize {
            entries: self.entries * n,
            key_bytes: self.key_bytes * n,
            value_bytes: self.value_bytes * n,
        }
    }
    fn add(&mut self, o: Self) {
        self.entries += o.entries;
        self.key_bytes += o.key_bytes;
        self.value_bytes += o.value_bytes;
    }
}

/// A string column sized up front: growing builders row by row was a visible share of ingest.
fn strings(rows: usize, bytes: usize) -> StringBuilder {
    StringBuilder::with_capacity(rows, bytes)
}

/// The order rows are written in: by service, then `name` (metric name or ""), then time, so every
/// batch in memory is already sorted and a flush can write runs of it without gathering rows.
pub(crate) fn sorted_order<'a, A: Copy>(rows: Vec<(&'a str, &'a str, i64, A)>) -> Vec<A> {
    // Each distinct (service, name) is ranked once, so the sort compares integers rather than
    // text. Neighbouring rows mostly share their strings (one resource's spans): those reuse the
    // rank found for the row before without a lookup.
    let mut ranks: std::collections::HashMap<(&str, &str), u32> = std::collections::HashMap::new();
    let mut keyed: Vec<(u32, i64, A)> = Vec::with_capacity(rows.len());
    let mut last: Option<(&str, &str, u32)> = None;
    for (svc, name, t, a) in rows {
        let rank = match last {
            Some((s, n, r)) if std::ptr::eq(s, svc) && std::ptr::eq(n, name) => r,
            _ => {
                let next = ranks.len() as u32;
                *ranks.entry((svc, name)).or_insert(next)
            }
        };
        last = Some((svc, name, rank));
        keyed.push((rank, t, a));
    }
    // Ranks were given in order of first sight: renumber them in text order.
    let mut by_text: Vec<((&str, &str), u32)> = ranks.into_iter().collect();
    by_text.sort_unstable();
    let mut order = vec![0u32; by_text.len()];
    for (position, (_, rank)) in by_text.iter().enumerate() {
        order[*rank as usize] = position as u32;
    }
    keyed.sort_unstable_by_key(|&(rank, t, _)| (order[rank as usize], t));
    keyed.into_iter().map(|r| r.2).collect()
}

fn spans(groups: &[Group<Span>]) -> Result<RecordBatch, ArrowError> {
    let n: usize = groups.iter().map(|g| g.items.len()).sum();
    let mut rows = Vec::with_capacity(n);
    let mut size = SpanSizes::default();
    for (gi, g) in groups.iter().enumerate() {
        let svc = g.resource.service_name();
        size.add_group(&g.resource, &g.scope, g.items.len());
        for (i, s) in g.items.iter().enumerate() {
            rows.push((svc, "", ts(s.start_unix_nano), (gi, i)));
            size.name_bytes += s.name.len();
            AttrsSize::add(&mut size.span, AttrsSize::of(&s.attributes));
            size.events += s.events.len();
            size.links += s.links.len();
            for e in &s.events {
                AttrsSize::add(&mut size.event, AttrsSize::of(&e.attributes));
            }
            for l in &s.links {
                AttrsSize::add(&mut size.link, AttrsSize::of(&l.attributes));
            }
        }
    }
    let mut cols = SpanColumns::with_capacity(n, &size);
    let mut view = SpanView::default();
    let prepared: Vec<PreparedMap> = groups
        .iter()
        .map(|g| PreparedMap::new(&g.resource.attributes))
        .collect();
    for (gi, i) in sorted_order(rows) {
        let g = &groups[gi];
        view.fill_from(&g.items[i]);
        cols.append(&g.resource, &prepared[gi], &g.scope, &view);
    }
    cols.finish()
}

/// Spans read straight from their OTLP request into columns, each checked as it is read: a
/// malformed span refuses the whole request (`StoreError::Malformed`).
pub(crate) fn raw_spans(raw: &RawSpans) -> Result<RecordBatch, StoreError> {
    let n = raw.len();
    let mut size = SpanSizes::default();
    for g in &raw.groups {
        size.add_group(&g.resource, &g.scope, g.spans);
    }
    // Names, attributes, events and links together are at most the request's size.
    let wire = raw.bytes.len();
    size.name_bytes = wire / 8;
    size.span = AttrsSize {
        entries: n * 4,
        key_bytes: wire / 4,
        value_bytes: wire / 4,
    };
    let rows = raw
        .spans
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let svc = raw.groups[s.group as usize].resource.service_name();
            (svc, "", ts(s.start_unix_nano), i)
        })
        .collect();
    let mut cols = SpanColumns::with_capacity(n, &size);
    let mut view = SpanView::default();
    let prepared: Vec<PreparedMap> = raw
        .groups
        .iter()
        .map(|g| PreparedMap::new(&g.resource.attributes))
        .collect();
    for i in sorted_order(rows) {
        let gi = raw.spans[i].group as usize;
        let g = &raw.groups[gi];
        raw.read_span(i, &mut view).map_err(StoreError::Malformed)?;
        cols.append(&g.resource, &prepared[gi], &g.scope, &view);
    }
    Ok(cols.finish()?)
}

/// Room the columns of a span batch need.
#[derive(Default)]
struct SpanSizes {
    resource: AttrsSize,
    span: AttrsSize,
    event: AttrsSize,
    link: AttrsSize,
    name_bytes: usize,
    service_bytes: usize,
    scope_bytes: usize,
    events: usize,
    links: usize,
}

impl SpanSizes {
    fn add_group(&mut self, resource: &Resource, scope: &Scope, spans: usize) {
        AttrsSize::add(
            &mut self.resource,
            AttrsSize::of(&resource.attributes).times(spans),
        );
        self.service_bytes += resource.service_name().len() * spans;
        self.scope_bytes += (scope.name.len() + scope.version.len()) * spans;
    }
}

/// The builders of `otel_traces`, filled one span at a time.
struct SpanColumns {
    time: Vec<i64>,
    trace_id: StringBuilder,
    span_id: StringBuilder,
    parent: StringBuilder,
    state: StringBuilder,
    name: StringBuilder,
    kind: StringBuilder,
    service: StringBuilder,
    res_attrs: MapCol,
    scope_name: StringBuilder,
    scope_version: StringBuilder,
    span_attrs: MapCol,
    duration: UInt64Builder,
    status: StringBuilder,
    status_msg: StringBuilder,
    ev_list: ListOfStruct,
    ev_ts: Vec<i64>,
    ev_name: StringBuilder,
    ev_attrs: MapCol,
    ln_list: ListOfStruct,
    ln_trace: StringBuilder,
    ln_span: StringBuilder,
    ln_state: StringBuilder,
    ln_attrs: MapCol,
}

impl SpanColumns {
    fn with_capacity(n: usize, size: &SpanSizes) -> Self {
        let (events, links) = (size.events, size.links);
        SpanColumns {
            time: Vec::with_capacity(n),
            trace_id: strings(n, n * 32),
            span_id: strings(n, n * 16),
            parent: strings(n, n * 16),
            state: strings(n, 0),
            name: strings(n, size.name_bytes),
            kind: strings(n, n * 16),
            service: strings(n, size.service_bytes),
            res_attrs: MapCol::with_capacity(n, size.resource),
            scope_name: strings(n, size.scope_bytes),
            scope_version: strings(n, size.scope_bytes),
            span_attrs: MapCol::with_capacity(n, size.span),
            duration: UInt64Builder::with_capacity(n),
            status: strings(n, n * 17),
            status_msg: strings(n, 0),
            ev_list: ListOfStruct::new(),
            ev_ts: Vec::with_capacity(events),
            ev_name: strings(events, events * 16),
            ev_attrs: MapCol::with_capacity(events, size.event),
            ln_list: ListOfStruct::new(),
            ln_trace: strings(links, links * 32),
            ln_span: strings(links, links * 16),
            ln_state: strings(links, 0),
            ln_attrs: MapCol::with_capacity(links, size.link),
        }
    }

    /// `attrs`: `resource`'s attributes, prepared once for its group.
    fn append(
        &mut self,
        resource: &Resource,
        attrs: &PreparedMap,
        scope: &Scope,
        s: &SpanView<'_>,
    ) {
        let (mut hex32, mut hex16) = ([0u8; 32], [0u8; 16]);
        self.time.push(ts(s.start_unix_nano));
        self.trace_id.append_value(s.trace_id.hex(&mut hex32));
        self.span_id.append_value(s.span_id.hex(&mut hex16));
        match &s.parent_span_id {
            Some(p) => self.parent.append_value(p.hex(&mut hex16)),
            None => self.parent.append_value(""),
        }
        self.state.append_value(s.trace_state);
        self.name.append_value(s.name);
        self.kind.append_value(s.kind.as_str());
        self.service.append_value(resource.service_name());
        self.res_attrs.append_prepared(attrs);
        self.scope_name.append_value(&scope.name);
        self.scope_version.append_value(&scope.version);
        self.span_attrs.append(&s.attributes);
        self.duration.append_value(s.duration_nanos());
        self.status.append_value(s.status_code.as_str());
        self.status_msg.append_value(s.status_message);
        for e in &s.events {
            self.ev_ts.push(ts(e.time_unix_nano));
            self.ev_name.append_value(e.name);
            self.ev_attrs
                .append(&s.event_attributes[e.attributes.clone()]);
        }
        self.ev_list.end_row(self.ev_ts.len());
        for l in &s.links {
            self.ln_trace.append_value(l.trace_id.hex(&mut hex32));
            self.ln_span.append_value(l.span_id.hex(&mut hex16));
            self.ln_state.append_value(l.trace_state);
            self.ln_attrs
                .append(&s.link_attributes[l.attributes.clone()]);
        }
        self.ln_list.end_row(self.ln_trace.len());
    }

    fn finish(mut self) -> Result<RecordBatch, ArrowError> {
        let events = self.ev_list.finish(
            event_fields(),
            vec![
                Arc::new(TimestampNanosecondArray::from(self.ev_ts)),
                Arc::new(self.ev_name.finish()),
                self.ev_attrs.finish(),
            ],
        )?;
        let links = self.ln_list.finish(
            link_fields(),
            vec![
                Arc::new(self.ln_trace.finish()),
                Arc::new(self.ln_span.finish()),
                Arc::new(self.ln_state.finish()),
                self.ln_attrs.finish(),
            ],
        )?;
        RecordBatch::try_new(
            Table::Traces.schema(),
            vec![
                Arc::new(TimestampNanosecondArray::from(self.time)),
                Arc::new(self.trace_id.finish()),
                Arc::new(self.span_id.finish()),
                Arc::new(self.parent.finish()),
                Arc::new(self.state.finish()),
                Arc::new(self.name.finish()),
                Arc::new(self.kind.finish()),
                Arc::new(self.service.finish()),
                self.res_attrs.finish(),
                Arc::new(self.scope_name.finish()),
                Arc::new(self.scope_version.finish()),
                self.span_attrs.finish(),
                Arc::new(self.duration.finish()),
                Arc::new(self.status.finish()),
                Arc::new(self.status_msg.finish()),
                events,
                links,
            ],
        )
    }
}

fn logs(groups: &[Group<LogRecord>]) -> Result<RecordBatch, ArrowError> {
    let n: usize = groups.iter().map(|g| g.items.len()).sum();
    let mut rows = Vec::with_capacity(n);
    let (mut res_size, mut scope_size, mut log_size) = Default::default();
    let mut body_bytes = 0;
    for (gi, g) in groups.iter().enumerate() {
        let svc = g.resource.service_name();
        AttrsSize::add(
            &mut res_size,
            AttrsSize::of(&g.resource.attributes).times(g.items.len()),
        );
        AttrsSize::add(
            &mut scope_size,
            AttrsSize::of(&g.scope.attributes).times(g.items.len()),
        );
        for (i, l) in g.items.iter().enumerate() {
            rows.push((svc, "", ts(l.effective_time()), (gi, i)));
            body_bytes += l.body.len();
            AttrsSize::add(&mut log_size, AttrsSize::of(&l.attributes));
        }
    }
    let order = sorted_order(rows);
    let mut time = Vec::with_capacity(n);
    let mut observed = Vec::with_capacity(n);
    let mut trace_id = strings(n, n * 32);
    let mut span_id = strings(n, n * 16);
    let mut flags = UInt32Builder::with_capacity(n);
    let mut sev_text = strings(n, n * 5);
    let mut sev_num = Int32Builder::with_capacity(n);
    let mut service = strings(n, n * 16);
    let mut body = strings(n, body_bytes);
    let mut res_schema = strings(n, 0);
    let mut res_attrs = MapCol::with_capacity(n, res_size);
    let mut scope_schema = strings(n, 0);
    let mut scope_name = strings(n, n * 16);
    let mut scope_version = strings(n, n * 8);
    let mut scope_attrs = MapCol::with_capacity(n, scope_size);
    let mut log_attrs = MapCol::with_capacity(n, log_size);
    let mut event_name = strings(n, 0);
    let (mut hex32, mut hex16) = ([0u8; 32], [0u8; 16]);
    for (gi, i) in order {
        let g = &groups[gi];
        let l = &g.items[i];
        time.push(ts(l.effective_time()));
        observed.push(ts(l.observed_time_unix_nano));
        trace_id.append_value(l.trace_id.as_ref().map_or("", |t| t.hex(&mut hex32)));
        span_id.append_value(l.span_id.as_ref().map_or("", |s| s.hex(&mut hex16)));
        flags.append_value(l.flags);
        sev_text.append_value(&l.severity_text);
        sev_num.append_value(l.severity_number);
        service.append_value(g.resource.service_name());
        body.append_value(&l.body);
        res_schema.append_value(&g.resource.schema_url);
        res_attrs.append(&g.resource.attributes);
        scope_schema.append_value(&g.scope.schema_url);
        scope_name.append_value(&g.scope.name);
        scope_version.append_value(&g.scope.version);
        scope_attrs.append(&g.scope.attributes);
        log_attrs.append(&l.attributes);
        event_name.append_value(&l.event_name);
    }
    RecordBatch::try_new(
        Table::Logs.schema(),
        vec![
            Arc::new(TimestampNanosecondArray::from(time)),
            Arc::new(TimestampNanosecondArray::from(observed)),
            Arc::new(trace_id.finish()),
            Arc::new(span_id.finish()),
            Arc::new(flags.finish()),
            Arc::new(sev_text.finish()),
            Arc::new(sev_num.finish()),
            Arc::new(service.finish()),
            Arc::new(body.finish()),
            Arc::new(res_schema.finish()),
            res_attrs.finish(),
            Arc::new(scope_schema.finish()),
            Arc::new(scope_name.finish()),
            Arc::new(scope_version.finish()),
            scope_attrs.finish(),
            log_attrs.finish(),
            Arc::new(event_name.finish()),
        ],
    )
}

fn profiles(p: &ProfileBatch) -> Result<Vec<(Table, RecordBatch)>, ArrowError> {
    let mut out = Vec::new();
    if !p.samples.is_empty() {
        let n = p.samples.len();
        let rows = p
            .samples
            .iter()
            .enumerate()
            .map(|(i, s)| (s.service_name.as_str(), "", ts(s.time_unix_nano), i))
            .collect();
        let (mut time, mut service, mut host, mut comm, mut kind, mut label) = (
            Vec::with_capacity(n),
            strings(n, n * 16),
            strings(n, n * 16),
            strings(n, n * 16),
            strings(n, n * 3),
            strings(n, 0),
        );
        let (mut pid, mut tid, mut stack, mut value) = (
            UInt32Builder::with_capacity(n),
            UInt32Builder::with_capacity(n),
            UInt64Builder::with_capacity(n),
            UInt64Builder::with_capacity(n),
        );
        for i in sorted_order(rows) {
            let s = &p.samples[i];
            time.push(ts(s.time_unix_nano));
            service.append_value(&s.service_name);
            host.append_value(&s.host_name);
            pid.append_value(s.pid);
            tid.append_value(s.tid);
            comm.append_value(&s.comm);
            kind.append_value(s.kind.as_str());
            stack.append_value(s.stack_id);
            value.append_value(s.value_nanos);
            label.append_value(&s.label);
        }
        out.push((
            Table::ProfileSamples,
            RecordBatch::try_new(
                Table::ProfileSamples.schema(),
                vec![
                    Arc::new(TimestampNanosecondArray::from(time)),
                    Arc::new(service.finish()),
                    Arc::new(host.finish()),
                    Arc::new(pid.finish()),
                    Arc::new(tid.finish()),
                    Arc::new(comm.finish()),
                    Arc::new(kind.finish()),
                    Arc::new(stack.finish()),
                    Arc::new(value.finish()),
                    Arc::new(label.finish()),
                ],
            )?,
        ));
    }
    if !p.stacks.is_empty() {
        let rows = p
            .stacks
            .iter()
            .enumerate()
            .map(|(i, s)| (s.service_name.as_str(), "", ts(s.first_seen_unix_nano), i))
            .collect();
        let mut time = Vec::new();
        let mut service = StringBuilder::new();
        let mut id = UInt64Builder::new();
        let mut frames = ListBuilder::new(StringBuilder::new());
        let mut modules = ListBuilder::new(StringBuilder::new());
        let mut truncated = BooleanBuilder::new();
        for i in sorted_order(rows) {
            let s = &p.stacks[i];
            time.push(ts(s.first_seen_unix_nano));
            service.append_value(&s.service_name);
            id.append_value(s.stack_id);
            for f in &s.frames {
                frames.values().append_value(f);
            }
            frames.append(true);
            for m in &s.modules {
                modules.values().append_value(m);
            }
            modules.append(true);
            truncated.append_value(s.truncated);
        }
        out.push((
            Table::ProfileStacks,
            RecordBatch::try_new(
                Table::ProfileStacks.schema(),
                vec![
                    Arc::new(TimestampNanosecondArray::from(time)),
                    Arc::new(service.finish()),
                    Arc::new(id.finish()),
                    Arc::new(frames.finish()),
                    Arc::new(modules.finish()),
                    Arc::new(truncated.finish()),
                ],
            )?,
        ));
    }
    Ok(out)
}

/// The columns every metric table starts with.
struct MetricCommon {
    rows: usize,
    res_attrs: MapCol,
    res_schema: StringBuilder,
    scope_name: StringBuilder,
    scope_version: StringBuilder,
    scope_attrs: MapCol,
    scope_dropped: UInt32Builder,
    scope_schema: StringBuilder,
    service: StringBuilder,
    name: StringBuilder,
    description: StringBuilder,
    unit: StringBuilder,
    attrs: MapCol,
    start: Vec<i64>,
    time: Vec<i64>,
    flags: UInt32Builder,
}

impl MetricCommon {
    fn new() -> Self {
        MetricCommon {
            rows: 0,
            res_attrs: MapCol::new(),
            res_schema: StringBuilder::new(),
            scope_name: StringBuilder::new(),
            scope_version: StringBuilder::new(),
            scope_attrs: MapCol::new(),
            scope_dropped: UInt32Builder::new(),
            scope_schema: StringBuilder::new(),
            service: StringBuilder::new(),
            name: StringBuilder::new(),
            description: StringBuilder::new(),
            unit: StringBuilder::new(),
            attrs: MapCol::new(),
            start: Vec::new(),
            time: Vec::new(),
            flags: UInt32Builder::new(),
        }
    }

    fn append(&mut self, r: &Resource, s: &Scope, m: &Metric, p: &MetricPoint) {
        self.rows += 1;
        self.res_attrs.append(&r.attributes);
        self.res_schema.append_value(&r.schema_url);
        self.scope_name.append_value(&s.name);
        self.scope_version.append_value(&s.version);
        self.scope_attrs.append(&s.attributes);
        self.scope_dropped.append_value(s.dropped_attributes_count);
        self.scope_schema.append_value(&s.schema_url);
        self.service.append_value(r.service_name());
        self.name.append_value(&m.name);
        self.description.append_value(&m.description);
        self.unit.append_value(&m.unit);
        self.attrs.append(&p.attributes);
        self.start.push(ts(p.start_time_unix_nano));
        self.time.push(ts(p.time_unix_nano));
        self.flags.append_value(p.flags);
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
        vec![
            self.res_attrs.finish(),
            Arc::new(self.res_schema.finish()),
            Arc::new(self.scope_name.finish()),
            Arc::new(self.scope_version.finish()),
            self.scope_attrs.finish(),
            Arc::new(self.scope_dropped.finish()),
            Arc::new(self.scope_schema.finish()),
            Arc::new(self.service.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.description.finish()),
            Arc::new(self.unit.finish()),
            self.attrs.finish(),
            Arc::new(TimestampNanosecondArray::from(std::mem::take(
                &mut self.start,
            ))),
            Arc::new(TimestampNanosecondArray::from(std::mem::take(
                &mut self.time,
            ))),
            Arc::new(self.flags.finish()),
        ]
    }
}

#[derive(Default)]
struct Numbers {
    value: Float64Builder,
    temporality: Int32Builder,
    monotonic: BooleanBuilder,
}

#[derive(Default)]
struct Histograms {
    count: UInt64Builder,
    sum: Float64Builder,
    buckets: ListBuilder<UInt64Builder>,
    bounds: ListBuilder<Float64Builder>,
    min: Float64Builder,
    max: Float64Builder,
    temporality: Int32Builder,
}

#[derive(Default)]
struct ExpHistograms {
    count: UInt64Builder,
    sum: Float64Builder,
    scale: Int32Builder,
    zero: UInt64Builder,
    pos_offset: Int32Builder,
    pos: ListBuilder<UInt64Builder>,
    neg_offset: Int32Builder,
    neg: ListBuilder<UInt64Builder>,
    min: Float64Builder,
    max: Float64Builder,
    temporality: Int32Builder,
}

fn metrics(groups: &[Group<Metric>]) -> Result<Vec<(Table, RecordBatch)>, ArrowError> {
    let (mut gc, mut sc, mut hc, mut ec, mut qc) = (
        MetricCommon::new(),
        MetricCommon::new(),
        MetricCommon::new(),
        MetricCommon::new(),
        MetricCommon::new(),
    );
    let mut gauge = Float64Builder::new();
    let mut sums = Numbers::default();
    let mut hist = Histograms::default();
    let mut exp = ExpHistograms::default();
    let (mut q_count, mut q_sum, mut q_list, mut q_q, mut q_v) = (
        UInt64Builder::new(),
        Float64Builder::new(),
        ListOfStruct::new(),
        Vec::new(),
        Vec::new(),
    );
    let mut rows = Vec::new();
    for (gi, g) in groups.iter().enumerate() {
        let svc = g.resource.service_name();
        for (mi, m) in g.items.iter().enumerate() {
            for (pi, p) in m.points.iter().enumerate() {
                rows.push((svc, m.name.as_str(), ts(p.time_unix_nano), (gi, mi, pi)));
            }
        }
    }
    for (gi, mi, pi) in sorted_order(rows) {
        let g = &groups[gi];
        let m = &g.items[mi];
        let p = &m.points[pi];
        match &p.value {
            PointValue::Gauge(v) => {
                gc.append(&g.resource, &g.scope, m, p);
                gauge.append_value(*v);
            }
            PointValue::Sum {
                value,
                temporality,
                monotonic,
            } => {
                sc.append(&g.resource, &g.scope, m, p);
                sums.value.append_value(*value);
                sums.temporality.append_value(*temporality as i32);
                sums.monotonic.append_value(*monotonic);
            }
            PointValue::Histogram {
                count,
                sum,
                min,
                max,
                bucket_counts,
                explicit_bounds,
                temporality,
            } => {
                hc.append(&g.resource, &g.scope, m, p);
                hist.count.append_value(*count);
                hist.sum.append_option(*sum);
                hist.buckets.values().append_slice(bucket_counts);
                hist.buckets.append(true);
                hist.bounds.values().append_slice(explicit_bounds);
                hist.bounds.append(true);
                hist.min.append_option(*min);
                hist.max.append_option(*max);
                hist.temporality.append_value(*temporality as i32);
            }
            PointValue::ExponentialHistogram {
                count,
                sum,
                min,
                max,
                scale,
                zero_count,
                positive_offset,
                positive_bucket_counts,
                negative_offset,
                negative_bucket_counts,
                temporality,
            } => {
                ec.append(&g.resource, &g.scope, m, p);
                exp.count.append_value(*count);
                exp.sum.append_option(*sum);
                exp.scale.append_value(*scale);
                exp.zero.append_value(*zero_count);
                exp.pos_offset.append_value(*positive_offset);
                exp.pos.values().append_slice(positive_bucket_counts);
                exp.pos.append(true);
                exp.neg_offset.append_value(*negative_offset);
                exp.neg.values().append_slice(negative_bucket_counts);
                exp.neg.append(true);
                exp.min.append_option(*min);
                exp.max.append_option(*max);
                exp.temporality.append_value(*temporality as i32);
            }
            PointValue::Summary {
                count,
                sum,
                quantiles,
            } => {
                qc.append(&g.resource, &g.scope, m, p);
                q_count.append_value(*count);
                q_sum.append_value(*sum);
                for (q, v) in quantiles {
                    q_q.push(*q);
                    q_v.push(*v);
                }
                q_list.end_row(q_q.len());
            }
        }
    }
    let mut out = Vec::new();
    let mut push =
        |t: Table, mut cols: Vec<ArrayRef>, extra: Vec<ArrayRef>| -> Result<(), ArrowError> {
            cols.extend(extra);
            out.push((t, RecordBatch::try_new(t.schema(), cols)?));
            Ok(())
        };
    if gc.rows > 0 {
        push(
            Table::MetricsGauge,
            gc.finish(),
            vec![Arc::new(gauge.finish())],
        )?;
    }
    if sc.rows > 0 {
        push(
            Table::MetricsSum,
            sc.finish(),
            vec![
                Arc::new(sums.value.finish()),
                Arc::new(sums.temporality.finish()),
                Arc::new(sums.monotonic.finish()),
            ],
        )?;
    }
    if hc.rows > 0 {
        push(
            Table::MetricsHistogram,
            hc.finish(),
            vec![
                Arc::new(hist.count.finish()),
                Arc::new(hist.sum.finish()),
                Arc::new(hist.buckets.finish()),
                Arc::new(hist.bounds.finish()),
                Arc::new(hist.min.finish()),
                Arc::new(hist.max.finish()),
                Arc::new(hist.temporality.finish()),
            ],
        )?;
    }
    if ec.rows > 0 {
        push(
            Table::MetricsExponentialHistogram,
            ec.finish(),
            vec![
                Arc::new(exp.count.finish()),
                Arc::new(exp.sum.finish()),
                Arc::new(exp.scale.finish()),
                Arc::new(exp.zero.finish()),
                Arc::new(exp.pos_offset.finish()),
                Arc::new(exp.pos.finish()),
                Arc::new(exp.neg_offset.finish()),
                Arc::new(exp.neg.finish()),
                Arc::new(exp.min.finish()),
                Arc::new(exp.max.finish()),
                Arc::new(exp.temporality.finish()),
            ],
        )?;
    }
    if qc.rows > 0 {
        let quantiles = q_list.finish(
            quantile_fields(),
            vec![
                Arc::new(datafusion::arrow::array::Float64Array::from(q_q)),
                Arc::new(datafusion::arrow::array::Float64Array::from(q_v)),
            ],
        )?;
        push(
            Table::MetricsSummary,
            qc.finish(),
            vec![
                Arc::new(q_count.finish()),
                Arc::new(q_sum.finish()),
                quantiles,
            ],
        )?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::sorted_order;

    #[test]
    fn rows_are_ordered_by_service_then_name_then_time() {
        // Strings that are equal but live apart, as they do across groups and batches.
        let owned: Vec<String> = ["payments", "api", "checkout", "api", "", "payments"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let names: Vec<String> = ["b", "a", ""].iter().map(|s| s.to_string()).collect();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rows = Vec::new();
        for i in 0..500usize {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Runs of rows from one group share their strings, as spans of one resource do.
            let svc = owned[(i / 7) % owned.len()].as_str();
            let name = names[(x % 3) as usize].as_str();
            rows.push((svc, name, (x % 50) as i64 - 25, i));
        }
        let mut expected = rows.clone();
        expected.sort_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
        let got = sorted_order(rows.clone());
        let keys = |order: &[usize]| -> Vec<(&str, &str, i64)> {
            order
                .iter()
                .map(|&i| (rows[i].0, rows[i].1, rows[i].2))
                .collect()
        };
        let want: Vec<usize> = expected.iter().map(|r| r.3).collect();
        assert_eq!(keys(&got), keys(&want));
        let mut all = got.clone();
        all.sort_unstable();
        assert_eq!(all, (0..500).collect::<Vec<_>>());
    }
}
