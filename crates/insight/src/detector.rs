//! The narrow seam every anomaly detector implements, so detectors can be swapped and compared.

/// What a detector says about one point.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Observation {
    /// How anomalous the point is, in [0, 1]; 0 while the detector is still learning.
    pub score: f64,
    /// The value the model expected at this time.
    pub expected: f64,
    /// The band the model expected the value to fall in (about 99 % of normal points).
    pub expected_low: f64,
    pub expected_high: f64,
    /// What gave the score, as the detector names its parts ("" when nothing did).
    pub part: &'static str,
}

/// A streaming detector for one series: it sees each point once, in time order, and keeps state
/// of bounded size whatever the length of the stream.
pub trait Detector {
    /// Scores the next point. Timestamps (milliseconds since the epoch) should not go backwards;
    /// gaps and irregular spacing are allowed. A non-finite value is treated as missing: it is
    /// scored 0 and does not change the model.
    fn observe(&mut self, ts_ms: i64, value: f64) -> Observation;

    /// The bytes of state held for this series, which must not grow with the stream.
    fn memory_bytes(&self) -> usize {
        std::mem::size_of_val(self)
    }
}
