//! Which class each syscall is counted under. The table is written into the BPF object's
//! read-only data before load, so changing a class needs no BPF change.

/// A group of syscalls counted together per process. At most 16 (the BPF side's array).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum SyscallClass {
    Other = 0,
    /// read, write and friends on any descriptor.
    Io,
    /// open, openat, creat.
    FileOpen,
    /// stat, rename, unlink, chmod, getdents…: the file tree, not file contents.
    FileMetadata,
    /// socket, connect, accept, send, recv…
    Network,
    /// mmap, munmap, mprotect, brk…
    Memory,
    /// fork, clone, execve, exit, wait, kill…
    Process,
    /// setuid family, capset, setns, unshare, mount, chroot…
    Privilege,
    /// Module loads, bpf, perf_event_open, kexec, reboot…
    Kernel,
    /// ptrace and cross-process memory access.
    Debug,
    /// futex, poll, epoll, sleeps.
    Wait,
    /// getpid, getuid, gettid…
    Identity,
    /// Signal handling.
    Signal,
    /// Clocks and timers.
    Time,
}

impl SyscallClass {
    pub const ALL: [SyscallClass; 14] = [
        Self::Other,
        Self::Io,
        Self::FileOpen,
        Self::FileMetadata,
        Self::Network,
        Self::Memory,
        Self::Process,
        Self::Privilege,
        Self::Kernel,
        Self::Debug,
        Self::Wait,
        Self::Identity,
        Self::Signal,
        Self::Time,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Other => "other",
            Self::Io => "io",
            Self::FileOpen => "file_open",
            Self::FileMetadata => "file_metadata",
            Self::Network => "network",
            Self::Memory => "memory",
            Self::Process => "process",
            Self::Privilege => "privilege",
            Self::Kernel => "kernel",
            Self::Debug => "debug",
            Self::Wait => "wait",
            Self::Identity => "identity",
            Self::Signal => "signal",
            Self::Time => "time",
        }
    }
}

/// Slots in the BPF side's per-process count array.
pub(crate) const CLASS_SLOTS: usize = 16;
/// Syscall numbers the BPF side classifies; higher ones count as `Other`.
pub(crate) const SYSCALL_TABLE: usize = 512;

/// The class of every syscall number below [`SYSCALL_TABLE`].
pub(crate) fn class_table() -> [u8; SYSCALL_TABLE] {
    use SyscallClass::*;
    let groups: &[(SyscallClass, &[libc::c_long])] = &[
        (
            Io,
            &[
                libc::SYS_read,
                libc::SYS_write,
                libc::SYS_pread64,
                libc::SYS_pwrite64,
                libc::SYS_readv,
                libc::SYS_writev,
                libc::SYS_preadv,
                libc::SYS_pwritev,
                libc::SYS_preadv2,
                libc::SYS_pwritev2,
                libc::SYS_lseek,
                libc::SYS_close,
                libc::SYS_close_range,
                libc::SYS_dup,
                libc::SYS_dup2,
                libc::SYS_dup3,
                libc::SYS_fcntl,
                libc::SYS_ioctl,
                libc::SYS_sendfile,
                libc::SYS_splice,
                libc::SYS_tee,
                libc::SYS_pipe,
                libc::SYS_pipe2,
                libc::SYS_fsync,
                libc::SYS_fdatasync,
                libc::SYS_copy_file_range,
                libc::SYS_io_uring_enter,
                libc::SYS_io_uring_setup,
                libc::SYS_io_uring_register,
            ],
        ),
        (
            FileOpen,
            &[
                libc::SYS_open,
                libc::SYS_openat,
                libc::SYS_openat2,
                libc::SYS_creat,
                libc::SYS_open_by_handle_at,
            ],
        ),
        (
            FileMetadata,
            &[
                libc::SYS_stat,
                libc::SYS_fstat,
                libc::SYS_lstat,
                libc::SYS_newfstatat,
                libc::SYS_statx,
                libc::SYS_statfs,
                libc::SYS_fstatfs,
                libc::SYS_access,
                libc::SYS_faccessat,
                libc::SYS_faccessat2,
                libc::SYS_readlink,
                libc::SYS_readlinkat,
                libc::SYS_getdents64,
                libc::SYS_getcwd,
                libc::SYS_chdir,
                libc::SYS_fchdir,
                libc::SYS_rename,
                libc::SYS_renameat,
                libc::SYS_renameat2,
                libc::SYS_mkdir,
                libc::SYS_mkdirat,
                libc::SYS_rmdir,
                libc::SYS_unlink,
                libc::SYS_unlinkat,
                libc::SYS_link,
                libc::SYS_linkat,
                libc::SYS_symlink,
                libc::SYS_symlinkat,
                libc::SYS_chmod,
                libc::SYS_fchmod,
                libc::SYS_fchmodat,
                libc::SYS_chown,
                libc::SYS_fchown,
                libc::SYS_lchown,
                libc::SYS_fchownat,
                libc::SYS_truncate,
                libc::SYS_ftruncate,
                libc::SYS_utimensat,
                libc::SYS_getxattr,
                libc::SYS_setxattr,
                libc::SYS_fgetxattr,
                libc::SYS_fsetxattr,
                libc::SYS_umask,
                libc::SYS_inotify_add_watch,
                libc::SYS_fanotify_mark,
            ],
        ),
        (
            Network,
            &[
                libc::SYS_socket,
                libc::SYS_socketpair,
                libc::SYS_connect,
                libc::SYS_accept,
                libc::SYS_accept4,
                libc::SYS_bind,
                libc::SYS_listen,
                libc::SYS_sendto,
                libc::SYS_recvfrom,
                libc::SYS_sendmsg,
                libc::SYS_recvmsg,
                libc::SYS_sendmmsg,
                libc::SYS_recvmmsg,
                libc::SYS_shutdown,
                libc::SYS_getsockopt,
                libc::SYS_setsockopt,
                libc::SYS_getsockname,
                libc::SYS_getpeername,
            ],
        ),
        (
            Memory,
            &[
                libc::SYS_mmap,
                libc::SYS_munmap,
                libc::SYS_mprotect,
                libc::SYS_mremap,
                libc::SYS_brk,
                libc::SYS_madvise,
                libc::SYS_mlock,
                libc::SYS_munlock,
                libc::SYS_mlockall,
                libc::SYS_munlockall,
                libc::SYS_msync,
                libc::SYS_mincore,
                libc::SYS_memfd_create,
                libc::SYS_membarrier,
            ],
        ),
        (
            Process,
            &[
                libc::SYS_fork,
                libc::SYS_vfork,
                libc::SYS_clone,
                libc::SYS_clone3,
                libc::SYS_execve,
                libc::SYS_execveat,
                libc::SYS_exit,
                libc::SYS_exit_group,
                libc::SYS_wait4,
                libc::SYS_waitid,
                libc::SYS_kill,
                libc::SYS_tkill,
                libc::SYS_tgkill,
                libc::SYS_pidfd_open,
                libc::SYS_pidfd_send_signal,
                libc::SYS_setpgid,
                libc::SYS_setsid,
                libc::SYS_prctl,
                libc::SYS_arch_prctl,
                libc::SYS_set_tid_address,
                libc::SYS_set_robust_list,
                libc::SYS_rseq,
                libc::SYS_prlimit64,
                libc::SYS_setrlimit,
                libc::SYS_sched_setaffinity,
                libc::SYS_sched_getaffinity,
                libc::SYS_setpriority,
            ],
        ),
        (
            Privilege,
            &[
                libc::SYS_setuid,
                libc::SYS_setgid,
                libc::SYS_setreuid,
                libc::SYS_setregid,
                libc::SYS_setresuid,
                libc::SYS_setresgid,
                libc::SYS_setfsuid,
                libc::SYS_setfsgid,
                libc::SYS_setgroups,
                libc::SYS_capset,
                libc::SYS_setns,
                libc::SYS_unshare,
                libc::SYS_mount,
                libc::SYS_umount2,
                libc::SYS_chroot,
                libc::SYS_pivot_root,
                libc::SYS_keyctl,
                libc::SYS_add_key,
                libc::SYS_request_key,
            ],
        ),
        (
            Kernel,
            &[
                libc::SYS_init_module,
                libc::SYS_finit_module,
                libc::SYS_delete_module,
                libc::SYS_bpf,
                libc::SYS_perf_event_open,
                libc::SYS_kexec_load,
                libc::SYS_kexec_file_load,
                libc::SYS_reboot,
                libc::SYS_iopl,
                libc::SYS_ioperm,
                libc::SYS_syslog,
                libc::SYS_swapon,
                libc::SYS_swapoff,
                libc::SYS_settimeofday,
                libc::SYS_clock_settime,
                libc::SYS_sethostname,
                libc::SYS_setdomainname,
            ],
        ),
        (
            Debug,
            &[
                libc::SYS_ptrace,
                libc::SYS_process_vm_readv,
                libc::SYS_process_vm_writev,
                libc::SYS_pidfd_getfd,
                libc::SYS_kcmp,
            ],
        ),
        (
            Wait,
            &[
                libc::SYS_futex,
                libc::SYS_poll,
                libc::SYS_ppoll,
                libc::SYS_select,
                libc::SYS_pselect6,
                libc::SYS_epoll_create1,
                libc::SYS_epoll_ctl,
                libc::SYS_epoll_wait,
                libc::SYS_epoll_pwait,
                libc::SYS_epoll_pwait2,
                libc::SYS_nanosleep,
                libc::SYS_clock_nanosleep,
                libc::SYS_sched_yield,
                libc::SYS_pause,
                libc::SYS_eventfd2,
            ],
        ),
        (
            Identity,
            &[
                libc::SYS_getpid,
                libc::SYS_getppid,
                libc::SYS_gettid,
                libc::SYS_getuid,
                libc::SYS_geteuid,
                libc::SYS_getgid,
                libc::SYS_getegid,
                libc::SYS_getresuid,
                libc::SYS_getresgid,
                libc::SYS_getgroups,
                libc::SYS_getpgid,
                libc::SYS_getpgrp,
                libc::SYS_getsid,
                libc::SYS_capget,
                libc::SYS_uname,
                libc::SYS_getrlimit,
                libc::SYS_getrandom,
            ],
        ),
        (
            Signal,
            &[
                libc::SYS_rt_sigaction,
                libc::SYS_rt_sigprocmask,
                libc::SYS_rt_sigreturn,
                libc::SYS_rt_sigsuspend,
                libc::SYS_rt_sigtimedwait,
                libc::SYS_rt_sigpending,
                libc::SYS_sigaltstack,
                libc::SYS_signalfd4,
            ],
        ),
        (
            Time,
            &[
                libc::SYS_clock_gettime,
                libc::SYS_clock_getres,
                libc::SYS_gettimeofday,
                libc::SYS_time,
                libc::SYS_timerfd_create,
                libc::SYS_timerfd_settime,
                libc::SYS_timer_create,
                libc::SYS_timer_settime,
                libc::SYS_setitimer,
                libc::SYS_getitimer,
                libc::SYS_alarm,
            ],
        ),
    ];
    let mut table = [Other as u8; SYSCALL_TABLE];
    for (class, numbers) in groups {
        for &nr in *numbers {
            if let Some(slot) = usize::try_from(nr).ok().and_then(|i| table.get_mut(i)) {
                *slot = *class as u8;
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_fits_the_bpf_array_and_is_used() {
        let table = class_table();
        assert!(SyscallClass::ALL.len() <= CLASS_SLOTS);
        for class in SyscallClass::ALL.iter().skip(1) {
            assert!(
                table.contains(&(*class as u8)),
                "{} has no syscall",
                class.name()
            );
        }
        assert_eq!(
            table[libc::SYS_getpid as usize],
            SyscallClass::Identity as u8
        );
        assert_eq!(
            table[libc::SYS_openat as usize],
            SyscallClass::FileOpen as u8
        );
    }
}
