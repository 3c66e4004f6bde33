//! The Numenta Anomaly Benchmark harness: stream every NAB file through a detector, write NAB's
//! results layout, and score it with NAB's rules (`scoring`).
//!
//! This module is the only part of `insight` that touches files.

mod corpus;
pub mod scoring;

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub use corpus::{Series, load, parse_timestamp_ms};
use scoring::{LabelledScores, PROFILES, Profile, ProfileScore};

use crate::{Detector, SeasonalDetector};

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

/// Runs the default detector over the NAB corpus at `data_dir` (holding `data/` and `labels/`),
/// writes `<out_dir>/oxeye/<category>/oxeye_<name>.csv`, and scores it.
pub fn run(
    data_dir: &Path,
    out_dir: &Path,
    progress: impl FnMut(Progress<'_>),
) -> Result<NabReport, NabError> {
    run_detector(
        data_dir,
        out_dir,
        DETECTOR_NAME,
        SeasonalDetector::default,
        progress,
    )
}

/// Like [`run`], with any detector (one fresh instance per file) under any name.
pub fn run_detector<D: Detector>(
    data_dir: &Path,
    out_dir: &Path,
    detector_name: &str,
    mut new_detector: impl FnMut() -> D,
    mut progress: impl FnMut(Progress<'_>),
) -> Result<NabReport, NabError> {
    let corpus = load(data_dir)?;
    if corpus.is_empty() {
        return Err(NabError::Empty(data_dir.to_path_buf()));
    }
    let results_dir = out_dir.join(detector_name);
    let mut all_scores = Vec::with_capacity(corpus.len());
    let mut nanos = 0u128;
    let mut points = 0usize;
    let mut bytes_per_series = 0;
    for (done, series) in corpus.iter().enumerate() {
        let mut detector = new_detector();
        let mut scores = Vec::with_capacity(series.values.len());
        let started = Instant::now();
        for (&ts, &value) in series.timestamps_ms.iter().zip(&series.values) {
            scores.push(detector.observe(ts, value).score);
        }
        nanos += started.elapsed().as_nanos();
        points += scores.len();
        bytes_per_series = bytes_per_series.max(detector.memory_bytes());
        write_results(&results_dir, detector_name, series, &scores)?;
        all_scores.push(scores);
        progress(Progress {
            file: &series.name,
            done: done + 1,
            total: corpus.len(),
        });
    }
    let mut report = score(&corpus, &all_scores, detector_name, results_dir);
    report.ns_per_point = nanos as f64 / points.max(1) as f64;
    report.bytes_per_series = bytes_per_series;
    Ok(report)
}

/// Scores an existing results directory `<dir>` (NAB's layout for one detector, named after the
/// directory) against the corpus at `data_dir`. Cost and memory are reported as 0.
pub fn score_results(data_dir: &Path, detector_dir: &Path) -> Result<NabReport, NabError> {
    let corpus = load(data_dir)?;
    let detector = detector_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let scores = corpus
        .iter()
        .map(|s| read_results(&corpus::results_path(detector_dir, &detector, s), s))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(score(
        &corpus,
        &scores,
        &detector,
        detector_dir.to_path_buf(),
    ))
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

fn write_results(
    detector_dir: &Path,
    detector: &str,
    series: &Series,
    scores: &[f64],
) -> Result<(), NabError> {
    let path = corpus::results_path(detector_dir, detector, series);
    let io_error = |source| NabError::Io {
        path: path.clone(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_error)?;
    }
    let mut text = String::with_capacity(scores.len() * 48);
    text.push_str("timestamp,value,anomaly_score\n");
    for ((ts, value), score) in series.timestamp_text.iter().zip(&series.values).zip(scores) {
        // `{}` prints the shortest text that parses back to the same f64, so scoring the files
        // gives exactly the in-memory result.
        text.push_str(&format!("{ts},{value},{score}\n"));
    }
    let mut file = std::fs::File::create(&path).map_err(io_error)?;
    file.write_all(text.as_bytes()).map_err(io_error)?;
    Ok(())
}

fn read_results(path: &Path, series: &Series) -> Result<Vec<f64>, NabError> {
    let text = corpus::read(path)?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let header = lines.next().map_or("", |(_, h)| h);
    let column = header
        .split(',')
        .position(|c| c.trim() == "anomaly_score")
        .ok_or_else(|| NabError::Parse {
            path: path.to_path_buf(),
            line: 1,
            message: format!("expected an `anomaly_score` column, found header `{header}`"),
        })?;
    let scores = lines
        .map(|(i, line)| {
            let cell = line.split(',').nth(column).unwrap_or("");
            cell.trim().parse::<f64>().map_err(|_| NabError::Parse {
                path: path.to_path_buf(),
                line: i + 1,
                message: format!("expected a number in column anomaly_score, found `{cell}`"),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if scores.len() != series.values.len() {
        return Err(NabError::RowCount {
            path: path.to_path_buf(),
            expected: series.values.len(),
            found: scores.len(),
        });
    }
    Ok(scores)
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

/// Rolling-origin forecast backtests of every AWS CloudWatch series under `data_dir`.
pub fn aws_forecast_backtests(
    data_dir: &Path,
    settings: &crate::backtest::BacktestSettings,
) -> Result<Vec<crate::backtest::SeriesBacktest>, NabError> {
    let corpus = load(data_dir)?;
    let rows: Vec<_> = corpus
        .iter()
        .filter(|s| s.category() == AWS_CATEGORY)
        .filter_map(|s| {
            let points: Vec<(i64, f64)> = s
                .timestamps_ms
                .iter()
                .copied()
                .zip(s.values.iter().copied())
                .collect();
            let series = crate::forecast::RegularSeries::from_points(&points)?;
            crate::backtest::backtest_series(s.stem(), &series, settings)
        })
        .collect();
    if rows.is_empty() {
        return Err(NabError::Empty(data_dir.join("data").join(AWS_CATEGORY)));
    }
    Ok(rows)
}
