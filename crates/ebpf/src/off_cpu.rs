//! Off-CPU time: how long threads were switched out, with the stacks they blocked in, from the
//! `sched_switch` raw tracepoint. Blocks shorter than the minimum are dropped in the kernel.

use std::collections::HashSet;
use std::time::Duration;

use libbpf_rs::{Link, MapCore, MapFlags};

use crate::counters::{self, ProgramCounters};
use crate::error::{EbpfError, Result};
use crate::loader::{LoadedSkel, validate_maps};
use crate::ring::{RecordReader, comm_at, i32_at, u32_at, u64_at};
use crate::skel::off_cpu::{OffCpuSkel, OffCpuSkelBuilder};
use crate::stacks::{Stack, StackKey, StackMaps};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffCpuConfig {
    /// Shorter blocks are not reported.
    pub min_blocked: Duration,
    /// Also count time a thread waited runnable after being preempted (run-queue latency),
    /// not only time it slept.
    pub include_preempted: bool,
    /// Follow only these processes (tgid); `None`: every process.
    pub only_pids: Option<Vec<u32>>,
    /// Never follow this process (tgid), even when listed: the reader's own blocks would feed
    /// back into its work.
    pub skip_pid: Option<u32>,
    /// Distinct stacks each of the two stack maps holds.
    pub stack_map_entries: u32,
    /// Ring buffer size in bytes (power of two, page multiple); one event takes 80 bytes.
    pub ring_buffer_bytes: u32,
}

impl Default for OffCpuConfig {
    fn default() -> Self {
        Self {
            min_blocked: Duration::from_millis(1),
            include_preempted: true,
            only_pids: None,
            skip_pid: None,
            stack_map_entries: 4096,
            ring_buffer_bytes: 2 * 1024 * 1024,
        }
    }
}

/// What the thread was doing when it was switched out (`prev_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadState {
    /// Still runnable: preempted, waiting for a CPU.
    Preempted,
    /// Sleeping, interruptible (`S`): sleep, poll, futex, socket read.
    Sleeping,
    /// Uninterruptible (`D`): disk I/O, some locks.
    Uninterruptible,
    /// Any other state (stopped, traced, dead…), as the kernel's bits.
    Other(u32),
}

impl ThreadState {
    /// The low bits say how the thread sleeps; modifiers such as `TASK_FREEZABLE` (0x2000,
    /// set by nanosleep) or `TASK_WAKEKILL` come on top.
    fn from_prev_state(state: u32) -> Self {
        const TASK_INTERRUPTIBLE: u32 = 0x1;
        const TASK_UNINTERRUPTIBLE: u32 = 0x2;
        if state == 0 {
            Self::Preempted
        } else if state & TASK_INTERRUPTIBLE != 0 {
            Self::Sleeping
        } else if state & TASK_UNINTERRUPTIBLE != 0 {
            Self::Uninterruptible
        } else {
            Self::Other(state)
        }
    }
}

/// A thread came back on CPU after being blocked at least the minimum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffCpuEvent {
    /// When it was switched back in (`CLOCK_MONOTONIC` ns).
    pub ktime_ns: u64,
    pub blocked_ns: u64,
    pub pid: u32,
    pub tid: u32,
    /// The CPU it was switched in on.
    pub cpu: u32,
    pub comm: String,
    pub state: ThreadState,
    /// Where it blocked, leaf first.
    pub user_stack: Stack,
    pub kernel_stack: Stack,
}

/// `struct off_cpu_event` and `struct switched_out` in `bpf/off_cpu.bpf.c`.
const OFF_CPU_EVENT_SIZE: usize = 72;
const SWITCHED_OUT_SIZE: usize = 32;

struct RawEvent {
    ktime_ns: u64,
    blocked_ns: u64,
    user_ip: u64,
    pid: u32,
    tid: u32,
    user_stack_id: i32,
    kernel_stack_id: i32,
    generation: u32,
    cpu: u32,
    state: u32,
    comm: String,
}

fn parse_event(data: &[u8]) -> Option<RawEvent> {
    if data.len() < OFF_CPU_EVENT_SIZE {
        return None;
    }
    Some(RawEvent {
        ktime_ns: u64_at(data, 0),
        blocked_ns: u64_at(data, 8),
        user_ip: u64_at(data, 16),
        pid: u32_at(data, 24),
        tid: u32_at(data, 28),
        user_stack_id: i32_at(data, 32),
        kernel_stack_id: i32_at(data, 36),
        generation: u32_at(data, 40),
        cpu: u32_at(data, 44),
        state: u32_at(data, 52),
        comm: comm_at(data, 56),
    })
}

/// A running off-CPU profiler. Dropping it detaches the tracepoint.
pub struct OffCpuProfiler {
    /// Held for its drop, which detaches the program.
    _link: Link,
    reader: RecordReader<RawEvent>,
    stacks: StackMaps,
    skel: LoadedSkel<OffCpuSkel<'static>>,
    /// The switch-out time (`CLOCK_MONOTONIC`) of the thread switched out longest, as the last
    /// drain found the threads still off CPU.
    oldest_blocked_ktime: Option<u64>,
}

impl OffCpuProfiler {
    pub fn start(config: OffCpuConfig) -> Result<Self> {
        validate_maps(config.stack_map_entries, config.ring_buffer_bytes)?;
        let min_blocked_ns = u64::try_from(config.min_blocked.as_nanos()).unwrap_or(u64::MAX);
        let skel = LoadedSkel::load("off_cpu", OffCpuSkelBuilder::default(), |open| {
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
                .events
                .set_max_entries(config.ring_buffer_bytes)
                .map_err(size("sizing the ring buffer"))?;
            let rodata = open.maps.rodata_data.as_deref_mut().ok_or_else(|| {
                EbpfError::Config("the off-cpu object's .rodata is not memory-mapped".into())
            })?;
            rodata.min_blocked_ns = min_blocked_ns;
            rodata.include_preempted = config.include_preempted;
            rodata.only_targets = config.only_pids.is_some();
            rodata.skip_tgid = config.skip_pid.unwrap_or(0);
            Ok(())
        })?;
        for pid in config.only_pids.iter().flatten() {
            skel.maps
                .targets
                .update(&pid.to_ne_bytes(), &[1], MapFlags::ANY)
                .map_err(|source| EbpfError::Map {
                    what: "adding a pid to the off-cpu targets",
                    source,
                })?;
        }
        let reader = RecordReader::new(&skel.maps.events, parse_event)?;
        let link = skel
            .progs
            .on_sched_switch
            .attach_raw_tracepoint("sched_switch")
            .map_err(|source| EbpfError::Attach {
                program: "on_sched_switch (raw tracepoint sched_switch)",
                source,
            })?;
        Ok(Self {
            _link: link,
            reader,
            stacks: StackMaps::new(),
            skel,
            oldest_blocked_ktime: None,
        })
    }

    /// Follows `pid` (all its threads) from now on. Only meaningful when the profiler was started
    /// with `only_pids`; otherwise every process is followed already.
    pub fn follow(&mut self, pid: u32) -> Result<()> {
        self.skel
            .maps
            .targets
            .update(&pid.to_ne_bytes(), &[1], MapFlags::ANY)
            .map_err(|source| EbpfError::Map {
                what: "adding a pid to the off-cpu targets",
                source,
            })
    }

    /// Stops following `pid`; a pid that was not followed is not an error.
    pub fn unfollow(&mut self, pid: u32) -> Result<()> {
        match self.skel.maps.targets.delete(&pid.to_ne_bytes()) {
            Err(source) if source.kind() != libbpf_rs::ErrorKind::NotFound => Err(EbpfError::Map {
                what: "removing a pid from the off-cpu targets",
                source,
            }),
            _ => Ok(()),
        }
    }

    /// Waits up to `timeout` until at least one event is ready.
    pub fn wait(&self, timeout: Duration) -> Result<()> {
        self.reader.wait(timeout)
    }

    /// Every event since the last drain, stacks resolved. Call it about once a second.
    /// What the program has cost so far (see [`crate::RunTimeStats`]).
    pub fn program_stats(&self) -> Result<Vec<crate::ProgramStats>> {
        Ok(vec![crate::program_stats::read(
            "on_sched_switch",
            &self.skel.progs.on_sched_switch,
        )?])
    }

    pub fn drain(&mut self) -> Result<Vec<OffCpuEvent>> {
        // Before reading the ring buffer: a thread that wakes after this scan was in it, and one
        // that woke before has its event in the ring buffer already (the BPF side deletes the
        // entry only after committing the event). So no stack is dropped that is still needed.
        let (blocked, oldest) = self.blocked_threads()?;
        self.oldest_blocked_ktime = oldest;
        let raw = self.reader.drain()?;
        let maps: [&dyn MapCore; 2] = [&self.skel.maps.stacks_0, &self.skel.maps.stacks_1];
        let mut events = Vec::with_capacity(raw.len());
        for r in raw {
            let user_stack = self
                .stacks
                .stack(maps, r.generation, r.user_stack_id, r.user_ip);
            let kernel_stack = self.stacks.stack(maps, r.generation, r.kernel_stack_id, 0);
            events.push(OffCpuEvent {
                ktime_ns: r.ktime_ns,
                blocked_ns: r.blocked_ns,
                pid: r.pid,
                tid: r.tid,
                cpu: r.cpu,
                comm: r.comm,
                state: ThreadState::from_prev_state(r.state),
                user_stack,
                kernel_stack,
            });
        }
        let generation = self.stacks.rotate(maps, &blocked)?;
        let bss = self.skel.maps.bss_data.as_deref_mut().ok_or_else(|| {
            EbpfError::Config("the off-cpu object's .bss is not memory-mapped".into())
        })?;
        // Volatile: the BPF program reads this mapped memory concurrently.
        // SAFETY: a valid, aligned pointer into the mapped .bss.
        unsafe { std::ptr::write_volatile(&mut bss.stack_generation, generation) };
        Ok(events)
    }

    /// When the thread switched out longest went off CPU (`CLOCK_MONOTONIC` ns), as found at the
    /// start of the last [`Self::drain`]; `None` when no followed thread was off CPU. Its event,
    /// stamped with that time, comes when it wakes: events stamped earlier than this are all in
    /// that drain or before it. Threads that exited while switched out stay in the kernel's map
    /// (LRU) until evicted, so this may be older than any block still to come.
    pub fn oldest_block_start(&self) -> Option<u64> {
        self.oldest_blocked_ktime
    }

    /// The stacks that threads switched out right now will name when they wake, and the oldest
    /// switch-out time among them.
    fn blocked_threads(&self) -> Result<(HashSet<StackKey>, Option<u64>)> {
        let mut keys = HashSet::new();
        let mut oldest: Option<u64> = None;
        let entries = self
            .skel
            .maps
            .off_cpu_since
            .lookup_batch(1024, MapFlags::ANY, MapFlags::ANY)
            .map_err(|source| EbpfError::Map {
                what: "reading the switched-out threads",
                source,
            })?;
        for (_, value) in entries {
            if value.len() < SWITCHED_OUT_SIZE {
                continue;
            }
            let since = u64_at(&value, 0);
            oldest = Some(oldest.map_or(since, |o| o.min(since)));
            let generation = u32_at(&value, 24);
            for id in [i32_at(&value, 16), i32_at(&value, 20)] {
                if id >= 0 {
                    keys.insert((generation, id as u32));
                }
            }
        }
        Ok((keys, oldest))
    }

    /// Stack copies held for threads still blocked.
    pub fn stacks_kept(&self) -> usize {
        self.stacks.kept()
    }

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

#[cfg(test)]
mod tests {
    use super::ThreadState;

    #[test]
    fn thread_states_ignore_modifier_bits() {
        assert_eq!(ThreadState::from_prev_state(0), ThreadState::Preempted);
        assert_eq!(ThreadState::from_prev_state(0x2001), ThreadState::Sleeping);
        assert_eq!(
            ThreadState::from_prev_state(0x102),
            ThreadState::Uninterruptible
        );
        assert_eq!(ThreadState::from_prev_state(0x4), ThreadState::Other(4));
    }
}
