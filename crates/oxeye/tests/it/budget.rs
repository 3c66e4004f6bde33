//! The overhead budget on the real kernel: with a budget oxeye cannot keep (0.01 % of the
//! host), a busy host makes it lower the sampling rates step by step, the quiet (not boosted)
//! processes' rate first, and it says so in `/api/v1/profiles/status` and its log. The rate of
//! a CPU-bound process's samples falls accordingly. Needs root; skipped otherwise, except with
//! `OXEYE_REQUIRE_EBPF=1`, where it fails.

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::boost::{HOT, Killed, as_f64, burner, ebpf_ready, http, sql};

fn now_ns() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_nanos() as f64)
}

#[test]
fn over_its_budget_oxeye_lowers_the_quiet_rate_first_and_says_why() {
    if !ebpf_ready() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // A CPU-bound process for the profiler to sample (and symbolize).
    let burner = Killed(Command::new(burner()).spawn().expect("start the burner"));
    let pid = burner.0.id();
    let mut cmd = crate::oxeye_up(dir.path());
    cmd.args([
        "--off-cpu",
        "off",
        "--security",
        "off",
        "--profile-budget",
        "0.01%",
        // Measured every second instead of every 30 s, so the steps take seconds.
        "--profile-budget-interval",
        "1s",
    ])
    .env("OXEYE_LOG", "warn");
    let stderr_path = dir.path().join("stderr");
    let (up, banner) = crate::start_up(cmd, &stderr_path);
    let stderr = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let (api, profiler) = (banner.api, banner.profiler);
    assert!(
        profiler.contains("at most 0.01"),
        "profiling is not on with the budget: {profiler}"
    );

    // Follow the rates as the budget steps them down, to the lowest level.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut seen: Vec<(u64, u64)> = Vec::new();
    let (mut first_lowered_ns, mut floor_ns) = (None, None);
    // The highest share of the host oxeye was measured to use in an interval.
    let mut max_usage = 0.0f64;
    let last = loop {
        let (status, body) = http(&api, "GET", "/api/v1/profiles/status", None);
        assert_eq!(status, 200, "{body}");
        assert!(
            Instant::now() < deadline,
            "the rates did not reach their lowest level: {seen:?}; {body}\n{}",
            stderr()
        );
        if body["running"] != true {
            // The agent reports after its first second.
            std::thread::sleep(Duration::from_millis(250));
            continue;
        }
        let budget = &body["budget"];
        let rates = (
            body["base_hz"].as_u64().unwrap_or(0),
            body["boost_hz"].as_u64().unwrap_or(0),
        );
        if seen.last() != Some(&rates) {
            seen.push(rates);
        }
        max_usage = max_usage.max(as_f64(&budget["usage_share"]));
        if budget["lowered"] == true && first_lowered_ns.is_none() {
            first_lowered_ns = Some(now_ns());
        }
        // The lowest level: quiet processes at a quarter of 19 Hz, boosted ones just above it.
        if rates.0 == 4 && rates.1 < 9 {
            floor_ns.get_or_insert(now_ns());
        }
        if floor_ns.is_some_and(|t| now_ns() - t > 3e9) {
            break body;
        }
        std::thread::sleep(Duration::from_millis(250));
    };

    // Quiet processes first: the boosted rate moved only once the base rate was at its floor.
    assert_eq!(seen[0], (19, 99), "configured rates first: {seen:?}");
    for &(base, boost) in &seen {
        assert!(
            boost == 99 || base == 4,
            "the boosted rate was lowered before the quiet one: {seen:?}"
        );
    }
    assert!(
        seen.iter().any(|&(base, boost)| base < 19 && boost == 99),
        "no step lowered the quiet rate alone: {seen:?}"
    );
    // The reason, in the status and in the log.
    let budget = &last["budget"];
    // (An interval at the floor may measure less: `/proc` counts CPU time in 10 ms ticks.)
    assert!(
        max_usage > as_f64(&budget["budget_share"]),
        "never measured over budget ({max_usage}): {budget}"
    );
    assert!(as_f64(&budget["times_lowered"]) >= 2.0, "{budget}");
    let state = budget["state"].as_str().unwrap_or_default();
    assert!(
        state.starts_with("over budget: quiet processes at 4 Hz instead of 19"),
        "{state}"
    );
    assert!(state.contains("boosted ones at"), "{state}");
    assert!(
        stderr().contains("profiler over its CPU budget: sampling rate lowered"),
        "{}",
        stderr()
    );

    // The burner (a quiet process) was sampled less once the rates came down.
    std::thread::sleep(Duration::from_secs(2));
    let (first, floor) = (
        first_lowered_ns.unwrap_or_default(),
        floor_ns.unwrap_or_default(),
    );
    let rows = sql(
        &api,
        &format!(
            "SELECT CAST(Timestamp AS BIGINT) FROM profile_samples \
             WHERE Pid = {pid} AND Kind = 'cpu' ORDER BY 1"
        ),
    );
    let times: Vec<f64> = rows.iter().map(|r| as_f64(&r[0])).collect();
    let rate = |from: f64, to: f64| {
        let n = times.iter().filter(|&&t| t >= from && t < to).count();
        n as f64 / ((to - from) / 1e9)
    };
    let start = times.first().copied().unwrap_or(first);
    let end = times.last().copied().unwrap_or(floor);
    assert!(
        first - start > 1e9 && end - floor > 2e9,
        "too short to compare: {times:?}"
    );
    let (before, after) = (rate(start, first), rate(floor, end));
    eprintln!("{HOT} burner samples/s: {before:.1} at 19 Hz, {after:.1} at the lowest level");
    assert!(
        after < before / 2.0,
        "the quiet process's samples did not slow down: {before:.1}/s, then {after:.1}/s"
    );
    drop(burner);
    drop(up);
}
