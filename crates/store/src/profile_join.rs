//! Reads that join profiles with traffic and spans: the time buckets in which a service's
//! samples were labelled (high-traffic windows), its request rate per bucket, and the samples
//! whose stack holds a function together with the spans of the processes they came from.

use serde::Serialize;

use crate::read::{TimeRange, i, lit, s, u};
use crate::{Store, StoreError};

/// At most this many samples are joined per request; the heaviest evidence is in the first ones.
const MAX_JOINED_SAMPLES: usize = 200_000;
/// At most this many spans are joined per request.
const MAX_JOINED_SPANS: usize = 100_000;

/// One sample's thread and time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleAt {
    pub pid: u32,
    pub tid: u32,
    pub time_ns: i64,
}

/// A span with the process and thread it names.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SpanAt {
    pub trace_id: String,
    pub span_id: String,
    pub name: String,
    pub service: String,
    pub pid: u32,
    pub tid: Option<u32>,
    pub start_ns: i64,
    pub end_ns: i64,
}

/// Time buckets (start, nanoseconds) with a count.
pub type Buckets = Vec<(i64, u64)>;

fn bucket_sql(col: &str, bucket_ns: i64) -> String {
    format!("(CAST({col} AS BIGINT) / {bucket_ns}) * {bucket_ns}")
}

impl Store {
    /// The services with samples labelled `label` in `range`.
    pub async fn labelled_services(
        &self,
        label: &str,
        range: TimeRange,
    ) -> Result<Vec<String>, StoreError> {
        let rows = self
            .objects(&format!(
                "SELECT DISTINCT ServiceName AS service FROM profile_samples WHERE {} AND Label = {} \
                 ORDER BY service LIMIT 1000",
                range.sql("Timestamp"),
                lit(label)
            ))
            .await?;
        Ok(rows.iter().map(|o| s(o, "service")).collect())
    }

    /// Per bucket of `bucket_ns`, the CPU samples of `service` labelled `label`.
    pub async fn labelled_buckets(
        &self,
        service: &str,
        label: &str,
        range: TimeRange,
        bucket_ns: i64,
    ) -> Result<Buckets, StoreError> {
        let rows = self
            .objects(&format!(
                "SELECT {} AS b, count(*) AS n FROM profile_samples WHERE {} AND Label = {} \
                 AND ServiceName = {} AND Kind = 'cpu' GROUP BY 1 ORDER BY 1",
                bucket_sql("Timestamp", bucket_ns),
                range.sql("Timestamp"),
                lit(label),
                lit(service)
            ))
            .await?;
        Ok(rows.iter().map(|o| (i(o, "b"), u(o, "n"))).collect())
    }

    /// Per bucket of `bucket_ns`, the requests of `service`: its SERVER and CONSUMER spans and
    /// its root spans, as the services page counts them.
    pub async fn request_buckets(
        &self,
        service: &str,
        range: TimeRange,
        bucket_ns: i64,
    ) -> Result<Buckets, StoreError> {
        let rows = self
            .objects(&format!(
                "SELECT {} AS b, count(*) AS n FROM otel_traces WHERE {} AND ServiceName = {} \
                 AND (SpanKind IN ('SPAN_KIND_SERVER', 'SPAN_KIND_CONSUMER') OR ParentSpanId = '') \
                 GROUP BY 1 ORDER BY 1",
                bucket_sql("Timestamp", bucket_ns),
                range.sql("Timestamp"),
                lit(service)
            ))
            .await?;
        Ok(rows.iter().map(|o| (i(o, "b"), u(o, "n"))).collect())
    }

    /// The CPU samples in `range` (of `service`, when given) whose stack holds a frame named
    /// `function` exactly (kernel frames end in `_[k]`, JIT frames in `_[j]`).
    pub async fn samples_in_function(
        &self,
        function: &str,
        service: Option<&str>,
        range: TimeRange,
    ) -> Result<Vec<SampleAt>, StoreError> {
        let stacks = self
            .objects(&format!(
                "SELECT DISTINCT CAST(StackId AS VARCHAR) AS id FROM profile_stacks \
                 WHERE array_has(Frames, {})",
                lit(function)
            ))
            .await?;
        let ids: Vec<String> = stacks.iter().map(|o| s(o, "id")).collect();
        let mut out = Vec::new();
        for chunk in ids.chunks(1000) {
            if out.len() >= MAX_JOINED_SAMPLES {
                break;
            }
            let mut sql = format!(
                "SELECT Pid, Tid, CAST(Timestamp AS BIGINT) AS ts FROM profile_samples WHERE {} \
                 AND Kind = 'cpu' AND StackId IN ({})",
                range.sql("Timestamp"),
                chunk.join(",")
            );
            if let Some(svc) = service {
                sql.push_str(&format!(" AND ServiceName = {}", lit(svc)));
            }
            sql.push_str(&format!(
                " LIMIT {}",
                MAX_JOINED_SAMPLES.saturating_sub(out.len())
            ));
            for o in self.objects(&sql).await? {
                out.push(SampleAt {
                    pid: u(&o, "Pid") as u32,
                    tid: u(&o, "Tid") as u32,
                    time_ns: i(&o, "ts"),
                });
            }
        }
        Ok(out)
    }

    /// The spans that started in `range` in the processes `pids` (by their resource's
    /// `process.pid`), with their `thread.id` when they carry one.
    pub async fn spans_of_processes(
        &self,
        pids: &[u32],
        range: TimeRange,
    ) -> Result<Vec<SpanAt>, StoreError> {
        let mut out = Vec::new();
        for chunk in pids.chunks(500) {
            let list: Vec<String> = chunk.iter().map(|p| lit(&p.to_string())).collect();
            let sql = format!(
                "SELECT TraceId, SpanId, SpanName, ServiceName, \
                 ResourceAttributes['process.pid'] AS pid, SpanAttributes['thread.id'] AS tid, \
                 CAST(Timestamp AS BIGINT) AS ts, Duration FROM otel_traces WHERE {} \
                 AND ResourceAttributes['process.pid'] IN ({}) LIMIT {}",
                range.sql("Timestamp"),
                list.join(","),
                MAX_JOINED_SPANS
            );
            for o in self.objects(&sql).await? {
                let Ok(pid) = s(&o, "pid").parse() else {
                    continue;
                };
                let start = i(&o, "ts");
                out.push(SpanAt {
                    trace_id: s(&o, "TraceId"),
                    span_id: s(&o, "SpanId"),
                    name: s(&o, "SpanName"),
                    service: s(&o, "ServiceName"),
                    pid,
                    tid: s(&o, "tid").parse().ok(),
                    start_ns: start,
                    end_ns: start + u(&o, "Duration") as i64,
                });
            }
        }
        Ok(out)
    }
}
