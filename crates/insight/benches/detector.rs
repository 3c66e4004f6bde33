//! Cost of the default detector: feeds a generated 5-minute series with a daily cycle through
//! it and prints JSON and one line for humans (ns per point, bytes of state per series).

use std::hint::black_box;
use std::time::Instant;

use insight::{Detector, SeasonalDetector};

fn main() {
    const POINTS: usize = 2_000_000;
    const STEP_MS: i64 = 300_000;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let series: Vec<(i64, f64)> = (0..POINTS)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let noise = (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
            let ts = i as i64 * STEP_MS;
            let phase = (ts % 86_400_000) as f64 / 86_400_000.0 * std::f64::consts::TAU;
            (ts, 100.0 + 10.0 * phase.sin() + noise)
        })
        .collect();
    let mut detector = SeasonalDetector::default();
    let started = Instant::now();
    let mut total = 0.0;
    for &(ts, v) in &series {
        total += detector.observe(black_box(ts), black_box(v)).score;
    }
    let elapsed = started.elapsed();
    black_box(total);
    let ns_per_point = elapsed.as_nanos() as f64 / POINTS as f64;
    let bytes = detector.memory_bytes();
    println!(
        "{{\"bench\":\"insight_detector\",\"points\":{POINTS},\"ns_per_point\":{ns_per_point:.1},\"bytes_per_series\":{bytes}}}"
    );
    println!(
        "insight detector: {ns_per_point:.0} ns/point, {bytes} bytes/series ({POINTS} points)"
    );
}
