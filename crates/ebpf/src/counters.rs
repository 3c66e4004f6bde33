//! The per-CPU counters every program keeps (see `enum counter` in `bpf/common.bpf.h`).

use libbpf_rs::{MapCore, MapFlags};

use crate::error::{EbpfError, Result};

/// Counts kept by a BPF program, per CPU or summed. Drops are never silent: every record or
/// stack that did not reach userspace is counted under its reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Records written to the ring buffer.
    pub records: u64,
    /// Records dropped because the ring buffer was full (userspace drains too rarely).
    pub ring_buffer_full: u64,
    /// User stacks lost: stack map full.
    pub user_stack_map_full: u64,
    /// User stacks lost: hash bucket owned by another stack.
    pub user_stack_collisions: u64,
    /// User stacks that could not be read at all.
    pub user_stack_faults: u64,
    pub kernel_stack_map_full: u64,
    pub kernel_stack_collisions: u64,
    pub kernel_stack_faults: u64,
    pub stack_other_errors: u64,
    /// Base-rate samples skipped because their process is sampled at the boosted rate.
    pub boosted_skipped: u64,
    /// Off-CPU blocks shorter than the minimum, filtered in the kernel.
    pub off_cpu_short: u64,
    /// Off-CPU switch-outs not recorded because the per-thread map was full.
    pub off_cpu_start_full: u64,
    /// Syscalls not counted because the per-process count map could not take the process.
    pub syscall_counts_full: u64,
    /// Opens by a relative path, which the security sensor does not match against its watch list.
    pub relative_opens_unchecked: u64,
    /// Security events whose path, argv or working directory was cut at its buffer size.
    pub truncated: u64,
}

const COUNTER_COUNT: usize = 15;

impl Counters {
    /// In the order of `enum counter`.
    fn from_array(v: [u64; COUNTER_COUNT]) -> Self {
        Self {
            records: v[0],
            ring_buffer_full: v[1],
            user_stack_map_full: v[2],
            user_stack_collisions: v[3],
            user_stack_faults: v[4],
            kernel_stack_map_full: v[5],
            kernel_stack_collisions: v[6],
            kernel_stack_faults: v[7],
            stack_other_errors: v[8],
            boosted_skipped: v[9],
            off_cpu_short: v[10],
            off_cpu_start_full: v[11],
            syscall_counts_full: v[12],
            relative_opens_unchecked: v[13],
            truncated: v[14],
        }
    }

    fn to_array(self) -> [u64; COUNTER_COUNT] {
        [
            self.records,
            self.ring_buffer_full,
            self.user_stack_map_full,
            self.user_stack_collisions,
            self.user_stack_faults,
            self.kernel_stack_map_full,
            self.kernel_stack_collisions,
            self.kernel_stack_faults,
            self.stack_other_errors,
            self.boosted_skipped,
            self.off_cpu_short,
            self.off_cpu_start_full,
            self.syscall_counts_full,
            self.relative_opens_unchecked,
            self.truncated,
        ]
    }

    /// Stacks the kernel could not store (map full or bucket collision), user and kernel.
    pub fn stacks_lost_in_kernel(&self) -> u64 {
        self.user_stack_map_full
            + self.user_stack_collisions
            + self.kernel_stack_map_full
            + self.kernel_stack_collisions
    }
}

/// The counters of each possible CPU, in CPU order.
pub(crate) fn read_per_cpu(map: &dyn MapCore) -> Result<Vec<Counters>> {
    let mut per_cpu: Vec<[u64; COUNTER_COUNT]> = Vec::new();
    for index in 0..COUNTER_COUNT {
        let values = map
            .lookup_percpu(&(index as u32).to_ne_bytes(), MapFlags::ANY)
            .map_err(|source| EbpfError::Map {
                what: "reading the per-cpu counters",
                source,
            })?
            .unwrap_or_default();
        if per_cpu.len() < values.len() {
            per_cpu.resize(values.len(), [0; COUNTER_COUNT]);
        }
        for (cpu, value) in values.iter().enumerate() {
            let mut bytes = [0u8; 8];
            if let Some(raw) = value.get(..8) {
                bytes.copy_from_slice(raw);
            }
            per_cpu[cpu][index] = u64::from_ne_bytes(bytes);
        }
    }
    Ok(per_cpu.into_iter().map(Counters::from_array).collect())
}

pub(crate) fn sum(per_cpu: &[Counters]) -> Counters {
    let mut total = [0u64; COUNTER_COUNT];
    for counters in per_cpu {
        for (sum, value) in total.iter_mut().zip(counters.to_array()) {
            *sum += value;
        }
    }
    Counters::from_array(total)
}

/// Drop and loss counts of one program (a sampler or a tracer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramCounters {
    /// Summed over CPUs.
    pub kernel: Counters,
    /// Indexed by CPU number.
    pub per_cpu: Vec<Counters>,
    /// Stacks gone from their map before the record naming them was read.
    pub stacks_expired: u64,
    /// Records of the wrong size (a build mismatch between the BPF object and this crate).
    pub malformed_records: u64,
}

impl ProgramCounters {
    /// Every stack lost, in the kernel or in userspace.
    pub fn stacks_lost(&self) -> u64 {
        self.kernel.stacks_lost_in_kernel() + self.stacks_expired
    }
}
