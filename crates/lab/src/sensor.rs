//! `oxeye lab bench sensor`: what the security sensor costs the processes it watches.
//!
//! Syscall storms (trivial `getpid`, open/read/close of a small file, TCP connect/accept/close to
//! a local listener) run in a child process, alone, under a fresh `oxeye up` whose security sensor
//! is on (profiler off), under an empty program on the same tracepoint (the floor any
//! syscall-level hook pays here), and under auditd watching the same syscalls, in one run. Each storm is
//! timed inside the child (ns per iteration); the figure is the median over rounds. The server's
//! CPU time and RSS while the storms ran are reported too.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::LabError;
use crate::proc::{Server, cpu_seconds, rss_bytes};

#[derive(clap::Args, Clone, Debug)]
pub struct SensorArgs {
    /// Iterations of each storm per round.
    #[arg(long, default_value_t = 200_000)]
    pub ops: u64,
    /// Rounds per storm and setup; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Skip the auditd comparison.
    #[arg(long)]
    pub no_auditd: bool,
    /// Where to write the JSON figures.
    #[arg(long, default_value = "target/lab/bench-sensor.json")]
    pub out: PathBuf,
    /// Data directory for the server under test [default: a fresh temporary one].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// One kind of syscall storm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Storm {
    /// Raw getpid: the cheapest syscall there is, so the worst case for any per-syscall hook.
    Getpid,
    /// open + read 4 KiB + close of one file (three syscalls an iteration).
    OpenReadClose,
    /// socket + connect + close (reset, no TIME_WAIT) to a listener in the same process, which
    /// accepts and closes.
    ConnectClose,
}

impl Storm {
    pub const ALL: [Storm; 3] = [Storm::Getpid, Storm::OpenReadClose, Storm::ConnectClose];

    fn name(self) -> String {
        crate::cli_name(self)
    }

    /// Connects are far slower than the rest: fewer of them keep each round short.
    fn ops(self, ops: u64) -> u64 {
        match self {
            Storm::Getpid => ops * 10,
            Storm::OpenReadClose => ops,
            Storm::ConnectClose => (ops / 10).max(1),
        }
    }
}

/// Runs one storm in this process and prints `{"ns_per_op": …}` (the child side of the bench).
pub fn storm_child(kind: Storm, ops: u64) -> Result<(), LabError> {
    let ns = match kind {
        Storm::Getpid => {
            let t = Instant::now();
            for _ in 0..ops {
                // SAFETY: a raw getpid, no libc caching.
                unsafe { libc::syscall(libc::SYS_getpid) };
            }
            t.elapsed()
        }
        Storm::OpenReadClose => {
            let dir = tempfile_dir()?;
            let path = dir.join("storm");
            std::fs::write(&path, vec![7u8; 4096])?;
            let mut buf = vec![0u8; 4096];
            let t = Instant::now();
            for _ in 0..ops {
                let mut f = std::fs::File::open(&path)?;
                let _ = f.read(&mut buf)?;
            }
            let d = t.elapsed();
            let _ = std::fs::remove_dir_all(&dir);
            d
        }
        Storm::ConnectClose => {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            let addr = listener.local_addr()?;
            let acceptor = std::thread::spawn(move || {
                for _ in 0..ops {
                    match listener.accept() {
                        Ok((s, _)) => drop(s),
                        Err(_) => break,
                    }
                }
            });
            let t = Instant::now();
            for _ in 0..ops {
                let mut s = TcpStream::connect(addr)?;
                let _ = s.write(&[]);
                reset_on_close(&s);
            }
            let d = t.elapsed();
            let _ = acceptor.join();
            d
        }
    };
    println!(
        "{{\"ns_per_op\":{:.1}}}",
        ns.as_nanos() as f64 / ops.max(1) as f64
    );
    Ok(())
}

/// Linger 0: `close` resets the connection instead of leaving it in TIME_WAIT, so thousands of
/// connects in a row do not run the machine out of ephemeral ports (which would slow every
/// later connect and swamp what is being measured).
pub(crate) fn reset_on_close(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a correctly sized linger struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn tempfile_dir() -> Result<PathBuf, LabError> {
    let dir = std::env::temp_dir().join(format!("oxeye-storm-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Runs `exe lab storm KIND OPS` and returns its ns per iteration.
fn run_storm(exe: &Path, kind: Storm, ops: u64) -> Result<f64, LabError> {
    let out = Command::new(exe)
        .args(["lab", "storm", &kind.name(), &ops.to_string()])
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        return Err(LabError::Setup(format!(
            "the {} storm failed ({})",
            kind.name(),
            out.status
        )));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| LabError::Setup(format!("storm output: {e}")))?;
    v["ns_per_op"]
        .as_f64()
        .ok_or_else(|| LabError::Setup("storm output has no ns_per_op".into()))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The syscalls oxeye reports events for; auditd is given the same list.
const AUDITED_SYSCALLS: &str = "execve,execveat,open,openat,openat2,creat,connect,accept,accept4,\
setuid,setgid,setreuid,setregid,setresuid,setresgid,setfsuid,setfsgid,setgroups,capset,ptrace,\
init_module,finit_module";
const AUDIT_KEY: &str = "oxeye-bench";

/// auditd with one rule watching [`AUDITED_SYSCALLS`]; undone on drop.
struct Auditd {
    daemon: Option<Child>,
    was_enabled: String,
    was_backlog: String,
}

fn auditctl(args: &[&str]) -> Result<String, String> {
    let out = Command::new("auditctl")
        .args(args)
        .output()
        .map_err(|e| format!("auditctl: {e} (apt install auditd)"))?;
    if !out.status.success() {
        return Err(format!(
            "auditctl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn audit_status(field: &str) -> Result<String, String> {
    let s = auditctl(&["-s"])?;
    Ok(s.lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_string()))
        .unwrap_or_default())
}

fn rule_args(op: &str) -> Vec<String> {
    [
        op,
        "always,exit",
        "-F",
        "arch=b64",
        "-S",
        AUDITED_SYSCALLS,
        "-k",
        AUDIT_KEY,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

impl Auditd {
    fn start() -> Result<Auditd, String> {
        let was_enabled = audit_status("enabled ")?;
        let was_backlog = audit_status("backlog_limit ")?;
        let running = audit_status("pid ")?.parse::<u32>().unwrap_or(0) != 0;
        let mut daemon = None;
        if !running {
            let child = Command::new("auditd")
                .arg("-n")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("auditd: {e} (apt install auditd)"))?;
            daemon = Some(child);
            let deadline = Instant::now() + Duration::from_secs(10);
            while audit_status("pid ")?.parse::<u32>().unwrap_or(0) == 0 {
                if Instant::now() > deadline {
                    return Err("auditd did not register with the kernel in 10 s".into());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let me = Auditd {
            daemon,
            was_enabled,
            was_backlog,
        };
        auditctl(&["-e", "1"])?;
        // Debian's default rules ask for this backlog.
        auditctl(&["-b", "8192"])?;
        let add = rule_args("-a");
        auditctl(&add.iter().map(String::as_str).collect::<Vec<_>>())?;
        Ok(me)
    }
}

impl Drop for Auditd {
    fn drop(&mut self) {
        let del = rule_args("-d");
        let _ = auditctl(&del.iter().map(String::as_str).collect::<Vec<_>>());
        if !self.was_backlog.is_empty() {
            let _ = auditctl(&["-b", &self.was_backlog]);
        }
        if let Some(mut d) = self.daemon.take() {
            // SAFETY: plain signal to our own child.
            unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
            let _ = d.wait();
        }
        if !self.was_enabled.is_empty() {
            let _ = auditctl(&["-e", &self.was_enabled]);
        }
    }
}

/// BPF programs `pid` holds open (from its fdinfo), which says whether its sensor is attached.
fn bpf_programs(pid: u32) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return 0;
    };
    fds.flatten()
        .filter(|f| {
            std::fs::read_to_string(f.path())
                .is_ok_and(|s| s.lines().any(|l| l.starts_with("prog_type:")))
        })
        .count()
}

#[derive(Debug, Serialize)]
pub struct StormFigures {
    pub storm: Storm,
    pub ops: u64,
    pub alone_ns_per_op: f64,
    pub oxeye_ns_per_op: f64,
    pub oxeye_slowdown_pct: f64,
    /// Under an empty program on the same tracepoint (sys_exit): what any syscall-level hook
    /// costs here before it does anything.
    pub empty_hook_ns_per_op: Option<f64>,
    pub empty_hook_slowdown_pct: Option<f64>,
    pub auditd_ns_per_op: Option<f64>,
    pub auditd_slowdown_pct: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct SensorFigures {
    pub storms: Vec<StormFigures>,
    pub rounds: usize,
    /// BPF programs the server had loaded while the storms ran.
    pub oxeye_bpf_programs: usize,
    /// Server CPU seconds and CPU % of one core while its storms ran.
    pub oxeye_cpu_seconds: f64,
    pub oxeye_cpu_pct: f64,
    pub oxeye_peak_rss_mib: f64,
    /// Why the empty hook could not be attached, when it could not.
    pub empty_hook_unavailable: Option<String>,
    /// Why auditd was left out, when it was.
    pub auditd_unavailable: Option<String>,
    pub target_slowdown_pct: f64,
    /// oxeye slowed the target storms (open/read/close, connect/close) less than auditd did.
    /// getpid is reported but not judged: it is the worst case for any per-syscall hook, not
    /// one of the storms the targets name.
    pub beats_auditd: Option<bool>,
    /// Under `target_slowdown_pct` on the same storms.
    pub meets_target: bool,
}

/// Attaches an empty program to the `sys_exit` tracepoint, supplied by the binary (lab links no
/// BPF); the hook stays attached until the returned value is dropped.
pub type EmptyHookFn<'a> = &'a dyn Fn() -> Result<Box<dyn std::any::Any>, String>;

/// Runs every storm alone, under `oxeye up`, under the empty hook and under auditd; writes JSON
/// and prints one line.
pub fn bench_sensor(
    exe: &Path,
    a: SensorArgs,
    empty_hook: EmptyHookFn<'_>,
) -> Result<SensorFigures, LabError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(LabError::Setup(
            "the sensor benchmark needs root: the sensor's eBPF programs and auditd both do".into(),
        ));
    }
    let rounds = a.rounds.max(1);
    let storm_round = |out: &mut Vec<Vec<f64>>| -> Result<(), LabError> {
        for (i, s) in Storm::ALL.iter().enumerate() {
            out[i].push(run_storm(exe, *s, s.ops(a.ops))?);
        }
        Ok(())
    };
    let mut alone = vec![Vec::new(); Storm::ALL.len()];
    let mut oxeye = vec![Vec::new(); Storm::ALL.len()];
    let mut audit = vec![Vec::new(); Storm::ALL.len()];
    eprintln!("storms alone…");
    for _ in 0..rounds {
        storm_round(&mut alone)?;
    }

    eprintln!("storms under oxeye up (security sensor on, profiler off)…");
    let tmp = std::env::temp_dir().join(format!("oxeye-bench-sensor-{}", std::process::id()));
    let data_dir = a.data_dir.clone().unwrap_or_else(|| tmp.clone());
    let server = Server::start(exe, &data_dir, &["--profile-hz", "0", "--off-cpu", "off"])?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while bpf_programs(server.pid()) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let programs = bpf_programs(server.pid());
    if programs == 0 {
        server.stop();
        return Err(LabError::Setup(
            "oxeye up loaded no BPF program in 20 s: is its security sensor on?".into(),
        ));
    }
    let cpu0 = cpu_seconds(server.pid());
    let t0 = Instant::now();
    let mut result = Ok(());
    for _ in 0..rounds {
        for (i, s) in Storm::ALL.iter().enumerate() {
            match run_storm(exe, *s, s.ops(a.ops)) {
                Ok(v) => oxeye[i].push(v),
                Err(e) => result = Err(e),
            }
        }
    }
    let cpu = cpu_seconds(server.pid()) - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    let (_, peak_rss) = rss_bytes(server.pid());
    server.stop();
    if a.data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result?;

    eprintln!("storms under an empty sys_exit hook (the floor of any syscall-level sensor)…");
    let mut empty = vec![Vec::new(); Storm::ALL.len()];
    let empty_hook_unavailable = match empty_hook() {
        Ok(hook) => {
            for _ in 0..rounds {
                storm_round(&mut empty)?;
            }
            drop(hook);
            None
        }
        Err(e) => Some(e),
    };

    let mut auditd_unavailable = None;
    if a.no_auditd {
        auditd_unavailable = Some("--no-auditd".into());
    } else {
        eprintln!("storms under auditd watching the same syscalls…");
        match Auditd::start() {
            Ok(guard) => {
                let mut r = Ok(());
                for _ in 0..rounds {
                    for (i, s) in Storm::ALL.iter().enumerate() {
                        match run_storm(exe, *s, s.ops(a.ops)) {
                            Ok(v) => audit[i].push(v),
                            Err(e) => r = Err(e),
                        }
                    }
                }
                drop(guard);
                r?;
            }
            Err(e) => auditd_unavailable = Some(e),
        }
    }
    // Alone again, so drift of the machine over the run shows in the baseline too.
    for _ in 0..rounds {
        storm_round(&mut alone)?;
    }

    let slowdown = |with: f64, base: f64| (with / base - 1.0) * 100.0;
    let storms: Vec<StormFigures> = Storm::ALL
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let base = median(alone[i].clone());
            let ox = median(oxeye[i].clone());
            let au = (!audit[i].is_empty()).then(|| median(audit[i].clone()));
            let floor = (!empty[i].is_empty()).then(|| median(empty[i].clone()));
            StormFigures {
                storm: *s,
                ops: s.ops(a.ops),
                alone_ns_per_op: base,
                oxeye_ns_per_op: ox,
                oxeye_slowdown_pct: slowdown(ox, base),
                empty_hook_ns_per_op: floor,
                empty_hook_slowdown_pct: floor.map(|v| slowdown(v, base)),
                auditd_ns_per_op: au,
                auditd_slowdown_pct: au.map(|v| slowdown(v, base)),
            }
        })
        .collect();
    let target = 5.0;
    let beats_auditd = auditd_unavailable.is_none().then(|| {
        storms.iter().filter(|s| s.storm != Storm::Getpid).all(|s| {
            s.auditd_slowdown_pct
                .is_some_and(|au| s.oxeye_slowdown_pct < au)
        })
    });
    let figures = SensorFigures {
        meets_target: storms
            .iter()
            .filter(|s| s.storm != Storm::Getpid)
            .all(|s| s.oxeye_slowdown_pct < target),
        storms,
        rounds,
        oxeye_bpf_programs: programs,
        oxeye_cpu_seconds: cpu,
        oxeye_cpu_pct: if wall > 0.0 { cpu / wall * 100.0 } else { 0.0 },
        oxeye_peak_rss_mib: peak_rss as f64 / 1048576.0,
        empty_hook_unavailable,
        auditd_unavailable,
        target_slowdown_pct: target,
        beats_auditd,
    };
    crate::write_figures(&a.out, &figures)?;
    let parts: Vec<String> = figures
        .storms
        .iter()
        .map(|s| {
            let pct = |p: Option<f64>| match p {
                Some(p) => format!("{p:+.0} %"),
                None => "n/a".into(),
            };
            format!(
                "{} {:.0} ns: oxeye {:+.0} % (empty hook {}), auditd {}",
                s.storm.name(),
                s.alone_ns_per_op,
                s.oxeye_slowdown_pct,
                pct(s.empty_hook_slowdown_pct),
                pct(s.auditd_slowdown_pct)
            )
        })
        .collect();
    println!(
        "sensor overhead: {}; oxeye server {:.1} % CPU, {:.0} MiB peak RSS (target < {target} % on open/connect storms: {}; beats auditd on them: {}) → {}",
        parts.join("; "),
        figures.oxeye_cpu_pct,
        figures.oxeye_peak_rss_mib,
        if figures.meets_target {
            "met"
        } else {
            "missed"
        },
        match figures.beats_auditd {
            Some(true) => "yes",
            Some(false) => "no",
            None => "not measured",
        },
        a.out.display()
    );
    Ok(figures)
}
