use std::sync::Arc;

use crate::{Attrs, SpanId, TraceId};

/// What produced the telemetry (OTLP `Resource`), shared by every item it produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resource {
    pub attributes: Attrs,
    pub schema_url: String,
}

impl Resource {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `service.name`, or the semantic-conventions fallback `unknown_service`.
    pub fn service_name(&self) -> &str {
        self.get("service.name").unwrap_or("unknown_service")
    }

    /// Adds `key` unless the sender already set it: what a sender says about itself wins.
    pub fn set_default(&mut self, key: &str, value: impl Into<String>) {
        if self.get(key).is_none() {
            self.attributes.push((key.to_string(), value.into()));
        }
    }
}

/// The instrumentation scope (library) that produced the items.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scope {
    pub name: String,
    pub version: String,
    pub attributes: Attrs,
    pub dropped_attributes_count: u32,
    pub schema_url: String,
}

/// Items that share a resource and scope.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Group<T> {
    pub resource: Arc<Resource>,
    pub scope: Arc<Scope>,
    pub items: Vec<T>,
}

/// One kind of telemetry per variant: the closed set of things that flow through the pipeline.
#[derive(Clone, Debug, PartialEq)]
pub enum Batch {
    Spans(Vec<Group<Span>>),
    /// Spans still in their OTLP/protobuf request, validated (see [`crate::otlp_wire`]).
    RawSpans(crate::otlp_wire::RawSpans),
    Metrics(Vec<Group<Metric>>),
    Logs(Vec<Group<LogRecord>>),
    Profiles(ProfileBatch),
    /// This host's security events and the alerts raised from them.
    Security(crate::security::SecurityBatch),
    /// Anomalies found by `oxeye up`'s insights job on stored series.
    Anomalies(Vec<crate::anomaly::AnomalyRecord>),
}

impl Batch {
    pub fn kind(&self) -> &'static str {
        match self {
            Batch::Spans(_) | Batch::RawSpans(_) => "spans",
            Batch::Metrics(_) => "metrics",
            Batch::Logs(_) => "logs",
            Batch::Profiles(_) => "profiles",
            Batch::Security(_) => "security",
            Batch::Anomalies(_) => "anomalies",
        }
    }

    /// Number of spans, metric data points or log records.
    pub fn len(&self) -> usize {
        match self {
            Batch::Spans(g) => g.iter().map(|g| g.items.len()).sum(),
            Batch::RawSpans(r) => r.len(),
            Batch::Metrics(g) => g
                .iter()
                .flat_map(|g| &g.items)
                .map(|m| m.points.len())
                .sum(),
            Batch::Logs(g) => g.iter().map(|g| g.items.len()).sum(),
            Batch::Profiles(p) => p.samples.len(),
            Batch::Security(s) => s.events.len() + s.alerts.len(),
            Batch::Anomalies(a) => a.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// For every group of spans: its resource and how many of its spans are requests (roots,
    /// and server or consumer spans). Empty for other kinds of batch.
    pub fn span_groups(&self) -> Vec<(&Resource, usize)> {
        match self {
            Batch::Spans(g) => g
                .iter()
                .map(|g| {
                    let requests = g
                        .items
                        .iter()
                        .filter(|s| {
                            s.parent_span_id.is_none()
                                || matches!(s.kind, SpanKind::Server | SpanKind::Consumer)
                        })
                        .count();
                    (&*g.resource, requests)
                })
                .collect(),
            Batch::RawSpans(r) => r
                .groups
                .iter()
                .map(|g| (&*g.resource, g.requests))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Every resource in the batch, for processors that enrich them.
    pub fn resources_mut(&mut self) -> Vec<&mut Arc<Resource>> {
        match self {
            Batch::Spans(g) => g.iter_mut().map(|g| &mut g.resource).collect(),
            Batch::RawSpans(r) => r.groups.iter_mut().map(|g| &mut g.resource).collect(),
            Batch::Metrics(g) => g.iter_mut().map(|g| &mut g.resource).collect(),
            Batch::Logs(g) => g.iter_mut().map(|g| &mut g.resource).collect(),
            // Profiles are taken on this host: each sample names its process, no resource.
            Batch::Profiles(_) | Batch::Security(_) | Batch::Anomalies(_) => Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

impl SpanKind {
    pub fn from_otlp(k: i32) -> Self {
        match k {
            1 => Self::Internal,
            2 => Self::Server,
            3 => Self::Client,
            4 => Self::Producer,
            5 => Self::Consumer,
            _ => Self::Unspecified,
        }
    }

    /// The name the ClickHouse exporter stores (`SPAN_KIND_SERVER`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "SPAN_KIND_UNSPECIFIED",
            Self::Internal => "SPAN_KIND_INTERNAL",
            Self::Server => "SPAN_KIND_SERVER",
            Self::Client => "SPAN_KIND_CLIENT",
            Self::Producer => "SPAN_KIND_PRODUCER",
            Self::Consumer => "SPAN_KIND_CONSUMER",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusCode {
    Unset,
    Ok,
    Error,
}

impl StatusCode {
    pub fn from_otlp(c: i32) -> Self {
        match c {
            1 => Self::Ok,
            2 => Self::Error,
            _ => Self::Unset,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unset => "STATUS_CODE_UNSET",
            Self::Ok => "STATUS_CODE_OK",
            Self::Error => "STATUS_CODE_ERROR",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// `None` for a root span.
    pub parent_span_id: Option<SpanId>,
    pub trace_state: String,
    pub name: String,
    pub kind: SpanKind,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub attributes: Attrs,
    pub events: Vec<SpanEvent>,
    pub links: Vec<SpanLink>,
    pub status_code: StatusCode,
    pub status_message: String,
}

impl Span {
    pub fn duration_nanos(&self) -> u64 {
        self.end_unix_nano.saturating_sub(self.start_unix_nano)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct SpanEvent {
    pub time_unix_nano: u64,
    pub name: String,
    pub attributes: Attrs,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SpanLink {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub trace_state: String,
    pub attributes: Attrs,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LogRecord {
    pub time_unix_nano: u64,
    pub observed_time_unix_nano: u64,
    pub severity_number: i32,
    pub severity_text: String,
    pub body: String,
    pub attributes: Attrs,
    /// `None` when the record was not emitted inside a span.
    pub trace_id: Option<TraceId>,
    pub span_id: Option<SpanId>,
    pub flags: u32,
    pub event_name: String,
}

impl LogRecord {
    /// The time to index by: the event time, or when it was observed if the source had no clock.
    pub fn effective_time(&self) -> u64 {
        if self.time_unix_nano != 0 {
            self.time_unix_nano
        } else {
            self.observed_time_unix_nano
        }
    }
}

/// A metric stream with its data points. Every point of a metric has the same kind.
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    pub name: String,
    pub description: String,
    pub unit: String,
    pub points: Vec<MetricPoint>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MetricPoint {
    pub attributes: Attrs,
    pub start_time_unix_nano: u64,
    pub time_unix_nano: u64,
    pub flags: u32,
    pub value: PointValue,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Temporality {
    Unspecified = 0,
    Delta = 1,
    Cumulative = 2,
}

impl Temporality {
    pub fn from_otlp(t: i32) -> Self {
        match t {
            1 => Self::Delta,
            2 => Self::Cumulative,
            _ => Self::Unspecified,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum PointValue {
    Gauge(f64),
    Sum {
        value: f64,
        temporality: Temporality,
        monotonic: bool,
    },
    Histogram {
        count: u64,
        sum: Option<f64>,
        min: Option<f64>,
        max: Option<f64>,
        bucket_counts: Vec<u64>,
        explicit_bounds: Vec<f64>,
        temporality: Temporality,
    },
    ExponentialHistogram {
        count: u64,
        sum: Option<f64>,
        min: Option<f64>,
        max: Option<f64>,
        scale: i32,
        zero_count: u64,
        positive_offset: i32,
        positive_bucket_counts: Vec<u64>,
        negative_offset: i32,
        negative_bucket_counts: Vec<u64>,
        temporality: Temporality,
    },
    Summary {
        count: u64,
        sum: f64,
        /// (quantile, value) pairs.
        quantiles: Vec<(f64, f64)>,
    },
}

impl PointValue {
    pub fn type_name(&self) -> &'static str {
        match self {
            PointValue::Gauge(_) => "gauge",
            PointValue::Sum { .. } => "sum",
            PointValue::Histogram { .. } => "histogram",
            PointValue::ExponentialHistogram { .. } => "exponential_histogram",
            PointValue::Summary { .. } => "summary",
        }
    }
}

/// What a profile sample measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfileKind {
    /// On-CPU time, from periodic sampling.
    Cpu,
    /// Time a thread spent blocked, from scheduler switches.
    OffCpu,
}

impl ProfileKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProfileKind::Cpu => "cpu",
            ProfileKind::OffCpu => "off_cpu",
        }
    }
}

/// Stack samples of this host's processes, with the stacks not sent before.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProfileBatch {
    pub samples: Vec<ProfileSample>,
    pub stacks: Vec<ProfileStack>,
}

/// One sample (or a sum of identical ones) of a thread's stack.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileSample {
    pub time_unix_nano: u64,
    pub service_name: String,
    pub host_name: String,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub kind: ProfileKind,
    /// Key of a [`ProfileStack`].
    pub stack_id: u64,
    /// The time the sample stands for: the sampling period, or the blocked time.
    pub value_nanos: u64,
    /// Why the rate was raised while this sample was taken (`high_traffic`), empty otherwise.
    pub label: String,
}

/// A symbolized stack, root first, identified by a hash of its frames.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileStack {
    pub stack_id: u64,
    pub first_seen_unix_nano: u64,
    pub service_name: String,
    pub frames: Vec<String>,
    pub modules: Vec<String>,
    /// The unwinder could not reach the thread's start: frames near the root are missing.
    pub truncated: bool,
}
