//! `security_events` and `alerts`: the encoding of `Batch::Security` and the typed reads of the
//! security API (alerts and events with filters, one alert, a service's RED series around it).

use std::sync::Arc;

use datafusion::arrow::array::{
    Float64Builder, Int64Builder, ListBuilder, RecordBatch, StringArray, StringBuilder,
    TimestampNanosecondArray, UInt32Builder, UInt64Builder,
};
use datafusion::arrow::error::ArrowError;
use model::security::{Alert, AlertSource, SecurityBatch, SecurityEvent, StoredSecurityEvent};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::encode::{sorted_order, ts};
use crate::read::{TimeRange, i, like_anywhere, lit, s, u};
use crate::table::Table;
use crate::{Store, StoreError};

/// Most rows one alerts or events read returns.
pub const MAX_ROWS: usize = 5_000;

/// An alert as raised.
pub const STATUS_OPEN: &str = "open";
/// The statuses an alert can be given: someone is on it, or it is dealt with.
pub const ALERT_STATUSES: [&str; 3] = [STATUS_OPEN, "acknowledged", "resolved"];

/// The latest version of each alert (see `alerts` in `table.rs`) among rows matching
/// `conditions`, with its times as integers (`__t`, `__last`, `__updated`).
pub(crate) fn latest_alerts_sql(conditions: &str) -> String {
    format!(
        "SELECT * FROM (SELECT *, CAST(Timestamp AS BIGINT) AS __t, \
         CAST(LastTimestamp AS BIGINT) AS __last, CAST(UpdatedAt AS BIGINT) AS __updated, \
         ROW_NUMBER() OVER (PARTITION BY AlertId ORDER BY UpdatedAt DESC NULLS LAST) AS __v \
         FROM alerts WHERE {conditions}) WHERE __v = 1"
    )
}

pub(crate) fn encode(b: &SecurityBatch) -> Result<Vec<(Table, RecordBatch)>, ArrowError> {
    let mut out = Vec::new();
    if !b.events.is_empty() {
        out.push((Table::SecurityEvents, events(&b.events)?));
    }
    if !b.alerts.is_empty() {
        out.push((Table::Alerts, alerts(&b.alerts)?));
    }
    Ok(out)
}

fn service_of(p: &model::security::SecurityProcess) -> &str {
    p.service_name.as_deref().unwrap_or("")
}

/// The columns that differ by kind: path, arguments, cwd, and a connection's two ends.
#[derive(Default)]
struct KindColumns {
    path: String,
    args: Vec<String>,
    cwd: String,
    protocol: String,
    local: Option<std::net::SocketAddr>,
    remote: Option<std::net::SocketAddr>,
    result: i64,
}

fn kind_columns(e: &SecurityEvent) -> KindColumns {
    match e {
        SecurityEvent::Exec(x) => KindColumns {
            path: x.exe(),
            args: x.argv.clone(),
            cwd: x.cwd.clone().unwrap_or_default(),
            ..Default::default()
        },
        SecurityEvent::Exit(x) => KindColumns {
            result: x
                .exit_code
                .map(i64::from)
                .or(x.signal.map(|s| -i64::from(s)))
                .unwrap_or(0),
            ..Default::default()
        },
        SecurityEvent::Connect(c) | SecurityEvent::Accept(c) => KindColumns {
            protocol: c.protocol.name(),
            local: Some(c.local),
            remote: Some(c.remote),
            result: i64::from(c.result),
            ..Default::default()
        },
        SecurityEvent::FileOpen(f) => KindColumns {
            path: f.path.clone(),
            result: f.result,
            ..Default::default()
        },
        SecurityEvent::PrivilegeChange(p) => KindColumns {
            path: p.syscall.name().to_string(),
            result: p.result,
            ..Default::default()
        },
        SecurityEvent::Ptrace(p) => KindColumns {
            path: p.request_name().to_string(),
            args: vec![p.target_pid.to_string()],
            result: p.result,
            ..Default::default()
        },
        SecurityEvent::ModuleLoad(m) => KindColumns {
            result: m.result,
            ..Default::default()
        },
    }
}

fn events(rows: &[StoredSecurityEvent]) -> Result<RecordBatch, ArrowError> {
    let n = rows.len();
    let order = sorted_order(
        rows.iter()
            .enumerate()
            .map(|(i, r)| {
                let p = r.event.process();
                (service_of(p), "", ts(p.time_unix_nano), i)
            })
            .collect(),
    );
    let mut time = Vec::with_capacity(n);
    let str_col = || StringBuilder::with_capacity(n, n * 16);
    let u32_col = || UInt32Builder::with_capacity(n);
    let (mut host, mut service, mut comm, mut exe, mut container, mut kind) = (
        str_col(),
        str_col(),
        str_col(),
        str_col(),
        str_col(),
        str_col(),
    );
    let (mut path, mut cwd, mut protocol, mut local_addr, mut remote_addr, mut details) = (
        str_col(),
        str_col(),
        str_col(),
        str_col(),
        str_col(),
        str_col(),
    );
    let (mut pid, mut tid, mut ppid, mut uid, mut euid, mut gid, mut local_port, mut remote_port) = (
        u32_col(),
        u32_col(),
        u32_col(),
        u32_col(),
        u32_col(),
        u32_col(),
        u32_col(),
        u32_col(),
    );
    let mut args = ListBuilder::new(StringBuilder::new());
    let mut result = Int64Builder::with_capacity(n);
    // One buffer for every event's JSON, not a String each.
    let mut json = Vec::with_capacity(512);
    for i in order {
        let r = &rows[i];
        let p = r.event.process();
        let k = kind_columns(&r.event);
        time.push(ts(p.time_unix_nano));
        host.append_value(&p.host);
        service.append_value(service_of(p));
        pid.append_value(p.pid);
        tid.append_value(p.tid);
        ppid.append_value(p.ppid);
        uid.append_value(p.uid);
        euid.append_value(p.euid);
        gid.append_value(p.gid);
        comm.append_value(&p.comm);
        exe.append_value(r.exe.as_deref().unwrap_or(""));
        container.append_value(p.container_id.as_deref().unwrap_or(""));
        kind.append_value(r.event.kind().name());
        path.append_value(&k.path);
        for a in &k.args {
            args.values().append_value(a);
        }
        args.append(true);
        cwd.append_value(&k.cwd);
        protocol.append_value(&k.protocol);
        local_addr.append_value(k.local.map(|a| a.ip().to_string()).unwrap_or_default());
        local_port.append_value(k.local.map_or(0, |a| u32::from(a.port())));
        remote_addr.append_value(k.remote.map(|a| a.ip().to_string()).unwrap_or_default());
        remote_port.append_value(k.remote.map_or(0, |a| u32::from(a.port())));
        result.append_value(k.result);
        json.clear();
        // Plain data always serializes, and serde_json writes UTF-8.
        let _ = serde_json::to_writer(&mut json, &r.event);
        details.append_value(std::str::from_utf8(&json).unwrap_or_default());
    }
    RecordBatch::try_new(
        Table::SecurityEvents.schema(),
        vec![
            Arc::new(TimestampNanosecondArray::from(time)),
            Arc::new(host.finish()),
            Arc::new(service.finish()),
            Arc::new(pid.finish()),
            Arc::new(tid.finish()),
            Arc::new(ppid.finish()),
            Arc::new(uid.finish()),
            Arc::new(euid.finish()),
            Arc::new(gid.finish()),
            Arc::new(comm.finish()),
            Arc::new(exe.finish()),
            Arc::new(container.finish()),
            Arc::new(kind.finish()),
            Arc::new(path.finish()),
            Arc::new(args.finish()),
            Arc::new(cwd.finish()),
            Arc::new(protocol.finish()),
            Arc::new(local_addr.finish()),
            Arc::new(local_port.finish()),
            Arc::new(remote_addr.finish()),
            Arc::new(remote_port.finish()),
            Arc::new(result.finish()),
            Arc::new(details.finish()),
        ],
    )
}

fn alerts(rows: &[Alert]) -> Result<RecordBatch, ArrowError> {
    let n = rows.len();
    let order = sorted_order(
        rows.iter()
            .enumerate()
            .map(|(i, a)| (service_of(&a.process), "", ts(a.time_unix_nano), i))
            .collect(),
    );
    let str_col = || StringBuilder::with_capacity(n, n * 16);
    let mut time = Vec::with_capacity(n);
    let mut last = Vec::with_capacity(n);
    let (mut id, mut host, mut service, mut comm, mut exe, mut container, mut source) = (
        str_col(),
        str_col(),
        str_col(),
        str_col(),
        str_col(),
        str_col(),
        str_col(),
    );
    let (mut rule, mut severity, mut summary, mut expected, mut seen, mut evidence, mut status) = (
        str_col(),
        str_col(),
        str_col(),
        str_col(),
        str_col(),
        str_col(),
        str_col(),
    );
    let mut departure = str_col();
    let mut pid = UInt32Builder::with_capacity(n);
    let mut severity_number = UInt32Builder::with_capacity(n);
    let mut score = Float64Builder::with_capacity(n);
    let mut count = UInt64Builder::with_capacity(n);
    for i in order {
        let a = &rows[i];
        time.push(ts(a.time_unix_nano));
        last.push(ts(a.last_time_unix_nano));
        id.append_value(&a.id);
        host.append_value(a.host());
        service.append_value(service_of(&a.process));
        pid.append_value(a.process.pid);
        comm.append_value(&a.process.comm);
        exe.append_value(a.exe.as_deref().unwrap_or(""));
        container.append_value(a.process.container_id.as_deref().unwrap_or(""));
        source.append_value(match a.source {
            AlertSource::Rule { .. } => "rule",
            AlertSource::Anomaly { .. } => "anomaly",
        });
        rule.append_value(a.source.name());
        severity.append_value(a.severity.name());
        severity_number.append_value(a.severity as u32);
        score.append_option(a.anomaly.as_ref().map(|d| d.score));
        summary.append_value(&a.summary);
        expected.append_value(a.anomaly.as_ref().map_or("", |d| d.expected.as_str()));
        seen.append_value(a.anomaly.as_ref().map_or("", |d| d.seen.as_str()));
        count.append_value(a.count);
        evidence.append_value(serde_json::to_string(&a.events).unwrap_or_default());
        status.append_value(STATUS_OPEN);
        departure.append_option(
            a.anomaly
                .as_ref()
                .and_then(|d| d.departure.as_ref())
                .and_then(|d| serde_json::to_string(d).ok()),
        );
    }
    let updated: Vec<Option<i64>> = vec![None; n];
    RecordBatch::try_new(
        Table::Alerts.schema(),
        vec![
            Arc::new(TimestampNanosecondArray::from(time)),
            Arc::new(id.finish()),
            Arc::new(host.finish()),
            Arc::new(service.finish()),
            Arc::new(pid.finish()),
            Arc::new(comm.finish()),
            Arc::new(exe.finish()),
            Arc::new(container.finish()),
            Arc::new(source.finish()),
            Arc::new(rule.finish()),
            Arc::new(severity.finish()),
            Arc::new(severity_number.finish()),
            Arc::new(score.finish()),
            Arc::new(summary.finish()),
            Arc::new(expected.finish()),
            Arc::new(seen.finish()),
            Arc::new(count.finish()),
            Arc::new(TimestampNanosecondArray::from(last)),
            Arc::new(evidence.finish()),
            Arc::new(status.finish()),
            Arc::new(TimestampNanosecondArray::from(updated)),
            Arc::new(departure.finish()),
        ],
    )
}

/// Which alerts to read; every field narrows.
#[derive(Clone, Debug, Default)]
pub struct AlertFilter {
    /// At least this severity (OCSF `severity_id`, 1 info … 5 critical).
    pub min_severity: Option<u32>,
    pub service: Option<String>,
    /// The rule id or anomaly name (`shell-under-server`, `new_child`).
    pub kind: Option<String>,
    /// `rule` or `anomaly`.
    pub source: Option<String>,
    pub pid: Option<u32>,
    /// `open`, `acknowledged` or `resolved` (the latest status).
    pub status: Option<String>,
    pub limit: usize,
}

/// Which events to read; every field narrows.
#[derive(Clone, Debug, Default)]
pub struct SecurityEventFilter {
    /// `exec`, `file_open`, …
    pub kind: Option<String>,
    pub pid: Option<u32>,
    pub exe: Option<String>,
    pub service: Option<String>,
    /// Case-insensitive, anywhere in the path, executable, comm, arguments or addresses.
    pub text: Option<String>,
    pub limit: usize,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AlertRecord {
    pub id: String,
    pub time_unix_nano: String,
    pub time_ms: f64,
    pub last_time_ms: f64,
    pub host: String,
    pub service: String,
    pub pid: u32,
    pub comm: String,
    pub exe: String,
    pub container_id: String,
    /// `rule` or `anomaly`.
    pub source: String,
    /// The rule id or the anomaly's name.
    pub kind: String,
    pub severity: String,
    pub severity_number: u32,
    pub score: Option<f64>,
    pub summary: String,
    pub expected: String,
    pub seen: String,
    pub count: u64,
    /// `open`, `acknowledged` or `resolved`.
    pub status: String,
    /// When its status last changed; `None` while it is as raised.
    pub status_changed_ms: Option<f64>,
    /// For an anomaly, exactly what departed from the baseline
    /// (`model::security::BaselineDeparture` as JSON); `null` for rules.
    pub departure: Value,
    /// The events that raised it (`model::security::SecurityEvent` as JSON).
    pub evidence: Value,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SecurityEventRecord {
    pub time_unix_nano: String,
    pub time_ms: f64,
    pub host: String,
    pub service: String,
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub euid: u32,
    pub comm: String,
    pub exe: String,
    pub container_id: String,
    pub kind: String,
    pub path: String,
    pub args: Vec<String>,
    pub cwd: String,
    pub protocol: String,
    pub local: String,
    pub remote: String,
    pub result: i64,
    pub details: Value,
}

/// One bucket of a service's entry spans.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RedPoint {
    pub t: f64,
    /// Entry spans per second.
    pub rate: f64,
    pub errors: u64,
    pub error_rate: f64,
    pub p99_ms: Option<f64>,
}

fn json_col(o: &Map<String, Value>, k: &str) -> Value {
    serde_json::from_str(&s(o, k)).unwrap_or(Value::Null)
}

fn address(o: &Map<String, Value>, ip: &str, port: &str) -> String {
    let ip = s(o, ip);
    if ip.is_empty() {
        return String::new();
    }
    if ip.contains(':') {
        format!("[{ip}]:{}", u(o, port))
    } else {
        format!("{ip}:{}", u(o, port))
    }
}

fn alert_record(o: &Map<String, Value>) -> AlertRecord {
    let t = i(o, "__t");
    AlertRecord {
        id: s(o, "AlertId"),
        time_unix_nano: t.to_string(),
        time_ms: t as f64 / 1e6,
        last_time_ms: i(o, "__last") as f64 / 1e6,
        host: s(o, "HostName"),
        service: s(o, "ServiceName"),
        pid: u(o, "Pid") as u32,
        comm: s(o, "Comm"),
        exe: s(o, "Exe"),
        container_id: s(o, "ContainerId"),
        source: s(o, "Source"),
        kind: s(o, "RuleId"),
        severity: s(o, "Severity"),
        severity_number: u(o, "SeverityNumber") as u32,
        score: o.get("Score").and_then(Value::as_f64),
        summary: s(o, "Summary"),
        expected: s(o, "Expected"),
        seen: s(o, "Seen"),
        count: u(o, "Count"),
        status: s(o, "Status"),
        status_changed_ms: o
            .get("__updated")
            .and_then(Value::as_i64)
            .map(|t| t as f64 / 1e6),
        departure: json_col(o, "Departure"),
        evidence: json_col(o, "Evidence"),
    }
}

impl Store {
    /// Alerts raised in `range` that match `f`, newest first.
    pub async fn security_alerts(
        &self,
        f: &AlertFilter,
        range: TimeRange,
    ) -> Result<Vec<AlertRecord>, StoreError> {
        let mut c = vec![range.sql("Timestamp")];
        if let Some(v) = f.min_severity {
            c.push(format!("SeverityNumber >= {v}"));
        }
        if let Some(v) = &f.service {
            c.push(format!("ServiceName = {}", lit(v)));
        }
        if let Some(v) = &f.kind {
            c.push(format!("RuleId = {}", lit(v)));
        }
        if let Some(v) = &f.source {
            c.push(format!("Source = {}", lit(v)));
        }
        if let Some(v) = f.pid {
            c.push(format!("Pid = {v}"));
        }
        let status = match &f.status {
            Some(v) => format!(" AND Status = {}", lit(v)),
            None => String::new(),
        };
        let sql = format!(
            "{}{status} ORDER BY __t DESC, AlertId LIMIT {}",
            latest_alerts_sql(&c.join(" AND ")),
            f.limit.clamp(1, MAX_ROWS)
        );
        Ok(self.objects(&sql).await?.iter().map(alert_record).collect())
    }

    /// One alert by id (its latest version).
    pub async fn security_alert(&self, id: &str) -> Result<Option<AlertRecord>, StoreError> {
        let sql = latest_alerts_sql(&format!("AlertId = {}", lit(id)));
        Ok(self.objects(&sql).await?.first().map(alert_record))
    }

    /// Gives alert `id` the status `status` (one of [`ALERT_STATUSES`]) as of `now_unix_nano`:
    /// appends a new version of its row. `None` when there is no such alert.
    pub async fn set_alert_status(
        &self,
        id: &str,
        status: &str,
        now_unix_nano: u64,
    ) -> Result<Option<AlertRecord>, StoreError> {
        let columns: Vec<String> = Table::Alerts
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let sql = format!(
            "SELECT {} FROM ({}) LIMIT 1",
            columns.join(", "),
            latest_alerts_sql(&format!("AlertId = {}", lit(id)))
        );
        let Some(latest) = self.sql(&sql).await?.into_iter().find(|b| b.num_rows() > 0) else {
            return Ok(None);
        };
        let latest = latest.slice(0, 1);
        let schema = Table::Alerts.schema();
        let mut arrays = latest.columns().to_vec();
        for (i, f) in schema.fields().iter().enumerate() {
            match f.name().as_str() {
                "Status" => arrays[i] = Arc::new(StringArray::from(vec![status])),
                "UpdatedAt" => {
                    arrays[i] = Arc::new(TimestampNanosecondArray::from(vec![ts(now_unix_nano)]))
                }
                _ => {}
            }
        }
        let version = RecordBatch::try_new(schema, arrays)?;
        self.write_tables(vec![(Table::Alerts, version)], None)
            .await?;
        self.security_alert(id).await
    }

    /// Security events in `range` that match `f`, newest first.
    pub async fn security_events(
        &self,
        f: &SecurityEventFilter,
        range: TimeRange,
    ) -> Result<Vec<SecurityEventRecord>, StoreError> {
        let mut c = vec![range.sql("Timestamp")];
        if let Some(v) = &f.kind {
            c.push(format!("Kind = {}", lit(v)));
        }
        if let Some(v) = f.pid {
            c.push(format!("Pid = {v}"));
        }
        if let Some(v) = &f.exe {
            c.push(format!("Exe = {}", lit(v)));
        }
        if let Some(v) = &f.service {
            c.push(format!("ServiceName = {}", lit(v)));
        }
        if let Some(v) = &f.text {
            let like = format!("LIKE {} ESCAPE '\\'", like_anywhere(v));
            c.push(format!(
                "(lower(Path) {like} OR lower(Exe) {like} OR lower(Comm) {like} \
                 OR lower(array_to_string(Args, ' ')) {like} OR lower(RemoteAddress) {like} \
                 OR lower(ServiceName) {like})"
            ));
        }
        let sql = format!(
            "SELECT *, CAST(Timestamp AS BIGINT) AS __t FROM security_events WHERE {} \
             ORDER BY Timestamp DESC LIMIT {}",
            c.join(" AND "),
            f.limit.clamp(1, MAX_ROWS)
        );
        Ok(self
            .objects(&sql)
            .await?
            .iter()
            .map(|o| {
                let t = i(o, "__t");
                SecurityEventRecord {
                    time_unix_nano: t.to_string(),
                    time_ms: t as f64 / 1e6,
                    host: s(o, "HostName"),
                    service: s(o, "ServiceName"),
                    pid: u(o, "Pid") as u32,
                    tid: u(o, "Tid") as u32,
                    ppid: u(o, "Ppid") as u32,
                    uid: u(o, "Uid") as u32,
                    euid: u(o, "Euid") as u32,
                    comm: s(o, "Comm"),
                    exe: s(o, "Exe"),
                    container_id: s(o, "ContainerId"),
                    kind: s(o, "Kind"),
                    path: s(o, "Path"),
                    args: match o.get("Args") {
                        Some(Value::Array(a)) => a
                            .iter()
                            .map(|v| v.as_str().unwrap_or_default().to_string())
                            .collect(),
                        _ => Vec::new(),
                    },
                    cwd: s(o, "Cwd"),
                    protocol: s(o, "Protocol"),
                    local: address(o, "LocalAddress", "LocalPort"),
                    remote: address(o, "RemoteAddress", "RemotePort"),
                    result: i(o, "Result"),
                    details: json_col(o, "Details"),
                }
            })
            .collect())
    }

    /// Rate, errors and p99 of `service`'s entry spans in `buckets` equal steps over `range`
    /// (empty buckets included, with a rate of 0).
    pub async fn service_red_series(
        &self,
        service: &str,
        range: TimeRange,
        buckets: u32,
    ) -> Result<Vec<RedPoint>, StoreError> {
        let buckets = buckets.clamp(1, 1000) as i64;
        let step = ((range.end_ns - range.start_ns) / buckets).max(1);
        let sql = format!(
            "SELECT CAST((CAST(Timestamp AS BIGINT) - {start}) / {step} AS BIGINT) AS b, COUNT(*) AS n, \
             SUM(CASE WHEN StatusCode = 'STATUS_CODE_ERROR' THEN 1 ELSE 0 END) AS errors, \
             approx_percentile_cont(0.99) WITHIN GROUP (ORDER BY Duration) AS p99 \
             FROM otel_traces WHERE ServiceName = {svc} AND {range} \
             AND (SpanKind IN ('SPAN_KIND_SERVER', 'SPAN_KIND_CONSUMER') OR ParentSpanId = '') \
             GROUP BY 1",
            start = range.start_ns,
            svc = lit(service),
            range = range.sql("Timestamp"),
        );
        let mut points: Vec<RedPoint> = (0..buckets)
            .map(|b| RedPoint {
                t: (range.start_ns + b * step) as f64 / 1e6,
                rate: 0.0,
                errors: 0,
                error_rate: 0.0,
                p99_ms: None,
            })
            .collect();
        let secs = step as f64 / 1e9;
        for o in self.objects(&sql).await? {
            let Some(p) = usize::try_from(i(&o, "b"))
                .ok()
                .and_then(|b| points.get_mut(b))
            else {
                continue;
            };
            let n = u(&o, "n");
            p.rate = n as f64 / secs;
            p.errors = u(&o, "errors");
            p.error_rate = if n > 0 {
                p.errors as f64 / n as f64
            } else {
                0.0
            };
            p.p99_ms = o.get("p99").and_then(Value::as_f64).map(|ns| ns / 1e6);
        }
        Ok(points)
    }
}
