//! The synthetic behaviour checks of `tests/it/synthetic.rs` as margins, for choosing settings:
//! each line is the anomaly's peak score against the clean series' highest score.

use insight::testing::{Noise, Seasonal, day_phase};
use insight::{Detector, SeasonalDetector, Settings};

const MINUTE: i64 = 60_000;
const STEP: i64 = 5 * MINUTE;
const DAY: i64 = 24 * 60 * MINUTE;
const POINTS: usize = (14 * DAY / STEP) as usize;
const ONSET: usize = (10 * DAY / STEP) as usize;
const LEARNED: usize = (2 * DAY / STEP) as usize;
const START_MS: i64 = 1_400_000_000_000;

fn seasonal_series(seed: u64, amplitude: f64) -> Vec<(i64, f64)> {
    Seasonal {
        start_ms: START_MS,
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

/// Prints the checks when `verbose`; returns whether all pass.
pub fn report(settings: Settings, verbose: bool) -> bool {
    let mut pass = true;
    let alarm = settings.alarm_score;
    let mut clean_alarms = 0;
    for seed in 1..=5 {
        for amplitude in [0.0, 10.0] {
            let s = scores(settings, &seasonal_series(seed, amplitude));
            clean_alarms = clean_alarms.max(s[LEARNED..].iter().filter(|&&x| x >= alarm).count());
        }
    }
    pass &= clean_alarms <= 2;
    if verbose {
        println!("clean: at most {clean_alarms} alarms (pass ≤ 2)");
    }
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
            let ok = peak > clean;
            pass &= ok;
            let mark = if ok { "ok" } else { "FAIL" };
            line.push_str(&format!("  {peak:.3} vs {clean:.3} {mark}"));
        }
        if verbose {
            println!("{line}");
        }
    }
    // Noise that grows for good (σ 1 → √5) is news; printed, not judged (the base detector
    // finds it through the point surprise and the accumulated evidence).
    let mut line = format!("{:<15}", "noise rise");
    for seed in (1..=3).filter(|_| verbose) {
        let mut noise = Noise::new(seed + 300);
        let mut rise = seasonal_series(seed, 10.0);
        for p in &mut rise[ONSET..] {
            p.1 += 2.0 * noise.normal();
        }
        let peak = max_score(&scores(settings, &rise), ONSET, 144);
        let ok = peak >= alarm;
        line.push_str(&format!("  {peak:.3} {}", if ok { "ok" } else { "missed" }));
    }
    if verbose {
        println!("{line}");
    }
    let mut line = format!("{:<15}", "pattern change");
    for seed in 1..=3 {
        let peak = max_score(&scores(settings, &sawtooth(seed, true)), ONSET, 36);
        let clean = max_score(&scores(settings, &sawtooth(seed, false)), LEARNED, POINTS);
        let ok = peak > clean && peak >= 0.4;
        pass &= ok;
        let mark = if ok { "ok" } else { "FAIL" };
        line.push_str(&format!("  {peak:.3} vs {clean:.3} {mark}"));
    }
    if verbose {
        println!("{line}");
    }
    pass
}

fn sawtooth(seed: u64, reversed: bool) -> Vec<(i64, f64)> {
    let mut noise = Noise::new(seed + 300);
    (0..POINTS)
        .map(|i| {
            let ts = START_MS + i as i64 * STEP;
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

/// The `oxeye` insights tests' series, replayed straight into the detector: 8 days of 5-minute
/// points (level 100, daily amplitude 10, unit noise); a +25 spike must alarm at its point, a −15
/// level shift within 12 points, a clean series never; and a RED p99 series (per minute, the p99
/// of 20 latencies of 10 + 2u ms) must stay quiet for its first 3 hours and alarm within 2 minutes
/// of a 10-minute step to 400 ms at hour 5. A screen only: the real tests go through the store.
pub fn oxeye_report(settings: Settings, verbose: bool) -> bool {
    let (ok, line) = oxeye_case(settings, 0);
    if verbose {
        println!("oxeye: {line}");
    }
    ok
}

/// The same checks with `n` other seeds (the tests' own are case 0): how many cases fail, since
/// a user's clean series is not the tests' one.
pub fn oxeye_other_seeds(settings: Settings, n: u64, verbose: bool) -> usize {
    (1..=n)
        .filter(|&j| {
            let (ok, line) = oxeye_case(settings, j);
            if verbose {
                println!("oxeye seed case {j}: {line}");
            }
            !ok
        })
        .count()
}

/// Case `j` of the screen: the tests' series for `j` = 0, other seeds after.
fn oxeye_case(settings: Settings, j: u64) -> (bool, String) {
    let days = 8;
    let n = (days * DAY / STEP) as usize;
    let series = |seed: u64| {
        Seasonal {
            start_ms: 1_790_000_000_000 - 1_790_000_000_000 % DAY,
            step_ms: STEP,
            points: n,
            level: 100.0,
            amplitude: 10.0,
            sigma: 1.0,
        }
        .generate(seed)
    };
    let onset = ((7 * DAY + 7 * 60 * MINUTE) / STEP) as usize;
    let alarm = settings.alarm_score;
    let first_alarm = |s: &[f64], from: usize| s[from..].iter().position(|&x| x >= alarm);
    let mut spike = series(1 + 3 * j);
    spike[onset].1 += 25.0;
    let s = scores(settings, &spike);
    let spike_ok = s[onset] >= alarm;
    let mut shift = series(2 + 3 * j);
    for p in &mut shift[onset..] {
        p.1 -= 15.0;
    }
    let s = scores(settings, &shift);
    let shift_at = first_alarm(&s, onset);
    let clean_at = first_alarm(&scores(settings, &series(3 + 3 * j)), 0);
    let mut noise = Noise::new(7 + 100 * j);
    let p99: Vec<(i64, f64)> = (0..360)
        .map(|m| {
            let slow = (300..310).contains(&m);
            let mut v: Vec<f64> = (0..20)
                .map(|_| {
                    if slow {
                        400.0
                    } else {
                        10.0 + 2.0 * noise.uniform()
                    }
                })
                .collect();
            v.sort_by(f64::total_cmp);
            let q = v[18] + 0.81 * (v[19] - v[18]);
            (m as i64 * MINUTE + MINUTE / 2, q)
        })
        .collect();
    let s = scores(settings, &p99);
    let early = first_alarm(&s[..180], 0);
    let red_at = first_alarm(&s, 300).map(|k| k + 300);
    let ok = spike_ok
        && shift_at.is_some_and(|k| k <= 12)
        && clean_at.is_none()
        && early.is_none()
        && red_at.is_some_and(|k| k <= 302);
    let line = format!(
        "spike alarms {spike_ok}, shift after {shift_at:?} (≤ 12), clean alarm at {clean_at:?} \
         (none), p99 early alarm {early:?} (none), p99 alarm at {red_at:?} (300–302) → {}",
        if ok { "ok" } else { "FAIL" }
    );
    (ok, line)
}

/// `tests/it/synthetic.rs`'s young clean series over 30 seeds: how many of the 60 (amplitude 0
/// and 10) alarm in their first two days, and, when `verbose`, where.
pub fn young_clean_alarms(settings: Settings, verbose: bool) -> usize {
    let mut n = 0;
    for seed in 1..=30 {
        for amplitude in [0.0, 10.0] {
            let s = scores(settings, &seasonal_series(seed, amplitude));
            let at: Vec<usize> = (0..LEARNED)
                .filter(|&i| s[i] >= settings.alarm_score)
                .collect();
            if !at.is_empty() {
                n += 1;
                if verbose {
                    println!("young clean seed {seed} amplitude {amplitude}: alarms at {at:?}");
                }
            }
        }
    }
    n
}

/// Clean series of the kinds a service emits, none with an anomaly: per family, over `seeds`
/// seeds of 14 days (28 for the weekly one) at 5-minute steps, how many series alarm after
/// their first two days, how many alarms that is, and where, by which part.
pub fn print_clean_families(settings: Settings, seeds: u64) {
    type Make = fn(u64) -> Vec<(i64, f64)>;
    fn times(days: i64) -> impl Iterator<Item = i64> {
        (0..days * DAY / STEP).map(|i| START_MS + i * STEP)
    }
    fn poisson(noise: &mut Noise, lambda: f64) -> f64 {
        // Inversion: fine for the small rates used here.
        let (mut k, mut p, mut cdf) = (0.0, (-lambda).exp(), 0.0);
        let u = noise.uniform();
        loop {
            cdf += p;
            if u <= cdf || k > 1000.0 {
                return k;
            }
            k += 1.0;
            p *= lambda / k;
        }
    }
    let families: [(&str, Make); 6] = [
        ("gaussian", |seed| seasonal_series(seed, 10.0)),
        ("busy-hours noise", |seed| {
            let mut noise = Noise::new(seed + 300);
            let mut s = seasonal_series(seed, 10.0);
            for p in &mut s {
                if (8 * DAY / 24..20 * DAY / 24).contains(&p.0.rem_euclid(DAY)) {
                    p.1 += 2.0 * noise.normal();
                }
            }
            s
        }),
        ("request counts", |seed| {
            let mut noise = Noise::new(seed + 400);
            times(14)
                .map(|t| (t, poisson(&mut noise, 50.0 + 45.0 * day_phase(t).sin())))
                .collect()
        }),
        ("sparse errors", |seed| {
            let mut noise = Noise::new(seed + 500);
            times(14)
                .map(|t| {
                    (
                        t,
                        poisson(&mut noise, 0.3 + 2.0 * day_phase(t).sin().max(0.0)),
                    )
                })
                .collect()
        }),
        ("p99 latency", |seed| {
            let mut noise = Noise::new(seed + 600);
            times(14)
                .map(|t| {
                    let level = (100.0 + 30.0 * day_phase(t).sin()).ln();
                    (t, (level + 0.3 * noise.normal()).exp())
                })
                .collect()
        }),
        ("weekly", |seed| {
            let mut noise = Noise::new(seed + 700);
            times(28)
                .map(|t| {
                    // Daytime traffic (6:00–18:00), much lower at weekends (1970-01-01 was a
                    // Thursday, so days 2 and 3 of each week from it are Saturday and Sunday).
                    let weekend = matches!(t.div_euclid(DAY) % 7, 2 | 3);
                    let hour = t.rem_euclid(DAY) as f64 / 3_600_000.0;
                    let day = ((hour - 6.0) / 12.0 * std::f64::consts::PI).sin().max(0.0);
                    let busy = if weekend { 15.0 } else { 40.0 };
                    (t, 100.0 + busy * day + 2.0 * noise.normal())
                })
                .collect()
        }),
    ];
    for (name, make) in families {
        let (mut series, mut alarms) = (0, 0);
        let mut at = Vec::new();
        for seed in 1..=seeds {
            let mut d = SeasonalDetector::new(settings);
            let found: Vec<String> = make(seed)
                .iter()
                .map(|&(t, v)| d.observe(t, v))
                .enumerate()
                .filter(|(i, o)| *i >= LEARNED && o.score >= settings.alarm_score)
                .map(|(i, o)| format!("{i} {}", o.part))
                .collect();
            if !found.is_empty() {
                series += 1;
                alarms += found.len();
                at.push(format!("{seed}: {}", found.join(", ")));
            }
        }
        println!("clean {name:<17} {series:>2}/{seeds} series alarm, {alarms} alarms");
        for a in &at {
            println!("    {a}");
        }
    }
}
