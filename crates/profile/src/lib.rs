//! Turning stack samples into profiles: symbolization (blazesym), process metadata, stack
//! deduplication, aggregation, bottleneck ranking, and the folded and pprof formats. Takes addresses from any
//! source — the eBPF sampler is one — and loads no BPF itself.

mod aggregate;
pub mod bottleneck;
mod folded;
mod frame;
mod perf_map;
mod pprof;
mod process;
mod symbolize;

pub use aggregate::{ProfileKind, SampleRecord, StackAggregate, StackTable, Totals};
pub use folded::{FoldedValue, TRUNCATED_FRAME, to_folded};
pub use frame::{Frame, FrameKind, Stack, StackId};
pub use pprof::{PprofMeta, PprofProfile, to_pprof, to_pprof_message};
pub use process::{
    Mapping, ProcessInfo, container_id as container_id_from_cgroup,
    service_name as service_name_from_environ,
};
pub use symbolize::{RawStack, Symbolizer, SymbolizerStats};
