//! oxeye's BPF programs: compiled from `src/bpf/*.bpf.c` at build time, loaded with libbpf-rs,
//! attached, and read back as plain records (samples, events, stacks as addresses, counters).
//! Interpreting them — symbols, aggregation, formats — is `profile`'s job.
//!
//! One module per program (`cpu_sampler`, `off_cpu`, `security`, `syscall_floor`); `loader`, `ring`, `stacks` and
//! `counters` are shared by all of them.

mod counters;
mod cpu_sampler;
mod error;
mod loader;
mod off_cpu;
mod perf_event;
mod program_stats;
mod ring;
mod security;
mod stacks;
mod syscall_floor;
mod unwind;
mod unwind_table;

mod skel {
    pub(crate) mod cpu_sampler {
        #![allow(unused_imports)]
        include!(concat!(env!("OUT_DIR"), "/cpu_sampler.skel.rs"));
    }
    pub(crate) mod off_cpu {
        #![allow(unused_imports)]
        include!(concat!(env!("OUT_DIR"), "/off_cpu.skel.rs"));
    }
    pub(crate) mod security {
        #![allow(unused_imports)]
        include!(concat!(env!("OUT_DIR"), "/security.skel.rs"));
    }
    pub(crate) mod syscall_floor {
        #![allow(unused_imports)]
        include!(concat!(env!("OUT_DIR"), "/syscall_floor.skel.rs"));
    }
}

pub use counters::{Counters, ProgramCounters};
pub use cpu_sampler::{CpuSample, CpuSampler, CpuSamplerConfig};
pub use error::{EbpfError, Result};
pub use loader::check_prerequisites;
pub use off_cpu::{OffCpuConfig, OffCpuEvent, OffCpuProfiler, ThreadState};
pub use perf_event::online_cpus;
pub use program_stats::RunTimeStats;
pub use security::{
    ConnectionEvent, EventProcess, ExecEvent, ExitEvent, FileOpenEvent, MAX_ARGV_BYTES,
    MAX_PREFIX_BYTES, ModuleLoadEvent, PrivilegeChangeEvent, PrivilegeSyscall,
    ProcessSyscallCounts, ProgramStats, Protocol, PtraceEvent, SecurityConfig, SecurityEvent,
    SecuritySensor, SyscallClass, default_watched_prefixes,
};
pub use stacks::{MAX_STACK_DEPTH, Stack, StackError, StackStatus};
pub use syscall_floor::SyscallHookFloor;
pub use unwind::UnwindStats;
pub use unwind_table::{
    LoadSegment, RowKind, UnwindRow, UnwindTable, UnwindTableError, build_unwind_table,
};

fn clock_nanos(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec out-pointer; the clocks used here exist on every Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// `CLOCK_MONOTONIC` now, in nanoseconds: the clock of the samples' `ktime_ns`.
pub fn monotonic_nanos() -> u64 {
    clock_nanos(libc::CLOCK_MONOTONIC) as u64
}

/// Converts a BPF timestamp (`bpf_ktime_get_ns`, `CLOCK_MONOTONIC`) to nanoseconds since the
/// Unix epoch, with the clocks' offset as it is now.
pub fn unix_nanos_from_monotonic(ktime_ns: u64) -> u64 {
    let offset = clock_nanos(libc::CLOCK_REALTIME) - clock_nanos(libc::CLOCK_MONOTONIC);
    (ktime_ns as i128 + offset).max(0) as u64
}
