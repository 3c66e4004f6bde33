//! The full NAB harness on `../shared/nab` (next to the checkout): the results layout is complete,
//! scoring the written files gives the in-memory scores, and the scores stay above the floor
//! measured when the default settings were chosen (77.69 / 71.35 / 81.75, minus a margin).

use std::path::{Path, PathBuf};

use insight::nab;

fn nab_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/nab")
}

#[test]
fn nab_scores_stay_above_the_measured_floor_and_the_layout_is_complete() {
    let data = nab_dir();
    assert!(
        data.join("labels/combined_windows.json").exists(),
        "NAB data expected at {}",
        data.display()
    );
    let out = tempfile::tempdir().expect("temp dir");
    let mut reported = 0;
    let report = nab::run(&data, out.path(), |p| {
        reported = p.done;
        assert!(p.done <= p.total);
    })
    .expect("nab run");
    assert_eq!(report.files, 41);
    assert_eq!(reported, 41);

    // One results file per data file, with NAB's header and one row per data row.
    let corpus = nab::load(&data).expect("corpus");
    for series in &corpus {
        let file = series.name.rsplit_once('/').map_or(&*series.name, |x| x.1);
        let path = out
            .path()
            .join("oxeye")
            .join(series.category())
            .join(format!("oxeye_{file}"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("timestamp,value,anomaly_score"));
        let rows: Vec<&str> = lines.collect();
        assert_eq!(rows.len(), series.values.len(), "{}", path.display());
        assert!(rows[0].starts_with(&series.timestamp_text[0]));
        for row in rows {
            let score: f64 = row.rsplit(',').next().unwrap_or("").parse().expect("score");
            assert!((0.0..=1.0).contains(&score), "{row}");
        }
    }

    // Scoring the files on disk gives exactly the scores computed in memory.
    let rescored = nab::score_results(&data, &report.results_dir).expect("score results");
    assert_eq!(rescored.full, report.full);

    let floors = [77.6, 71.2, 81.6];
    for (score, floor) in report.full.iter().zip(floors) {
        assert!(
            score.normalized >= floor,
            "{}: {:.2} fell below {floor}\n{report}",
            score.profile.name,
            score.normalized
        );
    }
    assert!(report.bytes_per_series > 0 && report.bytes_per_series < 16 * 1024);
}

#[test]
fn a_trivial_detector_scores_the_same_in_memory_and_from_files() {
    // A detector that scores how far the value is from the previous one, squashed to [0, 1]:
    // poor, but it fires somewhere, so the threshold sweep has work to do.
    struct Jump(Option<f64>);
    impl insight::Detector for Jump {
        fn observe(&mut self, _ts_ms: i64, value: f64) -> insight::Observation {
            let score = self.0.map_or(0.0, |p| 1.0 - (-(value - p).abs()).exp());
            self.0 = Some(value);
            insight::Observation {
                score,
                ..Default::default()
            }
        }
    }
    let data = nab_dir();
    let out = tempfile::tempdir().expect("temp dir");
    let report = nab::run_detector(&data, out.path(), "jump", || Jump(None), |_| {}).expect("run");
    let rescored = nab::score_results(&data, &out.path().join("jump")).expect("score results");
    assert_eq!(rescored.full, report.full);
    assert_eq!(rescored.held_out_half, report.held_out_half);
    for s in &report.full {
        assert!(s.normalized < 100.0 && s.windows == 79, "{s:?}");
    }
}
