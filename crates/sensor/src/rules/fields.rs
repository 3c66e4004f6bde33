//! The fields a rule can test: their names, types, which events carry them, and how each is read
//! from an event and the process table.

use std::net::IpAddr;

use model::security::{SecurityEvent, SecurityEventKind as Kind};

use crate::process_table::ProcessInfo;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    Str,
    Int,
    Bool,
    Ip,
}

impl FieldType {
    pub fn name(self) -> &'static str {
        match self {
            Self::Str => "string",
            Self::Int => "integer",
            Self::Bool => "boolean",
            Self::Ip => "ip address",
        }
    }
}

/// Whose process fields: the event's process, its parent, or any of its ancestors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Process,
    Parent,
    Ancestor,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcField {
    Pid,
    Ppid,
    Uid,
    Euid,
    Gid,
    Comm,
    Exe,
    ExeName,
    ExeOwnerUid,
    Argv,
    Cwd,
    ContainerId,
    Service,
    CgroupId,
}

const PROC_FIELDS: &[(&str, ProcField, FieldType)] = &[
    ("pid", ProcField::Pid, FieldType::Int),
    ("ppid", ProcField::Ppid, FieldType::Int),
    ("uid", ProcField::Uid, FieldType::Int),
    ("euid", ProcField::Euid, FieldType::Int),
    ("gid", ProcField::Gid, FieldType::Int),
    ("comm", ProcField::Comm, FieldType::Str),
    ("exe", ProcField::Exe, FieldType::Str),
    ("exe_name", ProcField::ExeName, FieldType::Str),
    ("exe_owner_uid", ProcField::ExeOwnerUid, FieldType::Int),
    ("argv", ProcField::Argv, FieldType::Str),
    ("cwd", ProcField::Cwd, FieldType::Str),
    ("container_id", ProcField::ContainerId, FieldType::Str),
    ("service", ProcField::Service, FieldType::Str),
    ("cgroup_id", ProcField::CgroupId, FieldType::Int),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventField {
    Kind,
    Host,
    ExitCode,
    ExitSignal,
    NetProtocol,
    NetDirection,
    NetLocalIp,
    NetLocalPort,
    NetRemoteIp,
    NetRemotePort,
    NetResult,
    NetSuccess,
    FilePath,
    FileFlags,
    FileWrite,
    FileResult,
    FileSuccess,
    PrivSyscall,
    PrivArg0,
    PrivArg1,
    PrivArg2,
    PrivResult,
    PrivSuccess,
    PrivPreviousUid,
    PrivPreviousEuid,
    PtraceRequest,
    PtraceTargetPid,
    PtraceResult,
    PtraceSuccess,
    ModuleFd,
    ModuleResult,
    ModuleSuccess,
}

const ALL: &[Kind] = &Kind::ALL;
const EXIT: &[Kind] = &[Kind::Exit];
const NET: &[Kind] = &[Kind::Connect, Kind::Accept];
const FILE: &[Kind] = &[Kind::FileOpen];
const PRIV: &[Kind] = &[Kind::PrivilegeChange];
const PTRACE: &[Kind] = &[Kind::Ptrace];
const MODULE: &[Kind] = &[Kind::ModuleLoad];

/// Every event field: name, field, type, the events that carry it.
pub const EVENT_FIELDS: &[(&str, EventField, FieldType, &[Kind])] = &[
    ("event.kind", EventField::Kind, FieldType::Str, ALL),
    ("host", EventField::Host, FieldType::Str, ALL),
    ("exit.code", EventField::ExitCode, FieldType::Int, EXIT),
    ("exit.signal", EventField::ExitSignal, FieldType::Int, EXIT),
    ("net.protocol", EventField::NetProtocol, FieldType::Str, NET),
    (
        "net.direction",
        EventField::NetDirection,
        FieldType::Str,
        NET,
    ),
    ("net.local.ip", EventField::NetLocalIp, FieldType::Ip, NET),
    (
        "net.local.port",
        EventField::NetLocalPort,
        FieldType::Int,
        NET,
    ),
    ("net.remote.ip", EventField::NetRemoteIp, FieldType::Ip, NET),
    (
        "net.remote.port",
        EventField::NetRemotePort,
        FieldType::Int,
        NET,
    ),
    ("net.result", EventField::NetResult, FieldType::Int, NET),
    ("net.success", EventField::NetSuccess, FieldType::Bool, NET),
    ("file.path", EventField::FilePath, FieldType::Str, FILE),
    ("file.flags", EventField::FileFlags, FieldType::Int, FILE),
    ("file.write", EventField::FileWrite, FieldType::Bool, FILE),
    ("file.result", EventField::FileResult, FieldType::Int, FILE),
    (
        "file.success",
        EventField::FileSuccess,
        FieldType::Bool,
        FILE,
    ),
    (
        "privilege.syscall",
        EventField::PrivSyscall,
        FieldType::Str,
        PRIV,
    ),
    ("privilege.arg0", EventField::PrivArg0, FieldType::Int, PRIV),
    ("privilege.arg1", EventField::PrivArg1, FieldType::Int, PRIV),
    ("privilege.arg2", EventField::PrivArg2, FieldType::Int, PRIV),
    (
        "privilege.result",
        EventField::PrivResult,
        FieldType::Int,
        PRIV,
    ),
    (
        "privilege.success",
        EventField::PrivSuccess,
        FieldType::Bool,
        PRIV,
    ),
    (
        "privilege.previous_uid",
        EventField::PrivPreviousUid,
        FieldType::Int,
        PRIV,
    ),
    (
        "privilege.previous_euid",
        EventField::PrivPreviousEuid,
        FieldType::Int,
        PRIV,
    ),
    (
        "ptrace.request",
        EventField::PtraceRequest,
        FieldType::Str,
        PTRACE,
    ),
    (
        "ptrace.target_pid",
        EventField::PtraceTargetPid,
        FieldType::Int,
        PTRACE,
    ),
    (
        "ptrace.result",
        EventField::PtraceResult,
        FieldType::Int,
        PTRACE,
    ),
    (
        "ptrace.success",
        EventField::PtraceSuccess,
        FieldType::Bool,
        PTRACE,
    ),
    ("module.fd", EventField::ModuleFd, FieldType::Int, MODULE),
    (
        "module.result",
        EventField::ModuleResult,
        FieldType::Int,
        MODULE,
    ),
    (
        "module.success",
        EventField::ModuleSuccess,
        FieldType::Bool,
        MODULE,
    ),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Proc(Scope, ProcField),
    Event(EventField),
}

impl Field {
    /// The field called `name`, its type and the events that carry it.
    pub fn lookup(name: &str) -> Option<(Field, FieldType, &'static [Kind])> {
        for (prefix, scope) in [
            ("process.", Scope::Process),
            ("parent.", Scope::Parent),
            ("ancestor.", Scope::Ancestor),
        ] {
            if let Some(rest) = name.strip_prefix(prefix) {
                return PROC_FIELDS
                    .iter()
                    .find(|(n, _, _)| *n == rest)
                    .map(|(_, f, t)| (Field::Proc(scope, *f), *t, ALL));
            }
        }
        EVENT_FIELDS
            .iter()
            .find(|(n, _, _, _)| *n == name)
            .map(|(_, f, t, k)| (Field::Event(*f), *t, *k))
    }

    /// Every field name, for error messages and the documentation test.
    pub fn all_names() -> Vec<String> {
        let mut names = Vec::new();
        for scope in ["process", "parent", "ancestor"] {
            for (n, _, _) in PROC_FIELDS {
                names.push(format!("{scope}.{n}"));
            }
        }
        names.extend(EVENT_FIELDS.iter().map(|(n, _, _, _)| n.to_string()));
        names
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
    Ip(IpAddr),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Str(s) => f.write_str(s),
            Value::Int(i) => write!(f, "{i}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// What a rule sees: the event, its process as the table knows it after the event, that
/// process as it was before the event, and its ancestors.
pub struct Context<'a> {
    pub event: &'a SecurityEvent,
    pub process: Option<&'a ProcessInfo>,
    pub previous: Option<&'a ProcessInfo>,
    pub ancestors: Vec<&'a ProcessInfo>,
}

impl Context<'_> {
    /// The field's values: one (or none, when unknown) for most fields, one per known ancestor
    /// for `ancestor.*`.
    pub fn values(&self, field: Field) -> Vec<Value> {
        match field {
            Field::Proc(Scope::Process, f) => self.own(f).into_iter().collect(),
            Field::Proc(Scope::Parent, f) => self
                .ancestors
                .first()
                .and_then(|p| proc_value(p, f))
                .into_iter()
                .collect(),
            Field::Proc(Scope::Ancestor, f) => self
                .ancestors
                .iter()
                .filter_map(|p| proc_value(p, f))
                .collect(),
            Field::Event(f) => self.event_value(f).into_iter().collect(),
        }
    }

    fn own(&self, f: ProcField) -> Option<Value> {
        if let Some(p) = self.process {
            return proc_value(p, f);
        }
        let c = self.event.process();
        Some(match f {
            ProcField::Pid => Value::Int(c.pid.into()),
            ProcField::Ppid => Value::Int(c.ppid.into()),
            ProcField::Uid => Value::Int(c.uid.into()),
            ProcField::Euid => Value::Int(c.euid.into()),
            ProcField::Gid => Value::Int(c.gid.into()),
            ProcField::Comm | ProcField::ExeName => Value::Str(c.comm.clone()),
            ProcField::ContainerId => Value::Str(c.container_id.clone()?),
            ProcField::Service => Value::Str(c.service_name.clone()?),
            ProcField::CgroupId => Value::Int(c.cgroup_id as i64),
            ProcField::Exe | ProcField::ExeOwnerUid | ProcField::Argv | ProcField::Cwd => {
                return None;
            }
        })
    }

    fn event_value(&self, f: EventField) -> Option<Value> {
        use SecurityEvent as E;
        let int = |v: i64| Some(Value::Int(v));
        let ip = |v: IpAddr| Some(Value::Ip(v.to_canonical()));
        Some(match (f, self.event) {
            (EventField::Kind, e) => Value::Str(e.kind().name().into()),
            (EventField::Host, e) => Value::Str(e.process().host.clone()),
            (EventField::ExitCode, E::Exit(e)) => return int(e.exit_code?.into()),
            (EventField::ExitSignal, E::Exit(e)) => return int(e.signal?.into()),
            (EventField::NetProtocol, E::Connect(c) | E::Accept(c)) => {
                Value::Str(c.protocol.name())
            }
            (EventField::NetDirection, E::Connect(_)) => Value::Str("outbound".into()),
            (EventField::NetDirection, E::Accept(_)) => Value::Str("inbound".into()),
            (EventField::NetLocalIp, E::Connect(c) | E::Accept(c)) => return ip(c.local.ip()),
            (EventField::NetLocalPort, E::Connect(c) | E::Accept(c)) => {
                return int(c.local.port().into());
            }
            (EventField::NetRemoteIp, E::Connect(c) | E::Accept(c)) => return ip(c.remote.ip()),
            (EventField::NetRemotePort, E::Connect(c) | E::Accept(c)) => {
                return int(c.remote.port().into());
            }
            (EventField::NetResult, E::Connect(c) | E::Accept(c)) => return int(c.result.into()),
            (EventField::NetSuccess, E::Connect(c) | E::Accept(c)) => {
                // EINPROGRESS: a non-blocking connect under way is an attempt worth judging.
                Value::Bool(c.result >= 0 || c.result == -115)
            }
            (EventField::FilePath, E::FileOpen(o)) => Value::Str(o.path.clone()),
            (EventField::FileFlags, E::FileOpen(o)) => return int(o.flags.into()),
            (EventField::FileWrite, E::FileOpen(o)) => Value::Bool(o.writes()),
            (EventField::FileResult, E::FileOpen(o)) => return int(o.result),
            (EventField::FileSuccess, E::FileOpen(o)) => Value::Bool(o.result >= 0),
            (EventField::PrivSyscall, E::PrivilegeChange(p)) => Value::Str(p.syscall.name().into()),
            (EventField::PrivArg0, E::PrivilegeChange(p)) => return int(arg(p.args[0])),
            (EventField::PrivArg1, E::PrivilegeChange(p)) => return int(arg(p.args[1])),
            (EventField::PrivArg2, E::PrivilegeChange(p)) => return int(arg(p.args[2])),
            (EventField::PrivResult, E::PrivilegeChange(p)) => return int(p.result),
            (EventField::PrivSuccess, E::PrivilegeChange(p)) => Value::Bool(p.result >= 0),
            (EventField::PrivPreviousUid, E::PrivilegeChange(_)) => {
                return int(self.previous?.uid.into());
            }
            (EventField::PrivPreviousEuid, E::PrivilegeChange(_)) => {
                return int(self.previous?.euid.into());
            }
            (EventField::PtraceRequest, E::Ptrace(p)) => Value::Str(p.request_name().into()),
            (EventField::PtraceTargetPid, E::Ptrace(p)) => return int(p.target_pid.into()),
            (EventField::PtraceResult, E::Ptrace(p)) => return int(p.result),
            (EventField::PtraceSuccess, E::Ptrace(p)) => Value::Bool(p.result >= 0),
            (EventField::ModuleFd, E::ModuleLoad(m)) => return int(m.fd?.into()),
            (EventField::ModuleResult, E::ModuleLoad(m)) => return int(m.result),
            (EventField::ModuleSuccess, E::ModuleLoad(m)) => Value::Bool(m.result >= 0),
            _ => return None,
        })
    }
}

/// An id argument as the syscall sees it: `-1` (unchanged) rather than 4294967295.
fn arg(raw: u64) -> i64 {
    if raw as u32 == u32::MAX {
        -1
    } else {
        raw as i64
    }
}

fn proc_value(p: &ProcessInfo, f: ProcField) -> Option<Value> {
    Some(match f {
        ProcField::Pid => Value::Int(p.pid.into()),
        ProcField::Ppid => Value::Int(p.ppid.into()),
        ProcField::Uid => Value::Int(p.uid.into()),
        ProcField::Euid => Value::Int(p.euid.into()),
        ProcField::Gid => Value::Int(p.gid.into()),
        ProcField::Comm => Value::Str(p.comm.clone()),
        ProcField::Exe => Value::Str(p.exe.clone()?),
        ProcField::ExeName => Value::Str(p.exe_name().to_string()),
        ProcField::ExeOwnerUid => Value::Int(p.exe_owner_uid?.into()),
        ProcField::Argv => Value::Str(p.argv.join(" ")),
        ProcField::Cwd => Value::Str(p.cwd.clone()?),
        ProcField::ContainerId => Value::Str(p.container_id.clone()?),
        ProcField::Service => Value::Str(p.service_name.clone()?),
        ProcField::CgroupId => Value::Int(p.cgroup_id as i64),
    })
}
