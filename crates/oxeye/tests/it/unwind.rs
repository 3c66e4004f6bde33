//! `.eh_frame` unwinding through the whole agent: `oxeye up` profiles a C program built without
//! frame pointers, and its stored stacks are whole (main down to the C library's start code),
//! not marked truncated. Needs root; skipped otherwise, except with `OXEYE_REQUIRE_EBPF=1`.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::boost::{Killed, ebpf_ready, http, http_text};

const CHAIN: &str = "main;oxeye_unwind_test_outer;oxeye_unwind_test_middle;oxeye_unwind_test_hot";

/// Burns CPU three calls below main, compiled with `-O2 -fomit-frame-pointer`.
fn burner_without_frame_pointers(dir: &std::path::Path) -> std::path::PathBuf {
    let src = dir.join("deep.c");
    std::fs::write(
        &src,
        "__attribute__((noinline)) unsigned long oxeye_unwind_test_hot(unsigned long n) {\n\
         unsigned long x = 88172645463325252ul;\n\
         for (unsigned long i = 0; i < n; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; }\n\
         return x; }\n\
         __attribute__((noinline)) unsigned long oxeye_unwind_test_middle(unsigned long n) {\n\
         return oxeye_unwind_test_hot(n) + 1; }\n\
         __attribute__((noinline)) unsigned long oxeye_unwind_test_outer(unsigned long n) {\n\
         return oxeye_unwind_test_middle(n) * 3; }\n\
         int main(void) { volatile unsigned long s = 0;\n\
         for (;;) s += oxeye_unwind_test_outer(1000000 + (s & 1)); }\n",
    )
    .expect("write the burner");
    let bin = dir.join("deep");
    let ok = Command::new("cc")
        .args(["-O2", "-fomit-frame-pointer", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .expect("run cc")
        .success();
    assert!(ok, "compiling the burner failed");
    bin
}

/// What `oxeye up` logged about the unwinder's handling of `pid` and of the tables it loaded.
fn unwinder_log(dir: &std::path::Path, pid: u32) -> String {
    let pid = format!("pid={pid}");
    std::fs::read_to_string(dir.join("stderr"))
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.contains(&pid)
                || l.contains("unwind table")
                || l.contains("no room")
                || l.contains("libc.so")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The body of a GET as text; the status must be 200.
fn get_text(addr: &str, path: &str) -> String {
    let (status, body) = http_text(addr, "GET", path, None);
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

#[test]
fn a_program_without_frame_pointers_gets_whole_stacks_from_eh_frame() {
    if !ebpf_ready() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = crate::oxeye_up(dir.path());
    cmd.args(["--off-cpu", "off", "--profile-budget", "100%"])
        .env(
            "OXEYE_LOG",
            "info,h2=warn,hyper=warn,datafusion=warn,ebpf::unwind=debug",
        );
    let (_up, banner) = crate::start_up(cmd, &dir.path().join("stderr"));
    assert!(
        banner.profiler.contains("Hz per CPU"),
        "profiling is not on: {}",
        banner.profiler
    );
    let api = banner.api;

    let burner = Killed(
        Command::new(burner_without_frame_pointers(dir.path()))
            .spawn()
            .expect("start the burner"),
    );
    let pid = burner.0.id();
    // The first samples of a process are walked by frame pointers (its tables load when the
    // agent first sees it) and are truncated; from then on its stacks are whole.
    let deadline = Instant::now() + Duration::from_secs(90);
    let (mut whole, mut hot, mut folded) = (0u64, 0u64, String::new());
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(2));
        folded = get_text(&api, &format!("/api/v1/profiles/folded?pid={pid}"));
        let counts = |keep: &dyn Fn(&str) -> bool| -> u64 {
            folded
                .lines()
                .filter_map(|l| l.rsplit_once(' '))
                .filter(|(stack, _)| keep(stack))
                .filter_map(|(_, n)| n.parse::<u64>().ok())
                .sum()
        };
        hot = counts(&|s| s.ends_with("oxeye_unwind_test_hot"));
        whole = counts(&|s| !s.starts_with("[truncated]") && s.ends_with(CHAIN));
        if whole >= 40 && whole * 10 >= hot * 7 {
            break;
        }
    }
    assert!(
        whole >= 40 && whole * 10 >= hot * 7,
        "{whole} of {hot} hot samples whole through {CHAIN}:\n{folded}\nprofiler status: {}\n\
         maps:\n{}\nunwinder's log for the burner:\n{}",
        get_text(&api, "/api/v1/profiles/status"),
        std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default(),
        unwinder_log(dir.path(), pid)
    );
    // Whole means it reaches the C library's start code, below main.
    assert!(
        folded
            .lines()
            .any(|l| l.starts_with("_start;") && l.contains(CHAIN)),
        "{folded}"
    );
    let (_, status) = http(&api, "GET", "/api/v1/profiles/status", None);
    let tables = &status["unwind_tables"];
    assert!(tables["processes"].as_u64() >= Some(1), "{status}");
    assert!(tables["files"].as_u64() >= Some(2), "{status}");
    drop(burner);
}
