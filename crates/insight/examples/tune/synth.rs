//! The synthetic behaviour checks of `tests/it/synthetic.rs` as margins, for choosing settings:
//! each line is the anomaly's peak score against the clean series' highest score.

use insight::testing::{Noise, Seasonal};
use insight::{Detector, SeasonalDetector, Settings};

const MINUTE: i64 = 60_000;
const STEP: i64 = 5 * MINUTE;
const DAY: i64 = 24 * 60 * MINUTE;
const POINTS: usize = (14 * DAY / STEP) as usize;
const ONSET: usize = (10 * DAY / STEP) as usize;
const LEARNED: usize = (2 * DAY / STEP) as usize;

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

fn scores(settings: Settings, series: &[(i64, f64)]) -> Vec<f64> {
    let mut d = SeasonalDetector::new(settings);
    series.iter().map(|&(t, v)| d.observe(t, v).score).collect()
}

fn max_score(scores: &[f64], from: usize, points: usize) -> f64 {
    scores[from..(from + points).min(scores.len())]
        .iter()
        .fold(0.0, |a, &b| a.max(b))
}

pub fn report(settings: Settings) {
    let alarm = settings.alarm_score;
    let mut clean_alarms = 0;
    for seed in 1..=5 {
        for amplitude in [0.0, 10.0] {
            let s = scores(settings, &seasonal_series(seed, amplitude));
            clean_alarms = clean_alarms.max(s[LEARNED..].iter().filter(|&&x| x >= alarm).count());
        }
    }
    println!("clean: at most {clean_alarms} alarms (pass ≤ 2)");
    type Inject = fn(u64, &mut Vec<(i64, f64)>);
    let cases: [(&str, usize, Inject); 5] = [
        ("spike", 1, |_, s| s[ONSET].1 += 12.0),
        ("level shift", 12, |_, s| {
            for p in &mut s[ONSET..] {
                p.1 -= 6.0;
            }
        }),
        ("trend change", 60, |_, s| {
            for (k, p) in s[ONSET..].iter_mut().enumerate() {
                p.1 += k as f64 * 0.2;
            }
        }),
        ("missing cycle", (DAY / STEP) as usize, |seed, s| {
            let mut noise = Noise::new(seed + 100);
            for p in &mut s[ONSET..ONSET + (DAY / STEP) as usize] {
                p.1 = 100.0 + noise.normal();
            }
        }),
        ("variance burst", 24, |seed, s| {
            let mut noise = Noise::new(seed + 200);
            for p in &mut s[ONSET..ONSET + 24] {
                p.1 += 6.0 * noise.normal();
            }
        }),
    ];
    for (name, within, inject) in cases {
        let mut line = format!("{name:<15}");
        for seed in 1..=3 {
            let mut series = seasonal_series(seed, 10.0);
            inject(seed, &mut series);
            let peak = max_score(&scores(settings, &series), ONSET, within);
            let clean = max_score(
                &scores(settings, &seasonal_series(seed, 10.0)),
                LEARNED,
                POINTS,
            );
            let mark = if peak > clean { "ok" } else { "FAIL" };
            line.push_str(&format!("  {peak:.3} vs {clean:.3} {mark}"));
        }
        println!("{line}");
    }
    let mut line = format!("{:<15}", "pattern change");
    for seed in 1..=3 {
        let peak = max_score(&scores(settings, &sawtooth(seed, true)), ONSET, 36);
        let clean = max_score(&scores(settings, &sawtooth(seed, false)), LEARNED, POINTS);
        let mark = if peak > clean && peak >= 0.4 {
            "ok"
        } else {
            "FAIL"
        };
        line.push_str(&format!("  {peak:.3} vs {clean:.3} {mark}"));
    }
    println!("{line}");
}

fn sawtooth(seed: u64, reversed: bool) -> Vec<(i64, f64)> {
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
