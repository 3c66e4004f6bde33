//! The profiling agent: CPU samples and off-CPU blocks from `ebpf`, symbolized by `profile`, sent
//! through the pipeline into `profile_samples` and `profile_stacks`. It runs on its own thread
//! because symbolization reads files and blocks; it never stops the rest of oxeye from running.
//!
//! Off-CPU profiling takes two stacks at every context switch of a followed process, which costs
//! far more than sampling on a busy host, so by default it follows only the processes that sent
//! spans recently ([`OffCpuMode::Traced`]): those are the ones whose spans can be explained by it.
//!
//! Under high traffic ([`crate::traffic`]) a service's processes are sampled at the boosted rate
//! and their samples labelled `high_traffic`; the overhead budget ([`crate::budget`]) lowers the
//! rates, quiet processes first, when oxeye costs more than its share of the host's CPU.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ebpf::{
    CpuSample, CpuSampler, CpuSamplerConfig, OffCpuConfig, OffCpuEvent, OffCpuProfiler,
    RunTimeStats,
};
use model::{Batch, ProfileBatch, ProfileKind, ProfileSample, ProfileStack};
use pipeline::{Origin, Pipeline};
use profile::{Frame, RawStack, Stack, Symbolizer};
use serde_json::json;

use crate::budget::{BudgetGovernor, CpuReading, Rates};
use crate::traffic::{BoostPlan, TrafficMonitor};

/// How often samples are drained from the kernel and sent on.
const DRAIN_EVERY: Duration = Duration::from_secs(1);
/// A process that sent spans is followed off-CPU this long after its last span batch.
const TRACED_FOR: Duration = Duration::from_secs(600);
/// The kernel's `targets` map holds this many processes; beyond it the most recent win.
const MAX_FOLLOWED: usize = 1024;
/// The label of samples taken at the boosted rate (only high traffic boosts).
pub const HIGH_TRAFFIC: &str = "high_traffic";
/// Taken off a drain's start time before it becomes the watermark: a sample stamped just before
/// the drain may still be between the BPF program's clock read and its ring-buffer commit (a few
/// microseconds), and each conversion to Unix time reads the clocks' offset afresh.
const WATERMARK_MARGIN: Duration = Duration::from_millis(10);
/// The longest an off-CPU block still under way holds the watermark back. A block is stored at
/// the time it began, once the thread wakes: one that lasts longer (an idle thread, or one that
/// exited while switched out and lingers in the kernel's map) is stored behind the watermark and
/// counted as late rather than stalling the exporter.
const OFF_CPU_HOLD: Duration = Duration::from_secs(30);

fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The profiler's watermark: every sample it took before this time (Unix nanoseconds) is in the
/// store, or was refused and never will be. It only grows. It starts at the profiler's start, so
/// after a restart it vouches for nothing before it: samples of the previous run are stored or
/// lost by then. The `otlp` exporter reads no further than this.
#[derive(Clone, Debug)]
pub struct StoredUpTo(Arc<AtomicU64>);

impl StoredUpTo {
    pub fn new(unix_ns: u64) -> Self {
        Self(Arc::new(AtomicU64::new(unix_ns)))
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    pub fn advance(&self, unix_ns: u64) {
        self.0.fetch_max(unix_ns, Ordering::AcqRel);
    }
}

/// One drain's write, as [`publish_watermarks`] follows it.
struct Drained {
    /// What the drain vouches for ([`drain_complete_before`]).
    complete: u64,
    /// The write's acknowledgement; `None` when nothing was written (or it was refused).
    ack: Option<pipeline::Ack>,
    /// Stacks the write carried for the first time. If it fails they were never stored: they go
    /// back to the agent, which sends them again with the next sample that uses them.
    new_stacks: Vec<u64>,
}

/// Raises `stored` to each drain's promise once that drain's write, and every earlier one, has
/// resolved (the store acknowledges after its fsync). A refused or failed write raises it too:
/// those samples will never be stored, and waiting for them would stall the exporter for good.
/// The new stacks of a failed write are sent back on the returned receiver.
fn publish_watermarks(
    stored: StoredUpTo,
) -> (
    tokio::sync::mpsc::UnboundedSender<Drained>,
    std::sync::mpsc::Receiver<Vec<u64>>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Drained>();
    let (unsent_tx, unsent_rx) = std::sync::mpsc::channel();
    tokio::spawn(async move {
        while let Some(d) = rx.recv().await {
            if let Some(ack) = d.ack
                && let Err(e) = ack.wait().await
            {
                tracing::warn!(error = %e, "profiler: samples were not stored");
                let _ = unsent_tx.send(d.new_stacks);
            }
            stored.advance(d.complete);
        }
    });
    (tx, unsent_rx)
}

/// What one drain vouches for: samples stamped before the drain started (less the margin) were
/// in the ring buffers it read, and so were off-CPU blocks that began before the oldest one still
/// under way (`oldest_block_unix_ns`), which is waited for at most [`OFF_CPU_HOLD`].
fn drain_complete_before(drain_started_unix_ns: u64, oldest_block_unix_ns: Option<u64>) -> u64 {
    let margin = WATERMARK_MARGIN.as_nanos() as u64;
    let mut complete = drain_started_unix_ns.saturating_sub(margin);
    if let Some(since) = oldest_block_unix_ns {
        let floor = complete.saturating_sub(OFF_CPU_HOLD.as_nanos() as u64);
        complete = complete.min(since.saturating_sub(margin).max(floor));
    }
    complete
}

/// Which processes the off-CPU profiler follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffCpuMode {
    Off,
    /// Processes on this host that sent spans in the last ten minutes (by the resource's
    /// `process.pid`, which oxeye fills in for senders on loopback).
    Traced,
    /// Every process: costs about 16 µs of kernel time per context switch.
    All,
}

impl OffCpuMode {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "off" => Ok(Self::Off),
            "traced" => Ok(Self::Traced),
            "all" => Ok(Self::All),
            other => Err(format!("expected off, traced or all, found {other:?}")),
        }
    }
}

/// The processes on this host that sent spans, and when they last did. Filled by the store's
/// sink as span batches are written; read by the agent once a second.
#[derive(Clone, Default)]
pub struct TracedProcesses {
    host_name: Arc<str>,
    last_seen: Arc<Mutex<HashMap<u32, Instant>>>,
}

impl TracedProcesses {
    pub fn new(host_name: &str) -> Self {
        Self {
            host_name: Arc::from(host_name),
            last_seen: Arc::default(),
        }
    }

    /// Notes the local processes a batch's spans came from. Resources naming another host are
    /// someone else's processes.
    /// `groups`: the batch's [`Batch::span_groups`].
    pub fn note(&self, groups: &[(&model::Resource, usize)]) {
        let now = Instant::now();
        let pids: Vec<u32> = groups
            .iter()
            .filter(|(r, _)| r.get("host.name").is_none_or(|h| h == &*self.host_name))
            .filter_map(|(r, _)| r.get("process.pid")?.parse().ok())
            .collect();
        if pids.is_empty() {
            return;
        }
        if let Ok(mut seen) = self.last_seen.lock() {
            for pid in pids {
                seen.insert(pid, now);
            }
        }
    }

    /// The processes seen within `within` of `now`, most recent first, at most `limit`; older
    /// entries are forgotten.
    fn recent(&self, now: Instant, within: Duration, limit: usize) -> Vec<u32> {
        let Ok(mut seen) = self.last_seen.lock() else {
            return Vec::new();
        };
        seen.retain(|_, t| now.saturating_duration_since(*t) <= within);
        let mut list: Vec<(u32, Instant)> = seen.iter().map(|(p, t)| (*p, *t)).collect();
        list.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        list.truncate(limit);
        list.into_iter().map(|(p, _)| p).collect()
    }
}

/// What the agent runs with.
#[derive(Clone)]
pub struct ProfilerConfig {
    pub frequency_hz: u32,
    /// The rate of processes of a service under high traffic.
    pub boost_hz: u32,
    /// The share of the host's CPU oxeye may use (0.01: 1 %).
    pub budget_share: f64,
    /// How often oxeye's CPU use is measured against the budget (30 s by default: long enough
    /// that a store flush or a burst of new processes to symbolize is averaged out rather than
    /// acted upon).
    pub budget_interval: Duration,
    pub off_cpu: OffCpuMode,
    /// Rows of `.eh_frame` unwind tables the CPU sampler holds; 0: frame pointers only.
    pub unwind_table_rows: u32,
    pub traced: TracedProcesses,
    pub traffic: TrafficMonitor,
    pub status: server::ProfilerStatus,
}

pub struct ProfilerHandle {
    stop: Arc<AtomicBool>,
    stored: StoredUpTo,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ProfilerHandle {
    /// The watermark of this host's samples: what the `otlp` exporter may read up to.
    pub fn stored_up_to(&self) -> StoredUpTo {
        self.stored.clone()
    }
}

impl Drop for ProfilerHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts sampling every process at the configured rate, or says why it cannot (not root, no
/// BTF, the verifier's refusal). Off-CPU profiling that cannot start leaves CPU sampling on; the
/// returned text says what runs.
pub fn start(
    config: ProfilerConfig,
    pipeline: Pipeline,
    host_name: String,
) -> Result<(ProfilerHandle, String), String> {
    ebpf::check_prerequisites().map_err(|e| e.to_string())?;
    // No sample of this run is older than this.
    let stored = StoredUpTo::new(unix_now_ns());
    let sampler = CpuSampler::start(CpuSamplerConfig {
        frequency_hz: config.frequency_hz,
        boost_frequency_hz: config.boost_hz,
        unwind_table_rows: config.unwind_table_rows,
        ..CpuSamplerConfig::default()
    })
    .map_err(|e| e.to_string())?;
    let mut summary = format!(
        "{} Hz per CPU, every process; {} Hz under high traffic; at most {}% of the host's CPU",
        config.frequency_hz,
        config.boost_hz,
        config.budget_share * 100.0
    );
    // Without run-time statistics the budget counts oxeye's own CPU only.
    let run_time_stats = match RunTimeStats::enable() {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "the overhead budget cannot count BPF time");
            None
        }
    };
    let off_cpu = match config.off_cpu {
        OffCpuMode::Off => {
            summary.push_str("; off-CPU off");
            None
        }
        mode => {
            let only_pids = (mode == OffCpuMode::Traced).then(Vec::new);
            match OffCpuProfiler::start(OffCpuConfig {
                only_pids,
                skip_pid: Some(std::process::id()),
                ..OffCpuConfig::default()
            }) {
                Ok(p) => {
                    summary.push_str(match mode {
                        OffCpuMode::All => "; off-CPU for every process",
                        _ => "; off-CPU for processes that sent spans",
                    });
                    Some(OffCpu {
                        profiler: p,
                        follow_traced: mode == OffCpuMode::Traced,
                        followed: HashSet::new(),
                    })
                }
                Err(e) => {
                    tracing::warn!(reason = %e, "off-CPU profiling is off");
                    summary.push_str(&format!("; off-CPU off: {e}"));
                    None
                }
            }
        }
    };
    let traced = config.traced;
    let cpus = ebpf::online_cpus().map(|c| c.len() as u32).unwrap_or(1);
    let controls = Controls {
        governor: BudgetGovernor::new(
            config.budget_share,
            cpus,
            Rates {
                base_hz: config.frequency_hz,
                boost_hz: config.boost_hz,
            },
        ),
        budget_every: config.budget_interval,
        traffic: config.traffic,
        status: config.status,
        run_time_stats,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Handle::current();
    let (watermarks, unsent_stacks) = publish_watermarks(stored.clone());
    let thread = std::thread::Builder::new()
        .name("oxeye-profiler".into())
        .spawn({
            let stop = stop.clone();
            move || {
                let _guard = runtime.enter();
                run(
                    sampler,
                    off_cpu,
                    traced,
                    controls,
                    pipeline,
                    host_name,
                    (watermarks, unsent_stacks),
                    &stop,
                );
            }
        })
        .map_err(|e| format!("cannot start the profiler thread: {e}"))?;
    Ok((
        ProfilerHandle {
            stop,
            stored,
            thread: Some(thread),
        },
        summary,
    ))
}

/// The off-CPU profiler and the processes it follows now.
struct OffCpu {
    profiler: OffCpuProfiler,
    /// Follow the traced processes (and boosted ones); otherwise every process is followed.
    follow_traced: bool,
    followed: HashSet<u32>,
}

impl OffCpu {
    /// Makes the kernel's target set equal `wanted`.
    fn follow(&mut self, wanted: &[u32]) {
        if !self.follow_traced {
            return;
        }
        let wanted: HashSet<u32> = wanted.iter().copied().collect();
        for &pid in self.followed.difference(&wanted) {
            if let Err(e) = self.profiler.unfollow(pid) {
                tracing::warn!(pid, error = %e, "off-cpu: cannot stop following a process");
            }
        }
        self.followed.retain(|p| wanted.contains(p));
        for &pid in &wanted {
            if self.followed.contains(&pid) {
                continue;
            }
            match self.profiler.follow(pid) {
                Ok(()) => {
                    self.followed.insert(pid);
                }
                Err(e) => tracing::warn!(pid, error = %e, "off-cpu: cannot follow a process"),
            }
        }
    }
}

/// High-traffic boosting and the overhead budget.
struct Controls {
    governor: BudgetGovernor,
    budget_every: Duration,
    traffic: TrafficMonitor,
    status: server::ProfilerStatus,
    /// Held while the agent runs, so the kernel times the BPF programs.
    run_time_stats: Option<RunTimeStats>,
}

/// Samples the processes of `plan` at the boosted rate, and no others.
fn apply_boost(sampler: &mut CpuSampler, plan: &BoostPlan) {
    let current: HashSet<u32> = sampler.boosted().collect();
    for &pid in current.iter().filter(|p| !plan.boosted.contains_key(p)) {
        if let Err(e) = sampler.unboost(pid) {
            tracing::warn!(pid, error = %e, "profiler: cannot end a boost");
        }
    }
    for (&pid, service) in &plan.boosted {
        if current.contains(&pid) {
            continue;
        }
        match sampler.boost(pid) {
            Ok(()) => tracing::debug!(pid, service, "profiler: boosted"),
            Err(e) => tracing::warn!(pid, error = %e, "profiler: cannot boost a process"),
        }
    }
}

/// oxeye's own user + system CPU time, from `/proc/self/stat`.
fn own_cpu_ns() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    // After the command name (in parentheses, which may hold spaces): state is field 3, utime 14
    // and stime 15.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    (ticks(11) + ticks(12)) * (1_000_000_000 / hz)
}

fn bpf_ns(sampler: &CpuSampler, off_cpu: Option<&OffCpu>) -> u64 {
    let mut stats = sampler.program_stats().unwrap_or_default();
    if let Some(o) = off_cpu {
        stats.extend(o.profiler.program_stats().unwrap_or_default());
    }
    stats.iter().map(|s| s.run_time_ns).sum()
}

#[allow(clippy::too_many_arguments)]
fn run(
    mut sampler: CpuSampler,
    mut off_cpu: Option<OffCpu>,
    traced: TracedProcesses,
    mut controls: Controls,
    pipeline: Pipeline,
    host_name: String,
    (watermarks, unsent_stacks): (
        tokio::sync::mpsc::UnboundedSender<Drained>,
        std::sync::mpsc::Receiver<Vec<u64>>,
    ),
    stop: &AtomicBool,
) {
    let mut agent = Agent {
        symbolizer: Symbolizer::new(),
        sent_stacks: HashSet::new(),
        host_name,
        span_services: HashMap::new(),
    };
    if !agent.symbolizer.load_kernel_symbols() {
        tracing::debug!("profiler: kernel symbols not loaded up front");
    }
    let mut refused = 0u64;
    // The highest watermark handed to `watermarks`, and the samples stored behind it anyway.
    let mut promised = 0u64;
    let mut late = 0u64;
    let mut last_cleanup = Instant::now();
    let mut off_cpu_events = 0u64;
    let origin = Instant::now();
    let mut last_budget: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(DRAIN_EVERY);
        for ids in unsent_stacks.try_iter() {
            agent.forget_stacks(&ids);
        }
        let now = Instant::now();
        let plan = controls.traffic.tick(now, SystemTime::now());
        apply_boost(&mut sampler, &plan);
        if last_budget.is_none_or(|t| now.duration_since(t) >= controls.budget_every) {
            last_budget = Some(now);
            let reading = CpuReading {
                at_ns: now.duration_since(origin).as_nanos() as u64,
                own_cpu_ns: own_cpu_ns(),
                bpf_ns: bpf_ns(&sampler, off_cpu.as_ref()),
            };
            if let Some(r) = controls.governor.observe(reading)
                && let Err(e) = sampler.set_frequencies(r.base_hz, r.boost_hz)
            {
                tracing::warn!(error = %e, "profiler: cannot change the sampling rate");
            }
        }
        let (base_hz, boost_hz) = sampler.frequencies();
        let mut boosted: Vec<_> = plan
            .boosted
            .iter()
            .map(|(pid, svc)| json!({ "pid": pid, "service": svc }))
            .collect();
        boosted.sort_by_key(|v| v["pid"].as_u64());
        controls.status.set(json!({
            "running": true,
            "base_hz": base_hz,
            "boost_hz": boost_hz,
            "budget": controls.governor.status(),
            "bpf_time_counted": controls.run_time_stats.is_some(),
            "boosted": boosted,
            "traffic": controls.traffic.status(),
            "samples_refused": refused,
            "samples_late_for_export": late,
            "unwind_tables": unwind_status(&sampler),
        }));
        agent.span_services = plan.services;
        let drain_started = unix_now_ns();
        let samples = sampler.drain().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "profiler: cannot read samples");
            Vec::new()
        });
        let blocks = match off_cpu.as_mut() {
            Some(o) => {
                let mut wanted = traced.recent(Instant::now(), TRACED_FOR, MAX_FOLLOWED);
                let boosted: Vec<u32> = sampler.boosted().collect();
                for pid in boosted {
                    if !wanted.contains(&pid) {
                        wanted.push(pid);
                    }
                }
                wanted.truncate(MAX_FOLLOWED);
                o.follow(&wanted);
                o.profiler.drain().unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "profiler: cannot read off-cpu events");
                    Vec::new()
                })
            }
            None => Vec::new(),
        };
        off_cpu_events += blocks.len() as u64;
        let oldest_block = off_cpu
            .as_ref()
            .and_then(|o| o.profiler.oldest_block_start())
            .map(ebpf::unix_nanos_from_monotonic);
        let complete = drain_complete_before(drain_started, oldest_block);
        let mut new_stacks = Vec::new();
        let ack = if samples.is_empty() && blocks.is_empty() {
            None
        } else {
            let mut batch = agent.batch(&samples);
            agent.add_blocks(&mut batch, &blocks);
            let behind = batch
                .samples
                .iter()
                .filter(|s| s.time_unix_nano < promised)
                .count() as u64;
            if behind > 0 {
                late += behind;
                tracing::debug!(
                    late,
                    "profiler: samples stored behind the export watermark (long off-CPU blocks)"
                );
            }
            let rows = batch.samples.len() as u64;
            let bytes = batch.samples.len() * 128 + batch.stacks.len() * 1024;
            new_stacks = batch.stacks.iter().map(|s| s.stack_id).collect();
            match pipeline.submit(Batch::Profiles(batch), bytes, Origin::default()) {
                Ok(ack) => Some(ack),
                Err(_) => {
                    // The store is pushing back: profiles are the first thing to give way. Their
                    // new stacks were not stored either.
                    agent.forget_stacks(&std::mem::take(&mut new_stacks));
                    refused += rows;
                    tracing::warn!(refused, "profiler: the pipeline is full, samples dropped");
                    None
                }
            }
        };
        // After the samples are symbolized: a short-lived process sampled in this drain must
        // still be there to be named.
        load_unwind_tables(&mut sampler, &samples);
        // In drain order, so a drain's promise waits for the writes of the drains before it.
        promised = promised.max(complete);
        let _ = watermarks.send(Drained {
            complete,
            ack,
            new_stacks,
        });
        if last_cleanup.elapsed() > Duration::from_secs(60) {
            tracing::debug!(
                off_cpu_events,
                followed = off_cpu.as_ref().map_or(0, |o| o.followed.len()),
                "profiler: off-cpu events in the last minute"
            );
            off_cpu_events = 0;
            agent
                .symbolizer
                .forget_idle_processes(Duration::from_secs(300));
            last_cleanup = Instant::now();
        }
    }
}

/// Hands every process seen in `samples` to the sampler's `.eh_frame` unwinder (once per
/// process; tables are built once per file), and lets it forget exited processes. oxeye itself
/// is left to frame pointers: its table alone would fill the rows the other processes need.
fn load_unwind_tables(sampler: &mut CpuSampler, samples: &[CpuSample]) {
    let own = std::process::id();
    let mut seen = HashSet::new();
    for s in samples {
        if s.kernel_thread || s.pid == own || !seen.insert(s.pid) {
            continue;
        }
        if let Err(e) = sampler.unwind_process(s.pid) {
            tracing::debug!(pid = s.pid, error = %e, "profiler: no unwind tables for a process");
        }
    }
    if let Err(e) = sampler.refresh_unwinding() {
        tracing::debug!(error = %e, "profiler: cannot refresh the unwind tables");
    }
}

fn unwind_status(sampler: &CpuSampler) -> serde_json::Value {
    let u = sampler.unwind_stats();
    json!({
        "processes": u.processes,
        "files": u.tables,
        "rows": u.rows,
        "row_capacity": u.row_capacity,
        "files_without_room": u.tables_without_room,
        "files_without_table": u.files_without_table,
    })
}

struct Agent {
    symbolizer: Symbolizer,
    /// Stacks already written by this run; the store keeps them, samples refer to them by id.
    sent_stacks: HashSet<u64>,
    host_name: String,
    /// The service named by the spans each local process sent, for processes whose
    /// environment does not say (`OTEL_SERVICE_NAME` unreadable or unset).
    span_services: HashMap<u32, String>,
}

/// One record from either profiler, as the agent stores it.
struct Record<'a> {
    pid: u32,
    tid: u32,
    comm: &'a str,
    user: &'a ebpf::Stack,
    kernel: &'a ebpf::Stack,
    time_unix_nano: u64,
    kind: ProfileKind,
    value_nanos: u64,
    label: &'static str,
}

impl Agent {
    fn batch(&mut self, samples: &[CpuSample]) -> ProfileBatch {
        let mut out = ProfileBatch::default();
        for s in samples {
            self.add(
                &mut out,
                Record {
                    pid: s.pid,
                    tid: s.tid,
                    comm: &s.comm,
                    user: &s.user_stack,
                    kernel: &s.kernel_stack,
                    time_unix_nano: ebpf::unix_nanos_from_monotonic(s.ktime_ns),
                    kind: ProfileKind::Cpu,
                    value_nanos: s.period_ns,
                    // Only high traffic boosts a process.
                    label: if s.boosted { HIGH_TRAFFIC } else { "" },
                },
            );
        }
        out
    }

    /// Off-CPU blocks are stored at the time the thread blocked (where its stack was taken),
    /// so a block is joined to the span it started in, with the blocked time as the value.
    fn add_blocks(&mut self, out: &mut ProfileBatch, blocks: &[OffCpuEvent]) {
        for b in blocks {
            self.add(
                out,
                Record {
                    pid: b.pid,
                    tid: b.tid,
                    comm: &b.comm,
                    user: &b.user_stack,
                    kernel: &b.kernel_stack,
                    time_unix_nano: ebpf::unix_nanos_from_monotonic(
                        b.ktime_ns.saturating_sub(b.blocked_ns),
                    ),
                    kind: ProfileKind::OffCpu,
                    value_nanos: b.blocked_ns,
                    label: "",
                },
            );
        }
    }

    /// Stacks whose write did not reach the store: the next sample using one sends it again.
    fn forget_stacks(&mut self, ids: &[u64]) {
        for id in ids {
            self.sent_stacks.remove(id);
        }
    }

    fn add(&mut self, out: &mut ProfileBatch, r: Record) {
        let (id, stack) = self.symbolizer.symbolize_interned(&RawStack {
            pid: r.pid,
            comm: r.comm,
            user: &r.user.addresses,
            user_cut_short: r.user.is_cut_short(),
            kernel: &r.kernel.addresses,
        });
        let process = self.symbolizer.observe_process(r.pid, r.comm);
        let service = process
            .service_name
            .clone()
            .or_else(|| self.span_services.get(&r.pid).cloned())
            .unwrap_or_else(|| r.comm.to_string());
        let id = id.0;
        if self.sent_stacks.insert(id) {
            out.stacks
                .push(stored_stack(&stack, id, r.time_unix_nano, &service));
        }
        out.samples.push(ProfileSample {
            time_unix_nano: r.time_unix_nano,
            service_name: service,
            host_name: self.host_name.clone(),
            pid: r.pid,
            tid: r.tid,
            comm: r.comm.to_string(),
            kind: r.kind,
            stack_id: id,
            value_nanos: r.value_nanos,
            label: r.label.to_string(),
        });
    }
}

/// Root first, kernel frames marked `_[k]` and JIT frames `_[j]` as in the folded format.
fn stored_stack(stack: &Stack, id: u64, time: u64, service: &str) -> ProfileStack {
    let name = |f: &Frame| format!("{}{}", f.function, f.kind.name_suffix());
    ProfileStack {
        stack_id: id,
        first_seen_unix_nano: time,
        service_name: service.to_string(),
        frames: stack.frames.iter().rev().map(name).collect(),
        modules: stack
            .frames
            .iter()
            .rev()
            .map(|f| f.module.to_string())
            .collect(),
        truncated: stack.truncated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{Group, Resource, Scope};

    fn spans_from(resources: &[&[(&str, &str)]]) -> Batch {
        Batch::Spans(
            resources
                .iter()
                .map(|attrs| Group {
                    resource: Arc::new(Resource {
                        attributes: attrs
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                        schema_url: String::new(),
                    }),
                    scope: Arc::new(Scope::default()),
                    items: Vec::new(),
                })
                .collect(),
        )
    }

    #[test]
    fn local_span_senders_are_followed_most_recent_first_until_they_go_quiet() {
        let traced = TracedProcesses::new("here");
        let t0 = Instant::now();
        let first = spans_from(&[
            &[("process.pid", "10"), ("host.name", "here")],
            &[("process.pid", "20"), ("host.name", "elsewhere")],
            &[("process.pid", "not a pid")],
            &[("service.name", "no pid")],
        ]);
        traced.note(&first.span_groups());
        std::thread::sleep(Duration::from_millis(5));
        traced.note(&spans_from(&[&[("process.pid", "30")]]).span_groups());
        let later = Instant::now();
        assert_eq!(traced.recent(later, TRACED_FOR, 10), vec![30, 10]);
        assert_eq!(traced.recent(later, TRACED_FOR, 1), vec![30]);
        // 10 was last seen before `later - (later - t0)`, so a window shorter than that drops it.
        let window = later.duration_since(t0) - Duration::from_millis(1);
        assert_eq!(traced.recent(later, window, 10), vec![30]);
        assert_eq!(traced.recent(later, TRACED_FOR, 10), vec![30], "forgotten");
    }

    #[test]
    fn a_drain_vouches_for_its_start_unless_a_block_under_way_began_earlier() {
        let sec = 1_000_000_000u64;
        let margin = WATERMARK_MARGIN.as_nanos() as u64;
        let hold = OFF_CPU_HOLD.as_nanos() as u64;
        let t = 1_000 * sec;
        assert_eq!(drain_complete_before(t, None), t - margin);
        // A thread off CPU since t - 5 s reports a block stamped t - 5 s when it wakes.
        assert_eq!(
            drain_complete_before(t, Some(t - 5 * sec)),
            t - 5 * sec - margin
        );
        assert_eq!(drain_complete_before(t, Some(t + sec)), t - margin);
        // One blocked for longer than the hold no longer holds the watermark back.
        assert_eq!(
            drain_complete_before(t, Some(t - 10 * hold)),
            t - margin - hold
        );
    }

    #[test]
    fn the_watermark_only_grows() {
        let w = StoredUpTo::new(10);
        w.advance(5);
        assert_eq!(w.get(), 10);
        w.clone().advance(20);
        assert_eq!(w.get(), 20);
    }

    /// A drain's promise is kept only once its write and every earlier one resolved.
    #[tokio::test]
    async fn watermarks_follow_the_writes_in_drain_order() {
        struct Gate(Arc<tokio::sync::Notify>);
        impl pipeline::DurableSink for Gate {
            fn write(&self, _: Batch) -> pipeline::WriteFuture<'_> {
                Box::pin(async move {
                    self.0.notified().await;
                    Ok(())
                })
            }
        }
        let gate = Arc::new(tokio::sync::Notify::new());
        let p = Pipeline::new(Gate(gate.clone()), pipeline::Enricher::disabled(), 1 << 20);
        let stored = StoredUpTo::new(1);
        let (tx, _) = publish_watermarks(stored.clone());
        let write = || {
            p.submit(
                Batch::Profiles(ProfileBatch::default()),
                1,
                Origin::default(),
            )
            .unwrap()
        };
        let drained = |complete, ack| Drained {
            complete,
            ack,
            new_stacks: Vec::new(),
        };
        tx.send(drained(100, Some(write()))).unwrap();
        // An empty drain after a pending write vouches for nothing until that write lands.
        tx.send(drained(200, None)).unwrap();
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert_eq!(stored.get(), 1, "the write has not resolved");
        gate.notify_one();
        for _ in 0..200 {
            if stored.get() == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(stored.get(), 200);
    }

    /// A write the store fails hands its new stacks back; the agent then sends such a stack
    /// again with the next sample that uses it, instead of samples pointing at nothing.
    #[tokio::test]
    async fn stacks_of_a_failed_write_are_sent_again() {
        struct Failing;
        impl pipeline::DurableSink for Failing {
            fn write(&self, _: Batch) -> pipeline::WriteFuture<'_> {
                Box::pin(async { Err(pipeline::SinkError::Unavailable("disk full".into())) })
            }
        }
        let mut agent = Agent {
            symbolizer: Symbolizer::new(),
            sent_stacks: HashSet::new(),
            host_name: "h".into(),
            span_services: HashMap::new(),
        };
        let user = ebpf::Stack {
            addresses: Arc::from(&[0x1000u64, 0x2000][..]),
            status: ebpf::StackStatus::Walked,
        };
        let kernel = ebpf::Stack {
            addresses: Arc::from(&[][..]),
            status: ebpf::StackStatus::Walked,
        };
        let record = || Record {
            pid: std::process::id(),
            tid: std::process::id(),
            comm: "t",
            user: &user,
            kernel: &kernel,
            time_unix_nano: 1,
            kind: ProfileKind::Cpu,
            value_nanos: 1,
            label: "",
        };
        let mut first = ProfileBatch::default();
        agent.add(&mut first, record());
        agent.add(&mut first, record());
        assert_eq!((first.samples.len(), first.stacks.len()), (2, 1));

        let p = Pipeline::new(Failing, pipeline::Enricher::disabled(), 1 << 20);
        let stored = StoredUpTo::new(1);
        let (tx, unsent) = publish_watermarks(stored.clone());
        let new_stacks: Vec<u64> = first.stacks.iter().map(|s| s.stack_id).collect();
        let ack = p
            .submit(Batch::Profiles(first), 1, Origin::default())
            .unwrap();
        tx.send(Drained {
            complete: 100,
            ack: Some(ack),
            new_stacks: new_stacks.clone(),
        })
        .unwrap();
        for _ in 0..200 {
            if stored.get() == 100 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The failed write still raises the watermark (it will never land) ...
        assert_eq!(stored.get(), 100);
        // ... and gives its stacks back.
        let back: Vec<u64> = unsent.try_iter().flatten().collect();
        assert_eq!(back, new_stacks);

        let mut before_forgetting = ProfileBatch::default();
        agent.add(&mut before_forgetting, record());
        assert!(before_forgetting.stacks.is_empty(), "still marked as sent");
        agent.forget_stacks(&back);
        let mut again = ProfileBatch::default();
        agent.add(&mut again, record());
        assert_eq!(again.stacks.len(), 1);
        assert_eq!(again.stacks[0].stack_id, new_stacks[0]);
    }

    #[test]
    fn off_cpu_modes_parse_and_refuse_anything_else() {
        assert_eq!(OffCpuMode::parse("traced"), Ok(OffCpuMode::Traced));
        assert_eq!(OffCpuMode::parse("all"), Ok(OffCpuMode::All));
        assert_eq!(OffCpuMode::parse("off"), Ok(OffCpuMode::Off));
        assert_eq!(
            OffCpuMode::parse("some"),
            Err("expected off, traced or all, found \"some\"".to_string())
        );
    }
}
