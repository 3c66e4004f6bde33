//! `/tmp/perf-<pid>.map`, the symbol file JITs (V8, the JVM with perf-map-agent, .NET, LuaJIT,
//! Python 3.12 `-X perf`) write for their generated code: `START SIZE name` in hex, one per line.
//! Read here rather than through blazesym's process source so it also works after the process
//! has exited, which is when short-lived JIT processes get symbolized.

use std::path::Path;
use std::time::SystemTime;

pub(crate) struct PerfMap {
    /// Sorted by start.
    symbols: Vec<(u64, u64, String)>,
    modified: Option<SystemTime>,
}

impl PerfMap {
    pub(crate) fn read(path: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(path).ok()?;
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let mut symbols: Vec<(u64, u64, String)> = text.lines().filter_map(parse_line).collect();
        symbols.sort_by_key(|&(start, _, _)| start);
        Some(Self { symbols, modified })
    }

    /// The file changed since it was read (a JIT appends as it compiles).
    pub(crate) fn is_stale(&self, path: &Path) -> bool {
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        modified != self.modified
    }

    pub(crate) fn find(&self, address: u64) -> Option<&str> {
        let index = self
            .symbols
            .partition_point(|&(start, _, _)| start <= address);
        let (start, size, name) = self.symbols.get(index.checked_sub(1)?)?;
        (address < start + size.max(&1)).then_some(name.as_str())
    }
}

fn parse_line(line: &str) -> Option<(u64, u64, String)> {
    let mut parts = line.splitn(3, ' ');
    let start = u64::from_str_radix(parts.next()?.trim_start_matches("0x"), 16).ok()?;
    let size = u64::from_str_radix(parts.next()?.trim_start_matches("0x"), 16).ok()?;
    let name = parts.next()?.trim();
    Some((start, size, name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_resolve_to_the_covering_entry_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("perf-1.map");
        std::fs::write(
            &path,
            "7f0000001000 100 LazyCompile:*handle app.js:10\n7f0000000000 10 Builtin:Add\nbad line\n",
        )
        .unwrap();
        let map = PerfMap::read(&path).unwrap();
        assert_eq!(map.find(0x7f0000000004), Some("Builtin:Add"));
        assert_eq!(
            map.find(0x7f00000010ff),
            Some("LazyCompile:*handle app.js:10")
        );
        assert_eq!(map.find(0x7f0000001100), None);
        assert_eq!(map.find(0x7f0000000010), None);
        assert!(!map.is_stale(&path));
    }
}
