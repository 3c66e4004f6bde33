//! Bottlenecks: the functions that hold the largest share of a profile's time by themselves
//! (self time), and those whose share grew most against an earlier period, with the numbers that
//! show it.
//!
//! Input stacks are frame names root first, as stored (`_[k]` kernel, `_[j]` JIT). The function a
//! stack's time is charged to is its leaf for on-CPU profiles; for off-CPU profiles it is the
//! innermost user frame, because every blocked stack ends in the scheduler and "the kernel
//! schedules" explains nothing.

use std::collections::HashMap;

use crate::aggregate::ProfileKind;
use crate::frame::FrameKind;

/// One distinct stack and what its samples add up to.
#[derive(Debug, Clone, Copy)]
pub struct StackWeight<'a> {
    /// Root first.
    pub frames: &'a [String],
    pub samples: u64,
    pub value_ns: u64,
}

/// A function's self time in one period.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Share {
    pub samples: u64,
    pub value_ns: u64,
    /// Of the period's total time, 0–1.
    pub share: f64,
}

/// A function and the evidence for listing it.
#[derive(Debug, Clone, PartialEq)]
pub struct Bottleneck {
    pub function: String,
    pub now: Share,
    pub before: Share,
    /// `now.share - before.share`.
    pub change: f64,
    /// Two-proportion z-score of the change in the function's share of samples; about 2 or more
    /// is unlikely to be sampling noise. 0 when the earlier period has no samples.
    pub z: f64,
}

/// The ranking for one profile kind.
#[derive(Debug, Clone, PartialEq)]
pub struct Bottlenecks {
    pub total: Share,
    pub total_before: Share,
    /// Largest self share now, largest first.
    pub largest: Vec<Bottleneck>,
    /// Largest growth of self share, largest first: only functions whose growth is not likely
    /// noise (z ≥ [`MIN_Z`], at least [`MIN_SAMPLES`] samples now).
    pub grew: Vec<Bottleneck>,
}

/// Growth below this z-score is not reported.
pub const MIN_Z: f64 = 2.0;
/// A function with fewer samples now is not reported as grown, whatever its z-score.
pub const MIN_SAMPLES: u64 = 5;

/// The function a stack's time is charged to (see the module comment); `None` for an empty stack.
pub fn self_function(frames: &[String], kind: ProfileKind) -> Option<&str> {
    let leaf = frames.last()?;
    match kind {
        ProfileKind::Cpu => Some(leaf),
        ProfileKind::OffCpu => Some(
            frames
                .iter()
                .rev()
                .find(|f| !f.ends_with(FrameKind::Kernel.name_suffix()))
                .unwrap_or(leaf),
        ),
    }
}

#[derive(Default)]
struct Sums {
    samples: u64,
    value_ns: u64,
}

fn self_times<'a>(
    kind: ProfileKind,
    stacks: impl IntoIterator<Item = StackWeight<'a>>,
) -> (HashMap<&'a str, Sums>, Sums) {
    let mut by_function: HashMap<&str, Sums> = HashMap::new();
    let mut total = Sums::default();
    for st in stacks {
        total.samples += st.samples;
        total.value_ns += st.value_ns;
        if let Some(f) = self_function(st.frames, kind) {
            let s = by_function.entry(f).or_default();
            s.samples += st.samples;
            s.value_ns += st.value_ns;
        }
    }
    (by_function, total)
}

fn share(s: Option<&Sums>, total: &Sums) -> Share {
    let (samples, value_ns) = s.map_or((0, 0), |s| (s.samples, s.value_ns));
    Share {
        samples,
        value_ns,
        share: if total.value_ns > 0 {
            value_ns as f64 / total.value_ns as f64
        } else {
            0.0
        },
    }
}

/// z-score of the difference between x1/n1 and x0/n0, pooled.
fn two_proportion_z(x1: u64, n1: u64, x0: u64, n0: u64) -> f64 {
    if n1 == 0 || n0 == 0 {
        return 0.0;
    }
    let (x1, n1, x0, n0) = (x1 as f64, n1 as f64, x0 as f64, n0 as f64);
    let pooled = (x1 + x0) / (n1 + n0);
    let se = (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n0)).sqrt();
    if se == 0.0 {
        return 0.0;
    }
    (x1 / n1 - x0 / n0) / se
}

/// Ranks the functions of `now` by self share, and by growth of self share against `before`
/// (a period of the same length just before), `limit` of each.
pub fn rank<'a>(
    kind: ProfileKind,
    now: impl IntoIterator<Item = StackWeight<'a>>,
    before: impl IntoIterator<Item = StackWeight<'a>>,
    limit: usize,
) -> Bottlenecks {
    let (now_fns, now_total) = self_times(kind, now);
    let (before_fns, before_total) = self_times(kind, before);
    let mut all: Vec<Bottleneck> = now_fns
        .iter()
        .map(|(f, sums)| {
            let n = share(Some(sums), &now_total);
            let b = share(before_fns.get(f), &before_total);
            Bottleneck {
                function: f.to_string(),
                now: n,
                before: b,
                change: n.share - b.share,
                z: two_proportion_z(
                    n.samples,
                    now_total.samples,
                    b.samples,
                    before_total.samples,
                ),
            }
        })
        .collect();
    all.sort_by(|a, b| {
        b.now
            .value_ns
            .cmp(&a.now.value_ns)
            .then_with(|| a.function.cmp(&b.function))
    });
    let largest: Vec<Bottleneck> = all.iter().take(limit).cloned().collect();
    let mut grew: Vec<Bottleneck> = all
        .into_iter()
        .filter(|b| b.change > 0.0 && b.z >= MIN_Z && b.now.samples >= MIN_SAMPLES)
        .collect();
    grew.sort_by(|a, b| {
        b.change
            .total_cmp(&a.change)
            .then_with(|| a.function.cmp(&b.function))
    });
    grew.truncate(limit);
    Bottlenecks {
        total: share(Some(&now_total), &now_total),
        total_before: share(Some(&before_total), &before_total),
        largest,
        grew,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(names: &str) -> Vec<String> {
        names.split(';').map(String::from).collect()
    }

    fn weights<'a>(stacks: &'a [(Vec<String>, u64)]) -> Vec<StackWeight<'a>> {
        stacks
            .iter()
            .map(|(f, n)| StackWeight {
                frames: f,
                samples: *n,
                value_ns: n * 10,
            })
            .collect()
    }

    #[test]
    fn self_time_is_charged_to_the_leaf_or_for_off_cpu_to_the_innermost_user_frame() {
        let f = frames("main;handle;read;ksys_read_[k];schedule_[k]");
        assert_eq!(self_function(&f, ProfileKind::Cpu), Some("schedule_[k]"));
        assert_eq!(self_function(&f, ProfileKind::OffCpu), Some("read"));
        let kernel_only = frames("kthread_[k];schedule_[k]");
        assert_eq!(
            self_function(&kernel_only, ProfileKind::OffCpu),
            Some("schedule_[k]")
        );
        assert_eq!(self_function(&[], ProfileKind::Cpu), None);
    }

    #[test]
    fn largest_self_shares_come_first_and_callers_do_not_count() {
        let now = [
            (frames("main;parse"), 60),
            (frames("main;render"), 30),
            (frames("main"), 10),
            (frames("main;parse;alloc"), 20),
        ];
        let r = rank(ProfileKind::Cpu, weights(&now), [], 2);
        assert_eq!(r.total.samples, 120);
        let names: Vec<&str> = r.largest.iter().map(|b| b.function.as_str()).collect();
        assert_eq!(names, ["parse", "render"]);
        assert_eq!(r.largest[0].now.samples, 60);
        assert!((r.largest[0].now.share - 0.5).abs() < 1e-9);
        // Nothing to compare with: nothing grew.
        assert!(r.grew.is_empty());
        assert_eq!(r.largest[0].z, 0.0);
    }

    #[test]
    fn growth_is_ranked_by_change_of_share_and_noise_is_left_out() {
        let before = [
            (frames("main;parse"), 499),
            (frames("main;render"), 400),
            (frames("main;lock"), 100),
            (frames("main;rare"), 1),
        ];
        let now = [
            // parse: 49.9% → 30%, shrank
            (frames("main;parse"), 300),
            // render: 40% → 40%
            (frames("main;render"), 400),
            // lock: 10% → 29.7%, grew a lot
            (frames("main;lock"), 297),
            // rare: 0.1% → 0.3%, 3 samples: too few to say
            (frames("main;rare"), 3),
        ];
        let r = rank(ProfileKind::Cpu, weights(&now), weights(&before), 10);
        let grew: Vec<&str> = r.grew.iter().map(|b| b.function.as_str()).collect();
        assert_eq!(grew, ["lock"]);
        let lock = &r.grew[0];
        assert_eq!(lock.before.samples, 100);
        assert_eq!(lock.now.samples, 297);
        assert!((lock.before.share - 0.1).abs() < 1e-9);
        assert!((lock.change - 0.197).abs() < 1e-9);
        assert!(lock.z > 5.0, "z = {}", lock.z);
        let render = r.largest.iter().find(|b| b.function == "render").unwrap();
        assert!(render.z.abs() < 1.0, "no change, z = {}", render.z);
    }

    #[test]
    fn a_small_growth_on_few_samples_is_not_reported() {
        let before = [(frames("a"), 9), (frames("b"), 11)];
        let now = [(frames("a"), 11), (frames("b"), 9)];
        let r = rank(ProfileKind::Cpu, weights(&now), weights(&before), 10);
        assert!(r.grew.is_empty(), "{:?}", r.grew);
        assert_eq!(r.largest.len(), 2);
    }
}
