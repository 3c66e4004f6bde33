//! Anomalies found on stored series: one record per episode and state (an open episode is
//! written again when it grows or closes; readers keep the latest version of each id).

use crate::Attrs;

/// Where the series an anomaly was found on comes from.
pub const SOURCE_METRIC: &str = "metric";
/// A service's request rate, error ratio or p99 latency, derived from its spans.
pub const SOURCE_RED: &str = "red";

#[derive(Clone, Debug, Default, PartialEq)]
pub struct AnomalyRecord {
    /// Stable across versions: the series and the start of the episode.
    pub id: String,
    /// When this version was written; the latest wins.
    pub updated_unix_nano: u64,
    pub start_unix_nano: u64,
    /// The last anomalous point so far.
    pub end_unix_nano: u64,
    /// The most anomalous point.
    pub peak_unix_nano: u64,
    pub open: bool,
    pub service_name: String,
    /// The metric name, or for derived series `red.rate`, `red.error_ratio`, `red.p99_ms`.
    pub metric_name: String,
    /// Identifies the series (metric, service and attributes); see `store::series_id`.
    pub series_id: String,
    pub attributes: Attrs,
    /// [`SOURCE_METRIC`] or [`SOURCE_RED`].
    pub source: String,
    pub peak_value: f64,
    /// The band the model expected at the peak.
    pub expected_low: f64,
    pub expected_high: f64,
    /// The highest detector score in the episode, in [0, 1].
    pub score: f64,
    /// `critical`, `major` or `minor`, from the score.
    pub severity: String,
    pub points: u32,
}

impl AnomalyRecord {
    /// The severity label of a detector score.
    pub fn severity_of(score: f64) -> &'static str {
        if score >= 0.8 {
            "critical"
        } else if score >= 0.5 {
            "major"
        } else {
            "minor"
        }
    }
}
