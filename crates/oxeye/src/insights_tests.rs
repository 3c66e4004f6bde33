//! The insights job against a real store: injected anomalies are found and stored, clean series
//! give none, RED series come from spans, and a restart resumes from the checkpoint.
#![cfg(test)]

use std::sync::Arc;

use insight::testing::{Noise, Seasonal};
use model::{
    Batch, Group, Metric, MetricPoint, PointValue, Resource, Scope, Span, SpanId, SpanKind,
    StatusCode, TraceId,
};
use store::insights::AnomalyFilter;
use store::{Store, StoreConfig};

use super::*;

const STEP: i64 = 5 * MINUTE_MS;
const DAY: i64 = 24 * HOUR_MS;
const T0: i64 = 1_790_000_000_000 - 1_790_000_000_000 % DAY;

/// `days` of 5-minute points: level 100, a daily cycle of amplitude 10, unit noise.
fn seasonal(seed: u64, days: i64) -> Vec<(i64, f64)> {
    Seasonal {
        start_ms: T0,
        step_ms: STEP,
        points: (days * DAY / STEP) as usize,
        level: 100.0,
        amplitude: 10.0,
        sigma: 1.0,
    }
    .generate(seed)
}

fn resource(service: &str) -> Arc<Resource> {
    Arc::new(Resource {
        attributes: vec![("service.name".into(), service.into())],
        schema_url: String::new(),
    })
}

fn gauge(service: &str, name: &str, points: &[(i64, f64)]) -> Batch {
    Batch::Metrics(vec![Group {
        resource: resource(service),
        scope: Arc::new(Scope::default()),
        items: vec![Metric {
            name: name.into(),
            description: String::new(),
            unit: "1".into(),
            points: points
                .iter()
                .map(|&(t, v)| MetricPoint {
                    attributes: vec![("queue".into(), "orders".into())],
                    start_time_unix_nano: 0,
                    time_unix_nano: t as u64 * 1_000_000,
                    flags: 0,
                    value: PointValue::Gauge(v),
                })
                .collect(),
        }],
    }])
}

/// The test data is dated in the past: no retention, or a flush would drop it.
fn open_store(dir: &std::path::Path) -> Store {
    let config = StoreConfig {
        retention_age: None,
        ..StoreConfig::default()
    };
    Store::open(dir, config).expect("store opens")
}

fn config(backfill_ms: i64) -> InsightsConfig {
    InsightsConfig {
        backfill_ms,
        checkpoint_every: 1,
        ..InsightsConfig::default()
    }
}

async fn anomalies(store: &Store, service: &str) -> Vec<store::insights::Anomaly> {
    store
        .anomalies(&AnomalyFilter {
            service: Some(service.into()),
            ..AnomalyFilter::default()
        })
        .await
        .expect("anomalies read")
}

#[tokio::test]
async fn a_spike_and_a_level_shift_are_found_and_a_clean_series_gives_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path());
    let days = 8;
    let onset = T0 + 7 * DAY + 7 * HOUR_MS;
    let mut spike = seasonal(1, days);
    let i = ((onset - T0) / STEP) as usize;
    spike[i].1 += 25.0;
    let mut shift = seasonal(2, days);
    for p in &mut shift[i..] {
        p.1 -= 15.0;
    }
    for (svc, series) in [
        ("spiky", &spike),
        ("shifty", &shift),
        ("clean", &seasonal(3, days)),
    ] {
        store
            .write(&gauge(svc, "queue.depth", series))
            .await
            .expect("write");
    }
    let now = T0 + days * DAY;
    let mut job = InsightsJob::open(store.clone(), config(days * DAY + HOUR_MS), dir.path());
    let stats = job.run_once(now).await.expect("run");
    assert_eq!(stats.points, 3 * spike.len() as u64);

    let found = anomalies(&store, "spiky").await;
    assert!(
        found
            .iter()
            .any(|a| a.start_ms <= onset && onset <= a.end_ms && a.metric == "queue.depth"),
        "spike at {onset} not found: {found:?}"
    );
    let a = found
        .iter()
        .find(|a| a.start_ms <= onset && onset <= a.end_ms)
        .expect("the spike's anomaly");
    assert_eq!(a.peak_ms, onset);
    assert!(a.peak_value > a.expected_high, "{a:?}");
    assert_eq!(a.attributes["queue"], "orders");
    assert_eq!(a.source, "metric");

    let found = anomalies(&store, "shifty").await;
    assert!(
        found
            .iter()
            .any(|a| a.start_ms >= onset && a.start_ms <= onset + 12 * STEP),
        "level shift at {onset} not found: {found:?}"
    );
    let clean = anomalies(&store, "clean").await;
    assert!(clean.is_empty(), "anomalies on a clean series: {clean:?}");

    // The same series, one id: what the explorer and the anomaly agree on.
    let series = store
        .metric_points("queue.depth", Some("spiky"), &[], None, false)
        .await
        .expect("read")
        .expect("metric");
    assert_eq!(series.series[0].series_id, a.series_id);
    // The table is there for SQL too.
    let n = store
        .sql_json("SELECT count(*) AS n FROM anomalies WHERE ServiceName = 'spiky'")
        .await
        .expect("sql");
    assert!(serde_json::to_string(&n).expect("json").contains("\"n\""));
}

fn span(service_trace: u64, i: u64, start_ms: i64, duration_ms: f64, error: bool) -> Span {
    let mut trace = [0u8; 16];
    trace[..8].copy_from_slice(&service_trace.to_be_bytes());
    trace[8..].copy_from_slice(&i.to_be_bytes());
    let start = start_ms as u64 * 1_000_000;
    Span {
        trace_id: TraceId(trace),
        span_id: SpanId((i + 1).to_be_bytes()),
        parent_span_id: None,
        trace_state: String::new(),
        name: "GET /".into(),
        kind: SpanKind::Server,
        start_unix_nano: start,
        end_unix_nano: start + (duration_ms * 1e6) as u64,
        attributes: Vec::new(),
        events: Vec::new(),
        links: Vec::new(),
        status_code: if error {
            StatusCode::Error
        } else {
            StatusCode::Ok
        },
        status_message: String::new(),
    }
}

#[tokio::test]
async fn red_latency_anomaly_from_spans_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let onset = T0 + 5 * HOUR_MS;
    let minutes = 6 * 60;
    {
        let store = open_store(dir.path());
        let mut spans = Vec::new();
        let mut noise = Noise::new(7);
        for m in 0..minutes {
            let at = T0 + m * MINUTE_MS;
            for k in 0..20 {
                let slow = at >= onset && at < onset + 10 * MINUTE_MS;
                let ms = if slow {
                    400.0
                } else {
                    10.0 + 2.0 * noise.uniform()
                };
                spans.push(span(1, (m * 20 + k) as u64, at + k * 1000, ms, false));
            }
        }
        store
            .write(&Batch::Spans(vec![Group {
                resource: resource("api"),
                scope: Arc::new(Scope::default()),
                items: spans,
            }]))
            .await
            .expect("write");
        // Half the history, then a restart.
        let mut job = InsightsJob::open(store.clone(), config(7 * HOUR_MS), dir.path());
        job.run_once(T0 + 3 * HOUR_MS).await.expect("run");
        assert!(anomalies(&store, "api").await.is_empty());
        assert_eq!(
            series_by_metric(&job).get(RED_P99_MS).map(Vec::len),
            Some(1)
        );
        // The checkpoint holds a fixed-size state per series, whatever the history.
        let bytes = std::fs::metadata(dir.path().join("insights").join("state.json"))
            .expect("checkpoint written")
            .len();
        let per_series = bytes / job.series() as u64;
        eprintln!("checkpoint: {bytes} bytes for {} series", job.series());
        assert!(per_series < 64 * 1024, "{per_series} bytes per series");
        store.close().await;
    }
    let store = open_store(dir.path());
    let mut job = InsightsJob::open(store.clone(), config(7 * HOUR_MS), dir.path());
    assert_eq!(job.series(), 3, "the checkpoint holds rate, errors and p99");
    let stats = job.run_once(T0 + minutes * MINUTE_MS).await.expect("run");
    // Resumed: only the buckets after the first run are read (no re-learning from the start).
    assert!(
        stats.points <= 3 * 3 * 60 + 3,
        "{} points scored after the restart",
        stats.points
    );
    let found = anomalies(&store, "api").await;
    let p99: Vec<_> = found.iter().filter(|a| a.metric == RED_P99_MS).collect();
    assert!(
        p99.iter()
            .any(|a| a.start_ms >= onset && a.start_ms <= onset + 2 * MINUTE_MS),
        "no p99 anomaly at {onset}: {found:?}"
    );
    assert!(p99.iter().all(|a| a.source == "red"));
}

/// `hours` of 5-minute points ending at `end`, from `from` rising by `per_hour`, with a little
/// noise.
fn ramp(seed: u64, end: i64, hours: i64, from: f64, per_hour: f64) -> Vec<(i64, f64)> {
    let mut noise = Noise::new(seed);
    let n = hours * HOUR_MS / STEP;
    (0..n)
        .map(|i| {
            let t = end - (n - i) * STEP;
            let v = from + per_hour * (i * STEP) as f64 / HOUR_MS as f64 + 0.002 * noise.normal();
            (t, v)
        })
        .collect()
}

#[tokio::test]
async fn anomalies_and_a_coming_saturation_raise_alerts_in_the_store_and_the_sinks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path());
    let days = 8;
    let onset = T0 + 7 * DAY + 7 * HOUR_MS;
    let mut spike = seasonal(1, days);
    spike[((onset - T0) / STEP) as usize].1 += 25.0;
    store
        .write(&gauge("spiky", "queue.depth", &spike))
        .await
        .expect("write");
    store
        .write(&gauge("clean", "queue.depth", &seasonal(3, days)))
        .await
        .expect("write");
    let now = T0 + days * DAY;
    // A disk at 0.60 twelve hours ago filling by 0.02 an hour: full in about 8 hours. Another
    // steady at 0.40.
    store
        .write(&gauge(
            "filling",
            "system.filesystem.utilization",
            &ramp(5, now, 12, 0.60, 0.02),
        ))
        .await
        .expect("write");
    store
        .write(&gauge(
            "steady",
            "system.filesystem.utilization",
            &ramp(6, now, 12, 0.40, 0.0),
        ))
        .await
        .expect("write");

    let sink_file = dir.path().join("alerts.json");
    let sinks = crate::alert_sinks::AlertSinks::start(
        &[sensor::sink::SinkConfig::File {
            path: sink_file.clone(),
            payload: sensor::sink::Payload::Alert,
        }],
        &dir.path().join("queues"),
    )
    .expect("sinks start")
    .expect("one sink");
    let mut cfg = config(days * DAY + HOUR_MS);
    cfg.host = "box".into();
    cfg.alerts.anomaly_severity = Some("major".into());
    cfg.alerts.saturation_within = Duration::from_secs(86_400);
    let mut job = InsightsJob::open(store.clone(), cfg, dir.path()).with_outlet(sinks.sender());
    let stats = job.run_once(now).await.expect("run");
    assert!(stats.alerts >= 2, "{stats:?}");

    let range = TimeRange {
        start_ns: 0,
        end_ns: (now + DAY) * 1_000_000,
    };
    let alerts = store
        .security_alerts(
            &store::security::AlertFilter {
                limit: 100,
                ..Default::default()
            },
            range,
        )
        .await
        .expect("alerts read");
    let spiky = anomalies(&store, "spiky").await;
    let spike_alert = alerts
        .iter()
        .find(|a| a.kind == "insight-anomaly" && a.service == "spiky")
        .unwrap_or_else(|| panic!("no alert for the spike: {alerts:?}, anomalies {spiky:?}"));
    assert_eq!(spike_alert.source, "anomaly");
    assert_eq!(spike_alert.host, "box");
    assert_eq!(spike_alert.time_ms as i64, onset);
    assert!(
        spike_alert.summary.contains("queue.depth"),
        "{spike_alert:?}"
    );
    let full = alerts
        .iter()
        .find(|a| a.kind == "saturation" && a.service == "filling")
        .unwrap_or_else(|| panic!("no alert for the filling disk: {alerts:?}"));
    assert!(full.score.is_some_and(|c| c >= 0.5), "{full:?}");
    assert!(
        full.summary.contains("system.filesystem.utilization"),
        "{full:?}"
    );
    assert!(
        alerts
            .iter()
            .all(|a| a.service != "clean" && a.service != "steady"),
        "alerts on quiet series: {alerts:?}"
    );

    // The same alerts reach the sink.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&sink_file).unwrap_or_default();
        if text.contains("\"saturation\"") && text.contains("insight-anomaly") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the sink got only: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A later run raises nothing new: each anomaly and each forecast alerts once.
    let again = job.run_once(now + 10 * MINUTE_MS).await.expect("run");
    assert_eq!(again.alerts, 0, "{again:?}");

    // With alerts off, nothing is raised.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let mut off = config(days * DAY + HOUR_MS);
    off.alerts.anomaly_severity = None;
    off.alerts.saturation_within = Duration::ZERO;
    let mut quiet = InsightsJob::open(store.clone(), off, dir2.path());
    assert_eq!(quiet.run_once(now).await.expect("run").alerts, 0);
}
