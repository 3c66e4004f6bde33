//! Running mean and variance in constant memory.

/// Exponentially weighted mean and variance whose learning rate starts at `1/n` (a plain average)
/// and settles at `floor`, so early estimates are not dominated by the first point.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct RunningMoments {
    pub mean: f64,
    pub variance: f64,
    pub count: u32,
}

impl RunningMoments {
    pub fn update(&mut self, x: f64, floor: f64) {
        self.count = self.count.saturating_add(1);
        let rate = (1.0 / f64::from(self.count)).max(floor);
        let d = x - self.mean;
        self.mean += rate * d;
        self.variance = (1.0 - rate) * (self.variance + rate * d * d);
    }

    pub fn std(&self) -> f64 {
        self.variance.max(0.0).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_as_a_plain_average() {
        let mut m = RunningMoments::default();
        for x in [1.0, 2.0, 3.0] {
            m.update(x, 0.001);
        }
        assert!((m.mean - 2.0).abs() < 1e-12);
        // Population variance of 1, 2, 3 is 2/3.
        assert!((m.variance - 2.0 / 3.0).abs() < 1e-12);
    }
}
