//! Compiles every `src/bpf/<name>.bpf.c` with clang and generates its libbpf-rs skeleton as
//! `$OUT_DIR/<name>.skel.rs`. `src/bpf/vmlinux.h` is committed, so no bpftool is needed.

use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const PROGRAMS: &[&str] = &["cpu_sampler", "off_cpu", "security", "syscall_floor"];

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    let bpf_dir = manifest.join("src").join("bpf");
    for name in PROGRAMS {
        let source = bpf_dir.join(format!("{name}.bpf.c"));
        SkeletonBuilder::new()
            .source(&source)
            .clang_args([
                "-I".into(),
                bpf_dir.clone().into_os_string(),
                "-Wall".into(),
                "-Werror".into(),
            ])
            .build_and_generate(out.join(format!("{name}.skel.rs")))
            .unwrap_or_else(|e| panic!("building {}: {e:#}", source.display()));
        println!("cargo:rerun-if-changed={}", source.display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        bpf_dir.join("common.bpf.h").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        bpf_dir.join("vmlinux.h").display()
    );
}
