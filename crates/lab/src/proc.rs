//! Reading a process's CPU time and memory from /proc.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::LabError;

/// user + system CPU seconds of `pid` so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    stat_cpu(&format!("/proc/{pid}/stat")).map_or(0.0, |(_, s)| s)
}

/// CPU seconds used so far by `pid`'s threads, summed per thread name (`oxeye-flush`,
/// `tokio-rt-worker`, ...). Threads that exited are not counted.
pub fn thread_cpu_seconds(pid: u32) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        if let Some((name, s)) = stat_cpu(&t.path().join("stat").to_string_lossy()) {
            *out.entry(name).or_insert(0.0) += s;
        }
    }
    out
}

/// The command name and user + system CPU seconds of a `/proc/.../stat` file.
fn stat_cpu(path: &str) -> Option<(String, f64)> {
    let stat = std::fs::read_to_string(path).ok()?;
    let name = stat.get(stat.find('(')? + 1..stat.rfind(')')?)?.to_string();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th of them.
    let rest = stat.rsplit(')').next()?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((name, ticks / if hz > 0.0 { hz } else { 100.0 }))
}

/// (current RSS, peak RSS) in bytes.
pub fn rss_bytes(pid: u32) -> (u64, u64) {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return (0, 0);
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// An `oxeye up` started for a benchmark, on free ports and a fresh data directory.
pub struct Server {
    pub child: Child,
    pub grpc: String,
    /// The HTTP API's address (`127.0.0.1:port`).
    pub api: String,
    /// What `oxeye up` printed on its `profiler` line (`19 Hz per CPU, …` or `off: why`).
    pub profiler_line: String,
}

impl Server {
    pub fn start(exe: &Path, data_dir: &Path, extra: &[&str]) -> Result<Server, LabError> {
        // Held together while chosen, so the three are distinct.
        let listeners = [
            TcpListener::bind("127.0.0.1:0")?,
            TcpListener::bind("127.0.0.1:0")?,
            TcpListener::bind("127.0.0.1:0")?,
        ];
        let [api, grpc, http] = [0, 1, 2].map(|i| listeners[i].local_addr().map(|a| a.port()));
        let (api, grpc, http) = (api?, grpc?, http?);
        drop(listeners);
        let mut child = Command::new(exe)
            .arg("up")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--http-addr", &format!("127.0.0.1:{api}")])
            .args(["--otlp-grpc-addr", &format!("127.0.0.1:{grpc}")])
            .args(["--otlp-http-addr", &format!("127.0.0.1:{http}")])
            .args(extra)
            .env("OXEYE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut out = BufReader::new(
            child
                .stdout
                .take()
                .ok_or_else(|| LabError::Setup("no stdout".into()))?,
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut line = String::new();
        loop {
            line.clear();
            if out.read_line(&mut line)? == 0 || Instant::now() > deadline {
                let _ = child.kill();
                return Err(LabError::Setup("oxeye up exited before it was up".into()));
            }
            if line.starts_with("oxeye is up") {
                break;
            }
        }
        // The rest of the banner, up to the profiler's line.
        let mut profiler_line = String::new();
        loop {
            line.clear();
            if out.read_line(&mut line)? == 0 {
                break;
            }
            if let Some(rest) = line.trim_start().strip_prefix("profiler") {
                profiler_line = rest.trim().to_string();
                break;
            }
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = out.read_to_end(&mut sink);
        });
        Ok(Server {
            child,
            grpc: format!("127.0.0.1:{grpc}"),
            api: format!("127.0.0.1:{api}"),
            profiler_line,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stop(mut self) {
        // SAFETY: plain signal to our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}
