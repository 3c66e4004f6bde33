//! Time-to-saturation: when will a resource with a known limit (CPU 100 %, a memory limit, disk
//! size, file descriptors, a pool, a queue) reach it? The recent series is forecast with an
//! additive trend (and daily seasonality when there is history for it); the times at which the
//! upper, central and lower forecasts first reach the limit are the earliest, expected and latest
//! crossing.

use crate::forecast::{ForecastSettings, HoltWinters, RegularSeries, TrendChoice};
use crate::normal;

/// Utilisation metrics whose limit is known: a fraction reaches 1, a percentage 100.
pub const SATURATING_METRICS: [&str; 5] = [
    "system.cpu.utilization",
    "system.memory.utilization",
    "system.filesystem.utilization",
    "process.cpu.utilization",
    "process.memory.utilization",
];

/// The limit of a utilisation metric of unit `unit`: 100 for `%`, 1 otherwise.
pub fn utilization_limit(unit: &str) -> f64 {
    if unit == "%" { 100.0 } else { 1.0 }
}

/// When the limit is expected to be reached.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Crossing {
    /// Where the central forecast first reaches the limit.
    pub at_ms: i64,
    /// Where the upper band first reaches it (no later than `at_ms`).
    pub earliest_ms: i64,
    /// Where the lower band first reaches it; `None` when it does not within the horizon.
    pub latest_ms: Option<i64>,
    /// Probability, under the forecast distribution, that the value is at or above the limit at
    /// the step where that is most likely: a lower bound of the chance it is reached in the
    /// horizon.
    pub confidence: f64,
    /// Coverage of the band that gave `earliest_ms` and `latest_ms`.
    pub level: f64,
}

/// Settings for [`TimeToSaturation`]; the default fits at most 3000 recent points, with daily
/// seasonality after two days of history, and a 90 % band.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimeToSaturation {
    pub forecast: ForecastSettings,
    /// The longest forecast, in steps, whatever the horizon asked for.
    pub max_steps: usize,
}

impl Default for TimeToSaturation {
    fn default() -> Self {
        TimeToSaturation {
            forecast: ForecastSettings {
                trend: TrendChoice::Additive,
                ..ForecastSettings::default()
            },
            max_steps: 100_000,
        }
    }
}

impl TimeToSaturation {
    /// When `points` (`(ts_ms, value)`, any spacing) will reach `limit` within `horizon_ms` after
    /// the last point, with the default settings; `None` when the central forecast does not reach
    /// it in that time (or there are fewer than four points).
    pub fn estimate(points: &[(i64, f64)], limit: f64, horizon_ms: i64) -> Option<Crossing> {
        TimeToSaturation::default().estimate_with(points, limit, horizon_ms)
    }

    pub fn estimate_with(
        &self,
        points: &[(i64, f64)],
        limit: f64,
        horizon_ms: i64,
    ) -> Option<Crossing> {
        let series = RegularSeries::from_points(points)?;
        self.estimate_series(&series, limit, horizon_ms)
    }

    pub fn estimate_series(
        &self,
        series: &RegularSeries,
        limit: f64,
        horizon_ms: i64,
    ) -> Option<Crossing> {
        let model = HoltWinters::fit(series, &self.forecast)?;
        let steps =
            usize::try_from((horizon_ms.max(0) as u64).div_ceil(series.step_ms.max(1) as u64))
                .unwrap_or(usize::MAX)
                .min(self.max_steps);
        let f = model.forecast(steps, self.forecast.level);
        let at_ms = first_crossing(&f.mean, limit, f.first_ms, f.step_ms)?;
        let earliest_ms = first_crossing(&f.upper, limit, f.first_ms, f.step_ms).unwrap_or(at_ms);
        let latest_ms = first_crossing(&f.lower, limit, f.first_ms, f.step_ms);
        let confidence = f
            .mean
            .iter()
            .zip(&f.std)
            .map(|(m, s)| {
                if *s > 0.0 {
                    1.0 - normal::cdf((limit - m) / s)
                } else if *m >= limit {
                    1.0
                } else {
                    0.0
                }
            })
            .fold(0.0, f64::max);
        Some(Crossing {
            at_ms,
            earliest_ms: earliest_ms.min(at_ms),
            latest_ms: latest_ms.map(|l| l.max(at_ms)),
            confidence,
            level: f.level,
        })
    }
}

/// The first time `curve` (values at `first_ms + i · step_ms`) reaches `limit`, interpolated
/// linearly within the step.
fn first_crossing(curve: &[f64], limit: f64, first_ms: i64, step_ms: i64) -> Option<i64> {
    let i = curve.iter().position(|&v| v >= limit)?;
    if i == 0 {
        return Some(first_ms);
    }
    let (a, b) = (curve[i - 1], curve[i]);
    let fraction = ((limit - a) / (b - a)).clamp(0.0, 1.0);
    Some(first_ms + (((i - 1) as f64 + fraction) * step_ms as f64).round() as i64)
}

/// What to say about a forecast crossing.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum SaturationLevel {
    Ok,
    /// The central forecast reaches the limit within `warn_within_ms`.
    Warn,
    /// The central forecast reaches it within `critical_within_ms`, or even the lower band does
    /// within `warn_within_ms`.
    Critical,
}

/// The alert decision: warn when the expected crossing is within `warn_within_ms` of now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SaturationAlert {
    pub warn_within_ms: i64,
    pub critical_within_ms: i64,
}

impl SaturationAlert {
    pub fn decide(&self, now_ms: i64, crossing: Option<&Crossing>) -> SaturationLevel {
        let Some(c) = crossing else {
            return SaturationLevel::Ok;
        };
        let central = c.at_ms - now_ms;
        let certain = c.latest_ms.map(|l| l - now_ms);
        if central <= self.critical_within_ms || certain.is_some_and(|l| l <= self.warn_within_ms) {
            SaturationLevel::Critical
        } else if central <= self.warn_within_ms {
            SaturationLevel::Warn
        } else {
            SaturationLevel::Ok
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;
    const HOUR: i64 = 60 * MIN;

    #[test]
    fn a_straight_line_reaches_the_limit_when_arithmetic_says() {
        // 20 % + 0.1 % per minute, one point a minute for 10 hours: at 600 min it is 80 %, and
        // 100 % is reached at minute 800.
        let points: Vec<(i64, f64)> = (0..=600)
            .map(|i| (i * MIN, 20.0 + 0.1 * i as f64))
            .collect();
        let c = TimeToSaturation::estimate(&points, 100.0, 24 * HOUR).expect("crossing");
        assert!((c.at_ms - 800 * MIN).abs() <= MIN, "{c:?}");
        assert!(c.earliest_ms <= c.at_ms);
        assert!(
            c.latest_ms
                .is_some_and(|l| l >= c.at_ms && l - c.earliest_ms <= 2 * MIN)
        );
        assert!(c.confidence > 0.99);
    }

    #[test]
    fn a_noisy_line_has_a_band_around_the_true_crossing() {
        let mut rng = 99u64;
        let points: Vec<(i64, f64)> = (0..=600)
            .map(|i| {
                (
                    i * MIN,
                    20.0 + 0.1 * i as f64 + 0.5 * crate::backtest::gaussian(&mut rng),
                )
            })
            .collect();
        let c = TimeToSaturation::estimate(&points, 100.0, 24 * HOUR).expect("crossing");
        let truth = 800 * MIN;
        assert!((c.at_ms - truth).abs() <= 20 * MIN, "{c:?}");
        assert!(
            c.earliest_ms <= truth && c.latest_ms.is_none_or(|l| l >= truth),
            "{c:?}"
        );
    }

    #[test]
    fn a_flat_series_never_saturates() {
        let mut rng = 5u64;
        let points: Vec<(i64, f64)> = (0..2000)
            .map(|i| (i * MIN, 40.0 + crate::backtest::gaussian(&mut rng)))
            .collect();
        assert_eq!(
            TimeToSaturation::estimate(&points, 90.0, 7 * 24 * HOUR),
            None
        );
    }

    #[test]
    fn beyond_the_horizon_is_none() {
        let points: Vec<(i64, f64)> = (0..=600)
            .map(|i| (i * MIN, 20.0 + 0.1 * i as f64))
            .collect();
        assert_eq!(TimeToSaturation::estimate(&points, 100.0, 3 * HOUR), None);
    }

    #[test]
    fn alert_levels_follow_the_crossing() {
        let rule = SaturationAlert {
            warn_within_ms: 24 * HOUR,
            critical_within_ms: 4 * HOUR,
        };
        let crossing = |at_h: i64, latest_h: Option<i64>| Crossing {
            at_ms: at_h * HOUR,
            earliest_ms: at_h * HOUR / 2,
            latest_ms: latest_h.map(|h| h * HOUR),
            confidence: 0.6,
            level: 0.9,
        };
        assert_eq!(rule.decide(0, None), SaturationLevel::Ok);
        assert_eq!(
            rule.decide(0, Some(&crossing(48, None))),
            SaturationLevel::Ok
        );
        assert_eq!(
            rule.decide(0, Some(&crossing(20, None))),
            SaturationLevel::Warn
        );
        assert_eq!(
            rule.decide(0, Some(&crossing(20, Some(23)))),
            SaturationLevel::Critical
        );
        assert_eq!(
            rule.decide(0, Some(&crossing(3, None))),
            SaturationLevel::Critical
        );
        assert_eq!(
            rule.decide(10 * HOUR, Some(&crossing(20, None))),
            SaturationLevel::Warn
        );
    }
}
