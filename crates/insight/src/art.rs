//! Shape novelty by adaptive resonance (fuzzy ART, in the spirit of ARTime in NAB): the newest
//! window of values, scaled into the range seen so far and complement-coded, is matched against
//! a bounded set of learned categories (hyperboxes). A window no category matches closely enough
//! (the vigilance) founds a new category: a shape never seen before. A window inside a known box,
//! or close enough to widen one a little, is familiar. Noisy series soon grow boxes that cover
//! their noise, so they stop producing new categories; a clean periodic series keeps tight boxes,
//! so a small change of shape founds one.
//!
//! Memory is bounded: at most `MAX_CATEGORIES`, and when full the least recently matched is
//! replaced.

/// Values per window (the longest).
pub const MAX_WINDOW: usize = 8;
/// Categories kept at most.
pub const MAX_CATEGORIES: usize = 64;
/// The choice function's small constant (prefers the tighter of two boxes that both contain
/// the input), in units of one quantisation step.
const CHOICE_ALPHA: f32 = 0.25;
/// Inputs and weights are kept in steps of 1/255 of the range seen.
const STEPS: f64 = 255.0;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ArtNovelty {
    window: usize,
    vigilance: f32,
    #[serde(with = "crate::state::float")]
    low: f64,
    #[serde(with = "crate::state::float")]
    high: f64,
    /// The newest values, newest first; `filled` of them are valid.
    recent: [f64; MAX_WINDOW],
    filled: usize,
    /// Category weights: the lower corner (`min` of the inputs it learned) and the complement of
    /// the upper one, per window position, in steps of 1/255; `count` of them are in use.
    #[serde(with = "crate::state::array")]
    weights: [[u8; 2 * MAX_WINDOW]; MAX_CATEGORIES],
    /// When each category was last matched (in windows seen), to replace the stalest.
    #[serde(with = "crate::state::array")]
    last_used: [u32; MAX_CATEGORIES],
    count: usize,
    seen: u32,
}

/// What one window did.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Resonance {
    /// True when no category matched and a new one was founded.
    pub novel: bool,
    /// How far the window is from the closest category, as a multiple of the vigilance's
    /// allowance `1 − ρ` (above 1 exactly when novel).
    pub distance: f64,
}

impl ArtNovelty {
    /// Windows of `window` values (2..=MAX_WINDOW), vigilance `ρ` in (0, 1).
    pub fn new(window: usize, vigilance: f64) -> Self {
        ArtNovelty {
            window: window.clamp(2, MAX_WINDOW),
            vigilance: vigilance.clamp(0.01, 0.999) as f32,
            low: f64::INFINITY,
            high: f64::NEG_INFINITY,
            recent: [0.0; MAX_WINDOW],
            filled: 0,
            weights: [[0; 2 * MAX_WINDOW]; MAX_CATEGORIES],
            last_used: [0; MAX_CATEGORIES],
            count: 0,
            seen: 0,
        }
    }

    /// Takes the next value; `None` until a whole window is available.
    pub fn observe(&mut self, value: f64) -> Option<Resonance> {
        self.low = self.low.min(value);
        self.high = self.high.max(value);
        self.recent.copy_within(0..MAX_WINDOW - 1, 1);
        self.recent[0] = value;
        self.filled = (self.filled + 1).min(MAX_WINDOW);
        if self.filled < self.window {
            return None;
        }
        let w = self.window;
        let range = self.high - self.low;
        let mut input = [0u8; 2 * MAX_WINDOW];
        for k in 0..w {
            let x = if range > 0.0 {
                ((self.recent[k] - self.low) / range * STEPS)
                    .round()
                    .clamp(0.0, STEPS) as u8
            } else {
                128
            };
            input[k] = x;
            input[w + k] = u8::MAX - x;
        }
        let size = w as f32 * STEPS as f32;
        let mut best: Option<(usize, f32)> = None;
        let mut best_match = 0f32;
        for (j, weight) in self.weights[..self.count].iter().enumerate() {
            // Over the whole fixed-size arrays (unused positions are 0 in both), so the loop
            // vectorises.
            let overlap: u32 = input
                .iter()
                .zip(weight)
                .map(|(&a, &b)| u32::from(a.min(b)))
                .sum();
            let norm: u32 = weight.iter().map(|&b| u32::from(b)).sum();
            let (overlap, norm) = (overlap as f32, norm as f32);
            let matched = overlap / size;
            best_match = best_match.max(matched);
            if matched >= self.vigilance {
                let choice = overlap / (CHOICE_ALPHA + norm);
                if best.is_none_or(|(_, c)| choice > c) {
                    best = Some((j, choice));
                }
            }
        }
        self.seen = self.seen.wrapping_add(1);
        let distance = f64::from((1.0 - best_match) / (1.0 - self.vigilance));
        match best {
            Some((j, _)) => {
                // Fast learning: the box grows just enough to hold the window.
                for (b, &a) in self.weights[j].iter_mut().zip(&input) {
                    *b = (*b).min(a);
                }
                self.last_used[j] = self.seen;
                Some(Resonance {
                    novel: false,
                    distance,
                })
            }
            None => {
                let first = self.count == 0;
                let j = if self.count < MAX_CATEGORIES {
                    self.count += 1;
                    self.count - 1
                } else {
                    (0..MAX_CATEGORIES)
                        .max_by_key(|&j| self.seen.wrapping_sub(self.last_used[j]))
                        .unwrap_or(0)
                };
                self.weights[j] = input;
                self.last_used[j] = self.seen;
                Some(Resonance {
                    novel: !first,
                    distance: if first { 0.0 } else { distance },
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_shape_resonates_and_a_new_one_founds_a_category() {
        let mut art = ArtNovelty::new(6, 0.9);
        let shape = [0.0, 1.0, 3.0, 7.0, 4.0, 2.0, 0.0, 5.0];
        let mut novel_late = 0;
        for round in 0..30 {
            for &v in &shape {
                let r = art.observe(v);
                if round >= 2 && r.is_some_and(|r| r.novel) {
                    novel_late += 1;
                }
            }
        }
        assert_eq!(novel_late, 0);
        let novel = [7.0, 0.0, 7.0, 0.0]
            .iter()
            .filter(|&&v| art.observe(v).is_some_and(|r| r.novel))
            .count();
        assert!(novel >= 1, "{novel}");
    }

    #[test]
    fn categories_are_bounded() {
        let mut art = ArtNovelty::new(8, 0.99);
        let mut x: u64 = 3;
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            art.observe((x >> 11) as f64 / (1u64 << 53) as f64);
        }
        assert_eq!(art.count, MAX_CATEGORIES);
    }
}
