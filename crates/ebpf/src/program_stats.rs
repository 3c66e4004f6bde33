//! What a loaded BPF program has cost: the kernel's run count and run time, which it keeps only
//! while run-time statistics are on (`kernel.bpf_stats_enabled`, or a [`RunTimeStats`] held open).

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use crate::error::{EbpfError, Result};
use crate::security::ProgramStats;

/// Reads one program's statistics.
pub(crate) fn read(name: &'static str, prog: &impl AsFd) -> Result<ProgramStats> {
    let mut info = libbpf_rs::libbpf_sys::bpf_prog_info::default();
    let mut len = std::mem::size_of_val(&info) as u32;
    // SAFETY: a loaded program's fd, and an info buffer of the size passed.
    let rc = unsafe {
        libbpf_rs::libbpf_sys::bpf_obj_get_info_by_fd(
            prog.as_fd().as_raw_fd(),
            (&mut info as *mut libbpf_rs::libbpf_sys::bpf_prog_info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(EbpfError::Io {
            what: "reading a program's run statistics",
            source: std::io::Error::from_raw_os_error(rc.saturating_neg()),
        });
    }
    Ok(ProgramStats {
        program: name,
        id: info.id,
        run_count: info.run_cnt,
        run_time_ns: info.run_time_ns,
    })
}

/// Keeps the kernel timing every BPF program while held (`BPF_ENABLE_STATS`); the kernel turns
/// it off again when the last holder closes, unless the sysctl is on. Timing costs two clock
/// reads per program run.
pub struct RunTimeStats(#[allow(dead_code)] OwnedFd);

impl RunTimeStats {
    pub fn enable() -> Result<Self> {
        // SAFETY: a plain bpf(2) command with no pointers kept by the kernel.
        let fd = unsafe {
            libbpf_rs::libbpf_sys::bpf_enable_stats(libbpf_rs::libbpf_sys::BPF_STATS_RUN_TIME)
        };
        if fd < 0 {
            return Err(EbpfError::Io {
                what: "turning on BPF run-time statistics",
                source: std::io::Error::from_raw_os_error(fd.saturating_neg()),
            });
        }
        // SAFETY: a new fd owned by nobody else.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }
}
