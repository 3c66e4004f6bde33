//! Backtests of the forecaster and of time-to-saturation.
//!
//! Forecast accuracy is measured by rolling origin: from several origins, forecast each horizon
//! and score it with MASE (mean absolute error scaled by the in-sample MAE of the one-step
//! seasonal-naive forecast, Hyndman & Koehler 2006). The seasonal-naive forecast of the same
//! horizons is scored the same way, and `relative_mae` (ours / seasonal-naive's summed absolute
//! errors out of sample) says which wins head to head. Time-to-saturation is measured on generated
//! workloads whose noiseless signal crosses a limit at a known time.

use std::fmt;

use crate::forecast::{DAY_MS, ForecastSettings, HoltWinters, RegularSeries};
use crate::saturation::TimeToSaturation;

/// A standard normal draw from a SplitMix64 state (Box-Muller); deterministic for a seed.
pub fn gaussian(state: &mut u64) -> f64 {
    let mut uniform = || {
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let (u1, u2) = (uniform(), uniform());
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[derive(Clone, Debug, PartialEq)]
pub struct BacktestSettings {
    /// Horizons in steps.
    pub horizons: Vec<usize>,
    /// Forecast origins, spread evenly over what is left after `min_train_ms`.
    pub origins: usize,
    pub min_train_ms: i64,
    pub forecast: ForecastSettings,
}

impl Default for BacktestSettings {
    fn default() -> Self {
        BacktestSettings {
            horizons: vec![1, 12, 72, 288],
            origins: 10,
            min_train_ms: 3 * DAY_MS,
            forecast: ForecastSettings::default(),
        }
    }
}

/// Scores at one horizon, averaged over origins.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct HorizonScore {
    pub horizon_steps: usize,
    pub mase: f64,
    pub seasonal_naive_mase: f64,
    /// Our summed absolute error over seasonal-naive's (below 1: we win).
    pub relative_mae: f64,
    /// Fraction of actual values inside the prediction interval.
    pub coverage: f64,
    pub forecasts: usize,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SeriesBacktest {
    pub name: String,
    pub step_ms: i64,
    pub points: usize,
    pub horizons: Vec<HorizonScore>,
}

/// Rolling-origin backtest of one series; `None` when it is too short for any origin.
pub fn backtest_series(
    name: &str,
    series: &RegularSeries,
    settings: &BacktestSettings,
) -> Option<SeriesBacktest> {
    let y = &series.values;
    let n = y.len();
    let max_h = settings.horizons.iter().copied().max()?;
    let min_train = usize::try_from(settings.min_train_ms / series.step_ms)
        .ok()?
        .max(8);
    if n < min_train + max_h {
        return None;
    }
    let period = settings.forecast.season_ms.map_or(1, |s| {
        ((s as f64 / series.step_ms as f64).round() as usize).max(1)
    });
    let span = n - max_h - min_train;
    let origins = settings.origins.max(1);
    #[derive(Default, Clone, Copy)]
    struct Sums {
        scaled: f64,
        naive_scaled: f64,
        abs: f64,
        naive_abs: f64,
        inside: usize,
        count: usize,
    }
    let mut sums = vec![Sums::default(); settings.horizons.len()];
    for k in 0..origins {
        let origin = min_train
            + if origins == 1 {
                span
            } else {
                span * k / (origins - 1)
            };
        let train = RegularSeries {
            start_ms: series.start_ms,
            step_ms: series.step_ms,
            values: y[..origin].to_vec(),
        };
        let m = if origin >= 2 * period { period } else { 1 };
        let window = &y[origin.saturating_sub(settings.forecast.max_fit_points.max(m + 1))..origin];
        let scale = window
            .windows(m + 1)
            .map(|w| (w[m] - w[0]).abs())
            .sum::<f64>()
            / window.len().saturating_sub(m).max(1) as f64;
        if scale <= 0.0 || !scale.is_finite() {
            continue;
        }
        let Some(model) = HoltWinters::fit(&train, &settings.forecast) else {
            continue;
        };
        let f = model.forecast(max_h, settings.forecast.level);
        for (s, &h) in sums.iter_mut().zip(&settings.horizons) {
            let actual = y[origin + h - 1];
            let naive = y[origin + h - 1 - m * h.div_ceil(m)];
            let e = (actual - f.mean[h - 1]).abs();
            let en = (actual - naive).abs();
            s.scaled += e / scale;
            s.naive_scaled += en / scale;
            s.abs += e;
            s.naive_abs += en;
            s.inside += usize::from(f.lower[h - 1] <= actual && actual <= f.upper[h - 1]);
            s.count += 1;
        }
    }
    if sums.iter().all(|s| s.count == 0) {
        return None;
    }
    let horizons = sums
        .iter()
        .zip(&settings.horizons)
        .map(|(s, &h)| {
            let c = s.count.max(1) as f64;
            HorizonScore {
                horizon_steps: h,
                mase: s.scaled / c,
                seasonal_naive_mase: s.naive_scaled / c,
                relative_mae: if s.naive_abs > 0.0 {
                    s.abs / s.naive_abs
                } else {
                    f64::NAN
                },
                coverage: s.inside as f64 / c,
                forecasts: s.count,
            }
        })
        .collect();
    Some(SeriesBacktest {
        name: name.to_string(),
        step_ms: series.step_ms,
        points: n,
        horizons,
    })
}

/// A generated resource series: linear growth, a daily cycle and Gaussian noise, with a limit
/// its noiseless signal reaches at a known time.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Workload {
    pub name: &'static str,
    pub step_ms: i64,
    pub base: f64,
    pub growth_per_day: f64,
    /// Amplitude of the daily cycle (a sine peaking mid-afternoon).
    pub daily_amplitude: f64,
    pub noise: f64,
    pub limit: f64,
    pub seed: u64,
}

impl Workload {
    /// Five resources of different shapes, each reaching its limit in 8–20 days.
    pub fn standard_set() -> Vec<Workload> {
        let w = |name, base, growth_per_day, daily_amplitude, noise, limit, seed| Workload {
            name,
            step_ms: 5 * 60_000,
            base,
            growth_per_day,
            daily_amplitude,
            noise,
            limit,
            seed,
        };
        vec![
            w("cpu_percent", 30.0, 5.0, 15.0, 3.0, 100.0, 1),
            w("memory_gib", 2.0, 0.4, 0.2, 0.05, 8.0, 2),
            w("disk_gib", 100.0, 20.0, 0.0, 1.0, 500.0, 3),
            w("pool_connections", 20.0, 8.0, 25.0, 4.0, 128.0, 4),
            w("queue_depth", 50.0, 100.0, 40.0, 20.0, 1000.0, 5),
        ]
    }

    pub fn signal(&self, t_ms: i64) -> f64 {
        let days = t_ms as f64 / DAY_MS as f64;
        // Peak at 15:00: sin is 1 at a quarter period after 09:00.
        let phase = std::f64::consts::TAU * (days - 0.375);
        self.base + self.growth_per_day * days + self.daily_amplitude * phase.sin()
    }

    /// The first time (to the millisecond, by bisection within the step) the noiseless signal
    /// reaches the limit; searched over a year.
    pub fn true_crossing_ms(&self) -> Option<i64> {
        let step = 60_000;
        let mut t = 0;
        while t < 365 * DAY_MS {
            if self.signal(t + step) >= self.limit {
                let (mut lo, mut hi) = (t, t + step);
                while hi - lo > 1 {
                    let mid = (lo + hi) / 2;
                    if self.signal(mid) >= self.limit {
                        hi = mid;
                    } else {
                        lo = mid;
                    }
                }
                return Some(hi);
            }
            t += step;
        }
        None
    }

    /// Values from time 0 up to (excluding) `end_ms`.
    pub fn series(&self, end_ms: i64) -> RegularSeries {
        let mut rng = self.seed;
        let steps = usize::try_from(end_ms / self.step_ms).unwrap_or(0);
        let values = (0..steps)
            .map(|i| self.signal(i as i64 * self.step_ms) + self.noise * gaussian(&mut rng))
            .collect();
        RegularSeries {
            start_ms: 0,
            step_ms: self.step_ms,
            values,
        }
    }
}

/// One time-to-saturation estimate made `lead_ms` before the true crossing.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SaturationTrial {
    pub workload: &'static str,
    pub lead_ms: i64,
    pub true_ms: i64,
    /// `None`: predicted not to saturate within the horizon.
    pub predicted_ms: Option<i64>,
    pub earliest_ms: Option<i64>,
    pub latest_ms: Option<i64>,
    /// Predicted minus true, in hours.
    pub error_hours: Option<f64>,
    /// The true time lies within [earliest, latest] (an open `latest` counts as unbounded).
    pub inside_band: bool,
}

/// Estimates each workload's crossing from its history up to `lead` before the truth.
pub fn saturation_trials(
    workloads: &[Workload],
    leads_ms: &[i64],
    horizon_ms: i64,
    estimator: &TimeToSaturation,
) -> Vec<SaturationTrial> {
    let mut out = Vec::new();
    for w in workloads {
        let Some(truth) = w.true_crossing_ms() else {
            continue;
        };
        for &lead in leads_ms {
            let history = w.series(truth - lead);
            let c = estimator.estimate_series(&history, w.limit, horizon_ms);
            out.push(SaturationTrial {
                workload: w.name,
                lead_ms: lead,
                true_ms: truth,
                predicted_ms: c.map(|c| c.at_ms),
                earliest_ms: c.map(|c| c.earliest_ms),
                latest_ms: c.and_then(|c| c.latest_ms),
                error_hours: c.map(|c| (c.at_ms - truth) as f64 / 3_600_000.0),
                inside_band: c.is_some_and(|c| {
                    c.earliest_ms <= truth && c.latest_ms.is_none_or(|l| l >= truth)
                }),
            });
        }
    }
    out
}

/// Backtests the forecaster on each workload's series up to a day after its crossing.
pub fn workload_forecast_backtests(
    workloads: &[Workload],
    settings: &BacktestSettings,
) -> Vec<SeriesBacktest> {
    workloads
        .iter()
        .filter_map(|w| {
            let end = w.true_crossing_ms()? + DAY_MS;
            backtest_series(w.name, &w.series(end), settings)
        })
        .collect()
}

/// How long before each workload's true crossing its time-to-saturation is asked, and how far
/// ahead it may look.
pub const SATURATION_LEADS_MS: [i64; 3] = [72 * 3_600_000, 24 * 3_600_000, 6 * 3_600_000];
pub const SATURATION_HORIZON_MS: i64 = 14 * DAY_MS;

/// The generated workloads' report: forecast accuracy on each, and time-to-saturation asked
/// `SATURATION_LEADS_MS` before each crossing.
pub fn generated_report(settings: &BacktestSettings) -> BacktestReport {
    let workloads = Workload::standard_set();
    BacktestReport {
        forecast: workload_forecast_backtests(&workloads, settings),
        saturation: saturation_trials(
            &workloads,
            &SATURATION_LEADS_MS,
            SATURATION_HORIZON_MS,
            &crate::TimeToSaturation::default(),
        ),
    }
}

/// The whole report: forecast accuracy per series and horizon, and saturation trials.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BacktestReport {
    pub forecast: Vec<SeriesBacktest>,
    pub saturation: Vec<SaturationTrial>,
}

/// Mean over series of one horizon's score (series without forecasts there skipped).
pub fn mean_over_series(
    rows: &[SeriesBacktest],
    index: usize,
    score: fn(&HorizonScore) -> f64,
) -> f64 {
    let v: Vec<f64> = rows
        .iter()
        .filter_map(|r| r.horizons.get(index))
        .filter(|h| h.forecasts > 0)
        .map(score)
        .filter(|x| x.is_finite())
        .collect();
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

impl fmt::Display for BacktestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(first) = self.forecast.first() else {
            return writeln!(f, "no forecast backtests");
        };
        let step_min = first.step_ms / 60_000;
        write!(f, "{:<40}", "series  (MASE ours / seasonal-naive)")?;
        for h in &first.horizons {
            write!(
                f,
                " {:>16}",
                format!("h={}m", h.horizon_steps as i64 * step_min)
            )?;
        }
        writeln!(f)?;
        let row = |f: &mut fmt::Formatter<'_>, name: &str, cells: Vec<(f64, f64)>| -> fmt::Result {
            write!(f, "{name:<40}")?;
            for (a, b) in cells {
                write!(f, " {:>16}", format!("{a:.3} / {b:.3}"))?;
            }
            writeln!(f)
        };
        for s in &self.forecast {
            let cells = s
                .horizons
                .iter()
                .map(|h| (h.mase, h.seasonal_naive_mase))
                .collect();
            row(f, &s.name, cells)?;
        }
        let mean = |i| {
            (
                mean_over_series(&self.forecast, i, |h| h.mase),
                mean_over_series(&self.forecast, i, |h| h.seasonal_naive_mase),
            )
        };
        row(f, "mean", (0..first.horizons.len()).map(mean).collect())?;
        write!(f, "{:<40}", "geo. mean relative MAE (ours/s-naive)")?;
        for i in 0..first.horizons.len() {
            let log = mean_over_series(&self.forecast, i, |h| h.relative_mae.ln());
            write!(f, " {:>16.3}", log.exp())?;
        }
        writeln!(f)?;
        write!(f, "{:<40}", "mean 90% interval coverage")?;
        for i in 0..first.horizons.len() {
            write!(
                f,
                " {:>16.3}",
                mean_over_series(&self.forecast, i, |h| h.coverage)
            )?;
        }
        writeln!(f)?;
        if !self.saturation.is_empty() {
            writeln!(f)?;
            writeln!(
                f,
                "{:<20} {:>8} {:>10} {:>12} {:>22}",
                "workload", "lead h", "true day", "error h", "band [earliest, latest] h"
            )?;
            for t in &self.saturation {
                let rel = |x: Option<i64>| {
                    x.map_or("-".to_string(), |x| {
                        format!("{:+.1}", (x - t.true_ms) as f64 / 3.6e6)
                    })
                };
                writeln!(
                    f,
                    "{:<20} {:>8.1} {:>10.2} {:>12} {:>22}",
                    t.workload,
                    t.lead_ms as f64 / 3.6e6,
                    t.true_ms as f64 / DAY_MS as f64,
                    t.error_hours
                        .map_or("none".to_string(), |e| format!("{e:+.2}")),
                    format!(
                        "[{}, {}]{}",
                        rel(t.earliest_ms),
                        rel(t.latest_ms),
                        if t.inside_band { "" } else { " miss" }
                    ),
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_draws_have_unit_moments() {
        let mut s = 1u64;
        let v: Vec<f64> = (0..20_000).map(|_| gaussian(&mut s)).collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
    }

    #[test]
    fn workload_crossing_is_where_the_signal_meets_the_limit() {
        let w = Workload {
            name: "line",
            step_ms: 60_000,
            base: 0.0,
            growth_per_day: 10.0,
            daily_amplitude: 0.0,
            noise: 0.0,
            limit: 25.0,
            seed: 0,
        };
        assert_eq!(w.true_crossing_ms(), Some(DAY_MS * 5 / 2));
    }

    #[test]
    fn a_perfect_forecaster_scores_zero_and_seasonal_naive_scores_one_step_at_one() {
        // A pure daily cycle: Holt-Winters learns it exactly, seasonal-naive is exact too, so
        // only a scale from a noisy copy makes sense; here check the one-step naive identity.
        let series = RegularSeries {
            start_ms: 0,
            step_ms: 3_600_000,
            values: (0..24 * 8)
                .map(|i| (i as f64 * 0.3).sin() + i as f64 * 0.01)
                .collect(),
        };
        let settings = BacktestSettings {
            horizons: vec![1, 6],
            origins: 3,
            min_train_ms: 4 * DAY_MS,
            forecast: ForecastSettings {
                season_ms: None,
                ..ForecastSettings::default()
            },
        };
        let r = backtest_series("s", &series, &settings).expect("backtest");
        assert_eq!(r.horizons[0].forecasts, 3);
        // Seasonal naive with no season is naive: at h = 1 its error is the in-sample step, so
        // its MASE is close to 1 on this smooth series.
        assert!(
            (r.horizons[0].seasonal_naive_mase - 1.0).abs() < 0.3,
            "{r:?}"
        );
    }
}
