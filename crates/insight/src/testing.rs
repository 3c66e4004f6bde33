//! Deterministic generated series shared by the tests, examples and benchmarks of `insight` and
//! of the crates that use it: seeded noise (so tests never flake) and a daily-seasonal series.
//! Not used by the detectors themselves.

/// A deterministic uniform / standard-normal generator (xorshift + Box–Muller).
#[derive(Clone, Debug)]
pub struct Noise(u64);

impl Noise {
    /// A generator for `seed` (any value but 0, which xorshift never leaves).
    pub fn new(seed: u64) -> Self {
        Noise(seed.max(1))
    }

    /// Uniform in (0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal.
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

pub const DAY_MS: i64 = 86_400_000;

/// The time of day of `ts_ms` (UTC) as an angle in [0, 2π).
pub fn day_phase(ts_ms: i64) -> f64 {
    ts_ms.rem_euclid(DAY_MS) as f64 / DAY_MS as f64 * std::f64::consts::TAU
}

/// A daily-seasonal series: `points` points every `step_ms` from `start_ms`, valued
/// `level + amplitude · sin(2π · time of day) + sigma · N(0, 1)` with noise seeded by `seed`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Seasonal {
    pub start_ms: i64,
    pub step_ms: i64,
    pub points: usize,
    pub level: f64,
    pub amplitude: f64,
    pub sigma: f64,
}

impl Seasonal {
    pub fn generate(&self, seed: u64) -> Vec<(i64, f64)> {
        let mut noise = Noise::new(seed);
        (0..self.points)
            .map(|i| {
                let ts = self.start_ms + i as i64 * self.step_ms;
                let v =
                    self.level + self.amplitude * day_phase(ts).sin() + self.sigma * noise.normal();
                (ts, v)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_repeatable_and_roughly_standard() {
        let mut a = Noise::new(3);
        let mut b = Noise::new(3);
        let xs: Vec<f64> = (0..20_000).map(|_| a.normal()).collect();
        assert!(xs.iter().all(|&x| x == b.normal()));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
    }

    #[test]
    fn the_daily_cycle_peaks_at_six_in_the_morning() {
        let s = Seasonal {
            start_ms: 0,
            step_ms: 3_600_000,
            points: 24,
            level: 100.0,
            amplitude: 10.0,
            sigma: 0.0,
        }
        .generate(1);
        assert_eq!(s[6], (6 * 3_600_000, 110.0));
        assert!((s[18].1 - 90.0).abs() < 1e-9);
    }
}
