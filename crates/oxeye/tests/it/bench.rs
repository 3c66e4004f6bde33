//! The lab's benchmarks run end to end on a tiny size: figures are checked for shape and sense,
//! never for speed.

use std::process::Command;

/// Runs `oxeye lab bench <args> --out <dir>/<name>`, which must succeed: its stdout and the JSON
/// it wrote. OXEYE_BIN: a copy of the binary under test, when the build's own may be replaced
/// meanwhile.
fn lab_bench(args: &[&str], dir: &std::path::Path, name: &str) -> (String, serde_json::Value) {
    let out = dir.join(name);
    let exe = std::env::var_os("OXEYE_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_oxeye").into());
    let run = Command::new(exe)
        .args(["lab", "bench"])
        .args(args)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let figures = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    (stdout, figures)
}

#[test]
fn the_sensor_benchmark_compares_the_storms_alone_under_oxeye_under_an_empty_hook_and_under_auditd()
{
    // Needs root (eBPF, auditd); never skipped with OXEYE_REQUIRE_EBPF=1.
    if !crate::boost::ebpf_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (stdout, figures) = lab_bench(
        &["sensor", "--ops", "2000", "--rounds", "1"],
        dir.path(),
        "bench-sensor.json",
    );
    assert!(stdout.contains("sensor overhead:"), "{stdout}");
    assert!(
        figures["oxeye_bpf_programs"].as_u64().unwrap() >= 1,
        "{figures}"
    );
    let storms = figures["storms"].as_array().unwrap();
    let names: Vec<&str> = storms
        .iter()
        .map(|s| s["storm"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["getpid", "open-read-close", "connect-close"]);
    let audited = figures["auditd_unavailable"].is_null();
    // The empty hook needs nothing the sensor does not.
    assert!(figures["empty_hook_unavailable"].is_null(), "{figures}");
    for s in storms {
        assert!(s["alone_ns_per_op"].as_f64().unwrap() > 0.0, "{s}");
        assert!(s["oxeye_ns_per_op"].as_f64().unwrap() > 0.0, "{s}");
        assert!(s["oxeye_slowdown_pct"].is_number(), "{s}");
        assert_eq!(s["auditd_ns_per_op"].is_number(), audited, "{s}");
        assert!(s["empty_hook_ns_per_op"].as_f64().unwrap() > 0.0, "{s}");
        assert!(s["empty_hook_slowdown_pct"].is_number(), "{s}");
    }
    // auditd was put back as it was found: no rule of ours is left behind.
    if let Ok(rules) = Command::new("auditctl").arg("-l").output() {
        assert!(
            !String::from_utf8_lossy(&rules.stdout).contains("oxeye-bench"),
            "the benchmark's audit rule is still loaded"
        );
    }
}

#[test]
fn the_sensor_rate_benchmark_finds_every_driven_event_in_the_store() {
    if !crate::boost::ebpf_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (stdout, figures) = lab_bench(
        &[
            "sensor-rate",
            "--start-rate",
            "200",
            "--max-rate",
            "400",
            "--seconds",
            "1",
        ],
        dir.path(),
        "bench-sensor-rate.json",
    );
    assert!(stdout.contains("sensor rate without loss"), "{stdout}");
    let kinds = figures["kinds"].as_array().unwrap();
    let names: Vec<&str> = kinds.iter().map(|k| k["kind"].as_str().unwrap()).collect();
    assert_eq!(names, ["exec", "connect", "open"]);
    for k in kinds {
        // 200 events a second is far below what the sensor sustains: the driver's events are
        // all stored, counted exactly (execs: an exec and an exit per /bin/true).
        let first = &k["steps"][0];
        assert!(first["events"].as_u64().unwrap() > 0, "{k}");
        assert_eq!(first["stored"], first["events"], "{k}");
        assert_eq!(first["lost"], 0, "{k}");
        assert_eq!(first["ring_buffer_drops"], 0, "{k}");
        assert!(k["sustained_events_per_sec"].as_f64().unwrap() > 0.0, "{k}");
        assert!(first["oxeye_rss_mib"].as_f64().unwrap() > 0.0, "{k}");
    }
}

#[test]
fn the_ingest_benchmark_reports_the_median_of_its_runs_and_every_run() {
    let dir = tempfile::tempdir().unwrap();
    let (stdout, report) = lab_bench(
        &[
            "ingest",
            "--spans",
            "4000",
            "--batch",
            "500",
            "--concurrency",
            "2",
            "--repeats",
            "3",
        ],
        dir.path(),
        "bench-ingest.json",
    );
    assert!(stdout.contains("ingest (median of 3 runs):"), "{stdout}");
    assert_eq!(stdout.matches("run ").count(), 3, "{stdout}");
    assert_eq!(report["repeats"], 3, "{report}");
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3, "{report}");
    let per_cpu: Vec<f64> = runs
        .iter()
        .map(|r| r["spans_per_server_cpu_second"].as_f64().unwrap())
        .collect();
    for r in runs {
        assert_eq!(r["spans_acked"], 4000, "{r}");
        assert!(r["server_peak_rss_mib"].as_f64().unwrap() > 0.0, "{r}");
    }
    let mut sorted = per_cpu.clone();
    sorted.sort_by(f64::total_cmp);
    let median = &report["median"];
    assert_eq!(
        median["spans_per_server_cpu_second"].as_f64().unwrap(),
        sorted[1]
    );
    assert_eq!(
        report["spans_per_server_cpu_second_range"],
        serde_json::json!([sorted[0], sorted[2]])
    );
    assert_eq!(median["spans_acked"], 12000, "{report}");
    // Where the server's CPU went: its flusher and its receivers at least.
    let by_thread = median["server_cpu_seconds_by_thread"].as_object().unwrap();
    assert!(by_thread.contains_key("tokio-rt-worker"), "{report}");
    assert!(stdout.contains("server CPU by thread: "), "{stdout}");
    assert_eq!(median["requests_refused"], 0, "{report}");
}
