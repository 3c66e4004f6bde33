//! `oxeye doctor`: what this host allows and how the store is doing, one line per check.

use std::net::TcpListener;
use std::path::Path;

use crate::DoctorArgs;
use crate::up::resolve;

enum Level {
    Ok,
    Warn,
    Fail,
}

fn line(level: Level, what: &str, detail: impl std::fmt::Display) {
    let mark = match level {
        Level::Ok => "ok  ",
        Level::Warn => "warn",
        Level::Fail => "FAIL",
    };
    println!("[{mark}] {what:<12} {detail}");
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim()
        .to_string();
    u64::from_str_radix(&hex, 16).ok()
}

fn mounted(fs_type: &str) -> Option<String> {
    let m = std::fs::read_to_string("/proc/mounts").ok()?;
    m.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|c| c.len() > 2 && c[2] == fs_type)
        .map(|c| c[1].to_string())
}

fn free_bytes(dir: &Path) -> Option<u64> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// Whether `oxeye up` would profile: the prerequisites, then a real load of the programs (the
/// verifier has the last word), released at once.
fn profiling(s: &crate::config::Settings) {
    if s.profile_hz == 0 {
        line(Level::Ok, "profiling", "off (--profile-hz 0)");
        return;
    }
    if let Err(e) = ebpf::check_prerequisites() {
        line(Level::Warn, "profiling", format!("cannot run: {e}"));
        return;
    }
    match ebpf::CpuSampler::start(ebpf::CpuSamplerConfig {
        frequency_hz: s.profile_hz,
        ..Default::default()
    }) {
        Ok(_) => line(
            Level::Ok,
            "profiling",
            format!(
                "CPU sampler loads: {} Hz per CPU on {} CPUs",
                s.profile_hz,
                ebpf::online_cpus().map_or(0, |c| c.len())
            ),
        ),
        Err(e) => {
            line(Level::Warn, "profiling", format!("cannot run: {e}"));
            return;
        }
    }
    if s.off_cpu == crate::profiler::OffCpuMode::Off {
        line(Level::Ok, "off-cpu", "off (--off-cpu off)");
        return;
    }
    match ebpf::OffCpuProfiler::start(ebpf::OffCpuConfig {
        only_pids: Some(Vec::new()),
        ..Default::default()
    }) {
        Ok(_) => line(
            Level::Ok,
            "off-cpu",
            match s.off_cpu {
                crate::profiler::OffCpuMode::All => "sched_switch program loads: every process",
                _ => "sched_switch program loads: processes that sent spans in the last 10 min",
            },
        ),
        Err(e) => line(Level::Warn, "off-cpu", format!("cannot run: {e}")),
    }
}

pub fn run(a: DoctorArgs) -> anyhow::Result<()> {
    let s = resolve(&a.up)?;
    let mut failures = 0;
    line(Level::Ok, "kernel", kernel_release());
    if Path::new("/sys/kernel/btf/vmlinux").exists() {
        line(
            Level::Ok,
            "btf",
            "/sys/kernel/btf/vmlinux present (CO-RE eBPF programs can load)",
        );
    } else {
        line(
            Level::Warn,
            "btf",
            "no /sys/kernel/btf/vmlinux: eBPF profiling and the sensor will stay off",
        );
    }
    let euid = unsafe { libc::geteuid() };
    let caps = effective_caps().unwrap_or(0);
    let cap_bpf = caps & (1 << 39) != 0;
    let cap_perfmon = caps & (1 << 38) != 0;
    let cap_sys_admin = caps & (1 << 21) != 0;
    if euid == 0 || (cap_bpf && cap_perfmon) || cap_sys_admin {
        line(
            Level::Ok,
            "privileges",
            format!("uid {euid}, may load eBPF programs"),
        );
    } else {
        line(
            Level::Warn,
            "privileges",
            format!("uid {euid} without CAP_BPF+CAP_PERFMON: eBPF features off (run as root)"),
        );
    }
    match mounted("tracefs") {
        Some(p) => line(Level::Ok, "tracefs", format!("mounted at {p}")),
        None => line(
            Level::Warn,
            "tracefs",
            "not mounted (eBPF tracepoints need it at /sys/kernel/tracing: mount -t tracefs nodev /sys/kernel/tracing)",
        ),
    }
    profiling(&s);
    let paranoid =
        std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid").unwrap_or_default();
    line(
        Level::Ok,
        "perf_event",
        format!("perf_event_paranoid = {}", paranoid.trim()),
    );
    for (what, addr, knob) in [
        ("api port", Some(s.http_addr), "--http-addr"),
        ("otlp grpc", s.otlp_grpc_addr, "--otlp-grpc-addr"),
        ("otlp http", s.otlp_http_addr, "--otlp-http-addr"),
    ] {
        match addr {
            None => line(Level::Ok, what, "off"),
            Some(addr) => match TcpListener::bind(addr) {
                Ok(_) => line(Level::Ok, what, format!("{addr} is free")),
                Err(e) => {
                    failures += 1;
                    line(
                        Level::Fail,
                        what,
                        format!("{addr}: {e} (another oxeye running? change with {knob})"),
                    )
                }
            },
        }
    }
    let dir = &s.data_dir;
    if !dir.join("wal").is_dir() {
        line(
            Level::Ok,
            "store",
            format!("{} has no store yet; `oxeye up` creates it", dir.display()),
        );
    } else {
        match store::Store::open_read_only(dir) {
            Ok(st) => {
                let stats = st.stats();
                let files: usize = stats.tables.values().map(|t| t.files).sum();
                let bytes: u64 = stats.tables.values().map(|t| t.file_bytes).sum();
                let rows: usize = stats.tables.values().map(|t| t.memory_rows).sum();
                line(
                    Level::Ok,
                    "store",
                    format!(
                        "{}: {files} parquet files ({:.1} MiB), {rows} rows in the WAL ({:.1} MiB)",
                        dir.display(),
                        bytes as f64 / 1048576.0,
                        stats.wal_bytes as f64 / 1048576.0
                    ),
                );
                if stats.torn_tail_bytes > 0 {
                    line(
                        Level::Warn,
                        "wal",
                        format!(
                            "{} bytes of torn tail (never acknowledged); cut at next start",
                            stats.torn_tail_bytes
                        ),
                    );
                }
            }
            Err(e) => {
                failures += 1;
                line(Level::Fail, "store", e);
            }
        }
    }
    let probe = if dir.exists() {
        dir.clone()
    } else {
        std::path::PathBuf::from(".")
    };
    match free_bytes(&probe) {
        Some(b) if b < 1 << 30 => line(
            Level::Warn,
            "disk",
            format!(
                "{:.0} MiB free under {}",
                b as f64 / 1048576.0,
                probe.display()
            ),
        ),
        Some(b) => line(
            Level::Ok,
            "disk",
            format!(
                "{:.1} GiB free under {}",
                b as f64 / 1073741824.0,
                probe.display()
            ),
        ),
        None => line(Level::Warn, "disk", "cannot read free space"),
    }
    if failures > 0 {
        anyhow::bail!("{failures} check(s) failed");
    }
    Ok(())
}
