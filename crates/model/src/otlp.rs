//! OTLP wire types → model. Validation lives here so every receiver rejects the same things.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point};
use opentelemetry_proto::tonic::resource::v1::Resource as OtlpResource;

use crate::attrs::{any_value_into_string, attrs_from_otlp};
use crate::*;

/// Why a well-formed OTLP message was still refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidData(pub String);

impl std::fmt::Display for InvalidData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidData {}

fn resource(r: Option<OtlpResource>, schema_url: String) -> Arc<Resource> {
    Arc::new(Resource {
        attributes: r.map(|r| attrs_from_otlp(r.attributes)).unwrap_or_default(),
        schema_url,
    })
}

fn scope(s: Option<InstrumentationScope>, schema_url: String) -> Arc<Scope> {
    Arc::new(match s {
        Some(s) => Scope {
            name: s.name,
            version: s.version,
            attributes: attrs_from_otlp(s.attributes),
            dropped_attributes_count: s.dropped_attributes_count,
            schema_url,
        },
        None => Scope {
            schema_url,
            ..Scope::default()
        },
    })
}

/// An id that must be exactly `N` bytes; `Ok(None)` when empty and `optional`. A required id of
/// all zeros is invalid (the OTLP spec reserves it).
pub(crate) fn id<const N: usize>(
    bytes: &[u8],
    optional: bool,
    what: &dyn Fn() -> String,
) -> Result<Option<[u8; N]>, InvalidData> {
    if bytes.is_empty() && optional {
        return Ok(None);
    }
    let Ok(id) = <[u8; N]>::try_from(bytes) else {
        return Err(InvalidData(format!(
            "{}: expected {N} bytes, found {}",
            what(),
            bytes.len()
        )));
    };
    if !optional && id.iter().all(|b| *b == 0) {
        return Err(InvalidData(format!("{}: must not be all zeros", what())));
    }
    Ok(Some(id))
}

fn trace_id(bytes: &[u8], what: &dyn Fn() -> String) -> Result<TraceId, InvalidData> {
    Ok(TraceId(id(bytes, false, what)?.unwrap_or_default()))
}

fn span_id(bytes: &[u8], what: &dyn Fn() -> String) -> Result<SpanId, InvalidData> {
    Ok(SpanId(id(bytes, false, what)?.unwrap_or_default()))
}

pub fn spans_from_otlp(req: ExportTraceServiceRequest) -> Result<Batch, InvalidData> {
    let mut groups = Vec::new();
    for (ri, rs) in req.resource_spans.into_iter().enumerate() {
        let res = resource(rs.resource, rs.schema_url);
        for (si, ss) in rs.scope_spans.into_iter().enumerate() {
            let mut items = Vec::with_capacity(ss.spans.len());
            for (i, s) in ss.spans.into_iter().enumerate() {
                let at = |f: &str| format!("resourceSpans[{ri}].scopeSpans[{si}].spans[{i}].{f}");
                let links = s
                    .links
                    .into_iter()
                    .enumerate()
                    .map(|(li, l)| {
                        Ok(SpanLink {
                            trace_id: trace_id(&l.trace_id, &|| {
                                at(&format!("links[{li}].traceId"))
                            })?,
                            span_id: span_id(&l.span_id, &|| at(&format!("links[{li}].spanId")))?,
                            trace_state: l.trace_state,
                            attributes: attrs_from_otlp(l.attributes),
                        })
                    })
                    .collect::<Result<_, InvalidData>>()?;
                let (status_code, status_message) = s
                    .status
                    .map(|st| (StatusCode::from_otlp(st.code), st.message))
                    .unwrap_or((StatusCode::Unset, String::new()));
                items.push(Span {
                    trace_id: trace_id(&s.trace_id, &|| at("traceId"))?,
                    span_id: span_id(&s.span_id, &|| at("spanId"))?,
                    parent_span_id: id(&s.parent_span_id, true, &|| at("parentSpanId"))?
                        .map(SpanId),
                    trace_state: s.trace_state,
                    name: s.name,
                    kind: SpanKind::from_otlp(s.kind),
                    start_unix_nano: s.start_time_unix_nano,
                    end_unix_nano: s.end_time_unix_nano,
                    attributes: attrs_from_otlp(s.attributes),
                    events: s
                        .events
                        .into_iter()
                        .map(|e| SpanEvent {
                            time_unix_nano: e.time_unix_nano,
                            name: e.name,
                            attributes: attrs_from_otlp(e.attributes),
                        })
                        .collect(),
                    links,
                    status_code,
                    status_message,
                });
            }
            if !items.is_empty() {
                groups.push(Group {
                    resource: res.clone(),
                    scope: scope(ss.scope, ss.schema_url),
                    items,
                });
            }
        }
    }
    Ok(Batch::Spans(groups))
}

pub fn logs_from_otlp(req: ExportLogsServiceRequest) -> Result<Batch, InvalidData> {
    let mut groups = Vec::new();
    for (ri, rl) in req.resource_logs.into_iter().enumerate() {
        let res = resource(rl.resource, rl.schema_url);
        for (si, sl) in rl.scope_logs.into_iter().enumerate() {
            let mut items = Vec::with_capacity(sl.log_records.len());
            for (i, l) in sl.log_records.into_iter().enumerate() {
                let at =
                    |f: &str| format!("resourceLogs[{ri}].scopeLogs[{si}].logRecords[{i}].{f}");
                items.push(LogRecord {
                    time_unix_nano: l.time_unix_nano,
                    observed_time_unix_nano: l.observed_time_unix_nano,
                    severity_number: l.severity_number,
                    severity_text: l.severity_text,
                    body: any_value_into_string(l.body),
                    attributes: attrs_from_otlp(l.attributes),
                    trace_id: id(&l.trace_id, true, &|| at("traceId"))?.map(TraceId),
                    span_id: id(&l.span_id, true, &|| at("spanId"))?.map(SpanId),
                    flags: l.flags,
                    event_name: l.event_name,
                });
            }
            if !items.is_empty() {
                groups.push(Group {
                    resource: res.clone(),
                    scope: scope(sl.scope, sl.schema_url),
                    items,
                });
            }
        }
    }
    Ok(Batch::Logs(groups))
}

/// A model point from any OTLP data point type (they share these fields but no trait).
macro_rules! point {
    ($p:expr, $value:expr $(,)?) => {
        MetricPoint {
            attributes: attrs_from_otlp($p.attributes),
            start_time_unix_nano: $p.start_time_unix_nano,
            time_unix_nano: $p.time_unix_nano,
            flags: $p.flags,
            value: $value,
        }
    };
}

pub fn metrics_from_otlp(req: ExportMetricsServiceRequest) -> Result<Batch, InvalidData> {
    let mut groups = Vec::new();
    for (ri, rm) in req.resource_metrics.into_iter().enumerate() {
        let res = resource(rm.resource, rm.schema_url);
        for (si, sm) in rm.scope_metrics.into_iter().enumerate() {
            let mut items = Vec::with_capacity(sm.metrics.len());
            for (mi, m) in sm.metrics.into_iter().enumerate() {
                let at = format!("resourceMetrics[{ri}].scopeMetrics[{si}].metrics[{mi}]");
                if m.name.is_empty() {
                    return Err(InvalidData(format!("{at}.name: must not be empty")));
                }
                let points = match m.data {
                    None => {
                        return Err(InvalidData(format!(
                            "{at}: metric {:?} has no data (expected gauge, sum, histogram, exponentialHistogram or summary)",
                            m.name
                        )));
                    }
                    Some(Data::Gauge(g)) => g
                        .data_points
                        .into_iter()
                        .map(|p| point!(p, PointValue::Gauge(number(p.value))))
                        .collect(),
                    Some(Data::Sum(s)) => s
                        .data_points
                        .into_iter()
                        .map(|p| {
                            point!(p, PointValue::Sum {
                                    value: number(p.value),
                                    temporality: Temporality::from_otlp(s.aggregation_temporality),
                                    monotonic: s.is_monotonic,
                                },
                            )
                        })
                        .collect(),
                    Some(Data::Histogram(h)) => h
                        .data_points
                        .into_iter()
                        .enumerate()
                        .map(|(pi, p)| {
                            if !p.bucket_counts.is_empty() && p.bucket_counts.len() != p.explicit_bounds.len() + 1 {
                                return Err(InvalidData(format!(
                                    "{at}.histogram.dataPoints[{pi}]: expected bucketCounts to have explicitBounds+1 = {} entries, found {}",
                                    p.explicit_bounds.len() + 1,
                                    p.bucket_counts.len()
                                )));
                            }
                            Ok(point!(p, PointValue::Histogram {
                                    count: p.count,
                                    sum: p.sum,
                                    min: p.min,
                                    max: p.max,
                                    bucket_counts: p.bucket_counts,
                                    explicit_bounds: p.explicit_bounds,
                                    temporality: Temporality::from_otlp(h.aggregation_temporality),
                                },
                            ))
                        })
                        .collect::<Result<_, _>>()?,
                    Some(Data::ExponentialHistogram(h)) => h
                        .data_points
                        .into_iter()
                        .map(|p| {
                            let (po, pc) = p.positive.map(|b| (b.offset, b.bucket_counts)).unwrap_or_default();
                            let (no, nc) = p.negative.map(|b| (b.offset, b.bucket_counts)).unwrap_or_default();
                            point!(p, PointValue::ExponentialHistogram {
                                    count: p.count,
                                    sum: p.sum,
                                    min: p.min,
                                    max: p.max,
                                    scale: p.scale,
                                    zero_count: p.zero_count,
                                    positive_offset: po,
                                    positive_bucket_counts: pc,
                                    negative_offset: no,
                                    negative_bucket_counts: nc,
                                    temporality: Temporality::from_otlp(h.aggregation_temporality),
                                },
                            )
                        })
                        .collect(),
                    Some(Data::Summary(s)) => s
                        .data_points
                        .into_iter()
                        .map(|p| {
                            point!(p, PointValue::Summary {
                                    count: p.count,
                                    sum: p.sum,
                                    quantiles: p.quantile_values.iter().map(|q| (q.quantile, q.value)).collect(),
                                },
                            )
                        })
                        .collect(),
                };
                items.push(Metric {
                    name: m.name,
                    description: m.description,
                    unit: m.unit,
                    points,
                });
            }
            if !items.is_empty() {
                groups.push(Group {
                    resource: res.clone(),
                    scope: scope(sm.scope, sm.schema_url),
                    items,
                });
            }
        }
    }
    Ok(Batch::Metrics(groups))
}

fn number(v: Option<number_data_point::Value>) -> f64 {
    match v {
        Some(number_data_point::Value::AsDouble(d)) => d,
        Some(number_data_point::Value::AsInt(i)) => i as f64,
        None => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span as OSpan};

    fn req(span: OSpan) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![span],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn a_short_trace_id_is_named_in_the_error() {
        let err = spans_from_otlp(req(OSpan {
            trace_id: vec![1; 3],
            span_id: vec![1; 8],
            ..Default::default()
        }))
        .unwrap_err();
        assert_eq!(
            err.0,
            "resourceSpans[0].scopeSpans[0].spans[0].traceId: expected 16 bytes, found 3"
        );
    }

    #[test]
    fn ids_become_lowercase_hex() {
        let b = spans_from_otlp(req(OSpan {
            trace_id: vec![0xab; 16],
            span_id: vec![0x0c; 8],
            ..Default::default()
        }))
        .unwrap();
        let Batch::Spans(g) = b else {
            panic!("expected spans")
        };
        assert_eq!(g[0].items[0].trace_id.to_string(), "ab".repeat(16));
        assert_eq!(g[0].items[0].span_id.to_string(), "0c".repeat(8));
        assert_eq!(g[0].items[0].parent_span_id, None);
    }
}
