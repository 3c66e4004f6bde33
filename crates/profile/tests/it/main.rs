//! Symbolization against real processes, the kernel and real files, and pprof read by Go's tool.

mod exported;
mod process;
mod symbolize;
