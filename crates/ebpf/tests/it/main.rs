//! Real-kernel tests of the BPF programs, symbolized with `profile` as the agent does.
//! They need root; they skip without it unless `OXEYE_REQUIRE_EBPF=1`, where they fail.

mod boost;
mod cpu_sampler;
mod off_cpu;
mod pprof;
mod security;
mod support;
