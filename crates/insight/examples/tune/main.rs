//! Runs the default detector with setting overrides (`name=value …`) over NAB in memory and prints
//! one line of scores; used to choose settings on the tuning half only. `SKIP=k` starts the
//! detector `k` points into each file, to see how much a score owes to where the stream starts.

use std::path::Path;

use insight::nab::{self, Series};
use insight::{Detector, SeasonalDetector, Settings};

/// Sets one field of `Settings` by its name (through its serde form, so every setting is
/// reachable without a list to keep up); integer fields take the value rounded down.
fn apply(settings: &mut Settings, key: &str, value: f64) {
    let mut fields = serde_json::to_value(*settings).expect("settings serialize");
    let field = fields
        .get_mut(key)
        .unwrap_or_else(|| panic!("unknown setting {key}"));
    *field = if field.is_f64() {
        serde_json::json!(value)
    } else {
        serde_json::json!(value as u64)
    };
    *settings = serde_json::from_value(fields).expect("setting in range");
}

/// Scores every file; the detector starts `skip` points into each file (those points score 0), so
/// the same settings can be judged from several starts, all inside NAB's probation.
#[allow(clippy::type_complexity)]
fn run(
    corpus: &[Series],
    settings: Settings,
    skip: usize,
) -> (Vec<Vec<f64>>, Vec<Vec<&'static str>>) {
    corpus
        .iter()
        .map(|s| {
            let mut d = SeasonalDetector::new(settings);
            s.timestamps_ms
                .iter()
                .zip(&s.values)
                .enumerate()
                .map(|(i, (&t, &v))| {
                    if i < skip {
                        (0.0, "")
                    } else {
                        let o = d.observe(t, v);
                        (o.score, o.part)
                    }
                })
                .unzip()
        })
        .unzip()
}

/// `NAB_ALARMS=1`: every point scoring at least the standard profile's threshold after NAB's
/// probation, with the part that gave its score and whether it is a window's first detection
/// (`first`), a later one in the same window (`again`) or a false alarm (`false`); then, per
/// part, those counts.
fn list_alarms(corpus: &[Series], scores: &[Vec<f64>], parts: &[Vec<&str>], threshold: f64) {
    let mut counts: std::collections::BTreeMap<&str, [usize; 3]> = Default::default();
    for ((s, sc), pt) in corpus.iter().zip(scores).zip(parts) {
        let probation = nab::scoring::probation_rows(sc.len());
        let mut found = vec![false; s.windows.len()];
        for (i, (&x, &part)) in sc.iter().zip(pt).enumerate().skip(probation) {
            if x < threshold {
                continue;
            }
            let kind = match s
                .windows
                .iter()
                .position(|w| (w.start..=w.end).contains(&i))
            {
                Some(w) if !found[w] => {
                    found[w] = true;
                    0
                }
                Some(_) => 1,
                None => 2,
            };
            counts.entry(part).or_default()[kind] += 1;
            let name = ["first", "again", "false"][kind];
            println!("{:<58} {i:>6} {x:.3} {name:<5} {part}", s.name);
        }
    }
    for (part, [first, again, fals]) in counts {
        println!("{part:<22} first {first:>3}  again {again:>3}  false {fals:>3}");
    }
}

mod synth;

fn main() {
    let data = std::env::var("NAB_DATA").unwrap_or_else(|_| "/work/shared/nab".into());
    let corpus = nab::load(Path::new(&data)).expect("corpus");
    let mut settings = Settings::default();
    for arg in std::env::args().skip(1) {
        let (k, v) = arg.split_once('=').expect("name=value");
        apply(&mut settings, k, v.parse().expect("number"));
    }
    if std::env::var_os("SYNTH").is_some() {
        synth::report(settings, true);
        synth::oxeye_report(settings, true);
        if let Ok(n) = std::env::var("SCREEN_SEEDS") {
            synth::oxeye_other_seeds(settings, n.parse().expect("SCREEN_SEEDS=n"), true);
            synth::young_clean_alarms(settings, true);
        }
        if let Ok(n) = std::env::var("CLEAN_SEEDS") {
            synth::print_clean_families(settings, n.parse().expect("CLEAN_SEEDS=n"));
        }
        return;
    }
    if let Ok(skips) = std::env::var("SKIPS") {
        batch(&corpus, settings, &skips);
        return;
    }
    let skip = std::env::var("SKIP").map_or(0, |k| k.parse().expect("SKIP=points"));
    let (scores, parts) = run(&corpus, settings, skip);
    if let Ok(dir) = std::env::var("NAB_DUMP") {
        for (s, sc) in corpus.iter().zip(&scores) {
            let path = Path::new(&dir).join(s.name.replace('/', "__"));
            let text: String = sc.iter().map(|x| format!("{x}\n")).collect();
            std::fs::write(path, text).expect("dump");
        }
    }
    let r = nab::score(&corpus, &scores, "tune", "".into());
    if std::env::var_os("NAB_PER_FILE").is_some() {
        for f in &r.per_file {
            println!(
                "{:<60} {:>8.3} {}/{} fp {}",
                f.name, f.raw, f.detected_windows, f.windows, f.false_positives
            );
        }
    }
    let f = |s: &nab::ProfileScores| {
        format!(
            "{:6.2} {:6.2} {:6.2}",
            s[0].normalized, s[1].normalized, s[2].normalized
        )
    };
    println!(
        "tune {} | held {} | transfer {} | all {} | thr {:.4} win {}/{} fp {}",
        f(&r.tuning_half),
        f(&r.held_out_half),
        f(&r.held_out_transferred),
        f(&r.full),
        r.full[0].threshold,
        r.full[0].detected_windows,
        r.full[0].windows,
        r.full[0].false_positives
    );
    if std::env::var_os("NAB_ALARMS").is_some() {
        list_alarms(&corpus, &scores, &parts, r.full[0].threshold);
    }
    if std::env::var_os("NAB_PER_FILE").is_some() {
        for p in &r.full {
            println!(
                "{:?}: thr {:.4} win {}/{} fp {} raw {:.2}",
                p.profile, p.threshold, p.detected_windows, p.windows, p.false_positives, p.raw
            );
        }
    }
}

/// `SKIPS=0,40,…`: reads lines of `name=value …` from stdin (overrides on top of the command
/// line's) and prints, per line, the tuning half's, held-out half's and all files' three scores,
/// each the mean over those starts, whether the synthetic checks pass (and, with
/// `SCREEN_SEEDS=n`, how many of `n` other seeds of the oxeye screen fail and how many of 60
/// young clean series alarm), then the line itself: for searches over many settings.
fn batch(corpus: &[Series], base: Settings, skips: &str) {
    let skips: Vec<usize> = skips
        .split(',')
        .map(|k| k.parse().expect("SKIPS"))
        .collect();
    let screen_seeds: Option<u64> = std::env::var("SCREEN_SEEDS")
        .ok()
        .map(|n| n.parse().expect("SCREEN_SEEDS=n"));
    for line in std::io::stdin().lines() {
        let line = line.expect("stdin");
        let mut settings = base;
        for arg in line.split_whitespace() {
            let (k, v) = arg.split_once('=').expect("name=value");
            apply(&mut settings, k, v.parse().expect("number"));
        }
        let mut sums = [[0.0; 3]; 3];
        for &skip in &skips {
            let r = nab::score(corpus, &run(corpus, settings, skip).0, "tune", "".into());
            for (half, s) in [&r.tuning_half, &r.held_out_half, &r.full]
                .iter()
                .enumerate()
            {
                for p in 0..3 {
                    sums[half][p] += s[p].normalized / skips.len() as f64;
                }
            }
        }
        let f = |s: &[f64; 3]| format!("{:6.2} {:6.2} {:6.2}", s[0], s[1], s[2]);
        let synth = synth::report(settings, false) && synth::oxeye_report(settings, false);
        let seeds = screen_seeds.map_or(String::new(), |n| {
            format!(
                " | screen fails {}/{n} | young clean alarm {}/60",
                synth::oxeye_other_seeds(settings, n, false),
                synth::young_clean_alarms(settings, false)
            )
        });
        println!(
            "tune {} | held {} | all {} | {}{seeds} | {line}",
            f(&sums[0]),
            f(&sums[1]),
            f(&sums[2]),
            if synth { "synth ok" } else { "synth FAIL" }
        );
    }
}
