//! `oxeye lab bench profiler`: what profiling costs, against `perf` in the same run.
//!
//! - overhead: a compiled C workload (one busy thread per CPU, fixed work) runs alone, under
//!   `oxeye up` profiling every process at 19 Hz and at 99 Hz, and under `perf record -a -g
//!   -F 99`; each run's throughput is compared with the median of the runs alone;
//! - processing: one `perf record` of the workload is turned into folded stacks by `perf script |
//!   inferno-collapse-perf` and by oxeye's symbolize + aggregate path (fed the same addresses);
//! - agent: `oxeye up`'s own CPU and peak RSS while it profiles the host at 19 Hz, idle and busy.
//!
//! The machine these run on is often shared, so the overhead runs go in rounds (alone, oxeye
//! 19 Hz, oxeye 99 Hz, perf, the order rotated each round) and every run's time is kept: the
//! figures are medians, with each round's slowdown against that round's run alone as the spread,
//! and the spread of the runs alone says how much the machine itself varies.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::LabError;
use crate::proc::{Server, cpu_seconds, rss_bytes};

#[derive(clap::Args, Clone, Debug)]
pub struct ProfilerArgs {
    /// Work units per thread in one overhead run (one unit is about 20 µs of CPU).
    #[arg(long, default_value_t = 500_000)]
    pub work: u64,
    /// Runs of each overhead configuration (interleaved; medians are reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Stack samples to record for the processing comparison (at about 10,000 per second).
    #[arg(long, default_value_t = 1_000_000)]
    pub samples: u64,
    /// Seconds the agent's own cost is measured, idle and then busy.
    #[arg(long, default_value_t = 30)]
    pub agent_seconds: u64,
    /// Where to write the JSON figures [default: target/lab/bench-profiler.json].
    #[arg(long, default_value = "target/lab/bench-profiler.json")]
    pub out: PathBuf,
    /// Skip the overhead runs.
    #[arg(long)]
    pub no_overhead: bool,
    /// Skip the processing comparison.
    #[arg(long)]
    pub no_processing: bool,
    /// Skip the agent's own cost.
    #[arg(long)]
    pub no_agent: bool,
}

/// One stack sample as `perf script` printed its addresses: leaf first.
#[derive(Clone, Debug)]
pub struct RawSample {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub kernel: Vec<u64>,
    pub user: Vec<u64>,
}

/// oxeye's processing path, supplied by the binary (lab does not link the profiler): folded
/// stacks (one line per stack, samples as the value) for the given samples.
pub type FoldFn<'a> = &'a dyn Fn(&[RawSample]) -> Result<String, String>;

#[derive(Debug, Serialize)]
pub struct ProfilerFigures {
    pub cpus: usize,
    pub overhead: Option<Overhead>,
    pub processing: Option<Processing>,
    pub agent: Option<Agent>,
}

#[derive(Debug, Serialize)]
pub struct Overhead {
    pub work_per_thread: u64,
    pub threads: usize,
    pub repeats: usize,
    /// Work units per second (all threads), median of the runs.
    pub alone_units_per_s: f64,
    /// Seconds of each run alone (one before the first profiled run and one after each):
    /// how much the machine itself varies.
    pub alone_runs_s: Vec<f64>,
    /// (slowest − fastest) / median of the runs alone, in %: slowdowns smaller than this are
    /// within the noise of the machine.
    pub alone_spread_pct: f64,
    /// CPU seconds the workload itself used in each run alone.
    pub alone_cpu_s: Vec<f64>,
    /// (most − least) / median of those, in %.
    pub alone_cpu_spread_pct: f64,
    /// `None` when the profiler could not start (not root, no BTF) or the tool is missing.
    pub oxeye_19hz: Option<Slowdown>,
    pub oxeye_99hz: Option<Slowdown>,
    pub perf_99hz: Option<Slowdown>,
    pub target_19hz_pct: f64,
    /// oxeye at 19 Hz added at most `target_19hz_pct` of CPU (`extra_cpu_pct`), and at 99 Hz no
    /// more than perf at 99 Hz.
    pub meets_target: Option<bool>,
}

#[derive(Debug, Serialize)]
pub struct Slowdown {
    /// Median of the runs.
    pub units_per_s: f64,
    /// Median over the runs of each run's time against the mean of the runs alone just before
    /// and just after it (so a machine that slows down or speeds up over minutes cancels out).
    pub slowdown_pct: f64,
    /// Lowest and highest of those per-run slowdowns: the noise around the median.
    pub paired_min_pct: f64,
    pub paired_max_pct: f64,
    /// Seconds of each run, in round order.
    pub runs_s: Vec<f64>,
    /// The tool's own CPU time during a run over the workload's CPU time, in %, median of the
    /// runs: for oxeye its process and its BPF programs' run time, for perf the `perf record`
    /// process (its in-kernel sampling is charged to the workload, so this favours perf a
    /// little). Unlike the slowdown it hardly depends on what else the machine runs.
    pub cpu_cost_pct: Option<f64>,
    pub cpu_cost_runs_pct: Vec<f64>,
    /// The CPU the same work cost in all, against the runs alone around it, in %, median of
    /// the runs: the workload's own CPU time (which holds what sampling costs inside it: the
    /// interrupt, the BPF program, colder caches) plus the tool's process. Time the workload
    /// waited for a CPU or its virtual CPU did not run (steal) is not in it, so, unlike the
    /// slowdown, it hardly moves with the rest of the machine. The target is checked on it.
    pub extra_cpu_pct: f64,
    pub extra_cpu_min_pct: f64,
    pub extra_cpu_max_pct: f64,
}

#[derive(Debug, Serialize)]
pub struct Processing {
    pub samples: u64,
    /// Distinct (pid, addresses) stacks among the samples.
    pub distinct_raw_stacks: u64,
    /// Bytes of each tool's input: oxeye's capture (the addresses its sampler delivers) and
    /// `perf.data`.
    pub oxeye_capture_bytes: u64,
    pub perf_data_bytes: u64,
    /// Median of the rounds, each from reading the input to writing folded text.
    pub oxeye_seconds: f64,
    pub oxeye_runs_s: Vec<f64>,
    pub oxeye_samples_per_s: f64,
    pub perf_inferno_seconds: Option<f64>,
    pub perf_inferno_runs_s: Vec<f64>,
    pub perf_inferno_samples_per_s: Option<f64>,
    /// oxeye's samples/s over perf + inferno's.
    pub speedup: Option<f64>,
    /// The leaf function with the most samples, by each tool (they should agree).
    pub oxeye_hottest_leaf: String,
    pub perf_hottest_leaf: Option<String>,
    pub target_speedup: f64,
}

#[derive(Debug, Serialize)]
pub struct Agent {
    pub seconds: u64,
    pub profiler: String,
    pub idle_cpu_pct: f64,
    pub busy_cpu_pct: f64,
    /// Of the whole host: the overhead budget's measure.
    pub busy_host_cpu_pct: f64,
    pub peak_rss_mib: f64,
}

const WORKLOAD_C: &str = r#"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static volatile unsigned long sink;
static unsigned long work;
__attribute__((noinline)) unsigned long bench_leaf(unsigned long x) {
    for (int i = 0; i < 2000; i++) x = x * 6364136223846793005UL + 1442695040888963407UL;
    return x;
}
__attribute__((noinline)) unsigned long bench_mid(unsigned long x) { return bench_leaf(x) ^ bench_leaf(x + 1); }
static void *run(void *arg) {
    unsigned long x = (unsigned long)arg;
    for (unsigned long i = 0; work == 0 || i < work; i++) x = bench_mid(x);
    sink = x;
    return 0;
}
int main(int argc, char **argv) {
    work = argc > 1 ? strtoul(argv[1], 0, 10) : 0;
    int threads = argc > 2 ? atoi(argv[2]) : 1;
    pthread_t t[256];
    struct timespec a, b, cpu;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < threads && i < 256; i++) pthread_create(&t[i], 0, run, (void *)(unsigned long)(i + 1));
    for (int i = 0; i < threads && i < 256; i++) pthread_join(t[i], 0);
    clock_gettime(CLOCK_MONOTONIC, &b);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu);
    /* The workload's own time, so a wrapper's start and exit (perf record's) do not count, and
       its CPU time, so a wrapper's own CPU can be told from the workload's. */
    printf("%.9f %.9f %lu\n", (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9,
           cpu.tv_sec + cpu.tv_nsec / 1e9, sink);
    return 0;
}
"#;

fn setup(what: &str) -> impl Fn(std::io::Error) -> LabError + '_ {
    move |e| LabError::Setup(format!("{what}: {e}"))
}

fn compile_workload(dir: &Path) -> Result<PathBuf, LabError> {
    let src = dir.join("workload.c");
    let exe = dir.join("oxeye-bench-workload");
    std::fs::write(&src, WORKLOAD_C)?;
    let out = Command::new("cc")
        .args(["-O2", "-fno-omit-frame-pointer", "-pthread", "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
        .map_err(setup(
            "cc (build-essential) is needed to build the workload",
        ))?;
    if !out.status.success() {
        return Err(LabError::Setup(format!(
            "cc failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(exe)
}

fn has(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Seconds one workload run took by its own clock and the CPU seconds it used.
fn run_workload_cpu(
    exe: &Path,
    work: u64,
    threads: usize,
    wrap: &[&str],
) -> Result<(f64, f64), LabError> {
    let mut cmd = if wrap.is_empty() {
        Command::new(exe)
    } else {
        let mut c = Command::new(wrap[0]);
        c.args(&wrap[1..]).arg(exe);
        c
    };
    let out = cmd
        .args([work.to_string(), threads.to_string()])
        .stderr(Stdio::null())
        .output()
        .map_err(setup("workload"))?;
    if !out.status.success() {
        return Err(LabError::Setup(format!(
            "workload run failed: {}",
            out.status
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut fields = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    match (fields.next().flatten(), fields.next().flatten()) {
        (Some(wall), Some(cpu)) => Ok((wall, cpu)),
        _ => Err(LabError::Setup(format!(
            "the workload printed no times: {text:?}"
        ))),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// An `oxeye up` with the profiler at `hz`, or why it has no profiler. It is warmed up with a
/// short run of the workload: what a long-running agent does once (load the kernel's symbols,
/// read the workload's and the C library's symbol tables, first flushes) is not what is measured.
fn profiling_server(
    oxeye: &Path,
    exe: &Path,
    dir: &Path,
    hz: u32,
    only_profiling: bool,
) -> Result<Result<Server, String>, LabError> {
    let hz_arg = hz.to_string();
    // The security sensor has its own benchmark (`lab bench sensor`).
    let mut args = vec![
        "--profile-hz",
        &hz_arg,
        "--off-cpu",
        "off",
        "--security",
        "off",
    ];
    if only_profiling {
        // Anomaly detection wakes every 30 s for ~0.1 s of CPU; landing in a run or not, it
        // made the runs' cost jump by up to 10 %. It is the server's cost, not profiling's,
        // and the agent figures keep it.
        args.extend(["--insight-interval", "0"]);
    }
    let server = Server::start(oxeye, &dir.join(format!("data-{hz}")), &args)?;
    let line = server.profiler_line.clone();
    if line.starts_with("off") {
        server.stop();
        return Ok(Err(line));
    }
    // Startup (opening the store, loading BPF) is not what is measured.
    std::thread::sleep(Duration::from_secs(2));
    let mut warm = Command::new(exe)
        .args(["0", "1"])
        .stdout(Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(1500));
    let _ = warm.kill();
    let _ = warm.wait();
    // The agent drains once a second: let it symbolize the warm-up's samples.
    std::thread::sleep(Duration::from_millis(1500));
    Ok(Ok(server))
}

/// The profiled configurations; each round runs them in this order rotated by the round
/// number, so none always runs first (on a fresh cache) or last (after the machine warmed up).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Config {
    Oxeye19,
    Oxeye99,
    Perf,
}

const CONFIGS: [Config; 3] = [Config::Oxeye19, Config::Oxeye99, Config::Perf];

/// CPU seconds of the children this process has waited for (the workload runs).
fn children_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_CHILDREN is a valid target.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Kernel run time of the BPF programs `pid` holds open, in seconds (`run_time_ns` of each
/// program's fdinfo; counted while oxeye holds run-time statistics on).
fn bpf_seconds(pid: u32) -> f64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return 0.0;
    };
    let mut ns = 0u64;
    for entry in dir.flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        if !text.contains("prog_type:") {
            continue;
        }
        ns += text
            .lines()
            .find_map(|l| l.strip_prefix("run_time_ns:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    ns as f64 / 1e9
}

/// One measured run: its time and CPU seconds, the tool's own CPU (process and, for oxeye, BPF
/// programs) over the workload's, in %, and the tool's process CPU seconds alone.
struct Measured {
    wall: f64,
    cpu: f64,
    cost_pct: f64,
    tool_process_cpu: f64,
}

/// One workload run under oxeye.
fn run_under_oxeye(
    exe: &Path,
    a: &ProfilerArgs,
    threads: usize,
    server: &Server,
) -> Result<Measured, LabError> {
    let pid = server.pid();
    let (own0, bpf0) = (cpu_seconds(pid), bpf_seconds(pid));
    let (wall, cpu) = run_workload_cpu(exe, a.work, threads, &[])?;
    let (own1, bpf1) = (cpu_seconds(pid), bpf_seconds(pid));
    Ok(Measured {
        wall,
        cpu,
        cost_pct: (own1 - own0 + bpf1 - bpf0) / cpu.max(1e-9) * 100.0,
        tool_process_cpu: own1 - own0,
    })
}

fn overhead(
    oxeye: &Path,
    exe: &Path,
    dir: &Path,
    a: &ProfilerArgs,
    threads: usize,
) -> Result<(Overhead, Option<String>), LabError> {
    let units = (a.work * threads as u64) as f64;
    let rounds = a.repeats.max(1);
    let mut alone: Vec<f64> = Vec::new();
    let mut alone_cpu: Vec<f64> = Vec::new();
    // Per configuration, each run: seconds, slowdown % against the runs alone just before and
    // after it, the tool's CPU cost %, extra CPU %.
    let mut runs: [Vec<(f64, f64, f64, f64)>; 3] = Default::default();
    let mut why_not = None;
    let perf_ok = has("perf");
    let perf_data = dir.join("overhead.perf.data");
    let perf_data = perf_data.to_string_lossy().into_owned();
    let mut before = run_workload_cpu(exe, a.work, threads, &[])?;
    alone.push(before.0);
    alone_cpu.push(before.1);
    for round in 0..rounds {
        for k in 0..CONFIGS.len() {
            let i = (k + round) % CONFIGS.len();
            let measured = match CONFIGS[i] {
                c @ (Config::Oxeye19 | Config::Oxeye99) => {
                    let hz = if c == Config::Oxeye19 { 19 } else { 99 };
                    match profiling_server(oxeye, exe, dir, hz, true)? {
                        Ok(server) => {
                            let r = run_under_oxeye(exe, a, threads, &server);
                            server.stop();
                            Some(r?)
                        }
                        Err(why) => {
                            why_not = Some(why);
                            None
                        }
                    }
                }
                Config::Perf => perf_ok
                    .then(|| {
                        let before = children_cpu_seconds();
                        let (secs, workload_cpu) = run_workload_cpu(
                            exe,
                            a.work,
                            threads,
                            &[
                                "perf", "record", "-q", "-a", "-g", "-F", "99", "-o", &perf_data,
                                "--",
                            ],
                        )?;
                        // perf's own CPU: what it and the workload used, less the workload's.
                        let perf_cpu = children_cpu_seconds() - before - workload_cpu;
                        Ok::<_, LabError>(Measured {
                            wall: secs,
                            cpu: workload_cpu,
                            cost_pct: perf_cpu / workload_cpu.max(1e-9) * 100.0,
                            tool_process_cpu: perf_cpu,
                        })
                    })
                    .transpose()?,
            };
            // Alone again right after, so each profiled run sits between two runs alone.
            let after = run_workload_cpu(exe, a.work, threads, &[])?;
            alone.push(after.0);
            alone_cpu.push(after.1);
            if let Some(m) = measured {
                let slowdown = (m.wall / ((before.0 + after.0) / 2.0) - 1.0) * 100.0;
                let base_cpu = (before.1 + after.1) / 2.0;
                let extra = (m.cpu - base_cpu + m.tool_process_cpu) / base_cpu.max(1e-9) * 100.0;
                runs[i].push((m.wall, slowdown, m.cost_pct, extra));
            }
            before = after;
        }
        eprintln!(
            "overhead round {}/{rounds}: slowdown oxeye 19 Hz / 99 Hz / perf: {}",
            round + 1,
            runs.iter()
                .map(|r| r
                    .last()
                    .map_or("-".to_string(), |(_, pct, _, extra)| format!(
                        "{pct:+.2} % (CPU {extra:+.2} %)"
                    )))
                .collect::<Vec<_>>()
                .join(" / ")
        );
    }
    let _ = std::fs::remove_file(&perf_data);
    let base = units / median(alone.clone());
    // (most − least) / median, in %.
    let spread_pct = |v: &[f64]| {
        let (lo, hi) = v
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        (hi - lo) / median(v.to_vec()) * 100.0
    };
    let alone_spread_pct = spread_pct(&alone);
    let alone_cpu_spread_pct = spread_pct(&alone_cpu);
    let slow = |i: usize| {
        let r = &runs[i];
        if r.is_empty() {
            return None;
        }
        let times: Vec<f64> = r.iter().map(|x| x.0).collect();
        let mut paired: Vec<f64> = r.iter().map(|x| x.1).collect();
        paired.sort_by(f64::total_cmp);
        let costs: Vec<f64> = r.iter().map(|x| x.2).collect();
        let mut extra: Vec<f64> = r.iter().map(|x| x.3).collect();
        extra.sort_by(f64::total_cmp);
        Some(Slowdown {
            units_per_s: units / median(times.clone()),
            slowdown_pct: median(paired.clone()),
            paired_min_pct: paired[0],
            paired_max_pct: paired[paired.len() - 1],
            runs_s: times,
            cpu_cost_pct: (!costs.is_empty()).then(|| median(costs.clone())),
            cpu_cost_runs_pct: costs,
            extra_cpu_pct: median(extra.clone()),
            extra_cpu_min_pct: extra[0],
            extra_cpu_max_pct: extra[extra.len() - 1],
        })
    };
    let (oxeye_19hz, oxeye_99hz, perf_99hz) = (slow(0), slow(1), slow(2));
    let target_19hz_pct = 0.5;
    let meets_target = match (&oxeye_19hz, &oxeye_99hz, &perf_99hz) {
        (Some(o19), Some(o99), Some(perf)) => {
            Some(o19.extra_cpu_pct <= target_19hz_pct && o99.extra_cpu_pct <= perf.extra_cpu_pct)
        }
        _ => None,
    };
    Ok((
        Overhead {
            work_per_thread: a.work,
            threads,
            repeats: rounds,
            alone_units_per_s: base,
            alone_spread_pct,
            alone_runs_s: alone,
            alone_cpu_s: alone_cpu,
            alone_cpu_spread_pct,
            oxeye_19hz,
            oxeye_99hz,
            perf_99hz,
            target_19hz_pct,
            meets_target,
        },
        why_not,
    ))
}

/// Where each file is loaded in a live process (`start - offset` of its mappings), to turn
/// the file-relative addresses `perf script` prints back into the process's own addresses.
fn load_biases(pid: u32) -> std::collections::HashMap<String, u64> {
    let mut out = std::collections::HashMap::new();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    for line in maps.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(range), Some(offset), Some(path)) = (f.first(), f.get(2), f.get(5)) else {
            continue;
        };
        let start = range
            .split('-')
            .next()
            .and_then(|v| u64::from_str_radix(v, 16).ok());
        if let (Some(start), Ok(offset)) = (start, u64::from_str_radix(offset, 16)) {
            let bias = start.wrapping_sub(offset);
            out.entry(path.to_string())
                .and_modify(|b: &mut u64| *b = (*b).min(bias))
                .or_insert(bias);
        }
    }
    out
}

/// Parses `perf script -F comm,pid,tid,ip,dso` output: a header line, then one `address (dso)`
/// per frame. User addresses are file-relative there and are rebased with `biases`.
fn parse_addresses(text: &str, biases: &std::collections::HashMap<String, u64>) -> Vec<RawSample> {
    let mut out = Vec::new();
    let mut cur: Option<RawSample> = None;
    for line in text.lines() {
        if line.starts_with(['\t', ' ']) {
            let mut parts = line.split_whitespace();
            let addr = parts.next().and_then(|a| u64::from_str_radix(a, 16).ok());
            let dso = parts
                .next()
                .unwrap_or_default()
                .trim_start_matches('(')
                .trim_end_matches(')');
            if let (Some(s), Some(addr)) = (cur.as_mut(), addr) {
                // Kernel addresses live in the upper half and are printed as they are.
                if addr >= 0xffff_8000_0000_0000 {
                    s.kernel.push(addr);
                } else if let Some(bias) = biases.get(dso) {
                    s.user.push(addr.wrapping_add(*bias));
                } else {
                    s.user.push(addr);
                }
            }
        } else if !line.trim().is_empty() {
            out.extend(cur.take());
            let mut parts = line.split_whitespace().rev();
            let ids = parts.next().unwrap_or_default();
            let comm = parts.rev().collect::<Vec<_>>().join(" ");
            let (pid, tid) = ids.split_once('/').unwrap_or((ids, ids));
            cur = Some(RawSample {
                pid: pid.parse().unwrap_or(0),
                tid: tid.parse().unwrap_or(0),
                comm,
                kernel: Vec::new(),
                user: Vec::new(),
            });
        }
    }
    out.extend(cur);
    out
}

fn distinct_stacks(samples: &[RawSample]) -> u64 {
    let set: std::collections::HashSet<(u32, &[u64], &[u64])> = samples
        .iter()
        .map(|s| (s.pid, s.kernel.as_slice(), s.user.as_slice()))
        .collect();
    set.len() as u64
}

/// Samples as little-endian records: pid, tid, comm length (u8) and bytes, kernel and user
/// frame counts (u16), then the addresses.
fn write_capture(path: &Path, samples: &[RawSample]) -> Result<(), LabError> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for s in samples {
        let comm = &s.comm.as_bytes()[..s.comm.len().min(255)];
        out.write_all(&s.pid.to_le_bytes())?;
        out.write_all(&s.tid.to_le_bytes())?;
        out.write_all(&[comm.len() as u8])?;
        out.write_all(comm)?;
        out.write_all(&(s.kernel.len().min(u16::MAX as usize) as u16).to_le_bytes())?;
        out.write_all(&(s.user.len().min(u16::MAX as usize) as u16).to_le_bytes())?;
        for a in s.kernel.iter().chain(&s.user) {
            out.write_all(&a.to_le_bytes())?;
        }
    }
    out.flush()?;
    Ok(())
}

fn read_capture(path: &Path) -> Result<Vec<RawSample>, LabError> {
    let bytes = std::fs::read(path)?;
    let bad = || LabError::Setup(format!("{}: truncated capture", path.display()));
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], LabError> {
        let s = bytes.get(at..at + n).ok_or_else(bad)?;
        at += n;
        Ok(s)
    };
    let mut out = Vec::new();
    let u32_of = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let u16_of = |b: &[u8]| u16::from_le_bytes([b[0], b[1]]) as usize;
    while !bytes.is_empty() {
        let Ok(pid) = take(4).map(u32_of) else { break };
        let tid = u32_of(take(4)?);
        let comm_len = take(1)?[0] as usize;
        let comm = String::from_utf8_lossy(take(comm_len)?).into_owned();
        let nk = u16_of(take(2)?);
        let nu = u16_of(take(2)?);
        let mut addrs = take((nk + nu) * 8)?
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()));
        let kernel = addrs.by_ref().take(nk).collect();
        let user = addrs.collect();
        out.push(RawSample {
            pid,
            tid,
            comm,
            kernel,
            user,
        });
    }
    Ok(out)
}

/// The leaf frame with the most samples in folded text (kernel suffixes dropped).
fn hottest_leaf(folded: &str) -> String {
    let mut by_leaf: std::collections::HashMap<String, u64> = Default::default();
    for line in folded.lines() {
        let Some((stack, n)) = line.rsplit_once(' ') else {
            continue;
        };
        let leaf = stack.rsplit(';').next().unwrap_or_default();
        let leaf = leaf.trim_end_matches("_[k]").trim_end_matches("_[j]");
        *by_leaf.entry(leaf.to_string()).or_default() += n.parse::<u64>().unwrap_or(0);
    }
    by_leaf
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
        .map(|(k, _)| k)
        .unwrap_or_default()
}

/// Rounds of the processing comparison (each tool once per round, alternating which goes first).
const PROCESSING_ROUNDS: usize = 3;

fn processing(
    exe: &Path,
    dir: &Path,
    a: &ProfilerArgs,
    threads: usize,
    fold: FoldFn<'_>,
) -> Result<Processing, LabError> {
    if !has("perf") {
        return Err(LabError::Setup(
            "perf is needed to record the samples (Debian: linux-perf)".into(),
        ));
    }
    let data = dir.join("processing.perf.data");
    let mut workload = Command::new(exe)
        .args(["0", &threads.to_string()])
        .stdout(Stdio::null())
        .spawn()?;
    let pid = workload.id().to_string();
    let secs = (a.samples as f64 / 10_000.0).ceil().max(1.0);
    let rec = Command::new("perf")
        .args(["record", "-q", "-g", "-F", "20000", "-p", &pid, "-o"])
        .arg(&data)
        .args(["--", "sleep", &secs.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    // The process stays (stopped) so its mappings can be read while oxeye symbolizes.
    // SAFETY: plain signal to our own child.
    unsafe { libc::kill(workload.id() as i32, libc::SIGSTOP) };
    let result = (|| {
        rec.map_err(setup("perf record"))?;
        let script = Command::new("perf")
            .args(["script", "-F", "comm,pid,tid,ip,dso", "-i"])
            .arg(&data)
            .stderr(Stdio::null())
            .output()?;
        let biases = load_biases(workload.id());
        let samples = parse_addresses(&String::from_utf8_lossy(&script.stdout), &biases);
        drop(script);
        if samples.is_empty() {
            return Err(LabError::Setup("perf recorded no samples".into()));
        }
        let n = samples.len() as u64;
        let distinct_raw_stacks = distinct_stacks(&samples);
        // oxeye's input is what its sampler hands over: pid, tid, comm and addresses per sample
        // (the ring buffer and the stack maps), kept in a file as perf keeps its own.
        let capture = dir.join("processing.capture");
        write_capture(&capture, &samples)?;
        drop(samples);
        let oxeye_folded = dir.join("oxeye.folded");
        let run_oxeye = || -> Result<(f64, String), LabError> {
            let t = Instant::now();
            let samples = read_capture(&capture)?;
            let folded = fold(&samples).map_err(LabError::Setup)?;
            std::fs::write(&oxeye_folded, &folded)?;
            let secs = t.elapsed().as_secs_f64();
            Ok((secs, folded))
        };
        let perf_folded = dir.join("perf.folded");
        let run_perf = || -> Result<f64, LabError> {
            let t = Instant::now();
            let mut script = Command::new("perf")
                .args(["script", "-i"])
                .arg(&data)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()?;
            let status = Command::new("inferno-collapse-perf")
                .stdin(
                    script
                        .stdout
                        .take()
                        .ok_or_else(|| LabError::Setup("no pipe".into()))?,
                )
                .stdout(std::fs::File::create(&perf_folded)?)
                .status()?;
            script.wait()?;
            let secs = t.elapsed().as_secs_f64();
            if !status.success() {
                return Err(LabError::Setup(format!(
                    "inferno-collapse-perf failed: {status}"
                )));
            }
            Ok(secs)
        };
        let inferno = has("inferno-collapse-perf");
        // Alternating rounds, medians: the machine is shared, and neither tool should always
        // be the one that runs first (cold caches).
        let (mut ox_runs, mut perf_runs, mut folded) = (Vec::new(), Vec::new(), String::new());
        for round in 0..PROCESSING_ROUNDS {
            if inferno && round % 2 == 1 {
                perf_runs.push(run_perf()?);
            }
            let (secs, text) = run_oxeye()?;
            ox_runs.push(secs);
            folded = text;
            if inferno && round % 2 == 0 {
                perf_runs.push(run_perf()?);
            }
        }
        let oxeye_seconds = median(ox_runs.clone());
        let oxeye_capture_bytes = std::fs::metadata(&capture).map_or(0, |m| m.len());
        let perf_data_bytes = std::fs::metadata(&data).map_or(0, |m| m.len());
        let (perf_secs, perf_leaf) = if inferno {
            let text = std::fs::read_to_string(&perf_folded)?;
            (Some(median(perf_runs.clone())), Some(hottest_leaf(&text)))
        } else {
            (None, None)
        };
        let ox_rate = n as f64 / oxeye_seconds.max(1e-9);
        let perf_rate = perf_secs.map(|s| n as f64 / s.max(1e-9));
        Ok(Processing {
            samples: n,
            distinct_raw_stacks,
            oxeye_capture_bytes,
            perf_data_bytes,
            oxeye_seconds,
            oxeye_runs_s: ox_runs,
            oxeye_samples_per_s: ox_rate,
            perf_inferno_seconds: perf_secs,
            perf_inferno_runs_s: perf_runs,
            perf_inferno_samples_per_s: perf_rate,
            speedup: perf_rate.map(|p| ox_rate / p),
            oxeye_hottest_leaf: hottest_leaf(&folded),
            perf_hottest_leaf: perf_leaf,
            target_speedup: 2.5,
        })
    })();
    let _ = workload.kill();
    let _ = workload.wait();
    result
}

fn agent(
    oxeye: &Path,
    exe: &Path,
    dir: &Path,
    a: &ProfilerArgs,
    threads: usize,
) -> Result<Agent, LabError> {
    let server = match profiling_server(oxeye, exe, dir, 19, false)? {
        Ok(s) => s,
        Err(why) => {
            return Ok(Agent {
                seconds: a.agent_seconds,
                profiler: why,
                idle_cpu_pct: 0.0,
                busy_cpu_pct: 0.0,
                busy_host_cpu_pct: 0.0,
                peak_rss_mib: 0.0,
            });
        }
    };
    let pid = server.pid();
    let window = Duration::from_secs(a.agent_seconds.max(1));
    let measure = || {
        let (c0, t0) = (cpu_seconds(pid), Instant::now());
        std::thread::sleep(window);
        (cpu_seconds(pid) - c0) / t0.elapsed().as_secs_f64() * 100.0
    };
    let idle = measure();
    let mut busy_load = Command::new(exe)
        .args(["0", &threads.to_string()])
        .stdout(Stdio::null())
        .spawn()?;
    let busy = measure();
    let _ = busy_load.kill();
    let _ = busy_load.wait();
    let peak = rss_bytes(pid).1;
    let profiler = server.profiler_line.clone();
    server.stop();
    Ok(Agent {
        seconds: a.agent_seconds,
        profiler,
        idle_cpu_pct: idle,
        busy_cpu_pct: busy,
        busy_host_cpu_pct: busy / threads as f64,
        peak_rss_mib: peak as f64 / (1 << 20) as f64,
    })
}

fn pct(s: &Option<Slowdown>) -> String {
    s.as_ref()
        .map(|s| {
            let cost = s
                .cpu_cost_pct
                .map_or(String::new(), |c| format!(", own CPU {c:.2} %"));
            format!(
                "extra CPU {:+.2} % [{:+.2} .. {:+.2}], time {:+.2} % [{:+.2} .. {:+.2}]{cost}",
                s.extra_cpu_pct,
                s.extra_cpu_min_pct,
                s.extra_cpu_max_pct,
                s.slowdown_pct,
                s.paired_min_pct,
                s.paired_max_pct
            )
        })
        .unwrap_or_else(|| "n/a".into())
}

/// Runs the three benchmarks, writes the JSON and prints one line.
pub fn bench_profiler(
    oxeye: &Path,
    a: ProfilerArgs,
    fold: FoldFn<'_>,
) -> Result<ProfilerFigures, LabError> {
    let dir = tempfile_dir()?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let exe = compile_workload(&dir)?;
    let overhead = if a.no_overhead {
        None
    } else {
        let (o, why_not) = overhead(oxeye, &exe, &dir, &a, threads)?;
        if let Some(why) = &why_not {
            eprintln!("oxeye's profiler did not start, so its overhead is not measured: {why}");
        }
        Some(o)
    };
    let processing = if a.no_processing {
        None
    } else {
        Some(processing(&exe, &dir, &a, threads, fold)?)
    };
    let agent = if a.no_agent {
        None
    } else {
        Some(agent(oxeye, &exe, &dir, &a, threads)?)
    };
    let _ = std::fs::remove_dir_all(&dir);
    let figures = ProfilerFigures {
        cpus: threads,
        overhead,
        processing,
        agent,
    };
    crate::write_figures(&a.out, &figures)?;
    let mut parts = Vec::new();
    if let Some(o) = &figures.overhead {
        parts.push(format!(
            "overhead (median of {} rounds [range], each run against the runs alone around it) oxeye 19 Hz {}; 99 Hz {}; perf -F 99 {}; runs alone vary {:.1} % in time, {:.1} % in CPU (target: 19 Hz extra CPU <= {} %, 99 Hz <= perf: {})",
            o.repeats,
            pct(&o.oxeye_19hz),
            pct(&o.oxeye_99hz),
            pct(&o.perf_99hz),
            o.alone_spread_pct,
            o.alone_cpu_spread_pct,
            o.target_19hz_pct,
            match o.meets_target {
                Some(true) => "met",
                Some(false) => "missed",
                None => "not measured",
            },
        ));
    }
    if let Some(p) = &figures.processing {
        parts.push(format!(
            "{} samples folded at {:.0}/s by oxeye vs {} by perf script | inferno ({})",
            p.samples,
            p.oxeye_samples_per_s,
            p.perf_inferno_samples_per_s
                .map_or("n/a".into(), |r| format!("{r:.0}/s")),
            p.speedup
                .map_or("no inferno-collapse-perf".into(), |s| format!("{s:.1}x")),
        ));
    }
    if let Some(g) = &figures.agent {
        parts.push(format!(
            "agent at 19 Hz {:.2} % of a CPU idle, {:.2} % busy ({:.2} % of the host), peak RSS {:.0} MiB",
            g.idle_cpu_pct, g.busy_cpu_pct, g.busy_host_cpu_pct, g.peak_rss_mib,
        ));
    }
    println!("profiler: {} (JSON: {})", parts.join("; "), a.out.display());
    Ok(figures)
}

fn tempfile_dir() -> Result<PathBuf, LabError> {
    let dir = std::env::temp_dir().join(format!("oxeye-bench-profiler-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_script_addresses_split_into_kernel_and_user() {
        let text = "spin 10/11 \n\tffffffff8160c0dd ([kernel.kallsyms])\n\t1234 (/bin/spin)\n\n\
                    my prog 12/12 \n\t7f0000001000 ([unknown])\n";
        let biases = std::collections::HashMap::from([("/bin/spin".to_string(), 0x55d0c0de0000)]);
        let s = parse_addresses(text, &biases);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].pid, s[0].tid, s[0].comm.as_str()), (10, 11, "spin"));
        assert_eq!(s[0].kernel, [0xffffffff8160c0dd]);
        assert_eq!(s[0].user, [0x55d0c0de1234]);
        assert_eq!(s[1].comm, "my prog");
    }

    #[test]
    fn the_hottest_leaf_sums_lines() {
        assert_eq!(hottest_leaf("a;b 3\nc;b 2\na;d 4\n"), "b");
        assert_eq!(hottest_leaf("x;schedule_[k] 9\n"), "schedule");
    }

    #[test]
    fn a_capture_reads_back_as_written() {
        let dir = tempfile_dir().unwrap();
        let path = dir.join("capture-test");
        let samples = vec![
            RawSample {
                pid: 7,
                tid: 8,
                comm: "spin".into(),
                kernel: vec![0xffffffff81000000, 0xffffffff81000010],
                user: vec![0x401000],
            },
            RawSample {
                pid: 9,
                tid: 9,
                comm: String::new(),
                kernel: Vec::new(),
                user: Vec::new(),
            },
        ];
        write_capture(&path, &samples).unwrap();
        let back = read_capture(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(back.len(), 2);
        assert_eq!(
            (back[0].pid, back[0].tid, back[0].comm.as_str()),
            (7, 8, "spin")
        );
        assert_eq!(back[0].kernel, samples[0].kernel);
        assert_eq!(back[0].user, samples[0].user);
        assert!(back[1].comm.is_empty() && back[1].user.is_empty());
        assert_eq!(distinct_stacks(&samples), 2);
    }
}
