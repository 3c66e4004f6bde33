//! Folded stacks, Brendan Gregg's format read by `flamegraph.pl`, inferno and speedscope:
//! one line per stack, frames root first joined by `;`, a space, then the value.

use std::fmt::Write;

use crate::aggregate::{StackAggregate, StackTable};
use crate::frame::Frame;

/// The root frame under which stacks that do not reach their start are shown.
pub const TRUNCATED_FRAME: &str = "[truncated]";

/// What each line's number is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FoldedValue {
    Samples,
    Nanoseconds,
}

/// Kernel frames carry the `_[k]` suffix (as `stackcollapse-perf --kernel` writes them) and JIT
/// frames `_[j]`, so flame graph tools colour them apart. `;` and newlines in names, which the
/// format cannot carry, become `:` and spaces.
pub fn to_folded(stacks: &StackTable, aggregate: &StackAggregate, value: FoldedValue) -> String {
    let mut out = String::new();
    for (id, totals) in aggregate.sorted() {
        let Some(stack) = stacks.get(id) else {
            continue;
        };
        let mut first = true;
        if stack.truncated {
            out.push_str(TRUNCATED_FRAME);
            first = false;
        }
        for frame in stack.frames.iter().rev() {
            if !first {
                out.push(';');
            }
            first = false;
            push_frame(&mut out, frame);
        }
        let number = match value {
            FoldedValue::Samples => totals.samples,
            FoldedValue::Nanoseconds => totals.value_ns,
        };
        // Writing to a String cannot fail.
        let _ = writeln!(out, " {number}");
    }
    out
}

fn push_frame(out: &mut String, frame: &Frame) {
    out.extend(frame.function.chars().map(|c| match c {
        ';' => ':',
        '\n' | '\r' => ' ',
        c => c,
    }));
    out.push_str(frame.kind.name_suffix());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::ProfileKind;
    use crate::frame::FrameKind;
    use crate::frame::Stack;

    fn frame(kind: FrameKind, name: &str) -> Frame {
        Frame::new(kind, name, "/bin/app")
    }

    #[test]
    fn folded_lines_are_root_first_with_markers() {
        let mut stacks = StackTable::new();
        let mut aggregate = StackAggregate::new(ProfileKind::Cpu);
        let whole = stacks.insert(Stack {
            frames: vec![
                frame(FrameKind::Kernel, "do_syscall_64"),
                frame(FrameKind::User, "hot"),
                frame(FrameKind::User, "main"),
            ],
            truncated: false,
        });
        let cut = stacks.insert(Stack {
            frames: vec![
                frame(FrameKind::User, "leaf;odd"),
                frame(FrameKind::Jit, "js"),
            ],
            truncated: true,
        });
        for _ in 0..3 {
            aggregate.add(whole, 10);
        }
        aggregate.add(cut, 7);
        assert_eq!(
            to_folded(&stacks, &aggregate, FoldedValue::Samples),
            "main;hot;do_syscall_64_[k] 3\n[truncated];js_[j];leaf:odd 1\n"
        );
        assert_eq!(
            to_folded(&stacks, &aggregate, FoldedValue::Nanoseconds),
            "main;hot;do_syscall_64_[k] 30\n[truncated];js_[j];leaf:odd 7\n"
        );
    }
}
