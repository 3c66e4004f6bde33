//! Symbolized frames and stacks, and the stable id a stack is stored under.

use std::sync::Arc;

/// Where a frame's code lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FrameKind {
    /// Code from an ELF file mapped by the process.
    User,
    /// Code a JIT announced in `/tmp/perf-<pid>.map`.
    Jit,
    Kernel,
}

impl FrameKind {
    /// The suffix text formats give the function name (`stackcollapse-perf --kernel` style), so
    /// flame graph tools and stored stacks tell kernel and JIT frames apart.
    pub fn name_suffix(self) -> &'static str {
        match self {
            FrameKind::User => "",
            FrameKind::Jit => "_[j]",
            FrameKind::Kernel => "_[k]",
        }
    }
}

/// One function activation, as a person reads it. Frames that differ only in address are equal,
/// so stacks of the same code dedupe across processes and runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frame {
    pub kind: FrameKind,
    /// Function name (demangled); `module+0xoffset` when the module has no symbol for it.
    pub function: Arc<str>,
    /// Path of the ELF file, `[kernel]`, `[jit]` or `[unknown]`.
    pub module: Arc<str>,
    /// Source file and line, when DWARF says.
    pub file: Option<Arc<str>>,
    pub line: Option<u32>,
    /// This frame was inlined into the next (outer) one.
    pub inlined: bool,
}

impl Frame {
    pub fn new(kind: FrameKind, function: &str, module: &str) -> Self {
        Self {
            kind,
            function: Arc::from(function),
            module: Arc::from(module),
            file: None,
            line: None,
            inlined: false,
        }
    }
}

/// A symbolized stack, leaf first (kernel frames, then user frames).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Stack {
    pub frames: Vec<Frame>,
    /// The stack does not reach its root (frame pointers missing, depth limit, stack lost):
    /// its frames are right but its callers are unknown. Shown under a `[truncated]` root.
    pub truncated: bool,
}

/// The id a stack is stored and joined under: a hash of its frames that is the same in every
/// process and every run (FNV-1a, not `std`'s randomly keyed hasher).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StackId(pub u64);

impl Stack {
    pub fn id(&self) -> StackId {
        let mut hash = Fnv1a::default();
        hash.write(&[u8::from(self.truncated)]);
        for frame in &self.frames {
            hash.write(&[frame.kind as u8, u8::from(frame.inlined)]);
            hash.write_str(&frame.function);
            hash.write_str(&frame.module);
            hash.write_str(frame.file.as_deref().unwrap_or(""));
            hash.write(&frame.line.unwrap_or(0).to_le_bytes());
        }
        StackId(hash.0)
    }
}

struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// Length-prefixed so that ("ab","c") and ("a","bc") differ.
    fn write_str(&mut self, s: &str) {
        self.write(&(s.len() as u64).to_le_bytes());
        self.write(s.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(names: &[&str], truncated: bool) -> Stack {
        Stack {
            frames: names
                .iter()
                .map(|n| Frame::new(FrameKind::User, n, "/bin/app"))
                .collect(),
            truncated,
        }
    }

    #[test]
    fn stack_ids_are_stable_and_tell_stacks_apart() {
        let a = stack(&["leaf", "main"], false);
        assert_eq!(a.id(), stack(&["leaf", "main"], false).id());
        assert_ne!(a.id(), stack(&["leaf", "main"], true).id());
        assert_ne!(a.id(), stack(&["leafm", "ain"], false).id());
        // Pinned: the id is persisted, so it must not change between builds.
        assert_eq!(stack(&[], false).id(), StackId(0xaf63bd4c8601b7df));
    }
}
