//! The profiler's processing path for `oxeye lab bench profiler`: the same symbolize, dedupe and
//! aggregate steps the agent runs on each drained sample, then folded text.

use profile::{
    FoldedValue, ProfileKind, RawStack, StackAggregate, StackTable, Symbolizer, to_folded,
};

/// Folds samples given as addresses (leaf first) into Brendan Gregg's format, sample counts.
pub fn fold(samples: &[lab::RawSample]) -> Result<String, String> {
    let mut symbolizer = Symbolizer::new();
    let mut table = StackTable::new();
    let mut aggregate = StackAggregate::new(ProfileKind::Cpu);
    for s in samples {
        let (id, stack) = symbolizer.symbolize_interned(&RawStack {
            pid: s.pid,
            comm: &s.comm,
            user: &s.user,
            user_cut_short: false,
            kernel: &s.kernel,
        });
        if table.get(id).is_none() {
            table.insert((*stack).clone());
        }
        aggregate.add(id, 1);
    }
    Ok(to_folded(&table, &aggregate, FoldedValue::Samples))
}
