//! The double-buffered stack maps as userspace sees them: resolving stack ids to addresses and
//! retiring a generation once nothing in the ring buffer can still refer to it.
//!
//! The BPF side writes into map `generation & 1`. Userspace, at each rotation: (1) has drained the
//! ring buffer, so every record that named the previous generation has been resolved; (2) clears
//! the previous generation's map — inactive for a whole drain period, so no program can still be
//! writing into it; (3) bumps the generation, making that (now empty) map the active one.
//! A stack map is thus never cleared under a running program, and holds at most two periods of
//! distinct stacks. Records that can arrive many periods after their stack was taken (off-CPU:
//! the stack is taken when a thread blocks, the record sent when it wakes) name the stacks to
//! keep at each rotation; userspace keeps copies of exactly those.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use libbpf_rs::{MapCore, MapFlags};

use crate::error::{EbpfError, Result};

/// Frames a stack map entry holds (the kernel's default `perf_event_max_stack`).
pub const MAX_STACK_DEPTH: usize = 127;
const STACK_ID_NONE: i32 = -libc::ENOENT;

/// Addresses of one stack, leaf first, and whether it is whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stack {
    pub addresses: Arc<[u64]>,
    pub status: StackStatus,
}

impl Stack {
    fn absent() -> Self {
        Self {
            addresses: Arc::from(&[][..]),
            status: StackStatus::Absent,
        }
    }

    /// True when the stack was cut short: what is there is right but does not reach the root.
    /// A walked stack can still be cut short where frame pointers are missing; only the
    /// symbolizer can tell (by the outermost frame).
    pub fn is_cut_short(&self) -> bool {
        matches!(
            self.status,
            StackStatus::DepthLimit | StackStatus::Partial(_) | StackStatus::Stopped
        )
    }
}

/// How a stack was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StackStatus {
    /// Walked by frame pointers until the chain ended.
    Walked,
    /// The walk reached [`MAX_STACK_DEPTH`] frames: the root is missing.
    DepthLimit,
    /// Unwound with `.eh_frame` tables until a frame they cannot follow (a rule given as a DWARF
    /// expression, as in a signal frame) or memory that could not be read: the root is missing.
    Stopped,
    /// No walked stack: the addresses are the leaf alone (user stacks, from the saved registers)
    /// or nothing (kernel stacks).
    Partial(StackError),
    /// There is no such stack: a kernel thread has no user stack, a sample taken in user mode no
    /// kernel stack.
    Absent,
}

/// Why no walked stack is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StackError {
    /// The stack map was full (`-ENOMEM`): stacks arrive faster than they are drained.
    MapFull,
    /// Another stack owned the hash bucket (`-EEXIST`).
    Collision,
    /// No frame could be read (`-EFAULT`), e.g. the user stack page was not present.
    Fault,
    /// The stack's generation was cleared before the record referring to it was read.
    Expired,
    /// Any other error number from `bpf_get_stackid`.
    Other(i32),
}

impl StackError {
    fn from_errno(negative_errno: i32) -> Self {
        match -negative_errno {
            libc::ENOMEM => Self::MapFull,
            libc::EEXIST => Self::Collision,
            libc::EFAULT => Self::Fault,
            errno => Self::Other(errno),
        }
    }
}

pub(crate) type Generation = u32;
/// A stack as records name it: the generation (which map) and the id in that map.
pub(crate) type StackKey = (Generation, u32);

pub(crate) struct StackMaps {
    generation: Generation,
    /// Stacks already read from the kernel maps of the two live generations.
    live: HashMap<StackKey, Arc<[u64]>>,
    /// Copies of stacks from cleared generations that were still referred to at the rotation.
    kept: HashMap<StackKey, Arc<[u64]>>,
    expired: u64,
}

impl StackMaps {
    pub(crate) fn new() -> Self {
        Self {
            generation: 0,
            live: HashMap::new(),
            kept: HashMap::new(),
            expired: 0,
        }
    }

    /// Stacks referred to by records but gone by the time the record was read.
    pub(crate) fn expired(&self) -> u64 {
        self.expired
    }

    /// The stack a record names: `id` as bpf_get_stackid returned it, `leaf` the instruction
    /// pointer from the registers (user stacks) or 0.
    pub(crate) fn stack(
        &mut self,
        maps: [&dyn MapCore; 2],
        generation: Generation,
        id: i32,
        leaf: u64,
    ) -> Stack {
        let partial = |error| Stack {
            addresses: if leaf != 0 {
                Arc::from(&[leaf][..])
            } else {
                Arc::from(&[][..])
            },
            status: StackStatus::Partial(error),
        };
        if id == STACK_ID_NONE {
            return Stack::absent();
        }
        if id < 0 {
            return partial(StackError::from_errno(id));
        }
        match self.resolve(maps, generation, id as u32) {
            Some(addresses) => {
                let status = if addresses.len() >= MAX_STACK_DEPTH {
                    StackStatus::DepthLimit
                } else {
                    StackStatus::Walked
                };
                Stack { addresses, status }
            }
            None => {
                self.expired += 1;
                partial(StackError::Expired)
            }
        }
    }

    fn resolve(
        &mut self,
        maps: [&dyn MapCore; 2],
        generation: Generation,
        id: u32,
    ) -> Option<Arc<[u64]>> {
        let is_live =
            generation == self.generation || generation == self.generation.wrapping_sub(1);
        if !is_live {
            return self.kept.get(&(generation, id)).cloned();
        }
        if let Some(stack) = self.live.get(&(generation, id)) {
            return Some(stack.clone());
        }
        let map = maps[(generation & 1) as usize];
        let value = map.lookup(&id.to_ne_bytes(), MapFlags::ANY).ok()??;
        let stack = decode_stack(&value);
        self.live.insert((generation, id), stack.clone());
        Some(stack)
    }

    /// Clears the previous generation's map and makes it the active one. Call only after the
    /// ring buffer has been drained. `keep`: stacks that records still to come will name (taken
    /// before the drain); copies of them are kept, and of no others. Returns the new generation,
    /// for the BPF side.
    pub(crate) fn rotate(
        &mut self,
        maps: [&dyn MapCore; 2],
        keep: &HashSet<StackKey>,
    ) -> Result<Generation> {
        let retiring = self.generation.wrapping_sub(1);
        let map = maps[(retiring & 1) as usize];
        let ids: Vec<u32> = map
            .keys()
            .filter_map(|key| Some(u32::from_ne_bytes(key.as_slice().try_into().ok()?)))
            .collect();
        self.kept.retain(|key, _| keep.contains(key));
        for id in ids {
            if keep.contains(&(retiring, id)) {
                let stack = match self.live.get(&(retiring, id)) {
                    Some(stack) => Some(stack.clone()),
                    None => map
                        .lookup(&id.to_ne_bytes(), MapFlags::ANY)
                        .ok()
                        .flatten()
                        .map(|v| decode_stack(&v)),
                };
                if let Some(stack) = stack {
                    self.kept.insert((retiring, id), stack);
                }
            }
            // A key that vanished meanwhile is what we wanted anyway.
            if let Err(source) = map.delete(&id.to_ne_bytes())
                && source.kind() != libbpf_rs::ErrorKind::NotFound
            {
                return Err(EbpfError::Map {
                    what: "clearing a stack map",
                    source,
                });
            }
        }
        self.live
            .retain(|(generation, _), _| *generation != retiring);
        self.generation = self.generation.wrapping_add(1);
        Ok(self.generation)
    }

    /// Copies kept for records still to come.
    pub(crate) fn kept(&self) -> usize {
        self.kept.len()
    }
}

/// A stack map value: addresses leaf first, zero-padded to the map's depth.
fn decode_stack(value: &[u8]) -> Arc<[u64]> {
    value
        .chunks_exact(8)
        .map(|chunk| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(chunk);
            u64::from_ne_bytes(bytes)
        })
        .take_while(|&address| address != 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stack_value_ends_at_the_first_zero() {
        let mut value = Vec::new();
        for address in [0x1000u64, 0x2000, 0, 0x3000] {
            value.extend_from_slice(&address.to_ne_bytes());
        }
        assert_eq!(&*decode_stack(&value), &[0x1000, 0x2000]);
    }

    #[test]
    fn errnos_map_to_reasons() {
        assert_eq!(StackError::from_errno(-libc::ENOMEM), StackError::MapFull);
        assert_eq!(StackError::from_errno(-libc::EEXIST), StackError::Collision);
        assert_eq!(StackError::from_errno(-libc::EFAULT), StackError::Fault);
        assert_eq!(
            StackError::from_errno(-libc::EINVAL),
            StackError::Other(libc::EINVAL)
        );
    }
}
