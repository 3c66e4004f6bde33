//! The security sensor: process exec and exit, inet connects and accepts, opens of watched
//! paths, privilege changes, ptrace and module loads as events; syscalls per process and class
//! as counts read from a per-CPU map. Raw tracepoints only (`sched_process_exec`,
//! `sched_process_exit`, `sys_exit`), filtered in the kernel.

mod event;
mod syscall_class;

use std::time::Duration;

use libbpf_rs::{Link, MapCore, MapFlags};

pub use event::{
    ConnectionEvent, EventProcess, ExecEvent, ExitEvent, FileOpenEvent, ModuleLoadEvent,
    PrivilegeChangeEvent, PrivilegeSyscall, Protocol, PtraceEvent, SecurityEvent,
};
pub use syscall_class::SyscallClass;

use crate::counters::{self, ProgramCounters};
use crate::error::{EbpfError, Result};
use crate::loader::{LoadedSkel, validate_maps};
use crate::ring::RecordReader;
use crate::skel::security::{SecuritySkel, SecuritySkelBuilder};
use syscall_class::{CLASS_SLOTS, class_table};

/// The longest watched prefix (the LPM key's data size, less the NUL).
pub const MAX_PREFIX_BYTES: usize = 255;
/// The most argument bytes an exec event can carry.
pub const MAX_ARGV_BYTES: u32 = 1024;
const LPM_DATA_BYTES: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityConfig {
    /// Opens of paths starting with one of these are reported. `~/` stands for every home
    /// directory in `/etc/passwd` (and `/root/`).
    pub watched_prefixes: Vec<String>,
    /// Bytes of the arguments an exec event carries, at most [`MAX_ARGV_BYTES`].
    pub argv_bytes: u32,
    /// Leave out the events and syscalls of this process itself (the agent's own file reads).
    pub ignore_self: bool,
    /// Ring buffer size in bytes (power of two, page multiple); an exec event takes 1.9 KB,
    /// the others 72–336 bytes.
    pub ring_buffer_bytes: u32,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            watched_prefixes: default_watched_prefixes(),
            argv_bytes: 512,
            ignore_self: true,
            ring_buffer_bytes: 4 * 1024 * 1024,
        }
    }
}

/// Credentials and keys an intruder reads first.
pub fn default_watched_prefixes() -> Vec<String> {
    [
        "/etc/shadow",
        "/etc/gshadow",
        "/etc/sudoers",
        "/etc/ssh/ssh_host_",
        "/etc/kubernetes/",
        "/var/run/secrets/kubernetes.io/",
        "/run/secrets/kubernetes.io/",
        "~/.ssh/",
        "~/.aws/",
        "~/.config/gcloud/",
        "~/.azure/",
        "~/.kube/config",
        "~/.docker/config.json",
        "~/.gnupg/",
        "~/.netrc",
        "~/.git-credentials",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// The home directories `~/` expands to: those of `/etc/passwd` that exist, and `/root`.
fn home_directories() -> Vec<String> {
    let mut homes = vec!["/root".to_string()];
    if let Ok(passwd) = std::fs::read_to_string("/etc/passwd") {
        for line in passwd.lines() {
            if let Some(home) = line.split(':').nth(5)
                && home.len() > 1
                && !homes.iter().any(|h| h == home)
                && std::path::Path::new(home).is_dir()
            {
                homes.push(home.to_string());
            }
        }
    }
    homes
}

fn expand_prefixes(prefixes: &[String]) -> Result<Vec<String>> {
    let mut homes = None;
    let mut out = Vec::new();
    for prefix in prefixes {
        if let Some(rest) = prefix.strip_prefix("~/") {
            for home in homes.get_or_insert_with(home_directories).iter() {
                out.push(format!("{}/{rest}", home.trim_end_matches('/')));
            }
        } else {
            out.push(prefix.clone());
        }
    }
    for prefix in &out {
        lpm_key(prefix)?;
    }
    Ok(out)
}

/// A file or directory by identity, as the kernel sees it: `s_dev` (major << 20 | minor) and
/// the inode number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InodeKey {
    ino: u64,
    dev: u32,
}

/// Bits in the kernel's filter over the watched inodes (`watched_inode_filter`).
const INODE_FILTER_BITS: usize = 4096;

impl InodeKey {
    /// The key's bit in `watched_inode_filter`; the same hash as `inode_bit` in security.bpf.c.
    fn filter_bit(&self) -> usize {
        ((self.ino ^ (u64::from(self.dev) << 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 52)
            as usize
    }

    fn bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.ino.to_ne_bytes());
        b[8..12].copy_from_slice(&self.dev.to_ne_bytes());
        b
    }
}

/// What a watched path names now, if it exists (symbolic links followed).
fn inode_key(path: &str) -> Option<InodeKey> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    let dev = m.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    Some(InodeKey {
        ino: m.ino(),
        dev: (major << 20) | (minor & 0xfffff),
    })
}

/// The kernel's `NAME_BYTES`: names of watched files up to one less are matched by name too.
const NAME_BYTES: usize = 64;
type NameKey = [u8; 16 + NAME_BYTES];

/// A watched file by its directory's identity and its name: what the kernel looks up for a
/// relative open that failed (and so opened nothing whose inode could be checked). `None` when
/// the directory does not exist or the name is too long.
fn name_key(path: &str) -> Option<NameKey> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::path::Path::new(path.trim_end_matches('/'));
    let name = p.file_name()?.as_bytes();
    if name.is_empty() || name.len() >= NAME_BYTES {
        return None;
    }
    let dir = inode_key(p.parent()?.to_str()?)?;
    let mut key = [0u8; 16 + NAME_BYTES];
    key[..16].copy_from_slice(&dir.bytes());
    key[16..16 + name.len()].copy_from_slice(name);
    Some(key)
}

/// The LPM-trie key of a prefix: its length in bits, then its bytes.
fn lpm_key(prefix: &str) -> Result<Vec<u8>> {
    if !prefix.starts_with('/') {
        return Err(EbpfError::Config(format!(
            "a watched prefix must be an absolute path (or start with ~/), found {prefix:?}"
        )));
    }
    if prefix.len() > MAX_PREFIX_BYTES {
        return Err(EbpfError::Config(format!(
            "a watched prefix must be at most {MAX_PREFIX_BYTES} bytes, found {} in {prefix:?}",
            prefix.len()
        )));
    }
    let mut key = Vec::with_capacity(4 + LPM_DATA_BYTES);
    key.extend_from_slice(&((prefix.len() * 8) as u32).to_ne_bytes());
    key.extend_from_slice(prefix.as_bytes());
    key.resize(4 + LPM_DATA_BYTES, 0);
    Ok(key)
}

/// Syscalls one process made since it was first seen, by class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSyscallCounts {
    pub pid: u32,
    /// Indexed by `SyscallClass as usize`.
    pub counts: [u64; CLASS_SLOTS],
    /// The process has exited (its exit event was drained); its entry is now deleted.
    pub exited: bool,
}

impl ProcessSyscallCounts {
    pub fn get(&self, class: SyscallClass) -> u64 {
        self.counts[class as usize]
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// A running security sensor. Dropping it detaches the programs.
pub struct SecuritySensor {
    /// Held for their drop, which detaches the programs.
    _links: Vec<Link>,
    reader: RecordReader<event::Record>,
    /// Final counts of processes whose exit was drained, reported once by `syscall_counts`.
    exited: Vec<ProcessSyscallCounts>,
    ignore_self: bool,
    /// Watched paths and the inode each stood for when last checked (`None`: does not exist).
    watched: std::sync::Mutex<std::collections::BTreeMap<String, Option<InodeKey>>>,
    /// Watched paths and their directory-and-name key when last checked.
    names: std::sync::Mutex<std::collections::BTreeMap<String, Option<NameKey>>>,
    inodes_checked: std::time::Instant,
    skel: LoadedSkel<SecuritySkel<'static>>,
}

impl SecuritySensor {
    pub fn start(config: SecurityConfig) -> Result<Self> {
        validate_maps(1, config.ring_buffer_bytes)?;
        if config.argv_bytes > MAX_ARGV_BYTES {
            return Err(EbpfError::Config(format!(
                "argv_bytes must be at most {MAX_ARGV_BYTES}, found {}",
                config.argv_bytes
            )));
        }
        let prefixes = expand_prefixes(&config.watched_prefixes)?;
        let skel = LoadedSkel::load("security", SecuritySkelBuilder::default(), |open| {
            let size = |what| move |source| EbpfError::Map { what, source };
            open.maps
                .events
                .set_max_entries(config.ring_buffer_bytes)
                .map_err(size("sizing the ring buffer"))?;
            let rodata = open.maps.rodata_data.as_deref_mut().ok_or_else(|| {
                EbpfError::Config("the security object's .rodata is not memory-mapped".into())
            })?;
            rodata.ignore_tgid = if config.ignore_self {
                std::process::id()
            } else {
                0
            };
            rodata.argv_bytes = config.argv_bytes;
            rodata.syscall_class = class_table();
            Ok(())
        })?;
        let sensor_links = |skel: &LoadedSkel<SecuritySkel<'static>>| -> Result<Vec<Link>> {
            let attach = |program: &'static str, tracepoint: &str, prog: &libbpf_rs::ProgramMut| {
                prog.attach_raw_tracepoint(tracepoint)
                    .map_err(|source| EbpfError::Attach { program, source })
            };
            Ok(vec![
                attach(
                    "on_exec (raw tracepoint sched_process_exec)",
                    "sched_process_exec",
                    &skel.progs.on_exec,
                )?,
                attach(
                    "on_exit (raw tracepoint sched_process_exit)",
                    "sched_process_exit",
                    &skel.progs.on_exit,
                )?,
                attach(
                    "on_sys_exit (raw tracepoint sys_exit)",
                    "sys_exit",
                    &skel.progs.on_sys_exit,
                )?,
            ])
        };
        let sensor = Self {
            reader: RecordReader::new(&skel.maps.events, event::parse_record)?,
            _links: sensor_links(&skel)?,
            exited: Vec::new(),
            ignore_self: config.ignore_self,
            watched: Default::default(),
            names: Default::default(),
            inodes_checked: std::time::Instant::now(),
            skel,
        };
        for prefix in &prefixes {
            sensor.watch_expanded(prefix)?;
        }
        Ok(sensor)
    }

    /// Starts reporting opens under `prefix` (absolute, or `~/…` for every home directory).
    pub fn watch_prefix(&self, prefix: &str) -> Result<()> {
        for prefix in expand_prefixes(&[prefix.to_string()])? {
            self.watch_expanded(&prefix)?;
        }
        Ok(())
    }

    /// Stops reporting opens under `prefix`, added by the config or [`Self::watch_prefix`].
    pub fn unwatch_prefix(&self, prefix: &str) -> Result<()> {
        for prefix in expand_prefixes(&[prefix.to_string()])? {
            let old = self.watched_paths().remove(&prefix).flatten();
            if let Some(old) = old {
                self.forget_inode(old);
            }
            let old_name = self.watched_names().remove(&prefix).flatten();
            if let Some(old) = old_name {
                self.forget_name(old);
            }
            self.skel
                .maps
                .watched_prefixes
                .delete(&lpm_key(&prefix)?)
                .map_err(|source| EbpfError::Map {
                    what: "removing a watched prefix",
                    source,
                })?;
        }
        Ok(())
    }

    fn watch_expanded(&self, prefix: &str) -> Result<()> {
        self.skel
            .maps
            .watched_prefixes
            .update(&lpm_key(prefix)?, &[1], MapFlags::ANY)
            .map_err(|source| EbpfError::Map {
                what: "adding a watched prefix (at most 1024)",
                source,
            })?;
        self.watched_paths().insert(prefix.to_string(), None);
        self.check_inode(prefix)
    }

    fn watched_paths(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, Option<InodeKey>>> {
        self.watched.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn watched_names(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, Option<NameKey>>> {
        self.names.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn forget_name(&self, key: NameKey) {
        if self.watched_names().values().any(|v| *v == Some(key)) {
            return;
        }
        let _ = self.skel.maps.watched_names.delete(&key);
    }

    /// Points the watched-name map at `prefix`'s directory and name as they are now.
    fn check_name(&self, prefix: &str) -> Result<()> {
        let now = name_key(prefix);
        let before = self
            .watched_names()
            .insert(prefix.to_string(), now)
            .flatten();
        if before == now {
            return Ok(());
        }
        if let Some(old) = before {
            self.forget_name(old);
        }
        if let Some(key) = now {
            self.skel
                .maps
                .watched_names
                .update(&key, &[1], MapFlags::ANY)
                .map_err(|source| EbpfError::Map {
                    what: "adding a watched name (at most 4096)",
                    source,
                })?;
        }
        Ok(())
    }

    /// Points the watched-inode map at what `prefix` names now (a file replaced by rename, such
    /// as /etc/shadow after passwd, is a new inode; a file created later is watched from then).
    fn check_inode(&self, prefix: &str) -> Result<()> {
        let now = inode_key(prefix);
        let before = self
            .watched_paths()
            .get_mut(prefix)
            .map(|slot| std::mem::replace(slot, now));
        let Some(before) = before else {
            return Ok(()); // unwatched meanwhile
        };
        self.check_name(prefix)?;
        if before == now {
            return Ok(());
        }
        if let Some(old) = before {
            self.forget_inode(old);
        }
        if let Some(key) = now {
            // The filter first: a set bit with no key only costs a lookup, a key without its
            // bit would be missed.
            self.publish_inode_filter()?;
            self.skel
                .maps
                .watched_inodes
                .update(&key.bytes(), &[1], MapFlags::ANY)
                .map_err(|source| EbpfError::Map {
                    what: "adding a watched inode (at most 4096)",
                    source,
                })?;
        }
        Ok(())
    }

    fn forget_inode(&self, key: InodeKey) {
        // Another watched path may name the same inode (a hard link, `~/` expanding twice).
        if self.watched_paths().values().any(|v| *v == Some(key)) {
            return;
        }
        let _ = self.skel.maps.watched_inodes.delete(&key.bytes());
        // A stale bit only costs a lookup; rebuilt so that removed keys stop costing one.
        let _ = self.publish_inode_filter();
    }

    /// Rebuilds the kernel's filter over the watched inodes from the watched paths.
    fn publish_inode_filter(&self) -> Result<()> {
        let mut words = [0u64; INODE_FILTER_BITS / 64];
        for key in self.watched_paths().values().flatten() {
            let bit = key.filter_bit();
            words[bit / 64] |= 1 << (bit % 64);
        }
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        self.skel
            .maps
            .watched_inode_filter
            .update(&0u32.to_ne_bytes(), &bytes, MapFlags::ANY)
            .map_err(|source| EbpfError::Map {
                what: "writing the watched-inode filter",
                source,
            })
    }

    /// Re-checks every watched path's inode at most every few seconds (called from `drain`).
    fn refresh_inodes(&mut self) -> Result<()> {
        if self.inodes_checked.elapsed() < Duration::from_secs(5) {
            return Ok(());
        }
        self.inodes_checked = std::time::Instant::now();
        let paths: Vec<String> = self.watched_paths().keys().cloned().collect();
        for p in paths {
            self.check_inode(&p)?;
        }
        Ok(())
    }

    /// Waits up to `timeout` until at least one event is ready.
    pub fn wait(&self, timeout: Duration) -> Result<()> {
        self.reader.wait(timeout)
    }

    /// Every event since the last drain, in the order each CPU produced them.
    pub fn drain(&mut self) -> Result<Vec<SecurityEvent>> {
        self.refresh_inodes()?;
        let records = self.reader.drain()?;
        let mut events = Vec::with_capacity(records.len());
        for record in records {
            if let (SecurityEvent::Exit(exit), Some(counts)) = (&record.event, record.final_counts)
                && counts.iter().any(|c| *c > 0)
            {
                self.exited.push(ProcessSyscallCounts {
                    pid: exit.process.pid,
                    counts,
                    exited: true,
                });
            }
            events.push(record.event);
        }
        Ok(events)
    }

    /// Syscalls per process and class since the sensor first saw each process: every live
    /// process (read by pidfd), then the final counts of processes whose exit has been drained
    /// since the last call, reported once with `exited: true`.
    pub fn syscall_counts(&mut self) -> Result<Vec<ProcessSyscallCounts>> {
        let map = &self.skel.maps.syscall_counts;
        let me = std::process::id();
        let mut out = Vec::new();
        let proc_dir = std::fs::read_dir("/proc").map_err(|e| {
            EbpfError::Config(format!("cannot list /proc for the syscall counts: {e}"))
        })?;
        for entry in proc_dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if self.ignore_self && pid == me {
                continue;
            }
            // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
            if fd < 0 {
                continue; // exited meanwhile
            }
            let fd = fd as i32;
            let value = map.lookup(&fd.to_ne_bytes(), MapFlags::ANY);
            // SAFETY: closing the descriptor opened above.
            unsafe { libc::close(fd) };
            // No slot: no syscall since the sensor started; an error: exited meanwhile.
            let Ok(Some(bytes)) = value else {
                continue;
            };
            let mut counts = [0u64; CLASS_SLOTS];
            for (slot, chunk) in counts.iter_mut().zip(bytes.chunks_exact(8)) {
                let mut b = [0u8; 8];
                b.copy_from_slice(chunk);
                *slot = u64::from_ne_bytes(b);
            }
            out.push(ProcessSyscallCounts {
                pid,
                counts,
                exited: false,
            });
        }
        // An exited process not yet reaped still has its slot: report it as exited only.
        out.retain(|live| !self.exited.iter().any(|gone| gone.pid == live.pid));
        out.append(&mut self.exited);
        Ok(out)
    }

    pub fn counters(&self) -> Result<ProgramCounters> {
        let per_cpu = counters::read_per_cpu(&self.skel.maps.counters)?;
        Ok(ProgramCounters {
            kernel: counters::sum(&per_cpu),
            per_cpu,
            stacks_expired: 0,
            malformed_records: self.reader.malformed(),
        })
    }

    /// What each program has cost so far. Run counts and times stay 0 unless
    /// `kernel.bpf_stats_enabled` is 1 (the kernel times programs only then).
    pub fn program_stats(&self) -> Result<Vec<ProgramStats>> {
        let stats = crate::program_stats::read;
        Ok(vec![
            stats("on_exec", &self.skel.progs.on_exec)?,
            stats("on_exit", &self.skel.progs.on_exit)?,
            stats("on_sys_exit", &self.skel.progs.on_sys_exit)?,
        ])
    }
}

/// Run statistics of one BPF program, as the kernel keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramStats {
    pub program: &'static str,
    /// The kernel's program id (`bpftool prog show id …`).
    pub id: u32,
    pub run_count: u64,
    pub run_time_ns: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_must_be_absolute_and_fit_the_key() {
        assert_eq!(lpm_key("/etc/shadow").expect("valid").len(), 260);
        assert_eq!(
            lpm_key("etc/shadow").expect_err("relative").to_string(),
            "invalid configuration: a watched prefix must be an absolute path (or start with ~/), found \"etc/shadow\""
        );
        let long = format!("/{}", "a".repeat(300));
        assert!(
            lpm_key(&long)
                .expect_err("too long")
                .to_string()
                .contains("at most 255 bytes, found 301")
        );
    }

    #[test]
    fn home_prefixes_expand_to_every_home() {
        let expanded = expand_prefixes(&["~/.ssh/".to_string(), "/etc/shadow".to_string()])
            .expect("valid prefixes");
        assert!(
            expanded.contains(&"/root/.ssh/".to_string()),
            "{expanded:?}"
        );
        assert_eq!(expanded.last().map(String::as_str), Some("/etc/shadow"));
    }
}
