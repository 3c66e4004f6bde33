//! Builders of events for tests and scripted workloads: one call per event, defaults elsewhere.

use model::security::{
    ConnectionEvent, ExecEvent, ExitEvent, FileOpenEvent, ModuleLoadEvent, PrivilegeChangeEvent,
    PrivilegeSyscall, Protocol, PtraceEvent, SecurityEvent, SecurityProcess,
};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

pub const HOST: &str = "test-host";

/// The context of an event by `pid` (child of `ppid`) at `time` ns, with real and effective `uid`.
pub fn context(pid: u32, ppid: u32, time: u64, uid: u32) -> SecurityProcess {
    SecurityProcess {
        time_unix_nano: time,
        pid,
        tid: pid,
        ppid,
        uid,
        gid: uid,
        euid: uid,
        comm: String::new(),
        cgroup_id: 1,
        container_id: None,
        service_name: None,
        host: HOST.into(),
    }
}

/// `pid` (child of `ppid`) execs `exe` at `time`, as `uid`; the binary is owned by root.
pub fn exec(pid: u32, ppid: u32, time: u64, exe: &str, uid: u32) -> SecurityEvent {
    let mut process = context(pid, ppid, time, uid);
    process.comm = exe
        .rsplit('/')
        .next()
        .unwrap_or(exe)
        .chars()
        .take(15)
        .collect();
    SecurityEvent::Exec(ExecEvent {
        process,
        old_pid: 0,
        filename: exe.into(),
        filename_truncated: false,
        argv: vec![exe.into()],
        argv_truncated: false,
        cwd: Some("/".into()),
        cwd_truncated: false,
        exe_owner_uid: Some(0),
        exe_sha256: None,
    })
}

pub fn exit(pid: u32, ppid: u32, time: u64) -> SecurityEvent {
    SecurityEvent::Exit(ExitEvent {
        process: context(pid, ppid, time, 0),
        exit_code: Some(0),
        signal: None,
    })
}

fn connection(pid: u32, time: u64, local: SocketAddr, remote: &str) -> ConnectionEvent {
    ConnectionEvent {
        process: context(pid, 1, time, 0),
        result: 0,
        fd: 3,
        protocol: Protocol::Tcp,
        local,
        remote: remote
            .parse()
            .unwrap_or_else(|_| SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)),
    }
}

/// `pid` connects to `remote` (`ip:port`) over TCP.
pub fn connect(pid: u32, time: u64, remote: &str) -> SecurityEvent {
    let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 40_000);
    SecurityEvent::Connect(connection(pid, time, local, remote))
}

/// `pid` accepts a TCP connection from `remote` on local `port`.
pub fn accept(pid: u32, time: u64, port: u16, remote: &str) -> SecurityEvent {
    let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), port);
    SecurityEvent::Accept(connection(pid, time, local, remote))
}

/// `pid` opens `path` read-only, successfully.
pub fn open(pid: u32, time: u64, path: &str) -> SecurityEvent {
    SecurityEvent::FileOpen(FileOpenEvent {
        process: context(pid, 1, time, 0),
        path: path.into(),
        path_truncated: false,
        flags: 0,
        result: 3,
    })
}

/// `pid` calls setuid(`to`) successfully; its ids afterwards are `to`.
pub fn setuid(pid: u32, time: u64, to: u32) -> SecurityEvent {
    SecurityEvent::PrivilegeChange(PrivilegeChangeEvent {
        process: context(pid, 1, time, to),
        syscall: PrivilegeSyscall::Setuid,
        args: [u64::from(to), 0, 0],
        capabilities: None,
        result: 0,
    })
}

/// `pid` attaches to `target` with PTRACE_ATTACH.
pub fn ptrace_attach(pid: u32, time: u64, target: u32) -> SecurityEvent {
    SecurityEvent::Ptrace(PtraceEvent {
        process: context(pid, 1, time, 0),
        request: 16,
        target_pid: target,
        result: 0,
    })
}

/// `pid` loads a kernel module from file descriptor 3.
pub fn module_load(pid: u32, time: u64) -> SecurityEvent {
    SecurityEvent::ModuleLoad(ModuleLoadEvent {
        process: context(pid, 1, time, 0),
        fd: Some(3),
        result: 0,
    })
}

/// `event` with the process's real and effective ids set to `uid`.
pub fn as_uid(mut event: SecurityEvent, uid: u32) -> SecurityEvent {
    let p = event.process_mut();
    p.uid = uid;
    p.euid = uid;
    p.gid = uid;
    event
}

/// `event` (an exec) of a binary owned by `owner`.
pub fn owned_by(mut event: SecurityEvent, owner: u32) -> SecurityEvent {
    if let SecurityEvent::Exec(e) = &mut event {
        e.exe_owner_uid = Some(owner);
    }
    event
}
