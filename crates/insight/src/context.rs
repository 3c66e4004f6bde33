//! Contextual novelty, in the spirit of the Contextual Anomaly Detector (CAD OSE) in NAB: values
//! are quantised into a few levels over the range seen so far, the last few levels form the
//! newest context, and the raw score is the fraction of that context's sub-patterns (its suffixes
//! of every length from two up) that were never seen before. A periodic pattern whose shape
//! changes while its range and mean stay the same produces sequences of levels it never
//! produced before, which no forecaster error need show.
//!
//! Memory is bounded: sub-patterns are kept as 32-bit fingerprints in a small set-associative
//! table, and the least recently seen entry of a full bucket is evicted.

/// Levels kept per context (the longest sub-pattern).
pub const MAX_CONTEXT: usize = 8;
const WAYS: usize = 4;
const BUCKETS: usize = 256;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ContextNovelty {
    levels: u8,
    length: usize,
    #[serde(with = "crate::state::float")]
    low: f64,
    #[serde(with = "crate::state::float")]
    high: f64,
    /// The newest levels, newest first; `filled` of them are valid.
    recent: [u8; MAX_CONTEXT],
    filled: usize,
    /// Fingerprints of sub-patterns seen, most recently seen first in each bucket; 0 is empty.
    #[serde(with = "crate::state::array")]
    table: [[u32; WAYS]; BUCKETS],
}

impl ContextNovelty {
    /// `levels` quantisation levels (2..=255), contexts of `length` levels (2..=MAX_CONTEXT).
    pub fn new(levels: u8, length: usize) -> Self {
        ContextNovelty {
            levels: levels.max(2),
            length: length.clamp(2, MAX_CONTEXT),
            low: f64::INFINITY,
            high: f64::NEG_INFINITY,
            recent: [0; MAX_CONTEXT],
            filled: 0,
            table: [[0; WAYS]; BUCKETS],
        }
    }

    fn level(&self, value: f64) -> u8 {
        let range = self.high - self.low;
        if range <= 0.0 {
            return 0;
        }
        let position = ((value - self.low) / range * f64::from(self.levels)).floor();
        position.clamp(0.0, f64::from(self.levels - 1)) as u8
    }

    /// Looks a fingerprint up and records it as seen now; true when it was new.
    fn visit(&mut self, fingerprint: u32) -> bool {
        let fingerprint = fingerprint.max(1);
        let bucket = &mut self.table[(fingerprint as usize) % BUCKETS];
        let found = bucket.iter().position(|&f| f == fingerprint);
        // Move it (or the new entry, evicting the least recently seen) to the front.
        let end = found.unwrap_or(WAYS - 1);
        bucket.copy_within(0..end, 1);
        bucket[0] = fingerprint;
        found.is_none()
    }

    /// Takes the next value and returns the fraction of the newest context's sub-patterns never
    /// seen before (0 until a whole context is available).
    pub fn observe(&mut self, value: f64) -> f64 {
        self.low = self.low.min(value);
        self.high = self.high.max(value);
        let level = self.level(value);
        self.recent.copy_within(0..MAX_CONTEXT - 1, 1);
        self.recent[0] = level;
        self.filled = (self.filled + 1).min(MAX_CONTEXT);
        if self.filled < self.length {
            return 0.0;
        }
        // FNV-1a over the levels from the newest back, one sub-pattern per length.
        let mut hash: u32 = 0x811c_9dc5;
        let mut novel = 0;
        let recent = self.recent;
        for (i, &l) in recent[..self.length].iter().enumerate() {
            hash = (hash ^ u32::from(l)).wrapping_mul(0x0100_0193);
            if i >= 1 {
                let fingerprint =
                    (hash ^ (i as u32).wrapping_mul(0x9e37_79b9)).wrapping_mul(0x85eb_ca6b);
                novel += usize::from(self.visit(fingerprint ^ (fingerprint >> 16)));
            }
        }
        novel as f64 / (self.length - 1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_pattern_stops_being_novel_and_a_new_shape_is() {
        let mut c = ContextNovelty::new(8, 5);
        let shape = [0.0, 1.0, 3.0, 7.0, 4.0, 2.0, 0.0, 5.0];
        let mut last = 1.0;
        for _ in 0..20 {
            for &v in &shape {
                last = c.observe(v);
            }
        }
        assert_eq!(last, 0.0);
        let novel: f64 = [7.0, 0.0, 7.0, 0.0].iter().map(|&v| c.observe(v)).sum();
        assert!(novel > 1.0, "{novel}");
    }
}
