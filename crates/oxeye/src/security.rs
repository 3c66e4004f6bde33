//! The security agent: `ebpf`'s security sensor → `model::security` events (with the service,
//! container and executable owner the kernel does not know) → `sensor` (rules and learned
//! baselines) → the store (`security_events`, `alerts`, through the pipeline like every batch)
//! and the SIEM sinks of the config. It runs on its own thread; the sinks on another, so a slow
//! SIEM never holds up the kernel's ring buffer.
//!
//! Each event names a service: the `service.name` of the telemetry the process sent (by the
//! resource's `process.pid`, which enrichment fills in for loopback senders), else
//! `OTEL_SERVICE_NAME` / `service.name` in its environment, else its executable's name.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use model::Batch;
use model::security::{
    Alert, BaselineDeparture, ConnectionEvent, ExecEvent, ExitEvent, FileOpenEvent,
    ModuleLoadEvent, PrivilegeChangeEvent, PrivilegeSyscall, Protocol, PtraceEvent, SecurityBatch,
    SecurityEvent, SecurityProcess, StoredSecurityEvent, SyscallCounts,
};
use pipeline::{Origin, Pipeline};
use sensor::sink::{Forwarder, RetryConfig, SinkConfig};
use sensor::{BaselineConfig, Baselines, ProcessInfo, RuleSet, Sensor, SensorConfig};
use serde_json::{Value, json};

use crate::config::{Problems, boolean, join, kind, mapping, parse_duration, string, with};
use crate::exe_hash::{ExeHashStats, ExeHashes};

/// How long the agent waits for kernel events before it looks at the clock again.
const POLL: Duration = Duration::from_millis(250);
/// Syscall counts are judged this often.
const TICK_EVERY: Duration = Duration::from_secs(1);
/// Baselines are written to disk this often (and at stop, and after a reset or accept).
const SAVE_EVERY: Duration = Duration::from_secs(60);
/// Events held back while the pipeline is full, beyond which the oldest are dropped (counted).
const MAX_PENDING_EVENTS: usize = 100_000;
/// The kernel's per-CPU counters (records, drops) are stored as metrics this often.
const COUNTERS_EVERY: Duration = Duration::from_secs(10);
/// A service name learned from telemetry is trusted this long after the process's last batch.
const SERVICE_NAME_FOR: Duration = Duration::from_secs(3600);

/// The `security:` section of the config and `--security`.
#[derive(Clone, Debug, PartialEq)]
pub struct SecuritySettings {
    pub enabled: bool,
    /// A rule file that replaces the starter rules (`rules/default.yaml`).
    pub rules: Option<PathBuf>,
    /// Path prefixes watched for opens, on top of the default credential paths.
    pub watch: Vec<String>,
    pub learning_period: Option<Duration>,
    pub sinks: Vec<SinkConfig>,
    /// Executables up to this size get their SHA-256 in exec events; 0 turns hashing off.
    pub exe_hash_max_bytes: u64,
}

/// Executables larger than this are not hashed by default (a hash is read once per binary).
pub const DEFAULT_EXE_HASH_MAX_BYTES: u64 = 64 << 20;

impl Default for SecuritySettings {
    fn default() -> Self {
        SecuritySettings {
            enabled: true,
            rules: None,
            watch: Vec::new(),
            learning_period: None,
            sinks: Vec::new(),
            exe_hash_max_bytes: DEFAULT_EXE_HASH_MAX_BYTES,
        }
    }
}

/// `--security on|off`.
pub fn parse_switch(v: &str) -> Result<bool, String> {
    match v.trim() {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        other => Err(format!("expected on or off, found {other:?}")),
    }
}

/// Reads the `security:` section into `s`, reporting problems with their YAML paths. The rule
/// file is read and checked here too, so a bad rule stops `oxeye up` before anything starts.
pub(crate) fn apply_config(v: &serde_yaml::Value, s: &mut SecuritySettings, p: &mut Problems) {
    let known = [
        "enabled",
        "rules",
        "watch",
        "learning_period",
        "sinks",
        "exe_hash_max_size",
    ];
    for (k, val) in mapping(v, "security", &known, p).unwrap_or_default() {
        let path = join("security", &k);
        match k.as_str() {
            "enabled" => {
                if let Some(b) = boolean(val, &path, p) {
                    s.enabled = b;
                }
            }
            "rules" => {
                if let Some(file) = string(val, &path, p) {
                    if let Err(errors) = RuleSet::load(Path::new(&file)) {
                        for e in errors.0 {
                            p.add(&path, format!("{file}: {e}"));
                        }
                    }
                    s.rules = Some(PathBuf::from(file));
                }
            }
            "watch" => match val {
                serde_yaml::Value::Sequence(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let ip = format!("{path}[{i}]");
                        if let Some(prefix) = string(item, &ip, p) {
                            if !prefix.starts_with('/') && !prefix.starts_with("~/") {
                                p.add(
                                    &ip,
                                    format!(
                                        "expected an absolute path or one starting with ~/, found {prefix:?}"
                                    ),
                                );
                            } else if prefix.len() > ebpf::MAX_PREFIX_BYTES {
                                p.add(
                                    &ip,
                                    format!(
                                        "expected at most {} bytes, found {}",
                                        ebpf::MAX_PREFIX_BYTES,
                                        prefix.len()
                                    ),
                                );
                            } else {
                                s.watch.push(prefix);
                            }
                        }
                    }
                }
                other => p.add(&path, format!("expected a list, found {}", kind(other))),
            },
            "learning_period" => {
                if let Some(d) = with(val, &path, p, parse_duration) {
                    s.learning_period = Some(d);
                }
            }
            "exe_hash_max_size" => {
                let size = match val {
                    serde_yaml::Value::Number(n) => n
                        .as_u64()
                        .ok_or_else(|| format!("expected a size like 64MiB or 0 (off), found {n}")),
                    other => match string(other, &path, p) {
                        Some(t) => crate::config::parse_size(&t),
                        None => continue,
                    },
                };
                match size {
                    Ok(n) => s.exe_hash_max_bytes = n,
                    Err(e) => p.add(&path, e),
                }
            }
            _ => match val {
                serde_yaml::Value::Sequence(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let ip = format!("{path}[{i}]");
                        match serde_yaml::from_value::<SinkConfig>(item.clone()) {
                            Ok(c) => match sensor::sink::build(&c) {
                                Ok(_) => s.sinks.push(c),
                                Err(e) => p.add(&ip, e),
                            },
                            Err(e) => p.add(
                                &ip,
                                format!(
                                    "expected a sink (type: syslog, hec, webhook or file): {e}"
                                ),
                            ),
                        }
                    }
                }
                other => p.add(&path, format!("expected a list, found {}", kind(other))),
            },
        }
    }
}

/// Which service each local process's telemetry names, from the batches the store writes.
#[derive(Clone, Default)]
pub struct ServiceNames {
    host_name: Arc<str>,
    by_pid: Arc<Mutex<HashMap<u32, (String, Instant)>>>,
}

impl ServiceNames {
    pub fn new(host_name: &str) -> Self {
        Self {
            host_name: Arc::from(host_name),
            by_pid: Arc::default(),
        }
    }

    /// Notes `process.pid` → `service.name` of each resource of this host in `batch`, whose
    /// [`Batch::span_groups`] are `span_groups`.
    pub fn note(&self, batch: &Batch, span_groups: &[(&model::Resource, usize)]) {
        let resources: Vec<&model::Resource> = match batch {
            Batch::Spans(_) | Batch::RawSpans(_) => span_groups.iter().map(|(r, _)| *r).collect(),
            Batch::Metrics(g) => g.iter().map(|g| &*g.resource).collect(),
            Batch::Logs(g) => g.iter().map(|g| &*g.resource).collect(),
            _ => return,
        };
        let now = Instant::now();
        let found: Vec<(u32, &str)> = resources
            .into_iter()
            .filter(|r| r.get("host.name").is_none_or(|h| h == &*self.host_name))
            .filter_map(|r| Some((r.get("process.pid")?.parse().ok()?, r.get("service.name")?)))
            .collect();
        if found.is_empty() {
            return;
        }
        if let Ok(mut m) = self.by_pid.lock() {
            if m.len() > 50_000 {
                m.retain(|_, (_, t)| now.saturating_duration_since(*t) < SERVICE_NAME_FOR);
            }
            for (pid, name) in found {
                m.insert(pid, (name.to_string(), now));
            }
        }
    }

    fn get(&self, pid: u32) -> Option<String> {
        let m = self.by_pid.lock().ok()?;
        let (name, at) = m.get(&pid)?;
        (at.elapsed() < SERVICE_NAME_FOR).then(|| name.clone())
    }
}

/// What `/proc` says about a process that the kernel's events do not.
#[derive(Clone, Debug, Default)]
struct ProcFacts {
    service_from_env: Option<String>,
    container_id: Option<String>,
}

fn read_proc_facts(pid: u32) -> ProcFacts {
    let environ: Vec<String> = std::fs::read(format!("/proc/{pid}/environ"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default();
    ProcFacts {
        service_from_env: profile::service_name_from_environ(&environ),
        container_id: std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .ok()
            .and_then(|c| profile::container_id_from_cgroup(&c)),
    }
}

fn exe_name(exe: &str) -> &str {
    exe.rsplit('/').next().unwrap_or(exe)
}

fn unix_now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Turns kernel records into model events, filling in what only userspace can know.
struct Converter {
    host: String,
    services: ServiceNames,
    facts: HashMap<u32, ProcFacts>,
    /// pid → executable, kept from exec events and the start-up scan (for the stored rows).
    exes: HashMap<u32, String>,
    hashes: ExeHashes,
}

impl Converter {
    fn facts(&mut self, pid: u32) -> &ProcFacts {
        self.facts
            .entry(pid)
            .or_insert_with(|| read_proc_facts(pid))
    }

    fn service(&mut self, pid: u32, comm: &str) -> String {
        if let Some(s) = self.services.get(pid) {
            return s;
        }
        if let Some(s) = self.facts(pid).service_from_env.clone() {
            return s;
        }
        match self.exes.get(&pid) {
            Some(exe) => exe_name(exe).to_string(),
            None => comm.to_string(),
        }
    }

    fn process(&mut self, p: &ebpf::EventProcess) -> SecurityProcess {
        let container_id = self.facts(p.pid).container_id.clone();
        SecurityProcess {
            time_unix_nano: ebpf::unix_nanos_from_monotonic(p.ktime_ns),
            pid: p.pid,
            tid: p.tid,
            ppid: p.ppid,
            uid: p.uid,
            gid: p.gid,
            euid: p.euid,
            comm: p.comm.clone(),
            cgroup_id: p.cgroup_id,
            container_id,
            service_name: Some(self.service(p.pid, &p.comm)),
            host: self.host.clone(),
        }
    }

    fn convert(&mut self, e: ebpf::SecurityEvent) -> StoredSecurityEvent {
        use ebpf::SecurityEvent as K;
        let pid = e.process().pid;
        if let K::Exec(x) = &e {
            // A new image: its environment and name are new too.
            self.facts.remove(&pid);
            if x.old_pid != 0 && x.old_pid != pid {
                self.facts.remove(&x.old_pid);
                self.exes.remove(&x.old_pid);
            }
            let mut exec = ExecEvent {
                process: SecurityProcess::default(),
                old_pid: x.old_pid,
                filename: x.filename.clone(),
                filename_truncated: x.filename_truncated,
                argv: x.argv.clone(),
                argv_truncated: x.argv_truncated,
                cwd: x.cwd.clone(),
                cwd_truncated: x.cwd_truncated,
                exe_owner_uid: None,
                exe_sha256: None,
            };
            let exe = exec.exe();
            // The file at the path now (the process may be gone): one stat for the owner and
            // the hash cache's key.
            if let Ok(meta) = std::fs::metadata(&exe) {
                exec.exe_owner_uid = Some(meta.uid());
                exec.exe_sha256 = self.hashes.hash(Path::new(&exe), &meta);
            }
            self.exes.insert(pid, exe);
            exec.process = self.process(&x.process);
            let exe = self.exes.get(&pid).cloned();
            return StoredSecurityEvent {
                event: SecurityEvent::Exec(exec),
                exe,
            };
        }
        let exe = self.exes.get(&pid).cloned();
        let event = match e {
            K::Exec(_) => unreachable!("handled above"),
            K::Exit(x) => {
                let process = self.process(&x.process);
                self.facts.remove(&pid);
                self.exes.remove(&pid);
                SecurityEvent::Exit(ExitEvent {
                    process,
                    exit_code: x.exit_code,
                    signal: x.signal,
                })
            }
            K::Connect(c) => SecurityEvent::Connect(self.connection(c)),
            K::Accept(c) => SecurityEvent::Accept(self.connection(c)),
            K::FileOpen(f) => SecurityEvent::FileOpen(FileOpenEvent {
                process: self.process(&f.process),
                path: f.path,
                path_truncated: f.path_truncated,
                flags: f.flags,
                result: f.result,
            }),
            K::PrivilegeChange(x) => SecurityEvent::PrivilegeChange(PrivilegeChangeEvent {
                process: self.process(&x.process),
                syscall: privilege_syscall(x.syscall),
                args: x.args,
                capabilities: x.capabilities,
                result: x.result,
            }),
            K::Ptrace(x) => SecurityEvent::Ptrace(PtraceEvent {
                process: self.process(&x.process),
                request: x.request,
                target_pid: x.target_pid,
                result: x.result,
            }),
            K::ModuleLoad(x) => SecurityEvent::ModuleLoad(ModuleLoadEvent {
                process: self.process(&x.process),
                fd: x.fd,
                result: x.result,
            }),
        };
        StoredSecurityEvent { event, exe }
    }

    fn connection(&mut self, c: ebpf::ConnectionEvent) -> ConnectionEvent {
        ConnectionEvent {
            process: self.process(&c.process),
            result: c.result,
            fd: c.fd,
            protocol: match c.protocol {
                ebpf::Protocol::Tcp => Protocol::Tcp,
                ebpf::Protocol::Udp => Protocol::Udp,
                ebpf::Protocol::Other(n) => Protocol::Other(n),
            },
            local: c.local,
            remote: c.remote,
        }
    }
}

fn privilege_syscall(s: ebpf::PrivilegeSyscall) -> PrivilegeSyscall {
    use ebpf::PrivilegeSyscall as E;
    match s {
        E::Setuid => PrivilegeSyscall::Setuid,
        E::Setgid => PrivilegeSyscall::Setgid,
        E::Setreuid => PrivilegeSyscall::Setreuid,
        E::Setregid => PrivilegeSyscall::Setregid,
        E::Setresuid => PrivilegeSyscall::Setresuid,
        E::Setresgid => PrivilegeSyscall::Setresgid,
        E::Setfsuid => PrivilegeSyscall::Setfsuid,
        E::Setfsgid => PrivilegeSyscall::Setfsgid,
        E::Setgroups => PrivilegeSyscall::Setgroups,
        E::Capset => PrivilegeSyscall::Capset,
    }
}

/// The second and fourth numbers of a `/proc/<pid>/status` id line (`Uid: real effective …`).
fn status_ids(status: &str, key: &str) -> (u32, u32) {
    let line = status.lines().find_map(|l| l.strip_prefix(key));
    let ids: Vec<u32> = line
        .map(|l| {
            l.split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    (
        ids.first().copied().unwrap_or(0),
        ids.get(1).copied().unwrap_or(0),
    )
}

/// The processes running now, from `/proc`, so rules see the parents and ancestors of processes
/// that started before the sensor.
fn scan_proc(converter: &mut Converter) -> Vec<ProcessInfo> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let base = entry.path();
        let Ok(status) = std::fs::read_to_string(base.join("status")) else {
            continue;
        };
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().to_string())
        };
        let exe = std::fs::read_link(base.join("exe"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned());
        let (uid, euid) = status_ids(&status, "Uid:");
        let (gid, _) = status_ids(&status, "Gid:");
        let comm = field("Name:").unwrap_or_default();
        if let Some(e) = &exe {
            converter.exes.insert(pid, e.clone());
        }
        let facts = converter.facts(pid).clone();
        out.push(ProcessInfo {
            pid,
            ppid: field("PPid:").and_then(|v| v.parse().ok()).unwrap_or(0),
            exe_owner_uid: exe
                .as_ref()
                .and_then(|e| std::fs::metadata(e).ok())
                .map(|m| m.uid()),
            service_name: Some(converter.service(pid, &comm)),
            exe,
            comm,
            uid,
            euid,
            gid,
            argv: std::fs::read(base.join("cmdline"))
                .map(|b| {
                    b.split(|c| *c == 0)
                        .filter(|s| !s.is_empty())
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                        .collect()
                })
                .unwrap_or_default(),
            cwd: std::fs::read_link(base.join("cwd"))
                .ok()
                .map(|p| p.to_string_lossy().into_owned()),
            container_id: facts.container_id,
            cgroup_id: 0,
            exited_unix_nano: None,
        });
    }
    out
}

/// What the agent starts with.
pub struct SecurityConfig {
    pub settings: SecuritySettings,
    /// Where baselines and the sinks' queues are kept (`<data-dir>/security`).
    pub state_dir: PathBuf,
    pub host: String,
    pub services: ServiceNames,
}

/// The kernel program's counters summed over CPUs, as of the last tick (about a second old).
#[derive(Default)]
struct KernelTotals {
    records: AtomicU64,
    ring_buffer_full: AtomicU64,
    malformed: AtomicU64,
}

/// The sensor's state shared with the API.
struct Shared {
    sensor: Mutex<Sensor>,
    baselines_path: PathBuf,
    learning_period_secs: u64,
    exe_hash_max_bytes: u64,
    exe_hashes: Mutex<ExeHashStats>,
    kernel: KernelTotals,
    events: AtomicU64,
    alerts: AtomicU64,
    dropped_events: AtomicU64,
    rules: usize,
    watched: Vec<String>,
    sinks: Mutex<Vec<Value>>,
}

impl Shared {
    fn save(&self) -> Result<(), String> {
        let sensor = self
            .sensor
            .lock()
            .map_err(|_| "the sensor lock is poisoned")?;
        sensor
            .baselines()
            .save(&self.baselines_path)
            .map_err(|e| e.to_string())
    }
}

/// The API's view of the running sensor.
struct Control(Arc<Shared>);

impl server::SecurityControl for Control {
    fn baselines(&self) -> Vec<Value> {
        let Ok(sensor) = self.0.sensor.lock() else {
            return Vec::new();
        };
        sensor
            .baselines()
            .executables()
            .map(|(exe, b)| {
                json!({
                    "exe": exe,
                    "learning": b.learned_unix_nano.is_none(),
                    "first_seen_ms": b.first_seen_unix_nano as f64 / 1e6,
                    "learned_ms": b.learned_unix_nano.map(|t| t as f64 / 1e6),
                    "learning_ends_ms": (b.first_seen_unix_nano as f64 / 1e6)
                        + self.0.learning_period_secs as f64 * 1e3,
                    "children": b.children,
                    "peers": b.peers.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                    "syscalls": b.syscalls.iter().filter(|(_, r)| r.total > 0).map(|(c, r)| {
                        json!({ "class": c.name(), "total": r.total, "median_per_s": r.median,
                                "mad_per_s": r.mad, "max_per_s": r.max })
                    }).collect::<Vec<_>>(),
                })
            })
            .collect()
    }

    fn accept(&self, departure: &BaselineDeparture) -> Result<bool, String> {
        let done = {
            let mut sensor = self
                .0
                .sensor
                .lock()
                .map_err(|_| "the sensor lock is poisoned")?;
            sensor.baselines_mut().accept(departure)
        };
        if done {
            self.0.save()?;
        }
        Ok(done)
    }

    fn reset(&self, exe: &str) -> Result<bool, String> {
        let done = {
            let mut sensor = self
                .0
                .sensor
                .lock()
                .map_err(|_| "the sensor lock is poisoned")?;
            sensor.baselines_mut().reset(exe)
        };
        if done {
            self.0.save()?;
        }
        Ok(done)
    }

    fn status(&self) -> Value {
        let s = &self.0;
        json!({
            "running": true,
            "rules": s.rules,
            "watched_prefixes": s.watched,
            "learning_period_s": s.learning_period_secs,
            "exe_hash_max_bytes": s.exe_hash_max_bytes,
            "exe_hashes": s.exe_hashes.lock().map(|h| json!({
                "hashed": h.hashed, "bytes": h.bytes, "too_large": h.too_large, "cached": h.cached,
            })).unwrap_or_default(),
            "events": s.events.load(Ordering::Relaxed),
            "alerts": s.alerts.load(Ordering::Relaxed),
            "dropped_events": s.dropped_events.load(Ordering::Relaxed),
            "kernel": {
                "records": s.kernel.records.load(Ordering::Relaxed),
                "ring_buffer_full": s.kernel.ring_buffer_full.load(Ordering::Relaxed),
                "malformed_records": s.kernel.malformed.load(Ordering::Relaxed),
            },
            "sinks": s.sinks.lock().map(|v| v.clone()).unwrap_or_default(),
        })
    }
}

pub struct SecurityHandle {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl SecurityHandle {
    /// The API's handle on the baselines.
    pub fn control(&self) -> Arc<dyn server::SecurityControl> {
        Arc::new(Control(self.shared.clone()))
    }
}

impl Drop for SecurityHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Err(e) = self.shared.save() {
            tracing::warn!(error = %e, "security: cannot save the baselines");
        }
    }
}

/// Starts the sensor, or says why it cannot (not root, no BTF, the verifier's refusal, a sink's
/// queue that cannot be opened). The returned text says what runs.
pub fn start(
    config: SecurityConfig,
    pipeline: Pipeline,
) -> Result<(SecurityHandle, String), String> {
    ebpf::check_prerequisites().map_err(|e| e.to_string())?;
    let settings = &config.settings;
    let rules = match &settings.rules {
        Some(path) => RuleSet::load(path).map_err(|e| format!("{}: {e}", path.display()))?,
        None => RuleSet::default_rules(),
    };
    let rule_count = rules.rules.len();
    let mut baseline = BaselineConfig::default();
    if let Some(d) = settings.learning_period {
        baseline.learning_period_secs = d.as_secs().max(1);
    }
    std::fs::create_dir_all(&config.state_dir)
        .map_err(|e| format!("cannot create {}: {e}", config.state_dir.display()))?;
    let baselines_path = config.state_dir.join("baselines.json");
    let baselines = if baselines_path.exists() {
        match Baselines::load(baseline.clone(), &baselines_path) {
            Ok(b) => b,
            Err(e) => {
                // Kept aside rather than overwritten: it may be worth a look.
                let aside = baselines_path.with_extension("json.unreadable");
                let _ = std::fs::rename(&baselines_path, &aside);
                tracing::warn!(error = %e, kept = %aside.display(), "security: baselines unreadable, learning afresh");
                Baselines::new(baseline.clone())
            }
        }
    } else {
        Baselines::new(baseline.clone())
    };
    let mut forwarders = Vec::new();
    for (i, sink) in settings.sinks.iter().enumerate() {
        let built = sensor::sink::build(sink).map_err(|e| format!("security.sinks[{i}]: {e}"))?;
        let queue = config
            .state_dir
            .join(format!("queue-{i}-{}.log", built.kind()));
        forwarders.push(
            Forwarder::new(built, &queue, RetryConfig::default())
                .map_err(|e| format!("security.sinks[{i}]: {e}"))?,
        );
    }
    let mut watched = ebpf::default_watched_prefixes();
    watched.extend(settings.watch.iter().cloned());
    let kernel = ebpf::SecuritySensor::start(ebpf::SecurityConfig {
        watched_prefixes: watched.clone(),
        ..ebpf::SecurityConfig::default()
    })
    .map_err(|e| e.to_string())?;
    let mut converter = Converter {
        host: config.host.clone(),
        services: config.services.clone(),
        facts: HashMap::new(),
        exes: HashMap::new(),
        hashes: ExeHashes::new(settings.exe_hash_max_bytes),
    };
    let mut sensor = Sensor::new(
        SensorConfig {
            host: config.host.clone(),
            baseline: baseline.clone(),
            ..SensorConfig::default()
        },
        rules,
    )
    .with_baselines(baselines);
    let seeded = scan_proc(&mut converter);
    let processes = seeded.len();
    for p in seeded {
        sensor.processes_mut().insert(p);
    }
    let shared = Arc::new(Shared {
        sensor: Mutex::new(sensor),
        baselines_path,
        learning_period_secs: baseline.learning_period_secs,
        exe_hash_max_bytes: settings.exe_hash_max_bytes,
        exe_hashes: Mutex::new(ExeHashStats::default()),
        kernel: KernelTotals::default(),
        events: AtomicU64::new(0),
        alerts: AtomicU64::new(0),
        dropped_events: AtomicU64::new(0),
        rules: rule_count,
        watched: watched.clone(),
        sinks: Mutex::new(Vec::new()),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    let sink_count = forwarders.len();
    let (alert_tx, alert_rx) = mpsc::channel::<Vec<Alert>>();
    if !forwarders.is_empty() {
        let (stop, shared) = (stop.clone(), shared.clone());
        threads.push(
            std::thread::Builder::new()
                .name("oxeye-siem".into())
                .spawn(move || forward(forwarders, alert_rx, &stop, &shared))
                .map_err(|e| format!("cannot start the SIEM forwarder thread: {e}"))?,
        );
    }
    let runtime = tokio::runtime::Handle::current();
    let agent = Agent {
        kernel,
        converter,
        shared: shared.clone(),
        pipeline,
        alerts_out: (sink_count > 0).then_some(alert_tx),
        pending: SecurityBatch::default(),
    };
    threads.push(
        std::thread::Builder::new()
            .name("oxeye-security".into())
            .spawn({
                let stop = stop.clone();
                move || {
                    let _guard = runtime.enter();
                    agent.run(&stop);
                }
            })
            .map_err(|e| format!("cannot start the security thread: {e}"))?,
    );
    let summary = format!(
        "{rule_count} rules, {} watched paths, {processes} processes seeded, baselines learn for {}, {}",
        watched.len(),
        human_duration(baseline.learning_period_secs),
        match sink_count {
            0 => "no SIEM sinks".to_string(),
            n => format!(
                "{n} SIEM sink(s): {}",
                settings
                    .sinks
                    .iter()
                    .map(sink_name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    );
    Ok((
        SecurityHandle {
            stop,
            threads,
            shared,
        },
        summary,
    ))
}

fn human_duration(secs: u64) -> String {
    match secs {
        s if s % 86400 == 0 => format!("{}d", s / 86400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn sink_name(s: &SinkConfig) -> String {
    match s {
        SinkConfig::Syslog { address, .. } => format!("syslog {address}"),
        SinkConfig::Hec { url, .. } => format!("hec {url}"),
        SinkConfig::Webhook { url, .. } => format!("webhook {url}"),
        SinkConfig::File { path, .. } => format!("file {}", path.display()),
    }
}

/// Queues alerts durably for each sink and sends them, retrying with growing delays.
fn forward(
    mut forwarders: Vec<Forwarder>,
    rx: mpsc::Receiver<Vec<Alert>>,
    stop: &AtomicBool,
    shared: &Shared,
) {
    while !stop.load(Ordering::Relaxed) {
        let mut incoming = Vec::new();
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(a) => incoming.extend(a),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        while let Ok(a) = rx.try_recv() {
            incoming.extend(a);
        }
        let now = Instant::now();
        let mut report = Vec::new();
        for f in &mut forwarders {
            if !incoming.is_empty()
                && let Err(e) = f.enqueue(&incoming)
            {
                tracing::warn!(sink = f.kind(), error = %e, "security: cannot queue alerts");
            }
            if let Err(e) = f.pump(now) {
                tracing::warn!(sink = f.kind(), error = %e, "security: sink queue failed");
            }
            let st = f.stats();
            report.push(json!({
                "kind": f.kind(), "sent": st.sent, "pending": f.pending(),
                "failed_attempts": st.failed_attempts, "rejected": st.rejected,
                "dropped": f.dropped(), "last_error": f.last_error(),
            }));
        }
        if let Ok(mut s) = shared.sinks.lock() {
            *s = report;
        }
    }
}

struct Agent {
    kernel: ebpf::SecuritySensor,
    converter: Converter,
    shared: Arc<Shared>,
    pipeline: Pipeline,
    alerts_out: Option<mpsc::Sender<Vec<Alert>>>,
    /// Rows not yet admitted by the pipeline.
    pending: SecurityBatch,
}

impl Agent {
    fn run(mut self, stop: &AtomicBool) {
        let mut last_tick = Instant::now();
        let mut last_save = Instant::now();
        let started = unix_now_nanos();
        let mut last_counters: Option<Instant> = None;
        while !stop.load(Ordering::Relaxed) {
            if last_counters.is_none_or(|t| t.elapsed() >= COUNTERS_EVERY) {
                last_counters = Some(Instant::now());
                self.send_counters(started);
            }
            if let Err(e) = self.kernel.wait(POLL) {
                tracing::warn!(error = %e, "security: cannot wait for events");
                std::thread::sleep(POLL);
            }
            let raw = self.kernel.drain().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "security: cannot read events");
                Vec::new()
            });
            let mut alerts = Vec::new();
            let events: Vec<StoredSecurityEvent> =
                raw.into_iter().map(|e| self.converter.convert(e)).collect();
            let counts = (last_tick.elapsed() >= TICK_EVERY).then(|| {
                last_tick = Instant::now();
                if let Ok(mut h) = self.shared.exe_hashes.lock() {
                    *h = self.converter.hashes.stats();
                }
                if let Ok(c) = self.kernel.counters() {
                    let total = |get: fn(&ebpf::Counters) -> u64| c.per_cpu.iter().map(get).sum();
                    let k = &self.shared.kernel;
                    k.records.store(total(|c| c.records), Ordering::Relaxed);
                    k.ring_buffer_full
                        .store(total(|c| c.ring_buffer_full), Ordering::Relaxed);
                    k.malformed.store(c.malformed_records, Ordering::Relaxed);
                }
                self.syscall_counts()
            });
            if let Ok(mut sensor) = self.shared.sensor.lock() {
                for e in &events {
                    alerts.extend(sensor.observe(&e.event));
                }
                if let Some(counts) = counts {
                    alerts.extend(sensor.tick(unix_now_nanos(), &counts));
                }
            }
            self.shared
                .events
                .fetch_add(events.len() as u64, Ordering::Relaxed);
            self.shared
                .alerts
                .fetch_add(alerts.len() as u64, Ordering::Relaxed);
            if !alerts.is_empty()
                && let Some(tx) = &self.alerts_out
            {
                let _ = tx.send(alerts.clone());
            }
            self.pending.events.extend(events);
            self.pending.alerts.extend(alerts);
            self.send();
            if last_save.elapsed() >= SAVE_EVERY {
                last_save = Instant::now();
                if let Err(e) = self.shared.save() {
                    tracing::warn!(error = %e, "security: cannot save the baselines");
                }
            }
        }
        self.send();
    }

    /// The kernel program's per-CPU counters as cumulative sums (`oxeye.security.<counter>`,
    /// attribute `cpu`), so drops are visible next to everything else.
    fn send_counters(&self, started: u64) {
        let counters = match self.kernel.counters() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "security: cannot read the kernel counters");
                return;
            }
        };
        let now = unix_now_nanos();
        let sum = |value: u64, attributes: model::Attrs| model::MetricPoint {
            attributes,
            start_time_unix_nano: started,
            time_unix_nano: now,
            flags: 0,
            value: model::PointValue::Sum {
                value: value as f64,
                temporality: model::Temporality::Cumulative,
                monotonic: true,
            },
        };
        let per_cpu =
            |name: &str, description: &str, get: fn(&ebpf::Counters) -> u64| model::Metric {
                name: format!("oxeye.security.{name}"),
                description: description.into(),
                unit: "{record}".into(),
                points: counters
                    .per_cpu
                    .iter()
                    .enumerate()
                    .map(|(cpu, c)| sum(get(c), vec![("cpu".into(), cpu.to_string())]))
                    .collect(),
            };
        let mut items = vec![
            per_cpu(
                "records",
                "events the kernel program wrote to the ring buffer",
                |c| c.records,
            ),
            per_cpu(
                "ring_buffer_full",
                "events lost because the ring buffer was full",
                |c| c.ring_buffer_full,
            ),
            per_cpu(
                "syscall_counts_full",
                "processes whose syscalls went uncounted because the count map was full",
                |c| c.syscall_counts_full,
            ),
            per_cpu(
                "relative_opens_unchecked",
                "opens of relative paths, which the path filter cannot judge",
                |c| c.relative_opens_unchecked,
            ),
            per_cpu(
                "truncated",
                "events whose path or arguments were cut to fit",
                |c| c.truncated,
            ),
        ];
        items.push(model::Metric {
            name: "oxeye.security.malformed_records".into(),
            description: "ring-buffer records userspace could not parse".into(),
            unit: "{record}".into(),
            points: vec![sum(counters.malformed_records, Vec::new())],
        });
        items.push(model::Metric {
            name: "oxeye.security.pipeline_dropped_events".into(),
            description: "events dropped while the pipeline was full".into(),
            unit: "{event}".into(),
            points: vec![sum(
                self.shared.dropped_events.load(Ordering::Relaxed),
                Vec::new(),
            )],
        });
        let resource = model::Resource {
            attributes: vec![
                ("service.name".into(), "oxeye".into()),
                ("host.name".into(), self.converter.host.clone()),
            ],
            schema_url: String::new(),
        };
        let batch = Batch::Metrics(vec![model::Group {
            resource: Arc::new(resource),
            scope: Arc::new(model::Scope {
                name: "oxeye.security".into(),
                ..Default::default()
            }),
            items,
        }]);
        // Counters are cumulative: one missed while the pipeline is full is covered by the next.
        let _ = self.pipeline.submit(batch, 16 << 10, Origin::default());
    }

    fn syscall_counts(&mut self) -> Vec<SyscallCounts> {
        self.kernel
            .syscall_counts()
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "security: cannot read syscall counts");
                Vec::new()
            })
            .into_iter()
            .map(|c| {
                let mut counts = [0u64; 14];
                for (to, from) in counts.iter_mut().zip(c.counts.iter()) {
                    *to = *from;
                }
                SyscallCounts {
                    pid: c.pid,
                    counts,
                    exited: c.exited,
                }
            })
            .collect()
    }

    /// Hands what is pending to the pipeline; when it is full, keeps it for the next round
    /// (alerts always, events up to a bound).
    fn send(&mut self) {
        if self.pending.events.is_empty() && self.pending.alerts.is_empty() {
            return;
        }
        let bytes = self.pending.events.len() * 512 + self.pending.alerts.len() * 2048;
        let used = self.pipeline.used_bytes();
        if used > 0 && used + bytes > self.pipeline.capacity_bytes() {
            let over = self.pending.events.len().saturating_sub(MAX_PENDING_EVENTS);
            if over > 0 {
                self.pending.events.drain(..over);
                self.shared
                    .dropped_events
                    .fetch_add(over as u64, Ordering::Relaxed);
                tracing::warn!(
                    dropped = over,
                    "security: the pipeline is full, oldest events dropped"
                );
            }
            return;
        }
        let batch = std::mem::take(&mut self.pending);
        let rows = batch.events.len() as u64;
        if let Err(e) = self
            .pipeline
            .submit(Batch::Security(batch), bytes, Origin::default())
        {
            // Filled up by someone else since the check above: rare, counted.
            self.shared
                .dropped_events
                .fetch_add(rows, Ordering::Relaxed);
            tracing::warn!(error = %e, dropped = rows, "security: events and alerts dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Settings, apply_file};

    #[test]
    fn the_security_section_is_checked_with_yaml_paths() {
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules.yaml");
        std::fs::write(
            &rules,
            "rules:\n  - id: x\n    description: d\n    severity: loud\n    events: [exec]\n",
        )
        .unwrap();
        let yaml = format!(
            "security:\n  enabled: maybe\n  rules: {}\n  watch: [/etc/shadow, etc/passwd]\n  learning_period: soon\n  sinks:\n    - type: syslog\n      address: 127.0.0.1:514\n      transport: carrier-pigeon\n    - type: file\n      path: /tmp/a.json\n  colour: red\n",
            rules.display()
        );
        let errs = apply_file(&yaml, &mut Settings::default()).unwrap_err();
        let joined = errs.join("\n");
        for want in [
            "security.enabled: expected true or false",
            "security.rules: ",
            "rules[0].severity",
            "security.watch[1]: expected an absolute path or one starting with ~/, found \"etc/passwd\"",
            "security.learning_period: expected a duration",
            "security.sinks[0]: expected a sink",
            "security.colour: unknown key",
        ] {
            assert!(joined.contains(want), "missing {want:?} in:\n{joined}");
        }
        assert!(!joined.contains("sinks[1]"), "{joined}");
    }

    #[test]
    fn a_valid_security_section_sets_everything() {
        let yaml = "security:\n  enabled: false\n  watch: [/srv/secrets/]\n  learning_period: 10m\n  sinks:\n    - type: file\n      path: /tmp/alerts.json\n      payload: cef\n";
        let mut s = Settings::default();
        apply_file(yaml, &mut s).unwrap();
        assert!(!s.security.enabled);
        assert_eq!(s.security.watch, vec!["/srv/secrets/".to_string()]);
        assert_eq!(s.security.learning_period, Some(Duration::from_secs(600)));
        assert_eq!(s.security.sinks.len(), 1);
        assert_eq!(s.security.exe_hash_max_bytes, DEFAULT_EXE_HASH_MAX_BYTES);
        let mut s = Settings::default();
        apply_file("security:\n  exe_hash_max_size: 8MiB\n", &mut s).unwrap();
        assert_eq!(s.security.exe_hash_max_bytes, 8 << 20);
        apply_file("security:\n  exe_hash_max_size: 0\n", &mut s).unwrap();
        assert_eq!(s.security.exe_hash_max_bytes, 0);
        let errs = apply_file("security:\n  exe_hash_max_size: huge\n", &mut s).unwrap_err();
        assert!(
            errs.join("\n")
                .contains("security.exe_hash_max_size: expected a size")
        );
        assert_eq!(parse_switch("off"), Ok(false));
        assert!(parse_switch("maybe").is_err());
    }

    #[test]
    fn telemetry_names_the_service_of_a_local_pid() {
        use model::{Group, Resource, Scope};
        let names = ServiceNames::new("here");
        let group = |attrs: &[(&str, &str)]| Group {
            resource: Arc::new(Resource {
                attributes: attrs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                schema_url: String::new(),
            }),
            scope: Arc::new(Scope::default()),
            items: Vec::new(),
        };
        names.note(
            &Batch::Metrics(vec![
                group(&[("process.pid", "10"), ("service.name", "shop")]),
                group(&[
                    ("process.pid", "11"),
                    ("service.name", "far"),
                    ("host.name", "elsewhere"),
                ]),
            ]),
            &[],
        );
        assert_eq!(names.get(10).as_deref(), Some("shop"));
        assert_eq!(names.get(11), None);
        assert_eq!(status_ids("Uid:\t1000\t0\t0\t0\n", "Uid:"), (1000, 0));
    }

    struct StoreSink(store::Store);

    impl pipeline::DurableSink for StoreSink {
        fn write(&self, batch: Batch) -> pipeline::WriteFuture<'_> {
            Box::pin(async move {
                self.0
                    .write(&batch)
                    .await
                    .map(|_| ())
                    .map_err(crate::up::sink_error)
            })
        }
    }

    /// The wiring on a real kernel: a child opens a watched file and a shell runs; the events and
    /// the alerts they raise are found in the store with the right pids and paths.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_agent_stores_real_events_and_the_alerts_they_raise() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert_ne!(
                std::env::var("OXEYE_REQUIRE_EBPF").as_deref(),
                Ok("1"),
                "OXEYE_REQUIRE_EBPF=1 but the test is not running as root"
            );
            eprintln!("skipped: the security sensor needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let watched = dir.path().join("secret");
        std::fs::create_dir(&watched).unwrap();
        let key = watched.join("key");
        std::fs::write(&key, "k").unwrap();
        let marker = format!("oxeye-test-{}", std::process::id());
        let rules = dir.path().join("rules.yaml");
        let siem_file = dir.path().join("siem.cef");
        std::fs::write(
            &rules,
            format!(
                "rules:\n  - id: test-secret-read\n    description: a watched secret was read\n    severity: high\n    events: [file_open]\n    when:\n      file.path: {{prefix: [\"{w}/\"]}}\n  - id: test-shell\n    description: the test's shell\n    severity: medium\n    events: [exec]\n    when:\n      process.exe_name: {{in: [sh, dash, bash]}}\n      process.argv: {{contains: {marker}}}\n",
                w = watched.display()
            ),
        )
        .unwrap();
        let store =
            store::Store::open(&dir.path().join("data"), store::StoreConfig::default()).unwrap();
        let pipeline = Pipeline::new(
            StoreSink(store.clone()),
            pipeline::Enricher::disabled(),
            64 << 20,
        );
        let (handle, summary) = start(
            SecurityConfig {
                settings: SecuritySettings {
                    rules: Some(rules),
                    watch: vec![format!("{}/", watched.display())],
                    sinks: vec![SinkConfig::File {
                        path: siem_file.clone(),
                        payload: sensor::sink::Payload::Cef,
                    }],
                    ..SecuritySettings::default()
                },
                state_dir: dir.path().join("security"),
                host: "test-host".into(),
                services: ServiceNames::new("test-host"),
            },
            pipeline,
        )
        .expect("the security sensor starts as root");
        assert!(
            summary.starts_with("2 rules, 17 watched paths"),
            "{summary}"
        );
        let service = format!("svc-{marker}");
        let status = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!(
                "cat {} > /dev/null; sleep 1; exit 0 # {marker}",
                key.display()
            ))
            .env("OTEL_SERVICE_NAME", &service)
            .spawn()
            .unwrap();
        let shell_pid = status.id();
        let out = status.wait_with_output().unwrap();
        assert!(out.status.success());
        let now = unix_now_nanos() as i64;
        let range = store::read::TimeRange {
            start_ns: now - 600_000_000_000,
            end_ns: now + 600_000_000_000,
        };
        let key_path = key.display().to_string();
        let deadline = Instant::now() + Duration::from_secs(30);
        let (open, exec, read_alert, shell_alert) = loop {
            let events = store
                .security_events(
                    &store::security::SecurityEventFilter {
                        limit: 5000,
                        ..Default::default()
                    },
                    range,
                )
                .await
                .unwrap();
            let alerts = store
                .security_alerts(
                    &store::security::AlertFilter {
                        limit: 5000,
                        ..Default::default()
                    },
                    range,
                )
                .await
                .unwrap();
            let open = events
                .iter()
                .find(|e| e.kind == "file_open" && e.path == key_path)
                .cloned();
            let exec = events
                .iter()
                .find(|e| e.kind == "exec" && e.pid == shell_pid)
                .cloned();
            let read_alert = alerts
                .iter()
                .find(|a| a.kind == "test-secret-read")
                .cloned();
            let shell_alert = alerts.iter().find(|a| a.kind == "test-shell").cloned();
            if let (Some(o), Some(e), Some(r), Some(s)) = (&open, &exec, &read_alert, &shell_alert)
            {
                break (o.clone(), e.clone(), r.clone(), s.clone());
            }
            assert!(
                Instant::now() < deadline,
                "not all found in 30 s: open {open:?}, exec {exec:?}, alerts {alerts:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        // cat is the shell's child; the alert names the process that opened the file.
        assert_eq!(open.ppid, shell_pid, "{open:?}");
        assert!(open.exe.ends_with("/cat"), "{open:?}");
        assert_eq!(read_alert.pid, open.pid);
        assert_eq!(read_alert.severity, "high");
        assert_eq!(read_alert.evidence[0]["path"], key_path.as_str());
        assert!(exec.path.ends_with("/sh"), "{exec:?}");
        assert!(exec.args.iter().any(|a| a.contains(&marker)), "{exec:?}");
        assert_eq!(
            exec.service, service,
            "the service comes from the environment"
        );
        let sh = std::fs::read(&exec.path).unwrap();
        assert_eq!(
            exec.details["exe_sha256"].as_str(),
            Some(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&sh)).as_str()),
            "the executable's hash: {exec:?}"
        );
        assert_eq!(shell_alert.pid, shell_pid);
        assert_eq!(shell_alert.service, service);
        assert_eq!(shell_alert.host, "test-host");
        // The SIEM sink got both alerts as CEF lines.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let cef = std::fs::read_to_string(&siem_file).unwrap_or_default();
            if cef.contains("test-secret-read") && cef.contains("test-shell") {
                assert!(cef.lines().all(|l| l.starts_with("CEF:0|")), "{cef}");
                break;
            }
            assert!(Instant::now() < deadline, "the file sink got only: {cef}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let metrics = store.metric_names().await.unwrap();
        assert!(
            metrics
                .iter()
                .any(|m| m.name == "oxeye.security.records" && m.kind == "sum"),
            "the kernel's counters are stored as metrics"
        );
        drop(handle);
        assert!(
            dir.path().join("security/baselines.json").exists(),
            "baselines are saved at stop"
        );
        store.close().await;
    }
}
