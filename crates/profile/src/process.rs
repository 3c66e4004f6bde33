//! What is known about a process, read from `/proc` the first time one of its samples is seen,
//! so that a process that exits soon after still has a name, a service and symbols.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// A process as first seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    /// The thread name from the sample (`comm`).
    pub comm: String,
    /// `/proc/<pid>/exe`, as the process sees it (inside its container).
    pub exe: Option<PathBuf>,
    pub cmdline: Vec<String>,
    /// The container runtime's id, from the cgroup path (Docker, containerd, CRI-O, Podman).
    pub container_id: Option<String>,
    /// `OTEL_SERVICE_NAME`, or `service.name` in `OTEL_RESOURCE_ATTRIBUTES`, when readable.
    pub service_name: Option<String>,
    /// Executable mappings at first sight (refreshed when an address falls outside them).
    pub mappings: Arc<[Mapping]>,
    /// `/proc` could not be read: the process had exited, or was not visible.
    pub gone_at_first_sight: bool,
}

/// One executable mapping of `/proc/<pid>/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// File offset of `start`.
    pub offset: u64,
    /// `major:minor` as written in maps, and inode: identify the file across mount namespaces.
    pub device: (u32, u32),
    pub inode: u64,
    /// File path, or a pseudo-name (`[vdso]`, `[anon]`…) for anonymous memory.
    pub path: String,
}

impl Mapping {
    pub fn is_file(&self) -> bool {
        self.inode != 0 && self.path.starts_with('/')
    }
}

pub(crate) struct ProcessTable {
    root: PathBuf,
    processes: HashMap<u32, Entry>,
    next_generation: u64,
}

struct Entry {
    info: Arc<ProcessInfo>,
    /// Changes whenever `info` is replaced (another process under the pid, new mappings): what
    /// was derived from the old one must not be reused.
    generation: u64,
    /// Start time of the process (`/proc/<pid>/stat`, clock ticks since boot) at first sight.
    start_time: Option<u64>,
    /// Other thread names seen for this same process.
    thread_names: Vec<String>,
    last_seen: Instant,
    maps_refreshed: Instant,
}

/// Thread names remembered per process; beyond this a new name costs a `/proc` check per
/// sample again (threads named by number, say), which is still right, only slower.
const MAX_THREAD_NAMES: usize = 64;

impl ProcessTable {
    /// `root` is the proc filesystem (`/proc`); tests point it elsewhere.
    pub(crate) fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            processes: HashMap::new(),
            next_generation: 1,
        }
    }

    /// The process, read from `/proc` on first sight, and its generation. `comm` is the name of
    /// the sampled thread: a name not seen before for this pid is either another thread of the
    /// same process or a new process under a reused pid (or an exec); the process's start time
    /// and executable tell which, and only a new process is read again.
    pub(crate) fn observe(&mut self, pid: u32, comm: &str) -> (Arc<ProcessInfo>, u64) {
        let now = Instant::now();
        let dir = self.root.join(pid.to_string());
        if let Some(entry) = self.processes.get_mut(&pid) {
            let known = comm.is_empty()
                || entry.info.comm == comm
                || entry.thread_names.iter().any(|n| n == comm);
            let same_process = known || {
                let same = entry.start_time.is_some()
                    && read_start_time(&dir) == entry.start_time
                    && std::fs::read_link(dir.join("exe")).ok() == entry.info.exe;
                if same && entry.thread_names.len() < MAX_THREAD_NAMES {
                    entry.thread_names.push(comm.to_string());
                }
                same
            };
            if same_process {
                entry.last_seen = now;
                return (entry.info.clone(), entry.generation);
            }
        }
        let start_time = read_start_time(&dir);
        let info = Arc::new(read_process(&self.root, pid, comm));
        let generation = self.next_generation;
        self.next_generation += 1;
        self.processes.insert(
            pid,
            Entry {
                info: info.clone(),
                generation,
                start_time,
                thread_names: Vec::new(),
                last_seen: now,
                maps_refreshed: now,
            },
        );
        (info, generation)
    }

    /// Re-reads the mappings of a live process (a library was loaded after first sight), at most
    /// once a second per process. Returns the new info when something was re-read.
    pub(crate) fn refresh_mappings(&mut self, pid: u32) -> Option<Arc<ProcessInfo>> {
        let entry = self.processes.get_mut(&pid)?;
        if entry.maps_refreshed.elapsed().as_secs() < 1 {
            return None;
        }
        entry.maps_refreshed = Instant::now();
        let mappings = read_mappings(&self.root.join(pid.to_string()).join("maps"))?;
        let mut info = (*entry.info).clone();
        info.mappings = mappings.into();
        entry.info = Arc::new(info);
        entry.generation = self.next_generation;
        self.next_generation += 1;
        Some(entry.info.clone())
    }

    /// Whether `generation` is still what is known of `pid`.
    pub(crate) fn is_current(&self, pid: u32, generation: u64) -> bool {
        self.processes
            .get(&pid)
            .is_some_and(|e| e.generation == generation)
    }

    /// Forgets processes not seen for `idle`.
    pub(crate) fn forget_idle(&mut self, idle: std::time::Duration) {
        self.processes.retain(|_, e| e.last_seen.elapsed() < idle);
    }

    pub(crate) fn len(&self) -> usize {
        self.processes.len()
    }
}

fn read_process(root: &Path, pid: u32, comm: &str) -> ProcessInfo {
    let dir = root.join(pid.to_string());
    let mappings = read_mappings(&dir.join("maps"));
    let environ = std::fs::read(dir.join("environ")).ok();
    ProcessInfo {
        pid,
        comm: comm.to_string(),
        exe: std::fs::read_link(dir.join("exe")).ok(),
        cmdline: std::fs::read(dir.join("cmdline"))
            .map(|raw| split_nul(&raw))
            .unwrap_or_default(),
        container_id: std::fs::read_to_string(dir.join("cgroup"))
            .ok()
            .and_then(|text| container_id(&text)),
        service_name: environ.and_then(|raw| service_name(&split_nul(&raw))),
        gone_at_first_sight: mappings.is_none(),
        mappings: mappings.unwrap_or_default().into(),
    }
}

/// Field 22 of `/proc/<pid>/stat`: when the process started, in clock ticks since boot. With
/// the pid it identifies a process.
fn read_start_time(dir: &Path) -> Option<u64> {
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    // After the parenthesised command name (which may hold spaces) come fields 3, 4, …
    let rest = stat.rsplit_once(')')?.1;
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

fn split_nul(raw: &[u8]) -> Vec<String> {
    raw.split(|&b| b == 0)
        .filter(|part| !part.is_empty())
        .map(|part| String::from_utf8_lossy(part).into_owned())
        .collect()
}

/// Executable mappings from a `/proc/<pid>/maps` file.
pub(crate) fn read_mappings(path: &Path) -> Option<Vec<Mapping>> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(text.lines().filter_map(parse_mapping).collect())
}

/// `start-end perms offset major:minor inode path` — only executable ones.
fn parse_mapping(line: &str) -> Option<Mapping> {
    let mut fields = line.split_ascii_whitespace();
    let range = fields.next()?;
    let perms = fields.next()?;
    let offset = fields.next()?;
    let device = fields.next()?;
    let inode = fields.next()?;
    let path = fields.collect::<Vec<_>>().join(" ");
    if perms.as_bytes().get(2) != Some(&b'x') {
        return None;
    }
    let (start, end) = range.split_once('-')?;
    let (major, minor) = device.split_once(':')?;
    Some(Mapping {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        offset: u64::from_str_radix(offset, 16).ok()?,
        device: (
            u32::from_str_radix(major, 16).ok()?,
            u32::from_str_radix(minor, 16).ok()?,
        ),
        inode: inode.parse().ok()?,
        path: if path.is_empty() {
            "[anon]".to_string()
        } else {
            path
        },
    })
}

/// The container id in a `/proc/<pid>/cgroup` file: the 64-hex-digit id that Docker,
/// containerd, CRI-O and Podman put in the cgroup path (`docker-<id>.scope`,
/// `cri-containerd-<id>.scope`, `crio-<id>`, `/docker/<id>`, `libpod-<id>`).
pub fn container_id(cgroup: &str) -> Option<String> {
    for line in cgroup.lines() {
        let path = line.splitn(3, ':').nth(2).unwrap_or(line);
        for component in path.rsplit('/') {
            let name = component.strip_suffix(".scope").unwrap_or(component);
            let candidate = name.rsplit(['-', ':']).next().unwrap_or(name);
            if candidate.len() == 64 && candidate.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Some(candidate.to_ascii_lowercase());
            }
        }
    }
    None
}

/// `OTEL_SERVICE_NAME`, else `service.name` from `OTEL_RESOURCE_ATTRIBUTES` (the SDKs' order).
pub fn service_name(environ: &[String]) -> Option<String> {
    let var = |name: &str| {
        environ
            .iter()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
    };
    if let Some(name) = var("OTEL_SERVICE_NAME").filter(|n| !n.is_empty()) {
        return Some(name.to_string());
    }
    var("OTEL_RESOURCE_ATTRIBUTES")?
        .split(',')
        .find_map(|kv| kv.trim().strip_prefix("service.name="))
        .filter(|n| !n.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executable_mappings_are_parsed_and_others_skipped() {
        let maps = "\
55d0a1a00000-55d0a1a01000 r--p 00000000 fd:01 1234 /usr/bin/app
55d0a1a01000-55d0a1a05000 r-xp 00001000 fd:01 1234 /usr/bin/app
7f0000000000-7f0000001000 r-xp 00000000 00:00 0 
7ffd1000-7ffd3000 r-xp 00000000 00:00 0 [vdso]
7f1000000000-7f1000002000 r-xp 00002000 08:02 99 /opt/my app/lib.so";
        let parsed: Vec<_> = maps.lines().filter_map(parse_mapping).collect();
        assert_eq!(parsed.len(), 4);
        assert_eq!(parsed[0].start, 0x55d0a1a01000);
        assert_eq!(parsed[0].offset, 0x1000);
        assert_eq!(parsed[0].device, (0xfd, 1));
        assert!(parsed[0].is_file());
        assert_eq!(parsed[1].path, "[anon]");
        assert!(!parsed[1].is_file());
        assert_eq!(parsed[2].path, "[vdso]");
        assert_eq!(parsed[3].path, "/opt/my app/lib.so");
    }

    fn fake_process(root: &Path, pid: u32, start_time: u64) {
        let dir = root.join(pid.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("stat"),
            format!("{pid} (my app) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 4 0 {start_time} 0 0"),
        )
        .unwrap();
        std::fs::write(
            dir.join("maps"),
            "55d0a1a01000-55d0a1a05000 r-xp 00001000 fd:01 1234 /usr/bin/app\n",
        )
        .unwrap();
    }

    #[test]
    fn other_threads_of_a_process_are_the_same_process_and_a_reused_pid_is_not() {
        let root = tempfile::tempdir().unwrap();
        fake_process(root.path(), 42, 1000);
        assert_eq!(read_start_time(&root.path().join("42")), Some(1000));
        let mut table = ProcessTable::new(root.path());
        let (first, generation) = table.observe(42, "app");
        assert_eq!(first.comm, "app");
        // A worker thread with its own name: same process, nothing re-read.
        let (worker, same) = table.observe(42, "app-worker");
        assert_eq!((worker.comm.as_str(), same), ("app", generation));
        assert!(Arc::ptr_eq(&first, &worker));
        assert_eq!(table.observe(42, "app-worker").1, generation);
        // The pid now belongs to a process that started later.
        fake_process(root.path(), 42, 2000);
        let (other, newer) = table.observe(42, "other");
        assert_eq!(other.comm, "other");
        assert_ne!(newer, generation);
        assert!(table.is_current(42, newer) && !table.is_current(42, generation));
    }

    #[test]
    fn container_ids_come_from_the_runtimes_cgroup_names() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        for cgroup in [
            format!("0::/system.slice/docker-{id}.scope"),
            format!("0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-{id}.scope"),
            format!("12:memory:/docker/{id}"),
            format!("0::/kubepods/besteffort/pod1/crio-{id}"),
        ] {
            assert_eq!(container_id(&cgroup).as_deref(), Some(id), "{cgroup}");
        }
        assert_eq!(
            container_id("0::/user.slice/user-0.slice/session-1.scope"),
            None
        );
    }

    #[test]
    fn service_name_prefers_the_dedicated_variable() {
        let env = |vars: &[&str]| vars.iter().map(|v| v.to_string()).collect::<Vec<_>>();
        assert_eq!(
            service_name(&env(&["A=1", "OTEL_SERVICE_NAME=checkout"])).as_deref(),
            Some("checkout")
        );
        assert_eq!(
            service_name(&env(&["OTEL_RESOURCE_ATTRIBUTES=team=x,service.name=cart"])).as_deref(),
            Some("cart")
        );
        assert_eq!(service_name(&env(&["OTEL_SERVICE_NAMES=no"])), None);
    }
}
