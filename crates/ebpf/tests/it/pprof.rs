use std::process::Command;

use ebpf::{CpuSampler, CpuSamplerConfig};
use profile::{PprofMeta, ProfileKind, StackAggregate, StackTable, Symbolizer, to_pprof};

use crate::support::{Build, HOT_FUNCTION, Workload, ebpf_ready, sample_until_exit, workload};

/// The whole path a profile takes: kernel samples, symbols, pprof, read by Go's own tool.
#[test]
fn go_tool_pprof_reads_the_exported_profile() {
    if !ebpf_ready("go_tool_pprof_reads_the_exported_profile") {
        return;
    }
    let config = CpuSamplerConfig::default();
    let mut sampler = CpuSampler::start(config.clone()).expect("start sampler");
    let mut symbolizer = Symbolizer::new();
    let started = std::time::SystemTime::now();
    let mut burner = Workload::spawn(&workload(Build::NoFramePointers), &["burn", "3"]);
    let samples = sample_until_exit(&mut sampler, &mut symbolizer, &mut [&mut burner]);
    assert!(!samples.is_empty());

    let mut stacks = StackTable::new();
    let mut aggregate = StackAggregate::new(ProfileKind::Cpu);
    for s in &samples {
        aggregate.add(stacks.insert(s.stack.clone()), s.sample.period_ns);
    }
    let meta = PprofMeta {
        time_unix_ns: started
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
        duration_ns: 3_000_000_000,
        period_ns: 1_000_000_000 / u64::from(config.frequency_hz),
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cpu.pb.gz");
    std::fs::write(&path, to_pprof(&stacks, &aggregate, meta)).expect("write pprof");

    let output = Command::new("go")
        .args(["tool", "pprof", "-top"])
        .arg(&path)
        .env("HOME", dir.path())
        .output()
        .expect("`go` must be installed (Debian package golang-go)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "go tool pprof failed: {stderr}");
    let first_row = stdout
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .nth(1)
        .unwrap_or_default();
    assert!(
        first_row.contains(HOT_FUNCTION),
        "the hottest row is not {HOT_FUNCTION}:\n{stdout}"
    );
    assert!(stdout.contains("[truncated]"), "{stdout}");
}
