//! Why loading or reading a BPF program failed, worded for the person running oxeye.

use std::io;

/// Loading, attaching or reading one of oxeye's BPF programs failed.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error("eBPF needs root (or CAP_BPF with CAP_PERFMON): running as uid {uid} with neither")]
    NotRoot { uid: u32 },
    #[error(
        "eBPF needs kernel BTF at /sys/kernel/btf/vmlinux (a kernel built with CONFIG_DEBUG_INFO_BTF=y): not found"
    )]
    NoBtf,
    #[error("the kernel refused BPF program {object}: {message}\n{verifier_log}")]
    Load {
        object: &'static str,
        message: String,
        /// What libbpf and the verifier said while loading, last lines only.
        verifier_log: String,
    },
    #[error("opening a cpu-clock perf event on cpu {cpu} failed: {source}{hint}")]
    PerfEventOpen {
        cpu: u32,
        source: io::Error,
        hint: &'static str,
    },
    #[error("attaching {program} failed: {source}")]
    Attach {
        program: &'static str,
        source: libbpf_rs::Error,
    },
    #[error("reading the online cpu list {path}: expected ranges like `0-3,5`, found {found:?}")]
    CpuList { path: &'static str, found: String },
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: io::Error,
    },
    #[error("{what}: {source}")]
    Map {
        what: &'static str,
        source: libbpf_rs::Error,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
}

pub type Result<T, E = EbpfError> = std::result::Result<T, E>;
