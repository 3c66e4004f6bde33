use std::time::Duration;

use ebpf::{OffCpuConfig, OffCpuProfiler, ThreadState};
use profile::{FrameKind, RawStack, Symbolizer};

use crate::support::{Build, Workload, ebpf_ready, workload};

#[test]
fn nanosleep_shows_an_off_cpu_stack_with_its_blocked_time() {
    if !ebpf_ready("nanosleep_shows_an_off_cpu_stack_with_its_blocked_time") {
        return;
    }
    let mut profiler = OffCpuProfiler::start(OffCpuConfig::default()).expect("start off-cpu");
    let mut symbolizer = Symbolizer::new();
    // 40 sleeps of 50 ms.
    let mut sleeper = Workload::spawn(&workload(Build::FramePointers), &["sleep", "2", "50"]);
    let pid = sleeper.pid();
    let mut events = Vec::new();
    let mut all_events = 0usize;
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let done = !sleeper.running();
        for event in profiler.drain().expect("drain") {
            all_events += 1;
            if event.pid == pid {
                let stack = symbolizer.symbolize(&RawStack {
                    pid: event.pid,
                    comm: &event.comm,
                    user: &event.user_stack.addresses,
                    user_cut_short: event.user_stack.is_cut_short(),
                    kernel: &event.kernel_stack.addresses,
                });
                events.push((event, stack));
            }
        }
        if done {
            break;
        }
    }
    let counters = profiler.counters().expect("counters");
    let blocked: Vec<u64> = events.iter().map(|(e, _)| e.blocked_ns).collect();
    let total_ms = blocked.iter().sum::<u64>() as f64 / 1e6;
    eprintln!(
        "{} off-cpu events of the sleeper ({all_events} in all), blocked {total_ms:.0} ms in all, counters {:?}, expired {}",
        events.len(),
        counters.kernel,
        counters.stacks_expired
    );
    // At most 40 sleeps fit in the run; on a loaded machine each wake-up waits for a CPU (that
    // wait counts as blocked), so fewer do. The first may start before the profiler is attached.
    assert!(events.len() >= 15, "{} events: {blocked:?}", events.len());
    let sleeps: Vec<_> = events
        .iter()
        .filter(|(e, _)| e.state == ThreadState::Sleeping)
        .collect();
    assert!(sleeps.len() >= 15, "sleeping events: {}", sleeps.len());
    let mut sorted: Vec<u64> = sleeps.iter().map(|(e, _)| e.blocked_ns).collect();
    sorted.sort_unstable();
    let median_ms = sorted[sorted.len() / 2] as f64 / 1e6;
    assert!(
        (49.0..250.0).contains(&median_ms),
        "median block {median_ms} ms for 50 ms sleeps"
    );
    assert!(
        (1000.0..2400.0).contains(&total_ms),
        "blocked {total_ms} ms in a 2 s run of sleeps"
    );
    let (_, stack) = sleeps[sleeps.len() / 2];
    let names: Vec<&str> = stack.frames.iter().map(|f| &*f.function).collect();
    assert!(
        stack
            .frames
            .iter()
            .any(|f| f.kind == FrameKind::Kernel && f.function.contains("schedule")),
        "kernel stack has no schedule(): {names:?}"
    );
    assert!(
        stack
            .frames
            .iter()
            .any(|f| f.kind == FrameKind::User && f.function.contains("nanosleep")),
        "user stack has no nanosleep: {names:?}"
    );
    assert!(
        names.contains(&"main"),
        "user stack does not reach main: {names:?}"
    );
    assert_eq!(counters.kernel.ring_buffer_full, 0);
    assert!(
        counters.kernel.off_cpu_short > 0,
        "short blocks are filtered in the kernel"
    );
}

#[test]
fn only_the_listed_processes_are_followed() {
    if !ebpf_ready("only_the_listed_processes_are_followed") {
        return;
    }
    let mut followed = Workload::spawn(&workload(Build::FramePointers), &["sleep", "1", "20"]);
    let mut other = Workload::spawn(&workload(Build::FramePointers), &["sleep", "1", "20"]);
    let mut profiler = OffCpuProfiler::start(OffCpuConfig {
        only_pids: Some(vec![followed.pid()]),
        min_blocked: Duration::from_millis(5),
        ..Default::default()
    })
    .expect("start off-cpu");
    let mut pids = std::collections::HashSet::new();
    while followed.running() || other.running() {
        std::thread::sleep(Duration::from_millis(200));
        pids.extend(profiler.drain().expect("drain").iter().map(|e| e.pid));
    }
    pids.extend(profiler.drain().expect("drain").iter().map(|e| e.pid));
    assert_eq!(pids.into_iter().collect::<Vec<_>>(), vec![followed.pid()]);
}

#[test]
fn the_skipped_process_is_never_followed() {
    if !ebpf_ready("the_skipped_process_is_never_followed") {
        return;
    }
    let mut skipped = Workload::spawn(&workload(Build::FramePointers), &["sleep", "1", "20"]);
    let mut other = Workload::spawn(&workload(Build::FramePointers), &["sleep", "1", "20"]);
    let mut profiler = OffCpuProfiler::start(OffCpuConfig {
        skip_pid: Some(skipped.pid()),
        min_blocked: Duration::from_millis(5),
        ..Default::default()
    })
    .expect("start off-cpu");
    let mut pids = std::collections::HashSet::new();
    while skipped.running() || other.running() {
        std::thread::sleep(Duration::from_millis(200));
        pids.extend(profiler.drain().expect("drain").iter().map(|e| e.pid));
    }
    pids.extend(profiler.drain().expect("drain").iter().map(|e| e.pid));
    assert!(
        pids.contains(&other.pid()),
        "every other process is followed"
    );
    assert!(
        !pids.contains(&skipped.pid()),
        "the skipped process was followed"
    );
}

#[test]
fn processes_can_be_followed_and_dropped_while_running() {
    if !ebpf_ready("processes_can_be_followed_and_dropped_while_running") {
        return;
    }
    let mut profiler = OffCpuProfiler::start(OffCpuConfig {
        only_pids: Some(Vec::new()),
        min_blocked: Duration::from_millis(5),
        ..Default::default()
    })
    .expect("start off-cpu");
    // Sleeps of 20 ms for 3 s.
    let mut sleeper = Workload::spawn(&workload(Build::FramePointers), &["sleep", "3", "20"]);
    let pid = sleeper.pid();
    let seen = |profiler: &mut OffCpuProfiler| {
        std::thread::sleep(Duration::from_millis(300));
        let events = profiler.drain().expect("drain");
        events.iter().filter(|e| e.pid == pid).count()
    };
    assert_eq!(seen(&mut profiler), 0, "followed before follow()");
    profiler.follow(pid).expect("follow");
    assert!(seen(&mut profiler) > 0, "no events after follow()");
    profiler.unfollow(pid).expect("unfollow");
    // A block that started before unfollow() may still be reported once.
    seen(&mut profiler);
    assert_eq!(seen(&mut profiler), 0, "events after unfollow()");
    profiler.unfollow(pid).expect("unfollowing twice is fine");
    assert!(
        sleeper.running(),
        "the sleeper ended too early for the test to mean anything"
    );
}

#[test]
fn a_block_longer_than_many_drains_keeps_its_stacks() {
    if !ebpf_ready("a_block_longer_than_many_drains_keeps_its_stacks") {
        return;
    }
    // One sleep of 1.2 s while the maps rotate every 100 ms. Only the sleeper is followed, so
    // stacks of other processes (a busy build machine) cannot collide with its own; the shell
    // waits before exec'ing the workload (same pid) so the profiler is attached by then.
    let mut sleeper = Workload(
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "sleep 0.3; exec '{}' sleep 0.5 1200",
                workload(Build::FramePointers).display()
            ))
            .spawn()
            .expect("spawn the sleeper"),
    );
    let pid = sleeper.pid();
    let mut profiler = OffCpuProfiler::start(OffCpuConfig {
        only_pids: Some(vec![pid]),
        ..OffCpuConfig::default()
    })
    .expect("start off-cpu");
    let mut long = Vec::new();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let done = !sleeper.running();
        long.extend(
            profiler
                .drain()
                .expect("drain")
                .into_iter()
                .filter(|e| e.pid == pid && e.blocked_ns > 1_000_000_000),
        );
        if done {
            break;
        }
    }
    assert_eq!(long.len(), 1, "{long:?}");
    let event = &long[0];
    assert!(event.blocked_ns < 1_500_000_000, "{event:?}");
    assert_eq!(
        event.user_stack.status,
        ebpf::StackStatus::Walked,
        "{event:?}"
    );
    assert!(event.user_stack.addresses.len() >= 2, "{event:?}");
    assert_eq!(
        event.kernel_stack.status,
        ebpf::StackStatus::Walked,
        "{event:?}"
    );
    assert_eq!(profiler.counters().expect("counters").stacks_expired, 0);
}
