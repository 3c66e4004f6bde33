//! Everything of the NAB harness that touches files: reading the corpus, writing and reading a
//! detector's results, and running detectors over the corpus (timed, for the cost per point).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::corpus::{self, Series};
use super::{AWS_CATEGORY, DETECTOR_NAME, NabError, NabReport, Progress, score};
use crate::{Detector, SeasonalDetector};

/// Reads every file listed in `<root>/labels/combined_windows.json` from `<root>/data`, sorted by
/// name.
pub fn load(root: &Path) -> Result<Vec<Series>, NabError> {
    let labels_path = root.join("labels").join("combined_windows.json");
    let labels = corpus::parse_labels(&labels_path, &read(&labels_path)?)?;
    labels
        .iter()
        .map(|(name, windows)| {
            let path = root.join("data").join(name);
            corpus::parse_series(&path, name, &read(&path)?, windows)
        })
        .collect()
}

fn read(path: &Path) -> Result<String, NabError> {
    std::fs::read_to_string(path).map_err(|source| NabError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Where a detector's results for `series` go: `<dir>/<category>/<detector>_<name>.csv`.
fn results_path(detector_dir: &Path, detector: &str, series: &Series) -> PathBuf {
    detector_dir
        .join(series.category())
        .join(format!("{detector}_{}.csv", series.stem()))
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
        .map(|s| read_results(&results_path(detector_dir, &detector, s), s))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(score(
        &corpus,
        &scores,
        &detector,
        detector_dir.to_path_buf(),
    ))
}

fn write_results(
    detector_dir: &Path,
    detector: &str,
    series: &Series,
    scores: &[f64],
) -> Result<(), NabError> {
    let path = results_path(detector_dir, detector, series);
    let io_error = |source| NabError::Io {
        path: path.clone(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_error)?;
    }
    let mut file = std::fs::File::create(&path).map_err(io_error)?;
    file.write_all(corpus::results_text(series, scores).as_bytes())
        .map_err(io_error)?;
    Ok(())
}

fn read_results(path: &Path, series: &Series) -> Result<Vec<f64>, NabError> {
    corpus::parse_results(path, &read(path)?, series)
}

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
