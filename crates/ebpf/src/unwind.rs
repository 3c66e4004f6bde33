//! Userspace side of the CPU sampler's `.eh_frame` unwinder: builds each executable file's table
//! once ([`crate::build_unwind_table`], on a thread of its own so a big file never holds up the
//! drain of samples), copies its rows into the shared `unwind_rows` array, and
//! gives each process the list of its executable mappings with where their rows are
//! (`unwind_processes`). The BPF program unwinds the processes found there with the tables and
//! every other process by frame pointers.
//!
//! The BPF program drops a process's entry itself when the process execs or exits; the next
//! [`Unwinder::add_process`] for that pid loads it again from its new mappings.
//!
//! A table's rows stay where they were written until no known process maps its file any more;
//! the 10-second refresh then frees them for later tables (first fit). A file whose table does
//! not fit in any free range gets none (its frames fall back to frame pointers, counted in
//! [`UnwindStats::tables_without_room`]) and is tried again once enough rows were freed. The
//! refresh also loads again every process left with such a mapping, or with a file it could not
//! open (the process that showed it exited meanwhile); only a file read and found without a
//! usable table is never tried again.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use libbpf_rs::{MapCore, MapFlags};

use crate::error::{EbpfError, Result};
use crate::unwind_table::{UnwindRow, UnwindTable, build_unwind_table};

/// `UNWIND_MAX_MAPPINGS` in `bpf/cpu_sampler.bpf.c`.
const MAX_MAPPINGS: usize = 32;
/// `sizeof(struct unwind_process)`.
const PROCESS_VALUE_SIZE: usize = 8 + 32 * MAX_MAPPINGS;
/// `UNWIND_SEARCH_STEPS`: a larger table could not be searched to the end.
const MAX_TABLE_ROWS: usize = 1 << 24;
/// How often known processes are checked for exit and for new mappings (`dlopen`).
const REFRESH_EVERY: Duration = Duration::from_secs(10);

/// What the unwinder holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnwindStats {
    /// Processes unwound with tables.
    pub processes: usize,
    /// Files whose tables are loaded.
    pub tables: usize,
    /// Rows in use, of `row_capacity`.
    pub rows: u32,
    pub row_capacity: u32,
    /// Files that got no table because the rows array was full.
    pub tables_without_room: u64,
    /// Executable files without a usable table (no `.eh_frame`, not x86_64 ELF, unreadable).
    pub files_without_table: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct FileKey {
    device: (u32, u32),
    inode: u64,
}

#[derive(Clone)]
struct LoadedTable {
    row_start: u32,
    row_count: u32,
    table: std::sync::Arc<UnwindTable>,
}

#[derive(Clone, PartialEq, Eq)]
struct MapLine {
    start: u64,
    end: u64,
    offset: u64,
    file: FileKey,
    path: String,
}

enum TableState {
    Loaded(LoadedTable),
    /// Being built on the builder thread; its processes are loaded again when it is done.
    Building,
    /// No `.eh_frame`, not x86_64 ELF, unreadable: never tried again.
    Unusable,
    /// Did not fit; tried again when a free range of `rows` exists.
    NoRoom {
        rows: u32,
    },
}

/// Free ranges of the rows array, `(start, length)`, sorted and coalesced.
#[derive(Debug, Default, PartialEq, Eq)]
struct RowSpace {
    free: Vec<(u32, u32)>,
}

impl RowSpace {
    fn new(capacity: u32) -> Self {
        Self {
            free: if capacity > 0 {
                vec![(0, capacity)]
            } else {
                Vec::new()
            },
        }
    }

    fn largest(&self) -> u32 {
        self.free.iter().map(|&(_, len)| len).max().unwrap_or(0)
    }

    fn free_rows(&self) -> u32 {
        self.free.iter().map(|&(_, len)| len).sum()
    }

    /// The start of `n` rows taken from the first free range that holds them.
    fn allocate(&mut self, n: u32) -> Option<u32> {
        let i = self.free.iter().position(|&(_, len)| len >= n)?;
        let (start, len) = self.free[i];
        if len == n {
            self.free.remove(i);
        } else {
            self.free[i] = (start + n, len - n);
        }
        Some(start)
    }

    fn release(&mut self, start: u32, n: u32) {
        let i = self.free.partition_point(|&(s, _)| s < start);
        self.free.insert(i, (start, n));
        // Merge with the next range, then with the previous one.
        if i + 1 < self.free.len() && self.free[i].0 + self.free[i].1 == self.free[i + 1].0 {
            self.free[i].1 += self.free[i + 1].1;
            self.free.remove(i + 1);
        }
        if i > 0 && self.free[i - 1].0 + self.free[i - 1].1 == self.free[i].0 {
            self.free[i - 1].1 += self.free[i].1;
            self.free.remove(i);
        }
    }
}

struct ProcessEntry {
    start_time: u64,
    mappings: Vec<MapLine>,
    has_tables: bool,
    /// Some mapping has no table yet for a reason that may pass (no room, the file could not
    /// be opened): the refresh loads the process again.
    retry: bool,
}

/// Builds tables on its own thread: a big file (hundreds of thousands of rows) takes seconds,
/// which must not hold up the drain of samples.
struct Builder {
    requests: std::sync::mpsc::Sender<(FileKey, String, File)>,
    built: std::sync::mpsc::Receiver<(FileKey, String, Option<UnwindTable>)>,
}

impl Builder {
    fn start() -> std::io::Result<Self> {
        let (requests, todo) = std::sync::mpsc::channel::<(FileKey, String, File)>();
        let (done, built) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("unwind-tables".into())
            .spawn(move || {
                // Smallest file first: the shared libraries every process maps take
                // milliseconds, a big binary seconds.
                let mut pending: Vec<(u64, (FileKey, String, File))> = Vec::new();
                loop {
                    if pending.is_empty() {
                        match todo.recv() {
                            Ok(r) => pending.push((file_len(&r.2), r)),
                            Err(_) => break,
                        }
                    }
                    pending.extend(todo.try_iter().map(|r| (file_len(&r.2), r)));
                    let smallest = (0..pending.len())
                        .min_by_key(|&i| pending[i].0)
                        .unwrap_or(0);
                    let (_, (file, path, f)) = pending.swap_remove(smallest);
                    let table = build_from(&f)
                        .filter(|t| !t.rows.is_empty() && t.rows.len() <= MAX_TABLE_ROWS);
                    if done.send((file, path, table)).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Builder { requests, built })
    }
}

pub(crate) struct Unwinder {
    capacity: u32,
    builder: Option<Builder>,
    space: RowSpace,
    tables: HashMap<FileKey, TableState>,
    processes: HashMap<u32, ProcessEntry>,
    last_refresh: Instant,
    stats: UnwindStats,
    proc_root: PathBuf,
}

impl Unwinder {
    pub(crate) fn new(capacity: u32) -> Self {
        Self {
            capacity,
            builder: None,
            space: RowSpace::new(capacity),
            tables: HashMap::new(),
            processes: HashMap::new(),
            last_refresh: Instant::now(),
            stats: UnwindStats {
                row_capacity: capacity,
                ..UnwindStats::default()
            },
            proc_root: PathBuf::from("/proc"),
        }
    }

    pub(crate) fn stats(&self) -> UnwindStats {
        UnwindStats {
            processes: self.processes.values().filter(|p| p.has_tables).count(),
            tables: self
                .tables
                .values()
                .filter(|t| matches!(t, TableState::Loaded(_)))
                .count(),
            rows: self.capacity - self.space.free_rows(),
            ..self.stats
        }
    }

    /// Loads the tables of `pid`'s executable mappings and hands the process to the BPF
    /// unwinder. True when at least one of its mappings has a table. A process already known is
    /// left as it is (see [`Unwinder::refresh`]).
    pub(crate) fn add_process(
        &mut self,
        rows: &dyn MapCore,
        processes: &dyn MapCore,
        pid: u32,
    ) -> Result<bool> {
        if self.capacity == 0 {
            return Ok(false);
        }
        self.install_built(rows, processes)?;
        if let Some(known) = self.processes.get(&pid) {
            // The BPF side drops a process that execs or exits: hand over the new image (or
            // the new process under a reused pid) at once.
            if !known.has_tables || still_loaded(processes, pid) {
                return Ok(known.has_tables);
            }
            self.processes.remove(&pid);
        }
        self.load(processes, pid)
    }

    /// Every [`REFRESH_EVERY`]: forgets processes that exited (or whose pid was reused) and
    /// reloads those whose executable mappings changed.
    pub(crate) fn refresh(&mut self, rows: &dyn MapCore, processes: &dyn MapCore) -> Result<()> {
        self.install_built(rows, processes)?;
        if self.last_refresh.elapsed() < REFRESH_EVERY {
            return Ok(());
        }
        self.last_refresh = Instant::now();
        let pids: Vec<u32> = self.processes.keys().copied().collect();
        for pid in pids {
            let entry = &self.processes[&pid];
            let start = entry.start_time;
            let maps = (start_time(&self.proc_root, pid) == Some(start))
                .then(|| read_maps(&self.proc_root, pid))
                .flatten();
            let Some(maps) = maps else {
                // Exited, or the pid is another process's now.
                self.forget(processes, pid)?;
                continue;
            };
            if maps == entry.mappings {
                if entry.retry {
                    // Overwrites the kernel's entry in place: no sample falls back meanwhile.
                    self.hand_over(processes, pid, start, maps)?;
                }
                continue;
            }
            tracing::debug!(pid, "unwinder: mappings changed, reloading");
            self.forget(processes, pid)?;
            self.hand_over(processes, pid, start, maps)?;
        }
        self.free_unused_tables();
        Ok(())
    }

    /// Frees the rows of every file no known process with tables maps. Their processes' entries
    /// are gone from the kernel (exit, exec, or `forget` just now) and the rows are rewritten
    /// no sooner than the next load, a drain later: no walk can still be reading them.
    fn free_unused_tables(&mut self) {
        let used: std::collections::HashSet<FileKey> = self
            .processes
            .values()
            .filter(|p| p.has_tables)
            .flat_map(|p| p.mappings.iter().map(|m| m.file))
            .collect();
        let space = &mut self.space;
        self.tables.retain(|file, state| match state {
            TableState::Loaded(t) if !used.contains(file) => {
                space.release(t.row_start, t.row_count);
                false
            }
            _ => true,
        });
    }

    fn forget(&mut self, processes: &dyn MapCore, pid: u32) -> Result<()> {
        self.processes.remove(&pid);
        match processes.delete(&pid.to_ne_bytes()) {
            Err(source) if source.kind() != libbpf_rs::ErrorKind::NotFound => Err(EbpfError::Map {
                what: "removing a process from the unwinder",
                source,
            }),
            _ => Ok(()),
        }
    }

    fn load(&mut self, processes: &dyn MapCore, pid: u32) -> Result<bool> {
        let (Some(start_time), Some(mappings)) = (
            start_time(&self.proc_root, pid),
            read_maps(&self.proc_root, pid),
        ) else {
            return Ok(false);
        };
        self.hand_over(processes, pid, start_time, mappings)
    }

    /// Writes `pid`'s kernel entry from `mappings` (those with a table; the others go to the
    /// builder) and remembers the process.
    fn hand_over(
        &mut self,
        processes: &dyn MapCore,
        pid: u32,
        start_time: u64,
        mappings: Vec<MapLine>,
    ) -> Result<bool> {
        let mut value = vec![0u8; PROCESS_VALUE_SIZE];
        let mut count = 0usize;
        let mut without = Vec::new();
        let mut retry = false;
        for m in &mappings {
            if count == MAX_MAPPINGS {
                break;
            }
            let Some(loaded) = self.table_for(pid, m) else {
                without.push(m.path.as_str());
                retry |= !matches!(self.tables.get(&m.file), Some(TableState::Unusable));
                continue;
            };
            let Some(vaddr) = loaded.table.vaddr_of_offset(m.offset) else {
                without.push(m.path.as_str());
                continue;
            };
            let at = 8 + count * 32;
            value[at..at + 8].copy_from_slice(&m.start.to_ne_bytes());
            value[at + 8..at + 16].copy_from_slice(&m.end.to_ne_bytes());
            value[at + 16..at + 24].copy_from_slice(&m.start.wrapping_sub(vaddr).to_ne_bytes());
            value[at + 24..at + 28].copy_from_slice(&loaded.row_start.to_ne_bytes());
            value[at + 28..at + 32].copy_from_slice(&loaded.row_count.to_ne_bytes());
            count += 1;
        }
        value[0..4].copy_from_slice(&(count as u32).to_ne_bytes());
        tracing::debug!(
            pid,
            with_table = count,
            without_table = ?without,
            "unwinder: process handed over"
        );
        let added = if count == 0 {
            Ok(false)
        } else {
            processes
                .update(&pid.to_ne_bytes(), &value, MapFlags::ANY)
                .map(|()| true)
                .map_err(|source| EbpfError::Map {
                    what: "adding a process to the unwinder",
                    source,
                })
        };
        // Processes without any table (or that found the map full) keep the frame-pointer
        // path; still remembered, so they are not read again on every sample.
        let has_tables = matches!(added, Ok(true));
        self.processes.insert(
            pid,
            ProcessEntry {
                start_time,
                mappings,
                has_tables,
                retry,
            },
        );
        added
    }

    /// The loaded table of the file behind mapping `m`; on first sight the file is handed to the
    /// builder thread and `None` returned until [`Unwinder::install_built`] has loaded it.
    fn table_for(&mut self, pid: u32, m: &MapLine) -> Option<LoadedTable> {
        match self.tables.get(&m.file) {
            Some(TableState::Loaded(t)) => return Some(t.clone()),
            Some(TableState::Unusable | TableState::Building) => return None,
            Some(&TableState::NoRoom { rows }) if self.space.largest() < rows => return None,
            Some(TableState::NoRoom { .. }) | None => {}
        }
        // A process that exits meanwhile takes its view of the file with it: that says nothing
        // about the file, which is tried again with the next process that maps it.
        let Some(file) = open_mapped_file(&self.proc_root, pid, m) else {
            tracing::debug!(pid, path = %m.path, "unwinder: cannot open a mapped file");
            return None;
        };
        if self.builder.is_none() {
            match Builder::start() {
                Ok(b) => self.builder = Some(b),
                Err(e) => {
                    tracing::warn!(error = %e, "unwinder: cannot start the table builder");
                    return None;
                }
            }
        }
        let sent = self
            .builder
            .as_ref()
            .is_some_and(|b| b.requests.send((m.file, m.path.clone(), file)).is_ok());
        if sent {
            self.tables.insert(m.file, TableState::Building);
        } else {
            self.builder = None;
        }
        None
    }

    /// Loads the tables the builder thread finished into the rows array, then hands over again
    /// the processes that were waiting for them. Cheap when nothing is finished.
    fn install_built(&mut self, rows: &dyn MapCore, processes: &dyn MapCore) -> Result<()> {
        let Some(builder) = &self.builder else {
            return Ok(());
        };
        let built: Vec<_> = builder.built.try_iter().collect();
        if built.is_empty() {
            return Ok(());
        }
        let mut installed = std::collections::HashSet::new();
        for (file, path, table) in built {
            if self.install(rows, file, &path, table)? {
                installed.insert(file);
            }
        }
        let waiting: Vec<u32> = self
            .processes
            .iter()
            .filter(|(_, p)| p.retry && p.mappings.iter().any(|m| installed.contains(&m.file)))
            .map(|(&pid, _)| pid)
            .collect();
        for pid in waiting {
            let p = &self.processes[&pid];
            if start_time(&self.proc_root, pid) == Some(p.start_time) {
                let (start, maps) = (p.start_time, p.mappings.clone());
                self.hand_over(processes, pid, start, maps)?;
            }
        }
        Ok(())
    }

    /// Copies one built table into free rows. True when it is loaded.
    fn install(
        &mut self,
        rows: &dyn MapCore,
        file: FileKey,
        path: &str,
        table: Option<UnwindTable>,
    ) -> Result<bool> {
        let Some(table) = table else {
            tracing::debug!(path, "unwinder: no usable table in the file");
            self.stats.files_without_table += 1;
            self.tables.insert(file, TableState::Unusable);
            return Ok(false);
        };
        let row_count = table.rows.len() as u32;
        let Some(row_start) = self.space.allocate(row_count) else {
            self.stats.tables_without_room += 1;
            tracing::debug!(path, rows = row_count, "no room left for an unwind table");
            self.tables
                .insert(file, TableState::NoRoom { rows: row_count });
            return Ok(false);
        };
        if let Err(e) = write_rows(rows, row_start, &table.rows) {
            self.space.release(row_start, row_count);
            self.tables.remove(&file);
            return Err(e);
        }
        tracing::debug!(path, rows = row_count, "unwind table loaded");
        let loaded = LoadedTable {
            row_start,
            row_count,
            table: std::sync::Arc::new(table),
        };
        self.tables.insert(file, TableState::Loaded(loaded));
        Ok(true)
    }

    /// Waits (up to `timeout`) until every table `pid` is waiting for is built and loaded.
    /// True when the process is then unwound with tables.
    pub(crate) fn wait_for(
        &mut self,
        rows: &dyn MapCore,
        processes: &dyn MapCore,
        pid: u32,
        timeout: Duration,
    ) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            self.install_built(rows, processes)?;
            let Some(p) = self.processes.get(&pid) else {
                return Ok(false);
            };
            let building = p
                .mappings
                .iter()
                .any(|m| matches!(self.tables.get(&m.file), Some(TableState::Building)));
            if !building || Instant::now() >= deadline {
                return Ok(p.has_tables);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn still_loaded(processes: &dyn MapCore, pid: u32) -> bool {
    // An error reads as "gone": the process is then loaded again, which is harmless.
    matches!(
        processes.lookup(&pid.to_ne_bytes(), MapFlags::ANY),
        Ok(Some(_))
    )
}

fn write_rows(map: &dyn MapCore, first: u32, rows: &[UnwindRow]) -> Result<()> {
    const CHUNK: usize = 16 * 1024;
    for (i, chunk) in rows.chunks(CHUNK).enumerate() {
        let base = first + (i * CHUNK) as u32;
        let keys: Vec<u8> = (0..chunk.len() as u32)
            .flat_map(|k| (base + k).to_ne_bytes())
            .collect();
        let values: Vec<u8> = chunk.iter().flat_map(|r| r.to_bytes()).collect();
        map.update_batch(
            &keys,
            &values,
            chunk.len() as u32,
            MapFlags::ANY,
            MapFlags::ANY,
        )
        .map_err(|source| EbpfError::Map {
            what: "writing unwind table rows",
            source,
        })?;
    }
    Ok(())
}

/// The process's start time in clock ticks since boot (field 22 of `/proc/<pid>/stat`): tells a
/// reused pid from the process that had it.
fn start_time(proc_root: &std::path::Path, pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// Executable, file-backed mappings of `/proc/<pid>/maps`.
fn read_maps(proc_root: &std::path::Path, pid: u32) -> Option<Vec<MapLine>> {
    let text = std::fs::read_to_string(proc_root.join(pid.to_string()).join("maps")).ok()?;
    Some(text.lines().filter_map(parse_map_line).collect())
}

fn parse_map_line(line: &str) -> Option<MapLine> {
    let mut fields = line.split_ascii_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let perms = fields.next()?;
    let offset = fields.next()?;
    let (major, minor) = fields.next()?.split_once(':')?;
    let inode: u64 = fields.next()?.parse().ok()?;
    let path = fields.collect::<Vec<_>>().join(" ");
    if perms.as_bytes().get(2) != Some(&b'x') || inode == 0 || !path.starts_with('/') {
        return None;
    }
    Some(MapLine {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        offset: u64::from_str_radix(offset, 16).ok()?,
        file: FileKey {
            device: (
                u32::from_str_radix(major, 16).ok()?,
                u32::from_str_radix(minor, 16).ok()?,
            ),
            inode,
        },
        path,
    })
}

/// The file behind a mapping: through `map_files` (right even across mount namespaces and for
/// deleted files), else by its path inside the process's root.
fn open_mapped_file(proc_root: &std::path::Path, pid: u32, m: &MapLine) -> Option<File> {
    let dir = proc_root.join(pid.to_string());
    File::open(
        dir.join("map_files")
            .join(format!("{:x}-{:x}", m.start, m.end)),
    )
    .or_else(|_| File::open(dir.join("root").join(m.path.trim_start_matches('/'))))
    .ok()
}

fn file_len(f: &File) -> u64 {
    f.metadata().map_or(u64::MAX, |m| m.len())
}

/// Builds the table of a file, reading only the pages the headers and `.eh_frame` occupy.
fn build_from(file: &File) -> Option<UnwindTable> {
    use std::os::fd::AsRawFd;
    let len = usize::try_from(file.metadata().ok()?.len()).ok()?;
    if len < 64 {
        return None;
    }
    // SAFETY: a private read-only mapping of a whole regular file, unmapped below before
    // returning; a file truncated meanwhile could fault, as for any reader that maps ELF files
    // (blazesym does the same).
    let table = unsafe {
        let address = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            0,
        );
        if address == libc::MAP_FAILED {
            return None;
        }
        let bytes = std::slice::from_raw_parts(address as *const u8, len);
        // A file that trips the parser is a file without a usable table: the builder thread
        // lives on for the others, and the mapping is released either way.
        let table = std::panic::catch_unwind(|| build_unwind_table(bytes));
        libc::munmap(address, len);
        table
    };
    table.ok()?.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_taken_first_fit_and_freed_ranges_merge() {
        let mut space = RowSpace::new(100);
        assert_eq!(space.allocate(30), Some(0));
        assert_eq!(space.allocate(30), Some(30));
        assert_eq!(space.allocate(30), Some(60));
        assert_eq!(space.allocate(30), None);
        assert_eq!(space.free_rows(), 10);
        space.release(0, 30);
        space.release(60, 30);
        assert_eq!(space.largest(), 40);
        // 20 fits in the first hole, 40 only in the last one.
        assert_eq!(space.allocate(20), Some(0));
        assert_eq!(space.allocate(40), Some(60));
        space.release(30, 30);
        assert_eq!(space.free, vec![(20, 40)]);
        space.release(0, 20);
        space.release(60, 40);
        assert_eq!(space, RowSpace::new(100));
        assert_eq!(RowSpace::new(0).allocate(1), None);
    }

    #[test]
    fn maps_lines_keep_executable_files_only() {
        let maps = "\
55d0c6a00000-55d0c6a02000 r--p 00000000 08:01 1234 /usr/bin/prog
55d0c6a02000-55d0c6a07000 r-xp 00002000 08:01 1234 /usr/bin/prog
7f00aa000000-7f00aa100000 r-xp 00000000 00:00 0 
7ffd1c7e5000-7ffd1c7e7000 r-xp 00000000 00:00 0 [vdso]
7f00ab028000-7f00ab1ad000 r-xp 00028000 fe:01 99 /usr/lib/libc.so.6 (deleted)";
        let lines: Vec<_> = maps.lines().filter_map(parse_map_line).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].start, 0x55d0c6a02000);
        assert_eq!(lines[0].offset, 0x2000);
        assert_eq!(lines[0].file.inode, 1234);
        assert_eq!(lines[1].file.device, (0xfe, 1));
        assert_eq!(lines[1].path, "/usr/lib/libc.so.6 (deleted)");
    }

    #[test]
    fn this_process_has_its_start_time_and_a_table_for_its_c_library() {
        let pid = std::process::id();
        let root = PathBuf::from("/proc");
        assert!(start_time(&root, pid).is_some_and(|t| t > 0));
        let maps = read_maps(&root, pid).expect("own maps");
        let libc = maps
            .iter()
            .find(|m| m.path.contains("libc.so"))
            .expect("libc mapped");
        let file = open_mapped_file(&root, pid, libc).expect("open libc");
        let table = build_from(&file).expect("libc table");
        assert!(table.rows.len() > 1000);
        assert!(table.vaddr_of_offset(libc.offset).is_some());
    }

    /// A file that cannot be opened when its process is loaded (that process exited) is not
    /// written off: the refresh loads the process again once the file can be read. Needs root
    /// for the two kernel maps; skipped otherwise, except with `OXEYE_REQUIRE_EBPF=1`.
    #[test]
    fn a_file_that_could_not_be_opened_is_tried_again_at_the_refresh() {
        use libbpf_rs::{MapHandle, MapType};
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                std::env::var("OXEYE_REQUIRE_EBPF").as_deref() != Ok("1"),
                "OXEYE_REQUIRE_EBPF=1 but not running as root"
            );
            return;
        }
        let own = read_maps(&PathBuf::from("/proc"), std::process::id()).expect("own maps");
        let libc = own
            .iter()
            .find(|m| m.path.contains("libc.so"))
            .expect("libc mapped")
            .clone();

        // A fake /proc with one process mapping this process's C library at its own address.
        let proc_root = tempfile::tempdir().expect("tempdir");
        let pid = 4242u32;
        let dir = proc_root.path().join(pid.to_string());
        std::fs::create_dir_all(&dir).expect("pid dir");
        let fields: Vec<String> = (0..19).map(|i| i.to_string()).collect();
        std::fs::write(
            dir.join("stat"),
            format!("{pid} (prog) S {} 777 0", fields.join(" ")),
        )
        .expect("stat");
        std::fs::write(
            dir.join("maps"),
            format!(
                "{:x}-{:x} r-xp {:08x} {:02x}:{:02x} {} {}\n",
                libc.start,
                libc.end,
                libc.offset,
                libc.file.device.0,
                libc.file.device.1,
                libc.file.inode,
                libc.path
            ),
        )
        .expect("maps");

        let opts = libbpf_rs::libbpf_sys::bpf_map_create_opts {
            sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>() as _,
            ..Default::default()
        };
        let rows = MapHandle::create(
            MapType::Array,
            Some("test_rows"),
            4,
            UnwindRow::SIZE as u32,
            1 << 16,
            &opts,
        )
        .expect("rows map");
        let processes = MapHandle::create(
            MapType::Hash,
            Some("test_procs"),
            4,
            PROCESS_VALUE_SIZE as u32,
            16,
            &opts,
        )
        .expect("processes map");

        let mut unwinder = Unwinder::new(1 << 16);
        unwinder.proc_root = proc_root.path().to_path_buf();
        // Neither map_files nor the process's root holds the file: nothing to load yet.
        assert!(!unwinder.add_process(&rows, &processes, pid).expect("add"));
        assert_eq!(unwinder.stats().files_without_table, 0);
        assert!(unwinder.processes[&pid].retry);

        // The file appears under the process's root; the next refresh loads it.
        let inside = dir.join("root").join(libc.path.trim_start_matches('/'));
        std::fs::create_dir_all(inside.parent().expect("parent")).expect("root dirs");
        std::fs::copy(&libc.path, &inside).expect("copy libc");
        unwinder.last_refresh = Instant::now() - REFRESH_EVERY;
        unwinder.refresh(&rows, &processes).expect("refresh");
        // The table is built on the builder thread and loaded by a later call.
        assert!(
            unwinder
                .wait_for(&rows, &processes, pid, Duration::from_secs(30))
                .expect("wait")
        );
        let stats = unwinder.stats();
        assert_eq!((stats.processes, stats.tables), (1, 1), "{stats:?}");
        assert!(!unwinder.processes[&pid].retry);
        assert!(still_loaded(&processes, pid));
    }
}
