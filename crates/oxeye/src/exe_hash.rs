//! SHA-256 of executables for exec events. Each file is read once: hashes are cached by
//! (device, inode, modification time, size), so a binary run a million times costs one read,
//! and a binary replaced in place (new inode or new mtime) is hashed again. Files above a size
//! bound are not hashed at all, so one huge binary cannot stall the event thread.

use std::collections::HashMap;
use std::fs::Metadata;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use sha2::{Digest, Sha256};

/// The cache is cleared when it holds this many files (a host runs far fewer distinct binaries).
const MAX_ENTRIES: usize = 8192;

type Key = (u64, u64, i64, i64, u64);

/// What hashing cost so far, for the sensor's status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExeHashStats {
    /// Files read and hashed.
    pub hashed: u64,
    pub bytes: u64,
    /// Files not hashed because they were larger than the bound.
    pub too_large: u64,
    /// Lookups answered from the cache.
    pub cached: u64,
}

pub struct ExeHashes {
    max_bytes: u64,
    cache: HashMap<Key, Option<String>>,
    stats: ExeHashStats,
}

impl ExeHashes {
    /// Hashes files of at most `max_bytes`; 0 turns hashing off.
    pub fn new(max_bytes: u64) -> Self {
        ExeHashes {
            max_bytes,
            cache: HashMap::new(),
            stats: ExeHashStats::default(),
        }
    }

    pub fn stats(&self) -> ExeHashStats {
        self.stats
    }

    /// The SHA-256 (lowercase hex) of the regular file at `path`, whose metadata is `meta`;
    /// `None` when hashing is off, the file is too large, or it cannot be read.
    pub fn hash(&mut self, path: &Path, meta: &Metadata) -> Option<String> {
        if self.max_bytes == 0 || !meta.is_file() {
            return None;
        }
        let key = (
            meta.dev(),
            meta.ino(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.size(),
        );
        if let Some(hash) = self.cache.get(&key) {
            self.stats.cached += 1;
            return hash.clone();
        }
        let hash = if meta.size() > self.max_bytes {
            self.stats.too_large += 1;
            None
        } else {
            let hash = sha256_file(path, self.max_bytes);
            if hash.is_some() {
                self.stats.hashed += 1;
                self.stats.bytes += meta.size();
            }
            hash
        };
        if self.cache.len() >= MAX_ENTRIES {
            self.cache.clear();
        }
        self.cache.insert(key, hash.clone());
        hash
    }
}

/// The file's SHA-256, or `None` when it cannot be read or has grown beyond `max_bytes`.
fn sha256_file(path: &Path, max_bytes: u64) -> Option<String> {
    let mut file = std::fs::File::open(path).ok()?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > max_bytes {
            return None;
        }
        hasher.update(&buf[..n]);
    }
    Some(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_hashed_once_and_again_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tool");
        std::fs::write(&path, b"abc").unwrap();
        let mut hashes = ExeHashes::new(1 << 20);
        let meta = std::fs::metadata(&path).unwrap();
        // The published SHA-256 of "abc" (FIPS 180-2, appendix B.1).
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(hashes.hash(&path, &meta).as_deref(), Some(abc));
        assert_eq!(hashes.hash(&path, &meta).as_deref(), Some(abc));
        assert_eq!(hashes.stats().hashed, 1);
        assert_eq!(hashes.stats().cached, 1);

        // Replaced by another file (a new inode): hashed again.
        let other = dir.path().join("tool.new");
        std::fs::write(&other, b"abcd").unwrap();
        std::fs::rename(&other, &path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        let hash = hashes.hash(&path, &meta).unwrap();
        assert_ne!(hash, abc);
        assert_eq!(hashes.stats().hashed, 2);
    }

    #[test]
    fn large_files_and_directories_are_not_hashed_and_zero_turns_it_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, vec![7u8; 4096]).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        let mut small = ExeHashes::new(1024);
        assert_eq!(small.hash(&path, &meta), None);
        assert_eq!(small.hash(&path, &meta), None);
        assert_eq!(small.stats().too_large, 1, "the verdict is cached too");
        let dmeta = std::fs::metadata(dir.path()).unwrap();
        assert_eq!(ExeHashes::new(1 << 20).hash(dir.path(), &dmeta), None);
        let mut off = ExeHashes::new(0);
        assert_eq!(off.hash(&path, &meta), None);
        assert_eq!(off.stats(), ExeHashStats::default());
    }
}
