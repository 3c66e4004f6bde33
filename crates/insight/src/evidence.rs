//! "Why" for an anomaly: how strongly each candidate cause in the anomaly's window points at it.
//! Every weight is in [0, 1] so candidates of different kinds rank on one list.

/// Pearson correlation of two irregular series after averaging each into `step_ms` buckets over
/// the same grid; `None` with fewer than `min_buckets` buckets where both have values or when
/// either is constant there.
pub fn correlation(
    a: &[(i64, f64)],
    b: &[(i64, f64)],
    step_ms: i64,
    min_buckets: usize,
) -> Option<f64> {
    let step = step_ms.max(1);
    let bucket = |s: &[(i64, f64)]| {
        let mut m: std::collections::BTreeMap<i64, (f64, u32)> = Default::default();
        for &(t, v) in s.iter().filter(|(_, v)| v.is_finite()) {
            let e = m.entry(t.div_euclid(step)).or_insert((0.0, 0));
            e.0 += v;
            e.1 += 1;
        }
        m
    };
    let (ma, mb) = (bucket(a), bucket(b));
    let pairs: Vec<(f64, f64)> = ma
        .iter()
        .filter_map(|(k, (sa, na))| {
            mb.get(k)
                .map(|(sb, nb)| (sa / f64::from(*na), sb / f64::from(*nb)))
        })
        .collect();
    if pairs.len() < min_buckets.max(3) {
        return None;
    }
    let n = pairs.len() as f64;
    let (mx, my) = (
        pairs.iter().map(|p| p.0).sum::<f64>() / n,
        pairs.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in &pairs {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
        syy += (y - my) * (y - my);
    }
    if sxx <= f64::EPSILON * n || syy <= f64::EPSILON * n {
        return None;
    }
    Some((sxy / (sxx * syy).sqrt()).clamp(-1.0, 1.0))
}

/// A deploy (a new `service.version` first seen at `deploy_ms`) as the cause of an anomaly that
/// started at `start_ms`: 1 when it came just before, falling to 0 when it came `window_ms`
/// before or later than the anomaly's start plus a tenth of the window (clocks and buckets are
/// coarse).
pub fn deploy_weight(deploy_ms: i64, start_ms: i64, window_ms: i64) -> f64 {
    let window = window_ms.max(1) as f64;
    let lead = (start_ms - deploy_ms) as f64;
    if lead < -0.1 * window || lead > window {
        0.0
    } else {
        (1.0 - lead.max(0.0) / window).clamp(0.0, 1.0)
    }
}

/// A function's profile share that grew from `before` to `now` (fractions of the total) with
/// z-score `z`: the growth relative to the larger share, discounted when the z-score is weak.
pub fn growth_weight(before: f64, now: f64, z: f64) -> f64 {
    let grew = (now - before).max(0.0);
    let top = now.max(before);
    if top <= 0.0 {
        return 0.0;
    }
    let certainty = (z.abs() / 4.0).min(1.0);
    (grew / top * certainty).clamp(0.0, 1.0)
}

/// A resource series that moved with the anomalous one: the absolute correlation, counted only
/// beyond `min_abs`, rescaled to [0, 1].
pub fn moved_together_weight(r: f64, min_abs: f64) -> f64 {
    let a = r.abs();
    if a < min_abs || min_abs >= 1.0 {
        0.0
    } else {
        ((a - min_abs) / (1.0 - min_abs)).clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlation_of_series_that_move_together_and_apart() {
        let a: Vec<(i64, f64)> = (0..20).map(|i| (i * 1000, (i % 5) as f64)).collect();
        let b: Vec<(i64, f64)> = (0..20)
            .map(|i| (i * 1000 + 10, 2.0 * (i % 5) as f64 + 1.0))
            .collect();
        let c: Vec<(i64, f64)> = (0..20).map(|i| (i * 1000, -((i % 5) as f64))).collect();
        assert!((correlation(&a, &b, 1000, 5).unwrap() - 1.0).abs() < 1e-9);
        assert!((correlation(&a, &c, 1000, 5).unwrap() + 1.0).abs() < 1e-9);
        let flat: Vec<(i64, f64)> = (0..20).map(|i| (i * 1000, 3.0)).collect();
        assert_eq!(correlation(&a, &flat, 1000, 5), None);
        assert_eq!(correlation(&a[..3], &b[..3], 1000, 5), None);
    }

    #[test]
    fn weights_are_in_unit_range_and_ordered() {
        assert_eq!(deploy_weight(1000, 1000, 600_000), 1.0);
        assert!(deploy_weight(0, 300_000, 600_000) > deploy_weight(0, 500_000, 600_000));
        assert_eq!(deploy_weight(0, 700_000, 600_000), 0.0);
        assert_eq!(deploy_weight(200_000, 0, 600_000), 0.0);
        assert!(growth_weight(0.05, 0.5, 10.0) > growth_weight(0.4, 0.5, 10.0));
        assert_eq!(growth_weight(0.5, 0.4, 10.0), 0.0);
        assert_eq!(moved_together_weight(0.3, 0.5), 0.0);
        assert!((moved_together_weight(-1.0, 0.5) - 1.0).abs() < 1e-12);
    }
}
