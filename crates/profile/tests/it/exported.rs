use std::process::Command;

use profile::{
    FoldedValue, Frame, FrameKind, PprofMeta, ProfileKind, RawStack, Stack, StackAggregate,
    StackTable, Symbolizer, to_folded, to_pprof,
};

use crate::symbolize::marker_address;

/// A profile of real symbolized frames, opened by `go tool pprof` (Debian package golang-go).
#[test]
fn go_tool_pprof_lists_the_functions() {
    let mut symbolizer = Symbolizer::new();
    let marker = symbolizer.symbolize(&RawStack {
        pid: std::process::id(),
        comm: "it",
        user: &[marker_address()],
        user_cut_short: false,
        kernel: &[],
    });
    let marker_name = marker.frames[0].function.to_string();
    let whole = Stack {
        frames: vec![
            Frame::new(FrameKind::Kernel, "do_syscall_64", "[kernel]"),
            Frame::new(FrameKind::User, "handle_request", "/usr/bin/app"),
            Frame::new(FrameKind::User, "main", "/usr/bin/app"),
            Frame::new(FrameKind::User, "__libc_start_main", "/usr/lib/libc.so.6"),
        ],
        truncated: false,
    };
    let mut stacks = StackTable::new();
    let mut aggregate = StackAggregate::new(ProfileKind::Cpu);
    let marker_id = stacks.insert(marker);
    let whole_id = stacks.insert(whole);
    for _ in 0..30 {
        aggregate.add(marker_id, 10_000_000);
    }
    for _ in 0..10 {
        aggregate.add(whole_id, 10_000_000);
    }
    let folded = to_folded(&stacks, &aggregate, FoldedValue::Samples);
    assert_eq!(
        folded,
        format!(
            "[truncated];{marker_name} 30\n__libc_start_main;main;handle_request;do_syscall_64_[k] 10\n"
        )
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cpu.pb.gz");
    let meta = PprofMeta {
        time_unix_ns: 1_764_000_000_000_000_000,
        duration_ns: 4_000_000_000,
        period_ns: 10_000_000,
    };
    std::fs::write(&path, to_pprof(&stacks, &aggregate, meta)).unwrap();
    let output = Command::new("go")
        .args(["tool", "pprof", "-top"])
        .arg(&path)
        .env("HOME", dir.path())
        .output()
        .expect("`go` must be installed (Debian package golang-go)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // 30 of 40 samples: 300ms flat, 75%.
    let marker_row = stdout
        .lines()
        .find(|l| l.contains("oxeye_profile_test_marker"))
        .unwrap_or_else(|| panic!("no marker row in:\n{stdout}"));
    assert!(
        marker_row.contains("300ms") && marker_row.contains("75.00%"),
        "{stdout}"
    );
    assert!(stdout.contains("handle_request"), "{stdout}");
    assert!(stdout.contains("Type: cpu"), "{stdout}");
}
