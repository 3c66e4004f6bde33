//! OTLP profiles end to end: one oxeye receives profiles over OTLP/HTTP, its `otlp` exporter
//! sends them over OTLP/gRPC to a second oxeye, and both show the same folded stacks.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use model::{ProfileBatch, ProfileKind, ProfileSample, ProfileStack};
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use prost::Message;

struct Server {
    child: Child,
    http: String,
    grpc: String,
    otlp_http: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(config: Option<&str>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_oxeye"));
    cmd.args(["up", "--data-dir"])
        .arg(dir.path().join("data"))
        .args([
            "--http-addr",
            "127.0.0.1:0",
            "--otlp-grpc-addr",
            "127.0.0.1:0",
            "--otlp-http-addr",
            "127.0.0.1:0",
            "--profile-hz",
            "0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(c) = config {
        let path = dir.path().join("oxeye.yaml");
        std::fs::write(&path, c).unwrap();
        cmd.arg("--config").arg(path);
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut http, mut grpc, mut otlp_http) = (String::new(), String::new(), String::new());
    for line in lines.by_ref() {
        let line = line.unwrap();
        let value = line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        if line.trim_start().starts_with("dashboard") {
            http = value
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string();
        } else if line.trim_start().starts_with("OTLP gRPC") {
            grpc = line.split_whitespace().nth(2).unwrap().to_string();
        } else if line.trim_start().starts_with("OTLP HTTP") {
            otlp_http = line
                .split_whitespace()
                .nth(2)
                .unwrap()
                .trim_start_matches("http://")
                .to_string();
        } else if line.trim_start().starts_with("profiler") {
            break;
        }
    }
    // Keep reading so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    assert!(!http.is_empty() && !grpc.is_empty() && !otlp_http.is_empty());
    Server {
        child,
        http,
        grpc,
        otlp_http,
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
            "1",
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
            .filter(|l| l.starts_with("profiler: slowdown oxeye 19 Hz"))
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
        }
    }
    assert!(
        o["perf_99hz"].is_object(),
        "perf is installed with the test dependencies: {v}"
    );
    let p = &v["processing"];
    assert!(p["samples"].as_u64().unwrap() > 0, "{v}");
    assert!(p["oxeye_samples_per_s"].as_f64().unwrap() > 0.0, "{v}");
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
