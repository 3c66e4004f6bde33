//! `oxeye lab bench profiler`: what profiling costs, against `perf` in the same run.
//!
//! - overhead: a compiled C workload (one busy thread per CPU, fixed work) runs alone, under
//!   `oxeye up` profiling every process at 19 Hz and at 99 Hz, and under `perf record -a -g
//!   -F 99`; each run's throughput is compared with the median of the runs alone;
//! - processing: one `perf record` of the workload is turned into folded stacks by `perf script |
//!   inferno-collapse-perf` and by oxeye's symbolize + aggregate path (fed the same addresses);
//! - agent: `oxeye up`'s own CPU and peak RSS while it profiles the host at 19 Hz, idle and busy.

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
    pub overhead: Overhead,
    pub processing: Processing,
    pub agent: Agent,
}

#[derive(Debug, Serialize)]
pub struct Overhead {
    pub work_per_thread: u64,
    pub threads: usize,
    pub repeats: usize,
    /// Work units per second (all threads), median of the runs.
    pub alone_units_per_s: f64,
    /// `None` when the profiler could not start (not root, no BTF) or the tool is missing.
    pub oxeye_19hz: Option<Slowdown>,
    pub oxeye_99hz: Option<Slowdown>,
    pub perf_99hz: Option<Slowdown>,
    pub target_19hz_pct: f64,
}

#[derive(Debug, Serialize)]
pub struct Slowdown {
    pub units_per_s: f64,
    pub slowdown_pct: f64,
}

#[derive(Debug, Serialize)]
pub struct Processing {
    pub samples: u64,
    pub oxeye_seconds: f64,
    pub oxeye_samples_per_s: f64,
    pub perf_inferno_seconds: Option<f64>,
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
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < threads && i < 256; i++) pthread_create(&t[i], 0, run, (void *)(unsigned long)(i + 1));
    for (int i = 0; i < threads && i < 256; i++) pthread_join(t[i], 0);
    clock_gettime(CLOCK_MONOTONIC, &b);
    /* The workload's own time, so a wrapper's start and exit (perf record's) do not count. */
    printf("%.9f %lu\n", (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9, sink);
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

/// Seconds one workload run took by its own clock, optionally wrapped (`perf record … --`).
fn run_workload(exe: &Path, work: u64, threads: usize, wrap: &[&str]) -> Result<f64, LabError> {
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
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| LabError::Setup("the workload printed no time".into()))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// An `oxeye up` with the profiler at `hz`, or why it has no profiler.
fn profiling_server(oxeye: &Path, dir: &Path, hz: u32) -> Result<Result<Server, String>, LabError> {
    let server = Server::start(
        oxeye,
        &dir.join(format!("data-{hz}")),
        &["--profile-hz", &hz.to_string(), "--off-cpu", "off"],
    )?;
    let line = server.profiler_line.clone();
    if line.starts_with("off") {
        server.stop();
        return Ok(Err(line));
    }
    // Startup (opening the store, loading BPF) is not what is measured.
    std::thread::sleep(Duration::from_secs(2));
    Ok(Ok(server))
}

fn overhead(
    oxeye: &Path,
    exe: &Path,
    dir: &Path,
    a: &ProfilerArgs,
    threads: usize,
) -> Result<(Overhead, Option<String>), LabError> {
    let units = (a.work * threads as u64) as f64;
    let (mut alone, mut ox19, mut ox99, mut perf) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut why_not = None;
    let perf_ok = has("perf");
    let perf_data = dir.join("overhead.perf.data");
    let perf_data = perf_data.to_string_lossy().into_owned();
    for _ in 0..a.repeats.max(1) {
        alone.push(run_workload(exe, a.work, threads, &[])?);
        for (hz, into) in [(19, &mut ox19), (99, &mut ox99)] {
            match profiling_server(oxeye, dir, hz)? {
                Ok(server) => {
                    into.push(run_workload(exe, a.work, threads, &[])?);
                    server.stop();
                }
                Err(why) => why_not = Some(why),
            }
        }
        if perf_ok {
            perf.push(run_workload(
                exe,
                a.work,
                threads,
                &[
                    "perf", "record", "-q", "-a", "-g", "-F", "99", "-o", &perf_data, "--",
                ],
            )?);
        }
    }
    let base = units / median(alone);
    let slow = |v: Vec<f64>| {
        (!v.is_empty()).then(|| {
            let ups = units / median(v);
            Slowdown {
                units_per_s: ups,
                slowdown_pct: (base / ups - 1.0) * 100.0,
            }
        })
    };
    Ok((
        Overhead {
            work_per_thread: a.work,
            threads,
            repeats: a.repeats.max(1),
            alone_units_per_s: base,
            oxeye_19hz: slow(ox19),
            oxeye_99hz: slow(ox99),
            perf_99hz: slow(perf),
            target_19hz_pct: 0.5,
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
        if samples.is_empty() {
            return Err(LabError::Setup("perf recorded no samples".into()));
        }
        let t = Instant::now();
        let folded = fold(&samples).map_err(LabError::Setup)?;
        let oxeye_seconds = t.elapsed().as_secs_f64();
        let n = samples.len() as u64;
        drop(samples);
        let (perf_secs, perf_leaf) = if has("inferno-collapse-perf") {
            let t = Instant::now();
            let mut script = Command::new("perf")
                .args(["script", "-i"])
                .arg(&data)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()?;
            let collapse = Command::new("inferno-collapse-perf")
                .stdin(
                    script
                        .stdout
                        .take()
                        .ok_or_else(|| LabError::Setup("no pipe".into()))?,
                )
                .output()?;
            script.wait()?;
            let secs = t.elapsed().as_secs_f64();
            (
                Some(secs),
                Some(hottest_leaf(&String::from_utf8_lossy(&collapse.stdout))),
            )
        } else {
            (None, None)
        };
        let ox_rate = n as f64 / oxeye_seconds.max(1e-9);
        let perf_rate = perf_secs.map(|s| n as f64 / s.max(1e-9));
        Ok(Processing {
            samples: n,
            oxeye_seconds,
            oxeye_samples_per_s: ox_rate,
            perf_inferno_seconds: perf_secs,
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
    let server = match profiling_server(oxeye, dir, 19)? {
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
        .map(|s| format!("{:+.2} %", s.slowdown_pct))
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
    let (overhead, why_not) = overhead(oxeye, &exe, &dir, &a, threads)?;
    if let Some(why) = &why_not {
        eprintln!("oxeye's profiler did not start, so its overhead is not measured: {why}");
    }
    let processing = processing(&exe, &dir, &a, threads, fold)?;
    let agent = agent(oxeye, &exe, &dir, &a, threads)?;
    let _ = std::fs::remove_dir_all(&dir);
    let figures = ProfilerFigures {
        cpus: threads,
        overhead,
        processing,
        agent,
    };
    if let Some(parent) = a.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut f = std::fs::File::create(&a.out)?;
    f.write_all(
        serde_json::to_string_pretty(&figures)
            .map_err(|e| LabError::Setup(e.to_string()))?
            .as_bytes(),
    )?;
    let o = &figures.overhead;
    let p = &figures.processing;
    println!(
        "profiler: slowdown oxeye 19 Hz {}, 99 Hz {}, perf -F 99 {}; {} samples folded at {:.0}/s by oxeye vs {} by perf script | inferno ({}); agent at 19 Hz {:.2} % CPU idle, {:.2} % busy, peak RSS {:.0} MiB (JSON: {})",
        pct(&o.oxeye_19hz),
        pct(&o.oxeye_99hz),
        pct(&o.perf_99hz),
        p.samples,
        p.oxeye_samples_per_s,
        p.perf_inferno_samples_per_s
            .map_or("n/a".into(), |r| format!("{r:.0}/s")),
        p.speedup
            .map_or("no inferno-collapse-perf".into(), |s| format!("{s:.1}x")),
        figures.agent.idle_cpu_pct,
        figures.agent.busy_cpu_pct,
        figures.agent.peak_rss_mib,
        a.out.display(),
    );
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
}
