//! Security events and the alerts raised from them, as plain records.
//!
//! The events carry what the kernel sensor reports (`ebpf::security`), plus what the agent knows
//! about the process that the kernel does not: its container, its service name, the owner of its
//! executable, and the host. `sensor` judges them; `model` only says what they are.
//!
//! They travel through the pipeline as `Batch::Security` ([`SecurityBatch`]) into the store's
//! `security_events` and `alerts` tables.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Who did it and when, common to every event. Ids are as they are after the syscall.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityProcess {
    pub time_unix_nano: u64,
    /// Process id (tgid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// The real parent's process id.
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
    /// The kernel's 16-byte task name.
    pub comm: String,
    /// The cgroup v2 id (the inode number of its directory under /sys/fs/cgroup).
    pub cgroup_id: u64,
    /// The container id from the process's cgroup path, when it runs in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// `service.name` of the process, from its telemetry or its environment, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// The host the event happened on.
    pub host: String,
}

/// One security event, one variant per kind the kernel sensor reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
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

/// The kinds of [`SecurityEvent`], as rules name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityEventKind {
    Exec,
    Exit,
    Connect,
    Accept,
    FileOpen,
    PrivilegeChange,
    Ptrace,
    ModuleLoad,
}

impl SecurityEventKind {
    pub const ALL: [SecurityEventKind; 8] = [
        Self::Exec,
        Self::Exit,
        Self::Connect,
        Self::Accept,
        Self::FileOpen,
        Self::PrivilegeChange,
        Self::Ptrace,
        Self::ModuleLoad,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Exit => "exit",
            Self::Connect => "connect",
            Self::Accept => "accept",
            Self::FileOpen => "file_open",
            Self::PrivilegeChange => "privilege_change",
            Self::Ptrace => "ptrace",
            Self::ModuleLoad => "module_load",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl SecurityEvent {
    /// The process the event happened in.
    pub fn process(&self) -> &SecurityProcess {
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

    pub fn process_mut(&mut self) -> &mut SecurityProcess {
        match self {
            Self::Exec(e) => &mut e.process,
            Self::Exit(e) => &mut e.process,
            Self::Connect(e) | Self::Accept(e) => &mut e.process,
            Self::FileOpen(e) => &mut e.process,
            Self::PrivilegeChange(e) => &mut e.process,
            Self::Ptrace(e) => &mut e.process,
            Self::ModuleLoad(e) => &mut e.process,
        }
    }

    pub fn kind(&self) -> SecurityEventKind {
        match self {
            Self::Exec(_) => SecurityEventKind::Exec,
            Self::Exit(_) => SecurityEventKind::Exit,
            Self::Connect(_) => SecurityEventKind::Connect,
            Self::Accept(_) => SecurityEventKind::Accept,
            Self::FileOpen(_) => SecurityEventKind::FileOpen,
            Self::PrivilegeChange(_) => SecurityEventKind::PrivilegeChange,
            Self::Ptrace(_) => SecurityEventKind::Ptrace,
            Self::ModuleLoad(_) => SecurityEventKind::ModuleLoad,
        }
    }

    pub fn time_unix_nano(&self) -> u64 {
        self.process().time_unix_nano
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecEvent {
    pub process: SecurityProcess,
    /// The pid of the thread that called exec, when it was not the leader.
    pub old_pid: u32,
    /// The path given to exec (as passed, so possibly relative to `cwd`).
    pub filename: String,
    pub filename_truncated: bool,
    /// The first bytes of the arguments, split.
    pub argv: Vec<String>,
    pub argv_truncated: bool,
    /// The working directory, `None` when it could not be read.
    pub cwd: Option<String>,
    pub cwd_truncated: bool,
    /// The owner of the executable file, when the agent could stat it (the kernel does not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe_owner_uid: Option<u32>,
    /// The executable file's SHA-256 (lowercase hex), when the agent hashed it (optional, and
    /// bounded by size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe_sha256: Option<String>,
}

impl ExecEvent {
    /// The executable's path: `filename`, made absolute against `cwd` when it was relative.
    pub fn exe(&self) -> String {
        if self.filename.starts_with('/') {
            return self.filename.clone();
        }
        match &self.cwd {
            Some(cwd) => {
                let relative = self.filename.trim_start_matches("./");
                format!("{}/{relative}", cwd.trim_end_matches('/'))
            }
            None => self.filename.clone(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitEvent {
    pub process: SecurityProcess,
    /// The exit code when the process exited normally.
    pub exit_code: Option<u8>,
    /// The signal that ended it, if one did.
    pub signal: Option<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionEvent {
    pub process: SecurityProcess,
    /// 0 or a new fd on success, `-errno` on failure (`-115`, EINPROGRESS, for a non-blocking
    /// connect under way).
    pub result: i32,
    /// The socket's descriptor (for accept, the new one).
    pub fd: i32,
    pub protocol: Protocol,
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Tcp,
    Udp,
    Other(u16),
}

impl Protocol {
    pub fn name(self) -> String {
        match self {
            Self::Tcp => "tcp".into(),
            Self::Udp => "udp".into(),
            Self::Other(n) => format!("ip-{n}"),
        }
    }

    /// The IANA protocol number.
    pub fn number(self) -> u16 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
            Self::Other(n) => n,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOpenEvent {
    pub process: SecurityProcess,
    /// The path as passed to open.
    pub path: String,
    pub path_truncated: bool,
    /// The open flags (`O_*`).
    pub flags: u32,
    /// The new fd, or `-errno`.
    pub result: i64,
}

impl FileOpenEvent {
    /// Opened for writing (`O_WRONLY` or `O_RDWR`).
    pub fn writes(&self) -> bool {
        self.flags & 0b11 != 0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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

    /// Changes user ids (rather than group ids or capabilities).
    pub fn sets_user(self) -> bool {
        matches!(
            self,
            Self::Setuid | Self::Setreuid | Self::Setresuid | Self::Setfsuid
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivilegeChangeEvent {
    /// Ids after the call.
    pub process: SecurityProcess,
    pub syscall: PrivilegeSyscall,
    /// The raw arguments: the ids asked for (`u32::MAX` as `-1`: unchanged), or for capset the
    /// header and data pointers.
    pub args: [u64; 3],
    /// capset: the effective, permitted and inheritable sets asked for (low 32 bits).
    pub capabilities: Option<[u32; 3]>,
    /// 0 or `-errno` (setfsuid/setfsgid return the previous id).
    pub result: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PtraceEvent {
    pub process: SecurityProcess,
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

    /// Writes into the tracee (memory or registers) rather than only starting to trace it.
    pub fn injects(&self) -> bool {
        matches!(self.request, 4 | 5 | 6 | 13 | 15 | 0x4205)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleLoadEvent {
    pub process: SecurityProcess,
    /// `finit_module`'s file descriptor; `None` for `init_module` (image from memory).
    pub fd: Option<i32>,
    /// 0 or `-errno`.
    pub result: i64,
}

/// A group of syscalls counted together per process (the kernel sensor's classes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyscallClass {
    Other,
    Io,
    FileOpen,
    FileMetadata,
    Network,
    Memory,
    Process,
    Privilege,
    Kernel,
    Debug,
    Wait,
    Identity,
    Signal,
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

/// Syscalls one process made since it was first seen, by class (cumulative counts).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyscallCounts {
    pub pid: u32,
    /// Indexed by `SyscallClass as usize` (the order of [`SyscallClass::ALL`]).
    pub counts: [u64; 14],
    /// The process has exited; these are its final counts.
    pub exited: bool,
}

impl SyscallCounts {
    pub fn get(&self, class: SyscallClass) -> u64 {
        self.counts[class as usize]
    }
}

/// How bad an alert is; the numbers are OCSF's `severity_id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info = 1,
    Low = 2,
    Medium = 3,
    High = 4,
    Critical = 5,
}

impl Severity {
    pub const ALL: [Severity; 5] = [
        Self::Info,
        Self::Low,
        Self::Medium,
        Self::High,
        Self::Critical,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// What raised an alert.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AlertSource {
    /// A rule matched; `name` is the rule's id.
    Rule { name: String },
    /// A learned baseline was departed from; `name` says how (e.g. `new_child`).
    Anomaly { name: String },
}

impl AlertSource {
    pub fn name(&self) -> &str {
        match self {
            Self::Rule { name } | Self::Anomaly { name } => name,
        }
    }
}

/// For an anomaly: how unusual it is and what the baseline expected instead.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnomalyDetail {
    /// 0..1, higher is more unusual.
    pub score: f64,
    /// What the baseline holds, e.g. `children: [/usr/bin/gzip]` or `io: 10..40/s`.
    pub expected: String,
    /// What was seen instead.
    pub seen: String,
    /// Exactly what departed from the baseline, so that "accept as normal" can add just that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub departure: Option<BaselineDeparture>,
}

/// Which way a connection went, as a baseline's peers record it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Outbound,
    Inbound,
}

/// A usual network peer: for outbound connections the remote port, for inbound ones the local
/// (listening) port, and the other end's address block.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Peer {
    pub direction: Direction,
    pub protocol: String,
    pub port: u16,
    /// `203.0.113.0/24` or `2001:db8::/64`.
    pub group: String,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dir = match self.direction {
            Direction::Outbound => "to",
            Direction::Inbound => "from",
        };
        write!(f, "{}/{} {dir} {}", self.protocol, self.port, self.group)
    }
}

/// What an anomaly found outside an executable's baseline; `exe` is the executable whose
/// baseline it is (for a new child, the parent's).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum BaselineDeparture {
    /// `exe` started `child`, which it never started while learning.
    NewChild { exe: String, child: String },
    /// `exe` talked to a peer it never talked to while learning.
    NewPeer { exe: String, peer: Peer },
    /// `exe` made syscalls of a class it never used, at `rate` a second.
    NewSyscallClass {
        exe: String,
        class: SyscallClass,
        rate: f64,
    },
    /// `exe` made syscalls of `class` at `rate` a second, far above its learned range.
    SyscallBurst {
        exe: String,
        class: SyscallClass,
        rate: f64,
    },
}

impl BaselineDeparture {
    /// The executable whose baseline it departs from.
    pub fn exe(&self) -> &str {
        match self {
            Self::NewChild { exe, .. }
            | Self::NewPeer { exe, .. }
            | Self::NewSyscallClass { exe, .. }
            | Self::SyscallBurst { exe, .. } => exe,
        }
    }
}

/// One alert: a rule matched or a baseline was departed from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Unique per host: `<host>-<time hex>-<sequence>`.
    pub id: String,
    pub time_unix_nano: u64,
    pub severity: Severity,
    pub source: AlertSource,
    /// One line for a human.
    pub summary: String,
    /// The event(s) that raised it; empty for syscall-rate anomalies (counts are not events).
    #[serde(default)]
    pub events: Vec<SecurityEvent>,
    /// The process it concerns (for a rate anomaly, the one whose rate it was).
    pub process: SecurityProcess,
    /// The executable's path, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<AnomalyDetail>,
    /// How many occurrences this alert stands for (more than 1 once repeats were merged).
    pub count: u64,
    /// When the last merged occurrence happened (the same as `time_unix_nano` when `count` is 1).
    pub last_time_unix_nano: u64,
}

impl Alert {
    pub fn host(&self) -> &str {
        &self.process.host
    }
}

/// One event as it is stored: the event and the executable of its process (which only exec
/// events carry themselves).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredSecurityEvent {
    pub event: SecurityEvent,
    /// The process's executable path, when the agent knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
}

/// Security events and alerts of this host, for `security_events` and `alerts`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SecurityBatch {
    pub events: Vec<StoredSecurityEvent>,
    pub alerts: Vec<Alert>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_exec_is_resolved_against_its_working_directory() {
        let mut exec = ExecEvent {
            process: SecurityProcess::default(),
            old_pid: 0,
            filename: "./run.sh".into(),
            filename_truncated: false,
            argv: vec![],
            argv_truncated: false,
            cwd: Some("/srv/app/".into()),
            cwd_truncated: false,
            exe_owner_uid: None,
            exe_sha256: None,
        };
        assert_eq!(exec.exe(), "/srv/app/run.sh");
        exec.filename = "/bin/sh".into();
        assert_eq!(exec.exe(), "/bin/sh");
    }

    #[test]
    fn events_round_trip_through_json_with_their_kind() {
        let event = SecurityEvent::Connect(ConnectionEvent {
            process: SecurityProcess {
                pid: 7,
                host: "h".into(),
                ..Default::default()
            },
            result: 0,
            fd: 3,
            protocol: Protocol::Tcp,
            local: "10.0.0.1:40000".parse().unwrap(),
            remote: "10.0.0.2:443".parse().unwrap(),
        });
        let json = serde_json::to_string(&event).unwrap();
        assert!(json.contains(r#""kind":"connect""#), "{json}");
        let back: SecurityEvent = serde_json::from_str(&json).unwrap();
        assert_eq!(back, event);
        assert_eq!(back.kind().name(), "connect");
        assert_eq!(
            SecurityEventKind::from_name("file_open"),
            Some(SecurityEventKind::FileOpen)
        );
    }
}
