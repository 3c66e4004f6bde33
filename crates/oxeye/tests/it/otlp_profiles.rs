//! OTLP profiles end to end: one oxeye receives profiles over OTLP/HTTP, its `otlp` exporter
//! sends them over OTLP/gRPC to a second oxeye, and both show the same folded stacks.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use model::{ProfileBatch, ProfileKind, ProfileSample, ProfileStack};
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use prost::Message;

struct Server {
    _child: crate::boost::Killed,
    http: String,
    grpc: String,
    otlp_http: String,
    profiler: String,
    data: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn start(config: Option<&str>) -> Server {
    start_with(config, 0)
}

fn start_with(config: Option<&str>, hz: u32) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = crate::oxeye_up(&dir.path().join("data"));
    cmd.args(["--profile-hz", &hz.to_string()]);
    if let Some(c) = config {
        let path = dir.path().join("oxeye.yaml");
        std::fs::write(&path, c).unwrap();
        cmd.arg("--config").arg(path);
    }
    let (child, banner) = crate::start_up(cmd, &dir.path().join("stderr"));
    let data = dir.path().join("data");
    Server {
        _child: child,
        http: banner.api,
        grpc: banner.grpc,
        otlp_http: banner.otlp_http,
        profiler: banner.profiler,
        data,
        _dir: dir,
    }
}

/// HTTP/1.0, so the body is neither chunked nor kept alive: (status, body).
fn request(addr: &str, method: &str, path: &str, ctype: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&out[..split]).to_string();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, out[split + 4..].to_vec())
}

fn folded(s: &Server, kind: &str, range: &str) -> Vec<String> {
    let (status, body) = request(
        &s.http,
        "GET",
        &format!("/api/v1/profiles/folded?kind={kind}&{range}"),
        "text/plain",
        b"",
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let mut lines: Vec<String> = String::from_utf8(body)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines.sort();
    lines
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn stack(id: u64, frames: &[&str], modules: &[&str], truncated: bool) -> ProfileStack {
    ProfileStack {
        stack_id: id,
        first_seen_unix_nano: now_ns(),
        service_name: "shop".into(),
        frames: frames.iter().map(|s| s.to_string()).collect(),
        modules: modules.iter().map(|s| s.to_string()).collect(),
        truncated,
    }
}

#[test]
fn profiles_travel_over_otlp_to_a_second_server_unchanged() {
    let b = start(None);
    let a = start(Some(&format!(
        "exporters:\n  otlp:\n    endpoint: http://{}\n    compression: gzip\n    interval: 200ms\n    headers:\n      x-tenant: test\n",
        b.grpc
    )));
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let t0 = now_ns();
    let range = format!(
        "start={}&end={}",
        t0 / 1_000_000 - 1_000,
        t0 / 1_000_000 + 600_000
    );

    // What another agent would send: this host's samples, with kernel, JIT and cut-short stacks.
    let stacks = vec![
        stack(1, &["main", "serve", "hot_loop"], &["/bin/shop"; 3], false),
        stack(
            2,
            &["js_handler_[j]", "parse", "copy_user_[k]"],
            &["[jit]", "/bin/shop", "[kernel]"],
            true,
        ),
        stack(
            3,
            &["main", "wait", "schedule_[k]"],
            &["/bin/shop", "/bin/shop", "[kernel]"],
            false,
        ),
    ];
    let mut samples = Vec::new();
    for i in 0..60u64 {
        let (kind, stack_id, value) = match i % 6 {
            0..=3 => (ProfileKind::Cpu, 1, 52_631_578),
            4 => (ProfileKind::Cpu, 2, 52_631_578),
            _ => (ProfileKind::OffCpu, 3, 3_000_000 + i),
        };
        samples.push(ProfileSample {
            time_unix_nano: t0 + i * 1_000_000,
            service_name: "shop".into(),
            host_name: host.clone(),
            pid: 4242,
            tid: 4243 + (i % 2) as u32,
            comm: "shop".into(),
            kind,
            stack_id,
            value_nanos: value,
            label: String::new(),
        });
    }
    let (req, _) = model::otlp_profiles::profiles_to_otlp(&ProfileBatch { samples, stacks });
    let (status, body) = request(
        &a.otlp_http,
        "POST",
        "/v1development/profiles",
        "application/x-protobuf",
        &req.encode_to_vec(),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    // Malformed input is refused naming the problem.
    let mut bad = req.clone();
    bad.resource_profiles[0].scope_profiles[0].profiles[0].samples[0].stack_index = 99;
    let (status, body) = request(
        &a.otlp_http,
        "POST",
        "/v1development/profiles",
        "application/json",
        &serde_json::to_vec(&bad).unwrap(),
    );
    assert_eq!(status, 400);
    let msg = String::from_utf8_lossy(&body);
    assert!(
        msg.contains("stackIndex: index 99 is out of range"),
        "{msg}"
    );

    let want_cpu = folded(&a, "cpu", &range);
    let want_off = folded(&a, "off_cpu", &range);
    assert_eq!(want_cpu.len(), 2, "{want_cpu:?}");
    assert!(
        want_cpu.contains(&"main;serve;hot_loop 40".to_string()),
        "{want_cpu:?}"
    );
    assert!(
        want_cpu.contains(&"[truncated];js_handler_[j];parse;copy_user_[k] 10".to_string()),
        "{want_cpu:?}"
    );
    assert_eq!(want_off, ["main;wait;schedule_[k] 10"]);

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (cpu, off) = (folded(&b, "cpu", &range), folded(&b, "off_cpu", &range));
        if cpu == want_cpu && off == want_off {
            break;
        }
        assert!(Instant::now() < deadline, "not exported: {cpu:?} {off:?}");
        std::thread::sleep(Duration::from_millis(300));
    }

    // The second server's own export decodes with the official types, every row intact.
    let (status, body) = request(
        &b.http,
        "GET",
        &format!("/api/v1/profiles/otlp?{range}"),
        "text/plain",
        b"",
    );
    assert_eq!(status, 200);
    let back = ExportProfilesServiceRequest::decode(&body[..]).unwrap();
    let rows: usize = back
        .resource_profiles
        .iter()
        .flat_map(|r| &r.scope_profiles)
        .flat_map(|s| &s.profiles)
        .flat_map(|p| &p.samples)
        .map(|s| s.timestamps_unix_nano.len())
        .sum();
    assert_eq!(rows, 60);
}

/// `oxeye lab bench profiler` on a tiny run writes every figure it promises (the numbers of a
/// debug build on a busy machine mean nothing; their presence and shape do).
#[test]
fn the_profiler_benchmark_writes_its_figures() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench.json");
    let run = Command::new(env!("CARGO_BIN_EXE_oxeye"))
        .args([
            "lab",
            "bench",
            "profiler",
            "--work",
            "2000",
            "--repeats",
            "2",
            "--samples",
            "2000",
            "--agent-seconds",
            "1",
            "--out",
        ])
        .arg(&out)
        .env("OXEYE_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("profiler: overhead (median of 2 rounds"))
            .count(),
        1,
        "{stdout}"
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let o = &v["overhead"];
    assert!(o["alone_units_per_s"].as_f64().unwrap() > 0.0, "{v}");
    for k in ["oxeye_19hz", "oxeye_99hz", "perf_99hz"] {
        // Present, and measured when the tool could run (root with BTF for oxeye; perf installed).
        assert!(o.get(k).is_some(), "{k} missing: {v}");
        if !o[k].is_null() {
            assert!(o[k]["slowdown_pct"].is_f64(), "{v}");
            // Every round's run is kept, and the spread brackets the median.
            assert_eq!(o[k]["runs_s"].as_array().map(Vec::len), Some(2), "{v}");
            let (lo, mid, hi) = (
                o[k]["paired_min_pct"].as_f64().unwrap(),
                o[k]["slowdown_pct"].as_f64().unwrap(),
                o[k]["paired_max_pct"].as_f64().unwrap(),
            );
            assert!(lo <= mid && mid <= hi, "{k}: {v}");
            // Each tool's own CPU during the runs is measured, and the CPU the work cost in all.
            assert!(o[k]["cpu_cost_pct"].is_f64(), "{k}: {v}");
            let (lo, mid, hi) = (
                o[k]["extra_cpu_min_pct"].as_f64().unwrap(),
                o[k]["extra_cpu_pct"].as_f64().unwrap(),
                o[k]["extra_cpu_max_pct"].as_f64().unwrap(),
            );
            assert!(lo <= mid && mid <= hi, "{k}: {v}");
        }
    }
    // One run alone before the first profiled run and one after each.
    assert_eq!(o["alone_runs_s"].as_array().map(Vec::len), Some(7), "{v}");
    assert!(o["alone_spread_pct"].as_f64().unwrap() >= 0.0, "{v}");
    let cpu = o["alone_cpu_s"].as_array().unwrap();
    assert_eq!(cpu.len(), 7, "{v}");
    assert!(cpu.iter().all(|c| c.as_f64().unwrap() > 0.0), "{v}");
    // Judged only when all three ran.
    assert_eq!(
        o["meets_target"].is_boolean(),
        ["oxeye_19hz", "oxeye_99hz", "perf_99hz"]
            .iter()
            .all(|k| o[*k].is_object()),
        "{v}"
    );
    assert!(
        o["perf_99hz"].is_object(),
        "perf is installed with the test dependencies: {v}"
    );
    let p = &v["processing"];
    assert!(p["samples"].as_u64().unwrap() > 0, "{v}");
    assert!(p["oxeye_samples_per_s"].as_f64().unwrap() > 0.0, "{v}");
    assert!(p["distinct_raw_stacks"].as_u64().unwrap() >= 1, "{v}");
    assert!(p["oxeye_capture_bytes"].as_u64().unwrap() > 0, "{v}");
    // Both tools name the workload's hot loop as the hottest leaf.
    assert_eq!(p["oxeye_hottest_leaf"], "bench_leaf", "{v}");
    if !p["perf_hottest_leaf"].is_null() {
        assert_eq!(p["perf_hottest_leaf"], "bench_leaf", "{v}");
    }
    let a = &v["agent"];
    assert!(
        a["profiler"].is_string() && a["busy_cpu_pct"].is_f64(),
        "{v}"
    );
}

/// Folded lines summed by text: two stored stacks may print the same names (they differ in
/// module or line), and the receiving side may key them differently.
fn merged(lines: Vec<String>) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    for l in lines {
        let (stack, n) = l.rsplit_once(' ').unwrap();
        *out.entry(stack.to_string()).or_default() += n.parse::<u64>().unwrap();
    }
    out
}

/// What the eBPF profiler took on this host arrives at the second server with the same stacks.
#[test]
fn the_hosts_own_profiles_are_exported_unchanged() {
    let b = start(None);
    let a = start_with(
        Some(&format!(
            "exporters:\n  otlp:\n    endpoint: {}\n    interval: 200ms\n",
            b.grpc
        )),
        99,
    );
    if a.profiler.starts_with("off") {
        assert!(
            std::env::var("OXEYE_REQUIRE_EBPF").as_deref() != Ok("1"),
            "OXEYE_REQUIRE_EBPF=1 but the profiler is {}",
            a.profiler
        );
        eprintln!("skipped: the profiler is {}", a.profiler);
        return;
    }
    let t0_ms = now_ns() / 1_000_000;
    // Something to sample: this test's own thread, busy for a moment.
    let until = Instant::now() + Duration::from_secs(2);
    let mut x = 1u64;
    while Instant::now() < until {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
    let cursor = a.data.join("export").join("otlp.cursor");
    let deadline = Instant::now() + Duration::from_secs(60);
    let end_ms = loop {
        let c: u64 = std::fs::read_to_string(&cursor)
            .ok()
            .and_then(|c| c.trim().parse().ok())
            .unwrap_or(0);
        // The exporter has sent everything before its cursor.
        if c / 1_000_000 > t0_ms + 2_000 {
            break c / 1_000_000 - 1;
        }
        assert!(
            Instant::now() < deadline,
            "the exporter did not get past the busy time"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let range = format!("start={t0_ms}&end={end_ms}");
    for kind in ["cpu", "off_cpu"] {
        let want = merged(folded(&a, kind, &range));
        let got = merged(folded(&b, kind, &range));
        if kind == "cpu" {
            assert!(!want.is_empty(), "no samples in 2 s of busy CPU");
        }
        assert_eq!(want, got, "{kind}");
    }
}
