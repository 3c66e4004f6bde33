//! What `.eh_frame` unwinding costs per sample, from the kernel's BPF run-time statistics. Run
//! it as root on a quiet machine: `cargo bench -p ebpf --bench unwind_cost`; it prints one line
//! and writes `target/lab/bench-unwind-cost.json`.
//!
//! A C program burns CPU four frames below `main`, pinned to CPU 0, and is the only boosted
//! process: the boosted-rate program (499 Hz on every CPU) records its samples only and returns
//! at once for everything else, so its run time over the burner's samples is the cost of one
//! burner sample (plus the other CPUs' early returns, the same in every case). Rounds alternate
//! between three cases: built without frame pointers and walked by `bpf_get_stackid` (one frame
//! found), the same binary unwound with its tables (whole stacks), and built with frame pointers
//! and walked by `bpf_get_stackid` (whole stacks as far as the C library, the reference).

use std::time::Duration;

use ebpf::{CpuSampler, CpuSamplerConfig, RunTimeStats};

// The tests' workload and its builds; the rest of that module is for the tests.
#[allow(dead_code)]
#[path = "../tests/it/support.rs"]
mod support;

use support::{Build, Workload, ebpf_ready, workload};

#[derive(Default)]
struct Cost {
    time_ns: u64,
    samples: u64,
    frames: u64,
}

impl Cost {
    fn add(&mut self, other: Cost) {
        self.time_ns += other.time_ns;
        self.samples += other.samples;
        self.frames += other.frames;
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "burner_samples": self.samples,
            "ns_per_sample": self.ns_per_sample(),
            "frames_per_sample": self.frames as f64 / self.samples as f64,
        })
    }

    fn ns_per_sample(&self) -> f64 {
        self.time_ns as f64 / self.samples as f64
    }
}

fn round(build: Build, with_tables: bool) -> Cost {
    let mut sampler = CpuSampler::start(CpuSamplerConfig {
        boost_frequency_hz: 499,
        ..CpuSamplerConfig::default()
    })
    .expect("start sampler");
    let mut burner = Workload(
        std::process::Command::new("taskset")
            .args(["-c", "0"])
            .arg(workload(build))
            .args(["deep", "3"])
            .spawn()
            .expect("spawn the burner"),
    );
    let pid = burner.pid();
    // taskset execs the burner: wait for the burner's own image and its C library.
    let (exe, maps) = (format!("/proc/{pid}/exe"), format!("/proc/{pid}/maps"));
    while std::fs::read_link(&exe).ok() != Some(workload(build))
        || !std::fs::read_to_string(&maps).is_ok_and(|m| m.contains("libc.so"))
    {
        std::thread::sleep(Duration::from_millis(2));
    }
    if with_tables {
        assert!(
            sampler
                .await_unwind_tables(pid, Duration::from_secs(30))
                .expect("tables")
        );
    }
    sampler.boost(pid).expect("boost");
    let boosted_time = |s: &CpuSampler| s.program_stats().expect("stats")[1].run_time_ns;
    let before = boosted_time(&sampler);
    let mut cost = Cost::default();
    while burner.running() {
        std::thread::sleep(Duration::from_millis(200));
        for s in sampler.drain().expect("drain") {
            if s.pid == pid && s.boosted {
                cost.samples += 1;
                cost.frames += s.user_stack.addresses.len() as u64;
            }
        }
    }
    cost.time_ns = boosted_time(&sampler) - before;
    cost
}

fn main() {
    if !ebpf_ready("unwind_cost") {
        return;
    }
    let _stats = RunTimeStats::enable().expect("run-time statistics");
    let (mut leaf_only, mut tables, mut frame_pointers) =
        (Cost::default(), Cost::default(), Cost::default());
    for _ in 0..3 {
        leaf_only.add(round(Build::NoFramePointers, false));
        tables.add(round(Build::NoFramePointers, true));
        frame_pointers.add(round(Build::FramePointers, false));
    }
    let figures = serde_json::json!({
        "no_frame_pointers_stackid": leaf_only.json(),
        "no_frame_pointers_tables": tables.json(),
        "frame_pointers_stackid": frame_pointers.json(),
    });
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("lab");
    std::fs::create_dir_all(&out).expect("create target/lab");
    let out = out.join("bench-unwind-cost.json");
    std::fs::write(&out, figures.to_string()).expect("write the figures");
    println!(
        "per sample of the burner: {:.0} ns with tables ({:.1} frames), {:.0} ns by bpf_get_stackid with frame pointers ({:.1} frames), {:.0} ns by bpf_get_stackid without them ({:.1} frames)",
        tables.ns_per_sample(),
        tables.frames as f64 / tables.samples as f64,
        frame_pointers.ns_per_sample(),
        frame_pointers.frames as f64 / frame_pointers.samples as f64,
        leaf_only.ns_per_sample(),
        leaf_only.frames as f64 / leaf_only.samples as f64,
    );
    println!("figures in {}", out.display());
}
