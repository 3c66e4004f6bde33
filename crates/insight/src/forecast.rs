//! Forecasting a metric series with prediction intervals: additive Holt-Winters (ETS(A,A,A) in the
//! error-correction form, trend and daily seasonality each kept only when they earn their
//! parameters by AICc), fitted by Nelder-Mead on the one-step squared error.
//!
//! Own implementation rather than `augurs-ets`: augurs pulls 59 crates (nalgebra among them) and
//! took 4½ minutes to build cold on our 2-core machines, for a model that is ~300 lines here.
//!
//! Intervals are the analytic ones of a linear innovations state-space model (Hyndman et al.,
//! *Forecasting with Exponential Smoothing*, class 1): the variance `h` steps ahead is
//! `σ² (1 + Σ_{j<h} c_j²)` with `c_j = α + jβ + γ·[j mod m = 0]`.

use crate::normal;

pub const DAY_MS: i64 = 86_400_000;

/// Evenly spaced values: `values[i]` is at `start_ms + i · step_ms`.
#[derive(Clone, Debug, PartialEq)]
pub struct RegularSeries {
    pub start_ms: i64,
    pub step_ms: i64,
    pub values: Vec<f64>,
}

impl RegularSeries {
    /// Puts `(ts_ms, value)` points (in any order, possibly irregular, with gaps) on a grid whose
    /// step is the median spacing: points in one step are averaged, empty steps are interpolated
    /// linearly. Non-finite values are ignored. `None` with fewer than two distinct times.
    pub fn from_points(points: &[(i64, f64)]) -> Option<Self> {
        let mut points: Vec<(i64, f64)> =
            points.iter().copied().filter(|p| p.1.is_finite()).collect();
        points.sort_by_key(|p| p.0);
        let mut gaps: Vec<i64> = points
            .windows(2)
            .map(|w| w[1].0 - w[0].0)
            .filter(|&d| d > 0)
            .collect();
        if gaps.is_empty() {
            return None;
        }
        gaps.sort_unstable();
        let step_ms = gaps[gaps.len() / 2];
        let start_ms = points[0].0;
        let last = points[points.len() - 1].0;
        let steps = usize::try_from((last - start_ms) / step_ms).ok()? + 1;
        let mut sums = vec![(0.0, 0u32); steps];
        for &(t, v) in &points {
            // Rounded to the nearest step so jitter around the grid stays in its slot.
            let i = ((t - start_ms) as f64 / step_ms as f64).round() as usize;
            let slot = &mut sums[i.min(steps - 1)];
            slot.0 += v;
            slot.1 += 1;
        }
        let mut values = vec![f64::NAN; steps];
        for (v, (sum, count)) in values.iter_mut().zip(&sums) {
            if *count > 0 {
                *v = sum / f64::from(*count);
            }
        }
        fill_gaps(&mut values);
        Some(RegularSeries {
            start_ms,
            step_ms,
            values,
        })
    }

    pub fn time_of(&self, index: usize) -> i64 {
        self.start_ms + index as i64 * self.step_ms
    }

    pub fn last_ms(&self) -> i64 {
        self.time_of(self.values.len().saturating_sub(1))
    }
}

/// Linear interpolation over NaN runs; the first and last slots are never NaN by construction.
fn fill_gaps(values: &mut [f64]) {
    let mut prev: Option<usize> = None;
    for i in 0..values.len() {
        if values[i].is_nan() {
            continue;
        }
        if let Some(p) = prev
            && i > p + 1
        {
            let (a, b) = (values[p], values[i]);
            for (j, v) in values.iter_mut().enumerate().take(i).skip(p + 1) {
                *v = a + (b - a) * (j - p) as f64 / (i - p) as f64;
            }
        }
        prev = Some(i);
    }
}

/// Whether the model has a trend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrendChoice {
    /// Kept when it lowers AICc.
    Auto,
    /// Always an additive trend (time-to-saturation extrapolates growth by definition).
    Additive,
    None,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ForecastSettings {
    /// The seasonal period; `None` for none.
    pub season_ms: Option<i64>,
    /// Whole periods of history needed before seasonality is considered.
    pub min_seasons: f64,
    /// Only the most recent points are fitted (cost is linear in them).
    pub max_fit_points: usize,
    /// Coverage of the prediction interval, e.g. 0.9.
    pub level: f64,
    pub trend: TrendChoice,
}

impl Default for ForecastSettings {
    fn default() -> Self {
        ForecastSettings {
            season_ms: Some(DAY_MS),
            min_seasons: 2.0,
            max_fit_points: 3000,
            level: 0.9,
            trend: TrendChoice::Auto,
        }
    }
}

/// A forecast `mean.len()` steps ahead; step `h` (1-based) is `mean[h - 1]`, at
/// `first_ms + (h - 1) · step_ms`.
#[derive(Clone, Debug, PartialEq)]
pub struct Forecast {
    pub first_ms: i64,
    pub step_ms: i64,
    pub level: f64,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    pub lower: Vec<f64>,
    pub upper: Vec<f64>,
}

impl Forecast {
    pub fn time_of(&self, index: usize) -> i64 {
        self.first_ms + index as i64 * self.step_ms
    }
}

/// A fitted additive Holt-Winters model, its state at the end of the fitted history.
#[derive(Clone, Debug, PartialEq)]
pub struct HoltWinters {
    pub alpha: f64,
    /// Trend gain in the error-correction form (Holt's `α·β*`); 0 without trend.
    pub beta: f64,
    pub gamma: f64,
    pub has_trend: bool,
    /// Seasonal period in steps; 0 without seasonality.
    pub period: usize,
    pub level: f64,
    pub slope: f64,
    /// Seasonal offsets; `season[next_season]` applies to the next step.
    season: Vec<f64>,
    next_season: usize,
    /// One-step error variance.
    pub sigma2: f64,
    pub aicc: f64,
    last_ms: i64,
    step_ms: i64,
}

#[derive(Clone, Copy)]
struct Shape {
    trend: bool,
    period: usize,
}

impl HoltWinters {
    /// Fits the best model the settings allow; `None` with fewer than 4 points.
    pub fn fit(series: &RegularSeries, settings: &ForecastSettings) -> Option<HoltWinters> {
        let n = series.values.len();
        if n < 4 {
            return None;
        }
        let skip = n.saturating_sub(settings.max_fit_points.max(4));
        let y = &series.values[skip..];
        let period = settings
            .season_ms
            .map(|s| (s as f64 / series.step_ms as f64).round() as usize)
            .filter(|&m| m >= 2 && y.len() as f64 >= settings.min_seasons.max(2.0) * m as f64)
            .unwrap_or(0);
        let trends: &[bool] = match settings.trend {
            TrendChoice::Auto => &[false, true],
            TrendChoice::Additive => &[true],
            TrendChoice::None => &[false],
        };
        let periods: &[usize] = if period > 0 { &[0, period] } else { &[0] };
        let mut best: Option<HoltWinters> = None;
        for &trend in trends {
            for &period in periods {
                let Some(model) = fit_shape(y, Shape { trend, period }) else {
                    continue;
                };
                if best.as_ref().is_none_or(|b| model.aicc < b.aicc) {
                    best = Some(model);
                }
            }
        }
        best.map(|mut m| {
            m.last_ms = series.last_ms();
            m.step_ms = series.step_ms;
            m
        })
    }

    /// Forecasts `steps` steps past the fitted history at the settings' interval level.
    pub fn forecast(&self, steps: usize, level: f64) -> Forecast {
        let z = normal::quantile(0.5 + level.clamp(0.0, 0.999_999) / 2.0);
        let mut mean = Vec::with_capacity(steps);
        let mut std = Vec::with_capacity(steps);
        let mut sum_c2 = 0.0;
        for h in 1..=steps {
            let season = if self.period > 0 {
                self.season[(self.next_season + h - 1) % self.period]
            } else {
                0.0
            };
            mean.push(self.level + h as f64 * self.slope + season);
            std.push((self.sigma2 * (1.0 + sum_c2)).sqrt());
            // c_h, used from step h + 1 on.
            let mut c = self.alpha + h as f64 * self.beta;
            if self.period > 0 && h % self.period == 0 {
                c += self.gamma;
            }
            sum_c2 += c * c;
        }
        let lower = mean.iter().zip(&std).map(|(m, s)| m - z * s).collect();
        let upper = mean.iter().zip(&std).map(|(m, s)| m + z * s).collect();
        Forecast {
            first_ms: self.last_ms + self.step_ms,
            step_ms: self.step_ms,
            level,
            mean,
            std,
            lower,
            upper,
        }
    }
}

/// Fits and forecasts in one go; `None` when there is too little history.
pub fn forecast(
    series: &RegularSeries,
    steps: usize,
    settings: &ForecastSettings,
) -> Option<Forecast> {
    HoltWinters::fit(series, settings).map(|m| m.forecast(steps, settings.level))
}

/// Initial state. Seasonal: a least-squares line through the first (up to four) whole periods
/// gives level and slope, and each offset is the mean deviation from it at that phase over those
/// periods (one period alone would freeze its noise into the profile). Otherwise level and slope
/// come from the first few points.
fn initial_state(y: &[f64], shape: Shape) -> (f64, f64, Vec<f64>) {
    let m = shape.period;
    if let Some(periods) = y.len().checked_div(m) {
        let periods = periods.clamp(1, 4);
        let head = &y[..periods * m];
        let (intercept, slope) = if shape.trend {
            line(head)
        } else {
            (mean(head), 0.0)
        };
        let mut season = vec![0.0; m];
        for (i, v) in head.iter().enumerate() {
            season[i % m] += (v - (intercept + slope * i as f64)) / periods as f64;
        }
        let offset = mean(&season);
        season.iter_mut().for_each(|s| *s -= offset);
        (intercept + offset - slope, slope, season)
    } else {
        let k = (y.len() / 4).clamp(1, 12);
        let slope = if shape.trend && y.len() >= 2 * k {
            (mean(&y[k..2 * k]) - mean(&y[..k])) / k as f64
        } else {
            0.0
        };
        (y[0] - slope, slope, Vec::new())
    }
}

/// Least-squares `(intercept, slope)` of `y` against its index.
fn line(y: &[f64]) -> (f64, f64) {
    let n = y.len() as f64;
    let tm = (n - 1.0) / 2.0;
    let ym = mean(y);
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (i, v) in y.iter().enumerate() {
        let dt = i as f64 - tm;
        sxy += dt * (v - ym);
        sxx += dt * dt;
    }
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    (ym - slope * tm, slope)
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len().max(1) as f64
}

/// Smoothing parameters from the unconstrained optimiser coordinates.
fn params(u: &[f64], shape: Shape) -> (f64, f64, f64) {
    let alpha = 0.0001 + 0.9998 * sigmoid(u[0]);
    let mut i = 1;
    let beta = if shape.trend {
        i += 1;
        alpha * sigmoid(u[1])
    } else {
        0.0
    };
    let gamma = if shape.period > 0 {
        (1.0 - alpha) * sigmoid(u[i])
    } else {
        0.0
    };
    (alpha, beta, gamma)
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

struct Run {
    sse: f64,
    level: f64,
    slope: f64,
    season: Vec<f64>,
    next_season: usize,
}

fn run(y: &[f64], shape: Shape, alpha: f64, beta: f64, gamma: f64) -> Run {
    let (mut level, mut slope, mut season) = initial_state(y, shape);
    let m = shape.period;
    let mut s = 0;
    let mut sse = 0.0;
    for &v in y {
        let seasonal = if m > 0 { season[s] } else { 0.0 };
        let e = v - (level + slope + seasonal);
        sse += e * e;
        level += slope + alpha * e;
        slope += beta * e;
        if m > 0 {
            season[s] += gamma * e;
            s = (s + 1) % m;
        }
    }
    Run {
        sse,
        level,
        slope,
        season,
        next_season: s,
    }
}

fn fit_shape(y: &[f64], shape: Shape) -> Option<HoltWinters> {
    let n = y.len();
    let dims = 1 + usize::from(shape.trend) + usize::from(shape.period > 0);
    // Smoothing parameters and the level/slope start. The seasonal start is not counted: it is
    // read off the first period, not optimised, and counting it (as R's `ets` does for its
    // optimised states) let the one-step likelihood of a fast-tracking non-seasonal model win on
    // clean daily cycles, whose multi-step forecasts it then gets wrong.
    let k = dims + 1 + usize::from(shape.trend);
    if n <= k + 2 {
        return None;
    }
    let start = [-0.85, -3.0, -2.2]; // α ≈ 0.3, β* ≈ 0.05, γ* ≈ 0.1
    let objective = |u: &[f64]| {
        let (a, b, g) = params(u, shape);
        let sse = run(y, shape, a, b, g).sse;
        if sse.is_finite() { sse } else { f64::MAX }
    };
    let u = nelder_mead(objective, &start[..dims], 1.0, 60 * dims * dims);
    let (alpha, beta, gamma) = params(&u, shape);
    let r = run(y, shape, alpha, beta, gamma);
    let sigma2 = (r.sse / n as f64).max(f64::MIN_POSITIVE);
    let nf = n as f64;
    let kf = k as f64;
    let aicc = nf * sigma2.ln() + 2.0 * kf + 2.0 * kf * (kf + 1.0) / (nf - kf - 1.0);
    Some(HoltWinters {
        alpha,
        beta,
        gamma,
        has_trend: shape.trend,
        period: shape.period,
        level: r.level,
        slope: r.slope,
        season: r.season,
        next_season: r.next_season,
        sigma2,
        aicc,
        last_ms: 0,
        step_ms: 1,
    })
}

/// Nelder-Mead minimisation from `x0` with an initial simplex of edge `step`.
pub(crate) fn nelder_mead(
    f: impl Fn(&[f64]) -> f64,
    x0: &[f64],
    step: f64,
    max_evals: usize,
) -> Vec<f64> {
    let d = x0.len();
    let mut simplex: Vec<(Vec<f64>, f64)> = (0..=d)
        .map(|i| {
            let mut x = x0.to_vec();
            if i > 0 {
                x[i - 1] += step;
            }
            let fx = f(&x);
            (x, fx)
        })
        .collect();
    let mut evals = d + 1;
    while evals < max_evals {
        simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
        let (best, worst) = (simplex[0].1, simplex[d].1);
        if (worst - best).abs() <= 1e-10 * (best.abs() + 1e-12) {
            break;
        }
        let centroid: Vec<f64> = (0..d)
            .map(|j| simplex[..d].iter().map(|p| p.0[j]).sum::<f64>() / d as f64)
            .collect();
        let along = |t: f64| -> Vec<f64> {
            centroid
                .iter()
                .zip(&simplex[d].0)
                .map(|(c, w)| c + t * (w - c))
                .collect()
        };
        let xr = along(-1.0);
        let fr = f(&xr);
        evals += 1;
        if fr < simplex[0].1 {
            let xe = along(-2.0);
            let fe = f(&xe);
            evals += 1;
            simplex[d] = if fe < fr { (xe, fe) } else { (xr, fr) };
        } else if fr < simplex[d - 1].1 {
            simplex[d] = (xr, fr);
        } else {
            let xc = if fr < simplex[d].1 {
                along(-0.5)
            } else {
                along(0.5)
            };
            let fc = f(&xc);
            evals += 1;
            if fc < fr.min(simplex[d].1) {
                simplex[d] = (xc, fc);
            } else {
                let best = simplex[0].0.clone();
                for p in simplex.iter_mut().skip(1) {
                    p.0 = best
                        .iter()
                        .zip(&p.0)
                        .map(|(b, x)| b + 0.5 * (x - b))
                        .collect();
                    p.1 = f(&p.0);
                }
                evals += d;
            }
        }
    }
    simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
    simplex.swap_remove(0).0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(values: Vec<f64>, step_ms: i64) -> RegularSeries {
        RegularSeries {
            start_ms: 0,
            step_ms,
            values,
        }
    }

    #[test]
    fn irregular_points_land_on_a_median_grid_with_gaps_interpolated() {
        let points = [
            (0, 1.0),
            (60_000, 2.0),
            (65_000, 4.0),
            (240_000, 8.0),
            (120_000, f64::NAN),
        ];
        let s = RegularSeries::from_points(&points).expect("series");
        // Gaps 60 s, 5 s, 175 s: median 60 s.
        assert_eq!(s.step_ms, 60_000);
        let expected = [1.0, 3.0, 14.0 / 3.0, 19.0 / 3.0, 8.0];
        assert_eq!(s.values.len(), expected.len());
        for (v, e) in s.values.iter().zip(expected) {
            assert!((v - e).abs() < 1e-9, "{:?}", s.values);
        }
    }

    #[test]
    fn a_straight_line_is_extrapolated_with_a_narrow_band() {
        let values: Vec<f64> = (0..200).map(|i| 10.0 + 0.5 * i as f64).collect();
        let f = forecast(&series(values, 1000), 10, &ForecastSettings::default()).expect("fit");
        for (h, m) in f.mean.iter().enumerate() {
            let expected = 10.0 + 0.5 * (200 + h) as f64;
            assert!((m - expected).abs() < 1e-3, "step {h}: {m} vs {expected}");
        }
        assert!(f.upper[9] - f.lower[9] < 0.01);
        assert_eq!(f.first_ms, 200_000);
    }

    #[test]
    fn daily_seasonality_is_learned_and_the_band_covers_the_noise() {
        let step = 15 * 60_000; // 96 steps a day
        let mut rng = 12345u64;
        let truth = |i: usize| 50.0 + 10.0 * (i as f64 * std::f64::consts::TAU / 96.0).sin();
        let values: Vec<f64> = (0..96 * 6)
            .map(|i| truth(i) + crate::backtest::gaussian(&mut rng))
            .collect();
        let model =
            HoltWinters::fit(&series(values, step), &ForecastSettings::default()).expect("fit");
        assert_eq!(model.period, 96);
        let f = model.forecast(96, 0.9);
        let mut inside = 0;
        for h in 0..96 {
            let t = truth(96 * 6 + h);
            assert!(
                (f.mean[h] - t).abs() < 2.0,
                "step {h}: {} vs {t}",
                f.mean[h]
            );
            inside += usize::from(f.lower[h] <= t && t <= f.upper[h]);
        }
        assert!(inside >= 90);
    }

    #[test]
    fn noise_alone_grows_no_trend_and_no_season() {
        let mut rng = 7u64;
        let values: Vec<f64> = (0..2000)
            .map(|_| 5.0 + crate::backtest::gaussian(&mut rng))
            .collect();
        let model =
            HoltWinters::fit(&series(values, 60_000), &ForecastSettings::default()).expect("fit");
        assert_eq!(model.period, 0, "seasonality needs two days: {model:?}");
        let f = model.forecast(100, 0.9);
        assert!((f.mean[99] - 5.0).abs() < 0.5);
    }
}
