//! The profiling agent: CPU samples from `ebpf`, symbolized by `profile`, sent through the pipeline
//! into `profile_samples` and `profile_stacks`. It runs on its own thread because symbolization
//! reads files and blocks; it never stops the rest of oxeye from running.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ebpf::{CpuSample, CpuSampler, CpuSamplerConfig};
use model::{Batch, ProfileBatch, ProfileKind, ProfileSample, ProfileStack};
use pipeline::{Origin, Pipeline};
use profile::{Frame, FrameKind, RawStack, Stack, Symbolizer};

/// How often samples are drained from the kernel and sent on.
const DRAIN_EVERY: Duration = Duration::from_secs(1);

pub struct ProfilerHandle {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ProfilerHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts sampling every process at `frequency_hz`, or says why it cannot (not root, no BTF,
/// the verifier's refusal).
pub fn start(
    frequency_hz: u32,
    pipeline: Pipeline,
    host_name: String,
) -> Result<ProfilerHandle, String> {
    ebpf::check_prerequisites().map_err(|e| e.to_string())?;
    let sampler = CpuSampler::start(CpuSamplerConfig {
        frequency_hz,
        ..CpuSamplerConfig::default()
    })
    .map_err(|e| e.to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Handle::current();
    let thread = std::thread::Builder::new()
        .name("oxeye-profiler".into())
        .spawn({
            let stop = stop.clone();
            move || {
                let _guard = runtime.enter();
                run(sampler, pipeline, host_name, &stop);
            }
        })
        .map_err(|e| format!("cannot start the profiler thread: {e}"))?;
    Ok(ProfilerHandle {
        stop,
        thread: Some(thread),
    })
}

fn run(mut sampler: CpuSampler, pipeline: Pipeline, host_name: String, stop: &AtomicBool) {
    let mut agent = Agent {
        symbolizer: Symbolizer::new(),
        sent_stacks: HashSet::new(),
        host_name,
    };
    let mut refused = 0u64;
    let mut last_cleanup = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(DRAIN_EVERY);
        let samples = match sampler.drain() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "profiler: cannot read samples");
                continue;
            }
        };
        if samples.is_empty() {
            continue;
        }
        let batch = agent.batch(&samples);
        let bytes = batch.samples.len() * 128 + batch.stacks.len() * 1024;
        if pipeline
            .submit(Batch::Profiles(batch), bytes, Origin::default())
            .is_err()
        {
            // The store is pushing back: profiles are the first thing to give way.
            refused += samples.len() as u64;
            tracing::warn!(refused, "profiler: the pipeline is full, samples dropped");
        }
        if last_cleanup.elapsed() > Duration::from_secs(60) {
            agent
                .symbolizer
                .forget_idle_processes(Duration::from_secs(300));
            last_cleanup = Instant::now();
        }
    }
}

struct Agent {
    symbolizer: Symbolizer,
    /// Stacks already written by this run; the store keeps them, samples refer to them by id.
    sent_stacks: HashSet<u64>,
    host_name: String,
}

impl Agent {
    fn batch(&mut self, samples: &[CpuSample]) -> ProfileBatch {
        let mut out = ProfileBatch::default();
        for s in samples {
            let stack = self.symbolizer.symbolize(&RawStack {
                pid: s.pid,
                comm: &s.comm,
                user: &s.user_stack.addresses,
                user_cut_short: s.user_stack.is_cut_short(),
                kernel: &s.kernel_stack.addresses,
            });
            let process = self.symbolizer.observe_process(s.pid, &s.comm);
            let service = process
                .service_name
                .clone()
                .unwrap_or_else(|| s.comm.clone());
            let time = ebpf::unix_nanos_from_monotonic(s.ktime_ns);
            let id = stack.id().0;
            if self.sent_stacks.insert(id) {
                out.stacks.push(stored_stack(&stack, id, time, &service));
            }
            out.samples.push(ProfileSample {
                time_unix_nano: time,
                service_name: service,
                host_name: self.host_name.clone(),
                pid: s.pid,
                tid: s.tid,
                comm: s.comm.clone(),
                kind: ProfileKind::Cpu,
                stack_id: id,
                value_nanos: s.period_ns,
                label: String::new(),
            });
        }
        out
    }
}

/// Root first, kernel frames marked `_[k]` and JIT frames `_[j]` as in the folded format.
fn stored_stack(stack: &Stack, id: u64, time: u64, service: &str) -> ProfileStack {
    let name = |f: &Frame| match f.kind {
        FrameKind::User => f.function.to_string(),
        FrameKind::Kernel => format!("{}_[k]", f.function),
        FrameKind::Jit => format!("{}_[j]", f.function),
    };
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
