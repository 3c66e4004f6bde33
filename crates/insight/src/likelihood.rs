//! The "rare event" step that turns a surprise measurement into evidence (`−ln P`): how
//! improbable is a surprise at least this large, under this series' own history of surprises?
//! Calibrating per series is what lets one global threshold serve quiet and noisy series alike.
//!
//! Surprises are modelled by their tail only (peaks over a threshold, with an exponential excess,
//! the ξ = 0 case of the generalised Pareto law used by SPOT-style detectors): a fraction `ρ` of
//! surprises exceed the threshold `u`, and by how much is exponential with mean `β`, so
//! `P(S > s) = ρ · exp(−(s − u)/β)` for `s > u`. Three numbers per signal, whatever the stream
//! length.

/// The running tail of one surprise signal.
#[derive(Clone, Copy, Debug)]
pub struct ExceedanceTail {
    threshold: f64,
    /// Fraction of surprises above the threshold.
    exceed_fraction: f64,
    /// Mean excess of those that were above it.
    mean_excess: f64,
    seen: u32,
}

impl ExceedanceTail {
    /// A tail that starts from the prior of an exponential surprise (as `|error| / MAE` would be
    /// for Laplace noise): `ρ = e^{−u}`, `β = 1`.
    pub fn new(threshold: f64) -> Self {
        ExceedanceTail {
            threshold,
            exceed_fraction: (-threshold).exp(),
            mean_excess: 1.0,
            seen: 0,
        }
    }

    /// Evidence `−ln P(S ≥ surprise)` under the history so far (0 at or below the threshold).
    pub fn evidence(&self, surprise: f64) -> f64 {
        if surprise <= self.threshold {
            return 0.0;
        }
        -self.exceed_fraction.ln() + (surprise - self.threshold) / self.mean_excess
    }

    /// Learns from one surprise. The rate starts at `1/n` from a prior worth `prior_weight`
    /// observations and settles at `rate`.
    pub fn learn(&mut self, surprise: f64, rate: f64, prior_weight: f64) {
        self.seen = self.seen.saturating_add(1);
        let step = (1.0 / (f64::from(self.seen) + prior_weight)).max(rate);
        let exceeded = surprise > self.threshold;
        self.exceed_fraction += step * (f64::from(u8::from(exceeded)) - self.exceed_fraction);
        // Never let the fraction reach 0 (infinite evidence) or 1 (none).
        self.exceed_fraction = self.exceed_fraction.clamp(1e-6, 0.5);
        if exceeded {
            // One wild excess may widen the tail a lot, but not without bound.
            let excess = (surprise - self.threshold).min(20.0 * self.mean_excess);
            // Excesses update the mean at the rate the exceedances arrive.
            let excess_step = (step / self.exceed_fraction).min(1.0);
            self.mean_excess += excess_step * (excess - self.mean_excess);
            self.mean_excess = self.mean_excess.max(1e-3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_follows_the_exponential_tail() {
        // The prior with u = 2: ρ = e^{-2}, β = 1, so a surprise of 5 has
        // −ln P = 2 + (5 − 2)/1 = 5.
        let tail = ExceedanceTail::new(2.0);
        assert!((tail.evidence(5.0) - 5.0).abs() < 1e-12);
        assert_eq!(tail.evidence(1.0), 0.0);
    }

    #[test]
    fn heavy_tailed_history_makes_the_same_surprise_less_rare() {
        let mut quiet = ExceedanceTail::new(2.0);
        let mut spiky = ExceedanceTail::new(2.0);
        for i in 0..2000 {
            quiet.learn(if i % 10 == 0 { 2.5 } else { 0.5 }, 0.01, 10.0);
            spiky.learn(if i % 10 == 0 { 12.0 } else { 0.5 }, 0.01, 10.0);
        }
        assert!(quiet.evidence(10.0) > 2.0 * spiky.evidence(10.0));
        // About one surprise in ten exceeds the threshold in both.
        assert!((quiet.exceed_fraction - 0.1).abs() < 0.03);
    }
}
