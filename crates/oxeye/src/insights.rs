//! The insights job of `oxeye up`: every `--insight-interval` it reads the points stored since
//! its last run, for every metric series (gauges, sums — monotonic cumulative ones as their rate
//! — and histograms as their mean) and every service's RED series derived from its entry spans
//! (request rate, error ratio, p99 latency per bucket), feeds each series' streaming detector in
//! time order, and writes the anomaly episodes it finds to the `anomalies` table: a row when an
//! episode opens, when it grows and when it closes (readers keep the latest row of each id).
//!
//! Detector state is a fixed size per series, kept in memory and checkpointed to
//! `<data>/insights/state.json` (with the point up to which each source was read), so a restart
//! resumes where the checkpoint was taken: the points after it are read again, and the anomalies
//! they give have the same ids as before.
//!
//! Alerts: an anomaly whose severity reaches `alerts.anomaly_severity` and a resource predicted to
//! reach its limit within `alerts.saturation_within` (with at least `saturation_confidence`)
//! raise an alert like the security sensor's: a row in `alerts` (source `anomaly`, kind
//! `insight-anomaly` or `saturation`) and, when sinks are configured, a message to each SIEM sink.
//! Each anomaly alerts once per severity it reaches; each resource once per level (warn,
//! critical), again after `saturation_within` if still predicted, and anew after it recovered.

use std::collections::BTreeMap;
#[cfg(test)]
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use insight::saturation::{SATURATING_METRICS, utilization_limit};
use insight::{
    Detector, EpisodeTracker, SaturationAlert, SaturationLevel, SeasonalDetector, TimeToSaturation,
};
use model::Batch;
use model::anomaly::{AnomalyRecord, SOURCE_METRIC, SOURCE_RED};
use model::security::{
    Alert, AlertSource, AnomalyDetail, SecurityBatch, SecurityProcess, Severity,
};
use serde::{Deserialize, Serialize};
use store::Store;
use store::insights::{StoredPoint, series_id};
use store::read::TimeRange;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;

/// Points of a series scored before episodes are tracked, beyond the detector's warm-up.
const SETTLE_POINTS: u64 = 100;

/// Names of the RED series derived from spans.
pub const RED_RATE: &str = "red.rate";
pub const RED_ERROR_RATIO: &str = "red.error_ratio";
pub const RED_P99_MS: &str = "red.p99_ms";

#[derive(Clone, Debug)]
pub struct InsightsConfig {
    /// How often the job runs (0 turns it off).
    pub interval: Duration,
    /// Width of the RED buckets.
    pub bucket_ms: i64,
    /// How late a point may arrive and still be scored (each run reads this far back).
    pub lateness_ms: i64,
    /// On a first start, how much history is read.
    pub backfill_ms: i64,
    /// Series followed at most (about 14 KB each); points of further series are skipped.
    pub max_series: usize,
    /// The checkpoint is written every this many runs (and at shutdown).
    pub checkpoint_every: u32,
    /// When anomalies and saturation forecasts raise alerts.
    pub alerts: AlertSettings,
    /// The host named in the alerts.
    pub host: String,
}

/// When the job raises alerts (config `insights.alerts`).
#[derive(Clone, Debug, PartialEq)]
pub struct AlertSettings {
    /// Anomalies of at least this severity (`minor`, `major` or `critical`) raise an alert;
    /// `None` turns anomaly alerts off.
    pub anomaly_severity: Option<String>,
    /// A resource whose limit is forecast to be reached within this raises an alert (critical
    /// within a quarter of it); zero turns saturation alerts off.
    pub saturation_within: Duration,
    /// …when the forecast gives at least this probability that the limit is reached.
    pub saturation_confidence: f64,
    /// How often the saturation forecasts are made.
    pub saturation_every: Duration,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            anomaly_severity: Some("major".into()),
            saturation_within: Duration::from_secs(86_400),
            saturation_confidence: 0.5,
            saturation_every: Duration::from_secs(300),
        }
    }
}

/// The severities of anomalies, lowest first.
pub const ANOMALY_SEVERITIES: [&str; 3] = ["minor", "major", "critical"];

fn anomaly_rank(severity: &str) -> usize {
    ANOMALY_SEVERITIES
        .iter()
        .position(|s| *s == severity)
        .map_or(0, |i| i + 1)
}

impl Default for InsightsConfig {
    fn default() -> Self {
        InsightsConfig {
            interval: Duration::from_secs(30),
            bucket_ms: MINUTE_MS,
            lateness_ms: 2 * MINUTE_MS,
            backfill_ms: 6 * HOUR_MS,
            max_series: 5000,
            checkpoint_every: 10,
            alerts: AlertSettings::default(),
            host: String::new(),
        }
    }
}

/// One series being followed: its detector and episode tracker, and what the job needs to turn
/// the next stored point into a value.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SeriesState {
    service: String,
    metric: String,
    attributes: Vec<(String, String)>,
    source: String,
    detector: SeasonalDetector,
    tracker: EpisodeTracker,
    /// The newest point scored; older points are late and skipped.
    last_ms: i64,
    /// Points scored so far; episodes are tracked only once the detector has settled.
    #[serde(default)]
    scored: u64,
    /// For a monotonic cumulative sum, the previous raw point: (time, value, start time).
    counter: Option<(i64, f64, i64)>,
    /// The end of the open episode as last written, so an unchanged episode is not rewritten.
    written_end_ms: Option<i64>,
}

impl SeriesState {
    fn new(service: &str, metric: &str, attributes: Vec<(String, String)>, source: &str) -> Self {
        let settings = insight::Settings::default();
        SeriesState {
            service: service.to_string(),
            metric: metric.to_string(),
            attributes,
            source: source.to_string(),
            detector: SeasonalDetector::new(settings),
            // Opens at the detector's own alarm level, stays open while scores are a quarter
            // of it or values are outside the expected band, closes after 10 quiet points.
            tracker: EpisodeTracker::new(settings.alarm_score, settings.alarm_score / 4.0, 10)
                .while_outside_band(),
            last_ms: i64::MIN,
            scored: 0,
            counter: None,
            written_end_ms: None,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Checkpoint {
    /// Metric points up to this time (ms) were read.
    metrics_until_ms: i64,
    /// RED buckets before this time (ms) were read.
    red_until_ms: i64,
    /// Keyed by series id.
    series: BTreeMap<String, SeriesState>,
    /// Per service, the last RED bucket that had spans.
    red_seen_ms: BTreeMap<String, i64>,
    /// Per open anomaly id, the highest severity rank alerted so far.
    #[serde(default)]
    alerted: BTreeMap<String, usize>,
    /// Per saturating series id, the level last alerted and when.
    #[serde(default)]
    saturation_alerted: BTreeMap<String, (SaturationLevel, i64)>,
    /// When the saturation forecasts were last made.
    #[serde(default)]
    saturation_checked_ms: i64,
}

/// What one run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    pub points: u64,
    pub series: usize,
    pub anomaly_rows: usize,
    pub skipped_series: u64,
    pub alerts: usize,
}

pub struct InsightsJob {
    store: Store,
    config: InsightsConfig,
    state: Checkpoint,
    path: PathBuf,
    runs: u32,
    /// Where alerts go besides the store: the SIEM sinks' forwarder.
    outlet: Option<std::sync::mpsc::Sender<Vec<Alert>>>,
}

fn anomaly_id(series: &str, start_ms: i64) -> String {
    series_id(series, &start_ms.to_string(), [])
}

impl InsightsJob {
    /// The job for `store`, resumed from the checkpoint in `data_dir` when there is one. A
    /// checkpoint that cannot be read is set aside (renamed `.bad`) and the job starts afresh.
    pub fn open(store: Store, config: InsightsConfig, data_dir: &Path) -> Self {
        let path = data_dir.join("insights").join("state.json");
        let state = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Checkpoint>(&bytes) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "insights: unreadable checkpoint set aside; starting afresh");
                    let _ = std::fs::rename(&path, path.with_extension("json.bad"));
                    Checkpoint::default()
                }
            },
            Err(_) => Checkpoint::default(),
        };
        InsightsJob {
            store,
            config,
            state,
            path,
            runs: 0,
            outlet: None,
        }
    }

    /// Also sends the alerts raised to `outlet` (the SIEM sinks' forwarder).
    pub fn with_outlet(mut self, outlet: std::sync::mpsc::Sender<Vec<Alert>>) -> Self {
        self.outlet = Some(outlet);
        self
    }

    /// Series followed.
    pub fn series(&self) -> usize {
        self.state.series.len()
    }

    /// Reads what was stored up to `now_ms`, scores it and writes the anomalies it finds.
    pub async fn run_once(&mut self, now_ms: i64) -> anyhow::Result<RunStats> {
        let mut stats = RunStats::default();
        let mut touched: Vec<String> = Vec::new();
        let mut closed: Vec<AnomalyRecord> = Vec::new();

        // Metric series, in chunks of at most an hour so a long catch-up stays bounded.
        let mut from = if self.state.metrics_until_ms == 0 {
            now_ms - self.config.backfill_ms
        } else {
            self.state.metrics_until_ms - self.config.lateness_ms
        };
        while from < now_ms {
            let to = (from + HOUR_MS).min(now_ms);
            let range = TimeRange {
                start_ns: from.saturating_mul(1_000_000),
                end_ns: to.saturating_mul(1_000_000),
            };
            let points = self.store.series_points(range, None).await?;
            for p in points {
                self.metric_point(p, now_ms, &mut stats, &mut touched, &mut closed);
            }
            from = to;
        }
        self.state.metrics_until_ms = now_ms;

        // RED series: whole buckets that ended `lateness` ago.
        let bucket = self.config.bucket_ms.max(1000);
        let until = (now_ms - self.config.lateness_ms).div_euclid(bucket) * bucket;
        let mut start = if self.state.red_until_ms == 0 {
            (now_ms - self.config.backfill_ms).div_euclid(bucket) * bucket
        } else {
            self.state.red_until_ms
        };
        while start < until {
            let end = (start + 60 * bucket).min(until);
            let range = TimeRange {
                start_ns: start.saturating_mul(1_000_000),
                end_ns: end.saturating_mul(1_000_000),
            };
            let rows = self.store.red_buckets(range, bucket).await?;
            let mut by_bucket: BTreeMap<i64, Vec<_>> = BTreeMap::new();
            for r in rows {
                by_bucket.entry(r.start_ms).or_default().push(r);
            }
            let mut b = start;
            while b < end {
                let rows = by_bucket.remove(&b).unwrap_or_default();
                let mut present: Vec<&str> = Vec::with_capacity(rows.len());
                // The value stands for the bucket's middle.
                let t = b + bucket / 2;
                for r in &rows {
                    present.push(&r.service);
                    self.state.red_seen_ms.insert(r.service.clone(), b);
                    let rate = r.requests as f64 * 1000.0 / bucket as f64;
                    let ratio = if r.requests > 0 {
                        r.errors as f64 / r.requests as f64
                    } else {
                        f64::NAN
                    };
                    let values = [
                        (RED_RATE, rate),
                        (RED_ERROR_RATIO, ratio),
                        (RED_P99_MS, r.p99_ms.unwrap_or(f64::NAN)),
                    ];
                    for (metric, v) in values {
                        self.observe(
                            (&r.service, metric, Vec::new(), SOURCE_RED),
                            t,
                            v,
                            now_ms,
                            &mut stats,
                            &mut touched,
                            &mut closed,
                        );
                    }
                }
                // A service that had spans in the last hour and none in this bucket: rate 0.
                let quiet: Vec<String> = self
                    .state
                    .red_seen_ms
                    .iter()
                    .filter(|(svc, seen)| b - **seen <= HOUR_MS && !present.contains(&svc.as_str()))
                    .map(|(svc, _)| svc.clone())
                    .collect();
                for svc in quiet {
                    self.observe(
                        (&svc, RED_RATE, Vec::new(), SOURCE_RED),
                        t,
                        0.0,
                        now_ms,
                        &mut stats,
                        &mut touched,
                        &mut closed,
                    );
                }
                b += bucket;
            }
            start = end;
        }
        if until > self.state.red_until_ms {
            self.state.red_until_ms = until;
        }

        // Rows: every episode that closed, and every open one that grew.
        let mut rows = closed;
        touched.sort();
        touched.dedup();
        for id in touched {
            let Some(st) = self.state.series.get_mut(&id) else {
                continue;
            };
            if let Some(e) = st.tracker.open_episode()
                && st.written_end_ms != Some(e.end_ms)
            {
                let e = e.clone();
                st.written_end_ms = Some(e.end_ms);
                rows.push(record(&id, st, &e, true, now_ms));
            }
        }
        stats.anomaly_rows = rows.len();
        let mut alerts = self.anomaly_alerts(&rows);
        if !rows.is_empty() {
            self.store.write(&Batch::Anomalies(rows)).await?;
        }
        let every = self.config.alerts.saturation_every.as_millis() as i64;
        if !self.config.alerts.saturation_within.is_zero()
            && now_ms - self.state.saturation_checked_ms >= every
        {
            self.state.saturation_checked_ms = now_ms;
            alerts.extend(self.saturation_alerts(now_ms).await?);
        }
        stats.alerts = alerts.len();
        if !alerts.is_empty() {
            self.store
                .write(&Batch::Security(SecurityBatch {
                    events: Vec::new(),
                    alerts: alerts.clone(),
                }))
                .await?;
            if let Some(tx) = &self.outlet {
                let _ = tx.send(alerts);
            }
        }
        stats.series = self.state.series.len();
        self.runs += 1;
        if self
            .runs
            .is_multiple_of(self.config.checkpoint_every.max(1))
        {
            self.checkpoint()?;
        }
        Ok(stats)
    }

    fn metric_point(
        &mut self,
        p: StoredPoint,
        now_ms: i64,
        stats: &mut RunStats,
        touched: &mut Vec<String>,
        closed: &mut Vec<AnomalyRecord>,
    ) {
        if !p.cumulative {
            self.observe_id(
                p.series_id,
                (&p.service, &p.metric, p.attributes, SOURCE_METRIC),
                p.t_ms,
                p.value,
                now_ms,
                stats,
                touched,
                closed,
            );
            return;
        }
        // A counter: score its rate per second between consecutive points of one run.
        let Some(st) = self.follow(
            &p.series_id,
            (&p.service, &p.metric, p.attributes, SOURCE_METRIC),
            stats,
        ) else {
            return;
        };
        if p.t_ms <= st.last_ms || st.counter.is_some_and(|(t, _, _)| p.t_ms <= t) {
            return;
        }
        let previous = st.counter.replace((p.t_ms, p.value, p.start_ms));
        match previous {
            Some((t, v, start)) if start == p.start_ms && p.value >= v => {
                let rate = (p.value - v) * 1000.0 / (p.t_ms - t) as f64;
                self.observe_id(
                    p.series_id,
                    (&p.service, &p.metric, Vec::new(), SOURCE_METRIC),
                    p.t_ms,
                    rate,
                    now_ms,
                    stats,
                    touched,
                    closed,
                );
            }
            // The first point, or a reset: nothing to score yet.
            _ => {}
        }
    }

    /// The alerts raised by this run's anomaly rows: each anomaly once per severity it reaches
    /// at or above the configured one.
    fn anomaly_alerts(&mut self, rows: &[AnomalyRecord]) -> Vec<Alert> {
        let Some(min) = self
            .config
            .alerts
            .anomaly_severity
            .as_deref()
            .map(anomaly_rank)
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for r in rows {
            let rank = anomaly_rank(&r.severity);
            let done = self.state.alerted.get(&r.id).copied().unwrap_or(0);
            if rank >= min && rank > done {
                let severity = match rank {
                    3 => Severity::High,
                    2 => Severity::Medium,
                    _ => Severity::Low,
                };
                let unit = if r.metric_name.ends_with("_ms") {
                    " ms"
                } else {
                    ""
                };
                let v = |x: f64| format!("{}{unit}", round_sig(x));
                let summary = format!(
                    "{} anomaly on {} of {}: {} outside the expected {}..{}",
                    r.severity,
                    r.metric_name,
                    r.service_name,
                    v(r.peak_value),
                    v(r.expected_low),
                    v(r.expected_high)
                );
                let detail = AnomalyDetail {
                    score: r.score,
                    expected: format!("{}..{}", v(r.expected_low), v(r.expected_high)),
                    seen: v(r.peak_value),
                    departure: None,
                };
                let id = format!("{}-insight-{}-{}", self.config.host, r.id, r.severity);
                out.push(self.alert(
                    id,
                    r.peak_unix_nano,
                    severity,
                    "insight-anomaly",
                    &r.service_name,
                    summary,
                    detail,
                ));
            }
            if r.open {
                self.state.alerted.insert(r.id.clone(), rank.max(done));
            } else {
                self.state.alerted.remove(&r.id);
            }
        }
        out
    }

    /// Forecasts every utilisation series of the last day and alerts on those predicted to
    /// reach their limit within the horizon.
    async fn saturation_alerts(&mut self, now_ms: i64) -> anyhow::Result<Vec<Alert>> {
        let a = &self.config.alerts;
        let horizon = a.saturation_within.as_millis() as i64;
        let decide = SaturationAlert {
            warn_within_ms: horizon,
            critical_within_ms: horizon / 4,
        };
        let confidence = a.saturation_confidence;
        let range = TimeRange {
            start_ns: (now_ms - 24 * HOUR_MS).saturating_mul(1_000_000),
            end_ns: now_ms.saturating_mul(1_000_000),
        };
        let mut out = Vec::new();
        for name in SATURATING_METRICS {
            let Some(m) = self
                .store
                .metric_points(name, None, &[], Some(range), true)
                .await?
            else {
                continue;
            };
            let limit = utilization_limit(&m.unit);
            for series in m.series {
                let points: Vec<(i64, f64)> = series.finite_points();
                let Some(last) = points.last().copied() else {
                    continue;
                };
                let crossing = TimeToSaturation::estimate(&points, limit, horizon)
                    .filter(|c| c.confidence >= confidence);
                let level = decide.decide(last.0, crossing.as_ref());
                let Some(c) = crossing.filter(|_| level != SaturationLevel::Ok) else {
                    self.state.saturation_alerted.remove(&series.series_id);
                    continue;
                };
                let previous = self
                    .state
                    .saturation_alerted
                    .get(&series.series_id)
                    .copied();
                let due = match previous {
                    None => true,
                    Some((l, at)) => level > l || now_ms - at >= horizon,
                };
                if !due {
                    continue;
                }
                self.state
                    .saturation_alerted
                    .insert(series.series_id.clone(), (level, now_ms));
                let in_ms = (c.at_ms - last.0).max(0);
                let what = if series.attributes.is_empty() {
                    name.to_string()
                } else {
                    let attrs: Vec<String> = series
                        .attributes
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    format!("{name}{{{}}}", attrs.join(","))
                };
                let summary = format!(
                    "{what} of {} is forecast to reach its limit {} in {} (earliest {}, {:.0} % sure)",
                    series.service,
                    round_sig(limit),
                    human_ms(in_ms),
                    human_ms((c.earliest_ms - last.0).max(0)),
                    c.confidence * 100.0
                );
                let detail = AnomalyDetail {
                    score: c.confidence,
                    expected: format!("below {}", round_sig(limit)),
                    seen: format!("{} now, limit in {}", round_sig(last.1), human_ms(in_ms)),
                    departure: None,
                };
                let severity = if level == SaturationLevel::Critical {
                    Severity::High
                } else {
                    Severity::Medium
                };
                let id = format!(
                    "{}-saturation-{}-{:?}-{:x}",
                    self.config.host, series.series_id, level, now_ms
                );
                out.push(self.alert(
                    id,
                    (now_ms.max(0) as u64).saturating_mul(1_000_000),
                    severity,
                    "saturation",
                    &series.service,
                    summary,
                    detail,
                ));
            }
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn alert(
        &self,
        id: String,
        time_unix_nano: u64,
        severity: Severity,
        kind: &str,
        service: &str,
        summary: String,
        detail: AnomalyDetail,
    ) -> Alert {
        Alert {
            id,
            time_unix_nano,
            severity,
            source: AlertSource::Anomaly { name: kind.into() },
            summary,
            events: Vec::new(),
            process: SecurityProcess {
                time_unix_nano,
                pid: 0,
                tid: 0,
                ppid: 0,
                uid: 0,
                gid: 0,
                euid: 0,
                comm: String::new(),
                cgroup_id: 0,
                container_id: None,
                service_name: (!service.is_empty()).then(|| service.to_string()),
                host: self.config.host.clone(),
            },
            exe: None,
            anomaly: Some(detail),
            count: 1,
            last_time_unix_nano: time_unix_nano,
        }
    }

    /// The state of series `id`, created on first sight unless the series budget is spent.
    fn follow(
        &mut self,
        id: &str,
        meta: (&str, &str, Vec<(String, String)>, &str),
        stats: &mut RunStats,
    ) -> Option<&mut SeriesState> {
        if !self.state.series.contains_key(id) {
            if self.state.series.len() >= self.config.max_series {
                stats.skipped_series += 1;
                return None;
            }
            let (service, metric, attributes, source) = meta;
            self.state.series.insert(
                id.to_string(),
                SeriesState::new(service, metric, attributes, source),
            );
        }
        self.state.series.get_mut(id)
    }

    #[allow(clippy::too_many_arguments)]
    fn observe(
        &mut self,
        meta: (&str, &str, Vec<(String, String)>, &str),
        t_ms: i64,
        value: f64,
        now_ms: i64,
        stats: &mut RunStats,
        touched: &mut Vec<String>,
        closed: &mut Vec<AnomalyRecord>,
    ) {
        let id = series_id(
            meta.1,
            meta.0,
            meta.2.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        );
        self.observe_id(id, meta, t_ms, value, now_ms, stats, touched, closed);
    }

    #[allow(clippy::too_many_arguments)]
    fn observe_id(
        &mut self,
        id: String,
        meta: (&str, &str, Vec<(String, String)>, &str),
        t_ms: i64,
        value: f64,
        now_ms: i64,
        stats: &mut RunStats,
        touched: &mut Vec<String>,
        closed: &mut Vec<AnomalyRecord>,
    ) {
        let Some(st) = self.follow(&id, meta, stats) else {
            return;
        };
        if t_ms <= st.last_ms {
            return;
        }
        st.last_ms = t_ms;
        stats.points += 1;
        let o = st.detector.observe(t_ms, value);
        if !value.is_finite() {
            return;
        }
        st.scored += 1;
        // Its error tails are still thin just after the detector's warm-up: an episode opened
        // then is mostly the detector learning, not the series misbehaving.
        if st.scored <= u64::from(insight::Settings::default().warmup_points) + SETTLE_POINTS {
            return;
        }
        if let Some(e) = st.tracker.push(t_ms, value, &o) {
            st.written_end_ms = None;
            closed.push(record(&id, st, &e, false, now_ms));
        }
        if st.tracker.open_episode().is_some() {
            touched.push(id);
        }
    }

    /// Writes the state atomically (temporary file, fsync, rename).
    pub fn checkpoint(&self) -> anyhow::Result<()> {
        use std::io::Write;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(&self.state)?;
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("cannot replace {}", self.path.display()))?;
        Ok(())
    }
}

fn record(
    id: &str,
    st: &SeriesState,
    e: &insight::Episode,
    open: bool,
    now_ms: i64,
) -> AnomalyRecord {
    let ns = |ms: i64| (ms.max(0) as u64).saturating_mul(1_000_000);
    AnomalyRecord {
        id: anomaly_id(id, e.start_ms),
        updated_unix_nano: ns(now_ms),
        start_unix_nano: ns(e.start_ms),
        end_unix_nano: ns(e.end_ms),
        peak_unix_nano: ns(e.peak_ms),
        open,
        service_name: st.service.clone(),
        metric_name: st.metric.clone(),
        series_id: id.to_string(),
        attributes: st.attributes.clone(),
        source: st.source.clone(),
        peak_value: e.peak_value,
        expected_low: e.expected_low,
        expected_high: e.expected_high,
        score: e.severity,
        severity: AnomalyRecord::severity_of(e.severity).to_string(),
        points: e.points,
    }
}

/// One line for the startup banner: what raises alerts and where they go.
pub fn describe_alerts(a: &AlertSettings, sinks: usize) -> String {
    let anomalies = match &a.anomaly_severity {
        Some(s) => format!("on {s}+ anomalies"),
        None => "not on anomalies".to_string(),
    };
    let saturation = if a.saturation_within.is_zero() {
        "no saturation forecasts".to_string()
    } else {
        format!(
            "on limits forecast within {}",
            human_ms(a.saturation_within.as_millis() as i64)
        )
    };
    format!("{anomalies}, {saturation}, to the store and {sinks} sink(s)")
}

/// Three significant digits, without trailing zeros.
fn round_sig(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let digits = (2 - x.abs().log10().floor() as i32).max(0) as usize;
    let text = format!("{x:.digits$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

fn human_ms(ms: i64) -> String {
    let m = ms / MINUTE_MS;
    match m {
        m if m >= 2 * 24 * 60 => format!("{:.1} d", m as f64 / 1440.0),
        m if m >= 120 => format!("{:.1} h", m as f64 / 60.0),
        m => format!("{m} min"),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Runs the job every `interval` until `stop` turns true; checkpoints on the way out.
pub async fn run(mut job: InsightsJob, mut stop: tokio::sync::watch::Receiver<bool>) {
    // The first run one interval after start: data sent right after start is read by it.
    let period = job.config.interval;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|v| *v) => break,
        }
        match job.run_once(now_ms()).await {
            Ok(s) => {
                failing = false;
                tracing::debug!(
                    points = s.points,
                    series = s.series,
                    anomalies = s.anomaly_rows,
                    "insights run"
                );
                if s.skipped_series > 0 {
                    tracing::warn!(
                        skipped = s.skipped_series,
                        max = job.config.max_series,
                        "insights: series budget spent; points of further series not scored"
                    );
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "insights run failed; retrying next interval");
                }
                failing = true;
            }
        }
    }
    if let Err(e) = job.checkpoint() {
        tracing::warn!(error = %e, "insights: cannot write the checkpoint");
    }
}

/// For tests and `HashMap` users: the series ids of every followed series, by metric.
#[cfg(test)]
fn series_by_metric(job: &InsightsJob) -> HashMap<String, Vec<String>> {
    let mut m: HashMap<String, Vec<String>> = HashMap::new();
    for (id, st) in &job.state.series {
        m.entry(st.metric.clone()).or_default().push(id.clone());
    }
    m
}

#[cfg(test)]
#[path = "insights_tests.rs"]
mod tests;
