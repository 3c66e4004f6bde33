//! A seasonal profile: the typical deviation from the local level at each phase of a period (a
//! day, a week), in a fixed number of bins, so memory does not depend on the sampling rate.

/// `BINS` equal slices of `period_ms`, read with linear interpolation between bin centres so a
/// coarse profile still follows a smooth daily curve.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SeasonalProfile<const BINS: usize> {
    period_ms: i64,
    /// The typical deviation from the local level in each bin.
    #[serde(with = "crate::state::array")]
    deviation: [f64; BINS],
    /// How many updates each bin has seen (saturating), for its learning rate.
    #[serde(with = "crate::state::array")]
    updates: [u16; BINS],
    first_ts_ms: Option<i64>,
}

impl<const BINS: usize> SeasonalProfile<BINS> {
    pub fn new(period_ms: i64) -> Self {
        SeasonalProfile {
            period_ms,
            deviation: [0.0; BINS],
            updates: [0; BINS],
            first_ts_ms: None,
        }
    }

    /// The two bins around `ts_ms` and the weight of the second.
    fn neighbours(&self, ts_ms: i64) -> (usize, usize, f64) {
        let phase = ts_ms.rem_euclid(self.period_ms) as f64 / self.period_ms as f64;
        let position = phase * BINS as f64 - 0.5;
        let below = position.floor();
        let weight = position - below;
        let first = (below as i64).rem_euclid(BINS as i64) as usize;
        (first, (first + 1) % BINS, weight)
    }

    /// Whole periods seen since the first update.
    pub fn periods_seen(&self, ts_ms: i64) -> f64 {
        self.first_ts_ms
            .map_or(0.0, |first| (ts_ms - first) as f64 / self.period_ms as f64)
    }

    /// The expected deviation from the level at `ts_ms`.
    pub fn at(&self, ts_ms: i64) -> f64 {
        let (a, b, w) = self.neighbours(ts_ms);
        self.deviation[a] * (1.0 - w) + self.deviation[b] * w
    }

    /// Learns that the series deviated by `deviation` from its level at `ts_ms`. Each bin averages
    /// its first updates equally, then forgets at `rate`.
    pub fn learn(&mut self, ts_ms: i64, deviation: f64, rate: f64) {
        self.first_ts_ms.get_or_insert(ts_ms);
        let (a, b, w) = self.neighbours(ts_ms);
        for (bin, share) in [(a, 1.0 - w), (b, w)] {
            if share <= 0.0 {
                continue;
            }
            let n = &mut self.updates[bin];
            *n = n.saturating_add(1);
            let step = (1.0 / f64::from(*n)).max(rate) * share;
            self.deviation[bin] += step * (deviation - self.deviation[bin]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    #[test]
    fn learns_a_daily_shape_and_interpolates() {
        let mut p = SeasonalProfile::<24>::new(24 * HOUR);
        for day in 0..5 {
            for minute in (0..24 * 60).step_by(5) {
                let ts = day * 24 * HOUR + minute * 60_000;
                let shape = (minute as f64 / (24.0 * 60.0) * std::f64::consts::TAU).sin();
                p.learn(ts, shape, 0.05);
            }
        }
        // Six hours into the day the sine peaks.
        assert!((p.at(6 * HOUR) - 1.0).abs() < 0.05, "{}", p.at(6 * HOUR));
        assert!((p.at(18 * HOUR) + 1.0).abs() < 0.05, "{}", p.at(18 * HOUR));
        assert!(p.periods_seen(5 * 24 * HOUR) > 4.9);
    }
}
