//! High-traffic boosting on the real kernel: a burst of requests from a service raises the
//! sampling rate of its process, its samples are labelled `high_traffic`, the window shows in
//! the API, and the traces-from-frame join finds the span that ran the hot function.
//! Needs root; skipped otherwise, except with `OXEYE_REQUIRE_EBPF=1`, where it fails.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

pub(crate) const HOT: &str = "oxeye_boost_test_hot";

/// Whether the eBPF tests can run: root. Skips only when not root, and never when
/// `OXEYE_REQUIRE_EBPF=1`.
pub(crate) fn ebpf_ready() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var("OXEYE_REQUIRE_EBPF").as_deref() != Ok("1"),
        "OXEYE_REQUIRE_EBPF=1 but not running as root"
    );
    eprintln!("skipped: needs root (eBPF)");
    false
}

/// A process burning CPU in [`HOT`] forever, with frame pointers so the stack is whole.
pub(crate) fn burner() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("boost-test");
    std::fs::create_dir_all(&dir).expect("create the burner directory");
    let src = dir.join("burn.c");
    std::fs::write(
        &src,
        format!(
            "__attribute__((noinline)) unsigned long {HOT}(unsigned long n) {{\n\
             unsigned long x = 88172645463325252ul;\n\
             for (unsigned long i = 0; i < n; i++) {{ x ^= x << 13; x ^= x >> 7; x ^= x << 17; }}\n\
             return x; }}\n\
             int main(void) {{ volatile unsigned long s = 0; for (;;) s += {HOT}(1000000 + (s & 1)); }}\n"
        ),
    )
    .expect("write the burner");
    let bin = dir.join(format!("burn-{}", std::process::id()));
    let ok = Command::new("clang")
        .args(["-O2", "-g", "-fno-omit-frame-pointer", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .expect("run clang")
        .success();
    assert!(ok, "compiling the burner failed");
    bin
}

pub(crate) struct Killed(pub(crate) Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 request; the status and the body as JSON (`Null` when it is not JSON).
pub(crate) fn http(addr: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let (status, text) = http_text(addr, method, path, body);
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// One HTTP/1.1 request; the status and the body as text (chunked bodies joined).
pub(crate) fn http_text(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).ok();
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{payload}",
        payload.len()
    )
    .expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// `n` SERVER spans of `service` in process `pid` (thread `pid`), one trace each, plus `extra`.
fn spans(service: &str, pid: u32, n: usize, extra: Vec<Value>) -> Value {
    let t = now_ns();
    let mut list: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "traceId": format!("{:032x}", t + i as u128),
                "spanId": format!("{:016x}", (t as u64).wrapping_add(i as u64)),
                "name": "GET /item", "kind": 2,
                "startTimeUnixNano": (t - 1_000_000).to_string(),
                "endTimeUnixNano": t.to_string(),
                "attributes": [{ "key": "thread.id", "value": { "intValue": pid.to_string() } }],
            })
        })
        .collect();
    list.extend(extra);
    json!({ "resourceSpans": [{
        "resource": { "attributes": [
            { "key": "service.name", "value": { "stringValue": service } },
            { "key": "process.pid", "value": { "intValue": pid.to_string() } },
        ] },
        "scopeSpans": [{ "scope": { "name": "boost-test" }, "spans": list }],
    }] })
}

pub(crate) fn sql(api: &str, q: &str) -> Vec<Vec<Value>> {
    let (status, body) = http(api, "POST", "/api/v1/query", Some(&json!({ "sql": q })));
    assert_eq!(status, 200, "{q}: {body}");
    body["rows"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.as_array().cloned().unwrap_or_default())
        .collect()
}

pub(crate) fn as_f64(v: &Value) -> f64 {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0.0)
}

#[test]
fn a_traffic_burst_boosts_the_services_process_and_labels_its_samples() {
    if !ebpf_ready() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = crate::oxeye_up(dir.path());
    cmd.args([
        "--off-cpu",
        "off",
        // A threshold instead of the learned baseline, which needs minutes of warm-up.
        "--profile-boost-threshold",
        "10",
        "--profile-boost-for",
        "30s",
        // The budget is tested on its own; here it must not lower the rates being compared.
        "--profile-budget",
        "100%",
    ]);
    let (up, banner) = crate::start_up(cmd, &dir.path().join("stderr"));
    let (api, otlp, profiler) = (banner.api, banner.otlp_http, banner.profiler);
    assert!(
        profiler.contains("99 Hz under high traffic"),
        "profiling is not on: {profiler}"
    );

    let service = format!("boost-test-{}", std::process::id());
    let burner = Killed(
        Command::new(burner())
            .env("OTEL_SERVICE_NAME", &service)
            .spawn()
            .expect("start the burner"),
    );
    let pid = burner.0.id();
    let post = |body: &Value| {
        let (status, res) = http(&otlp, "POST", "/v1/traces", Some(body));
        assert_eq!(status, 200, "{res}");
    };

    // Normal traffic: one request a second, under the threshold.
    for _ in 0..12 {
        post(&spans(&service, pid, 1, Vec::new()));
        std::thread::sleep(Duration::from_secs(1));
    }
    // A burst: 50 requests a second until the process is boosted, then 10 s more.
    let burst_start = now_ns();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut boosted_at = None;
    loop {
        post(&spans(&service, pid, 50, Vec::new()));
        std::thread::sleep(Duration::from_secs(1));
        let (_, status) = http(&api, "GET", "/api/v1/profiles/status", None);
        let boosted = status["boosted"].as_array().is_some_and(|b| {
            b.iter()
                .any(|e| e["pid"] == pid && e["service"] == service.as_str())
        });
        if boosted && boosted_at.is_none() {
            assert_eq!(status["boost_hz"], 99, "{status}");
            boosted_at = Some(Instant::now());
        }
        if boosted_at.is_some_and(|t| t.elapsed() > Duration::from_secs(10)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the burst never boosted pid {pid}: {status}"
        );
    }
    // One span that covers the whole burst, on the burner's only thread.
    let busy = json!({
        "traceId": "0b0057ed0b0057ed0b0057ed0b0057ed", "spanId": "0b0057ed0b0057ed",
        "name": "busy request", "kind": 2,
        "startTimeUnixNano": burst_start.to_string(), "endTimeUnixNano": now_ns().to_string(),
        "attributes": [{ "key": "thread.id", "value": { "intValue": pid.to_string() } }],
    });
    post(&spans(&service, pid, 0, vec![busy]));
    // The agent sends what it drained every second.
    std::thread::sleep(Duration::from_secs(3));

    // The burner's sample rate rose: samples per second of its run, by label.
    let rows = sql(
        &api,
        &format!(
            "SELECT Label, count(*) AS n, CAST(min(Timestamp) AS BIGINT) AS a, \
             CAST(max(Timestamp) AS BIGINT) AS b, min(ServiceName) AS s1, max(ServiceName) AS s2 \
             FROM profile_samples WHERE Pid = {pid} AND Kind = 'cpu' GROUP BY Label"
        ),
    );
    let rate = |label: &str| {
        let r = rows
            .iter()
            .find(|r| r[0] == label)
            .unwrap_or_else(|| panic!("no samples labelled {label:?}: {rows:?}"));
        let secs = (as_f64(&r[3]) - as_f64(&r[2])) / 1e9;
        assert!(secs > 2.0, "too short a run to measure: {r:?}");
        assert_eq!(r[4], service.as_str(), "samples name the span's service");
        assert_eq!(r[5], service.as_str(), "samples name the span's service");
        as_f64(&r[1]) / secs
    };
    let (normal, high) = (rate(""), rate("high_traffic"));
    eprintln!("burner samples/s: {normal:.1} normal, {high:.1} high traffic");
    assert!(
        high > 2.5 * normal,
        "boosted rate {high:.1}/s is not well above the base rate {normal:.1}/s"
    );

    // The window, with its peak and the normal rate before it, and a diff to open.
    let (status, res) = http(
        &api,
        "GET",
        &format!("/api/v1/profiles/high_traffic?service={service}"),
        None,
    );
    assert_eq!(status, 200, "{res}");
    let w = &res["windows"][0];
    assert_eq!(w["service"], service.as_str(), "{res}");
    assert!(as_f64(&w["peak_rate"]) >= 10.0, "{w}");
    assert!(as_f64(&w["baseline_rate"]) < 10.0, "{w}");
    assert!(as_f64(&w["samples"]) > 0.0, "{w}");
    let diff_url = w["diff_url"].as_str().expect("a diff url");
    let (status, diff) = http(&api, "GET", diff_url, None);
    assert_eq!(status, 200, "{diff}");
    assert!(
        as_f64(&diff["samples"]) > 0.0 && as_f64(&diff["base_samples"]) > 0.0,
        "{diff_url}"
    );

    // From the hot frame to the trace that ran it.
    let (status, res) = http(
        &api,
        "GET",
        &format!("/api/v1/profiles/traces?function={HOT}&service={service}"),
        None,
    );
    assert_eq!(status, 200, "{res}");
    let found = res["traces"]
        .as_array()
        .and_then(|t| {
            t.iter()
                .find(|t| t["trace_id"] == "0b0057ed0b0057ed0b0057ed0b0057ed")
        })
        .cloned()
        .unwrap_or_else(|| panic!("the busy trace is not listed: {res}"));
    assert_eq!(found["span_name"], "busy request");
    assert_eq!(found["match"], "thread");
    assert!(as_f64(&found["samples"]) > 10.0, "{found}");
    let (status, res) = http(&api, "GET", "/api/v1/profiles/traces", None);
    assert_eq!(status, 400);
    assert!(
        res["error"]
            .as_str()
            .unwrap_or_default()
            .contains("function")
    );
    drop(burner);
    drop(up);
}
