//! `oxeye lab bench sensor-rate`: how many security events a second the sensor sustains without
//! losing any, and what oxeye costs while it does.
//!
//! A driver process (`oxeye lab storm-paced`) makes events at a paced rate for a few seconds —
//! execs of `/bin/true` (an exec and an exit event each), TCP connects to a listener of its own
//! (a connect and an accept event each), or opens of a watched file (`/etc/shadow`, one event
//! each) — under a fresh `oxeye up` (sensor on, profiler off). After each step the bench counts
//! the driver's events in the store (`/api/v1/query`) and reads the kernel's ring-buffer drop
//! counter and the agent's pipeline drops (`/api/v1/security/status`). The rate doubles until a
//! step loses an event, drops one, or the driver cannot make the rate; the figure is the highest
//! rate with nothing lost, with oxeye's CPU and peak RSS during that step.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::LabError;
use crate::proc::{Server, cpu_seconds, rss_bytes};

#[derive(clap::Args, Clone, Debug)]
pub struct SensorRateArgs {
    /// Event kinds to drive, each on its own [default: all].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub kinds: Vec<RateStorm>,
    /// The first step's rate, in events per second.
    #[arg(long, default_value_t = 1000)]
    pub start_rate: u64,
    /// No step goes above this rate.
    #[arg(long, default_value_t = 1_024_000)]
    pub max_rate: u64,
    /// How long each step drives events.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Where to write the JSON figures.
    #[arg(long, default_value = "target/lab/bench-sensor-rate.json")]
    pub out: PathBuf,
    /// Data directory for the server under test [default: a fresh temporary one].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// What the driver does to make events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum RateStorm {
    /// fork + exec of /bin/true: an exec and an exit event.
    Exec,
    /// A TCP connect to a listener in the driver: a connect and an accept event.
    Connect,
    /// An open of /etc/shadow (watched by default): one file_open event.
    Open,
}

impl RateStorm {
    pub const ALL: [RateStorm; 3] = [RateStorm::Exec, RateStorm::Connect, RateStorm::Open];

    fn name(self) -> String {
        crate::cli_name(self)
    }

    fn events_per_op(self) -> u64 {
        match self {
            RateStorm::Open => 1,
            _ => 2,
        }
    }

    /// The driver's events of this kind, as the store's `security_events` has them.
    fn stored_sql(self, driver: u32) -> String {
        let which = match self {
            // The children's execs and exits; not the driver's own.
            RateStorm::Exec => format!("Ppid = {driver} AND Kind IN ('exec', 'exit')"),
            RateStorm::Connect => format!("Pid = {driver} AND Kind IN ('connect', 'accept')"),
            RateStorm::Open => format!("Pid = {driver} AND Kind = 'file_open'"),
        };
        format!("SELECT COUNT(*) AS n FROM security_events WHERE {which}")
    }
}

const WATCHED_FILE: &str = "/etc/shadow";

/// The driver: makes `kind` events at `events_per_sec` for `seconds`, paced in 1 ms slices, and
/// prints `{"ops", "events", "seconds"}`.
pub fn storm_paced(kind: RateStorm, events_per_sec: u64, seconds: f64) -> Result<(), LabError> {
    let ops_per_sec = (events_per_sec / kind.events_per_op()).max(1) as f64;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    if kind == RateStorm::Connect {
        std::thread::spawn(move || {
            while let Ok((s, _)) = listener.accept() {
                drop(s);
            }
        });
    }
    let total = Duration::from_secs_f64(seconds.max(0.01));
    let start = Instant::now();
    let done = std::sync::atomic::AtomicU64::new(0);
    // An exec waits for its child: several threads keep the rate up; the others use both cores.
    let threads = if kind == RateStorm::Exec { 4 } else { 2 };
    let work = || -> Result<(), LabError> {
        use std::sync::atomic::Ordering;
        loop {
            let elapsed = start.elapsed();
            if elapsed >= total {
                return Ok(());
            }
            let due = (elapsed.as_secs_f64() * ops_per_sec) as u64 + 1;
            // Claim the next op if it is due.
            let op = done.load(Ordering::Relaxed);
            if op >= due {
                std::thread::sleep(Duration::from_micros(500));
                continue;
            }
            if done
                .compare_exchange(op, op + 1, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            match kind {
                RateStorm::Exec => {
                    Command::new("/bin/true")
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()?;
                }
                RateStorm::Connect => {
                    let s = TcpStream::connect(addr)?;
                    crate::sensor::reset_on_close(&s);
                }
                RateStorm::Open => {
                    drop(std::fs::File::open(WATCHED_FILE)?);
                }
            }
        }
    };
    std::thread::scope(|scope| -> Result<(), LabError> {
        let handles: Vec<_> = (0..threads).map(|_| scope.spawn(work)).collect();
        for h in handles {
            h.join()
                .map_err(|_| LabError::Setup("a driver thread panicked".into()))??;
        }
        Ok(())
    })?;
    let ops = done.load(std::sync::atomic::Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    if kind == RateStorm::Connect {
        // Let the acceptor take the last connections before the process (and its accepts) ends.
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "{{\"ops\":{ops},\"events\":{},\"seconds\":{secs:.4}}}",
        ops * kind.events_per_op()
    );
    Ok(())
}

/// A minimal HTTP/1.1 request to the server's API; returns the body as JSON.
fn api(addr: &str, method: &str, path: &str, body: &str) -> Result<serde_json::Value, LabError> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Err(LabError::Setup(format!("{path}: no HTTP response")));
    };
    if !head.starts_with("HTTP/1.1 200") {
        return Err(LabError::Setup(format!(
            "{path}: {}: {body}",
            head.lines().next().unwrap_or_default()
        )));
    }
    serde_json::from_str(body).map_err(|e| LabError::Setup(format!("{path}: {e}")))
}

fn stored(addr: &str, kind: RateStorm, driver: u32) -> Result<u64, LabError> {
    let body = serde_json::json!({ "sql": kind.stored_sql(driver) }).to_string();
    let v = api(addr, "POST", "/api/v1/query", &body)?;
    Ok(v["rows"][0][0].as_u64().unwrap_or(0))
}

/// (kernel ring-buffer drops, pipeline drops, events the agent has read) so far.
fn drops(addr: &str) -> Result<(u64, u64, u64), LabError> {
    let v = api(addr, "GET", "/api/v1/security/status", "")?;
    if v["running"] != serde_json::Value::Bool(true) {
        return Err(LabError::Setup(
            "the security sensor is not running in oxeye up (it needs root and BTF)".into(),
        ));
    }
    Ok((
        v["kernel"]["ring_buffer_full"].as_u64().unwrap_or(0),
        v["dropped_events"].as_u64().unwrap_or(0),
        v["events"].as_u64().unwrap_or(0),
    ))
}

#[derive(Debug, Serialize)]
pub struct RateStep {
    pub target_events_per_sec: u64,
    /// What the driver made: events over its wall time.
    pub driven_events_per_sec: f64,
    pub events: u64,
    pub stored: u64,
    pub lost: u64,
    pub ring_buffer_drops: u64,
    pub pipeline_drops: u64,
    /// oxeye's CPU while the driver ran, % of one core.
    pub oxeye_cpu_pct: f64,
    /// oxeye's CPU from the step's start until its events were stored, per event.
    pub oxeye_cpu_us_per_event: f64,
    pub oxeye_rss_mib: f64,
    /// Seconds from the driver's end until every event was stored (or the wait gave up).
    pub settle_seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct RateFigures {
    pub kind: RateStorm,
    pub steps: Vec<RateStep>,
    /// The highest driven rate of a step that lost and dropped nothing.
    pub sustained_events_per_sec: Option<f64>,
    /// Why the steps stopped: `loss`, `drops`, `driver` (could not make the rate) or `max-rate`.
    pub stopped_by: String,
    pub cpu_pct_at_sustained: Option<f64>,
    pub cpu_us_per_event_at_sustained: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct SensorRateFigures {
    pub kinds: Vec<RateFigures>,
    pub cpus: usize,
    pub seconds_per_step: f64,
    pub oxeye_peak_rss_mib: f64,
}

fn step(
    exe: &Path,
    server: &Server,
    kind: RateStorm,
    rate: u64,
    seconds: f64,
) -> Result<RateStep, LabError> {
    let pid = server.pid();
    let (ring0, pipe0, _) = drops(&server.api)?;
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    let mut driver = Command::new(exe)
        .args([
            "lab",
            "storm-paced",
            &kind.name(),
            &rate.to_string(),
            &format!("{seconds}"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let driver_pid = driver.id();
    let mut out = String::new();
    if let Some(mut o) = driver.stdout.take() {
        o.read_to_string(&mut out)?;
    }
    let status = driver.wait()?;
    let storm_wall = t0.elapsed().as_secs_f64();
    let cpu_storm = cpu_seconds(pid) - cpu0;
    let (rss, _) = rss_bytes(pid);
    if !status.success() {
        return Err(LabError::Setup(format!(
            "the {} driver failed ({status})",
            kind.name()
        )));
    }
    let v: serde_json::Value = serde_json::from_str(out.trim())
        .map_err(|e| LabError::Setup(format!("driver output {out:?}: {e}")))?;
    let events = v["events"].as_u64().unwrap_or(0);
    let driven = events as f64 / v["seconds"].as_f64().unwrap_or(seconds).max(1e-9);
    // Wait until the store has them all, or nothing has arrived for 3 s.
    let ended = Instant::now();
    let mut got = 0;
    let mut last_change = Instant::now();
    loop {
        let n = stored(&server.api, kind, driver_pid)?;
        if n != got {
            got = n;
            last_change = Instant::now();
        }
        if got >= events || last_change.elapsed() > Duration::from_secs(3) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let settle = ended.elapsed().as_secs_f64();
    let cpu_total = cpu_seconds(pid) - cpu0;
    // Drop counters are refreshed once a second by the agent.
    std::thread::sleep(Duration::from_millis(1100));
    let (ring1, pipe1, _) = drops(&server.api)?;
    Ok(RateStep {
        target_events_per_sec: rate,
        driven_events_per_sec: driven,
        events,
        stored: got,
        lost: events.saturating_sub(got),
        ring_buffer_drops: ring1 - ring0,
        pipeline_drops: pipe1 - pipe0,
        oxeye_cpu_pct: cpu_storm / storm_wall.max(1e-9) * 100.0,
        oxeye_cpu_us_per_event: cpu_total / got.max(1) as f64 * 1e6,
        oxeye_rss_mib: rss as f64 / 1048576.0,
        settle_seconds: settle,
    })
}

/// Doubles each kind's rate until something is lost; writes JSON and prints one line.
pub fn bench_sensor_rate(exe: &Path, a: SensorRateArgs) -> Result<SensorRateFigures, LabError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(LabError::Setup(
            "the sensor benchmark needs root: the sensor's eBPF programs do".into(),
        ));
    }
    let kinds = if a.kinds.is_empty() {
        RateStorm::ALL.to_vec()
    } else {
        a.kinds.clone()
    };
    let tmp = std::env::temp_dir().join(format!("oxeye-bench-rate-{}", std::process::id()));
    let data_dir = a.data_dir.clone().unwrap_or_else(|| tmp.clone());
    let server = Server::start(exe, &data_dir, &["--profile-hz", "0", "--off-cpu", "off"])?;
    let run = || -> Result<Vec<RateFigures>, LabError> {
        // The sensor reports itself running once its programs are attached.
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Err(e) = drops(&server.api) {
            if Instant::now() > deadline {
                return Err(e);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let mut all = Vec::new();
        for kind in &kinds {
            eprintln!("{} storm…", kind.name());
            let mut steps: Vec<RateStep> = Vec::new();
            let mut rate = a.start_rate.max(1);
            let stopped_by = loop {
                if rate > a.max_rate {
                    break "max-rate";
                }
                let s = step(exe, &server, *kind, rate, a.seconds)?;
                eprintln!(
                    "  {rate}/s: drove {:.0}/s, stored {}/{}, ring drops {}, oxeye {:.0} % CPU",
                    s.driven_events_per_sec,
                    s.stored,
                    s.events,
                    s.ring_buffer_drops,
                    s.oxeye_cpu_pct
                );
                let lost = s.lost > 0;
                let dropped = s.ring_buffer_drops > 0 || s.pipeline_drops > 0;
                let slow = s.driven_events_per_sec < 0.8 * rate as f64;
                steps.push(s);
                if dropped {
                    break "drops";
                }
                if lost {
                    break "loss";
                }
                if slow {
                    break "driver";
                }
                rate *= 2;
            };
            let best = steps
                .iter()
                .filter(|s| s.lost == 0 && s.ring_buffer_drops == 0 && s.pipeline_drops == 0)
                .max_by(|x, y| x.driven_events_per_sec.total_cmp(&y.driven_events_per_sec));
            all.push(RateFigures {
                kind: *kind,
                sustained_events_per_sec: best.map(|s| s.driven_events_per_sec),
                cpu_pct_at_sustained: best.map(|s| s.oxeye_cpu_pct),
                cpu_us_per_event_at_sustained: best.map(|s| s.oxeye_cpu_us_per_event),
                stopped_by: stopped_by.into(),
                steps,
            });
        }
        Ok(all)
    };
    let result = run();
    let (_, peak_rss) = rss_bytes(server.pid());
    server.stop();
    if a.data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    let figures = SensorRateFigures {
        kinds: result?,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        seconds_per_step: a.seconds,
        oxeye_peak_rss_mib: peak_rss as f64 / 1048576.0,
    };
    crate::write_figures(&a.out, &figures)?;
    let parts: Vec<String> = figures
        .kinds
        .iter()
        .map(
            |k| match (k.sustained_events_per_sec, k.cpu_pct_at_sustained) {
                (Some(r), Some(cpu)) => format!(
                    "{} {r:.0} events/s ({cpu:.0} % CPU, stopped by {})",
                    k.kind.name(),
                    k.stopped_by
                ),
                _ => format!("{} none without loss", k.kind.name()),
            },
        )
        .collect();
    println!(
        "sensor rate without loss on {} CPUs: {}; oxeye peak RSS {:.0} MiB → {}",
        figures.cpus,
        parts.join("; "),
        figures.oxeye_peak_rss_mib,
        a.out.display()
    );
    Ok(figures)
}
