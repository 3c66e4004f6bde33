//! What is known about each live process, kept from exec and exit events, so rules can look at a
//! process's parent and ancestors and baselines can name its executable.

use std::collections::HashMap;

use model::security::{SecurityEvent, SecurityProcess};

/// Ancestry is followed at most this far (a cycle in stale data must not loop forever).
pub const MAX_ANCESTRY: usize = 32;

/// One process, as its last exec (or the agent's scan of /proc) described it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub ppid: u32,
    /// The executable's absolute path; `None` for a process whose exec was not seen.
    pub exe: Option<String>,
    pub comm: String,
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    pub exe_owner_uid: Option<u32>,
    pub argv: Vec<String>,
    pub cwd: Option<String>,
    pub container_id: Option<String>,
    pub service_name: Option<String>,
    pub cgroup_id: u64,
    /// When its exit was seen; the entry is kept a little longer for late events about it.
    pub exited_unix_nano: Option<u64>,
}

impl ProcessInfo {
    /// The last path component of the executable, or the comm when the exe is unknown.
    pub fn exe_name(&self) -> &str {
        match &self.exe {
            Some(exe) => exe.rsplit('/').next().unwrap_or(exe),
            None => &self.comm,
        }
    }

    fn from_context(p: &SecurityProcess) -> Self {
        ProcessInfo {
            pid: p.pid,
            ppid: p.ppid,
            comm: p.comm.clone(),
            uid: p.uid,
            euid: p.euid,
            gid: p.gid,
            container_id: p.container_id.clone(),
            service_name: p.service_name.clone(),
            cgroup_id: p.cgroup_id,
            ..Default::default()
        }
    }
}

/// pid → [`ProcessInfo`], fed by every event (exec and exit above all).
#[derive(Debug)]
pub struct ProcessTable {
    processes: HashMap<u32, ProcessInfo>,
    /// How long an exited process stays (its children's events may still be in flight).
    exit_grace_ns: u64,
}

impl Default for ProcessTable {
    fn default() -> Self {
        Self::new(30_000_000_000)
    }
}

impl ProcessTable {
    pub fn new(exit_grace_ns: u64) -> Self {
        ProcessTable {
            processes: HashMap::new(),
            exit_grace_ns,
        }
    }

    /// Adds or replaces a process learned elsewhere (e.g. a scan of /proc at start).
    pub fn insert(&mut self, info: ProcessInfo) {
        self.processes.insert(info.pid, info);
    }

    pub fn get(&self, pid: u32) -> Option<&ProcessInfo> {
        self.processes.get(&pid)
    }

    pub fn len(&self) -> usize {
        self.processes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.processes.is_empty()
    }

    /// Updates the table from one event: exec replaces the process's image, exit marks it,
    /// privilege changes update its ids, and any event adds a process not seen before.
    pub fn observe(&mut self, event: &SecurityEvent) {
        let context = event.process();
        match event {
            SecurityEvent::Exec(exec) => {
                let mut info = ProcessInfo::from_context(context);
                info.exe = Some(exec.exe());
                info.exe_owner_uid = exec.exe_owner_uid;
                info.argv = exec.argv.clone();
                info.cwd = exec.cwd.clone();
                if let Some(old) = self.processes.get(&context.pid) {
                    // What the agent learned about the process outside the kernel survives exec.
                    info.container_id = info.container_id.or_else(|| old.container_id.clone());
                    info.service_name = info.service_name.or_else(|| old.service_name.clone());
                }
                self.processes.insert(context.pid, info);
                if exec.old_pid != 0 && exec.old_pid != context.pid {
                    self.processes.remove(&exec.old_pid);
                }
            }
            SecurityEvent::Exit(_) => {
                let info = self
                    .processes
                    .entry(context.pid)
                    .or_insert_with(|| ProcessInfo::from_context(context));
                info.exited_unix_nano = Some(context.time_unix_nano);
            }
            _ => {
                let info = self
                    .processes
                    .entry(context.pid)
                    .or_insert_with(|| ProcessInfo::from_context(context));
                info.uid = context.uid;
                info.euid = context.euid;
                info.gid = context.gid;
                if info.container_id.is_none() {
                    info.container_id = context.container_id.clone();
                }
                if info.service_name.is_none() {
                    info.service_name = context.service_name.clone();
                }
            }
        }
    }

    /// The parent, grandparent, … of `pid`, nearest first, as far as they are known.
    pub fn ancestors(&self, pid: u32) -> Vec<&ProcessInfo> {
        let mut out = Vec::new();
        let mut next = self.processes.get(&pid).map(|p| p.ppid);
        while let Some(ppid) = next {
            if ppid == 0 || ppid == pid || out.len() >= MAX_ANCESTRY {
                break;
            }
            let Some(parent) = self.processes.get(&ppid) else {
                break;
            };
            if out.iter().any(|p: &&ProcessInfo| p.pid == ppid) {
                break;
            }
            out.push(parent);
            next = Some(parent.ppid);
        }
        out
    }

    /// Forgets processes that exited more than the grace period before `now`.
    pub fn expire(&mut self, now_unix_nano: u64) {
        let grace = self.exit_grace_ns;
        self.processes.retain(|_, p| match p.exited_unix_nano {
            Some(t) => now_unix_nano.saturating_sub(t) <= grace,
            None => true,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{exec, exit};

    #[test]
    fn ancestry_follows_exec_events_and_exited_processes_expire() {
        let mut table = ProcessTable::new(10);
        table.observe(&exec(100, 1, 1, "/usr/sbin/nginx", 0));
        table.observe(&exec(200, 100, 1, "/bin/sh", 33));
        table.observe(&exec(300, 200, 2, "/usr/bin/curl", 33));
        let chain: Vec<_> = table
            .ancestors(300)
            .iter()
            .map(|p| p.exe_name().to_string())
            .collect();
        assert_eq!(chain, ["sh", "nginx"]);
        table.observe(&exit(300, 200, 5));
        table.expire(10);
        assert!(table.get(300).is_some(), "kept during the grace period");
        table.expire(16);
        assert!(table.get(300).is_none());
        assert!(table.get(200).is_some());
    }
}
