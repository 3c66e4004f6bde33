//! Addresses to frames, with blazesym: ELF symbols and DWARF (when present, including inlined
//! functions) for user code, kallsyms for the kernel, perf maps for JIT code.
//!
//! Each unique address is resolved once: user addresses are cached by (build id, file offset) —
//! the same library in a hundred processes is one set of entries — kernel addresses by address.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use blazesym::symbolize::source::{Elf, Kernel, Source};
use blazesym::symbolize::{Input, Sym, Symbolized};

use crate::frame::{Frame, FrameKind, Stack, StackId};
use crate::perf_map::PerfMap;
use crate::process::{Mapping, ProcessInfo, ProcessTable};

/// A stack as a sampler gives it: addresses, leaf first.
#[derive(Debug, Clone, Copy)]
pub struct RawStack<'a> {
    pub pid: u32,
    /// Thread name at sample time; a change tells a reused pid from a known one.
    pub comm: &'a str,
    pub user: &'a [u64],
    /// The sampler already knows the user stack is incomplete (depth limit, stack lost).
    pub user_cut_short: bool,
    pub kernel: &'a [u64],
}

/// How well symbolization is going; all counts since creation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SymbolizerStats {
    pub user_addresses: u64,
    /// Addresses handed to blazesym (cache misses).
    pub user_resolved: u64,
    pub kernel_addresses: u64,
    pub kernel_resolved: u64,
    /// Addresses in no known mapping and no perf map.
    pub unmapped: u64,
    pub processes: u64,
}

/// Identifies one ELF file for caching: its GNU build id, or its device and inode when it has
/// none.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum FileKey {
    BuildId(Box<[u8]>),
    Inode { device: (u32, u32), inode: u64 },
}

struct OpenedFile {
    key: FileKey,
    /// The path blazesym reads: the host path when it is the same file, else through
    /// `/proc/<pid>/root` (containers) or `/proc/<pid>/map_files` (deleted files).
    path: PathBuf,
    /// Whether DWARF is read for this file (see [`DWARF_MAX_FILE_BYTES`]).
    debug_syms: bool,
}

/// Files larger than this are symbolized from their ELF symbol table only. DWARF gives file:line
/// and inlined functions, but blazesym maps what it parses: for a 500 MiB binary with debug
/// info that took the agent's resident memory past 400 MiB. Separate debug files
/// (`/usr/lib/debug`) are small and still read.
const DWARF_MAX_FILE_BYTES: u64 = 128 << 20;

pub struct Symbolizer {
    blazesym: blazesym::symbolize::Symbolizer,
    processes: ProcessTable,
    proc_root: PathBuf,
    /// Where JITs write `perf-<pid>.map`.
    perf_map_dir: PathBuf,
    /// Keyed by the identity maps gives (device, inode); the build id is read once per file.
    files: HashMap<((u32, u32), u64), Arc<OpenedFile>>,
    user: HashMap<(FileKey, u64), Arc<[Frame]>>,
    kernel: HashMap<u64, Arc<[Frame]>>,
    perf_maps: HashMap<u32, Option<PerfMap>>,
    /// Whole stacks by their addresses, so a stack seen before costs one hash of its addresses.
    raw_stacks: RawStackCache,
    stats: SymbolizerStats,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

/// Frames named like these are where a thread's stack begins: a stack that ends in one is whole.
const ROOT_FUNCTIONS: &[&str] = &[
    "_start",
    "start_thread",
    "thread_start",
    "__thread_start",
    "clone",
    "clone3",
    "__clone",
    "__clone3",
    "__clone_internal",
    "_dl_start_user",
    "runtime.goexit",
    "runtime.goexit.abi0",
    "runtime.mstart",
    "runtime.mstart.abi0",
    "runtime.rt0_go",
    "runtime.rt0_go.abi0",
];

impl Symbolizer {
    pub fn new() -> Self {
        Self::with_proc_root("/proc")
    }

    /// Reads processes from `proc_root` instead of `/proc`.
    pub fn with_proc_root(proc_root: impl Into<PathBuf>) -> Self {
        let proc_root = proc_root.into();
        Self {
            blazesym: blazesym::symbolize::Symbolizer::builder()
                .enable_code_info(true)
                .enable_inlined_fns(true)
                .enable_demangling(true)
                .build(),
            processes: ProcessTable::new(&proc_root),
            proc_root,
            perf_map_dir: PathBuf::from("/tmp"),
            files: HashMap::new(),
            user: HashMap::new(),
            kernel: HashMap::new(),
            perf_maps: HashMap::new(),
            raw_stacks: RawStackCache::default(),
            stats: SymbolizerStats::default(),
        }
    }

    /// The process's metadata, captured from `/proc` the first time its pid is seen. Call it as
    /// soon as a sample arrives so short-lived processes are caught before they exit.
    pub fn observe_process(&mut self, pid: u32, comm: &str) -> Arc<ProcessInfo> {
        self.observe_generation(pid, comm).0
    }

    fn observe_generation(&mut self, pid: u32, comm: &str) -> (Arc<ProcessInfo>, u64) {
        let before = self.processes.len();
        let seen = self.processes.observe(pid, comm);
        if self.processes.len() > before {
            self.stats.processes += 1;
        }
        seen
    }

    /// Drops processes whose samples stopped `idle` ago, their perf maps and their stacks.
    pub fn forget_idle_processes(&mut self, idle: std::time::Duration) {
        self.processes.forget_idle(idle);
        self.perf_maps.clear();
        let processes = &self.processes;
        self.raw_stacks
            .retain(|pid, generation| generation == 0 || processes.is_current(pid, generation));
    }

    /// Like [`Symbolizer::symbolize`], with the stack's id, for callers that see the same
    /// stacks again and again (a sampler does): a stack whose addresses were symbolized before
    /// in the same process (same pid, same mappings) is not symbolized again, and the result is
    /// shared. Stacks with JIT or unmapped addresses are symbolized every time, since a perf map
    /// or the process's mappings may say more later.
    pub fn symbolize_interned(&mut self, raw: &RawStack<'_>) -> (StackId, Arc<Stack>) {
        // Kernel-only stacks do not depend on the process.
        let (pid, generation) = if raw.user.is_empty() {
            (0, 0)
        } else {
            (raw.pid, self.observe_generation(raw.pid, raw.comm).1)
        };
        let key = RawKey {
            pid,
            generation,
            cut_short: raw.user_cut_short,
            kernel: raw.kernel,
            user: raw.user,
        };
        let hash = key.hash();
        if let Some(hit) = self.raw_stacks.get(hash, &key) {
            self.stats.user_addresses += raw.user.len() as u64;
            self.stats.kernel_addresses += raw.kernel.len() as u64;
            return hit;
        }
        let (stack, stable) = self.symbolize_stack(raw);
        let id = stack.id();
        let stack = Arc::new(stack);
        // Mappings re-read while symbolizing make a new generation: key under that one.
        let generation = if raw.user.is_empty() {
            0
        } else {
            self.observe_generation(raw.pid, raw.comm).1
        };
        if stable {
            self.raw_stacks
                .insert(RawKey { generation, ..key }, (id, stack.clone()));
        }
        (id, stack)
    }

    pub fn stats(&self) -> SymbolizerStats {
        self.stats
    }

    /// Symbolizes a stack: kernel frames then user frames, leaf first, and decides whether it
    /// reaches its root.
    pub fn symbolize(&mut self, raw: &RawStack<'_>) -> Stack {
        self.symbolize_stack(raw).0
    }

    /// The stack, and whether the same addresses in the same process would give it again (no
    /// JIT frame, no address outside the known mappings).
    fn symbolize_stack(&mut self, raw: &RawStack<'_>) -> (Stack, bool) {
        let mut stable = true;
        let mut frames = Vec::with_capacity(raw.kernel.len() + raw.user.len());
        for (depth, &address) in raw.kernel.iter().enumerate() {
            frames.extend(
                self.kernel_frames(return_address_adjusted(address, depth))
                    .iter()
                    .cloned(),
            );
        }
        let mut reaches_root = raw.user.is_empty() && !raw.kernel.is_empty();
        if !raw.user.is_empty() {
            let process = self.observe_process(raw.pid, raw.comm);
            let mut outermost = None;
            for (depth, &address) in raw.user.iter().enumerate() {
                let resolved = self.user_frames(&process, return_address_adjusted(address, depth));
                stable &= resolved.stable;
                frames.extend(resolved.frames.iter().cloned());
                outermost = Some(resolved);
            }
            reaches_root = outermost.is_some_and(|o| o.is_root(raw.user.len()));
        }
        let stack = Stack {
            frames,
            truncated: raw.user_cut_short || !reaches_root,
        };
        (stack, stable)
    }

    /// Loads the kernel's symbols now instead of at the first kernel frame, so that one-time
    /// cost falls at start-up rather than in whatever the host is busy with when the first
    /// kernel sample comes. Returns whether a kernel address could be resolved.
    pub fn load_kernel_symbols(&mut self) -> bool {
        use std::io::BufRead;
        let Ok(file) = std::fs::File::open(self.proc_root.join("kallsyms")) else {
            return false;
        };
        // The first symbol with an address (all read as 0 without the right to see them).
        let address = std::io::BufReader::new(file)
            .lines()
            .take(64)
            .find_map(|l| {
                let l = l.ok()?;
                let a = u64::from_str_radix(l.split_whitespace().next()?, 16).ok()?;
                (a != 0).then_some(a)
            });
        address.is_some_and(|a| {
            self.kernel_frames(a)
                .first()
                .is_some_and(|f| &*f.function != "[unknown]")
        })
    }

    fn kernel_frames(&mut self, address: u64) -> Arc<[Frame]> {
        self.stats.kernel_addresses += 1;
        if let Some(frames) = self.kernel.get(&address) {
            return frames.clone();
        }
        self.stats.kernel_resolved += 1;
        let source = Source::Kernel(Kernel::default());
        let frames: Arc<[Frame]> = match self
            .blazesym
            .symbolize_single(&source, Input::AbsAddr(address))
        {
            Ok(Symbolized::Sym(sym)) => {
                let module = sym
                    .module
                    .as_deref()
                    .map(|m| m.to_string_lossy().into_owned())
                    .filter(|m| !m.is_empty() && !m.starts_with('/'))
                    .map(|m| format!("[{}]", m.trim_matches(['[', ']'])))
                    .unwrap_or_else(|| "[kernel]".to_string());
                sym_frames(&sym, FrameKind::Kernel, &module).into()
            }
            _ => Arc::from(vec![Frame::new(FrameKind::Kernel, "[unknown]", "[kernel]")]),
        };
        self.kernel.insert(address, frames.clone());
        frames
    }

    fn user_frames(&mut self, process: &Arc<ProcessInfo>, address: u64) -> Resolved {
        self.stats.user_addresses += 1;
        let mut process = process.clone();
        let mut mapping = find_mapping(&process.mappings, address);
        if mapping.is_none()
            && let Some(fresh) = self.processes.refresh_mappings(process.pid)
        {
            process = fresh;
            mapping = find_mapping(&process.mappings, address);
        }
        let Some(mapping) = mapping else {
            return self.jit_frame(process.pid, address);
        };
        if !mapping.is_file() {
            if mapping.path == "[anon]" {
                return self.jit_frame(process.pid, address);
            }
            return Resolved::unsymbolized(
                Frame::new(FrameKind::User, &mapping.path, &mapping.path),
                &mapping.path,
            );
        }
        let file_offset = address - mapping.start + mapping.offset;
        let file = self.opened_file(process.pid, mapping);
        let key = (file.key.clone(), file_offset);
        if let Some(frames) = self.user.get(&key) {
            return Resolved::cached(frames.clone(), &mapping.path);
        }
        self.stats.user_resolved += 1;
        let mut elf = Elf::new(&file.path);
        elf.debug_syms = file.debug_syms;
        let source = Source::Elf(elf);
        let frames: Arc<[Frame]> = match self
            .blazesym
            .symbolize_single(&source, Input::FileOffset(file_offset))
        {
            Ok(Symbolized::Sym(sym)) => sym_frames(&sym, FrameKind::User, &mapping.path).into(),
            _ => Arc::from(vec![unsymbolized(&mapping.path, file_offset)]),
        };
        self.user.insert(key, frames.clone());
        Resolved::cached(frames, &mapping.path)
    }

    fn jit_frame(&mut self, pid: u32, address: u64) -> Resolved {
        let path = self.perf_map_dir.join(format!("perf-{pid}.map"));
        let stale = match self.perf_maps.get(&pid) {
            Some(Some(map)) => map.is_stale(&path),
            Some(None) => false,
            None => true,
        };
        if stale {
            self.perf_maps.insert(pid, PerfMap::read(&path));
        }
        match self
            .perf_maps
            .get(&pid)
            .and_then(|m| m.as_ref())
            .and_then(|m| m.find(address))
        {
            Some(name) => Resolved {
                stable: false,
                ..Resolved::named(Frame::new(FrameKind::Jit, name, "[jit]"))
            },
            None => {
                self.stats.unmapped += 1;
                Resolved {
                    stable: false,
                    ..Resolved::unsymbolized(
                        Frame::new(FrameKind::User, "[unknown]", "[unknown]"),
                        "[unknown]",
                    )
                }
            }
        }
    }

    fn opened_file(&mut self, pid: u32, mapping: &Mapping) -> Arc<OpenedFile> {
        let identity = (mapping.device, mapping.inode);
        if let Some(file) = self.files.get(&identity) {
            return file.clone();
        }
        let host = PathBuf::from(&mapping.path);
        let same_file = |path: &Path| {
            std::fs::metadata(path)
                .is_ok_and(|m| m.ino() == mapping.inode && decode_dev(m.dev()) == mapping.device)
        };
        let in_root = self
            .proc_root
            .join(pid.to_string())
            .join("root")
            .join(mapping.path.trim_start_matches('/'));
        let map_file = self
            .proc_root
            .join(pid.to_string())
            .join("map_files")
            .join(format!("{:x}-{:x}", mapping.start, mapping.end));
        let path = if same_file(&host) {
            host
        } else if in_root.exists() {
            in_root
        } else if map_file.exists() {
            map_file
        } else {
            host
        };
        let key = match blazesym::helper::read_elf_build_id(&path) {
            Ok(Some(id)) if !id.is_empty() => FileKey::BuildId(id.into_owned().into_boxed_slice()),
            _ => FileKey::Inode {
                device: mapping.device,
                inode: mapping.inode,
            },
        };
        let debug_syms = std::fs::metadata(&path)
            .map(|m| m.len() <= DWARF_MAX_FILE_BYTES)
            .unwrap_or(false);
        let file = Arc::new(OpenedFile {
            key,
            path,
            debug_syms,
        });
        self.files.insert(identity, file.clone());
        file
    }
}

/// A sampled stack's identity before symbolization: the process (pid and the generation of
/// what is known of it) and the addresses.
#[derive(Clone, Copy)]
struct RawKey<'a> {
    pid: u32,
    generation: u64,
    cut_short: bool,
    kernel: &'a [u64],
    user: &'a [u64],
}

impl RawKey<'_> {
    /// FxHash-style mixing: the addresses are already well spread, and this runs per sample.
    fn hash(&self) -> u64 {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut h = 0u64;
        let mut add = |x: u64| h = (h.rotate_left(5) ^ x).wrapping_mul(K);
        add(u64::from(self.pid) | (u64::from(self.cut_short) << 32));
        add(self.generation);
        add(self.kernel.len() as u64);
        for &a in self.kernel.iter().chain(self.user) {
            add(a);
        }
        h
    }
}

struct CachedStack {
    pid: u32,
    generation: u64,
    cut_short: bool,
    kernel_len: usize,
    /// Kernel addresses, then user addresses.
    addresses: Box<[u64]>,
    id: StackId,
    stack: Arc<Stack>,
}

impl CachedStack {
    fn matches(&self, key: &RawKey<'_>) -> bool {
        self.pid == key.pid
            && self.generation == key.generation
            && self.cut_short == key.cut_short
            && self.kernel_len == key.kernel.len()
            && self.addresses[..self.kernel_len] == *key.kernel
            && self.addresses[self.kernel_len..] == *key.user
    }
}

/// Stacks symbolized before, by the hash of their [`RawKey`] (entries with equal hashes share
/// a bucket and are told apart by their addresses). Cleared when it holds
/// [`RawStackCache::MAX_STACKS`], so memory stays bounded whatever the host runs.
#[derive(Default)]
struct RawStackCache {
    buckets: HashMap<u64, Vec<CachedStack>, std::hash::BuildHasherDefault<PassThrough>>,
    len: usize,
}

impl RawStackCache {
    const MAX_STACKS: usize = 1 << 17;

    fn get(&self, hash: u64, key: &RawKey<'_>) -> Option<(StackId, Arc<Stack>)> {
        self.buckets
            .get(&hash)?
            .iter()
            .find(|c| c.matches(key))
            .map(|c| (c.id, c.stack.clone()))
    }

    fn insert(&mut self, key: RawKey<'_>, (id, stack): (StackId, Arc<Stack>)) {
        if self.len >= Self::MAX_STACKS {
            self.buckets.clear();
            self.len = 0;
        }
        let hash = key.hash();
        let bucket = self.buckets.entry(hash).or_default();
        if bucket.iter().any(|c| c.matches(&key)) {
            return;
        }
        bucket.push(CachedStack {
            pid: key.pid,
            generation: key.generation,
            cut_short: key.cut_short,
            kernel_len: key.kernel.len(),
            addresses: key.kernel.iter().chain(key.user).copied().collect(),
            id,
            stack,
        });
        self.len += 1;
    }

    /// Keeps the stacks for which `keep(pid, generation)` holds.
    fn retain(&mut self, mut keep: impl FnMut(u32, u64) -> bool) {
        let mut len = 0;
        self.buckets.retain(|_, bucket| {
            bucket.retain(|c| keep(c.pid, c.generation));
            len += bucket.len();
            !bucket.is_empty()
        });
        self.len = len;
    }
}

/// The keys are hashes already.
#[derive(Default)]
struct PassThrough(u64);

impl std::hash::Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Frames above the leaf are return addresses, which point after the call: one byte back is
/// inside the call instruction, so a call that ends a function is not blamed on the next one.
fn return_address_adjusted(address: u64, depth: usize) -> u64 {
    if depth == 0 {
        address
    } else {
        address.saturating_sub(1)
    }
}

fn find_mapping(mappings: &[Mapping], address: u64) -> Option<&Mapping> {
    mappings
        .iter()
        .find(|m| (m.start..m.end).contains(&address))
}

/// The Linux `dev_t` encoding (glibc's `gnu_dev_major`/`gnu_dev_minor`).
fn decode_dev(dev: u64) -> (u32, u32) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major as u32, minor as u32)
}

fn unsymbolized(module: &str, file_offset: u64) -> Frame {
    let name = Path::new(module)
        .file_name()
        .map_or(module.into(), |n| n.to_string_lossy());
    Frame::new(
        FrameKind::User,
        &format!("{name}+0x{file_offset:x}"),
        module,
    )
}

/// The frames of one address, leaf first: the innermost inlined call, …, the real function.
fn sym_frames(sym: &Sym<'_>, kind: FrameKind, module: &str) -> Vec<Frame> {
    let mut frames = Vec::with_capacity(1 + sym.inlined.len());
    for inlined in sym.inlined.iter().rev() {
        let mut frame = Frame::new(kind, &inlined.name, module);
        if let Some(info) = &inlined.code_info {
            frame.file = Some(Arc::from(info.to_path().to_string_lossy().as_ref()));
            frame.line = info.line;
        }
        frame.inlined = true;
        frames.push(frame);
    }
    let mut frame = Frame::new(kind, &sym.name, module);
    if let Some(info) = &sym.code_info {
        frame.file = Some(Arc::from(info.to_path().to_string_lossy().as_ref()));
        frame.line = info.line;
    }
    frames.push(frame);
    frames
}

/// One resolved address, with what the root check needs.
struct Resolved {
    frames: Arc<[Frame]>,
    module: Arc<str>,
    symbolized: bool,
    /// The same address in the same process resolves the same way later (not JIT, not unmapped).
    stable: bool,
}

impl Resolved {
    fn cached(frames: Arc<[Frame]>, module: &str) -> Self {
        let symbolized = frames.first().is_some_and(|f| !f.function.contains("+0x"));
        Self {
            frames,
            module: Arc::from(module),
            symbolized,
            stable: true,
        }
    }

    fn named(frame: Frame) -> Self {
        let module = frame.module.clone();
        Self {
            frames: Arc::from(vec![frame]),
            module,
            symbolized: true,
            stable: true,
        }
    }

    fn unsymbolized(frame: Frame, module: &str) -> Self {
        Self {
            frames: Arc::from(vec![frame]),
            module: Arc::from(module),
            symbolized: false,
            stable: true,
        }
    }

    /// Whether this outermost frame is where a stack begins. By name when symbols say so; and
    /// when the C library is stripped (Debian's is), its start routines (`__libc_start_call_main`,
    /// `start_thread`) are local symbols that only the debug file names: an unnamed C-library
    /// frame under at least one caller frame is taken as the start.
    fn is_root(&self, stack_len: usize) -> bool {
        let outer = self.frames.last();
        if outer.is_some_and(|f| {
            ROOT_FUNCTIONS.contains(&f.function.as_ref()) || f.function.starts_with("__libc_start")
        }) {
            return true;
        }
        let file = Path::new(self.module.as_ref())
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let is_libc =
            file.starts_with("libc.so") || file.starts_with("libc-") || file.starts_with("ld-musl");
        !self.symbolized && is_libc && stack_len >= 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// glibc's `makedev`.
    fn makedev(major: u64, minor: u64) -> u64 {
        ((major & 0xffff_f000) << 32)
            | ((major & 0xfff) << 8)
            | ((minor & 0xffff_ff00) << 12)
            | (minor & 0xff)
    }

    #[test]
    fn dev_t_decodes_like_glibc() {
        assert_eq!(decode_dev(makedev(0xfd, 1)), (0xfd, 1));
        assert_eq!(decode_dev(makedev(259, 65536)), (259, 65536));
        assert_eq!(decode_dev(makedev(4097, 3)), (4097, 3));
    }

    #[test]
    fn a_stripped_c_library_frame_counts_as_the_start_only_under_callers() {
        let libc = "/usr/lib/x86_64-linux-gnu/libc.so.6";
        let frame = Resolved::unsymbolized(unsymbolized(libc, 0x2724a), libc);
        assert!(frame.is_root(3));
        assert!(!frame.is_root(1));
        let named = Resolved::named(Frame::new(FrameKind::User, "__libc_start_main_impl", libc));
        assert!(named.is_root(1));
        let app = Resolved::named(Frame::new(FrameKind::User, "work", "/bin/app"));
        assert!(!app.is_root(5));
    }
}
