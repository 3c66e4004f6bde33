//! The "rare event" step that turns a surprise measurement into evidence (`−ln P`): how
//! improbable is a surprise at least this large, under this series' own history of surprises?
//! Calibrating per series is what lets one global threshold serve quiet and noisy series alike.
//!
//! Surprises are modelled by their tail only (peaks over a threshold, with an exponential excess,
//! the ξ = 0 case of the generalised Pareto law used by SPOT-style detectors): a fraction `ρ` of
//! surprises exceed the threshold `u`, and by how much is exponential with mean `β`, so
//! `P(S > s) = ρ · exp(−(s − u)/β)` for `s > u`. Three numbers per signal, whatever the stream
//! length.

/// The running tail of one surprise signal. Its sums decay, so it forgets: a series whose
/// surprises grow or shrink gets a tail that follows them, while a prior worth a fixed number of
/// observations keeps the estimates sane when exceedances are rare.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct ExceedanceTail {
    threshold: f64,
    /// Decayed count of surprises, of those above the threshold, and of their excess.
    total: f64,
    exceeded: f64,
    excess: f64,
    /// Prior fraction above the threshold (its mean excess prior is 1).
    prior_fraction: f64,
    prior_weight: f64,
}

impl ExceedanceTail {
    /// A tail that starts from the prior of an exponential surprise (as `|error| / MAE` would be
    /// for Laplace noise): `ρ = e^{−u}`, `β = 1`.
    pub fn new(threshold: f64) -> Self {
        ExceedanceTail {
            threshold,
            total: 0.0,
            exceeded: 0.0,
            excess: 0.0,
            prior_fraction: (-threshold).exp(),
            // Until `learn` sets it, the prior alone decides.
            prior_weight: 1.0,
        }
    }

    fn exceed_fraction(&self) -> f64 {
        let w = self.prior_weight;
        ((self.exceeded + w * self.prior_fraction) / (self.total + w).max(1e-12)).clamp(1e-6, 0.5)
    }

    fn mean_excess(&self) -> f64 {
        // The prior's excesses are worth a tenth of its surprises, at least one.
        let w = (0.1 * self.prior_weight).max(1.0);
        ((self.excess + w) / (self.exceeded + w)).max(1e-3)
    }

    /// Evidence `−ln P(S ≥ surprise)` under the history so far (0 at or below the threshold).
    pub fn evidence(&self, surprise: f64) -> f64 {
        if surprise <= self.threshold {
            return 0.0;
        }
        -self.exceed_fraction().ln() + (surprise - self.threshold) / self.mean_excess()
    }

    /// Learns from one surprise; the sums forget at `rate`, the prior is worth `prior_weight`
    /// observations.
    pub fn learn(&mut self, surprise: f64, rate: f64, prior_weight: f64) {
        self.prior_weight = prior_weight;
        let keep = 1.0 - rate;
        let mean_excess = self.mean_excess();
        self.total = self.total * keep + 1.0;
        self.exceeded *= keep;
        self.excess *= keep;
        if surprise > self.threshold {
            self.exceeded += 1.0;
            // One wild excess may widen the tail a lot, but not without bound.
            self.excess += (surprise - self.threshold).min(20.0 * mean_excess);
        }
    }
}

/// The standard normal upper tail `−ln Q(z)`, computed in log form so it stays finite for large
/// `z` (Numerical Recipes' `erfc` approximation, relative error below 1.2e-7).
pub fn normal_tail_evidence(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    if x < 0.0 {
        // Q(z) = 1 − Q(−z), close to 1 here.
        let q = (-normal_tail_evidence(-z)).exp();
        return -(1.0 - q).max(1e-300).ln();
    }
    let t = 1.0 / (1.0 + 0.5 * x);
    let poly = -1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    // ln erfc(x) = ln t − x² + poly, and Q = erfc / 2.
    -(t.ln() - x * x + poly - std::f64::consts::LN_2)
}

/// HTM-style anomaly likelihood of a raw score in [0, 1]: the recent mean of the raw scores is
/// compared with the long-run distribution (a Gaussian) of that same mean; the evidence is
/// `−ln Q(z)`, so a raw score that is always high (a noisy series) brings none, and one that rises
/// above its usual level for several points brings a lot.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ScoreLikelihood {
    short: f64,
    long_mean: f64,
    long_variance: f64,
    seen: u32,
}

impl ScoreLikelihood {
    /// Takes the next raw score; `short_rate` is the rate of the recent mean, `long_rate` the
    /// floor of the long-run one's, and no evidence is given during the first `learning` scores.
    pub fn observe(&mut self, raw: f64, short_rate: f64, long_rate: f64, learning: u32) -> f64 {
        self.short += short_rate * (raw - self.short);
        // As in HTM's likelihood, a mean below 0.03 or a variance below 0.0003 is raised to it
        // so a blip on a quiet series is not infinitely rare.
        let mean = self.long_mean.max(0.03);
        let std = self.long_variance.max(0.0003).sqrt();
        let evidence = if self.seen < learning {
            0.0
        } else {
            normal_tail_evidence((self.short - mean) / std)
        };
        self.seen = self.seen.saturating_add(1);
        let rate = (1.0 / f64::from(self.seen)).max(long_rate);
        let d = self.short - self.long_mean;
        self.long_mean += rate * d;
        self.long_variance = (1.0 - rate) * (self.long_variance + rate * d * d);
        evidence
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
        assert!((quiet.exceed_fraction() - 0.1).abs() < 0.03);
    }

    #[test]
    fn the_tail_forgets_an_old_regime() {
        let mut tail = ExceedanceTail::new(2.0);
        for i in 0..3000 {
            tail.learn(if i % 10 == 0 { 40.0 } else { 0.5 }, 0.005, 10.0);
        }
        let wide = tail.evidence(10.0);
        for i in 0..3000 {
            tail.learn(if i % 10 == 0 { 2.5 } else { 0.5 }, 0.005, 10.0);
        }
        assert!(
            tail.evidence(10.0) > 3.0 * wide,
            "{wide} {}",
            tail.evidence(10.0)
        );
    }

    #[test]
    fn normal_tail_matches_known_values() {
        // Q(0) = 0.5, Q(1.96) ≈ 0.025, Q(5) ≈ 2.867e-7.
        assert!((normal_tail_evidence(0.0) - std::f64::consts::LN_2).abs() < 1e-6);
        assert!((normal_tail_evidence(1.959_964) - 0.025f64.ln().abs()).abs() < 1e-4);
        assert!((normal_tail_evidence(5.0) + 2.866_5e-7f64.ln()).abs() < 1e-3);
        assert!(normal_tail_evidence(-3.0) < 0.01);
        assert!(normal_tail_evidence(40.0).is_finite());
    }

    #[test]
    fn likelihood_flags_a_rise_in_a_noisy_raw_score_only_when_sustained() {
        let mut l = ScoreLikelihood::default();
        let mut x: u64 = 7;
        let mut noise = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut quiet_max: f64 = 0.0;
        for _ in 0..3000 {
            quiet_max = quiet_max.max(l.observe(0.4 * noise(), 0.2, 0.001, 300));
        }
        let mut high: f64 = 0.0;
        for _ in 0..10 {
            high = high.max(l.observe(1.0, 0.2, 0.001, 300));
        }
        assert!(high > 2.0 * quiet_max, "{high} vs {quiet_max}");
    }
}
