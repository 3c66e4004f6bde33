//! Typed reads of `profile_samples` and `profile_stacks`: weighted stacks for flame graphs, and
//! the thread and time window of a span, for joining spans to the samples taken while they ran.

use serde::Serialize;
use serde_json::Value;

use crate::read::{TimeRange, i, lit, s, u};
use crate::{Store, StoreError};

/// Which samples to read. Every field narrows; none set means every process on every host.
#[derive(Clone, Debug, Default)]
pub struct ProfileFilter {
    pub service: Option<String>,
    pub host: Option<String>,
    pub pid: Option<u32>,
    pub tid: Option<u32>,
    /// `cpu` or `off_cpu` [default: cpu].
    pub kind: Option<String>,
    /// Only samples taken while the rate was raised for this reason (`high_traffic`).
    pub label: Option<String>,
}

/// A distinct stack and what its samples add up to.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct WeightedStack {
    /// Root first.
    pub frames: Vec<String>,
    pub truncated: bool,
    pub samples: u64,
    pub value_ns: u64,
}

/// Where and when a span ran, from its resource (`process.pid`) and attributes (`thread.id`).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SpanThread {
    pub service: String,
    pub pid: Option<u32>,
    pub tid: Option<u32>,
    pub start_ns: i64,
    pub end_ns: i64,
}

/// Stacks with more distinct entries than this are cut to the heaviest, so one request stays
/// bounded however long the range.
const MAX_STACKS: usize = 20_000;

impl ProfileFilter {
    fn conditions(&self, range: TimeRange) -> String {
        let mut c = vec![
            range.sql("Timestamp"),
            format!("Kind = {}", lit(self.kind.as_deref().unwrap_or("cpu"))),
        ];
        c.extend(self.narrowing());
        c.join(" AND ")
    }

    /// Every condition but time and kind.
    fn narrowing(&self) -> Vec<String> {
        let mut c = Vec::new();
        if let Some(v) = &self.service {
            c.push(format!("ServiceName = {}", lit(v)));
        }
        if let Some(v) = &self.host {
            c.push(format!("HostName = {}", lit(v)));
        }
        if let Some(v) = self.pid {
            c.push(format!("Pid = {v}"));
        }
        if let Some(v) = self.tid {
            c.push(format!("Tid = {v}"));
        }
        if let Some(v) = &self.label {
            c.push(format!("Label = {}", lit(v)));
        }
        c
    }
}

impl Store {
    /// Samples in `range` one row each (every kind unless `filter.kind` names one), oldest first,
    /// at most `limit`, with the stacks they point at: what an OTLP profiles export carries.
    pub async fn profile_batch(
        &self,
        filter: &ProfileFilter,
        range: TimeRange,
        limit: usize,
    ) -> Result<model::ProfileBatch, StoreError> {
        let mut conds = vec![range.sql("Timestamp")];
        conds.extend(filter.narrowing());
        if let Some(k) = &filter.kind {
            conds.push(format!("Kind = {}", lit(k)));
        }
        let rows = self
            .objects(&format!(
                "SELECT CAST(Timestamp AS BIGINT) AS ts, ServiceName, HostName, Pid, Tid, Comm, Kind, \
                 CAST(StackId AS VARCHAR) AS id, ValueNs, Label FROM profile_samples WHERE {} \
                 ORDER BY Timestamp LIMIT {limit}",
                conds.join(" AND ")
            ))
            .await?;
        let mut batch = model::ProfileBatch::default();
        let mut ids = std::collections::BTreeSet::new();
        for o in &rows {
            let id: u64 = s(o, "id").parse().unwrap_or(0);
            ids.insert(id);
            batch.samples.push(model::ProfileSample {
                time_unix_nano: u64::try_from(i(o, "ts")).unwrap_or(0),
                service_name: s(o, "ServiceName"),
                host_name: s(o, "HostName"),
                pid: u(o, "Pid") as u32,
                tid: u(o, "Tid") as u32,
                comm: s(o, "Comm"),
                kind: if s(o, "Kind") == "off_cpu" {
                    model::ProfileKind::OffCpu
                } else {
                    model::ProfileKind::Cpu
                },
                stack_id: id,
                value_nanos: u(o, "ValueNs"),
                label: s(o, "Label"),
            });
        }
        let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
        let mut seen = std::collections::HashSet::new();
        let list = |o: &serde_json::Map<String, Value>, k: &str| match o.get(k) {
            Some(Value::Array(a)) => a
                .iter()
                .map(|f| f.as_str().unwrap_or_default().to_string())
                .collect(),
            _ => Vec::new(),
        };
        for chunk in ids.chunks(1000) {
            let sql = format!(
                "SELECT CAST(StackId AS VARCHAR) AS id, CAST(Timestamp AS BIGINT) AS ts, \
                 ServiceName, Frames, Modules, Truncated FROM profile_stacks WHERE StackId IN ({})",
                chunk.join(",")
            );
            for o in self.objects(&sql).await? {
                let id: u64 = s(&o, "id").parse().unwrap_or(0);
                // A stack row is written once per process run that saw it; any copy will do.
                if seen.insert(id) {
                    batch.stacks.push(model::ProfileStack {
                        stack_id: id,
                        first_seen_unix_nano: u64::try_from(i(&o, "ts")).unwrap_or(0),
                        service_name: s(&o, "ServiceName"),
                        frames: list(&o, "Frames"),
                        modules: list(&o, "Modules"),
                        truncated: matches!(o.get("Truncated"), Some(Value::Bool(true))),
                    });
                }
            }
        }
        Ok(batch)
    }

    /// The stacks sampled in `range` that match `filter`, heaviest first.
    pub async fn profile_stacks(
        &self,
        filter: &ProfileFilter,
        range: TimeRange,
    ) -> Result<Vec<WeightedStack>, StoreError> {
        let weights = self
            .objects(&format!(
                "SELECT CAST(StackId AS VARCHAR) AS id, count(*) AS n, sum(ValueNs) AS v \
                 FROM profile_samples WHERE {} GROUP BY StackId ORDER BY v DESC LIMIT {MAX_STACKS}",
                filter.conditions(range)
            ))
            .await?;
        if weights.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = weights.iter().map(|o| s(o, "id")).collect();
        // A stack row is written once per process run that saw it; any copy will do.
        let mut frames = std::collections::HashMap::new();
        for chunk in ids.chunks(1000) {
            let sql = format!(
                "SELECT CAST(StackId AS VARCHAR) AS id, Frames, Truncated FROM profile_stacks \
                 WHERE StackId IN ({})",
                chunk.join(",")
            );
            for o in self.objects(&sql).await? {
                let list = match o.get("Frames") {
                    Some(Value::Array(a)) => a
                        .iter()
                        .map(|f| f.as_str().unwrap_or_default().to_string())
                        .collect(),
                    _ => Vec::new(),
                };
                let truncated = matches!(o.get("Truncated"), Some(Value::Bool(true)));
                frames.entry(s(&o, "id")).or_insert((list, truncated));
            }
        }
        Ok(weights
            .iter()
            .map(|o| {
                let (f, t) = frames
                    .get(&s(o, "id"))
                    .cloned()
                    // Samples whose stack row is gone (retention took it first) still count.
                    .unwrap_or_else(|| (vec!["[unknown stack]".to_string()], true));
                WeightedStack {
                    frames: f,
                    truncated: t,
                    samples: u(o, "n"),
                    value_ns: u(o, "v"),
                }
            })
            .collect())
    }

    /// The services with samples of any kind in `range`, the most sampled time first, at most
    /// `limit`.
    pub async fn profiled_services(
        &self,
        range: TimeRange,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let rows = self
            .objects(&format!(
                "SELECT ServiceName AS service, sum(ValueNs) AS v FROM profile_samples WHERE {} \
                 GROUP BY ServiceName ORDER BY v DESC, service LIMIT {limit}",
                range.sql("Timestamp")
            ))
            .await?;
        Ok(rows.iter().map(|o| s(o, "service")).collect())
    }

    /// The process, thread and time window of one span, when the span is stored.
    pub async fn span_thread(
        &self,
        trace_id: &str,
        span_id: &str,
    ) -> Result<Option<SpanThread>, StoreError> {
        let sql = format!(
            "SELECT ServiceName, ResourceAttributes['process.pid'] AS pid, \
             SpanAttributes['thread.id'] AS tid, CAST(Timestamp AS BIGINT) AS ts, Duration \
             FROM otel_traces WHERE TraceId = {} AND SpanId = {} LIMIT 1",
            lit(&trace_id.to_ascii_lowercase()),
            lit(&span_id.to_ascii_lowercase())
        );
        Ok(self.objects(&sql).await?.first().map(|o| {
            let start = i(o, "ts");
            SpanThread {
                service: s(o, "ServiceName"),
                pid: s(o, "pid").parse().ok(),
                tid: s(o, "tid").parse().ok(),
                start_ns: start,
                end_ns: start + u(o, "Duration") as i64,
            }
        }))
    }
}
