//! NAB's scoring on cases small enough to work out by hand. σ(y) = 2/(1+e^{5y}) − 1 and
//! σ(−1) = 0.986614298 throughout.

use insight::nab::scoring::{
    LabelledScores, REWARD_LOW_FN, REWARD_LOW_FP, STANDARD, Window, score_at_threshold,
    score_corpus,
};

/// 20 rows (probation = floor(0.15 · 20) = 3 rows) with one window on rows 10..=14 (width 5).
const WINDOW: [Window; 1] = [Window { start: 10, end: 14 }];

fn scores_with(detections: &[(usize, f64)]) -> Vec<f64> {
    let mut scores = vec![0.0; 20];
    for &(row, score) in detections {
        scores[row] = score;
    }
    scores
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn detection_on_the_first_row_of_a_window_is_perfect() {
    // TP at the left edge: y = −(14 − 10 + 1)/5 = −1, worth σ(−1)/σ(−1) · 1 = 1.
    // raw = 1, null = −1, perfect = 1 → 100 · (1 + 1)/(1 + 1) = 100.
    let scores = scores_with(&[(10, 1.0)]);
    let file = [LabelledScores {
        scores: &scores,
        windows: &WINDOW,
    }];
    let s = score_corpus(&file, STANDARD);
    assert!(close(s.raw, 1.0), "{s:?}");
    assert!(close(s.normalized, 100.0));
    assert_eq!(s.threshold, 1.0);
    assert_eq!((s.detected_windows, s.false_positives), (1, 0));
}

#[test]
fn later_detection_earns_less() {
    // Row 12: y = −(14 − 12 + 1)/5 = −0.6, σ(−0.6) = 0.905148254, worth 0.905148254/0.986614298
    // = 0.917428680. raw = 0.917428680 → 100 · 1.917428680/2 = 95.871434.
    let scores = scores_with(&[(12, 1.0)]);
    let file = [LabelledScores {
        scores: &scores,
        windows: &WINDOW,
    }];
    let s = score_corpus(&file, STANDARD);
    assert!(close(s.raw, 0.917_428_680_428_407_9), "{s:?}");
    assert!((s.normalized - 95.871_434).abs() < 1e-6);
}

#[test]
fn false_positive_after_a_window_is_cheap_and_before_one_costs_full() {
    // Row 16 after the window: y = (16 − 14)/(5 − 1) = 0.5, σ(0.5) = −0.848283640, so the FP
    // costs 0.11 · 0.848283640 = 0.093311200 (standard), 0.22 · … = 0.186622401 (low FP).
    // The window is missed: −1 (standard, low FP) or −2 (low FN).
    let scores = scores_with(&[(16, 1.0)]);
    let file = [LabelledScores {
        scores: &scores,
        windows: &WINDOW,
    }];
    let s = score_at_threshold(&file, STANDARD, 0.5);
    assert!(close(s.raw, -1.093_311_200_395_326_4), "{s:?}");
    let s = score_at_threshold(&file, REWARD_LOW_FP, 0.5);
    assert!(close(s.raw, -1.186_622_400_790_652_8), "{s:?}");
    let s = score_at_threshold(&file, REWARD_LOW_FN, 0.5);
    assert!(close(s.raw, -2.093_311_200_395_326_4), "{s:?}");
    // Firing only there is worse than never firing (−1), but firing everywhere (threshold 0)
    // beats both: row 10 earns 1; rows 3..=9 precede every window, 7 · −0.11 = −0.77; rows
    // 15..=19 sit y = 0.25, 0.5, 0.75, 1, 1.25 past it, σ = −0.554600, −0.848284, −0.954045,
    // −0.986614, −0.996147, sum −4.339689, · 0.11 = −0.477366. raw = 1 − 0.77 − 0.477366
    // = −0.247366 → 100 · 0.752634/2 = 37.6317.
    let s = score_corpus(&file, STANDARD);
    assert_eq!(s.threshold, 0.0);
    assert!((s.raw + 0.247_366).abs() < 1e-5, "{s:?}");
    assert!((s.normalized - 37.631_7).abs() < 1e-3, "{s:?}");
    assert_eq!((s.detected_windows, s.false_positives), (1, 12));

    // Row 5, before any window: a full −0.11; with the TP on row 10 the total is
    // 1 − 0.11 = 0.89 → 100 · 1.89/2 = 94.5. Row 2 is in probation and changes nothing.
    let scores = scores_with(&[(2, 1.0), (5, 1.0), (10, 1.0)]);
    let file = [LabelledScores {
        scores: &scores,
        windows: &WINDOW,
    }];
    let s = score_corpus(&file, STANDARD);
    assert!(close(s.raw, 0.89), "{s:?}");
    assert!(close(s.normalized, 94.5));
    assert_eq!(s.false_positives, 1);
}

#[test]
fn only_the_earliest_detection_in_a_window_counts() {
    // Rows 11, 12 and 13 all fire; only row 11 counts: y = −(14 − 11 + 1)/5 = −0.8,
    // σ(−0.8) = 0.964027580, worth 0.977106841. No FP, so raw = 0.977106841.
    let scores = scores_with(&[(11, 1.0), (12, 1.0), (13, 1.0)]);
    let file = [LabelledScores {
        scores: &scores,
        windows: &WINDOW,
    }];
    let s = score_corpus(&file, STANDARD);
    assert!(close(s.raw, 0.977_106_840_922_604_5), "{s:?}");
}

#[test]
fn threshold_is_optimised_over_the_whole_corpus_per_profile() {
    // File A: the window, and score 0.9 on row 11 (worth 0.977106841, as above).
    // File B: no window, score 0.95 on row 8 (an FP before any window: −A_FP).
    // Thresholds: 1.1 → −1 (null); 0.95 → −1 − A_FP; 0.9 → 0.977106841 − A_FP;
    // 0 → every row fires: B's 16 scorable rows and A's 7 rows before the window cost −A_FP
    // each, worse still. So 0.9 wins for every profile:
    //   standard      raw 0.867106841, 100 · (0.867106841 + 1)/2 = 93.355342
    //   reward_low_FP raw 0.757106841, 100 · (0.757106841 + 1)/2 = 87.855342
    //   reward_low_FN raw 0.867106841, 100 · (0.867106841 + 2)/3 = 95.570228
    let a = scores_with(&[(11, 0.9)]);
    let b = scores_with(&[(8, 0.95)]);
    let files = [
        LabelledScores {
            scores: &a,
            windows: &WINDOW,
        },
        LabelledScores {
            scores: &b,
            windows: &[],
        },
    ];
    let expected = [
        (STANDARD, 93.355_342_046),
        (REWARD_LOW_FP, 87.855_342_046),
        (REWARD_LOW_FN, 95.570_228_031),
    ];
    for (profile, normalized) in expected {
        let s = score_corpus(&files, profile);
        assert_eq!(s.threshold, 0.9, "{s:?}");
        assert!((s.normalized - normalized).abs() < 1e-6, "{s:?}");
        assert_eq!(
            (s.windows, s.detected_windows, s.false_positives),
            (1, 1, 1)
        );
    }
}

#[test]
fn windows_wholly_inside_probation_are_dropped() {
    // Rows 0..=2 are probation; a window there is neither missed nor detectable.
    let scores = scores_with(&[(1, 1.0)]);
    let windows = [Window { start: 0, end: 2 }];
    let file = [LabelledScores {
        scores: &scores,
        windows: &windows,
    }];
    let s = score_corpus(&file, STANDARD);
    assert_eq!(s.windows, 0);
    assert_eq!(s.raw, 0.0);
}
