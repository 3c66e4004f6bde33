//! The security events as plain typed records, parsed from the layouts in
//! `bpf/security.bpf.c`. Nothing here judges an event; that is `sensor`'s job.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::ring::{comm_at, i32_at, u16_at, u32_at, u64_at};

/// `struct event_header` and the event structs of `bpf/security.bpf.c`.
const HEADER_SIZE: usize = 64;
const EXEC_EVENT_SIZE: usize = HEADER_SIZE + 16 + 256 + 1024 + 512;
/// The exit record ends with the process's final syscall counts (16 classes × u64).
const EXIT_EVENT_SIZE: usize = HEADER_SIZE + 8 + 8 * super::CLASS_SLOTS;
const CONNECTION_EVENT_SIZE: usize = HEADER_SIZE + 48;
const FILE_OPEN_EVENT_SIZE: usize = HEADER_SIZE + 16 + 256;
const SYSCALL_EVENT_SIZE: usize = HEADER_SIZE + 64;

const EVENT_EXEC: u32 = 1;
const EVENT_EXIT: u32 = 2;
const EVENT_CONNECT: u32 = 3;
const EVENT_ACCEPT: u32 = 4;
const EVENT_FILE_OPEN: u32 = 5;
const EVENT_PRIVILEGE: u32 = 6;
const EVENT_PTRACE: u32 = 7;
const EVENT_MODULE: u32 = 8;

const FLAG_ARGV_TRUNCATED: u32 = 1 << 0;
const FLAG_CWD_TRUNCATED: u32 = 1 << 1;
const FLAG_PATH_TRUNCATED: u32 = 1 << 2;
const FLAG_PATH_RESOLVED: u32 = 1 << 3;

/// One security event, as the kernel saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecurityEvent {
    Exec(ExecEvent),
    Exit(ExitEvent),
    /// An outbound `connect` on an IPv4 or IPv6 socket, successful or not.
    Connect(ConnectionEvent),
    /// An inbound connection returned by `accept` / `accept4`.
    Accept(ConnectionEvent),
    /// An open of a path under a watched prefix, successful or not.
    FileOpen(FileOpenEvent),
    PrivilegeChange(PrivilegeChangeEvent),
    Ptrace(PtraceEvent),
    ModuleLoad(ModuleLoadEvent),
}

impl SecurityEvent {
    /// The process the event happened in.
    pub fn process(&self) -> &EventProcess {
        match self {
            Self::Exec(e) => &e.process,
            Self::Exit(e) => &e.process,
            Self::Connect(e) | Self::Accept(e) => &e.process,
            Self::FileOpen(e) => &e.process,
            Self::PrivilegeChange(e) => &e.process,
            Self::Ptrace(e) => &e.process,
            Self::ModuleLoad(e) => &e.process,
        }
    }
}

/// Who did it and when, common to every event. Ids are as they are after the syscall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventProcess {
    /// `CLOCK_MONOTONIC` ns; see [`crate::unix_nanos_from_monotonic`].
    pub ktime_ns: u64,
    /// The cgroup v2 id (the inode number of its directory under /sys/fs/cgroup).
    pub cgroup_id: u64,
    /// Process id (tgid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// The real parent's process id.
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
    pub comm: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecEvent {
    pub process: EventProcess,
    /// The pid of the thread that called exec, when it was not the leader.
    pub old_pid: u32,
    /// The path given to exec (as passed, so possibly relative).
    pub filename: String,
    pub filename_truncated: bool,
    /// The first `argv_bytes` of the arguments.
    pub argv: Vec<String>,
    pub argv_truncated: bool,
    /// The working directory, `None` when it could not be read.
    pub cwd: Option<String>,
    /// The working directory is deeper than the kernel walks; `cwd` holds its last components.
    pub cwd_truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitEvent {
    pub process: EventProcess,
    /// The exit code when the process exited normally.
    pub exit_code: Option<u8>,
    /// The signal that ended it, if one did.
    pub signal: Option<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionEvent {
    pub process: EventProcess,
    /// The syscall's result: 0 or a new fd on success, `-errno` on failure (`-115`, EINPROGRESS,
    /// for a non-blocking connect under way).
    pub result: i32,
    /// The socket's descriptor (for accept, the new one).
    pub fd: i32,
    pub protocol: Protocol,
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
    Other(u16),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOpenEvent {
    pub process: EventProcess,
    /// The path as passed to open when it is absolute and under a watched prefix; otherwise
    /// (a relative path, `..`, a symbolic link to a watched file) the path of the file that was
    /// opened, as the kernel resolved it.
    pub path: String,
    pub path_truncated: bool,
    /// The open flags (`O_*`).
    pub flags: u32,
    /// The new fd, or `-errno`.
    pub result: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivilegeSyscall {
    Setuid,
    Setgid,
    Setreuid,
    Setregid,
    Setresuid,
    Setresgid,
    Setfsuid,
    Setfsgid,
    Setgroups,
    Capset,
}

impl PrivilegeSyscall {
    fn from_nr(nr: i64) -> Option<Self> {
        Some(match nr {
            libc::SYS_setuid => Self::Setuid,
            libc::SYS_setgid => Self::Setgid,
            libc::SYS_setreuid => Self::Setreuid,
            libc::SYS_setregid => Self::Setregid,
            libc::SYS_setresuid => Self::Setresuid,
            libc::SYS_setresgid => Self::Setresgid,
            libc::SYS_setfsuid => Self::Setfsuid,
            libc::SYS_setfsgid => Self::Setfsgid,
            libc::SYS_setgroups => Self::Setgroups,
            libc::SYS_capset => Self::Capset,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Setuid => "setuid",
            Self::Setgid => "setgid",
            Self::Setreuid => "setreuid",
            Self::Setregid => "setregid",
            Self::Setresuid => "setresuid",
            Self::Setresgid => "setresgid",
            Self::Setfsuid => "setfsuid",
            Self::Setfsgid => "setfsgid",
            Self::Setgroups => "setgroups",
            Self::Capset => "capset",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivilegeChangeEvent {
    /// Ids after the call.
    pub process: EventProcess,
    pub syscall: PrivilegeSyscall,
    /// The raw arguments: the ids asked for (`u32::MAX` as `-1`: unchanged), or for capset the
    /// header and data pointers.
    pub args: [u64; 3],
    /// capset: the effective, permitted and inheritable sets asked for (low 32 bits).
    pub capabilities: Option<[u32; 3]>,
    /// 0 or `-errno` (setfsuid/setfsgid return the previous id).
    pub result: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtraceEvent {
    pub process: EventProcess,
    /// `PTRACE_*`; only requests that start tracing or change the tracee are reported.
    pub request: i64,
    /// The tracee (as the caller named it; 0 for TRACEME).
    pub target_pid: u32,
    pub result: i64,
}

impl PtraceEvent {
    pub fn request_name(&self) -> &'static str {
        match self.request {
            0 => "PTRACE_TRACEME",
            4 => "PTRACE_POKETEXT",
            5 => "PTRACE_POKEDATA",
            6 => "PTRACE_POKEUSER",
            13 => "PTRACE_SETREGS",
            15 => "PTRACE_SETFPREGS",
            16 => "PTRACE_ATTACH",
            0x4205 => "PTRACE_SETREGSET",
            0x4206 => "PTRACE_SEIZE",
            _ => "PTRACE_OTHER",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleLoadEvent {
    pub process: EventProcess,
    /// `finit_module`'s file descriptor; `None` for `init_module` (module image from memory).
    pub fd: Option<i32>,
    /// 0 or `-errno`.
    pub result: i64,
}

/// One ring-buffer record; `None` when its kind or size is wrong (counted as malformed).
/// One ring-buffer record: the event, and for an exit the process's final syscall counts.
pub(crate) struct Record {
    pub event: SecurityEvent,
    pub final_counts: Option<[u64; super::CLASS_SLOTS]>,
}

pub(crate) fn parse_record(data: &[u8]) -> Option<Record> {
    let event = parse(data)?;
    let final_counts = matches!(event, SecurityEvent::Exit(_)).then(|| {
        let mut counts = [0u64; super::CLASS_SLOTS];
        for (i, c) in counts.iter_mut().enumerate() {
            *c = u64_at(data, HEADER_SIZE + 8 + 8 * i);
        }
        counts
    });
    Some(Record {
        event,
        final_counts,
    })
}

pub(crate) fn parse(data: &[u8]) -> Option<SecurityEvent> {
    if data.len() < HEADER_SIZE {
        return None;
    }
    let kind = u32_at(data, 16);
    let flags = u32_at(data, 44);
    let process = EventProcess {
        ktime_ns: u64_at(data, 0),
        cgroup_id: u64_at(data, 8),
        pid: u32_at(data, 20),
        tid: u32_at(data, 24),
        ppid: u32_at(data, 28),
        uid: u32_at(data, 32),
        gid: u32_at(data, 36),
        euid: u32_at(data, 40),
        comm: comm_at(data, 48),
    };
    let need = |size: usize| (data.len() >= size).then_some(());
    Some(match kind {
        EVENT_EXEC => {
            need(EXEC_EVENT_SIZE)?;
            let filename_len = (u32_at(data, 68) as usize).min(255);
            let argv_len = (u32_at(data, 72) as usize).min(1024);
            let cwd_len = (u32_at(data, 76) as usize).min(512);
            let filename = text(&data[80..80 + filename_len]);
            let argv = split_nul(&data[336..336 + argv_len]);
            let cwd_components = split_nul(&data[1360..1360 + cwd_len]);
            SecurityEvent::Exec(ExecEvent {
                process,
                old_pid: u32_at(data, 64),
                filename,
                filename_truncated: flags & FLAG_PATH_TRUNCATED != 0,
                argv,
                argv_truncated: flags & FLAG_ARGV_TRUNCATED != 0,
                cwd: cwd_from_leaf_first(&cwd_components),
                cwd_truncated: flags & FLAG_CWD_TRUNCATED != 0,
            })
        }
        EVENT_EXIT => {
            need(EXIT_EVENT_SIZE)?;
            let status = u32_at(data, 64);
            let signal = (status & 0x7f) as u8;
            SecurityEvent::Exit(ExitEvent {
                process,
                exit_code: (signal == 0).then_some(((status >> 8) & 0xff) as u8),
                signal: (signal != 0).then_some(signal),
            })
        }
        EVENT_CONNECT | EVENT_ACCEPT => {
            need(CONNECTION_EVENT_SIZE)?;
            let family = u16_at(data, 72);
            let address = |offset: usize, port: u16| -> SocketAddr {
                let ip = if family == libc::AF_INET6 as u16 {
                    let mut bytes = [0u8; 16];
                    bytes.copy_from_slice(&data[offset..offset + 16]);
                    IpAddr::V6(Ipv6Addr::from(bytes))
                } else {
                    let mut bytes = [0u8; 4];
                    bytes.copy_from_slice(&data[offset..offset + 4]);
                    IpAddr::V4(Ipv4Addr::from(bytes))
                };
                SocketAddr::new(ip, port)
            };
            let event = ConnectionEvent {
                process,
                result: i32_at(data, 64),
                fd: i32_at(data, 68),
                protocol: match u16_at(data, 74) {
                    6 => Protocol::Tcp,
                    17 => Protocol::Udp,
                    other => Protocol::Other(other),
                },
                local: address(80, u16_at(data, 76)),
                remote: address(96, u16_at(data, 78)),
            };
            if kind == EVENT_CONNECT {
                SecurityEvent::Connect(event)
            } else {
                SecurityEvent::Accept(event)
            }
        }
        EVENT_FILE_OPEN => {
            need(FILE_OPEN_EVENT_SIZE)?;
            let path_len = (u32_at(data, 72) as usize).min(255);
            let bytes = &data[80..80 + path_len];
            let path = if flags & FLAG_PATH_RESOLVED != 0 {
                cwd_from_leaf_first(&split_nul(bytes)).unwrap_or_default()
            } else {
                text(bytes)
            };
            SecurityEvent::FileOpen(FileOpenEvent {
                process,
                path,
                path_truncated: flags & FLAG_PATH_TRUNCATED != 0,
                flags: u32_at(data, 68),
                result: i64::from(i32_at(data, 64)),
            })
        }
        EVENT_PRIVILEGE | EVENT_PTRACE | EVENT_MODULE => {
            need(SYSCALL_EVENT_SIZE)?;
            let nr = i64::from(u32_at(data, 64));
            let result = u64_at(data, 72) as i64;
            let args = [
                u64_at(data, 80),
                u64_at(data, 88),
                u64_at(data, 96),
                u64_at(data, 104),
            ];
            match kind {
                EVENT_PRIVILEGE => {
                    let syscall = PrivilegeSyscall::from_nr(nr)?;
                    SecurityEvent::PrivilegeChange(PrivilegeChangeEvent {
                        process,
                        syscall,
                        args: [args[0], args[1], args[2]],
                        capabilities: (syscall == PrivilegeSyscall::Capset)
                            .then(|| [u32_at(data, 112), u32_at(data, 116), u32_at(data, 120)]),
                        result,
                    })
                }
                EVENT_PTRACE => SecurityEvent::Ptrace(PtraceEvent {
                    process,
                    request: args[0] as i64,
                    target_pid: args[1] as u32,
                    result,
                }),
                _ => SecurityEvent::ModuleLoad(ModuleLoadEvent {
                    process,
                    fd: (nr == libc::SYS_finit_module).then_some(args[0] as i32),
                    result,
                }),
            }
        }
        _ => return None,
    })
}

fn text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// NUL-separated strings, as in `/proc/<pid>/cmdline`; a trailing NUL ends the last one.
fn split_nul(bytes: &[u8]) -> Vec<String> {
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|&b| b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// The kernel walks the working directory up from the leaf; an empty walk is the root.
fn cwd_from_leaf_first(components: &[String]) -> Option<String> {
    if components.iter().any(|c| c.is_empty()) {
        return None;
    }
    let mut path = String::new();
    for component in components.iter().rev() {
        path.push('/');
        path.push_str(component);
    }
    if path.is_empty() {
        path.push('/');
    }
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_and_cwd_are_rebuilt_from_their_kernel_layout() {
        assert_eq!(split_nul(b"sh\0-c\0exit 7\0"), ["sh", "-c", "exit 7"]);
        assert_eq!(split_nul(b""), Vec::<String>::new());
        let leaf_first = split_nul(b"work\0tmp\0");
        assert_eq!(
            cwd_from_leaf_first(&leaf_first).as_deref(),
            Some("/tmp/work")
        );
        assert_eq!(cwd_from_leaf_first(&[]).as_deref(), Some("/"));
    }

    #[test]
    fn short_or_unknown_records_are_refused() {
        assert!(parse(&[0u8; 10]).is_none());
        let mut record = vec![0u8; EXIT_EVENT_SIZE];
        record[16..20].copy_from_slice(&99u32.to_ne_bytes());
        assert!(parse(&record).is_none());
        record[16..20].copy_from_slice(&EVENT_EXIT.to_ne_bytes());
        record[64..68].copy_from_slice(&(7u32 << 8).to_ne_bytes());
        let Some(SecurityEvent::Exit(exit)) = parse(&record) else {
            panic!("not an exit")
        };
        assert_eq!((exit.exit_code, exit.signal), (Some(7), None));
        record[16..20].copy_from_slice(&EVENT_EXEC.to_ne_bytes());
        assert!(parse(&record).is_none(), "an exec record is longer");
    }
}
