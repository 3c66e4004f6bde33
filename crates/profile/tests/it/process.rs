use std::process::Command;

use profile::{FrameKind, RawStack, Symbolizer};

const PROGRAM: &str = r#"
#include <unistd.h>
__attribute__((noinline)) void oxeye_profile_marker(void) { pause(); }
int main(void) { oxeye_profile_marker(); return 0; }
"#;

/// Compiles a small program and returns its path and the ELF address of `oxeye_profile_marker`.
fn build_program(dir: &std::path::Path) -> (std::path::PathBuf, u64) {
    let source = dir.join("marker.c");
    let binary = dir.join("marker");
    std::fs::write(&source, PROGRAM).unwrap();
    let status = Command::new("cc")
        .args(["-O1", "-g", "-o"])
        .arg(&binary)
        .arg(&source)
        .status()
        .expect("cc (build-essential) must be installed");
    assert!(status.success());
    let nm = Command::new("nm")
        .arg(&binary)
        .output()
        .expect("nm (binutils)");
    let symbols = String::from_utf8_lossy(&nm.stdout);
    let address = symbols
        .lines()
        .find_map(|l| {
            let (address, rest) = l.split_once(' ')?;
            rest.ends_with(" oxeye_profile_marker")
                .then(|| u64::from_str_radix(address, 16).ok())?
        })
        .expect("oxeye_profile_marker in nm output");
    (binary, address)
}

#[test]
fn a_process_is_described_at_first_sight_and_symbolized_after_it_exits() {
    let dir = tempfile::tempdir().unwrap();
    let (binary, elf_address) = build_program(dir.path());
    let mut child = Command::new(&binary)
        .arg("--flag")
        .env("OTEL_SERVICE_NAME", "checkout")
        .spawn()
        .unwrap();
    let pid = child.id();
    // Let it map itself and its libraries.
    std::thread::sleep(std::time::Duration::from_millis(200));

    let mut symbolizer = Symbolizer::new();
    let info = symbolizer.observe_process(pid, "marker");
    assert_eq!(info.service_name.as_deref(), Some("checkout"));
    assert_eq!(info.cmdline, [binary.to_string_lossy().as_ref(), "--flag"]);
    assert_eq!(info.exe.as_deref(), Some(binary.as_path()));
    assert!(!info.gone_at_first_sight);
    let text = info
        .mappings
        .iter()
        .find(|m| m.path == binary.to_string_lossy() && m.offset <= elf_address)
        .filter(|m| elf_address - m.offset < m.end - m.start)
        .unwrap_or_else(|| {
            panic!(
                "no mapping of the program covers {elf_address:#x}: {:?}",
                info.mappings
            )
        });
    // A PIE's text segment is mapped at its file offset: address = base + ELF address.
    let address = text.start - text.offset + elf_address;

    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());

    let stack = symbolizer.symbolize(&RawStack {
        pid,
        comm: "marker",
        user: &[address + 1],
        user_cut_short: false,
        kernel: &[],
    });
    assert_eq!(stack.frames[0].kind, FrameKind::User);
    assert_eq!(
        &*stack.frames[0].function, "oxeye_profile_marker",
        "{stack:?}"
    );
}

#[test]
fn a_process_gone_before_first_sight_is_marked() {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let mut symbolizer = Symbolizer::new();
    let info = symbolizer.observe_process(pid, "true");
    assert!(info.gone_at_first_sight);
    assert_eq!(info.comm, "true");
    let stack = symbolizer.symbolize(&RawStack {
        pid,
        comm: "true",
        user: &[0x401000],
        user_cut_short: false,
        kernel: &[],
    });
    assert_eq!(&*stack.frames[0].function, "[unknown]");
    assert!(stack.truncated);
}
