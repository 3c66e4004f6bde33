//! Table names and schemas. Names and columns follow the OpenTelemetry Collector's ClickHouse
//! exporter so the same queries run on the embedded store and on ClickHouse.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    ArrayBuilder, MapBuilder, MapFieldNames, RecordBatch, StringBuilder, new_null_array,
};
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Traces,
    Logs,
    MetricsGauge,
    MetricsSum,
    MetricsHistogram,
    MetricsExponentialHistogram,
    MetricsSummary,
    ProfileSamples,
    ProfileStacks,
    SecurityEvents,
    Alerts,
    Anomalies,
}

impl Table {
    pub const ALL: [Table; 12] = [
        Table::Traces,
        Table::Logs,
        Table::MetricsGauge,
        Table::MetricsSum,
        Table::MetricsHistogram,
        Table::MetricsExponentialHistogram,
        Table::MetricsSummary,
        Table::ProfileSamples,
        Table::ProfileStacks,
        Table::SecurityEvents,
        Table::Alerts,
        Table::Anomalies,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Traces => "otel_traces",
            Table::Logs => "otel_logs",
            Table::MetricsGauge => "otel_metrics_gauge",
            Table::MetricsSum => "otel_metrics_sum",
            Table::MetricsHistogram => "otel_metrics_histogram",
            Table::MetricsExponentialHistogram => "otel_metrics_exponential_histogram",
            Table::MetricsSummary => "otel_metrics_summary",
            Table::ProfileSamples => "profile_samples",
            Table::ProfileStacks => "profile_stacks",
            Table::SecurityEvents => "security_events",
            Table::Alerts => "alerts",
            Table::Anomalies => "anomalies",
        }
    }

    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Stable one-byte tag used in WAL frames.
    pub fn tag(self) -> u8 {
        Table::ALL.iter().position(|t| *t == self).unwrap_or(0) as u8
    }

    pub fn from_tag(tag: u8) -> Option<Table> {
        Table::ALL.get(tag as usize).copied()
    }

    /// The column that partitions files by hour and bounds time-range queries.
    pub fn time_column(self) -> &'static str {
        match self {
            Table::Traces
            | Table::Logs
            | Table::ProfileSamples
            | Table::ProfileStacks
            | Table::SecurityEvents
            | Table::Alerts
            | Table::Anomalies => "Timestamp",
            _ => "TimeUnix",
        }
    }

    pub fn schema(self) -> SchemaRef {
        static SCHEMAS: LazyLock<Vec<SchemaRef>> = LazyLock::new(|| {
            Table::ALL
                .iter()
                .map(|t| Arc::new(build_schema(*t)))
                .collect()
        });
        SCHEMAS[self.tag() as usize].clone()
    }
}

pub(crate) fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, None)
}

pub(crate) fn new_map_builder() -> MapBuilder<StringBuilder, StringBuilder> {
    new_map_builder_with_capacity(0, 0, 0, 0)
}

fn map_field_names() -> MapFieldNames {
    MapFieldNames {
        entry: "entries".into(),
        key: "keys".into(),
        value: "values".into(),
    }
}

/// A map builder with room for `rows` maps of `entries` entries in all.
pub(crate) fn new_map_builder_with_capacity(
    rows: usize,
    entries: usize,
    key_bytes: usize,
    value_bytes: usize,
) -> MapBuilder<StringBuilder, StringBuilder> {
    MapBuilder::with_capacity(
        Some(map_field_names()),
        StringBuilder::with_capacity(entries, key_bytes),
        StringBuilder::with_capacity(entries, value_bytes),
        rows,
    )
}

/// The map type exactly as [`new_map_builder`] produces it, so schemas and arrays always agree.
pub(crate) fn map_type() -> DataType {
    static T: LazyLock<DataType> = LazyLock::new(|| {
        let mut b = new_map_builder();
        ArrayBuilder::finish(&mut b).data_type().clone()
    });
    T.clone()
}

pub(crate) fn event_fields() -> Fields {
    Fields::from(vec![
        Field::new("Timestamp", ts_type(), false),
        Field::new("Name", DataType::Utf8, false),
        Field::new("Attributes", map_type(), false),
    ])
}

pub(crate) fn link_fields() -> Fields {
    Fields::from(vec![
        Field::new("TraceId", DataType::Utf8, false),
        Field::new("SpanId", DataType::Utf8, false),
        Field::new("TraceState", DataType::Utf8, false),
        Field::new("Attributes", map_type(), false),
    ])
}

pub(crate) fn quantile_fields() -> Fields {
    Fields::from(vec![
        Field::new("Quantile", DataType::Float64, false),
        Field::new("Value", DataType::Float64, false),
    ])
}

fn list_of(fields: Fields) -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Struct(fields), true)))
}

fn list_prim(t: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", t, true)))
}

fn build_schema(t: Table) -> Schema {
    use DataType::*;
    let s = |n: &str| Field::new(n, Utf8, false);
    let m = |n: &str| Field::new(n, map_type(), false);
    let metric_common = || {
        vec![
            m("ResourceAttributes"),
            s("ResourceSchemaUrl"),
            s("ScopeName"),
            s("ScopeVersion"),
            m("ScopeAttributes"),
            Field::new("ScopeDroppedAttrCount", UInt32, false),
            s("ScopeSchemaUrl"),
            s("ServiceName"),
            s("MetricName"),
            s("MetricDescription"),
            s("MetricUnit"),
            m("Attributes"),
            Field::new("StartTimeUnix", ts_type(), false),
            Field::new("TimeUnix", ts_type(), false),
            Field::new("Flags", UInt32, false),
        ]
    };
    let fields = match t {
        Table::ProfileSamples => vec![
            Field::new("Timestamp", ts_type(), false),
            s("ServiceName"),
            s("HostName"),
            Field::new("Pid", UInt32, false),
            Field::new("Tid", UInt32, false),
            s("Comm"),
            s("Kind"),
            Field::new("StackId", UInt64, false),
            Field::new("ValueNs", UInt64, false),
            s("Label"),
        ],
        // One row per stack the first time a process run sees it (a restart may repeat it).
        Table::ProfileStacks => vec![
            Field::new("Timestamp", ts_type(), false),
            s("ServiceName"),
            Field::new("StackId", UInt64, false),
            Field::new("Frames", list_prim(Utf8), false),
            Field::new("Modules", list_prim(Utf8), false),
            Field::new("Truncated", Boolean, false),
        ],
        // One row per security event; `Details` holds the whole event as JSON.
        Table::SecurityEvents => vec![
            Field::new("Timestamp", ts_type(), false),
            s("HostName"),
            s("ServiceName"),
            Field::new("Pid", UInt32, false),
            Field::new("Tid", UInt32, false),
            Field::new("Ppid", UInt32, false),
            Field::new("Uid", UInt32, false),
            Field::new("Euid", UInt32, false),
            Field::new("Gid", UInt32, false),
            s("Comm"),
            s("Exe"),
            s("ContainerId"),
            s("Kind"),
            s("Path"),
            Field::new("Args", list_prim(Utf8), false),
            s("Cwd"),
            s("Protocol"),
            s("LocalAddress"),
            Field::new("LocalPort", UInt32, false),
            s("RemoteAddress"),
            Field::new("RemotePort", UInt32, false),
            Field::new("Result", Int64, false),
            s("Details"),
        ],
        // One row per version of an alert; `Evidence` holds the events that raised it as JSON.
        Table::Alerts => vec![
            Field::new("Timestamp", ts_type(), false),
            s("AlertId"),
            s("HostName"),
            s("ServiceName"),
            Field::new("Pid", UInt32, false),
            s("Comm"),
            s("Exe"),
            s("ContainerId"),
            s("Source"),
            s("RuleId"),
            s("Severity"),
            Field::new("SeverityNumber", UInt32, false),
            Field::new("Score", Float64, true),
            s("Summary"),
            s("Expected"),
            s("Seen"),
            Field::new("Count", UInt64, false),
            Field::new("LastTimestamp", ts_type(), false),
            s("Evidence"),
            s("Status"),
            // A status change appends a new version of the row (same Timestamp and AlertId, a
            // later UpdatedAt); readers keep the latest. Null in rows written before it existed.
            Field::new("UpdatedAt", ts_type(), true),
            // The baseline departure of an anomaly as JSON (`model::security::BaselineDeparture`),
            // what "accept as normal" adds to the baseline; empty for rules.
            Field::new("Departure", Utf8, true),
        ],
        // One row per version of an anomaly (see `insights.rs`); readers keep the latest per Id.
        Table::Anomalies => vec![
            Field::new("Timestamp", ts_type(), false),
            s("Id"),
            Field::new("UpdatedAt", ts_type(), false),
            Field::new("EndTime", ts_type(), false),
            Field::new("PeakTime", ts_type(), false),
            Field::new("Open", Boolean, false),
            s("ServiceName"),
            s("MetricName"),
            s("SeriesId"),
            m("Attributes"),
            s("Source"),
            Field::new("PeakValue", Float64, false),
            Field::new("ExpectedLow", Float64, false),
            Field::new("ExpectedHigh", Float64, false),
            Field::new("Score", Float64, false),
            s("Severity"),
            Field::new("Points", UInt32, false),
        ],
        Table::Traces => vec![
            Field::new("Timestamp", ts_type(), false),
            s("TraceId"),
            s("SpanId"),
            s("ParentSpanId"),
            s("TraceState"),
            s("SpanName"),
            s("SpanKind"),
            s("ServiceName"),
            m("ResourceAttributes"),
            s("ScopeName"),
            s("ScopeVersion"),
            m("SpanAttributes"),
            Field::new("Duration", UInt64, false),
            s("StatusCode"),
            s("StatusMessage"),
            Field::new("Events", list_of(event_fields()), false),
            Field::new("Links", list_of(link_fields()), false),
        ],
        Table::Logs => vec![
            Field::new("Timestamp", ts_type(), false),
            Field::new("ObservedTimestamp", ts_type(), false),
            s("TraceId"),
            s("SpanId"),
            Field::new("TraceFlags", UInt32, false),
            s("SeverityText"),
            Field::new("SeverityNumber", Int32, false),
            s("ServiceName"),
            s("Body"),
            s("ResourceSchemaUrl"),
            m("ResourceAttributes"),
            s("ScopeSchemaUrl"),
            s("ScopeName"),
            s("ScopeVersion"),
            m("ScopeAttributes"),
            m("LogAttributes"),
            s("EventName"),
        ],
        Table::MetricsGauge => {
            let mut f = metric_common();
            f.push(Field::new("Value", Float64, false));
            f
        }
        Table::MetricsSum => {
            let mut f = metric_common();
            f.push(Field::new("Value", Float64, false));
            f.push(Field::new("AggregationTemporality", Int32, false));
            f.push(Field::new("IsMonotonic", Boolean, false));
            f
        }
        Table::MetricsHistogram => {
            let mut f = metric_common();
            f.extend([
                Field::new("Count", UInt64, false),
                Field::new("Sum", Float64, true),
                Field::new("BucketCounts", list_prim(UInt64), false),
                Field::new("ExplicitBounds", list_prim(Float64), false),
                Field::new("Min", Float64, true),
                Field::new("Max", Float64, true),
                Field::new("AggregationTemporality", Int32, false),
            ]);
            f
        }
        Table::MetricsExponentialHistogram => {
            let mut f = metric_common();
            f.extend([
                Field::new("Count", UInt64, false),
                Field::new("Sum", Float64, true),
                Field::new("Scale", Int32, false),
                Field::new("ZeroCount", UInt64, false),
                Field::new("PositiveOffset", Int32, false),
                Field::new("PositiveBucketCounts", list_prim(UInt64), false),
                Field::new("NegativeOffset", Int32, false),
                Field::new("NegativeBucketCounts", list_prim(UInt64), false),
                Field::new("Min", Float64, true),
                Field::new("Max", Float64, true),
                Field::new("AggregationTemporality", Int32, false),
            ]);
            f
        }
        Table::MetricsSummary => {
            let mut f = metric_common();
            f.extend([
                Field::new("Count", UInt64, false),
                Field::new("Sum", Float64, false),
                Field::new("ValueAtQuantiles", list_of(quantile_fields()), false),
            ]);
            f
        }
    };
    Schema::new(fields)
}

/// `batch` with `table`'s current columns: a batch written under an older schema (from a WAL
/// segment) gets the nullable columns added since filled with nulls.
pub(crate) fn conform(
    table: Table,
    batch: RecordBatch,
) -> Result<RecordBatch, datafusion::arrow::error::ArrowError> {
    let schema = table.schema();
    if batch.schema().fields() == schema.fields() {
        return Ok(batch);
    }
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) => Ok(c.clone()),
            None if f.is_nullable() => Ok(new_null_array(f.data_type(), batch.num_rows())),
            None => Err(datafusion::arrow::error::ArrowError::SchemaError(format!(
                "table {}: expected column {} in a stored batch, found none",
                table.name(),
                f.name()
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema, columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An alerts batch as written before `UpdatedAt` and `Departure` existed.
    fn old_alerts_batch(drop_also: Option<&str>) -> RecordBatch {
        let schema = Table::Alerts.schema();
        let fields: Vec<_> = schema
            .fields()
            .iter()
            .filter(|f| {
                !matches!(f.name().as_str(), "UpdatedAt" | "Departure")
                    && Some(f.name().as_str()) != drop_also
            })
            .cloned()
            .collect();
        let columns = fields
            .iter()
            .map(|f| datafusion::arrow::array::new_empty_array(f.data_type()))
            .collect();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
    }

    #[test]
    fn an_old_batch_gets_the_new_nullable_columns_and_a_missing_required_one_is_named() {
        let b = conform(Table::Alerts, old_alerts_batch(None)).unwrap();
        assert_eq!(b.schema(), Table::Alerts.schema());
        let err = conform(Table::Alerts, old_alerts_batch(Some("AlertId"))).unwrap_err();
        assert!(err.to_string().contains("column AlertId"), "{err}");
    }
}
