//! Streaming anomaly detection for metric series, and the NAB benchmark harness that measures it;
//! bottleneck prediction: forecasts with prediction intervals, time-to-saturation, load-to-latency
//! (Universal Scalability Law) and their backtests.
//!
//! Read `detector.rs` (the `Detector` seam) and `seasonal.rs` (the default detector) first; for
//! prediction, `forecast.rs`, then `saturation.rs` and `usl.rs`.

mod art;
pub mod backtest;
mod context;
mod detector;
mod episode;
pub mod evidence;
pub mod forecast;
mod likelihood;
mod moments;
pub mod nab;
mod normal;
mod profile;
pub mod saturation;
mod seasonal;
mod state;
pub mod testing;
pub mod usl;

pub use detector::{Detector, Observation};
pub use episode::{Episode, EpisodeTracker};
pub use forecast::{Forecast, ForecastSettings, HoltWinters, RegularSeries};
pub use saturation::{Crossing, SaturationAlert, SaturationLevel, TimeToSaturation};
pub use seasonal::{SeasonalDetector, Settings};
pub use usl::{LoadSample, RateAtObjective, UslFit};
