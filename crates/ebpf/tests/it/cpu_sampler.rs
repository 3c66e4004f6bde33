use ebpf::{CpuSampler, CpuSamplerConfig, StackStatus};
use profile::{FoldedValue, ProfileKind, StackAggregate, StackTable, Symbolizer, to_folded};

use crate::support::{
    Build, CALLER_FUNCTION, HOT_FUNCTION, OUTER_FUNCTION, Workload, ebpf_ready, leaf_histogram,
    sample_until_exit, workload,
};

/// How long a test waits for the builder thread to load a process's tables.
const TABLES_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

#[test]
fn hot_function_is_the_hottest_user_frame_with_frame_pointers() {
    if !ebpf_ready("hot_function_is_the_hottest_user_frame_with_frame_pointers") {
        return;
    }
    let mut sampler = CpuSampler::start(CpuSamplerConfig::default()).expect("start sampler");
    let mut symbolizer = Symbolizer::new();
    let started = std::time::Instant::now();
    let mut burner = Workload::spawn(&workload(Build::FramePointers), &["burn", "4"]);
    let samples = sample_until_exit(&mut sampler, &mut symbolizer, &mut [&mut burner]);
    let elapsed = started.elapsed().as_secs_f64();
    let counters = sampler.counters().expect("counters");
    let leaves = leaf_histogram(&samples);
    eprintln!(
        "{} samples of the burner in {elapsed:.1}s ({:.1}/s), leaves {leaves:?}, counters {:?}",
        samples.len(),
        samples.len() as f64 / elapsed,
        counters.kernel
    );
    assert!(samples.len() >= 20, "too few samples: {}", samples.len());
    assert_eq!(leaves[0].0, HOT_FUNCTION, "hottest user frame: {leaves:?}");
    assert!(leaves[0].1 * 10 >= samples.len() * 8, "{leaves:?}");

    // With frame pointers the walk reaches main and the C library's start code: whole stacks.
    let hot: Vec<_> = samples.iter().filter(|s| s.leaf_is(HOT_FUNCTION)).collect();
    let whole = hot
        .iter()
        .filter(|s| !s.stack.truncated && s.has_frame(CALLER_FUNCTION) && s.has_frame("main"))
        .count();
    assert!(
        whole * 10 >= hot.len() * 8,
        "{whole} of {} hot stacks whole; e.g. {:?}",
        hot.len(),
        hot.first().map(|s| &s.stack)
    );
    // DWARF is there (-g): the hot frame has a source line.
    assert!(
        hot.iter()
            .any(|s| s.user_leaf().is_some_and(|f| f.line.is_some()))
    );
    assert_eq!(counters.kernel.ring_buffer_full, 0);
    // The counters cover every process on the host (other tests run meanwhile): a hash-bucket
    // collision elsewhere is possible and counted, but must stay rare.
    assert!(
        counters.stacks_lost() * 20 <= counters.kernel.records,
        "stacks lost: {counters:?}"
    );
    assert_eq!(counters.malformed_records, 0);

    let mut stacks = StackTable::new();
    let mut aggregate = StackAggregate::new(ProfileKind::Cpu);
    for s in &samples {
        aggregate.add(stacks.insert(s.stack.clone()), s.sample.period_ns);
    }
    let folded = to_folded(&stacks, &aggregate, FoldedValue::Samples);
    let top = folded.lines().next().unwrap_or_default();
    assert!(
        top.contains(&format!("main;{CALLER_FUNCTION};{HOT_FUNCTION}")),
        "{folded}"
    );
}

#[test]
fn leaf_is_right_and_stack_flagged_truncated_without_frame_pointers() {
    if !ebpf_ready("leaf_is_right_and_stack_flagged_truncated_without_frame_pointers") {
        return;
    }
    let mut sampler = CpuSampler::start(CpuSamplerConfig::default()).expect("start sampler");
    let mut symbolizer = Symbolizer::new();
    let mut burner = Workload::spawn(&workload(Build::NoFramePointers), &["burn", "4"]);
    let samples = sample_until_exit(&mut sampler, &mut symbolizer, &mut [&mut burner]);
    let leaves = leaf_histogram(&samples);
    eprintln!("{} samples, leaves {leaves:?}", samples.len());
    assert!(samples.len() >= 20, "too few samples: {}", samples.len());
    assert_eq!(leaves[0].0, HOT_FUNCTION, "hottest user frame: {leaves:?}");

    let hot: Vec<_> = samples.iter().filter(|s| s.leaf_is(HOT_FUNCTION)).collect();
    // Nothing past the leaf can be trusted, so no hot stack may pass for whole.
    let whole: Vec<_> = hot.iter().filter(|s| !s.stack.truncated).collect();
    assert!(
        whole.is_empty(),
        "{} of {} stacks without frame pointers claim to be whole, e.g. {:?}",
        whole.len(),
        hot.len(),
        whole.first().map(|s| (&s.stack, &s.sample.user_stack))
    );
    // The leaf comes from the sampled registers even when the walk failed.
    for s in &hot {
        assert_ne!(s.sample.user_stack.status, StackStatus::Absent);
    }
}

#[test]
fn eh_frame_tables_give_whole_stacks_without_frame_pointers() {
    if !ebpf_ready("eh_frame_tables_give_whole_stacks_without_frame_pointers") {
        return;
    }
    let mut sampler = CpuSampler::start(CpuSamplerConfig::default()).expect("start sampler");
    let mut symbolizer = Symbolizer::new();
    let mut burner = unwound_workload(&mut sampler, &["deep", "4"]);
    let stats = sampler.unwind_stats();
    assert!(stats.tables >= 2 && stats.processes >= 1, "{stats:?}");
    let loaded = ebpf::monotonic_nanos();
    let mut samples = sample_until_exit(&mut sampler, &mut symbolizer, &mut [&mut burner]);
    // Samples taken before the tables were there were walked by frame pointers.
    samples.retain(|s| s.sample.ktime_ns > loaded);
    let leaves = leaf_histogram(&samples);
    eprintln!("{} samples, leaves {leaves:?}, {stats:?}", samples.len());
    assert!(samples.len() >= 20, "too few samples: {}", samples.len());
    assert_eq!(leaves[0].0, HOT_FUNCTION, "hottest user frame: {leaves:?}");

    let hot: Vec<_> = samples.iter().filter(|s| s.leaf_is(HOT_FUNCTION)).collect();
    let chain = [HOT_FUNCTION, CALLER_FUNCTION, OUTER_FUNCTION, "main"];
    let whole: Vec<_> = hot
        .iter()
        .filter(|s| !s.stack.truncated && s.user_names().starts_with(&chain))
        .collect();
    if let Some(s) = whole.first() {
        eprintln!("a whole stack: {:?}", s.names());
    }
    assert!(
        whole.len() * 10 >= hot.len() * 9,
        "{} of {} hot stacks whole through {chain:?}; e.g. {:?}",
        whole.len(),
        hot.len(),
        hot.iter().find(|s| s.stack.truncated).map(|s| &s.stack)
    );
    assert_eq!(sampler.counters().expect("counters").malformed_records, 0);
}

#[test]
fn configuration_errors_say_what_was_expected() {
    let error = CpuSampler::start(CpuSamplerConfig {
        frequency_hz: 0,
        ..Default::default()
    })
    .err()
    .expect("a zero frequency is refused");
    assert_eq!(
        error.to_string(),
        "invalid configuration: frequency_hz must be between 1 and 10000, found 0"
    );
    let error = CpuSampler::start(CpuSamplerConfig {
        ring_buffer_bytes: 3000,
        ..Default::default()
    })
    .err()
    .expect("a ring buffer that is no power of two is refused");
    assert!(error.to_string().contains("power of two"), "{error}");
}

#[test]
fn debians_python_gets_whole_stacks_from_its_eh_frame() {
    if !ebpf_ready("debians_python_gets_whole_stacks_from_its_eh_frame") {
        return;
    }
    let mut sampler = CpuSampler::start(CpuSamplerConfig::default()).expect("start sampler");
    let mut symbolizer = Symbolizer::new();
    // Debian builds python3 without frame pointers: a frame-pointer walk stops at the leaf.
    let mut python = Workload(
        std::process::Command::new("python3")
            .args([
                "-c",
                // In a thread: its stack starts in the C library's clone3, not in _start.
                "import threading, time\ndef spin(end):\n    while time.process_time() < end: pass\n\
                 t = threading.Thread(target=spin, args=(time.process_time() + 4,))\nt.start()\nt.join()",
            ])
            .spawn()
            .expect("run python3"),
    );
    wait_for_libc(python.pid());
    // Let the interpreter finish loading its modules, then load the tables.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        sampler
            .await_unwind_tables(python.pid(), TABLES_WITHIN)
            .expect("load tables")
    );
    let loaded = ebpf::monotonic_nanos();
    let samples = sample_until_exit(&mut sampler, &mut symbolizer, &mut [&mut python]);
    // Samples taken before the tables were there were walked by frame pointers.
    let user: Vec<_> = samples
        .iter()
        .filter(|s| s.sample.ktime_ns > loaded && !s.sample.user_stack.addresses.is_empty())
        .collect();
    let whole: Vec<_> = user.iter().filter(|s| !s.stack.truncated).collect();
    let through_eval: Vec<_> = whole
        .iter()
        .filter(|s| s.names().iter().any(|f| f.contains("EvalFrame")) && s.has_frame("thread_run"))
        .collect();
    let deep = through_eval.len();
    if let Some(s) = through_eval.first() {
        eprintln!("a whole python stack: {:?}", s.names());
    }
    eprintln!(
        "{} samples, {} whole, {deep} through the eval loop",
        user.len(),
        whole.len()
    );
    assert!(user.len() >= 20, "too few samples: {}", user.len());
    assert!(
        whole.len() * 10 >= user.len() * 9 && deep * 10 >= whole.len() * 9,
        "{} of {} python stacks whole, {deep} through the eval loop; e.g. {:?}",
        whole.len(),
        user.len(),
        user.iter().find(|s| s.stack.truncated).map(|s| &s.stack)
    );
}

/// The workload built without frame pointers, run with `args` and handed to the unwinder once
/// its C library is mapped.
fn unwound_workload(sampler: &mut CpuSampler, args: &[&str]) -> Workload {
    let burner = Workload::spawn(&workload(Build::NoFramePointers), args);
    wait_for_libc(burner.pid());
    assert!(
        sampler
            .await_unwind_tables(burner.pid(), TABLES_WITHIN)
            .expect("load tables"),
        "no table for the workload"
    );
    burner
}

/// Waits (up to 10 s) until the dynamic loader has mapped the C library into `pid`, so the
/// tables loaded next cover it.
fn wait_for_libc(pid: u32) {
    let maps = format!("/proc/{pid}/maps");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !std::fs::read_to_string(&maps).is_ok_and(|m| m.contains("libc.so")) {
        assert!(std::time::Instant::now() < deadline, "libc never mapped");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn a_process_that_execs_is_unwound_with_its_new_images_tables() {
    if !ebpf_ready("a_process_that_execs_is_unwound_with_its_new_images_tables") {
        return;
    }
    let mut sampler = CpuSampler::start(CpuSamplerConfig::default()).expect("start sampler");
    let mut symbolizer = Symbolizer::new();
    let burner = workload(Build::NoFramePointers);
    // The shell's tables are loaded first; then the same pid runs the burner.
    let mut process = Workload(
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("sleep 0.5; exec {} deep 3", burner.display()))
            .spawn()
            .expect("run sh"),
    );
    let pid = process.pid();
    wait_for_libc(pid);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    assert!(
        sampler
            .await_unwind_tables(pid, TABLES_WITHIN)
            .expect("the shell's tables")
    );
    // As the agent does: every process seen is handed over after each drain.
    let mut samples = Vec::new();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(250));
        let running = process.running();
        for sample in sampler.drain().expect("drain") {
            if sample.pid == pid {
                let stack = crate::support::symbolize(&mut symbolizer, &sample);
                samples.push(crate::support::Symbolized { sample, stack });
            }
        }
        if running {
            sampler.unwind_process(pid).expect("tables");
            sampler.refresh_unwinding().expect("refresh");
        } else {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the shell ran too long"
        );
    }
    let hot: Vec<_> = samples.iter().filter(|s| s.leaf_is(HOT_FUNCTION)).collect();
    let whole = hot
        .iter()
        .filter(|s| !s.stack.truncated && s.has_frame(OUTER_FUNCTION))
        .count();
    eprintln!("{} hot samples after exec, {whole} whole", hot.len());
    assert!(hot.len() >= 20, "too few samples: {}", hot.len());
    assert!(
        whole * 10 >= hot.len() * 8,
        "{whole} of {} hot stacks whole after exec; e.g. {:?}",
        hot.len(),
        hot.iter().find(|s| s.stack.truncated).map(|s| &s.stack)
    );
}

#[test]
fn a_walk_stopped_by_a_signal_frame_is_marked_truncated() {
    if !ebpf_ready("a_walk_stopped_by_a_signal_frame_is_marked_truncated") {
        return;
    }
    let mut sampler = CpuSampler::start(CpuSamplerConfig::default()).expect("start sampler");
    let mut symbolizer = Symbolizer::new();
    // The signal frame's CFI (glibc's __restore_rt) restores registers with DWARF expressions,
    // which the tables cannot follow: the walk must stop there and say so.
    let mut burner = unwound_workload(&mut sampler, &["signal", "3"]);
    let loaded = ebpf::monotonic_nanos();
    let mut samples = sample_until_exit(&mut sampler, &mut symbolizer, &mut [&mut burner]);
    samples.retain(|s| s.sample.ktime_ns > loaded);
    let hot: Vec<_> = samples.iter().filter(|s| s.leaf_is(HOT_FUNCTION)).collect();
    assert!(hot.len() >= 20, "too few samples: {}", hot.len());
    // Unwound up to the handler...
    let to_handler = hot
        .iter()
        .filter(|s| s.has_frame("oxeye_test_signal_handler"))
        .count();
    assert!(
        to_handler * 10 >= hot.len() * 9,
        "{to_handler} of {}",
        hot.len()
    );
    // ...and none passes for whole.
    let whole: Vec<_> = hot.iter().filter(|s| !s.stack.truncated).collect();
    assert!(
        whole.is_empty(),
        "{} of {} stacks through a signal frame claim to be whole, e.g. {:?}",
        whole.len(),
        hot.len(),
        whole.first().map(|s| &s.stack)
    );
}

#[test]
fn the_tables_of_an_exited_process_are_freed_at_the_next_refresh() {
    if !ebpf_ready("the_tables_of_an_exited_process_are_freed_at_the_next_refresh") {
        return;
    }
    let mut sampler = CpuSampler::start(CpuSamplerConfig::default()).expect("start sampler");
    let burner = unwound_workload(&mut sampler, &["deep", "30"]);
    let loaded = sampler.unwind_stats();
    assert!(loaded.rows > 0 && loaded.tables >= 2, "{loaded:?}");
    drop(burner);
    // The refresh runs at most every 10 s.
    std::thread::sleep(std::time::Duration::from_millis(10_500));
    sampler.refresh_unwinding().expect("refresh");
    let after = sampler.unwind_stats();
    assert_eq!(
        (after.rows, after.tables, after.processes),
        (0, 0, 0),
        "{after:?}"
    );
}
