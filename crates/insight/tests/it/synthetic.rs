//! The default detector on generated series: injected anomalies are flagged, clean series stay
//! quiet, and the state stays the same size however long the stream.

use insight::testing::{Noise, Seasonal};
use insight::{Detector, EpisodeTracker, SeasonalDetector, Settings};

const MINUTE: i64 = 60_000;
const STEP: i64 = 5 * MINUTE;
const DAY: i64 = 24 * 60 * MINUTE;
/// 14 days of 5-minute points, like most NAB files.
const POINTS: usize = (14 * DAY / STEP) as usize;
/// The anomalies start on day 10.
const ONSET: usize = (10 * DAY / STEP) as usize;
/// The default detector's own alarm level (`Settings::alarm_score`).
const ALARM: f64 = 0.4;

/// Level 100, a daily cycle of amplitude `amplitude`, unit noise.
fn seasonal_series(seed: u64, amplitude: f64) -> Vec<(i64, f64)> {
    Seasonal {
        start_ms: 1_400_000_000_000,
        step_ms: STEP,
        points: POINTS,
        level: 100.0,
        amplitude,
        sigma: 1.0,
    }
    .generate(seed)
}

fn scores(series: &[(i64, f64)]) -> Vec<f64> {
    let mut d = SeasonalDetector::default();
    series.iter().map(|&(t, v)| d.observe(t, v).score).collect()
}

/// The highest score from `from` for `points` points.
fn max_score(scores: &[f64], from: usize, points: usize) -> f64 {
    scores[from..(from + points).min(scores.len())]
        .iter()
        .fold(0.0, |a, &b| a.max(b))
}

/// Points scored as alarms after the first two days (the detector's learning time).
fn alarms(scores: &[f64]) -> usize {
    scores[(2 * DAY / STEP) as usize..]
        .iter()
        .filter(|&&s| s >= ALARM)
        .count()
}

/// A new series is not an anomaly: while the detector is still learning its range and scale, a
/// clean series raises no alarm, from its very first point (`alarms` counts from day 2).
#[test]
fn clean_series_raise_no_alarm_while_the_detector_learns() {
    let mut found = Vec::new();
    for seed in 1..=5 {
        for amplitude in [0.0, 10.0] {
            let s = scores(&seasonal_series(seed, amplitude));
            let first: Vec<usize> = (0..(2 * DAY / STEP) as usize)
                .filter(|&i| s[i] >= ALARM)
                .collect();
            if !first.is_empty() {
                found.push(format!(
                    "seed {seed}, amplitude {amplitude}: points {first:?}"
                ));
            }
        }
    }
    assert!(found.is_empty(), "alarms on clean series: {found:?}");
}

#[test]
fn clean_series_stay_quiet() {
    for seed in 1..=5 {
        for amplitude in [0.0, 10.0] {
            let s = scores(&seasonal_series(seed, amplitude));
            let n = alarms(&s);
            assert!(
                n <= 2,
                "seed {seed}, amplitude {amplitude}: {n} alarms on a clean series"
            );
        }
    }
}

/// The anomaly must stand out: within `within` points of the onset the score exceeds anything
/// the same series without the anomaly (same seed) scores after the learning days.
fn assert_flagged(name: &str, seed: u64, series: &[(i64, f64)], within: usize) {
    let s = scores(series);
    let peak = max_score(&s, ONSET, within);
    let clean = scores(&seasonal_series(seed, 10.0));
    let learned = (2 * DAY / STEP) as usize;
    let clean_max = max_score(&clean, learned, POINTS);
    assert!(
        peak > clean_max,
        "{name}, seed {seed}: highest score {peak:.3} within {within} points of the onset, \
         {clean_max:.3} on the clean series"
    );
}

#[test]
fn spike_is_flagged() {
    for seed in 1..=3 {
        let mut series = seasonal_series(seed, 10.0);
        series[ONSET].1 += 12.0;
        assert_flagged("spike", seed, &series, 1);
    }
}

#[test]
fn level_shift_is_flagged() {
    for seed in 1..=3 {
        let mut series = seasonal_series(seed, 10.0);
        for p in &mut series[ONSET..] {
            p.1 -= 6.0;
        }
        assert_flagged("level shift", seed, &series, 12);
    }
}

#[test]
fn trend_change_is_flagged() {
    for seed in 1..=3 {
        let mut series = seasonal_series(seed, 10.0);
        // From the onset the level climbs by 1 noise σ every 5 points.
        for (k, p) in series[ONSET..].iter_mut().enumerate() {
            p.1 += k as f64 * 0.2;
        }
        assert_flagged("trend change", seed, &series, 60);
    }
}

#[test]
fn missing_daily_cycle_is_flagged() {
    for seed in 1..=3 {
        let mut series = seasonal_series(seed, 10.0);
        // For a day the series stays at its daily mean instead of cycling.
        let mut noise = Noise::new(seed + 100);
        for p in &mut series[ONSET..ONSET + (DAY / STEP) as usize] {
            p.1 = 100.0 + noise.normal();
        }
        assert_flagged("missing daily cycle", seed, &series, (DAY / STEP) as usize);
    }
}

#[test]
fn variance_burst_is_flagged() {
    for seed in 1..=3 {
        let mut series = seasonal_series(seed, 10.0);
        let mut noise = Noise::new(seed + 200);
        for p in &mut series[ONSET..ONSET + 24] {
            p.1 += 6.0 * noise.normal();
        }
        assert_flagged("variance burst", seed, &series, 24);
    }
}

/// A feed that flatlines (the same value repeated, inside the usual range) is flagged, once.
#[test]
fn flatline_is_flagged_once() {
    for seed in 1..=3 {
        let mut series = seasonal_series(seed, 10.0);
        let stuck = series[ONSET].1;
        for p in &mut series[ONSET..ONSET + 200] {
            p.1 = stuck;
        }
        assert_flagged("flatline", seed, &series, 24);
        let s = scores(&series);
        let flat_alarms = s[ONSET..ONSET + 200]
            .iter()
            .filter(|&&x| x >= ALARM)
            .count();
        assert_eq!(flat_alarms, 1, "seed {seed}");
    }
}

/// A series of small counts repeats values all the time; its ordinary runs are not flatlines.
#[test]
fn repeated_counts_are_not_flatlines() {
    let mut noise = Noise::new(9);
    let series: Vec<(i64, f64)> = (0..POINTS)
        .map(|i| {
            let quiet = (i / 96) % 3 == 0;
            let v = if quiet {
                0.0
            } else {
                (2.0 + noise.normal()).round().max(0.0)
            };
            (1_400_000_000_000 + i as i64 * STEP, v)
        })
        .collect();
    let s = scores(&series);
    assert!(alarms(&s) <= 2, "{} alarms", alarms(&s));
}

/// An hourly sawtooth (12 points rising slowly from 90 to 110, then dropping) with unit noise;
/// from the onset it is reversed when `reversed`: it jumps up and falls slowly. Range, mean and
/// period stay the same; only the shape changes.
fn sawtooth_series(seed: u64, reversed: bool) -> Vec<(i64, f64)> {
    let mut noise = Noise::new(seed + 300);
    (0..POINTS)
        .map(|i| {
            let ts = 1_400_000_000_000 + i as i64 * STEP;
            let ramp = (i % 12) as f64 / 11.0;
            let shape = if reversed && i >= ONSET {
                1.0 - ramp
            } else {
                ramp
            };
            (ts, 90.0 + 20.0 * shape + noise.normal())
        })
        .collect()
}

#[test]
fn pattern_change_with_the_same_range_and_mean_is_flagged() {
    for seed in 1..=3 {
        let s = scores(&sawtooth_series(seed, true));
        let peak = max_score(&s, ONSET, 36);
        let clean = scores(&sawtooth_series(seed, false));
        let clean_max = max_score(&clean, (2 * DAY / STEP) as usize, POINTS);
        assert!(
            peak > clean_max && peak >= ALARM,
            "pattern change, seed {seed}: highest score {peak:.3} within 36 points of the \
             onset, {clean_max:.3} on the unchanged series"
        );
    }
}

#[test]
fn gaps_irregular_spacing_and_missing_values_do_not_alarm() {
    let mut noise = Noise::new(7);
    let mut series = Vec::new();
    let mut ts = 1_400_000_000_000i64;
    for i in 0..POINTS {
        // Jittered spacing, an occasional 2-hour gap, and a non-finite value now and then.
        ts += STEP / 2 + (noise.uniform() * STEP as f64) as i64;
        if i % 700 == 0 {
            ts += 2 * 60 * MINUTE;
        }
        let phase = (ts % DAY) as f64 / DAY as f64 * std::f64::consts::TAU;
        let value = if i % 500 == 250 {
            f64::NAN
        } else {
            100.0 + 10.0 * phase.sin() + noise.normal()
        };
        series.push((ts, value));
    }
    let mut d = SeasonalDetector::default();
    let s: Vec<f64> = series.iter().map(|&(t, v)| d.observe(t, v).score).collect();
    assert!(s.iter().all(|x| (0.0..=1.0).contains(x)));
    assert!(s.iter().skip(250).step_by(500).all(|&x| x == 0.0));
    let n = alarms(&s);
    assert!(n <= 3, "{n} alarms on a clean, irregularly sampled series");
}

#[test]
fn expected_band_covers_normal_points() {
    let series = seasonal_series(3, 10.0);
    let mut d = SeasonalDetector::default();
    let mut inside = 0;
    let scored = &series[(3 * DAY / STEP) as usize..];
    for &(t, v) in &series[..(3 * DAY / STEP) as usize] {
        d.observe(t, v);
    }
    for &(t, v) in scored {
        let o = d.observe(t, v);
        assert!(o.expected_low <= o.expected && o.expected <= o.expected_high);
        inside += usize::from(o.expected_low <= v && v <= o.expected_high);
    }
    let share = inside as f64 / scored.len() as f64;
    assert!(
        share > 0.95,
        "only {share:.3} of normal points inside the expected band"
    );
}

#[test]
fn state_does_not_grow_with_the_stream() {
    let mut d = SeasonalDetector::default();
    let before = d.memory_bytes();
    for (t, v) in seasonal_series(1, 10.0) {
        d.observe(t, v);
    }
    assert_eq!(d.memory_bytes(), before);
    assert!(before < 16 * 1024, "{before} bytes per series");
}

#[test]
fn episodes_report_start_end_and_expected_range() {
    let mut series = seasonal_series(2, 10.0);
    for p in &mut series[ONSET..ONSET + 6] {
        p.1 += 15.0;
    }
    let mut d = SeasonalDetector::default();
    let mut tracker = EpisodeTracker::default();
    let mut episodes = Vec::new();
    for &(t, v) in &series {
        let o = d.observe(t, v);
        episodes.extend(tracker.push(t, v, &o));
    }
    let onset_ts = series[ONSET].0;
    let e = episodes
        .iter()
        .find(|e| e.start_ms >= onset_ts && e.start_ms <= onset_ts + 6 * STEP)
        .unwrap_or_else(|| panic!("no episode at the onset: {episodes:?}"));
    assert!(e.severity >= ALARM);
    assert!(e.peak_value > e.expected_high, "{e:?}");
    assert!(e.end_ms >= e.start_ms);
}

/// The same surprise counts for less on a stream watched for long: a spike 38 days in scores
/// the age-free score divided by `1 + age_weight · ln(points / age_points)`, and a spike before
/// `age_points` is not discounted.
#[test]
fn a_long_watched_stream_needs_more_surprise() {
    let long = Seasonal {
        start_ms: 1_400_000_000_000,
        step_ms: STEP,
        points: 12_000,
        level: 100.0,
        amplitude: 10.0,
        sigma: 1.0,
    }
    .generate(4);
    let settings = Settings::default();
    assert!(settings.age_weight > 0.0);
    for at in [2_500usize, 11_000] {
        let mut series = long.clone();
        series[at].1 += 15.0;
        let run = |settings: Settings| {
            let mut d = SeasonalDetector::new(settings);
            let s: Vec<f64> = series.iter().map(|&(t, v)| d.observe(t, v).score).collect();
            s[at]
        };
        let aged = run(settings);
        let ageless = run(Settings {
            age_weight: 0.0,
            ..settings
        });
        let ratio = (at as f64 / f64::from(settings.age_points)).max(1.0);
        let expected = ageless / (1.0 + settings.age_weight * ratio.ln());
        assert!(ageless > 0.2, "spike at {at}: {ageless}");
        assert!(
            (aged - expected).abs() < 1e-9,
            "spike at {at}: {aged} against {expected} ({ageless} without the discount)"
        );
    }
}
