//! The profile endpoints against a real store holding known samples.
#![cfg(test)]

use std::path::Path;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use model::{Batch, ProfileBatch, ProfileKind, ProfileSample, ProfileStack};
use serde_json::Value;
use store::{Store, StoreConfig};
use tower::ServiceExt;

use crate::{ServerState, router};

const HOUR_MS: i64 = 3_600_000;
/// The current period of the tests: [END - 1h, END); the one before: [END - 2h, END - 1h).
const END_MS: i64 = 1_790_000_000_000;

fn stack(id: u64, frames: &str) -> ProfileStack {
    ProfileStack {
        stack_id: id,
        first_seen_unix_nano: 0,
        service_name: "checkout".into(),
        frames: frames.split(';').map(String::from).collect(),
        modules: Vec::new(),
        truncated: false,
    }
}

fn samples(n: usize, at_ms: i64, kind: ProfileKind, stack_id: u64, ns: u64) -> Vec<ProfileSample> {
    (0..n)
        .map(|i| ProfileSample {
            time_unix_nano: (at_ms as u64 + i as u64) * 1_000_000,
            service_name: "checkout".into(),
            host_name: "h".into(),
            pid: 42,
            tid: 42,
            comm: "checkout".into(),
            kind,
            stack_id,
            value_nanos: ns,
            label: String::new(),
        })
        .collect()
}

/// `checkout`: before, parse 50 samples and lock_wait 5; now, parse 50 and lock_wait 60; and
/// three one-second blocks in read_socket now.
async fn state(dir: &Path) -> ServerState {
    let store = Store::open(dir, StoreConfig::default()).unwrap();
    let (now, before) = (END_MS - HOUR_MS / 2, END_MS - HOUR_MS - HOUR_MS / 2);
    let cpu = ProfileKind::Cpu;
    let mut rows = Vec::new();
    rows.extend(samples(50, before, cpu, 1, 10_000_000));
    rows.extend(samples(5, before, cpu, 2, 10_000_000));
    rows.extend(samples(50, now, cpu, 1, 10_000_000));
    rows.extend(samples(60, now, cpu, 2, 10_000_000));
    rows.extend(samples(3, now, ProfileKind::OffCpu, 3, 1_000_000_000));
    let batch = ProfileBatch {
        samples: rows,
        stacks: vec![
            stack(1, "main;handle;parse"),
            stack(2, "main;handle;lock_wait"),
            stack(3, "main;handle;read_socket;ksys_read_[k];schedule_[k]"),
        ],
    };
    store.write(&Batch::Profiles(batch)).await.unwrap();
    crate::test_state::test_state(store, dir, None)
}

async fn get(state: &ServerState, uri: &str) -> (StatusCode, Vec<u8>) {
    let res = router(state.clone())
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let body = axum::body::to_bytes(res.into_body(), 64 << 20)
        .await
        .unwrap();
    (status, body.to_vec())
}

fn range() -> String {
    format!("start={}&end={END_MS}", END_MS - HOUR_MS)
}

#[tokio::test(flavor = "multi_thread")]
async fn bottlenecks_rank_self_share_and_growth_with_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path()).await;
    let (status, body) = get(&s, &format!("/api/v1/bottlenecks?{}", range())).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    // `end` is inclusive, so the range is 1 h + 1 ms long, and so is the one before.
    assert_eq!(v["end_ms"], END_MS);
    assert_eq!(v["before"]["end_ms"], END_MS - HOUR_MS - 1);
    assert_eq!(v["before"]["start_ms"], END_MS - 2 * HOUR_MS - 1);
    let services = v["services"].as_array().unwrap();
    assert_eq!(services.len(), 1);
    let svc = &services[0];
    assert_eq!(svc["service"], "checkout");

    let cpu = &svc["cpu"];
    assert_eq!(cpu["total"]["samples"], 110);
    assert_eq!(cpu["total_before"]["samples"], 55);
    assert_eq!(cpu["largest"][0]["function"], "lock_wait");
    assert_eq!(cpu["largest"][1]["function"], "parse");
    let grew = cpu["grew"].as_array().unwrap();
    assert_eq!(grew.len(), 1, "only lock_wait grew: {grew:?}");
    let lock = &grew[0];
    assert_eq!(lock["function"], "lock_wait");
    assert_eq!(lock["before"]["samples"], 5);
    assert_eq!(lock["now"]["samples"], 60);
    let (then, now) = (5.0 / 55.0, 60.0 / 110.0);
    assert!((lock["before"]["share"].as_f64().unwrap() - then).abs() < 1e-9);
    assert!((lock["now"]["share"].as_f64().unwrap() - now).abs() < 1e-9);
    assert!(lock["z"].as_f64().unwrap() > 2.0);

    // Off-CPU time is charged to the innermost user frame, not the scheduler.
    let off = &svc["off_cpu"];
    assert_eq!(off["largest"][0]["function"], "read_socket");
    assert_eq!(off["largest"][0]["now"]["value_ns"], 3_000_000_000u64);
    assert_eq!(
        off["grew"].as_array().unwrap().len(),
        0,
        "no earlier blocks"
    );

    let (status, body) = get(
        &s,
        &format!("/api/v1/bottlenecks?service=nobody&{}", range()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["services"][0]["cpu"]["largest"], Value::Array(Vec::new()));

    let (status, body) = get(&s, "/api/v1/bottlenecks?limit=many").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        String::from_utf8_lossy(&body)
            .contains("expected a number of functions, found \\\"many\\\""),
        "{}",
        String::from_utf8_lossy(&body)
    );
}

/// The pprof export, read by `go tool pprof` (Debian package golang-go).
#[tokio::test(flavor = "multi_thread")]
async fn go_tool_pprof_reads_the_export_and_lists_the_hot_function() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path()).await;
    let (status, body) = get(
        &s,
        &format!("/api/v1/profiles/pprof?service=checkout&{}", range()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..2], &[0x1f, 0x8b], "gzip");
    let path = dir.path().join("cpu.pb.gz");
    std::fs::write(&path, &body).unwrap();
    let output = std::process::Command::new("go")
        .args(["tool", "pprof", "-top"])
        .arg(&path)
        .env("HOME", dir.path())
        .output()
        .expect("`go` must be installed (Debian package golang-go)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // 60 of 110 samples of 10 ms: lock_wait 600 ms flat, 54.55 %, the first row.
    let rows: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .skip(1)
        .collect();
    assert!(
        rows.first()
            .is_some_and(|r| r.contains("lock_wait") && r.contains("54.55%")),
        "{stdout}"
    );
    assert!(rows.iter().any(|r| r.contains("parse")), "{stdout}");

    let (status, body) = get(
        &s,
        &format!("/api/v1/profiles/pprof?kind=off_cpu&{}", range()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    std::fs::write(&path, &body).unwrap();
    let output = std::process::Command::new("go")
        .args(["tool", "pprof", "-top"])
        .arg(&path)
        .env("HOME", dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("schedule"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn diff_compares_each_frame_with_the_period_before() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path()).await;
    let (status, body) = get(&s, &format!("/api/v1/profiles/diff?{}", range())).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["samples"], 110);
    assert_eq!(v["base_samples"], 55);
    assert_eq!(v["base"]["end_ms"], END_MS - HOUR_MS - 1);
    let handle = &v["root"]["children"][0]["children"][0];
    assert_eq!(handle["name"], "handle");
    let lock = handle["children"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "lock_wait")
        .unwrap();
    assert_eq!(lock["value"], 600_000_000u64);
    assert_eq!(lock["base"], 50_000_000u64);

    // An explicit comparison range that holds nothing: every base is zero.
    let (status, body) = get(
        &s,
        &format!(
            "/api/v1/profiles/diff?{}&base_start=0&base_end=1000",
            range()
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["base_samples"], 0);
    assert_eq!(v["root"]["base"], 0);

    let (status, body) = get(&s, "/api/v1/profiles/diff?base_start=5").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("base_start and base_end go together"));
}

#[tokio::test(flavor = "multi_thread")]
async fn otlp_export_decodes_with_the_official_types_and_reimports_to_the_same_folded_stacks() {
    use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
    use prost::Message;

    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path()).await;
    let (status, body) = get(&s, &format!("/api/v1/profiles/otlp?{}", range())).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let req = ExportProfilesServiceRequest::decode(&body[..]).unwrap();
    let kinds: Vec<usize> = req.resource_profiles[0].scope_profiles[0]
        .profiles
        .iter()
        .map(|p| p.samples.iter().map(|s| s.timestamps_unix_nano.len()).sum())
        .collect();
    assert_eq!(kinds, [110, 3], "cpu rows, then off-CPU rows");

    // Into a second store, through the receivers' conversion.
    let other = tempfile::tempdir().unwrap();
    let store = Store::open(other.path(), StoreConfig::default()).unwrap();
    let batch = model::otlp_profiles::profiles_from_otlp(req).unwrap();
    store.write(&batch).await.unwrap();
    let t = ServerState { store, ..s.clone() };
    for kind in ["cpu", "off_cpu"] {
        let uri = format!("/api/v1/profiles/folded?kind={kind}&{}", range());
        let (a, b) = (get(&s, &uri).await, get(&t, &uri).await);
        assert_eq!(a.0, StatusCode::OK);
        let mut a: Vec<_> = String::from_utf8(a.1)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        let mut b: Vec<_> = String::from_utf8(b.1)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        a.sort();
        b.sort();
        assert!(!a.is_empty());
        assert_eq!(a, b, "{kind}");
    }

    let (status, body) = get(&s, "/api/v1/profiles/otlp?format=xml").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("expected protobuf or json"));
    let (status, body) = get(
        &s,
        &format!("/api/v1/profiles/otlp?format=json&{}", range()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(v["dictionary"]["stackTable"].is_array(), "{v}");
}
