//! Typed reads for the API and the dashboard. The SQL stays in here; callers pass filters.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::query::to_objects;
use crate::table::Table;
use crate::{Store, StoreError};

/// Half-open time range in unix nanoseconds.
#[derive(Clone, Copy, Debug)]
pub struct TimeRange {
    pub start_ns: i64,
    pub end_ns: i64,
}

impl TimeRange {
    pub(crate) fn sql(&self, col: &str) -> String {
        format!(
            "{col} >= to_timestamp_nanos({}) AND {col} < to_timestamp_nanos({})",
            self.start_ns, self.end_ns
        )
    }
}

/// A SQL string literal.
pub(crate) fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A `LIKE` pattern matching `s` anywhere, with its wildcards escaped.
pub(crate) fn like_anywhere(s: &str) -> String {
    let esc = s
        .to_lowercase()
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    lit(&format!("%{esc}%"))
}

#[derive(Debug, Serialize)]
pub struct ServiceRed {
    pub service: String,
    pub spans: u64,
    /// Entry spans per second over the range.
    pub rate: f64,
    pub errors: u64,
    pub error_rate: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Default, Clone)]
pub struct TraceFilter {
    pub service: Option<String>,
    pub operation: Option<String>,
    pub min_duration_ns: Option<u64>,
    pub max_duration_ns: Option<u64>,
    /// `STATUS_CODE_OK`, `STATUS_CODE_ERROR` or `STATUS_CODE_UNSET`.
    pub status: Option<String>,
    /// Each must match a span attribute or a resource attribute.
    pub attributes: Vec<(String, String)>,
    pub limit: usize,
}

#[derive(Debug, Serialize)]
pub struct TraceSummary {
    pub trace_id: String,
    pub root_service: String,
    pub root_name: String,
    pub start_ms: f64,
    pub duration_ms: f64,
    pub span_count: u64,
    pub error_count: u64,
    pub services: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct ScopeInfo {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Serialize)]
pub struct EventRecord {
    pub time_unix_nano: String,
    pub name: String,
    pub attributes: Map<String, Value>,
}

#[derive(Debug, Serialize)]
pub struct LinkRecord {
    pub trace_id: String,
    pub span_id: String,
    pub trace_state: String,
    pub attributes: Map<String, Value>,
}

#[derive(Debug, Serialize)]
pub struct SpanRecord {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub name: String,
    pub kind: String,
    pub service: String,
    pub start_time_unix_nano: String,
    pub end_time_unix_nano: String,
    pub start_ms: f64,
    pub duration_ms: f64,
    pub duration_ns: u64,
    pub status_code: String,
    pub status_message: String,
    pub trace_state: String,
    pub attributes: Map<String, Value>,
    pub resource: Map<String, Value>,
    pub scope: ScopeInfo,
    pub events: Vec<EventRecord>,
    pub links: Vec<LinkRecord>,
}

#[derive(Debug, Default, Clone)]
pub struct LogFilter {
    pub service: Option<String>,
    pub min_severity: Option<i32>,
    pub text: Option<String>,
    pub trace_id: Option<String>,
    pub limit: usize,
}

#[derive(Debug, Serialize)]
pub struct LogEntry {
    pub time_unix_nano: String,
    pub time_ms: f64,
    pub observed_time_unix_nano: String,
    pub service: String,
    pub severity_text: String,
    pub severity_number: i64,
    pub body: String,
    pub trace_id: String,
    pub span_id: String,
    pub trace_flags: u64,
    pub event_name: String,
    pub attributes: Map<String, Value>,
    pub resource: Map<String, Value>,
    pub scope: ScopeInfo,
}

#[derive(Debug, Serialize)]
pub struct MetricInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub unit: String,
    pub description: String,
    pub services: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Series {
    /// See [`crate::insights::series_id`]; anomalies and forecasts name series by it.
    pub series_id: String,
    pub service: String,
    pub attributes: Map<String, Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub points: Vec<Value>,
}

impl Series {
    /// The points as (time in ms, value), leaving out those without a finite number.
    pub fn finite_points(&self) -> Vec<(i64, f64)> {
        self.points
            .iter()
            .filter_map(|p| Some((p["t"].as_f64()? as i64, p["value"].as_f64()?)))
            .filter(|(_, v)| v.is_finite())
            .collect()
    }
}

#[derive(Debug, Serialize)]
pub struct MetricSeries {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub unit: String,
    pub series: Vec<Series>,
}

const METRIC_TABLES: [(Table, &str); 5] = [
    (Table::MetricsGauge, "gauge"),
    (Table::MetricsSum, "sum"),
    (Table::MetricsHistogram, "histogram"),
    (Table::MetricsExponentialHistogram, "exponential_histogram"),
    (Table::MetricsSummary, "summary"),
];

/// Most rows a points query returns, so one request cannot hold the whole store in memory.
const MAX_POINTS: usize = 100_000;

pub(crate) fn s(o: &Map<String, Value>, k: &str) -> String {
    match o.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    }
}

fn n(o: &Map<String, Value>, k: &str) -> f64 {
    match o.get(k) {
        Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0),
        Some(Value::String(s)) => s.parse().unwrap_or(0.0),
        _ => 0.0,
    }
}

/// Integers exactly (nanosecond timestamps do not fit an f64).
pub(crate) fn i(o: &Map<String, Value>, k: &str) -> i64 {
    match o.get(k) {
        Some(Value::Number(n)) => n
            .as_i64()
            .unwrap_or_else(|| n.as_f64().unwrap_or(0.0) as i64),
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

pub(crate) fn u(o: &Map<String, Value>, k: &str) -> u64 {
    match o.get(k) {
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_i64().map(|i| i.max(0) as u64))
            .unwrap_or(0),
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

fn map(o: &Map<String, Value>, k: &str) -> Map<String, Value> {
    match o.get(k) {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    }
}

/// Arrow-JSON renders nested timestamps as `2026-01-02T03:04:05.123456789`.
fn iso_to_ns(v: Option<&Value>) -> i64 {
    match v {
        Some(Value::String(s)) => chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
            .ok()
            .and_then(|t| t.and_utc().timestamp_nanos_opt())
            .unwrap_or(0),
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

impl Store {
    pub(crate) async fn objects(&self, sql: &str) -> Result<Vec<Map<String, Value>>, StoreError> {
        let batches = self.sql(sql).await?;
        to_objects(&batches)
    }

    /// Rate, errors and duration percentiles of each service's entry spans (server/consumer
    /// spans, or roots), plus services that only sent other spans, with zeros.
    pub async fn services(&self, range: TimeRange) -> Result<Vec<ServiceRed>, StoreError> {
        let secs = ((range.end_ns - range.start_ns) as f64 / 1e9).max(1e-9);
        let sql = format!(
            "SELECT ServiceName AS service, COUNT(*) AS spans, \
             SUM(CASE WHEN StatusCode = 'STATUS_CODE_ERROR' THEN 1 ELSE 0 END) AS errors, \
             approx_percentile_cont(0.5) WITHIN GROUP (ORDER BY Duration) AS p50, \
             approx_percentile_cont(0.95) WITHIN GROUP (ORDER BY Duration) AS p95, \
             approx_percentile_cont(0.99) WITHIN GROUP (ORDER BY Duration) AS p99 \
             FROM otel_traces WHERE {} AND (SpanKind IN ('SPAN_KIND_SERVER', 'SPAN_KIND_CONSUMER') OR ParentSpanId = '') \
             GROUP BY ServiceName",
            range.sql("Timestamp")
        );
        let mut out: BTreeMap<String, ServiceRed> = BTreeMap::new();
        for o in self.objects(&sql).await? {
            let spans = u(&o, "spans");
            let errors = u(&o, "errors");
            let ms = |k: &str| o.get(k).and_then(|v| v.as_f64()).map(|ns| ns / 1e6);
            out.insert(
                s(&o, "service"),
                ServiceRed {
                    service: s(&o, "service"),
                    spans,
                    rate: spans as f64 / secs,
                    errors,
                    error_rate: if spans > 0 {
                        errors as f64 / spans as f64
                    } else {
                        0.0
                    },
                    p50_ms: ms("p50"),
                    p95_ms: ms("p95"),
                    p99_ms: ms("p99"),
                },
            );
        }
        let all = format!(
            "SELECT DISTINCT ServiceName AS service FROM otel_traces WHERE {}",
            range.sql("Timestamp")
        );
        for o in self.objects(&all).await? {
            let name = s(&o, "service");
            out.entry(name.clone()).or_insert(ServiceRed {
                service: name,
                spans: 0,
                rate: 0.0,
                errors: 0,
                error_rate: 0.0,
                p50_ms: None,
                p95_ms: None,
                p99_ms: None,
            });
        }
        Ok(out.into_values().collect())
    }

    pub async fn operations(
        &self,
        service: &str,
        range: TimeRange,
    ) -> Result<Vec<String>, StoreError> {
        let sql = format!(
            "SELECT DISTINCT SpanName AS name FROM otel_traces WHERE ServiceName = {} AND {} ORDER BY name",
            lit(service),
            range.sql("Timestamp")
        );
        Ok(self
            .objects(&sql)
            .await?
            .iter()
            .map(|o| s(o, "name"))
            .collect())
    }

    pub async fn search_traces(
        &self,
        f: &TraceFilter,
        range: TimeRange,
    ) -> Result<Vec<TraceSummary>, StoreError> {
        let mut conds = vec![range.sql("Timestamp")];
        if let Some(v) = &f.service {
            conds.push(format!("ServiceName = {}", lit(v)));
        }
        if let Some(v) = &f.operation {
            conds.push(format!("SpanName = {}", lit(v)));
        }
        if let Some(v) = f.min_duration_ns {
            conds.push(format!("Duration >= {v}"));
        }
        if let Some(v) = f.max_duration_ns {
            conds.push(format!("Duration <= {v}"));
        }
        if let Some(v) = &f.status {
            conds.push(format!("StatusCode = {}", lit(v)));
        }
        for (k, v) in &f.attributes {
            conds.push(format!(
                "(SpanAttributes[{k}] = {v} OR ResourceAttributes[{k}] = {v})",
                k = lit(k),
                v = lit(v)
            ));
        }
        let limit = f.limit.clamp(1, 1000);
        let ids_sql = format!(
            "SELECT TraceId, MAX(Timestamp) AS t FROM otel_traces WHERE {} GROUP BY TraceId ORDER BY t DESC LIMIT {limit}",
            conds.join(" AND ")
        );
        let ids: Vec<String> = self
            .objects(&ids_sql)
            .await?
            .iter()
            .map(|o| s(o, "TraceId"))
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let in_list = ids.iter().map(|i| lit(i)).collect::<Vec<_>>().join(",");
        let spans_sql = format!(
            "SELECT TraceId, ParentSpanId, SpanName, ServiceName, CAST(Timestamp AS BIGINT) AS ts, Duration, StatusCode \
             FROM otel_traces WHERE TraceId IN ({in_list})"
        );
        #[derive(Default)]
        struct Acc {
            start: i64,
            end: i64,
            count: u64,
            errors: u64,
            root: Option<(i64, String, String)>,
            first: Option<(i64, String, String)>,
            services: Vec<String>,
        }
        let mut acc: HashMap<String, Acc> = HashMap::new();
        for o in self.objects(&spans_sql).await? {
            let ts = i(&o, "ts");
            let end = ts + u(&o, "Duration") as i64;
            let a = acc.entry(s(&o, "TraceId")).or_insert_with(|| Acc {
                start: i64::MAX,
                end: i64::MIN,
                ..Acc::default()
            });
            a.start = a.start.min(ts);
            a.end = a.end.max(end);
            a.count += 1;
            if s(&o, "StatusCode") == "STATUS_CODE_ERROR" {
                a.errors += 1;
            }
            let svc = s(&o, "ServiceName");
            let here = (ts, svc.clone(), s(&o, "SpanName"));
            if s(&o, "ParentSpanId").is_empty() && a.root.as_ref().is_none_or(|r| ts < r.0) {
                a.root = Some(here.clone());
            }
            if a.first.as_ref().is_none_or(|r| ts < r.0) {
                a.first = Some(here);
            }
            if !a.services.contains(&svc) {
                a.services.push(svc);
            }
        }
        let mut out: Vec<TraceSummary> = ids
            .into_iter()
            .filter_map(|id| {
                let mut a = acc.remove(&id)?;
                a.services.sort();
                let (_, root_service, root_name) = a.root.or(a.first).unwrap_or_default();
                Some(TraceSummary {
                    trace_id: id,
                    root_service,
                    root_name,
                    start_ms: a.start as f64 / 1e6,
                    duration_ms: (a.end - a.start) as f64 / 1e6,
                    span_count: a.count,
                    error_count: a.errors,
                    services: a.services,
                })
            })
            .collect();
        out.sort_by(|a, b| b.start_ms.total_cmp(&a.start_ms));
        Ok(out)
    }

    /// Every span of a trace, by start time.
    pub async fn trace(&self, trace_id: &str) -> Result<Vec<SpanRecord>, StoreError> {
        let sql = format!(
            "SELECT *, CAST(Timestamp AS BIGINT) AS __ts FROM otel_traces WHERE TraceId = {} ORDER BY Timestamp",
            lit(&trace_id.to_ascii_lowercase())
        );
        let mut out = Vec::new();
        for o in self.objects(&sql).await? {
            let ts = i(&o, "__ts");
            let dur = u(&o, "Duration");
            let list = |k: &str| match o.get(k) {
                Some(Value::Array(a)) => a.clone(),
                _ => Vec::new(),
            };
            out.push(SpanRecord {
                trace_id: s(&o, "TraceId"),
                span_id: s(&o, "SpanId"),
                parent_span_id: s(&o, "ParentSpanId"),
                name: s(&o, "SpanName"),
                kind: s(&o, "SpanKind"),
                service: s(&o, "ServiceName"),
                start_time_unix_nano: ts.to_string(),
                end_time_unix_nano: (ts + dur as i64).to_string(),
                start_ms: ts as f64 / 1e6,
                duration_ms: dur as f64 / 1e6,
                duration_ns: dur,
                status_code: s(&o, "StatusCode"),
                status_message: s(&o, "StatusMessage"),
                trace_state: s(&o, "TraceState"),
                attributes: map(&o, "SpanAttributes"),
                resource: map(&o, "ResourceAttributes"),
                scope: ScopeInfo {
                    name: s(&o, "ScopeName"),
                    version: s(&o, "ScopeVersion"),
                },
                events: list("Events")
                    .iter()
                    .filter_map(|e| e.as_object())
                    .map(|e| EventRecord {
                        time_unix_nano: iso_to_ns(e.get("Timestamp")).to_string(),
                        name: s(e, "Name"),
                        attributes: map(e, "Attributes"),
                    })
                    .collect(),
                links: list("Links")
                    .iter()
                    .filter_map(|e| e.as_object())
                    .map(|l| LinkRecord {
                        trace_id: s(l, "TraceId"),
                        span_id: s(l, "SpanId"),
                        trace_state: s(l, "TraceState"),
                        attributes: map(l, "Attributes"),
                    })
                    .collect(),
            });
        }
        Ok(out)
    }

    /// Log records, newest first. With a trace id the time range is ignored.
    pub async fn logs(&self, f: &LogFilter, range: TimeRange) -> Result<Vec<LogEntry>, StoreError> {
        let mut conds = Vec::new();
        if let Some(t) = &f.trace_id {
            conds.push(format!("TraceId = {}", lit(&t.to_ascii_lowercase())));
        } else {
            conds.push(range.sql("Timestamp"));
        }
        if let Some(v) = &f.service {
            conds.push(format!("ServiceName = {}", lit(v)));
        }
        if let Some(v) = f.min_severity {
            conds.push(format!("SeverityNumber >= {v}"));
        }
        if let Some(v) = &f.text {
            conds.push(format!("lower(Body) LIKE {} ESCAPE '\\'", like_anywhere(v)));
        }
        let sql = format!(
            "SELECT *, CAST(Timestamp AS BIGINT) AS __ts, CAST(ObservedTimestamp AS BIGINT) AS __ots FROM otel_logs \
             WHERE {} ORDER BY Timestamp DESC LIMIT {}",
            conds.join(" AND "),
            f.limit.clamp(1, 10_000)
        );
        Ok(self
            .objects(&sql)
            .await?
            .iter()
            .map(|o| {
                let ts = i(o, "__ts");
                LogEntry {
                    time_unix_nano: ts.to_string(),
                    time_ms: ts as f64 / 1e6,
                    observed_time_unix_nano: (i(o, "__ots")).to_string(),
                    service: s(o, "ServiceName"),
                    severity_text: s(o, "SeverityText"),
                    severity_number: n(o, "SeverityNumber") as i64,
                    body: s(o, "Body"),
                    trace_id: s(o, "TraceId"),
                    span_id: s(o, "SpanId"),
                    trace_flags: u(o, "TraceFlags"),
                    event_name: s(o, "EventName"),
                    attributes: map(o, "LogAttributes"),
                    resource: map(o, "ResourceAttributes"),
                    scope: ScopeInfo {
                        name: s(o, "ScopeName"),
                        version: s(o, "ScopeVersion"),
                    },
                }
            })
            .collect())
    }

    pub async fn metric_names(&self) -> Result<Vec<MetricInfo>, StoreError> {
        let mut out: BTreeMap<String, MetricInfo> = BTreeMap::new();
        for (table, kind) in METRIC_TABLES {
            let sql = format!(
                "SELECT MetricName, MAX(MetricUnit) AS unit, MAX(MetricDescription) AS description, \
                 array_agg(DISTINCT ServiceName) AS services FROM {} GROUP BY MetricName",
                table.name()
            );
            for o in self.objects(&sql).await? {
                let mut services: Vec<String> = match o.get("services") {
                    Some(Value::Array(a)) => a
                        .iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect(),
                    _ => Vec::new(),
                };
                services.sort();
                out.insert(
                    s(&o, "MetricName"),
                    MetricInfo {
                        name: s(&o, "MetricName"),
                        kind: kind.to_string(),
                        unit: s(&o, "unit"),
                        description: s(&o, "description"),
                        services,
                    },
                );
            }
        }
        Ok(out.into_values().collect())
    }

    /// The table (and type and unit) holding metric `name`: one row looked up per table.
    async fn metric_table(
        &self,
        name: &str,
    ) -> Result<Option<(Table, &'static str, String)>, StoreError> {
        for (table, kind) in METRIC_TABLES {
            let sql = format!(
                "SELECT MetricUnit FROM {} WHERE MetricName = {} LIMIT 1",
                table.name(),
                lit(name)
            );
            if let Some(o) = self.objects(&sql).await?.first() {
                return Ok(Some((table, kind, s(o, "MetricUnit"))));
            }
        }
        Ok(None)
    }

    /// Points of one metric, one series per (service, attributes), oldest first.
    pub async fn metric_points(
        &self,
        name: &str,
        service: Option<&str>,
        attributes: &[(String, String)],
        range: Option<TimeRange>,
        with_points: bool,
    ) -> Result<Option<MetricSeries>, StoreError> {
        let Some((table, kind, unit)) = self.metric_table(name).await? else {
            return Ok(None);
        };
        let mut conds = vec![format!("MetricName = {}", lit(name))];
        if let Some(r) = range {
            conds.push(r.sql("TimeUnix"));
        }
        if let Some(v) = service {
            conds.push(format!("ServiceName = {}", lit(v)));
        }
        for (k, v) in attributes {
            conds.push(format!("Attributes[{}] = {}", lit(k), lit(v)));
        }
        let sql = format!(
            "SELECT *, CAST(TimeUnix AS BIGINT) AS __t, CAST(StartTimeUnix AS BIGINT) AS __st FROM {} WHERE {} \
             ORDER BY TimeUnix LIMIT {MAX_POINTS}",
            table.name(),
            conds.join(" AND ")
        );
        let mut series: Vec<Series> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for o in self.objects(&sql).await? {
            let svc = s(&o, "ServiceName");
            let attrs = map(&o, "Attributes");
            let key = format!("{svc}\u{0}{}", Value::Object(attrs.clone()));
            let i = *index.entry(key).or_insert_with(|| {
                let pairs = crate::insights::attr_pairs(&attrs);
                series.push(Series {
                    series_id: crate::insights::series_id(
                        name,
                        &svc,
                        pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                    ),
                    service: svc,
                    attributes: attrs,
                    points: Vec::new(),
                });
                series.len() - 1
            });
            if with_points {
                series[i].points.push(point(&o, kind));
            }
        }
        Ok(Some(MetricSeries {
            name: name.to_string(),
            kind: kind.to_string(),
            unit,
            series,
        }))
    }
}

fn point(o: &Map<String, Value>, kind: &str) -> Value {
    let t = i(o, "__t");
    let mut p = Map::new();
    p.insert("t".into(), Value::from(t as f64 / 1e6));
    p.insert("time_unix_nano".into(), Value::from(t.to_string()));
    p.insert(
        "start_time_unix_nano".into(),
        Value::from((i(o, "__st")).to_string()),
    );
    let copy = |p: &mut Map<String, Value>, from: &str, to: &str| {
        p.insert(to.into(), o.get(from).cloned().unwrap_or(Value::Null));
    };
    let mean = |o: &Map<String, Value>| {
        let c = n(o, "Count");
        if c > 0.0 {
            Value::from(n(o, "Sum") / c)
        } else {
            Value::Null
        }
    };
    match kind {
        "gauge" => copy(&mut p, "Value", "value"),
        "sum" => {
            copy(&mut p, "Value", "value");
            copy(&mut p, "IsMonotonic", "is_monotonic");
            copy(&mut p, "AggregationTemporality", "temporality");
        }
        "histogram" => {
            for (f, t) in [
                ("Count", "count"),
                ("Sum", "sum"),
                ("Min", "min"),
                ("Max", "max"),
                ("BucketCounts", "bucket_counts"),
                ("ExplicitBounds", "explicit_bounds"),
                ("AggregationTemporality", "temporality"),
            ] {
                copy(&mut p, f, t);
            }
            p.insert("value".into(), mean(o));
        }
        "exponential_histogram" => {
            for (f, t) in [
                ("Count", "count"),
                ("Sum", "sum"),
                ("Min", "min"),
                ("Max", "max"),
                ("Scale", "scale"),
                ("ZeroCount", "zero_count"),
                ("PositiveOffset", "positive_offset"),
                ("PositiveBucketCounts", "positive_bucket_counts"),
                ("NegativeOffset", "negative_offset"),
                ("NegativeBucketCounts", "negative_bucket_counts"),
                ("AggregationTemporality", "temporality"),
            ] {
                copy(&mut p, f, t);
            }
            p.insert("value".into(), mean(o));
        }
        _ => {
            copy(&mut p, "Count", "count");
            copy(&mut p, "Sum", "sum");
            let q = match o.get("ValueAtQuantiles") {
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(|q| q.as_object())
                    .map(|q| serde_json::json!({"quantile": q.get("Quantile"), "value": q.get("Value")}))
                    .collect(),
                _ => Vec::new(),
            };
            p.insert("quantiles".into(), Value::Array(q));
            p.insert("value".into(), mean(o));
        }
    }
    Value::Object(p)
}
