//! Deduplicated stacks and per-stack totals: the shape the store keeps (`profile_stacks`: one
//! row per distinct stack; `profile_samples`: rows pointing at a stack id) and the input of
//! every output format.

use std::collections::HashMap;

use crate::frame::{Stack, StackId};

/// What a profile measures. Values are nanoseconds in both cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProfileKind {
    /// On-CPU samples; each weighs its sampling period.
    Cpu,
    /// Time threads spent switched out.
    OffCpu,
}

/// One sample, as stored: a stack id instead of the stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleRecord {
    pub time_unix_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub kind: ProfileKind,
    pub stack_id: StackId,
    /// Nanoseconds: CPU time for on-CPU samples, blocked time for off-CPU ones.
    pub value_ns: u64,
}

/// Every distinct stack seen, by id.
#[derive(Debug, Default, Clone)]
pub struct StackTable {
    stacks: HashMap<StackId, Stack>,
}

impl StackTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps the stack if new; returns its id either way.
    pub fn insert(&mut self, stack: Stack) -> StackId {
        let id = stack.id();
        self.stacks.entry(id).or_insert(stack);
        id
    }

    pub fn get(&self, id: StackId) -> Option<&Stack> {
        self.stacks.get(&id)
    }

    pub fn len(&self) -> usize {
        self.stacks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stacks.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (StackId, &Stack)> {
        self.stacks.iter().map(|(id, stack)| (*id, stack))
    }
}

/// Sample count and summed value of one stack.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub samples: u64,
    pub value_ns: u64,
}

/// Totals per stack for one profile (a time range, a process, a service…).
#[derive(Debug, Clone)]
pub struct StackAggregate {
    pub kind: ProfileKind,
    totals: HashMap<StackId, Totals>,
}

impl StackAggregate {
    pub fn new(kind: ProfileKind) -> Self {
        Self {
            kind,
            totals: HashMap::new(),
        }
    }

    pub fn add(&mut self, stack: StackId, value_ns: u64) {
        let totals = self.totals.entry(stack).or_default();
        totals.samples += 1;
        totals.value_ns += value_ns;
    }

    /// Adds samples already summed elsewhere (a store's `GROUP BY` of one stack).
    pub fn add_totals(&mut self, stack: StackId, add: Totals) {
        let totals = self.totals.entry(stack).or_default();
        totals.samples += add.samples;
        totals.value_ns += add.value_ns;
    }

    pub fn add_record(&mut self, record: &SampleRecord) {
        self.add(record.stack_id, record.value_ns);
    }

    /// Stacks with their totals, heaviest first, then by id so output is deterministic.
    pub fn sorted(&self) -> Vec<(StackId, Totals)> {
        let mut rows: Vec<_> = self.totals.iter().map(|(id, t)| (*id, *t)).collect();
        rows.sort_by(|a, b| b.1.value_ns.cmp(&a.1.value_ns).then(a.0.cmp(&b.0)));
        rows
    }

    pub fn total(&self) -> Totals {
        self.totals
            .values()
            .fold(Totals::default(), |acc, t| Totals {
                samples: acc.samples + t.samples,
                value_ns: acc.value_ns + t.value_ns,
            })
    }

    pub fn is_empty(&self) -> bool {
        self.totals.is_empty()
    }
}
