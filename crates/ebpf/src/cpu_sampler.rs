//! On-CPU sampling of every process: cpu-clock perf events on every online CPU at a base rate,
//! and a second set at a boosted rate for the processes given to [`CpuSampler::boost`].

use std::collections::HashSet;
use std::sync::Arc;

use libbpf_rs::{MapCore, MapFlags};

use crate::counters::{self, ProgramCounters};
use crate::error::{EbpfError, Result};
use crate::loader::{LoadedSkel, validate_maps};
use crate::perf_event::{AttachedEvent, CpuClockEvent, online_cpus};
use crate::ring::{RecordReader, comm_at, i32_at, u32_at, u64_at};
use crate::skel::cpu_sampler::{CpuSamplerSkel, CpuSamplerSkelBuilder};
use crate::stacks::{Stack, StackMaps, StackStatus};
use crate::unwind::{UnwindStats, Unwinder};

/// How the sampler runs. The defaults suit an always-on profiler of a whole host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuSamplerConfig {
    /// Samples per second per CPU for every process. 19 Hz: cheap, and off the beat of
    /// timers that run at round frequencies.
    pub frequency_hz: u32,
    /// Samples per second per CPU for boosted processes.
    pub boost_frequency_hz: u32,
    /// Distinct stacks each of the two stack maps holds (about 1 KiB of kernel memory each).
    pub stack_map_entries: u32,
    /// Ring buffer size in bytes: a power of two, a multiple of the page size. One record takes
    /// 80 bytes, plus 8 per frame for stacks unwound with tables; the buffer must hold what
    /// arrives between two drains.
    pub ring_buffer_bytes: u32,
    /// Rows of `.eh_frame` unwind tables the sampler can hold for all executable files together
    /// (12 bytes of kernel memory each; the C library needs about 28,000). 0 turns table
    /// unwinding off: every user stack is then walked by frame pointers.
    pub unwind_table_rows: u32,
}

impl Default for CpuSamplerConfig {
    fn default() -> Self {
        Self {
            frequency_hz: 19,
            boost_frequency_hz: 99,
            stack_map_entries: 4096,
            ring_buffer_bytes: 2 * 1024 * 1024,
            unwind_table_rows: 1 << 20,
        }
    }
}

impl CpuSamplerConfig {
    fn validate(&self) -> Result<()> {
        for (name, hz) in [
            ("frequency_hz", self.frequency_hz),
            ("boost_frequency_hz", self.boost_frequency_hz),
        ] {
            if !(1..=10_000).contains(&hz) {
                return Err(EbpfError::Config(format!(
                    "{name} must be between 1 and 10000, found {hz}"
                )));
            }
        }
        validate_maps(self.stack_map_entries, self.ring_buffer_bytes)
    }
}

/// One on-CPU sample: which thread was running on which CPU, and its stacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuSample {
    /// `CLOCK_MONOTONIC` nanoseconds (see [`crate::unix_nanos_from_monotonic`]).
    pub ktime_ns: u64,
    /// CPU time this sample stands for, in nanoseconds (the sampling period of the event that
    /// took it): boosted samples weigh less, so sums stay comparable across rates.
    pub period_ns: u64,
    /// Process id (tgid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    pub cpu: u32,
    /// The thread's name when sampled.
    pub comm: String,
    /// User stack, leaf first. Its leaf is the sampled instruction pointer even when the stack
    /// could not be walked.
    pub user_stack: Stack,
    /// Kernel stack, leaf first; absent when the sample hit user code.
    pub kernel_stack: Stack,
    /// Taken at the boosted rate.
    pub boosted: bool,
    /// A kernel thread (no user space).
    pub kernel_thread: bool,
}

/// The record `struct cpu_sample` in `bpf/cpu_sampler.bpf.c`.
const CPU_SAMPLE_SIZE: usize = 72;
const RECORD_KERNEL_THREAD: u32 = 1 << 1;
const RECORD_BOOSTED: u32 = 1 << 2;
/// User frames unwound with tables follow the record.
const RECORD_UNWOUND: u32 = 1 << 3;
/// The unwound stack reached the frame limit.
const RECORD_UNWIND_DEPTH: u32 = 1 << 4;
/// The unwinder stopped at a frame its tables cannot follow or at unreadable memory.
const RECORD_UNWIND_STOPPED: u32 = 1 << 5;

struct RawSample {
    ktime_ns: u64,
    period_ns: u64,
    user_ip: u64,
    pid: u32,
    tid: u32,
    user_stack_id: i32,
    kernel_stack_id: i32,
    generation: u32,
    cpu: u32,
    flags: u32,
    comm: String,
    /// Leaf first, when the BPF program unwound the user stack with tables.
    user_frames: Option<Arc<[u64]>>,
}

fn parse_sample(data: &[u8]) -> Option<RawSample> {
    if data.len() < CPU_SAMPLE_SIZE {
        return None;
    }
    let flags = u32_at(data, 48);
    let user_frames = if flags & RECORD_UNWOUND != 0 {
        let count = u32_at(data, 68) as usize;
        let frames = data.get(CPU_SAMPLE_SIZE..CPU_SAMPLE_SIZE + count * 8)?;
        Some(frames.chunks_exact(8).map(|c| u64_at(c, 0)).collect())
    } else {
        None
    };
    Some(RawSample {
        ktime_ns: u64_at(data, 0),
        period_ns: u64_at(data, 8),
        user_ip: u64_at(data, 16),
        pid: u32_at(data, 24),
        tid: u32_at(data, 28),
        user_stack_id: i32_at(data, 32),
        kernel_stack_id: i32_at(data, 36),
        generation: u32_at(data, 40),
        cpu: u32_at(data, 44),
        flags,
        comm: comm_at(data, 52),
        user_frames,
    })
}

/// A running CPU sampler. Dropping it detaches everything.
pub struct CpuSampler {
    // Fields drop in order: events (and their links) before the object they refer to.
    base_events: Vec<AttachedEvent>,
    boost_events: Vec<AttachedEvent>,
    boosted: HashSet<u32>,
    /// The rates the events run at now: (base, boosted).
    frequencies: (u32, u32),
    reader: RecordReader<RawSample>,
    stacks: StackMaps,
    unwinder: Unwinder,
    /// The exec and exit hooks that drop a process's tables.
    _forget_links: Vec<libbpf_rs::Link>,
    skel: LoadedSkel<CpuSamplerSkel<'static>>,
}

impl CpuSampler {
    /// Loads the programs and starts sampling every online CPU at the base rate.
    pub fn start(config: CpuSamplerConfig) -> Result<Self> {
        config.validate()?;
        let skel = LoadedSkel::load("cpu_sampler", CpuSamplerSkelBuilder::default(), |open| {
            let size = |what| move |source| EbpfError::Map { what, source };
            open.maps
                .stacks_0
                .set_max_entries(config.stack_map_entries)
                .map_err(size("sizing stack map 0"))?;
            open.maps
                .stacks_1
                .set_max_entries(config.stack_map_entries)
                .map_err(size("sizing stack map 1"))?;
            open.maps
                .samples
                .set_max_entries(config.ring_buffer_bytes)
                .map_err(size("sizing the ring buffer"))?;
            open.maps
                .unwind_rows
                .set_max_entries(config.unwind_table_rows.max(1))
                .map_err(size("sizing the unwind rows"))?;
            Ok(())
        })?;
        let reader = RecordReader::new(&skel.maps.samples, parse_sample)?;
        let mut forget_links = Vec::new();
        for (program, prog) in [
            ("unwind_forget_on_exec", &skel.progs.unwind_forget_on_exec),
            ("unwind_forget_on_exit", &skel.progs.unwind_forget_on_exit),
        ] {
            forget_links.push(
                prog.attach()
                    .map_err(|source| EbpfError::Attach { program, source })?,
            );
        }
        let cpus = online_cpus()?;
        let mut sampler = Self {
            base_events: Vec::new(),
            boost_events: Vec::new(),
            boosted: HashSet::new(),
            frequencies: (config.frequency_hz, config.boost_frequency_hz),
            reader,
            stacks: StackMaps::new(),
            unwinder: Unwinder::new(config.unwind_table_rows),
            _forget_links: forget_links,
            skel,
        };
        let base_period = 1_000_000_000 / u64::from(config.frequency_hz);
        let boost_period = 1_000_000_000 / u64::from(config.boost_frequency_hz);
        for &cpu in &cpus {
            let base = CpuClockEvent::open(cpu, base_period)?
                .attach(|fd| sampler.skel.progs.sample_base_rate.attach_perf_event(fd))
                .map_err(|source| EbpfError::Attach {
                    program: "sample_base_rate",
                    source,
                })?;
            base.enable().map_err(|source| EbpfError::Io {
                what: "enabling a perf event",
                source,
            })?;
            sampler.base_events.push(base);

            let boost = CpuClockEvent::open(cpu, boost_period)?
                .attach(|fd| sampler.skel.progs.sample_boosted_rate.attach_perf_event(fd))
                .map_err(|source| EbpfError::Attach {
                    program: "sample_boosted_rate",
                    source,
                })?;
            // Idle until a process is boosted: 99 interrupts a second per CPU for nobody would
            // cost more than the base sampling itself.
            boost.disable().map_err(|source| EbpfError::Io {
                what: "disabling a perf event",
                source,
            })?;
            sampler.boost_events.push(boost);
        }
        tracing::debug!(
            cpus = cpus.len(),
            config.frequency_hz,
            "cpu sampler started"
        );
        Ok(sampler)
    }

    /// Samples the process `pid` (all its threads) at the boosted rate from now on.
    pub fn boost(&mut self, pid: u32) -> Result<()> {
        if self.boosted.is_empty() {
            for event in &self.boost_events {
                event.enable().map_err(|source| EbpfError::Io {
                    what: "enabling a boost perf event",
                    source,
                })?;
            }
        }
        self.skel
            .maps
            .boosted
            .update(&pid.to_ne_bytes(), &[1], MapFlags::ANY)
            .map_err(|source| EbpfError::Map {
                what: "adding a pid to the boosted map",
                source,
            })?;
        self.boosted.insert(pid);
        Ok(())
    }

    /// Back to the base rate for `pid`.
    pub fn unboost(&mut self, pid: u32) -> Result<()> {
        if !self.boosted.remove(&pid) {
            return Ok(());
        }
        if let Err(source) = self.skel.maps.boosted.delete(&pid.to_ne_bytes())
            && source.kind() != libbpf_rs::ErrorKind::NotFound
        {
            return Err(EbpfError::Map {
                what: "removing a pid from the boosted map",
                source,
            });
        }
        if self.boosted.is_empty() {
            for event in &self.boost_events {
                event.disable().map_err(|source| EbpfError::Io {
                    what: "disabling a boost perf event",
                    source,
                })?;
            }
        }
        Ok(())
    }

    /// The processes sampled at the boosted rate.
    pub fn boosted(&self) -> impl Iterator<Item = u32> + '_ {
        self.boosted.iter().copied()
    }

    /// The rates the events run at now: (base, boosted), samples per second per CPU.
    pub fn frequencies(&self) -> (u32, u32) {
        self.frequencies
    }

    /// Changes the base and boosted rates on every CPU; each event takes its new period at its
    /// next sample. Samples carry their own period, so sums stay comparable across a change.
    pub fn set_frequencies(&mut self, base_hz: u32, boost_hz: u32) -> Result<()> {
        for (name, hz) in [("base rate", base_hz), ("boosted rate", boost_hz)] {
            if !(1..=10_000).contains(&hz) {
                return Err(EbpfError::Config(format!(
                    "the {name} must be between 1 and 10000 Hz, found {hz}"
                )));
            }
        }
        for (events, hz, old) in [
            (&self.base_events, base_hz, self.frequencies.0),
            (&self.boost_events, boost_hz, self.frequencies.1),
        ] {
            if hz == old {
                continue;
            }
            for event in events {
                event
                    .set_period(1_000_000_000 / u64::from(hz))
                    .map_err(|source| EbpfError::Io {
                        what: "changing a perf event's period",
                        source,
                    })?;
            }
        }
        self.frequencies = (base_hz, boost_hz);
        Ok(())
    }

    /// What the two programs have cost so far (times stay 0 unless run-time statistics are
    /// on: see [`crate::RunTimeStats`]).
    pub fn program_stats(&self) -> Result<Vec<crate::ProgramStats>> {
        Ok(vec![
            crate::program_stats::read("sample_base_rate", &self.skel.progs.sample_base_rate)?,
            crate::program_stats::read(
                "sample_boosted_rate",
                &self.skel.progs.sample_boosted_rate,
            )?,
        ])
    }

    /// Waits up to `timeout` until at least one sample is ready.
    pub fn wait(&self, timeout: std::time::Duration) -> Result<()> {
        self.reader.wait(timeout)
    }

    /// Every sample taken since the last drain, stacks resolved. Call it regularly (about once a
    /// second): the ring buffer and stack maps hold what arrives between two drains.
    pub fn drain(&mut self) -> Result<Vec<CpuSample>> {
        let raw = self.reader.drain()?;
        let maps: [&dyn MapCore; 2] = [&self.skel.maps.stacks_0, &self.skel.maps.stacks_1];
        let mut samples = Vec::with_capacity(raw.len());
        for r in raw {
            let user_stack = match r.user_frames {
                Some(addresses) => Stack {
                    addresses,
                    status: if r.flags & RECORD_UNWIND_DEPTH != 0 {
                        StackStatus::DepthLimit
                    } else if r.flags & RECORD_UNWIND_STOPPED != 0 {
                        StackStatus::Stopped
                    } else {
                        StackStatus::Walked
                    },
                },
                None => self
                    .stacks
                    .stack(maps, r.generation, r.user_stack_id, r.user_ip),
            };
            let kernel_stack = self.stacks.stack(maps, r.generation, r.kernel_stack_id, 0);
            samples.push(CpuSample {
                ktime_ns: r.ktime_ns,
                period_ns: r.period_ns,
                pid: r.pid,
                tid: r.tid,
                cpu: r.cpu,
                comm: r.comm,
                user_stack,
                kernel_stack,
                boosted: r.flags & RECORD_BOOSTED != 0,
                kernel_thread: r.flags & RECORD_KERNEL_THREAD != 0,
            });
        }
        // Samples carry their stacks' generation and are all read: nothing to keep.
        let generation = self.stacks.rotate(maps, &HashSet::new())?;
        set_generation(&mut self.skel, generation)?;
        Ok(samples)
    }

    /// Unwinds `pid`'s user stacks with `.eh_frame` tables from now on: hands its mappings to the
    /// BPF program, and the files without a table yet to the builder thread (once per file;
    /// [`CpuSampler::refresh_unwinding`] loads them when built). True when some mapping has a
    /// table now; a process without any keeps the frame-pointer walk, and so does every frame
    /// outside the mappings with tables. Cheap for a process already known.
    pub fn unwind_process(&mut self, pid: u32) -> Result<bool> {
        self.unwinder.add_process(
            &self.skel.maps.unwind_rows,
            &self.skel.maps.unwind_processes,
            pid,
        )
    }

    /// [`CpuSampler::unwind_process`], then waits (up to `timeout`) until the tables it needs are
    /// built (that happens on a thread of its own, and the drains hand them over as they are
    /// ready). True when the process is then unwound with tables.
    pub fn await_unwind_tables(&mut self, pid: u32, timeout: std::time::Duration) -> Result<bool> {
        self.unwind_process(pid)?;
        self.unwinder.wait_for(
            &self.skel.maps.unwind_rows,
            &self.skel.maps.unwind_processes,
            pid,
            timeout,
        )
    }

    /// Loads the tables built since the last call and hands over the processes waiting for them;
    /// every 10 seconds also forgets processes given to [`CpuSampler::unwind_process`] that have
    /// exited and reloads those that mapped new code. Call it after each drain.
    pub fn refresh_unwinding(&mut self) -> Result<()> {
        self.unwinder.refresh(
            &self.skel.maps.unwind_rows,
            &self.skel.maps.unwind_processes,
        )
    }

    /// What the `.eh_frame` unwinder holds.
    pub fn unwind_stats(&self) -> UnwindStats {
        self.unwinder.stats()
    }

    /// The kernel's counters summed over CPUs, plus userspace's own losses.
    pub fn counters(&self) -> Result<ProgramCounters> {
        let per_cpu = counters::read_per_cpu(&self.skel.maps.counters)?;
        Ok(ProgramCounters {
            kernel: counters::sum(&per_cpu),
            per_cpu,
            stacks_expired: self.stacks.expired(),
            malformed_records: self.reader.malformed(),
        })
    }
}

fn set_generation(skel: &mut CpuSamplerSkel<'static>, generation: u32) -> Result<()> {
    let bss =
        skel.maps.bss_data.as_deref_mut().ok_or_else(|| {
            EbpfError::Config("the cpu sampler's .bss is not memory-mapped".into())
        })?;
    // Volatile: the BPF programs read this mapped memory concurrently.
    // SAFETY: a valid, aligned pointer into the mapped .bss.
    unsafe { std::ptr::write_volatile(&mut bss.stack_generation, generation) };
    Ok(())
}
