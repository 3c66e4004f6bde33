//! The Numenta Anomaly Benchmark harness: stream every NAB file through a detector, write NAB's
//! results layout, and score it with NAB's rules (`scoring`).
//!
//! The core (`score`, `corpus`'s parsers, `scoring`) works on text and memory; `io.rs`, the only
//! part of `insight` that touches files, reads the corpus, writes and reads results and runs the
//! detectors over it.

pub mod corpus;
mod io;
pub mod scoring;

use std::fmt;
use std::path::PathBuf;

pub use corpus::{Series, parse_timestamp_ms};
pub use io::{aws_forecast_backtests, load, run, run_detector, score_results};
use scoring::{LabelledScores, PROFILES, Profile, ProfileScore};

/// The name results are written under: `<out>/<DETECTOR_NAME>/<category>/<DETECTOR_NAME>_<file>`.
pub const DETECTOR_NAME: &str = "oxeye";

#[derive(Debug, thiserror::Error)]
pub enum NabError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: expected a map of file name to windows: {message}")]
    Labels { path: PathBuf, message: String },
    #[error("window edge `{timestamp}` of {file} is not one of its row timestamps")]
    WindowEdge { file: String, timestamp: String },
    #[error("{path}: expected {expected} rows (as in the data file), found {found}")]
    RowCount {
        path: PathBuf,
        expected: usize,
        found: usize,
    },
    #[error("no NAB files found under {0}")]
    Empty(PathBuf),
}

/// Reported after each file is done.
#[derive(Clone, Copy, Debug)]
pub struct Progress<'a> {
    pub file: &'a str,
    pub done: usize,
    pub total: usize,
}

/// One file's share of the corpus score (standard profile, at the corpus threshold).
#[derive(Clone, Debug, PartialEq)]
pub struct FileScore {
    pub name: String,
    pub raw: f64,
    pub windows: usize,
    pub detected_windows: usize,
    pub false_positives: usize,
}

/// Scores for the three profiles, each at its own optimised threshold.
pub type ProfileScores = [ProfileScore; 3];

#[derive(Clone, Debug)]
pub struct NabReport {
    pub detector: String,
    /// `<out>/<detector>`, holding one results file per data file.
    pub results_dir: PathBuf,
    pub files: usize,
    pub points: usize,
    /// standard, reward_low_FP, reward_low_FN on every file.
    pub full: ProfileScores,
    /// The same on the half of the files used to choose the detector's settings…
    pub tuning_half: ProfileScores,
    /// …and on the other half, never used for that (thresholds optimised on this half)…
    pub held_out_half: ProfileScores,
    /// …and on the other half with the thresholds chosen on the tuning half.
    pub held_out_transferred: ProfileScores,
    pub per_file: Vec<FileScore>,
    /// Mean time of one `observe` call.
    pub ns_per_point: f64,
    /// The largest state one series needed.
    pub bytes_per_series: usize,
}

/// Whether a file belongs to the tuning half: every other file within its category, so both
/// halves see every kind of series.
pub fn in_tuning_half(series: &[Series], index: usize) -> bool {
    let category = series[index].category();
    let rank = series[..index]
        .iter()
        .filter(|s| s.category() == category)
        .count();
    rank % 2 == 0
}

/// Scores in-memory anomaly scores (one vector per corpus file, in corpus order).
pub fn score(
    corpus: &[Series],
    scores: &[Vec<f64>],
    detector: &str,
    results_dir: PathBuf,
) -> NabReport {
    let labelled: Vec<LabelledScores<'_>> = corpus
        .iter()
        .zip(scores)
        .map(|(s, scores)| LabelledScores {
            scores,
            windows: &s.windows,
        })
        .collect();
    let (tuning, held_out): (Vec<_>, Vec<_>) = labelled
        .iter()
        .enumerate()
        .partition(|(i, _)| in_tuning_half(corpus, *i));
    let tuning: Vec<_> = tuning.into_iter().map(|(_, l)| *l).collect();
    let held_out: Vec<_> = held_out.into_iter().map(|(_, l)| *l).collect();
    let optimised =
        |files: &[LabelledScores<'_>]| PROFILES.map(|p| scoring::score_corpus(files, p));
    let full = optimised(&labelled);
    let tuning_half = optimised(&tuning);
    let held_out_half = optimised(&held_out);
    let held_out_transferred =
        tuning_half.map(|t| scoring::score_at_threshold(&held_out, t.profile, t.threshold));
    let per_file = corpus
        .iter()
        .zip(&labelled)
        .map(|(s, l)| file_score(s, l, full[0].profile, full[0].threshold))
        .collect();
    NabReport {
        detector: detector.to_string(),
        results_dir,
        files: corpus.len(),
        points: scores.iter().map(Vec::len).sum(),
        full,
        tuning_half,
        held_out_half,
        held_out_transferred,
        per_file,
        ns_per_point: 0.0,
        bytes_per_series: 0,
    }
}

fn file_score(
    series: &Series,
    labelled: &LabelledScores<'_>,
    profile: Profile,
    threshold: f64,
) -> FileScore {
    let s = scoring::score_at_threshold(std::slice::from_ref(labelled), profile, threshold);
    FileScore {
        name: series.name.clone(),
        raw: s.raw,
        windows: s.windows,
        detected_windows: s.detected_windows,
        false_positives: s.false_positives,
    }
}

impl fmt::Display for NabReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let row = |f: &mut fmt::Formatter<'_>, label: &str, s: &ProfileScores| {
            writeln!(
                f,
                "{label:<34} {:>8.2} {:>14.2} {:>14.2}",
                s[0].normalized, s[1].normalized, s[2].normalized
            )
        };
        writeln!(
            f,
            "NAB, detector {}: {} files, {} points",
            self.detector, self.files, self.points
        )?;
        writeln!(
            f,
            "{:<34} {:>8} {:>14} {:>14}",
            "", "standard", "reward_low_FP", "reward_low_FN"
        )?;
        row(f, "all files", &self.full)?;
        row(f, "tuning half", &self.tuning_half)?;
        row(f, "held-out half", &self.held_out_half)?;
        row(
            f,
            "held-out, tuning-half thresholds",
            &self.held_out_transferred,
        )?;
        let s = &self.full[0];
        writeln!(
            f,
            "standard: threshold {:.6}, {}/{} windows detected, {} false positives",
            s.threshold, s.detected_windows, s.windows, s.false_positives
        )?;
        write!(
            f,
            "{:.0} ns/point, {} bytes/series, results in {}",
            self.ns_per_point,
            self.bytes_per_series,
            self.results_dir.display()
        )
    }
}

/// The NAB category of AWS CloudWatch series, used to backtest the forecaster.
pub const AWS_CATEGORY: &str = "realAWSCloudwatch";
