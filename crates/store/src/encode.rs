//! model → Arrow record batches, one per table the batch touches.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, ListArray, ListBuilder,
    MapBuilder, RecordBatch, StringBuilder, StructArray, TimestampNanosecondArray, UInt32Builder,
    UInt64Builder,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field, Fields};
use datafusion::arrow::error::ArrowError;
use model::{
    Attrs, Batch, Group, LogRecord, Metric, MetricPoint, PointValue, Resource, Scope, Span,
};

use crate::table::{Table, event_fields, link_fields, new_map_builder, quantile_fields};

fn ts(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

struct MapCol(MapBuilder<StringBuilder, StringBuilder>);

impl MapCol {
    fn new() -> Self {
        MapCol(new_map_builder())
    }
    fn append(&mut self, attrs: &Attrs) {
        for (k, v) in attrs {
            self.0.keys().append_value(k);
            self.0.values().append_value(v);
        }
        // Appending to a fresh builder cannot fail: the entry is never null.
        let _ = self.0.append(true);
    }
    fn finish(&mut self) -> ArrayRef {
        Arc::new(self.0.finish())
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

pub fn encode(batch: &Batch) -> Result<Vec<(Table, RecordBatch)>, ArrowError> {
    match batch {
        Batch::Spans(g) => Ok(vec![(Table::Traces, spans(g)?)]),
        Batch::Logs(g) => Ok(vec![(Table::Logs, logs(g)?)]),
        Batch::Metrics(g) => metrics(g),
    }
}

fn spans(groups: &[Group<Span>]) -> Result<RecordBatch, ArrowError> {
    let n: usize = groups.iter().map(|g| g.items.len()).sum();
    let mut time = Vec::with_capacity(n);
    let mut trace_id = StringBuilder::with_capacity(n, n * 32);
    let mut span_id = StringBuilder::with_capacity(n, n * 16);
    let mut parent = StringBuilder::with_capacity(n, n * 16);
    let mut state = StringBuilder::new();
    let mut name = StringBuilder::new();
    let mut kind = StringBuilder::new();
    let mut service = StringBuilder::new();
    let mut res_attrs = MapCol::new();
    let mut scope_name = StringBuilder::new();
    let mut scope_version = StringBuilder::new();
    let mut span_attrs = MapCol::new();
    let mut duration = UInt64Builder::with_capacity(n);
    let mut status = StringBuilder::new();
    let mut status_msg = StringBuilder::new();
    let (mut ev_list, mut ev_ts, mut ev_name, mut ev_attrs) = (
        ListOfStruct::new(),
        Vec::new(),
        StringBuilder::new(),
        MapCol::new(),
    );
    let (mut ln_list, mut ln_trace, mut ln_span, mut ln_state, mut ln_attrs) = (
        ListOfStruct::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        MapCol::new(),
    );
    for g in groups {
        let svc = g.resource.service_name();
        for s in &g.items {
            time.push(ts(s.start_unix_nano));
            trace_id.append_value(&s.trace_id);
            span_id.append_value(&s.span_id);
            parent.append_value(&s.parent_span_id);
            state.append_value(&s.trace_state);
            name.append_value(&s.name);
            kind.append_value(s.kind.as_str());
            service.append_value(svc);
            res_attrs.append(&g.resource.attributes);
            scope_name.append_value(&g.scope.name);
            scope_version.append_value(&g.scope.version);
            span_attrs.append(&s.attributes);
            duration.append_value(s.duration_nanos());
            status.append_value(s.status_code.as_str());
            status_msg.append_value(&s.status_message);
            for e in &s.events {
                ev_ts.push(ts(e.time_unix_nano));
                ev_name.append_value(&e.name);
                ev_attrs.append(&e.attributes);
            }
            ev_list.end_row(ev_ts.len());
            for l in &s.links {
                ln_trace.append_value(&l.trace_id);
                ln_span.append_value(&l.span_id);
                ln_state.append_value(&l.trace_state);
                ln_attrs.append(&l.attributes);
            }
            ln_list.end_row(ln_trace.len());
        }
    }
    let events = ev_list.finish(
        event_fields(),
        vec![
            Arc::new(TimestampNanosecondArray::from(ev_ts)),
            Arc::new(ev_name.finish()),
            ev_attrs.finish(),
        ],
    )?;
    let links = ln_list.finish(
        link_fields(),
        vec![
            Arc::new(ln_trace.finish()),
            Arc::new(ln_span.finish()),
            Arc::new(ln_state.finish()),
            ln_attrs.finish(),
        ],
    )?;
    RecordBatch::try_new(
        Table::Traces.schema(),
        vec![
            Arc::new(TimestampNanosecondArray::from(time)),
            Arc::new(trace_id.finish()),
            Arc::new(span_id.finish()),
            Arc::new(parent.finish()),
            Arc::new(state.finish()),
            Arc::new(name.finish()),
            Arc::new(kind.finish()),
            Arc::new(service.finish()),
            res_attrs.finish(),
            Arc::new(scope_name.finish()),
            Arc::new(scope_version.finish()),
            span_attrs.finish(),
            Arc::new(duration.finish()),
            Arc::new(status.finish()),
            Arc::new(status_msg.finish()),
            events,
            links,
        ],
    )
}

fn logs(groups: &[Group<LogRecord>]) -> Result<RecordBatch, ArrowError> {
    let mut time = Vec::new();
    let mut observed = Vec::new();
    let mut trace_id = StringBuilder::new();
    let mut span_id = StringBuilder::new();
    let mut flags = UInt32Builder::new();
    let mut sev_text = StringBuilder::new();
    let mut sev_num = Int32Builder::new();
    let mut service = StringBuilder::new();
    let mut body = StringBuilder::new();
    let mut res_schema = StringBuilder::new();
    let mut res_attrs = MapCol::new();
    let mut scope_schema = StringBuilder::new();
    let mut scope_name = StringBuilder::new();
    let mut scope_version = StringBuilder::new();
    let mut scope_attrs = MapCol::new();
    let mut log_attrs = MapCol::new();
    let mut event_name = StringBuilder::new();
    for g in groups {
        let svc = g.resource.service_name();
        for l in &g.items {
            time.push(ts(l.effective_time()));
            observed.push(ts(l.observed_time_unix_nano));
            trace_id.append_value(&l.trace_id);
            span_id.append_value(&l.span_id);
            flags.append_value(l.flags);
            sev_text.append_value(&l.severity_text);
            sev_num.append_value(l.severity_number);
            service.append_value(svc);
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
    for g in groups {
        for m in &g.items {
            for p in &m.points {
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
