//! The anomaly, evidence, forecast and saturation endpoints against a real store.
#![cfg(test)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use model::anomaly::AnomalyRecord;
use model::{
    Batch, Group, Metric, MetricPoint, PointValue, ProfileBatch, ProfileKind, ProfileSample,
    ProfileStack, Resource, Scope, Span, SpanId, SpanKind, TraceId,
};
use serde_json::Value;
use store::{Store, StoreConfig};
use tower::ServiceExt;

use crate::{ServerState, router};

const MINUTE: i64 = 60_000;
/// The anomaly starts here; every test's data sits around it.
const A: i64 = 1_790_000_040_000;

fn state(store: Store, dir: &std::path::Path) -> ServerState {
    crate::test_state::test_state(store, dir, None)
}

async fn get(state: &ServerState, uri: &str) -> (StatusCode, Value) {
    let res = router(state.clone())
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let body = axum::body::to_bytes(res.into_body(), 64 << 20)
        .await
        .unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn resource(attrs: &[(&str, &str)]) -> Arc<Resource> {
    Arc::new(Resource {
        attributes: attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        schema_url: String::new(),
    })
}

fn gauge(service: &str, name: &str, unit: &str, points: &[(i64, f64)]) -> Batch {
    Batch::Metrics(vec![Group {
        resource: resource(&[("service.name", service)]),
        scope: Arc::new(Scope::default()),
        items: vec![Metric {
            name: name.into(),
            description: String::new(),
            unit: unit.into(),
            points: points
                .iter()
                .map(|&(t, v)| MetricPoint {
                    attributes: Vec::new(),
                    start_time_unix_nano: 0,
                    time_unix_nano: t as u64 * 1_000_000,
                    flags: 0,
                    value: PointValue::Gauge(v),
                })
                .collect(),
        }],
    }])
}

fn spans(version: &str, from: i64, to: i64, slow_from: i64) -> Batch {
    let mut items = Vec::new();
    let mut i = 0u64;
    let mut t = from;
    while t < to {
        let ms = if t >= slow_from {
            300
        } else {
            10 + (i % 3) as i64
        };
        let start = t as u64 * 1_000_000;
        let mut trace = [0u8; 16];
        trace[..8].copy_from_slice(&(t as u64).to_be_bytes());
        trace[8..].copy_from_slice(&i.to_be_bytes());
        items.push(Span {
            trace_id: TraceId(trace),
            span_id: SpanId((i + 1).to_be_bytes()),
            parent_span_id: None,
            trace_state: String::new(),
            name: "POST /checkout".into(),
            kind: SpanKind::Server,
            start_unix_nano: start,
            end_unix_nano: start + ms as u64 * 1_000_000,
            attributes: Vec::new(),
            events: Vec::new(),
            links: Vec::new(),
            status_code: model::StatusCode::Ok,
            status_message: String::new(),
        });
        i += 1;
        t += 5_000;
    }
    Batch::Spans(vec![Group {
        resource: resource(&[("service.name", "checkout"), ("service.version", version)]),
        scope: Arc::new(Scope::default()),
        items,
    }])
}

fn anomaly(id: &str, open: bool, updated_ms: i64) -> AnomalyRecord {
    let ns = |ms: i64| ms as u64 * 1_000_000;
    AnomalyRecord {
        id: id.into(),
        updated_unix_nano: ns(updated_ms),
        start_unix_nano: ns(A),
        end_unix_nano: ns(A + 5 * MINUTE),
        peak_unix_nano: ns(A + MINUTE),
        open,
        service_name: "checkout".into(),
        metric_name: "red.p99_ms".into(),
        series_id: store::insights::series_id("red.p99_ms", "checkout", []),
        attributes: Vec::new(),
        source: "red".into(),
        peak_value: 300.0,
        expected_low: 8.0,
        expected_high: 15.0,
        score: 0.9,
        severity: AnomalyRecord::severity_of(0.9).into(),
        points: 5,
    }
}

fn profile_samples(n: usize, at_ms: i64, stack_id: u64) -> Vec<ProfileSample> {
    (0..n)
        .map(|i| ProfileSample {
            time_unix_nano: (at_ms as u64 + i as u64 * 100) * 1_000_000,
            service_name: "checkout".into(),
            host_name: "h".into(),
            pid: 42,
            tid: 42,
            comm: "checkout".into(),
            kind: ProfileKind::Cpu,
            stack_id,
            value_nanos: 10_000_000,
            label: String::new(),
        })
        .collect()
}

const ID: &str = "00000000000000aa";

/// `checkout` at 1.0 for an hour, 1.1 from a minute before the anomaly, whose requests turn
/// slow at the anomaly's start; `lock_wait` grows from 5 of 55 samples to 60 of 110; the host's
/// CPU rises with the latency while an unrelated gauge stays flat.
async fn evidence_store(dir: &std::path::Path) -> Store {
    let store = Store::open(dir, StoreConfig::default()).unwrap();
    store
        .write(&spans("1.0", A - 60 * MINUTE, A - MINUTE, i64::MAX))
        .await
        .unwrap();
    store
        .write(&spans("1.1", A - MINUTE, A + 10 * MINUTE, A))
        .await
        .unwrap();
    let mut samples = Vec::new();
    let before = A - 12 * MINUTE;
    samples.extend(profile_samples(50, before, 1));
    samples.extend(profile_samples(5, before, 2));
    samples.extend(profile_samples(50, A, 1));
    samples.extend(profile_samples(60, A, 2));
    store
        .write(&Batch::Profiles(ProfileBatch {
            samples,
            stacks: vec![
                ProfileStack {
                    stack_id: 1,
                    first_seen_unix_nano: 0,
                    service_name: "checkout".into(),
                    frames: vec!["main".into(), "parse".into()],
                    modules: Vec::new(),
                    truncated: false,
                },
                ProfileStack {
                    stack_id: 2,
                    first_seen_unix_nano: 0,
                    service_name: "checkout".into(),
                    frames: vec!["main".into(), "lock_wait".into()],
                    modules: Vec::new(),
                    truncated: false,
                },
            ],
        }))
        .await
        .unwrap();
    let minutes = |f: &dyn Fn(i64) -> f64| -> Vec<(i64, f64)> {
        (-120..15).map(|m| (A + m * MINUTE, f(m))).collect()
    };
    let cpu = minutes(&|m| {
        if m >= 0 {
            0.9
        } else {
            0.3 + 0.01 * (m % 3) as f64
        }
    });
    let flat = minutes(&|m| 0.5 + 0.01 * m.rem_euclid(4) as f64);
    store
        .write(&gauge("host", "system.cpu.utilization", "1", &cpu))
        .await
        .unwrap();
    store
        .write(&gauge("host", "system.paging.faults", "1", &flat))
        .await
        .unwrap();
    store
        .write(&Batch::Anomalies(vec![anomaly(ID, true, A + MINUTE)]))
        .await
        .unwrap();
    store
        .write(&Batch::Anomalies(vec![anomaly(ID, false, A + 20 * MINUTE)]))
        .await
        .unwrap();
    store
}

#[tokio::test]
async fn anomalies_list_keeps_the_latest_version_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(evidence_store(dir.path()).await, dir.path());
    let (st, v) = get(&s, "/api/v1/anomalies?service=checkout").await;
    assert_eq!(st, StatusCode::OK);
    let list = v["anomalies"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{v}");
    assert_eq!(list[0]["status"], "closed");
    assert_eq!(list[0]["severity"], "critical");
    let (_, v) = get(&s, "/api/v1/anomalies?open=true").await;
    assert_eq!(v["anomalies"].as_array().unwrap().len(), 0);
    let (_, v) = get(
        &s,
        &format!(
            "/api/v1/anomalies?start={}&end={}",
            A - 2 * 60 * MINUTE,
            A - 60 * MINUTE
        ),
    )
    .await;
    assert_eq!(
        v["anomalies"].as_array().unwrap().len(),
        0,
        "outside the range"
    );
    let (_, v) = get(
        &s,
        &format!(
            "/api/v1/anomalies?start={}&end={}",
            A + 2 * MINUTE,
            A + 3 * MINUTE
        ),
    )
    .await;
    assert_eq!(
        v["anomalies"].as_array().unwrap().len(),
        1,
        "overlaps the range"
    );
    let (st, v) = get(&s, "/api/v1/anomalies?open=maybe").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("open"));

    let (st, v) = get(&s, &format!("/api/v1/anomalies/{ID}")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["anomaly"]["metric"], "red.p99_ms");
    // The chart's series: the service's p99 per minute, 300 ms from the anomaly on.
    let points = v["points"].as_array().unwrap();
    assert!(points.len() > 60, "{} points", points.len());
    let slow = points
        .iter()
        .filter(|p| p[0].as_i64().unwrap() >= A)
        .all(|p| p[1].as_f64().unwrap() >= 299.0);
    assert!(slow);
    let (st, _) = get(&s, "/api/v1/anomalies/not-an-id").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = get(&s, "/api/v1/anomalies/00000000000000ff").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn evidence_ranks_the_deploy_the_grown_function_and_the_resource_that_moved() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(evidence_store(dir.path()).await, dir.path());
    let (st, v) = get(&s, &format!("/api/v1/anomalies/{ID}/evidence")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let items = v["evidence"].as_array().unwrap();
    let find = |kind: &str| items.iter().find(|i| i["kind"] == kind);
    let deploy = find("deploy").unwrap_or_else(|| panic!("no deploy in {v}"));
    assert_eq!(deploy["detail"]["version"], "1.1");
    assert_eq!(deploy["detail"]["previous"], "1.0");
    let grew = find("profile").unwrap_or_else(|| panic!("no profile growth in {v}"));
    assert_eq!(grew["detail"]["function"], "lock_wait");
    let moved = find("resource").unwrap_or_else(|| panic!("no resource in {v}"));
    assert_eq!(moved["detail"]["metric"], "system.cpu.utilization");
    assert!(
        items
            .iter()
            .all(|i| i["detail"]["metric"] != "system.paging.faults"),
        "a flat series is not evidence: {v}"
    );
    // Ranked: weights never increase down the list, and each item links somewhere.
    let weights: Vec<f64> = items
        .iter()
        .map(|i| i["weight"].as_f64().unwrap())
        .collect();
    assert!(weights.windows(2).all(|w| w[0] >= w[1]), "{weights:?}");
    assert!(
        items
            .iter()
            .all(|i| i["link"].as_str().unwrap().starts_with("#/"))
    );
    // The alerts table is read (none were written here), not reported unavailable.
    assert_eq!(v["sources"]["alerts"]["found"], 0, "{v}");
    assert!(v["sources"]["alerts"]["unavailable"].is_null(), "{v}");
}

#[tokio::test]
async fn forecast_of_a_linear_growth_says_when_the_limit_is_reached() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
    // A filesystem filling by 1 % an hour from 40 %, 5-minute points over a day: 100 % is
    // reached 60 h after the start, 36 h after the last point.
    let step = 5 * MINUTE;
    let start = A - 24 * 60 * MINUTE;
    let points: Vec<(i64, f64)> = (0..288)
        .map(|i| {
            let t = start + i * step;
            let wobble = 0.002 * ((i % 5) as f64 - 2.0);
            (
                t,
                0.40 + 0.01 * (t - start) as f64 / (60 * MINUTE) as f64 + wobble,
            )
        })
        .collect();
    store
        .write(&gauge(
            "host",
            "system.filesystem.utilization",
            "1",
            &points,
        ))
        .await
        .unwrap();
    let s = state(store, dir.path());
    let last = points.last().unwrap().0;
    let q = format!(
        "/api/v1/forecast?metric=system.filesystem.utilization&limit=1&horizon=3d&start={start}&end={last}"
    );
    let (st, v) = get(&s, &q).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let expected = start + 60 * 60 * MINUTE;
    let at = v["saturation"]["crossing"]["at_ms"].as_i64().unwrap();
    assert!(
        (at - expected).abs() < 2 * 60 * MINUTE,
        "crossing at {at}, expected about {expected} ({} h off)",
        (at - expected) as f64 / (60 * MINUTE) as f64
    );
    let earliest = v["saturation"]["crossing"]["earliest_ms"].as_i64().unwrap();
    assert!(earliest <= at);
    let f = &v["forecast"];
    let (mean, lower, upper) = (
        f["mean"].as_array().unwrap(),
        f["lower"].as_array().unwrap(),
        f["upper"].as_array().unwrap(),
    );
    assert_eq!(mean.len(), f["t"].as_array().unwrap().len());
    assert!((0..mean.len()).all(|i| lower[i].as_f64() <= mean[i].as_f64()
        && mean[i].as_f64() <= upper[i].as_f64()));
    assert_eq!(v["level"], 0.9);

    // The same resource is listed by /saturation within a 3-day horizon, not within 12 h.
    let (_, v) = get(&s, &format!("/api/v1/saturation?horizon=3d&end={last}")).await;
    let listed = v["resources"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{v}");
    assert_eq!(listed[0]["metric"], "system.filesystem.utilization");
    let (_, v) = get(&s, &format!("/api/v1/saturation?horizon=12h&end={last}")).await;
    assert_eq!(v["resources"].as_array().unwrap().len(), 0, "{v}");

    // Bad input is named.
    for (q, word) in [
        ("/api/v1/forecast", "metric"),
        (
            "/api/v1/forecast?metric=system.filesystem.utilization&limit=full",
            "limit",
        ),
        (
            "/api/v1/forecast?metric=system.filesystem.utilization&horizon=3x",
            "horizon",
        ),
    ] {
        let (st, v) = get(&s, q).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{q}");
        assert!(v["error"].as_str().unwrap().contains(word), "{q}: {v}");
    }
    let (st, _) = get(&s, "/api/v1/forecast?metric=nope").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

/// Spans of `service` whose p99 follows a queue with a known knee: service time 50 ms, capacity
/// 2 requests/s, so p99 = 50 / (1 − rate/2) ms. The rate grows linearly from `from_rate` to
/// `to_rate` requests/s between `from` and `to`.
fn queueing_spans(service: &str, from: i64, to: i64, from_rate: f64, to_rate: f64) -> Batch {
    let mut items = Vec::new();
    let mut t = from as f64;
    let mut i = 0u64;
    while (t as i64) < to {
        let rate = from_rate + (to_rate - from_rate) * (t - from as f64) / (to - from) as f64;
        let jitter = 1.0 + 0.01 * ((i % 7) as f64 - 3.0);
        let ms = 50.0 / (1.0 - rate / 2.0) * jitter;
        let start = (t * 1e6) as u64;
        let mut trace = [0u8; 16];
        trace[..8].copy_from_slice(&(start).to_be_bytes());
        trace[8..].copy_from_slice(&i.to_be_bytes());
        items.push(Span {
            trace_id: TraceId(trace),
            span_id: SpanId((i + 1).to_be_bytes()),
            parent_span_id: None,
            trace_state: String::new(),
            name: "GET /item".into(),
            kind: SpanKind::Server,
            start_unix_nano: start,
            end_unix_nano: start + (ms * 1e6) as u64,
            attributes: Vec::new(),
            events: Vec::new(),
            links: Vec::new(),
            status_code: model::StatusCode::Ok,
            status_message: String::new(),
        });
        i += 1;
        t += 1000.0 / rate;
    }
    Batch::Spans(vec![Group {
        resource: resource(&[("service.name", service)]),
        scope: Arc::new(Scope::default()),
        items,
    }])
}

#[tokio::test]
async fn load_latency_finds_the_knee_and_when_traffic_reaches_the_objective() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
    // Twelve hours with the rate growing from 0.2 to 1.2 requests/s: p99 200 ms is reached at
    // 1.5 requests/s, which the trend reaches 3.6 h after the last point.
    let hours = 12;
    let from = A - hours * 60 * MINUTE;
    store
        .write(&queueing_spans("shop", from, A, 0.2, 1.2))
        .await
        .unwrap();
    let s = state(store, dir.path());
    let q = format!(
        "/api/v1/load-latency?service=shop&objective=200ms&bucket=10m&horizon=1d&start={from}&end={A}"
    );
    let (st, v) = get(&s, &q).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["service"], "shop");
    assert!(v["samples"].as_u64().unwrap() >= 60, "{v}");
    let at = v["rate_at_objective"]["rate"].as_f64().unwrap();
    assert!(
        (at - 1.5).abs() < 0.15,
        "rate at 200 ms: {at}, expected 1.5"
    );
    assert_eq!(v["rate_at_objective"]["limited_by"], "Objective");
    let capacity = v["capacity_rate"].as_f64().unwrap();
    assert!(
        (capacity - 2.0).abs() < 0.4,
        "capacity {capacity}, expected 2"
    );
    let in_h = v["objective_crossing"]["in_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("no crossing: {v}"))
        / (60.0 * MINUTE as f64);
    assert!((in_h - 3.6).abs() < 1.5, "objective reached in {in_h} h");
    let curve = v["curve"].as_array().unwrap();
    assert!(curve.len() > 10);
    assert!(
        curve
            .windows(2)
            .all(|w| w[0]["p99_ms"].as_f64() <= w[1]["p99_ms"].as_f64())
    );
    assert!(!v["observed"].as_array().unwrap().is_empty());

    // A looser objective is reached later, and the list names the service.
    let (_, loose) = get(
        &s,
        &format!("/api/v1/load-latency?objective=400ms&bucket=10m&start={from}&end={A}"),
    )
    .await;
    let listed = loose["services"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{loose}");
    assert!(listed[0]["rate_at_objective"]["rate"].as_f64().unwrap() > at);
    assert!(listed[0].get("curve").is_none());
    // Without an objective, the configured default (500 ms here) is used.
    let (_, default) = get(
        &s,
        &format!("/api/v1/load-latency?service=shop&bucket=10m&start={from}&end={A}"),
    )
    .await;
    assert_eq!(default["objective_ms"], 500.0);

    for (q, word) in [
        ("/api/v1/load-latency?objective=fast", "objective"),
        ("/api/v1/load-latency?bucket=10ms", "bucket"),
        ("/api/v1/load-latency?horizon=-1d", "horizon"),
    ] {
        let (st, v) = get(&s, q).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{q}");
        assert!(v["error"].as_str().unwrap().contains(word), "{q}: {v}");
    }
    let (st, _) = get(
        &s,
        &format!("/api/v1/load-latency?service=nobody&start={from}&end={A}"),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, doc) = get(&s, "/api/v1/openapi.json").await;
    let op = &doc["paths"]["/load-latency"]["get"];
    assert!(
        op["parameters"]
            .as_array()
            .is_some_and(|p| p.iter().any(|x| x["name"] == "objective")),
        "/load-latency missing from openapi.json"
    );
}
