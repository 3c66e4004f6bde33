//! What the insights job and the anomaly endpoints read and write: metric points of every series
//! in a time range, services' RED series per bucket, the `anomalies` table, deploys (changes of
//! `service.version`) and security alerts when an `alerts` table exists.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{
    BooleanBuilder, Float64Builder, RecordBatch, StringBuilder, TimestampNanosecondArray,
    UInt32Builder,
};
use datafusion::arrow::error::ArrowError;
use model::anomaly::AnomalyRecord;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::read::{TimeRange, i, lit, s, u};
use crate::table::{Table, new_map_builder};
use crate::{Store, StoreError};

/// Identifies one series: FNV-1a over the metric name, the service and the attributes sorted by
/// key, as 16 hex digits. The same series always gets the same id, whatever the attribute order.
pub fn series_id<'a>(
    metric: &str,
    service: &str,
    attributes: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    let mut attrs: Vec<(&str, &str)> = attributes.into_iter().collect();
    attrs.sort_unstable();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes.iter().chain(std::iter::once(&0xff)) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    feed(metric.as_bytes());
    feed(service.as_bytes());
    for (k, v) in attrs {
        feed(k.as_bytes());
        feed(v.as_bytes());
    }
    format!("{h:016x}")
}

/// The attributes of a map column as rendered by `to_objects`, as text pairs.
pub(crate) fn attr_pairs(m: &Map<String, Value>) -> Vec<(String, String)> {
    m.iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), v)
        })
        .collect()
}

fn ts(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(crate) fn encode(records: &[AnomalyRecord]) -> Result<RecordBatch, ArrowError> {
    let mut order: Vec<usize> = (0..records.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (&records[a], &records[b]);
        (&x.service_name, &x.metric_name, x.start_unix_nano).cmp(&(
            &y.service_name,
            &y.metric_name,
            y.start_unix_nano,
        ))
    });
    let n = records.len();
    let (mut start, mut updated, mut end, mut peak) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let mut id = StringBuilder::new();
    let mut open = BooleanBuilder::new();
    let mut service = StringBuilder::new();
    let mut metric = StringBuilder::new();
    let mut series = StringBuilder::new();
    let mut attrs = new_map_builder();
    let mut source = StringBuilder::new();
    let (mut value, mut low, mut high, mut score) = (
        Float64Builder::new(),
        Float64Builder::new(),
        Float64Builder::new(),
        Float64Builder::new(),
    );
    let mut severity = StringBuilder::new();
    let mut points = UInt32Builder::new();
    for i in order {
        let r = &records[i];
        start.push(ts(r.start_unix_nano));
        id.append_value(&r.id);
        updated.push(ts(r.updated_unix_nano));
        end.push(ts(r.end_unix_nano));
        peak.push(ts(r.peak_unix_nano));
        open.append_value(r.open);
        service.append_value(&r.service_name);
        metric.append_value(&r.metric_name);
        series.append_value(&r.series_id);
        for (k, v) in &r.attributes {
            attrs.keys().append_value(k);
            attrs.values().append_value(v);
        }
        attrs.append(true)?;
        source.append_value(&r.source);
        value.append_value(r.peak_value);
        low.append_value(r.expected_low);
        high.append_value(r.expected_high);
        score.append_value(r.score);
        severity.append_value(&r.severity);
        points.append_value(r.points);
    }
    RecordBatch::try_new(
        Table::Anomalies.schema(),
        vec![
            Arc::new(TimestampNanosecondArray::from(start)),
            Arc::new(id.finish()),
            Arc::new(TimestampNanosecondArray::from(updated)),
            Arc::new(TimestampNanosecondArray::from(end)),
            Arc::new(TimestampNanosecondArray::from(peak)),
            Arc::new(open.finish()),
            Arc::new(service.finish()),
            Arc::new(metric.finish()),
            Arc::new(series.finish()),
            Arc::new(attrs.finish()),
            Arc::new(source.finish()),
            Arc::new(value.finish()),
            Arc::new(low.finish()),
            Arc::new(high.finish()),
            Arc::new(score.finish()),
            Arc::new(severity.finish()),
            Arc::new(points.finish()),
        ],
    )
}

/// One point of a stored metric series, reduced to a number: a gauge's or sum's value, a
/// histogram's mean.
#[derive(Clone, Debug)]
pub struct StoredPoint {
    pub metric: String,
    pub service: String,
    pub attributes: Vec<(String, String)>,
    pub series_id: String,
    pub t_ms: i64,
    pub value: f64,
    /// A monotonic cumulative sum: its rate, not its value, is what moves.
    pub cumulative: bool,
    /// The point's start time (a counter reset moves it).
    pub start_ms: i64,
}

/// The metric tables whose points reduce to one number per point, and the expression of it.
const NUMERIC_TABLES: [(Table, &str, &str); 3] = [
    (Table::MetricsGauge, "Value", "false"),
    (
        Table::MetricsSum,
        "Value",
        "(IsMonotonic AND AggregationTemporality = 2)",
    ),
    (
        Table::MetricsHistogram,
        "CASE WHEN Count > 0 THEN Sum / CAST(Count AS DOUBLE) END",
        "false",
    ),
];

/// A service's entry spans (server/consumer, or roots), as the services page counts them.
const ENTRY_SPANS: &str =
    "(SpanKind IN ('SPAN_KIND_SERVER', 'SPAN_KIND_CONSUMER') OR ParentSpanId = '')";

/// One bucket of a service's RED series.
#[derive(Clone, Debug, PartialEq)]
pub struct RedBucket {
    pub service: String,
    pub start_ms: i64,
    pub requests: u64,
    pub errors: u64,
    pub p99_ms: Option<f64>,
}

/// Filters of [`Store::anomalies`]; every one is optional.
#[derive(Clone, Debug, Default)]
pub struct AnomalyFilter {
    pub service: Option<String>,
    pub metric: Option<String>,
    pub series_id: Option<String>,
    /// Anomalies that overlap this range.
    pub range: Option<TimeRange>,
    pub open: Option<bool>,
    pub limit: usize,
}

/// The latest version of an anomaly, as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Anomaly {
    pub id: String,
    pub status: &'static str,
    pub start_ms: i64,
    pub end_ms: i64,
    pub peak_ms: i64,
    pub updated_ms: i64,
    pub service: String,
    pub metric: String,
    pub series_id: String,
    pub attributes: Map<String, Value>,
    pub source: String,
    pub peak_value: f64,
    pub expected_low: f64,
    pub expected_high: f64,
    pub score: f64,
    pub severity: String,
    pub points: u64,
}

/// A version of a service seen in its spans' `service.version`.
#[derive(Clone, Debug, Serialize)]
pub struct VersionSeen {
    pub version: String,
    pub first_ms: i64,
    pub last_ms: i64,
    pub spans: u64,
}

fn f(o: &Map<String, Value>, k: &str) -> Option<f64> {
    match o.get(k) {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
}

impl Store {
    /// Every numeric metric point with `TimeUnix` in `range`, oldest first; only metrics whose
    /// name starts with one of `prefixes` when given.
    pub async fn series_points(
        &self,
        range: TimeRange,
        prefixes: Option<&[&str]>,
    ) -> Result<Vec<StoredPoint>, StoreError> {
        let mut out = Vec::new();
        let names = prefixes.map(|ps| {
            let alts: Vec<String> = ps
                .iter()
                .map(|p| format!("starts_with(MetricName, {})", lit(p)))
                .collect();
            format!(" AND ({})", alts.join(" OR "))
        });
        for (table, value, cumulative) in NUMERIC_TABLES {
            let sql = format!(
                "SELECT MetricName, ServiceName, Attributes, CAST(TimeUnix AS BIGINT) AS t, \
                 CAST(StartTimeUnix AS BIGINT) AS st, {value} AS v, {cumulative} AS c \
                 FROM {} WHERE {}{} ORDER BY TimeUnix",
                table.name(),
                range.sql("TimeUnix"),
                names.as_deref().unwrap_or("")
            );
            let mut ids: HashMap<(String, String, String), String> = HashMap::new();
            for o in self.objects(&sql).await? {
                let Some(v) = f(&o, "v") else { continue };
                let metric = s(&o, "MetricName");
                let service = s(&o, "ServiceName");
                let attrs = match o.get("Attributes") {
                    Some(Value::Object(m)) => attr_pairs(m),
                    _ => Vec::new(),
                };
                let key = (
                    metric.clone(),
                    service.clone(),
                    o.get("Attributes")
                        .map(|a| a.to_string())
                        .unwrap_or_default(),
                );
                let id = ids
                    .entry(key)
                    .or_insert_with(|| {
                        series_id(
                            &metric,
                            &service,
                            attrs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                        )
                    })
                    .clone();
                out.push(StoredPoint {
                    metric,
                    service,
                    attributes: attrs,
                    series_id: id,
                    t_ms: i(&o, "t").div_euclid(1_000_000),
                    value: v,
                    cumulative: matches!(o.get("c"), Some(Value::Bool(true))),
                    start_ms: i(&o, "st").div_euclid(1_000_000),
                });
            }
        }
        out.sort_by_key(|p| p.t_ms);
        Ok(out)
    }

    /// Request count, errors and p99 latency of each service's entry spans per `bucket_ms`
    /// bucket in `range`; buckets without spans are absent.
    pub async fn red_buckets(
        &self,
        range: TimeRange,
        bucket_ms: i64,
    ) -> Result<Vec<RedBucket>, StoreError> {
        let bucket_ns = bucket_ms.max(1) * 1_000_000;
        let sql = format!(
            "SELECT ServiceName AS service, \
             (CAST(Timestamp AS BIGINT) / {bucket_ns}) * {bucket_ns} AS b, COUNT(*) AS n, \
             SUM(CASE WHEN StatusCode = 'STATUS_CODE_ERROR' THEN 1 ELSE 0 END) AS errors, \
             approx_percentile_cont(0.99) WITHIN GROUP (ORDER BY Duration) AS p99 \
             FROM otel_traces WHERE {} AND {ENTRY_SPANS} GROUP BY 1, 2 ORDER BY 2, 1",
            range.sql("Timestamp")
        );
        Ok(self
            .objects(&sql)
            .await?
            .iter()
            .map(|o| RedBucket {
                service: s(o, "service"),
                start_ms: i(o, "b").div_euclid(1_000_000),
                requests: u(o, "n"),
                errors: u(o, "errors"),
                p99_ms: f(o, "p99").map(|ns| ns / 1e6),
            })
            .collect())
    }

    /// The latest version of each anomaly that passes `filter`, most recent first.
    pub async fn anomalies(&self, filter: &AnomalyFilter) -> Result<Vec<Anomaly>, StoreError> {
        let mut conds = vec!["TRUE".to_string()];
        if let Some(v) = &filter.service {
            conds.push(format!("ServiceName = {}", lit(v)));
        }
        if let Some(v) = &filter.metric {
            conds.push(format!("MetricName = {}", lit(v)));
        }
        if let Some(v) = &filter.series_id {
            conds.push(format!("SeriesId = {}", lit(v)));
        }
        if let Some(r) = filter.range {
            conds.push(format!(
                "Timestamp < to_timestamp_nanos({}) AND EndTime >= to_timestamp_nanos({})",
                r.end_ns, r.start_ns
            ));
        }
        let sql = format!(
            "SELECT *, CAST(Timestamp AS BIGINT) AS __start, CAST(UpdatedAt AS BIGINT) AS __updated, \
             CAST(EndTime AS BIGINT) AS __end, CAST(PeakTime AS BIGINT) AS __peak \
             FROM anomalies WHERE {} ORDER BY UpdatedAt",
            conds.join(" AND ")
        );
        let mut latest: BTreeMap<String, Anomaly> = BTreeMap::new();
        for o in self.objects(&sql).await? {
            let a = anomaly_of(&o);
            match latest.get(&a.id) {
                Some(old) if old.updated_ms > a.updated_ms => {}
                _ => {
                    latest.insert(a.id.clone(), a);
                }
            }
        }
        let mut out: Vec<Anomaly> = latest
            .into_values()
            .filter(|a| filter.open.is_none_or(|o| o == (a.status == "open")))
            .collect();
        out.sort_by(|a, b| b.start_ms.cmp(&a.start_ms).then(a.id.cmp(&b.id)));
        if filter.limit > 0 {
            out.truncate(filter.limit);
        }
        Ok(out)
    }

    /// The latest version of anomaly `id`.
    pub async fn anomaly(&self, id: &str) -> Result<Option<Anomaly>, StoreError> {
        let sql = format!(
            "SELECT *, CAST(Timestamp AS BIGINT) AS __start, CAST(UpdatedAt AS BIGINT) AS __updated, \
             CAST(EndTime AS BIGINT) AS __end, CAST(PeakTime AS BIGINT) AS __peak \
             FROM anomalies WHERE Id = {} ORDER BY UpdatedAt DESC LIMIT 1",
            lit(id)
        );
        Ok(self.objects(&sql).await?.first().map(anomaly_of))
    }

    /// The values of `service.version` in the service's spans in `range`, oldest first.
    pub async fn service_versions(
        &self,
        service: &str,
        range: TimeRange,
    ) -> Result<Vec<VersionSeen>, StoreError> {
        let sql = format!(
            "SELECT ResourceAttributes['service.version'] AS v, \
             MIN(CAST(Timestamp AS BIGINT)) AS first, MAX(CAST(Timestamp AS BIGINT)) AS last, COUNT(*) AS n \
             FROM otel_traces WHERE ServiceName = {} AND {} GROUP BY 1 ORDER BY 2",
            lit(service),
            range.sql("Timestamp")
        );
        Ok(self
            .objects(&sql)
            .await?
            .iter()
            .filter(|o| !s(o, "v").is_empty())
            .map(|o| VersionSeen {
                version: s(o, "v"),
                first_ms: i(o, "first").div_euclid(1_000_000),
                last_ms: i(o, "last").div_euclid(1_000_000),
                spans: u(o, "n"),
            })
            .collect())
    }

    /// Security alerts about `service` in `range` from the `alerts` table; `None` when the store
    /// has no such table (the security sensor does not store its alerts here yet).
    pub async fn service_alerts(
        &self,
        service: &str,
        range: TimeRange,
        limit: usize,
    ) -> Result<Option<Vec<Map<String, Value>>>, StoreError> {
        if Table::from_name("alerts").is_none() {
            return Ok(None);
        }
        let sql = format!(
            "{} ORDER BY __t DESC LIMIT {limit}",
            crate::security::latest_alerts_sql(&format!(
                "ServiceName = {} AND {}",
                lit(service),
                range.sql("Timestamp")
            ))
        );
        Ok(Some(self.objects(&sql).await?))
    }
}

fn anomaly_of(o: &Map<String, Value>) -> Anomaly {
    let ms = |k: &str| i(o, k).div_euclid(1_000_000);
    Anomaly {
        id: s(o, "Id"),
        status: if matches!(o.get("Open"), Some(Value::Bool(true))) {
            "open"
        } else {
            "closed"
        },
        start_ms: ms("__start"),
        end_ms: ms("__end"),
        peak_ms: ms("__peak"),
        updated_ms: ms("__updated"),
        service: s(o, "ServiceName"),
        metric: s(o, "MetricName"),
        series_id: s(o, "SeriesId"),
        attributes: match o.get("Attributes") {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        },
        source: s(o, "Source"),
        peak_value: f(o, "PeakValue").unwrap_or(f64::NAN),
        expected_low: f(o, "ExpectedLow").unwrap_or(f64::NAN),
        expected_high: f(o, "ExpectedHigh").unwrap_or(f64::NAN),
        score: f(o, "Score").unwrap_or(0.0),
        severity: s(o, "Severity"),
        points: u(o, "Points"),
    }
}

#[cfg(test)]
mod tests {
    use super::series_id;

    #[test]
    fn series_id_ignores_attribute_order() {
        let a = series_id("m", "svc", [("a", "1"), ("b", "2")]);
        let b = series_id("m", "svc", [("b", "2"), ("a", "1")]);
        assert_eq!(a, b);
        assert_ne!(a, series_id("m", "svc", [("a", "1"), ("b", "3")]));
        // Field boundaries count: ("ab", "") is not ("a", "b").
        assert_ne!(series_id("ab", "", []), series_id("a", "b", []));
    }
}
