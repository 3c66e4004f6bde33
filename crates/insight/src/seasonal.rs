//! The default detector: a small bank of forecasters (level at three speeds × no / daily / weekly
//! seasonality) whose best recent member predicts the next value; its errors, scaled by its own
//! recent error, feed the anomaly likelihood; so does the drift of the slow forecaster's recent
//! signed errors (ramps, shifts, a missing cycle), and that of the most informative seasonal
//! profile's errors on its own day- or week-long level (a cycle that fails to happen while the
//! last value tracks the flat line); values outside everything seen so far by more
//! than the forecast noise alarm at once; so does a burst of never-seen sequences of quantised
//! levels (contextual novelty, judged by an HTM-style likelihood); so does a window of values
//! whose shape no learned adaptive-resonance category holds, when new shapes have been rare
//! (`art.rs`); a flatline (a run of identical values far longer than any seen) alarms once; a
//! second, coarse detector of the same kind runs on means of blocks of points and catches shifts
//! too small to see in single noisy points; after an alarm, further alarms are muted for a while
//! because one event is one anomaly; the point surprise and contextual novelty, once they have
//! kept raising the alarm on a series, need more evidence there; and a stream watched long needs
//! more surprise to alarm.

use crate::art::ArtNovelty;
use crate::context::ContextNovelty;
use crate::likelihood::{ExceedanceTail, ScoreLikelihood};
use crate::moments::RunningMoments;
use crate::profile::SeasonalProfile;
use crate::{Detector, Observation};

const DAY_MS: i64 = 86_400_000;
const WEEK_MS: i64 = 7 * DAY_MS;
/// Half-hour bins for the day, hourly bins for the week.
const DAY_BINS: usize = 48;
const WEEK_BINS: usize = 168;
/// Level speeds of the forecaster bank: last value, fast, slow.
const LEVEL_RATES: [f64; 3] = [1.0, 0.3, 0.05];
/// The slow level's place in `LEVEL_RATES` (and in each seasonal mode's group of forecasters).
const SLOW: usize = LEVEL_RATES.len() - 1;
/// The stream's age discount stops growing at this many times `Settings::age_points`, so a series
/// watched for years stays as sensitive as one watched for weeks.
const AGE_MAX_RATIO: f64 = 8.0;
/// Seasonal modes of the forecaster bank: none, daily, weekly.
const MODES: usize = 3;
/// The seasonal ones among them (day, week).
const SEASONS: usize = MODES - 1;
const FORECASTERS: usize = LEVEL_RATES.len() * MODES;
/// The parts whose largest score is the point's score, by their place in `observe`'s `parts`.
mod part {
    pub const POINT: usize = 0;
    pub const ACCUMULATED: usize = 1;
    pub const CONTEXT: usize = 2;
    pub const DRIFT: usize = 3;
    pub const MISS: usize = 4;
    pub const RANGE: usize = 5;
    pub const COARSE: usize = 6;
    pub const RESONANCE: usize = 7;
    pub const FLATLINE: usize = 8;
    pub const COUNT: usize = 9;
    /// Each part's name, in `Observation::part`.
    pub const NAMES: [&str; COUNT] = [
        "point surprise",
        "accumulated evidence",
        "contextual novelty",
        "drift",
        "missing cycle",
        "range novelty",
        "coarse",
        "shape novelty",
        "flatline",
    ];
    /// The parts with an alarm memory (`Settings::recall_weight`), in `part_alarms`' order.
    pub const RECALLED: [usize; 2] = [POINT, CONTEXT];
}

/// Settings shared by every series; chosen once, never per series.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Points scored 0 while the detector learns.
    pub warmup_points: u32,
    /// Learning rate of each forecaster's mean absolute error (which also picks the best one).
    pub error_rate: f64,
    /// Errors above this many mean absolute errors are clipped before the error learns from
    /// them, so one outlier does not blind the detector: the error scale (which picks the best
    /// forecaster and measures point surprises) follows the typical error, not the bursts.
    pub error_clip: f64,
    /// The same for the slow forecasters, whose error scale measures the drift: a ramp's
    /// growing errors are what the drift is about, so they are clipped less.
    pub slow_error_clip: f64,
    /// Learning rate of the seasonal profiles after their first updates.
    pub season_rate: f64,
    /// Whole periods a profile must have seen before its forecasters may be picked.
    pub season_min_periods: f64,
    /// Surprises (errors in mean absolute errors) above this are modelled as the tail.
    pub tail_threshold: f64,
    /// Learning rate of the tails, and the weight of their prior in observations.
    pub tail_rate: f64,
    pub tail_prior_weight: f64,
    /// Points seen before the tails learn. Each error scale starts at `error_rate` times the
    /// first error and may grow only by `error_rate · (error_clip − 1)` a point (~1.25 %), so for
    /// the first few hundred points it is far too small and the surprises it measures are 10–50;
    /// a tail that learnt from them would expect huge surprises for thousands of points, and a
    /// large sudden change (a 15σ level shift) would not alarm at once. By point 250 the scale
    /// has grown about twentyfold, to within a few times the typical error. Starting the scale
    /// right instead (an equal-weight mean of the first errors) costs NAB ~4 points: the scale's
    /// slow start is also what keeps a young series from alarming on its early variety.
    pub tail_after: u32,
    /// Surprises the tails must have learnt from before their evidence (point surprise, drift)
    /// counts: a tail holding only its prior is judging surprises measured by a scale that is
    /// still growing, so a new clean series would alarm at its first judged point, and a
    /// low-noise series at its first dip (whose mute could then hide a real step).
    pub tail_min_learned: u32,
    /// Evidence a point must bring to add to the accumulated evidence (a CUSUM allowance).
    pub drift: f64,
    /// Weight of the drift evidence (the recent mean of the slow forecaster's signed errors),
    /// which catches ramps, level shifts and a missing seasonal cycle.
    pub change_weight: f64,
    /// Learning rate of that recent mean, and of the long-term moments of the value.
    pub change_short_rate: f64,
    pub change_long_rate: f64,
    /// A value this fraction of the seen range outside it brings `range_evidence`, proportionally
    /// less when closer.
    pub range_tolerance: f64,
    pub range_evidence: f64,
    /// Only the part of an excursion beyond this many mean absolute errors of the forecast counts
    /// as outside the range: records set by ordinary noise are not novel.
    pub range_noise: f64,
    /// Points seen before a value outside the range counts at all. Early on the range has not
    /// been explored (a daily cycle's first trough is a record) and the error scale that
    /// `range_noise` is measured in is still far too small, so a clean series would alarm then.
    pub range_after: u32,
    /// Points during which a record must also beat the forecast noise measured right from the
    /// start (an equal-weight mean of the first errors, then learnt like the error scale): the
    /// error scale starts far too small and grows slowly, so a young clean series' records by
    /// noise alarmed (8 of 20 seeds of the `oxeye` screen at points 346–640). The coarse detector
    /// counts the same number of blocks. Kept young only: later the right-started mean, which
    /// follows whichever forecaster was best at each point, exceeds the best one's error and
    /// hides real excursions (ambient temperature's and an ad exchange's early windows).
    pub range_young: u32,
    /// Contextual novelty: levels of the quantisation, levels per context, weight of its
    /// likelihood evidence (0 turns it off), and the rates and learning points of that
    /// likelihood (recent mean of the raw novelty against its long-run Gaussian).
    pub context_levels: u8,
    pub context_length: usize,
    pub context_weight: f64,
    pub context_short_rate: f64,
    pub context_long_rate: f64,
    pub context_learning: u32,
    /// Evidence (`−ln P`) that maps to score 1; scores are evidence / this, clamped.
    pub full_evidence: f64,
    /// Score above which an alarm is raised and the mute starts.
    pub alarm_score: f64,
    /// Points during which scores are multiplied by `mute_factor` after an alarm.
    pub mute_points: u32,
    pub mute_factor: f64,
    /// After the mute, a new alarm must score at least the last alarm's score times
    /// `rearm_factor`, a bar that decays linearly back to `alarm_score` over `rearm_points`
    /// points: a series that keeps alarming must keep getting more surprising to be heard.
    pub rearm_points: u32,
    pub rearm_factor: f64,
    /// Points averaged into one value of the coarse detector (a second detector on block means,
    /// which sees shifts too small for single noisy points); 0 or 1 turns it off. Its score,
    /// times `coarse_weight`, counts at the point that completes a block.
    pub coarse_block: u32,
    pub coarse_weight: f64,
    /// The coarse detector's `range_noise`, as a multiple of the point detector's: block means
    /// set new records by chance more often than their noise suggests in a short history.
    pub coarse_range_noise: f64,
    /// Blocks the coarse detector must have seen before its range evidence counts.
    pub coarse_range_after: u32,
    /// Shape novelty by adaptive resonance (`art.rs`): windows of `art_window` values (0 turns
    /// it off) matched with vigilance `art_vigilance`. After `art_learning` points, a window that
    /// founds a new category brings evidence `−ln` of the recent rate of new categories (learned
    /// at `art_rate`) plus `ln` of its distance from the closest one (in vigilance allowances);
    /// it scores `art_weight` times that evidence over `art_evidence`, at most `art_weight`. A
    /// series that keeps founding categories (noise) so earns little; a settled one, a lot.
    pub art_window: usize,
    pub art_vigilance: f64,
    pub art_weight: f64,
    pub art_learning: u32,
    pub art_rate: f64,
    pub art_evidence: f64,
    /// A run of identical values (a stuck sensor, a flatlined feed) longer than `stuck_factor`
    /// times the longest run seen before, and at least `stuck_min` points, scores `stuck_score`
    /// once, at the point that makes it that long, after the first `art_learning` points (0
    /// turns it off). Series whose values often repeat (counts, coarse gauges) have long runs
    /// already, so only a much longer one counts.
    pub stuck_min: u32,
    pub stuck_factor: f64,
    pub stuck_score: f64,
    /// After `age_points` points, scores are divided by `1 + age_weight · ln(points /
    /// age_points)` (0 turns it off), the ratio counted up to `AGE_MAX_RATIO`. The tails remember
    /// about `1 / tail_rate` points, so the rarity they report is rarity within that memory; a
    /// series watched many times longer has shown more of its normal variety than they recall,
    /// and the same surprise is then less of an event.
    pub age_points: u32,
    pub age_weight: f64,
    /// A seasonal pattern that fails to happen (a day whose busy hours never come): per seasonal
    /// mode (day, week), the recent mean, learned at `miss_rate`, of the signed errors of that
    /// mode's profile read on its own slow level (the day's or the week's), in units of its mean
    /// absolute error (times the averaging factor, as for the drift), is judged against its own
    /// tail, in the mode that has been most informative (over ~`1 / tail_rate` points, its slow
    /// forecaster's error relative to the non-seasonal slow forecaster's is lowest), and only
    /// while that relative error is below `miss_informative`; the evidence, times `miss_weight`
    /// (0 turns it off), joins the drift's. The point forecasters cannot see it: the last value
    /// tracks the flat line that replaced the cycle, and the slow forecasters absorb the missing
    /// cycle into their level within a few dozen points; the profile on a day-long level does
    /// not. Judging only the most informative mode keeps a weekly series' ordinary weekend (a
    /// "missing" weekday for the daily profile) quiet; and a cycle that stays missing is one
    /// event, so after an alarm raised while this evidence was up it is silent until it has
    /// stayed below the CUSUM allowance (`drift`) for `mute_points` points.
    pub miss_weight: f64,
    pub miss_rate: f64,
    pub miss_informative: f64,
    /// A part that keeps raising the alarm on this series is badly calibrated there, not
    /// witnessing one event after another: contextual novelty raised 17 of its 31 false alarms
    /// on NAB on one bursty series (`cpu_utilization_asg_misconfiguration`) whose likelihood's
    /// Gaussian does not fit, and a few point surprises recur on series they fit poorly. So the
    /// point surprise's and the contextual novelty's scores are each divided by
    /// `1 + recall_weight · max(0, n − recall_free)` (0 turns it off), `n` a count, decaying at
    /// `recall_rate` a point, of the alarms that part raised on this series: the first alarm is
    /// free and keeps its full say, later ones need several times the evidence. A large point
    /// surprise still alarms through the accumulated evidence, which it feeds undiscounted. Not
    /// applied to the drift or the accumulated evidence: their recurring alarms on bursty counts
    /// include real windows (the Twitter files' held-out windows were lost), nor to the other
    /// parts (no effect).
    pub recall_weight: f64,
    pub recall_rate: f64,
    pub recall_free: f64,
    /// The slow forecaster's signed errors are clipped at this many of its mean absolute
    /// errors (floored as the drift's scale is) before they enter the drift's recent mean (0
    /// turns it off), so the drift judges persistence: a burst of a few huge values (a count
    /// rising out of a near-zero night level) moved the unclipped mean as much as a level
    /// shift does, and the drift and the accumulated evidence it feeds raised most of their
    /// false alarms on such bursts, which the point surprise judges already. A shift moves
    /// every error, so it still moves the clipped mean; a 15σ shift is still seen at once.
    pub drift_clip: f64,
    /// On a sparse series a burst is a drift after all. Per mode, a count of the slow
    /// forecaster's errors beyond `drift_clip`, decayed at `drift_burst_rate` a point, is kept;
    /// while it reaches `drift_burst_count` (this error included; 0 turns it off) and the slow
    /// forecaster's mean absolute error is below `drift_burst_sparse` of the scale's floor (1 %
    /// of the series' spread; 0: on any series), the drift reads the recent mean of the
    /// unclipped errors instead. A series near constant almost always, whose spread is made by
    /// rare spikes, has every event far beyond the clip: clipped, its episodes (several large
    /// values within a dozen points) barely move the drift, and the point surprise rates each
    /// value low, as its tail has seen bigger single spikes. On a noisy series a burst of large
    /// errors is the noise the clip is there to ignore (the Twitter counts' false alarms), so
    /// there it stays clipped; so does an isolated spike on a sparse one. A level shift passes
    /// the clip anyway (every error moves).
    pub drift_burst_count: f64,
    pub drift_burst_rate: f64,
    pub drift_burst_sparse: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            warmup_points: 150,
            error_rate: 0.005,
            error_clip: 3.5,
            slow_error_clip: 6.0,
            season_rate: 0.02,
            season_min_periods: 2.0,
            tail_threshold: 4.5,
            tail_rate: 0.0005,
            tail_prior_weight: 15.0,
            tail_after: 250,
            tail_min_learned: 50,
            drift: 7.0,
            change_weight: 1.5,
            change_short_rate: 0.1,
            change_long_rate: 0.001,
            range_tolerance: 0.02,
            range_evidence: 25.0,
            range_noise: 1.0,
            range_after: 300,
            range_young: 400,
            context_levels: 4,
            context_length: 6,
            context_weight: 1.25,
            context_short_rate: 0.2,
            context_long_rate: 0.00025,
            context_learning: 300,
            full_evidence: 26.0,
            alarm_score: 0.4,
            mute_points: 100,
            mute_factor: 0.1,
            rearm_points: 0,
            rearm_factor: 1.0,
            coarse_block: 8,
            coarse_weight: 0.5,
            coarse_range_noise: 1.5,
            coarse_range_after: 150,
            art_window: 8,
            art_vigilance: 0.9,
            art_weight: 0.5,
            art_learning: 400,
            art_rate: 0.002,
            art_evidence: 7.0,
            stuck_min: 12,
            stuck_factor: 2.0,
            stuck_score: 0.5,
            age_points: 3000,
            age_weight: 0.2,
            miss_weight: 2.0,
            miss_rate: 0.03,
            miss_informative: 0.5,
            recall_weight: 3.0,
            recall_rate: 0.0001,
            recall_free: 1.0,
            drift_clip: 8.0,
            drift_burst_count: 4.0,
            drift_burst_rate: 0.1,
            drift_burst_sparse: 4.0,
        }
    }
}

/// What one value brings to each seasonal mode's drift (`SeasonalDetector::drift_inputs`).
struct DriftInputs {
    /// The slow forecaster's signed error, unclipped and clipped.
    raw: [f64; MODES],
    clipped: [f64; MODES],
}

/// One member of the forecaster bank: a level on the deseasonalised series.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
struct Forecaster {
    level: f64,
    mean_abs_error: f64,
}

/// Serializable so a long-running process can checkpoint it and resume after a restart.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SeasonalDetector {
    settings: Settings,
    points: u32,
    last_ts_ms: i64,
    forecasters: [Forecaster; FORECASTERS],
    day: SeasonalProfile<DAY_BINS>,
    week: SeasonalProfile<WEEK_BINS>,
    /// Slow levels the profiles measure deviations from (time constants of a day and a week).
    day_level: f64,
    week_level: f64,
    error_tail: ExceedanceTail,
    change_tail: ExceedanceTail,
    /// Evidence accumulated over recent points (a CUSUM of point evidence).
    accumulated: f64,
    /// Per seasonal mode, the recent mean of the slow forecaster's signed errors.
    drift_mean: [f64; MODES],
    /// Per seasonal mode, the decayed count of recent slow errors beyond the drift clip, and
    /// the recent mean of the unclipped slow errors (`Settings::drift_burst_count`).
    #[serde(default)]
    drift_large: [f64; MODES],
    #[serde(default)]
    drift_raw: [f64; MODES],
    long_moments: RunningMoments,
    #[serde(with = "crate::state::float")]
    min_seen: f64,
    #[serde(with = "crate::state::float")]
    max_seen: f64,
    muted_for: u32,
    /// The best forecaster's mean absolute error, started right (an equal-weight mean of the
    /// first errors): the noise a record must beat while the error scale is still growing.
    #[serde(default)]
    range_noise_scale: f64,
    /// Points since the last alarm (saturating) and that alarm's score.
    #[serde(default)]
    since_alarm: u32,
    #[serde(default)]
    last_alarm_score: f64,
    context: ContextNovelty,
    context_likelihood: ScoreLikelihood,
    /// The coarse detector on block means, with the running block's sum and count.
    #[serde(default)]
    coarse: Option<Box<SeasonalDetector>>,
    #[serde(default)]
    block_sum: f64,
    #[serde(default)]
    block_count: u32,
    /// Shape novelty.
    #[serde(default)]
    art: Option<Box<ArtNovelty>>,
    /// The recent fraction of windows that founded a category, and windows seen.
    #[serde(default)]
    art_novel_rate: f64,
    #[serde(default)]
    art_windows: u32,
    /// The current run of identical values, the longest finished one, and the last value.
    #[serde(default)]
    run: u32,
    #[serde(default)]
    longest_run: u32,
    #[serde(default, with = "crate::state::float")]
    last_value: f64,
    /// Per seasonal mode (day, week; mode `m` at `m − 1`): the recent mean of the signed errors
    /// of its profile on its own slow level, their mean absolute error, the tail of that mean in
    /// units of it, the points judged since the mode was ready, and how its slow forecaster's
    /// error has compared with the non-seasonal one's (a slow mean of the ratio).
    #[serde(default)]
    miss_mean: [f64; SEASONS],
    #[serde(default)]
    miss_error: [f64; SEASONS],
    #[serde(default = "default_miss_tails")]
    miss_tail: [ExceedanceTail; SEASONS],
    #[serde(default)]
    miss_seen: [u32; SEASONS],
    #[serde(default)]
    miss_ratio: [f64; SEASONS],
    /// After an alarm raised while the miss evidence was up, the points it stays silent for.
    #[serde(default)]
    miss_latched: u32,
    /// Decayed counts of the alarms raised by the point surprise and by contextual novelty
    /// (`Settings::recall_weight`).
    #[serde(default)]
    part_alarms: [f64; part::RECALLED.len()],
}

fn default_miss_tails() -> [ExceedanceTail; SEASONS] {
    [ExceedanceTail::new(Settings::default().tail_threshold); SEASONS]
}

impl Default for SeasonalDetector {
    fn default() -> Self {
        Self::new(Settings::default())
    }
}

impl SeasonalDetector {
    pub fn new(settings: Settings) -> Self {
        SeasonalDetector {
            settings,
            points: 0,
            last_ts_ms: 0,
            forecasters: [Forecaster::default(); FORECASTERS],
            day: SeasonalProfile::new(DAY_MS),
            week: SeasonalProfile::new(WEEK_MS),
            day_level: 0.0,
            week_level: 0.0,
            error_tail: ExceedanceTail::new(settings.tail_threshold),
            change_tail: ExceedanceTail::new(settings.tail_threshold),
            accumulated: 0.0,
            drift_mean: [0.0; MODES],
            drift_large: [0.0; MODES],
            drift_raw: [0.0; MODES],
            long_moments: RunningMoments::default(),
            min_seen: f64::INFINITY,
            max_seen: f64::NEG_INFINITY,
            muted_for: 0,
            range_noise_scale: 0.0,
            since_alarm: u32::MAX,
            last_alarm_score: 0.0,
            context: ContextNovelty::new(settings.context_levels, settings.context_length),
            context_likelihood: ScoreLikelihood::default(),
            coarse: (settings.coarse_block > 1).then(|| {
                let b = settings.coarse_block;
                Box::new(SeasonalDetector::new(Settings {
                    warmup_points: settings.warmup_points / b,
                    tail_after: settings.tail_after / b,
                    mute_points: settings.mute_points / b,
                    rearm_points: settings.rearm_points / b,
                    context_learning: settings.context_learning / b,
                    range_noise: settings.range_noise * settings.coarse_range_noise,
                    range_after: settings.coarse_range_after,
                    coarse_block: 0,
                    art_window: 0,
                    stuck_score: 0.5,
                    // The coarse score joins the point's score, which is discounted once.
                    age_weight: 0.0,
                    ..settings
                }))
            }),
            block_sum: 0.0,
            block_count: 0,
            art: (settings.art_window > 1)
                .then(|| Box::new(ArtNovelty::new(settings.art_window, settings.art_vigilance))),
            art_novel_rate: 0.0,
            art_windows: 0,
            run: 0,
            longest_run: 0,
            last_value: f64::NAN,
            miss_mean: [0.0; SEASONS],
            miss_error: [0.0; SEASONS],
            miss_tail: [ExceedanceTail::new(settings.tail_threshold); SEASONS],
            miss_seen: [0; SEASONS],
            miss_ratio: [0.0; SEASONS],
            miss_latched: 0,
            part_alarms: [0.0; part::RECALLED.len()],
        }
    }

    /// Evidence that the most informative seasonal mode's profile has been persistently wrong
    /// lately (`Settings::miss_weight`); learns from `value`. Called before `learn`.
    fn miss_evidence(&mut self, ts_ms: i64, value: f64, seasonal: &[f64; MODES]) -> f64 {
        let s = self.settings;
        if s.miss_weight <= 0.0 || self.points == 0 {
            return 0.0;
        }
        let averaging = (s.miss_rate / (2.0 - s.miss_rate)).sqrt();
        let floor = self.scale_floor(value);
        let plain = self.forecasters[SLOW].mean_abs_error.max(floor);
        let mut evidence = 0.0;
        let mut lowest_ratio = s.miss_informative;
        for (m, &deviation) in seasonal.iter().enumerate().skip(1) {
            let level = if m == 1 {
                self.day_level
            } else {
                self.week_level
            };
            let signed = value - (level + deviation);
            let mean = self.miss_mean[m - 1] + s.miss_rate * (signed - self.miss_mean[m - 1]);
            self.miss_mean[m - 1] = mean;
            let error = self.miss_error[m - 1];
            let clipped = if error > 0.0 {
                signed.abs().min(s.error_clip * error)
            } else {
                signed.abs()
            };
            self.miss_error[m - 1] += s.error_rate * (clipped - error);
            if !self.mode_ready(m, ts_ms) {
                continue;
            }
            self.miss_seen[m - 1] = self.miss_seen[m - 1].saturating_add(1);
            let shift = (mean.abs() / (error.max(floor) * averaging)).min(1e9);
            let ratio =
                (self.forecasters[m * LEVEL_RATES.len() + SLOW].mean_abs_error / plain).min(10.0);
            let rate = (1.0 / f64::from(self.miss_seen[m - 1])).max(s.tail_rate);
            self.miss_ratio[m - 1] += rate * (ratio - self.miss_ratio[m - 1]);
            // Judged only once the mode has been ready for `warmup_points + tail_after` points:
            // a tail holding little more than its prior alarmed on clean series
            // (3 of 20 seeds of the `oxeye` screen, at points 640–746).
            if self.miss_seen[m - 1] > s.warmup_points + s.tail_after
                && self.points >= s.warmup_points / 2
                && self.miss_ratio[m - 1] < lowest_ratio
            {
                lowest_ratio = self.miss_ratio[m - 1];
                evidence = self.miss_tail[m - 1].evidence(shift);
            }
            if self.miss_seen[m - 1] > s.warmup_points / 4 {
                self.miss_tail[m - 1].learn(shift, s.tail_rate, s.tail_prior_weight);
            }
        }
        // A cycle that stays missing is one event: once an alarm was raised while it was off
        // (by it or by anything else, such as a flatline), it is not heard again until its
        // evidence has stayed below the CUSUM allowance for `mute_points` points (a flat line
        // across a daily wave crosses the profile twice a day, briefly).
        if self.miss_latched > 0 {
            self.miss_latched = if s.miss_weight * evidence >= s.drift {
                s.mute_points
            } else {
                self.miss_latched - 1
            };
            return 0.0;
        }
        s.miss_weight * evidence
    }

    /// What each seasonal mode's slow forecaster's error on `value` brings to the drift: the
    /// signed error clipped at `Settings::drift_clip` of its floored scale, and the signed error
    /// itself; counts this error in `drift_large` when it is beyond the clip.
    fn drift_inputs(&mut self, value: f64, seasonal: &[f64; MODES]) -> DriftInputs {
        let s = self.settings;
        let mut inputs = DriftInputs {
            clipped: [0.0; MODES],
            raw: [0.0; MODES],
        };
        for (mode, &deviation) in seasonal.iter().enumerate() {
            let slow = &self.forecasters[mode * LEVEL_RATES.len() + SLOW];
            let expected = slow.level + deviation;
            let signed = value - expected;
            inputs.raw[mode] = signed;
            inputs.clipped[mode] = if s.drift_clip > 0.0 {
                let scale = slow.mean_abs_error.max(self.scale_floor(expected));
                let c = s.drift_clip * scale;
                let beyond = if signed.abs() > c { 1.0 } else { 0.0 };
                let large = &mut self.drift_large[mode];
                *large = *large * (1.0 - s.drift_burst_rate) + beyond;
                signed.clamp(-c, c)
            } else {
                signed
            };
        }
        inputs
    }

    /// Errors below 1 % of the series' spread are never surprising, even when a noiseless series
    /// is predicted almost exactly.
    fn spread_floor(&self) -> f64 {
        0.01 * self.long_moments.std()
    }

    /// The least any error scale may be near `around`: the spread floor, or, for a series that
    /// never varied, a tiny fraction of its size, so any change in it is large but finite.
    fn scale_floor(&self, around: f64) -> f64 {
        self.spread_floor().max(1e-9 * (around.abs() + 1.0))
    }

    /// Each mode's seasonal deviation at `ts_ms` (none, day, week), read once per point: the
    /// profiles learn only after everything else has read them.
    fn seasonals(&self, ts_ms: i64) -> [f64; MODES] {
        [0.0, self.day.at(ts_ms), self.week.at(ts_ms)]
    }

    fn mode_ready(&self, mode: usize, ts_ms: i64) -> bool {
        let min = self.settings.season_min_periods;
        match mode {
            1 => self.day.periods_seen(ts_ms) >= min,
            2 => self.week.periods_seen(ts_ms) >= min,
            _ => true,
        }
    }

    /// The forecaster with the lowest recent error among those allowed to be picked.
    fn best(&self, ts_ms: i64) -> usize {
        let mut best = 0;
        for k in 1..FORECASTERS {
            if self.mode_ready(k / LEVEL_RATES.len(), ts_ms)
                && self.forecasters[k].mean_abs_error < self.forecasters[best].mean_abs_error
            {
                best = k;
            }
        }
        best
    }

    /// The score a new alarm needs: the last alarm's (times `rearm_factor`), decaying linearly
    /// to `alarm_score` over `rearm_points` after the mute.
    fn alarm_bar(&self) -> f64 {
        let s = self.settings;
        let after_mute = self.since_alarm.saturating_sub(s.mute_points);
        if s.rearm_points == 0 || after_mute >= s.rearm_points {
            return s.alarm_score;
        }
        let left = 1.0 - f64::from(after_mute) / f64::from(s.rearm_points);
        let last = self.last_alarm_score * s.rearm_factor;
        s.alarm_score + (last - s.alarm_score).max(0.0) * left
    }

    /// Learns from `value`; `drift` is what it brings to each mode's drift means.
    fn learn(&mut self, ts_ms: i64, value: f64, drift: &DriftInputs, seasonal: &[f64; MODES]) {
        let first = self.points == 0;
        let s = self.settings;
        for k in 0..FORECASTERS {
            let seasonal = seasonal[k / LEVEL_RATES.len()];
            let f = &mut self.forecasters[k];
            let deseasonalised = value - seasonal;
            if first {
                f.level = deseasonalised;
                continue;
            }
            let signed = value - (f.level + seasonal);
            let slow = k % LEVEL_RATES.len() == SLOW;
            if slow {
                let mode = k / LEVEL_RATES.len();
                let d = &mut self.drift_mean[mode];
                *d += s.change_short_rate * (drift.clipped[mode] - *d);
                let r = &mut self.drift_raw[mode];
                *r += s.change_short_rate * (drift.raw[mode] - *r);
            }
            let error = signed.abs();
            let clip = if slow {
                s.slow_error_clip
            } else {
                s.error_clip
            };
            let clipped = if f.mean_abs_error > 0.0 {
                error.min(clip * f.mean_abs_error)
            } else {
                error
            };
            f.mean_abs_error += s.error_rate * (clipped - f.mean_abs_error);
            f.level += LEVEL_RATES[k % LEVEL_RATES.len()] * (deseasonalised - f.level);
        }
        if first {
            self.day_level = value;
            self.week_level = value;
        } else {
            let dt = (ts_ms - self.last_ts_ms).max(0) as f64;
            self.day_level += (1.0 - (-dt / DAY_MS as f64).exp()) * (value - self.day_level);
            self.week_level += (1.0 - (-dt / WEEK_MS as f64).exp()) * (value - self.week_level);
        }
        self.day.learn(ts_ms, value - self.day_level, s.season_rate);
        self.week
            .learn(ts_ms, value - self.week_level, s.season_rate);
    }
}

impl Detector for SeasonalDetector {
    fn observe(&mut self, ts_ms: i64, value: f64) -> Observation {
        if !value.is_finite() {
            return Observation::default();
        }
        let s = self.settings;
        let best = self.best(ts_ms);
        let mode = best / LEVEL_RATES.len();
        let seasonal = self.seasonals(ts_ms);
        let expected = self.forecasters[best].level + seasonal[mode];
        let scale = self.forecasters[best]
            .mean_abs_error
            .max(self.scale_floor(expected));
        let surprise = ((value - expected).abs() / scale).min(1e9);
        // Tails that have learnt from too few surprises (one a point from `tail_after` on) judge
        // nothing yet.
        let judging = self.points >= s.warmup_points / 2
            && self.points >= s.tail_after.saturating_add(s.tail_min_learned);
        let point_evidence = if !judging {
            0.0
        } else {
            // No single point may bring more than a sure alarm to the accumulated evidence.
            self.error_tail.evidence(surprise).min(s.full_evidence)
        };

        // Drift: the recent mean of the slow forecaster's signed errors (in the chosen seasonal
        // mode), in units of its mean absolute error. Ramps, level shifts and a missing seasonal
        // cycle all push it away from 0, though each point alone may look ordinary. The errors
        // are clipped first (`drift_clip`), so a burst of a few huge values is not a drift,
        // except on a sparse series, where several close together are read unclipped
        // (`drift_burst_count`).
        let slow = mode * LEVEL_RATES.len() + SLOW;
        let drift = self.drift_inputs(value, &seasonal);
        let sparse = s.drift_burst_sparse <= 0.0
            || self.forecasters[slow].mean_abs_error < s.drift_burst_sparse * self.spread_floor();
        let burst =
            s.drift_burst_count > 0.0 && self.drift_large[mode] >= s.drift_burst_count && sparse;
        let (mean, input) = if burst {
            (self.drift_raw[mode], drift.raw[mode])
        } else {
            (self.drift_mean[mode], drift.clipped[mode])
        };
        let drift_now = mean + s.change_short_rate * (input - mean);
        let slow_scale = self.forecasters[slow]
            .mean_abs_error
            .max(self.scale_floor(expected));
        // An average of `1/rate`-ish independent errors varies `sqrt(rate / (2 − rate))` times as
        // much as one error does: dividing by that puts the drift on the point surprise's scale.
        let averaging = (s.change_short_rate / (2.0 - s.change_short_rate)).sqrt();
        let shift = (drift_now.abs() / (slow_scale * averaging)).min(1e9);
        let change_evidence = if !judging {
            0.0
        } else {
            self.change_tail.evidence(shift)
        };

        let miss_evidence = self.miss_evidence(ts_ms, value, &seasonal);

        // Sustained drift accumulates like repeated surprises do.
        let accumulating = point_evidence
            .max((s.change_weight * change_evidence).min(s.full_evidence))
            .max(miss_evidence.min(s.full_evidence));
        self.accumulated = (self.accumulated + accumulating - s.drift).max(0.0);

        let range = self.max_seen - self.min_seen;
        // The forecast noise a record must beat: while the stream is young, the larger of the
        // error scale (still growing from its slow start) and a right-started mean of the errors.
        let noise = if self.points < s.range_young {
            scale.max(self.range_noise_scale)
        } else {
            scale
        };
        let outside = (value - self.max_seen).max(self.min_seen - value) - s.range_noise * noise;
        let range_evidence = if range > 0.0 && outside > 0.0 && self.points >= s.range_after {
            s.range_evidence * (outside / (s.range_tolerance * range)).min(1.0)
        } else {
            0.0
        };

        // Contextual novelty: how many of the newest sub-patterns of quantised levels are new,
        // judged against how many usually are.
        let novelty = self.context.observe(value);
        let context_evidence = self.context_likelihood.observe(
            novelty,
            s.context_short_rate,
            s.context_long_rate,
            s.context_learning,
        );

        // Each part's score; the largest is the point's.
        let mut parts = [0.0; part::COUNT];
        if self.points >= s.warmup_points {
            let full = s.full_evidence;
            parts[part::POINT] = point_evidence / full;
            parts[part::ACCUMULATED] = self.accumulated / full;
            parts[part::CONTEXT] = (s.context_weight * context_evidence).min(full) / full;
            parts[part::DRIFT] = s.change_weight * change_evidence / full;
            parts[part::MISS] = miss_evidence / full;
            parts[part::RANGE] = range_evidence / full;
        }
        if let Some(coarse) = &mut self.coarse {
            self.block_sum += value;
            self.block_count += 1;
            if self.block_count >= s.coarse_block {
                let mean = self.block_sum / f64::from(self.block_count);
                self.block_sum = 0.0;
                self.block_count = 0;
                let c = coarse.observe(ts_ms, mean).score * s.coarse_weight;
                if self.points >= s.warmup_points {
                    parts[part::COARSE] = c;
                }
            }
        }

        if let Some(r) = self.art.as_mut().and_then(|art| art.observe(value)) {
            if r.novel && self.points >= s.art_learning.max(s.warmup_points) {
                // How rare founding a category has been lately (never below 1 in 10⁴), and how
                // far this window is from every known shape.
                let rare = -self.art_novel_rate.max(1e-4).ln() + r.distance.ln();
                parts[part::RESONANCE] = s.art_weight * (rare / s.art_evidence).min(1.0);
            }
            self.art_windows = self.art_windows.saturating_add(1);
            let rate = (1.0 / f64::from(self.art_windows)).max(s.art_rate);
            let novel = if r.novel { 1.0 } else { 0.0 };
            self.art_novel_rate += rate * (novel - self.art_novel_rate);
        }

        if value == self.last_value {
            self.run = self.run.saturating_add(1);
        } else {
            self.longest_run = self.longest_run.max(self.run);
            self.run = 1;
        }
        self.last_value = value;
        let stuck_at = (s.stuck_factor * f64::from(self.longest_run.max(1))).floor() as u32 + 1;
        if s.stuck_score > 0.0
            && self.points >= s.art_learning.max(s.warmup_points)
            && self.run == stuck_at.max(s.stuck_min)
        {
            parts[part::FLATLINE] = s.stuck_score;
        }

        // A part that has kept raising the alarm on this series needs more (`recall_weight`).
        for (k, p) in part::RECALLED.into_iter().enumerate() {
            let alarms = (self.part_alarms[k] - s.recall_free).max(0.0);
            parts[p] /= 1.0 + s.recall_weight * alarms;
        }
        // The part that gives the score (the first of equals).
        let mut top = part::POINT;
        for p in 1..part::COUNT {
            if parts[p].clamp(0.0, 1.0) > parts[top].clamp(0.0, 1.0) {
                top = p;
            }
        }
        let mut score = parts[top].clamp(0.0, 1.0);

        // Surprises measured by a scale still far too small are not learnt (`tail_after`).
        if self.points >= s.tail_after {
            self.error_tail
                .learn(surprise, s.tail_rate, s.tail_prior_weight);
            self.change_tail
                .learn(shift, s.tail_rate, s.tail_prior_weight);
        }
        if self.points < s.range_young {
            let error = (value - expected).abs();
            let rate = (1.0 / f64::from(self.points.saturating_add(1))).max(s.error_rate);
            let clipped = if self.range_noise_scale > 0.0 {
                error.min(s.error_clip * self.range_noise_scale)
            } else {
                error
            };
            self.range_noise_scale += rate * (clipped - self.range_noise_scale);
        }
        self.long_moments.update(value, s.change_long_rate);
        self.min_seen = self.min_seen.min(value);
        self.max_seen = self.max_seen.max(value);
        if s.age_weight > 0.0 && self.points > s.age_points {
            let ratio = f64::from(self.points) / f64::from(s.age_points.max(1));
            score /= 1.0 + s.age_weight * ratio.min(AGE_MAX_RATIO).ln();
        }
        for n in &mut self.part_alarms {
            *n *= 1.0 - s.recall_rate;
        }
        let bar = self.alarm_bar();
        if self.muted_for > 0 {
            self.muted_for -= 1;
            score *= s.mute_factor;
        } else if score >= s.alarm_score && score < bar {
            score *= s.mute_factor;
        } else if score >= s.alarm_score {
            if let Some(k) = part::RECALLED.iter().position(|&p| p == top) {
                self.part_alarms[k] += 1.0;
            }
            self.muted_for = s.mute_points;
            self.accumulated = 0.0;
            if miss_evidence > 0.0 {
                self.miss_latched = s.mute_points;
            }
            self.since_alarm = 0;
            self.last_alarm_score = score;
        }
        self.since_alarm = self.since_alarm.saturating_add(1);

        self.learn(ts_ms, value, &drift, &seasonal);
        self.points = self.points.saturating_add(1);
        self.last_ts_ms = ts_ms;
        // A mean absolute error is about 0.8 σ for normal noise; ±3.2 of them covers ~99 %.
        let band = 3.2 * scale;
        Observation {
            score,
            expected,
            expected_low: expected - band,
            expected_high: expected + band,
            part: if parts[top] > 0.0 {
                part::NAMES[top]
            } else {
                ""
            },
        }
    }

    fn memory_bytes(&self) -> usize {
        std::mem::size_of_val(self)
            + self.coarse.as_ref().map_or(0, |c| c.memory_bytes())
            + self.art.as_ref().map_or(0, |a| std::mem::size_of_val(&**a))
    }
}
