//! Software cpu-clock perf events, one per online CPU. These VMs (and many clouds) expose no
//! hardware PMU, and cpu-clock counts nanoseconds on every machine, which also makes a sample's
//! period its CPU-time weight.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

use libbpf_rs::Link;

use crate::error::{EbpfError, Result};

const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_CPU_CLOCK: u64 = 0;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
const ATTR_DISABLED: u64 = 1 << 0;
/// `_IO('$', 0)` and `_IO('$', 1)`.
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
const PERF_EVENT_IOC_DISABLE: libc::c_ulong = 0x2401;
/// `_IOW('$', 4, __u64)`: a new sample period, taking effect at the event's next overflow.
const PERF_EVENT_IOC_PERIOD: libc::c_ulong = 0x4008_2404;

/// `struct perf_event_attr` up to `config1` (PERF_ATTR_SIZE_VER0): the kernel accepts the short
/// form and zero-fills the rest, and nothing past it is needed here.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}
const _: () = assert!(size_of::<PerfEventAttr>() == 64);

/// A cpu-clock event on one CPU that fires every `period_ns` of that CPU's time, whichever
/// task runs. Created disabled; see [`CpuClockEvent::attach`].
pub(crate) struct CpuClockEvent {
    fd: OwnedFd,
}

impl CpuClockEvent {
    pub(crate) fn open(cpu: u32, period_ns: u64) -> Result<Self> {
        let attr = PerfEventAttr {
            kind: PERF_TYPE_SOFTWARE,
            size: size_of::<PerfEventAttr>() as u32,
            config: PERF_COUNT_SW_CPU_CLOCK,
            sample_period: period_ns,
            flags: ATTR_DISABLED,
            ..Default::default()
        };
        // SAFETY: attr is a valid perf_event_attr of the size it declares; pid -1 with a cpu
        // means "every task on that cpu"; the kernel does not keep the pointer.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                &attr as *const PerfEventAttr,
                -1 as libc::pid_t,
                cpu as libc::c_int,
                -1 as libc::c_int,
                PERF_FLAG_FD_CLOEXEC,
            )
        };
        if fd < 0 {
            let source = io::Error::last_os_error();
            let hint = match source.raw_os_error() {
                Some(libc::EACCES | libc::EPERM) => {
                    " (needs CAP_PERFMON or kernel.perf_event_paranoid <= 0)"
                }
                Some(libc::ENOENT | libc::EOPNOTSUPP) => " (this kernel has no cpu-clock event)",
                _ => "",
            };
            return Err(EbpfError::PerfEventOpen { cpu, source, hint });
        }
        // SAFETY: fd was just returned by perf_event_open and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
        Ok(Self { fd })
    }

    /// Attaches a program with `attach` (given the event's fd). libbpf's perf link then owns the
    /// fd and closes it when the link is dropped; on failure the fd is closed here.
    pub(crate) fn attach(
        self,
        attach: impl FnOnce(RawFd) -> libbpf_rs::Result<Link>,
    ) -> libbpf_rs::Result<AttachedEvent> {
        let link = attach(self.fd.as_raw_fd())?;
        let fd = self.fd.into_raw_fd();
        Ok(AttachedEvent { _link: link, fd })
    }
}

/// A perf event with a program attached; dropping it detaches the program and closes the event.
pub(crate) struct AttachedEvent {
    _link: Link,
    /// Owned by the link: valid exactly as long as it.
    fd: RawFd,
}

impl AttachedEvent {
    pub(crate) fn enable(&self) -> io::Result<()> {
        self.ioctl(PERF_EVENT_IOC_ENABLE)
    }

    pub(crate) fn disable(&self) -> io::Result<()> {
        self.ioctl(PERF_EVENT_IOC_DISABLE)
    }

    pub(crate) fn set_period(&self, period_ns: u64) -> io::Result<()> {
        // SAFETY: a perf event fd kept open by the link we hold; the kernel reads the u64
        // behind the pointer during the call only.
        let rc = unsafe {
            libc::ioctl(
                self.fd,
                PERF_EVENT_IOC_PERIOD as _,
                &period_ns as *const u64,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn ioctl(&self, request: libc::c_ulong) -> io::Result<()> {
        // SAFETY: a perf event fd kept open by the link we hold, and an argument-less perf ioctl.
        let rc = unsafe { libc::ioctl(self.fd, request as _, 0) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

const ONLINE_CPUS: &str = "/sys/devices/system/cpu/online";

/// The online CPUs, from sysfs (`0-3,6`).
pub fn online_cpus() -> Result<Vec<u32>> {
    let text = std::fs::read_to_string(ONLINE_CPUS).map_err(|source| EbpfError::Io {
        what: "reading /sys/devices/system/cpu/online",
        source,
    })?;
    parse_cpu_list(text.trim()).ok_or_else(|| EbpfError::CpuList {
        path: ONLINE_CPUS,
        found: text.trim().to_string(),
    })
}

fn parse_cpu_list(text: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((first, last)) => {
                let (first, last): (u32, u32) = (first.parse().ok()?, last.parse().ok()?);
                if last < first {
                    return None;
                }
                cpus.extend(first..=last);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    (!cpus.is_empty()).then_some(cpus)
}

#[cfg(test)]
mod tests {
    use super::parse_cpu_list;

    #[test]
    fn cpu_lists_parse_like_sysfs_writes_them() {
        assert_eq!(parse_cpu_list("0"), Some(vec![0]));
        assert_eq!(parse_cpu_list("0-3,6,8-9"), Some(vec![0, 1, 2, 3, 6, 8, 9]));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
    }
}
