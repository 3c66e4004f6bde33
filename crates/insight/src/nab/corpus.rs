//! NAB's file formats, parsed from text (reading the files is `io.rs`'s): the data files
//! (`timestamp,value`), the labels (`{"<category>/<name>.csv": [["start", "end"], …]}`) and a
//! detector's results (`timestamp,value,anomaly_score`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::NabError;
use super::scoring::Window;

/// One NAB data file, as read.
#[derive(Clone, Debug)]
pub struct Series {
    /// `<category>/<name>.csv`, the key used by the labels file.
    pub name: String,
    /// The timestamps as written in the file, for writing results back unchanged.
    pub timestamp_text: Vec<String>,
    pub timestamps_ms: Vec<i64>,
    pub values: Vec<f64>,
    pub windows: Vec<Window>,
}

impl Series {
    pub fn category(&self) -> &str {
        self.name.split_once('/').map_or("", |(c, _)| c)
    }

    /// The file name without its category and `.csv`.
    pub fn stem(&self) -> &str {
        let file = self.name.rsplit_once('/').map_or(&*self.name, |(_, f)| f);
        file.strip_suffix(".csv").unwrap_or(file)
    }
}

/// The labels file: file name → windows as `[start, end]` timestamps. `path` names it in errors.
pub fn parse_labels(
    path: &Path,
    text: &str,
) -> Result<BTreeMap<String, Vec<[String; 2]>>, NabError> {
    serde_json::from_str(text).map_err(|e| NabError::Labels {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// One data file `name` (its text), with its windows as row indices. `path` names it in errors.
pub fn parse_series(
    path: &Path,
    name: &str,
    text: &str,
    windows: &[[String; 2]],
) -> Result<Series, NabError> {
    let path = path.to_path_buf();
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, header)) if header.trim() == "timestamp,value" => {}
        other => {
            return Err(NabError::Parse {
                path,
                line: 1,
                message: format!(
                    "expected header `timestamp,value`, found `{}`",
                    other.map_or("", |(_, h)| h)
                ),
            });
        }
    }
    let mut series = Series {
        name: name.to_string(),
        timestamp_text: Vec::new(),
        timestamps_ms: Vec::new(),
        values: Vec::new(),
        windows: Vec::new(),
    };
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let parse_error = |message: String| NabError::Parse {
            path: path.clone(),
            line: i + 1,
            message,
        };
        let (ts, value) = line
            .split_once(',')
            .ok_or_else(|| parse_error(format!("expected `timestamp,value`, found `{line}`")))?;
        let ms = parse_timestamp_ms(ts)
            .ok_or_else(|| parse_error(format!("expected `YYYY-MM-DD HH:MM:SS`, found `{ts}`")))?;
        let value: f64 = value
            .trim()
            .parse()
            .map_err(|_| parse_error(format!("expected a number, found `{value}`")))?;
        series.timestamp_text.push(ts.to_string());
        series.timestamps_ms.push(ms);
        series.values.push(value);
    }
    for [start, end] in windows {
        let start = row_of(&series, start)?;
        let end = row_of(&series, end)?;
        series.windows.push(Window { start, end });
    }
    series.windows.sort_by_key(|w| w.start);
    Ok(series)
}

fn row_of(series: &Series, timestamp: &str) -> Result<usize, NabError> {
    let not_found = || NabError::WindowEdge {
        file: series.name.clone(),
        timestamp: timestamp.to_string(),
    };
    let ms = parse_timestamp_ms(timestamp).ok_or_else(not_found)?;
    series
        .timestamps_ms
        .iter()
        .position(|&t| t == ms)
        .ok_or_else(not_found)
}

/// A detector's results for `series` in NAB's layout: the header, then each row's timestamp as
/// written in the data file, its value and its score.
pub fn results_text(series: &Series, scores: &[f64]) -> String {
    let mut text = String::with_capacity(scores.len() * 48);
    text.push_str("timestamp,value,anomaly_score\n");
    for ((ts, value), score) in series.timestamp_text.iter().zip(&series.values).zip(scores) {
        // `{}` prints the shortest text that parses back to the same f64, so scoring the files
        // gives exactly the in-memory result.
        text.push_str(&format!("{ts},{value},{score}\n"));
    }
    text
}

/// The `anomaly_score` column of a results file for `series`, which must have as many rows.
/// `path` names it in errors.
pub fn parse_results(path: &Path, text: &str, series: &Series) -> Result<Vec<f64>, NabError> {
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

/// Where a detector's results for `series` go: `<dir>/<category>/<detector>_<name>.csv`.
pub fn results_path(detector_dir: &Path, detector: &str, series: &Series) -> PathBuf {
    detector_dir
        .join(series.category())
        .join(format!("{detector}_{}.csv", series.stem()))
}

/// Milliseconds since the Unix epoch (UTC) of `YYYY-MM-DD HH:MM:SS[.ffffff]`.
pub fn parse_timestamp_ms(text: &str) -> Option<i64> {
    let text = text.trim();
    let (date, time) = text.split_once([' ', 'T'])?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (d.next()??, d.next()??, d.next()??);
    let (time, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut t = time.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hour, minute, second) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let millis = if fraction.is_empty() {
        0
    } else {
        let digits: String = fraction.chars().chain("000".chars()).take(3).collect();
        digits.parse::<i64>().ok()?
    };
    let days = days_from_civil(year, month, day);
    Some(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_to_epoch_milliseconds() {
        assert_eq!(parse_timestamp_ms("1970-01-01 00:00:00"), Some(0));
        // 2014-04-01 is 16161 days after the epoch.
        assert_eq!(
            parse_timestamp_ms("2014-04-01 00:05:00"),
            Some(16161 * 86_400_000 + 300_000)
        );
        assert_eq!(
            parse_timestamp_ms("2014-04-10 07:15:00.000000"),
            parse_timestamp_ms("2014-04-10 07:15:00")
        );
        assert_eq!(
            parse_timestamp_ms("2000-03-01 00:00:00.5"),
            Some(951_868_800_500)
        );
        assert_eq!(parse_timestamp_ms("yesterday"), None);
    }
}
