use ebpf::{CpuSampler, CpuSamplerConfig, StackStatus};
use profile::{FoldedValue, ProfileKind, StackAggregate, StackTable, Symbolizer, to_folded};

use crate::support::{
    Build, CALLER_FUNCTION, HOT_FUNCTION, OUTER_FUNCTION, Workload, ebpf_ready, leaf_histogram,
    sample_until_exit, workload,
};

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
    let hot: Vec<_> = samples
        .iter()
        .filter(|s| s.user_leaf().is_some_and(|f| &*f.function == HOT_FUNCTION))
        .collect();
    let whole = hot
        .iter()
        .filter(|s| {
            let names: Vec<&str> = s.stack.frames.iter().map(|f| &*f.function).collect();
            !s.stack.truncated && names.contains(&CALLER_FUNCTION) && names.contains(&"main")
        })
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

    let hot: Vec<_> = samples
        .iter()
        .filter(|s| s.user_leaf().is_some_and(|f| &*f.function == HOT_FUNCTION))
        .collect();
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
    let mut burner = Workload::spawn(&workload(Build::NoFramePointers), &["deep", "4"]);
    // The C library is mapped by the dynamic loader after exec: wait for it, so the process's
    // tables cover it.
    let maps = format!("/proc/{}/maps", burner.pid());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !std::fs::read_to_string(&maps).is_ok_and(|m| m.contains("libc.so")) {
        assert!(std::time::Instant::now() < deadline, "libc never mapped");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(
        sampler.unwind_process(burner.pid()).expect("load tables"),
        "no table for the workload"
    );
    let stats = sampler.unwind_stats();
    assert!(stats.tables >= 2 && stats.processes >= 1, "{stats:?}");
    let samples = sample_until_exit(&mut sampler, &mut symbolizer, &mut [&mut burner]);
    let leaves = leaf_histogram(&samples);
    eprintln!("{} samples, leaves {leaves:?}, {stats:?}", samples.len());
    assert!(samples.len() >= 20, "too few samples: {}", samples.len());
    assert_eq!(leaves[0].0, HOT_FUNCTION, "hottest user frame: {leaves:?}");

    let hot: Vec<_> = samples
        .iter()
        .filter(|s| s.user_leaf().is_some_and(|f| &*f.function == HOT_FUNCTION))
        .collect();
    let chain = [HOT_FUNCTION, CALLER_FUNCTION, OUTER_FUNCTION, "main"];
    let whole: Vec<_> = hot
        .iter()
        .filter(|s| {
            let users: Vec<&str> = s
                .stack
                .frames
                .iter()
                .filter(|f| f.kind == profile::FrameKind::User)
                .map(|f| &*f.function)
                .collect();
            !s.stack.truncated && users.starts_with(&chain)
        })
        .collect();
    if let Some(s) = whole.first() {
        let names: Vec<&str> = s.stack.frames.iter().map(|f| &*f.function).collect();
        eprintln!("a whole stack: {names:?}");
    }
    assert!(
        whole.len() * 10 >= hot.len() * 8,
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
