//! Load-to-latency: how a service's latency grows with its request rate, fitted with the Universal
//! Scalability Law, and the rate (then, with a traffic forecast, the time) at which latency will
//! exceed its objective.
//!
//! USL (Gunther): with `N` requests in flight, throughput is `X(N) = λN / (1 + σ(N−1) + κN(N−1))`.
//! By Little's law `N = X·R`, so latency is `R(N) = (1 + σ(N−1) + κN(N−1)) / λ`, and at an offered
//! rate `x` it is the smaller root of `κx²R² + (σx − κx − λ)R + (1 − σ) = 0`. There is no root past
//! the capacity `x_max = λ / (σ − κ + 2√(κ(1−σ)))`: the knee. With `κ = 0` the curve is the M/M/1
//! shape `S / (1 − x/x_max)`. Fitted to p99 rather than mean latency, `λ`, `σ` and `κ` are
//! effective values (the tail factor folds into them); the shape, and so the knee, is what counts.
//!
//! The fit is robust least squares on relative latency errors (Huber loss): a linear start from
//! `R = a + bN + cN²` (which is the USL with `λ = 1/(a+b+c)`, `κ = λc`, `σ = λ(b+c)`), refined by
//! Nelder-Mead on the latency-at-rate curve itself, where the rate is the exact coordinate.

use crate::forecast::nelder_mead;
use crate::saturation::{Crossing, TimeToSaturation};

/// One observation window of a service: its request rate and its latency (p99) there, in
/// consistent units (requests per second and seconds, say).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoadSample {
    pub rate: f64,
    pub latency: f64,
}

/// A fitted latency curve.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct UslFit {
    /// Throughput of one request in flight with no contention.
    pub lambda: f64,
    /// Contention (serialisation) coefficient, in [0, 1).
    pub sigma: f64,
    /// Coherency (crosstalk) coefficient, ≥ 0.
    pub kappa: f64,
    /// Median absolute relative error of the fit over the samples.
    pub median_relative_error: f64,
}

/// Why the rate at the objective is what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum RateLimitedBy {
    /// Latency reaches the objective on the curve at this rate.
    Objective,
    /// The objective is above the latency at the knee: past the capacity, latency diverges.
    Capacity,
    /// Even an idle service misses the objective.
    AlreadyExceeded,
}

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct RateAtObjective {
    pub rate: f64,
    pub limited_by: RateLimitedBy,
}

const HUBER_K: f64 = 1.345;

impl UslFit {
    /// Fits the samples with positive rate and latency; `None` with fewer than four of them.
    pub fn fit(samples: &[LoadSample]) -> Option<UslFit> {
        let samples: Vec<LoadSample> = samples
            .iter()
            .copied()
            .filter(|s| {
                s.rate > 0.0 && s.latency > 0.0 && s.rate.is_finite() && s.latency.is_finite()
            })
            .collect();
        if samples.len() < 4 {
            return None;
        }
        let start = linear_start(&samples);
        let mut theta = encode(&start).to_vec();
        let mut scale = relative_errors(&start, &samples).map_or(0.1, |e| 1.4826 * median(e));
        for _ in 0..3 {
            scale = scale.max(1e-4);
            let loss = |u: &[f64]| {
                let fit = decode(u);
                samples
                    .iter()
                    .map(|s| huber(relative_error(&fit, s) / scale))
                    .sum::<f64>()
            };
            theta = nelder_mead(loss, &theta, 0.5, 600);
            let fit = decode(&theta);
            scale = relative_errors(&fit, &samples).map_or(scale, |e| 1.4826 * median(e));
        }
        let mut fit = decode(&theta);
        fit.median_relative_error = relative_errors(&fit, &samples).map_or(f64::NAN, median);
        Some(fit)
    }

    /// The rate past which no steady state exists.
    pub fn capacity(&self) -> f64 {
        let denominator =
            self.sigma - self.kappa + 2.0 * (self.kappa * (1.0 - self.sigma)).max(0.0).sqrt();
        if denominator > 0.0 {
            self.lambda / denominator
        } else {
            f64::INFINITY
        }
    }

    /// Latency at an offered rate; `None` past the capacity.
    pub fn latency_at(&self, rate: f64) -> Option<f64> {
        let x = rate.max(0.0);
        let a = self.kappa * x * x;
        let b = (self.sigma - self.kappa) * x - self.lambda;
        let c = 1.0 - self.sigma;
        let disc = b * b - 4.0 * a * c;
        if b >= 0.0 || disc < 0.0 {
            return None;
        }
        // The smaller root, in the form that stays exact as a → 0.
        Some(2.0 * c / (-b + disc.sqrt()))
    }

    /// The highest rate at which latency stays within `objective`.
    pub fn rate_at_objective(&self, objective: f64) -> RateAtObjective {
        let capacity = self.capacity();
        if self.latency_at(0.0).is_none_or(|r| r >= objective) {
            return RateAtObjective {
                rate: 0.0,
                limited_by: RateLimitedBy::AlreadyExceeded,
            };
        }
        let mut hi = if capacity.is_finite() {
            capacity
        } else {
            // No knee: latency is flat or grows without bound; search until it passes.
            let mut x = self.lambda.max(1e-9);
            while self.latency_at(x).is_some_and(|r| r < objective) && x < 1e300 {
                x *= 2.0;
            }
            x
        };
        if self
            .latency_at(hi * (1.0 - 1e-12))
            .is_some_and(|r| r < objective)
        {
            return RateAtObjective {
                rate: capacity,
                limited_by: RateLimitedBy::Capacity,
            };
        }
        let mut lo = 0.0;
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if self.latency_at(mid).is_some_and(|r| r < objective) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        RateAtObjective {
            rate: lo,
            limited_by: RateLimitedBy::Objective,
        }
    }

    /// When the traffic forecast (`(ts_ms, rate)` history) reaches the rate at which latency
    /// exceeds `objective`, within `horizon_ms`.
    pub fn objective_crossing(
        &self,
        traffic: &[(i64, f64)],
        objective: f64,
        horizon_ms: i64,
    ) -> Option<(RateAtObjective, Crossing)> {
        let limit = self.rate_at_objective(objective);
        let crossing = TimeToSaturation::estimate(traffic, limit.rate, horizon_ms)?;
        Some((limit, crossing))
    }
}

fn huber(z: f64) -> f64 {
    let z = z.abs();
    if z <= HUBER_K {
        0.5 * z * z
    } else {
        HUBER_K * (z - 0.5 * HUBER_K)
    }
}

/// Relative error of the curve at a sample; a sample past the fitted capacity counts as a miss by
/// the rate's overshoot, so the optimiser is pulled back rather than stopped by a wall.
fn relative_error(fit: &UslFit, s: &LoadSample) -> f64 {
    match fit.latency_at(s.rate) {
        Some(r) => (s.latency - r) / s.latency,
        None => 10.0 * (1.0 + s.rate / fit.capacity().max(1e-12)),
    }
}

fn relative_errors(fit: &UslFit, samples: &[LoadSample]) -> Option<Vec<f64>> {
    let e: Vec<f64> = samples
        .iter()
        .map(|s| relative_error(fit, s).abs())
        .collect();
    e.iter().all(|v| v.is_finite()).then_some(e)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn encode(fit: &UslFit) -> [f64; 3] {
    let sigma = fit.sigma.clamp(1e-6, 1.0 - 1e-6);
    [
        fit.lambda.max(1e-12).ln(),
        (sigma / (1.0 - sigma)).ln(),
        fit.kappa.max(1e-12).ln(),
    ]
}

fn decode(u: &[f64]) -> UslFit {
    UslFit {
        lambda: u[0].exp(),
        sigma: 1.0 / (1.0 + (-u[1]).exp()),
        kappa: u[2].exp(),
        median_relative_error: f64::NAN,
    }
}

/// Robust (Huber IRLS, relative errors) regression of latency on `N = rate · latency`: the USL is
/// `R = a + bN + cN²`. Infeasible coefficients (negative κ or σ) drop to the nested models.
fn linear_start(samples: &[LoadSample]) -> UslFit {
    let n: Vec<f64> = samples.iter().map(|s| s.rate * s.latency).collect();
    let r: Vec<f64> = samples.iter().map(|s| s.latency).collect();
    // Columns for (a, b, c) jointly, for κ = 0, and for σ = 0 (b = −c).
    type Columns = fn(f64) -> [f64; 3];
    let shapes: [(Columns, usize); 3] = [
        (|n| [1.0, n, n * n], 3),
        (|n| [1.0, n, 0.0], 2),
        (|n| [1.0, n * n - n, 0.0], 2),
    ];
    let mut best: Option<(f64, UslFit)> = None;
    for (shape, (columns, p)) in shapes.iter().enumerate() {
        let Some(coef) = huber_regression(&n, &r, *columns, *p) else {
            continue;
        };
        let (a, b, c) = match shape {
            0 => (coef[0], coef[1], coef[2]),
            1 => (coef[0], coef[1], 0.0),
            _ => (coef[0], -coef[1], coef[1]),
        };
        if a <= 0.0 || c < 0.0 || b + c < 0.0 {
            continue;
        }
        let lambda = 1.0 / (a + b + c);
        let fit = UslFit {
            lambda,
            sigma: (lambda * (b + c)).min(1.0 - 1e-6),
            kappa: lambda * c,
            median_relative_error: f64::NAN,
        };
        let loss: f64 = samples
            .iter()
            .map(|s| huber(relative_error(&fit, s) / 0.1))
            .sum();
        if best.as_ref().is_none_or(|b| loss < b.0) {
            best = Some((loss, fit));
        }
    }
    best.map(|b| b.1).unwrap_or_else(|| {
        // Nothing feasible: a flat curve at the median latency, for the optimiser to bend.
        let r = median(r);
        UslFit {
            lambda: 1.0 / r,
            sigma: 0.01,
            kappa: 1e-6,
            median_relative_error: f64::NAN,
        }
    })
}

fn huber_regression(
    x: &[f64],
    y: &[f64],
    columns: fn(f64) -> [f64; 3],
    p: usize,
) -> Option<[f64; 3]> {
    let mut weights: Vec<f64> = y.iter().map(|v| 1.0 / (v * v)).collect();
    let mut coef = [0.0; 3];
    for _ in 0..20 {
        let mut ata = [[0.0; 3]; 3];
        let mut aty = [0.0; 3];
        for ((xi, yi), w) in x.iter().zip(y).zip(&weights) {
            let row = columns(*xi);
            for j in 0..p {
                aty[j] += w * row[j] * yi;
                for k in 0..p {
                    ata[j][k] += w * row[j] * row[k];
                }
            }
        }
        coef = solve(ata, aty, p)?;
        let rel: Vec<f64> = x
            .iter()
            .zip(y)
            .map(|(xi, yi)| {
                let row = columns(*xi);
                ((0..p).map(|j| row[j] * coef[j]).sum::<f64>() - yi) / yi
            })
            .collect();
        let scale = (1.4826 * median(rel.iter().map(|e| e.abs()).collect())).max(1e-9);
        for ((w, e), yi) in weights.iter_mut().zip(&rel).zip(y) {
            let z = (e / scale).abs();
            let huber_weight = if z <= HUBER_K { 1.0 } else { HUBER_K / z };
            *w = huber_weight / (yi * yi);
        }
    }
    Some(coef)
}

/// Gaussian elimination with partial pivoting on the leading `p × p` block.
fn solve(mut a: [[f64; 3]; 3], mut b: [f64; 3], p: usize) -> Option<[f64; 3]> {
    for col in 0..p {
        let pivot = (col..p).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-300 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..p {
            let f = a[row][col] / a[col][col];
            let pivot_row = a[col];
            for (x, pv) in a[row].iter_mut().zip(pivot_row).take(p).skip(col) {
                *x -= f * pv;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = [0.0; 3];
    for row in (0..p).rev() {
        let s: f64 = (row + 1..p).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn truth() -> UslFit {
        UslFit {
            lambda: 200.0,
            sigma: 0.05,
            kappa: 0.001,
            median_relative_error: 0.0,
        }
    }

    fn samples(noise: f64, outliers: bool) -> Vec<LoadSample> {
        let t = truth();
        let capacity = t.capacity();
        let mut rng = 42u64;
        (0..60)
            .map(|i| {
                let rate = capacity * (0.03 + 0.92 * i as f64 / 59.0);
                let mut latency = t.latency_at(rate).expect("below capacity")
                    * (1.0 + noise * crate::backtest::gaussian(&mut rng));
                if outliers && i % 15 == 7 {
                    latency *= 3.0;
                }
                LoadSample { rate, latency }
            })
            .collect()
    }

    #[test]
    fn the_curve_has_its_knee_at_the_capacity() {
        let t = truth();
        let cap = t.capacity();
        assert!((cap - 200.0 / (0.049 + 2.0 * (0.001f64 * 0.95).sqrt())).abs() < 1e-9);
        assert!((t.latency_at(0.0).expect("idle") - 0.95 / 200.0).abs() < 1e-12);
        assert!(t.latency_at(cap * 1.01).is_none());
        let r1 = t.latency_at(0.5 * cap).expect("half");
        let r2 = t.latency_at(0.9 * cap).expect("most");
        assert!(r2 > r1);
        // Little's law: N = x·R satisfies the USL latency equation.
        let x = 0.7 * cap;
        let r = t.latency_at(x).expect("r");
        let n = x * r;
        assert!((r - (1.0 + 0.05 * (n - 1.0) + 0.001 * n * (n - 1.0)) / 200.0).abs() < 1e-12);
    }

    #[test]
    fn fit_recovers_known_parameters_despite_noise_and_outliers() {
        let fit = UslFit::fit(&samples(0.02, true)).expect("fit");
        let t = truth();
        assert!((fit.lambda / t.lambda - 1.0).abs() < 0.1, "{fit:?}");
        assert!((fit.sigma - t.sigma).abs() < 0.02, "{fit:?}");
        assert!((fit.kappa / t.kappa - 1.0).abs() < 0.3, "{fit:?}");
        assert!(
            (fit.capacity() / t.capacity() - 1.0).abs() < 0.05,
            "{fit:?}"
        );
    }

    #[test]
    fn exact_points_are_recovered_closely() {
        let fit = UslFit::fit(&samples(0.0, false)).expect("fit");
        let t = truth();
        assert!((fit.lambda / t.lambda - 1.0).abs() < 0.01, "{fit:?}");
        assert!((fit.sigma - t.sigma).abs() < 0.002, "{fit:?}");
        assert!((fit.kappa / t.kappa - 1.0).abs() < 0.02, "{fit:?}");
    }

    #[test]
    fn rate_at_objective_inverts_the_curve() {
        let t = truth();
        let objective = t.latency_at(0.8 * t.capacity()).expect("r");
        let at = t.rate_at_objective(objective);
        assert_eq!(at.limited_by, RateLimitedBy::Objective);
        assert!((at.rate / (0.8 * t.capacity()) - 1.0).abs() < 1e-6);
        let huge = t.rate_at_objective(10.0);
        assert_eq!(huge.limited_by, RateLimitedBy::Capacity);
        assert!((huge.rate - t.capacity()).abs() < 1e-9);
        assert_eq!(
            t.rate_at_objective(0.001).limited_by,
            RateLimitedBy::AlreadyExceeded
        );
    }

    #[test]
    fn growing_traffic_meets_the_objective_when_the_rates_say() {
        let t = truth();
        let objective = t.latency_at(1000.0).expect("r");
        // 400 req/s growing 1 req/s per minute: 1000 req/s after 600 more minutes.
        let traffic: Vec<(i64, f64)> = (0..=600)
            .map(|i| (i * 60_000, 400.0 + i as f64 * 0.5))
            .collect();
        // At minute 600 the rate is 700; it reaches 1000 at minute 1200.
        let (limit, crossing) = t
            .objective_crossing(&traffic, objective, 48 * 3_600_000)
            .expect("crossing");
        assert!((limit.rate - 1000.0).abs() < 1e-3);
        assert!(
            (crossing.at_ms - 1200 * 60_000).abs() <= 60_000,
            "{crossing:?}"
        );
    }

    #[test]
    fn mm1_shaped_data_fits_with_no_coherency_cost() {
        // M/M/1 sojourn, S = 10 ms: R = S / (1 − xS), capacity 100 req/s.
        let samples: Vec<LoadSample> = (1..40)
            .map(|i| {
                let rate = 2.4 * i as f64;
                LoadSample {
                    rate,
                    latency: 0.01 / (1.0 - rate * 0.01),
                }
            })
            .collect();
        let fit = UslFit::fit(&samples).expect("fit");
        assert!(
            (fit.capacity() / 100.0 - 1.0).abs() < 0.05,
            "{fit:?} cap {}",
            fit.capacity()
        );
        assert!(fit.median_relative_error < 0.02, "{fit:?}");
    }
}
