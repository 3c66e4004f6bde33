//! An empty program on the `sys_exit` raw tracepoint (`syscall_floor.bpf.c`): attached, every
//! syscall of every process pays what any syscall-level hook pays before doing anything. Used by
//! `oxeye lab bench sensor` to show that floor beside the security sensor's own cost.

use libbpf_rs::Link;

use crate::error::{EbpfError, Result};
use crate::loader::LoadedSkel;
use crate::skel::syscall_floor::{SyscallFloorSkel, SyscallFloorSkelBuilder};

/// The empty hook, attached until dropped.
pub struct SyscallHookFloor {
    _link: Link,
    _skel: LoadedSkel<SyscallFloorSkel<'static>>,
}

impl SyscallHookFloor {
    pub fn attach() -> Result<Self> {
        let skel = LoadedSkel::load("syscall_floor", SyscallFloorSkelBuilder::default(), |_| {
            Ok(())
        })?;
        let link = skel
            .progs
            .syscall_floor
            .attach_raw_tracepoint("sys_exit")
            .map_err(|source| EbpfError::Attach {
                program: "syscall_floor (raw tracepoint sys_exit)",
                source,
            })?;
        Ok(Self {
            _link: link,
            _skel: skel,
        })
    }
}
