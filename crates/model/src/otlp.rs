//! OTLP wire types → model. Validation lives here so every receiver rejects the same things.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point};
use opentelemetry_proto::tonic::resource::v1::Resource as OtlpResource;

use crate::attrs::{any_value_to_string, attrs_from_otlp};
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

fn resource(r: Option<&OtlpResource>, schema_url: &str) -> Arc<Resource> {
    Arc::new(Resource {
        attributes: r
            .map(|r| attrs_from_otlp(&r.attributes))
            .unwrap_or_default(),
        schema_url: schema_url.to_string(),
    })
}

fn scope(s: Option<&InstrumentationScope>, schema_url: &str) -> Arc<Scope> {
    Arc::new(match s {
        Some(s) => Scope {
            name: s.name.clone(),
            version: s.version.clone(),
            attributes: attrs_from_otlp(&s.attributes),
            dropped_attributes_count: s.dropped_attributes_count,
            schema_url: schema_url.to_string(),
        },
        None => Scope {
            schema_url: schema_url.to_string(),
            ..Scope::default()
        },
    })
}

/// Hex of an id that must be exactly `len` bytes (`allow_empty` for optional ids).
fn id_hex(
    bytes: &[u8],
    len: usize,
    allow_empty: bool,
    what: &dyn Fn() -> String,
) -> Result<String, InvalidData> {
    if bytes.len() == len || (allow_empty && bytes.is_empty()) {
        if bytes.iter().all(|b| *b == 0) && !bytes.is_empty() && !allow_empty {
            return Err(InvalidData(format!("{}: must not be all zeros", what())));
        }
        Ok(hex::encode(bytes))
    } else {
        Err(InvalidData(format!(
            "{}: expected {len} bytes, found {}",
            what(),
            bytes.len()
        )))
    }
}

pub fn spans_from_otlp(req: ExportTraceServiceRequest) -> Result<Batch, InvalidData> {
    let mut groups = Vec::new();
    for (ri, rs) in req.resource_spans.iter().enumerate() {
        let res = resource(rs.resource.as_ref(), &rs.schema_url);
        for (si, ss) in rs.scope_spans.iter().enumerate() {
            let mut items = Vec::with_capacity(ss.spans.len());
            for (i, s) in ss.spans.iter().enumerate() {
                let at = |f: &str| format!("resourceSpans[{ri}].scopeSpans[{si}].spans[{i}].{f}");
                let status = s.status.as_ref();
                items.push(Span {
                    trace_id: id_hex(&s.trace_id, 16, false, &|| at("traceId"))?,
                    span_id: id_hex(&s.span_id, 8, false, &|| at("spanId"))?,
                    parent_span_id: id_hex(&s.parent_span_id, 8, true, &|| at("parentSpanId"))?,
                    trace_state: s.trace_state.clone(),
                    name: s.name.clone(),
                    kind: SpanKind::from_otlp(s.kind),
                    start_unix_nano: s.start_time_unix_nano,
                    end_unix_nano: s.end_time_unix_nano,
                    attributes: attrs_from_otlp(&s.attributes),
                    events: s
                        .events
                        .iter()
                        .map(|e| SpanEvent {
                            time_unix_nano: e.time_unix_nano,
                            name: e.name.clone(),
                            attributes: attrs_from_otlp(&e.attributes),
                        })
                        .collect(),
                    links: s
                        .links
                        .iter()
                        .enumerate()
                        .map(|(li, l)| {
                            Ok(SpanLink {
                                trace_id: id_hex(&l.trace_id, 16, false, &|| {
                                    at(&format!("links[{li}].traceId"))
                                })?,
                                span_id: id_hex(&l.span_id, 8, false, &|| {
                                    at(&format!("links[{li}].spanId"))
                                })?,
                                trace_state: l.trace_state.clone(),
                                attributes: attrs_from_otlp(&l.attributes),
                            })
                        })
                        .collect::<Result<_, InvalidData>>()?,
                    status_code: StatusCode::from_otlp(status.map(|s| s.code).unwrap_or(0)),
                    status_message: status.map(|s| s.message.clone()).unwrap_or_default(),
                });
            }
            if !items.is_empty() {
                groups.push(Group {
                    resource: res.clone(),
                    scope: scope(ss.scope.as_ref(), &ss.schema_url),
                    items,
                });
            }
        }
    }
    Ok(Batch::Spans(groups))
}

pub fn logs_from_otlp(req: ExportLogsServiceRequest) -> Result<Batch, InvalidData> {
    let mut groups = Vec::new();
    for (ri, rl) in req.resource_logs.iter().enumerate() {
        let res = resource(rl.resource.as_ref(), &rl.schema_url);
        for (si, sl) in rl.scope_logs.iter().enumerate() {
            let mut items = Vec::with_capacity(sl.log_records.len());
            for (i, l) in sl.log_records.iter().enumerate() {
                let at =
                    |f: &str| format!("resourceLogs[{ri}].scopeLogs[{si}].logRecords[{i}].{f}");
                items.push(LogRecord {
                    time_unix_nano: l.time_unix_nano,
                    observed_time_unix_nano: l.observed_time_unix_nano,
                    severity_number: l.severity_number,
                    severity_text: l.severity_text.clone(),
                    body: l.body.as_ref().map(any_value_to_string).unwrap_or_default(),
                    attributes: attrs_from_otlp(&l.attributes),
                    trace_id: id_hex(&l.trace_id, 16, true, &|| at("traceId"))?,
                    span_id: id_hex(&l.span_id, 8, true, &|| at("spanId"))?,
                    flags: l.flags,
                    event_name: l.event_name.clone(),
                });
            }
            if !items.is_empty() {
                groups.push(Group {
                    resource: res.clone(),
                    scope: scope(sl.scope.as_ref(), &sl.schema_url),
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
            attributes: attrs_from_otlp(&$p.attributes),
            start_time_unix_nano: $p.start_time_unix_nano,
            time_unix_nano: $p.time_unix_nano,
            flags: $p.flags,
            value: $value,
        }
    };
}

pub fn metrics_from_otlp(req: ExportMetricsServiceRequest) -> Result<Batch, InvalidData> {
    let mut groups = Vec::new();
    for (ri, rm) in req.resource_metrics.iter().enumerate() {
        let res = resource(rm.resource.as_ref(), &rm.schema_url);
        for (si, sm) in rm.scope_metrics.iter().enumerate() {
            let mut items = Vec::with_capacity(sm.metrics.len());
            for (mi, m) in sm.metrics.iter().enumerate() {
                let at = format!("resourceMetrics[{ri}].scopeMetrics[{si}].metrics[{mi}]");
                if m.name.is_empty() {
                    return Err(InvalidData(format!("{at}.name: must not be empty")));
                }
                let points = match &m.data {
                    None => {
                        return Err(InvalidData(format!(
                            "{at}: metric {:?} has no data (expected gauge, sum, histogram, exponentialHistogram or summary)",
                            m.name
                        )));
                    }
                    Some(Data::Gauge(g)) => g
                        .data_points
                        .iter()
                        .map(|p| point!(p, PointValue::Gauge(number(&p.value))))
                        .collect(),
                    Some(Data::Sum(s)) => s
                        .data_points
                        .iter()
                        .map(|p| {
                            point!(p, PointValue::Sum {
                                    value: number(&p.value),
                                    temporality: Temporality::from_otlp(s.aggregation_temporality),
                                    monotonic: s.is_monotonic,
                                },
                            )
                        })
                        .collect(),
                    Some(Data::Histogram(h)) => h
                        .data_points
                        .iter()
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
                                    bucket_counts: p.bucket_counts.clone(),
                                    explicit_bounds: p.explicit_bounds.clone(),
                                    temporality: Temporality::from_otlp(h.aggregation_temporality),
                                },
                            ))
                        })
                        .collect::<Result<_, _>>()?,
                    Some(Data::ExponentialHistogram(h)) => h
                        .data_points
                        .iter()
                        .map(|p| {
                            let (po, pc) = p.positive.as_ref().map(|b| (b.offset, b.bucket_counts.clone())).unwrap_or_default();
                            let (no, nc) = p.negative.as_ref().map(|b| (b.offset, b.bucket_counts.clone())).unwrap_or_default();
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
                        .iter()
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
                    name: m.name.clone(),
                    description: m.description.clone(),
                    unit: m.unit.clone(),
                    points,
                });
            }
            if !items.is_empty() {
                groups.push(Group {
                    resource: res.clone(),
                    scope: scope(sm.scope.as_ref(), &sm.schema_url),
                    items,
                });
            }
        }
    }
    Ok(Batch::Metrics(groups))
}

fn number(v: &Option<number_data_point::Value>) -> f64 {
    match v {
        Some(number_data_point::Value::AsDouble(d)) => *d,
        Some(number_data_point::Value::AsInt(i)) => *i as f64,
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
        assert_eq!(g[0].items[0].trace_id, "ab".repeat(16));
        assert_eq!(g[0].items[0].span_id, "0c".repeat(8));
        assert_eq!(g[0].items[0].parent_span_id, "");
    }
}
