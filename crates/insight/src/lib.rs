//! Streaming anomaly detection for metric series, and the NAB benchmark harness that measures it.
//!
//! Read `detector.rs` (the `Detector` seam) and `seasonal.rs` (the default detector) first.

mod context;
mod detector;
mod episode;
mod likelihood;
mod moments;
pub mod nab;
mod profile;
mod seasonal;

pub use detector::{Detector, Observation};
pub use episode::{Episode, EpisodeTracker};
pub use seasonal::{SeasonalDetector, Settings};
