//! What `.eh_frame` unwinding costs per sample, from the kernel's BPF run-time statistics.
//! A measurement, not a check: ignored by default; run it on a quiet machine with
//! `OXEYE_REQUIRE_EBPF=1 cargo nextest run -p ebpf --run-ignored only -E 'test(unwind_cost)' --no-capture`.
//!
//! A C program burns CPU four frames below `main`, pinned to CPU 0, while the sampler runs at
//! 499 Hz; rounds alternate between three cases: built without frame pointers and walked by
//! `bpf_get_stackid` (one frame found), the same binary unwound with its tables (whole stacks),
//! and built with frame pointers and walked by `bpf_get_stackid` (whole stacks, the reference). The base program's run time over its
//! run count is averaged over every CPU's samples (other processes and idle ones too), so the
//! extra cost per sample of the burner is the difference divided by its share of the runs.

use std::time::Duration;

use ebpf::{CpuSampler, CpuSamplerConfig, RunTimeStats};

use crate::support::{Build, Workload, ebpf_ready, workload};

struct Round {
    runs: u64,
    time_ns: u64,
    burner_samples: u64,
    frames: u64,
}

fn round(build: Build, with_tables: bool) -> Round {
    let mut sampler = CpuSampler::start(CpuSamplerConfig {
        frequency_hz: 499,
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
    let maps = format!("/proc/{}/maps", burner.pid());
    while !std::fs::read_to_string(&maps).is_ok_and(|m| m.contains("libc.so")) {
        std::thread::sleep(Duration::from_millis(5));
    }
    if with_tables {
        assert!(sampler.unwind_process(burner.pid()).expect("tables"));
    }
    let counts = |s: &CpuSampler| {
        let base = &s.program_stats().expect("stats")[0];
        (base.run_count, base.run_time_ns)
    };
    let before = counts(&sampler);
    let (mut burner_samples, mut frames) = (0u64, 0u64);
    while burner.running() {
        std::thread::sleep(Duration::from_millis(200));
        for s in sampler.drain().expect("drain") {
            if s.pid == burner.pid() {
                burner_samples += 1;
                frames += s.user_stack.addresses.len() as u64;
            }
        }
    }
    let after = counts(&sampler);
    Round {
        runs: after.0 - before.0,
        time_ns: after.1 - before.1,
        burner_samples,
        frames,
    }
}

#[test]
#[ignore = "a measurement: run it alone on a quiet machine"]
fn unwind_cost() {
    if !ebpf_ready("unwind_cost") {
        return;
    }
    let _stats = RunTimeStats::enable().expect("run-time statistics");
    let (mut fp, mut tables, mut whole_fp) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        fp.push(round(Build::NoFramePointers, false));
        tables.push(round(Build::NoFramePointers, true));
        whole_fp.push(round(Build::FramePointers, false));
    }
    let sum = |rounds: &[Round]| {
        rounds.iter().fold((0, 0, 0, 0), |a, r| {
            (
                a.0 + r.runs,
                a.1 + r.time_ns,
                a.2 + r.burner_samples,
                a.3 + r.frames,
            )
        })
    };
    let (fp_runs, fp_ns, fp_burner, fp_frames) = sum(&fp);
    let (t_runs, t_ns, t_burner, t_frames) = sum(&tables);
    let (w_runs, w_ns, w_burner, w_frames) = sum(&whole_fp);
    let w_avg = w_ns as f64 / w_runs as f64;
    let w_extra = (w_avg - fp_ns as f64 / fp_runs as f64) / (w_burner as f64 / w_runs as f64);
    let fp_avg = fp_ns as f64 / fp_runs as f64;
    let t_avg = t_ns as f64 / t_runs as f64;
    let share = t_burner as f64 / t_runs as f64;
    let extra = (t_avg - fp_avg) / share;
    println!(
        "{}",
        serde_json::json!({
            "frame_pointers": { "runs": fp_runs, "ns_per_run": fp_avg, "burner_samples": fp_burner,
                                "frames_per_burner_sample": fp_frames as f64 / fp_burner as f64 },
            "tables": { "runs": t_runs, "ns_per_run": t_avg, "burner_samples": t_burner,
                        "frames_per_burner_sample": t_frames as f64 / t_burner as f64 },
            "frame_pointer_build": { "runs": w_runs, "ns_per_run": w_avg, "burner_samples": w_burner,
                                     "frames_per_burner_sample": w_frames as f64 / w_burner as f64 },
            "burner_share_of_runs": share,
            "extra_ns_per_unwound_sample": extra,
            "extra_ns_per_frame_pointer_walked_sample": w_extra,
        })
    );
    println!(
        "per run: {fp_avg:.0} ns by frame pointers without them, {t_avg:.0} ns with tables, {w_avg:.0} ns by frame pointers with them; the burner's share {:.0} %, so its {:.1}-frame stacks cost {extra:.0} ns more per sample unwound with tables and {w_extra:.0} ns more walked by frame pointers than bpf_get_stackid's {:.1}-frame walk",
        share * 100.0,
        t_frames as f64 / t_burner as f64,
        fp_frames as f64 / fp_burner as f64
    );
}
