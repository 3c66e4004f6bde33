//! Shared by the tests: the root check, the C workload, and a loop that drains a sampler while
//! a workload runs, symbolizing as it goes (as the agent does).

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use ebpf::{CpuSample, CpuSampler};
use profile::{Frame, FrameKind, RawStack, Stack, Symbolizer};

/// True when the eBPF tests can run. They skip only when not root, and never when
/// `OXEYE_REQUIRE_EBPF=1` (CI as root), where not being root is a failure.
pub fn ebpf_ready(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var("OXEYE_REQUIRE_EBPF").as_deref() != Ok("1"),
        "{test}: OXEYE_REQUIRE_EBPF=1 but not running as root"
    );
    eprintln!("{test}: skipped: eBPF tests need root");
    false
}

pub const HOT_FUNCTION: &str = "oxeye_test_hot_function";
pub const CALLER_FUNCTION: &str = "oxeye_test_caller";
pub const OUTER_FUNCTION: &str = "oxeye_test_outer";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Build {
    FramePointers,
    NoFramePointers,
}

/// The workload binary, compiled once into the target directory (tests run as parallel
/// processes: each compiles to its own name and renames into place).
pub fn workload(build: Build) -> PathBuf {
    // clang for the frame-pointer build: GCC 12 sets up no frame in leaf functions even with
    // -fno-omit-frame-pointer, which hides the leaf's caller from any frame-pointer walk.
    let (name, compiler, flags): (&str, &str, &[&str]) = match build {
        Build::FramePointers => (
            "workload-fp",
            "clang",
            &["-O2", "-g", "-fno-omit-frame-pointer"],
        ),
        Build::NoFramePointers => ("workload-nofp", "cc", &["-O2", "-fomit-frame-pointer"]),
    };
    let source_text = include_str!("workload.c");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ebpf-workload");
    std::fs::create_dir_all(&dir).expect("create the workload directory");
    // The name changes with the source, so an edited workload is rebuilt.
    let version = source_text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let binary = dir.join(format!("{name}-{version:016x}"));
    if binary.exists() {
        return binary;
    }
    let source = dir.join(format!("{name}.{}.c", std::process::id()));
    let partial = dir.join(format!("{name}.{}.partial", std::process::id()));
    std::fs::write(&source, source_text).expect("write workload.c");
    let status = Command::new(compiler)
        .args(flags)
        .arg("-o")
        .arg(&partial)
        .arg(&source)
        .status()
        .unwrap_or_else(|e| panic!("running {compiler}: {e}"));
    assert!(status.success(), "compiling the workload failed");
    std::fs::rename(&partial, &binary).expect("move the workload into place");
    let _ = std::fs::remove_file(&source);
    binary
}

/// A running workload, killed when dropped.
pub struct Workload(pub Child);

impl Workload {
    pub fn spawn(binary: &Path, args: &[&str]) -> Self {
        Self(
            Command::new(binary)
                .args(args)
                .spawn()
                .expect("spawn workload"),
        )
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    pub fn running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A sample with its symbolized stack.
pub struct Symbolized {
    pub sample: CpuSample,
    pub stack: Stack,
}

impl Symbolized {
    /// The innermost user-code frame.
    pub fn user_leaf(&self) -> Option<&Frame> {
        self.stack.frames.iter().find(|f| f.kind == FrameKind::User)
    }

    /// True when the innermost user-code frame is `function`.
    pub fn leaf_is(&self, function: &str) -> bool {
        self.user_leaf().is_some_and(|f| &*f.function == function)
    }

    /// Every frame's function, innermost first.
    pub fn names(&self) -> Vec<&str> {
        self.stack.frames.iter().map(|f| &*f.function).collect()
    }

    /// The user-code frames' functions, innermost first.
    pub fn user_names(&self) -> Vec<&str> {
        self.stack
            .frames
            .iter()
            .filter(|f| f.kind == FrameKind::User)
            .map(|f| &*f.function)
            .collect()
    }

    /// True when some frame is `function`.
    pub fn has_frame(&self, function: &str) -> bool {
        self.stack.frames.iter().any(|f| &*f.function == function)
    }
}

pub fn symbolize(symbolizer: &mut Symbolizer, sample: &CpuSample) -> Stack {
    symbolizer.symbolize(&RawStack {
        pid: sample.pid,
        comm: &sample.comm,
        user: &sample.user_stack.addresses,
        user_cut_short: sample.user_stack.is_cut_short(),
        kernel: &sample.kernel_stack.addresses,
    })
}

/// Drains `sampler` every 250 ms until every workload has exited (and once more), keeping the
/// samples of their pids, symbolized as they arrive.
pub fn sample_until_exit(
    sampler: &mut CpuSampler,
    symbolizer: &mut Symbolizer,
    workloads: &mut [&mut Workload],
) -> Vec<Symbolized> {
    let pids: Vec<u32> = workloads.iter().map(|w| w.pid()).collect();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let done = workloads.iter_mut().all(|w| !w.running());
        for sample in sampler.drain().expect("drain") {
            if pids.contains(&sample.pid) {
                let stack = symbolize(symbolizer, &sample);
                out.push(Symbolized { sample, stack });
            }
        }
        if done || std::time::Instant::now() > deadline {
            return out;
        }
    }
}

/// How often each function is the innermost user frame, most frequent first.
pub fn leaf_histogram(samples: &[Symbolized]) -> Vec<(String, usize)> {
    let mut counts = std::collections::HashMap::<String, usize>::new();
    for s in samples {
        let name = s
            .user_leaf()
            .map_or("[no user frame]".to_string(), |f| f.function.to_string());
        *counts.entry(name).or_default() += 1;
    }
    let mut sorted: Vec<_> = counts.into_iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    sorted
}
