//! NAB's scoring rules (the Numenta Anomaly Benchmark's `sweeper.py`), without I/O.
//!
//! A file contributes its rows after the probation period. A threshold turns anomaly scores into
//! detections (`score >= threshold`). Inside a labelled window only the best (earliest) detection
//! counts, weighted by a scaled sigmoid of its position so that early detections earn more; outside
//! windows every detection is a false positive whose cost depends on how far it is past the last
//! window; a window without a detection costs `A_FN`. The threshold is the one that maximises the
//! corpus total, and the total is normalised between a detector that never fires (0) and a
//! perfect one (100).

use std::cmp::Ordering;

/// The weights of one NAB application profile.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Profile {
    pub name: &'static str,
    /// Earned by a detection at the very start of a window.
    pub true_positive: f64,
    /// Charged (times a sigmoid weight in [0, 1]) for each detection outside every window.
    pub false_positive: f64,
    /// Charged for each window without a detection.
    pub false_negative: f64,
}

pub const STANDARD: Profile = Profile {
    name: "standard",
    true_positive: 1.0,
    false_positive: 0.11,
    false_negative: 1.0,
};
pub const REWARD_LOW_FP: Profile = Profile {
    name: "reward_low_FP",
    true_positive: 1.0,
    false_positive: 0.22,
    false_negative: 1.0,
};
pub const REWARD_LOW_FN: Profile = Profile {
    name: "reward_low_FN",
    true_positive: 1.0,
    false_positive: 0.11,
    false_negative: 2.0,
};
pub const PROFILES: [Profile; 3] = [STANDARD, REWARD_LOW_FP, REWARD_LOW_FN];

/// A labelled anomaly window as inclusive row indices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub start: usize,
    pub end: usize,
}

/// One file's anomaly scores (one per row, in order) and its labelled windows (sorted, disjoint).
#[derive(Clone, Copy, Debug)]
pub struct LabelledScores<'a> {
    pub scores: &'a [f64],
    pub windows: &'a [Window],
}

/// The corpus score of one profile at one threshold.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProfileScore {
    pub profile: Profile,
    /// Rows with `score >= threshold` are detections; above 1 means "never fires".
    pub threshold: f64,
    pub raw: f64,
    /// The raw score of a detector that never fires: `-A_FN × windows`.
    pub null: f64,
    /// The raw score of a detector that fires on the first row of every window: `A_TP × windows`.
    pub perfect: f64,
    /// `100 · (raw − null) / (perfect − null)`.
    pub normalized: f64,
    /// Scored windows (those not wholly inside probation).
    pub windows: usize,
    pub detected_windows: usize,
    pub false_positives: usize,
}

/// NAB's threshold for "no detection at all": above every valid score.
const NEVER: f64 = 1.1;

/// Rows before this index are the detector's probation: `min(floor(0.15·n), 750)`.
pub fn probation_rows(rows: usize) -> usize {
    (rows * 15 / 100).min(750)
}

/// NAB's scaled sigmoid: `2/(1+e^{5y}) − 1`, and `−1` beyond `y > 3`.
pub fn scaled_sigmoid(y: f64) -> f64 {
    if y > 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * y).exp()) - 1.0
    }
}

/// A scorable row: its anomaly score, what a detection on it is worth, and the corpus-wide index
/// of the window it lies in.
#[derive(Clone, Copy, Debug)]
struct ScorableRow {
    score: f64,
    worth: f64,
    window: Option<usize>,
}

/// The scorable rows of one file, numbering its windows from `first_window`. Returns the rows and
/// the number of windows that keep at least one scorable row.
fn scorable_rows(
    file: &LabelledScores<'_>,
    profile: Profile,
    first_window: usize,
    out: &mut Vec<ScorableRow>,
) -> usize {
    let n = file.scores.len();
    let probation = probation_rows(n);
    let max_tp = scaled_sigmoid(-1.0);
    let mut next_window = 0;
    // The window we are in, with its corpus-wide index (`None` when it lies wholly in probation).
    let mut current: Option<(Option<usize>, Window)> = None;
    let mut previous: Option<Window> = None;
    let mut scored_windows = 0;
    for (i, &score) in file.scores.iter().enumerate() {
        if current.is_none()
            && let Some(&w) = file.windows.get(next_window)
            && w.start == i
        {
            next_window += 1;
            // Windows wholly inside probation are dropped, so only number the ones we keep.
            let index = (w.end >= probation).then(|| {
                scored_windows += 1;
                first_window + scored_windows - 1
            });
            current = Some((index, w));
        }
        let (worth, window) = match current {
            Some((k, w)) => {
                let width = (w.end - w.start + 1) as f64;
                let y = -((w.end - i + 1) as f64) / width;
                (scaled_sigmoid(y) * profile.true_positive / max_tp, k)
            }
            None => {
                let weight = match previous {
                    None => -1.0,
                    Some(w) => {
                        let width = (w.end - w.start + 1) as f64;
                        // A one-row window has no width to scale by; NAB would divide by zero.
                        let y = (i - w.end) as f64 / (width - 1.0).max(1.0);
                        scaled_sigmoid(y)
                    }
                };
                (weight * profile.false_positive, None)
            }
        };
        if i >= probation {
            out.push(ScorableRow {
                // A missing score is no detection, and must not stall the threshold sweep.
                score: if score.is_nan() { 0.0 } else { score },
                worth,
                window,
            });
        }
        if let Some((_, w)) = current
            && w.end == i
        {
            previous = Some(w);
            current = None;
        }
    }
    scored_windows
}

fn all_rows(files: &[LabelledScores<'_>], profile: Profile) -> (Vec<ScorableRow>, usize) {
    let mut rows = Vec::with_capacity(files.iter().map(|f| f.scores.len()).sum());
    let mut windows = 0;
    for f in files {
        windows += scorable_rows(f, profile, windows, &mut rows);
    }
    (rows, windows)
}

/// Accumulates the corpus total as detections are added one row at a time.
struct Tally {
    best_per_window: Vec<f64>,
    total: f64,
    detected_windows: usize,
    false_positives: usize,
    miss_cost: f64,
}

impl Tally {
    fn new(windows: usize, profile: Profile) -> Self {
        let miss_cost = -profile.false_negative;
        Tally {
            best_per_window: vec![miss_cost; windows],
            total: miss_cost * windows as f64,
            detected_windows: 0,
            false_positives: 0,
            miss_cost,
        }
    }

    fn detect(&mut self, row: &ScorableRow) {
        match row.window {
            None => {
                self.total += row.worth;
                self.false_positives += 1;
            }
            Some(k) => {
                let best = &mut self.best_per_window[k];
                if *best == self.miss_cost {
                    self.detected_windows += 1;
                }
                if row.worth > *best {
                    self.total += row.worth - *best;
                    *best = row.worth;
                }
            }
        }
    }

    fn score(&self, profile: Profile, threshold: f64) -> ProfileScore {
        let windows = self.best_per_window.len();
        let null = -profile.false_negative * windows as f64;
        let perfect = profile.true_positive * windows as f64;
        let normalized = if perfect > null {
            100.0 * (self.total - null) / (perfect - null)
        } else {
            0.0
        };
        ProfileScore {
            profile,
            threshold,
            raw: self.total,
            null,
            perfect,
            normalized,
            windows,
            detected_windows: self.detected_windows,
            false_positives: self.false_positives,
        }
    }
}

/// Scores the corpus at the threshold that maximises its total (the highest such threshold when
/// several tie), as NAB's optimiser does.
pub fn score_corpus(files: &[LabelledScores<'_>], profile: Profile) -> ProfileScore {
    let (mut rows, windows) = all_rows(files, profile);
    rows.sort_by(|a, b| b.score.partial_cmp(&a.score).unwrap_or(Ordering::Equal));
    let mut tally = Tally::new(windows, profile);
    let mut best = tally.score(profile, NEVER);
    let mut i = 0;
    while i < rows.len() {
        let threshold = rows[i].score;
        while i < rows.len() && rows[i].score == threshold {
            tally.detect(&rows[i]);
            i += 1;
        }
        if tally.total > best.raw {
            best = tally.score(profile, threshold);
        }
    }
    best
}

/// Scores the corpus with a fixed threshold.
pub fn score_at_threshold(
    files: &[LabelledScores<'_>],
    profile: Profile,
    threshold: f64,
) -> ProfileScore {
    let (rows, windows) = all_rows(files, profile);
    let mut tally = Tally::new(windows, profile);
    for row in rows.iter().filter(|r| r.score >= threshold) {
        tally.detect(row);
    }
    tally.score(profile, threshold)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigmoid_matches_nab_reference_points() {
        // NAB's docstring: S(-1) = 0.98661, S(-0.5) = 0.84828, S(0) = 0, S(1) = -0.98661.
        assert!((scaled_sigmoid(-1.0) - 0.98661).abs() < 1e-5);
        assert!((scaled_sigmoid(-0.5) - 0.84828).abs() < 1e-5);
        assert_eq!(scaled_sigmoid(0.0), 0.0);
        assert!((scaled_sigmoid(1.0) + 0.98661).abs() < 1e-5);
        assert_eq!(scaled_sigmoid(3.5), -1.0);
    }

    #[test]
    fn probation_is_fifteen_percent_capped_at_750() {
        assert_eq!(probation_rows(100), 15);
        assert_eq!(probation_rows(4032), 604);
        assert_eq!(probation_rows(22695), 750);
        assert_eq!(probation_rows(6), 0);
    }
}
