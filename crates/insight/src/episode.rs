//! Anomaly episodes: consecutive anomalous points grouped into one event with a start, an end,
//! the range the model expected and a severity, which is what a chart marks and a page lists.

use crate::Observation;

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Episode {
    pub start_ms: i64,
    /// The last anomalous point.
    pub end_ms: i64,
    /// The most anomalous point, its value and the band the model expected there.
    pub peak_ms: i64,
    pub peak_value: f64,
    pub expected_low: f64,
    pub expected_high: f64,
    /// The highest score in the episode, in [0, 1].
    pub severity: f64,
    /// Points scored at or above the closing score.
    pub points: u32,
}

/// Opens an episode when a score reaches `open_score`, and closes it after `quiet_points`
/// consecutive points below `close_score`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct EpisodeTracker {
    open_score: f64,
    close_score: f64,
    quiet_points: u32,
    /// Also keep an episode open while values stay outside the band the model expected, even
    /// when the detector's scores have dropped (it mutes itself after an alarm).
    #[serde(default)]
    while_outside_band: bool,
    open: Option<Episode>,
    quiet: u32,
}

impl EpisodeTracker {
    pub fn new(open_score: f64, close_score: f64, quiet_points: u32) -> Self {
        EpisodeTracker {
            open_score,
            close_score: close_score.min(open_score),
            quiet_points,
            while_outside_band: false,
            open: None,
            quiet: 0,
        }
    }

    /// Keeps an open episode going while values stay outside the expected band.
    pub fn while_outside_band(mut self) -> Self {
        self.while_outside_band = true;
        self
    }

    /// The episode in progress, if any.
    pub fn open_episode(&self) -> Option<&Episode> {
        self.open.as_ref()
    }

    /// Feeds one scored point; returns the episode it closed, if any.
    pub fn push(&mut self, ts_ms: i64, value: f64, observation: &Observation) -> Option<Episode> {
        let score = observation.score;
        match &mut self.open {
            None => {
                if score >= self.open_score {
                    self.quiet = 0;
                    self.open = Some(Episode {
                        start_ms: ts_ms,
                        end_ms: ts_ms,
                        peak_ms: ts_ms,
                        peak_value: value,
                        expected_low: observation.expected_low,
                        expected_high: observation.expected_high,
                        severity: score,
                        points: 1,
                    });
                }
                None
            }
            Some(episode) => {
                let outside = self.while_outside_band
                    && (value < observation.expected_low || value > observation.expected_high);
                if score >= self.close_score || outside {
                    self.quiet = 0;
                    episode.end_ms = ts_ms;
                    episode.points += 1;
                    if score > episode.severity {
                        episode.severity = score;
                        episode.peak_ms = ts_ms;
                        episode.peak_value = value;
                        episode.expected_low = observation.expected_low;
                        episode.expected_high = observation.expected_high;
                    }
                    None
                } else {
                    self.quiet += 1;
                    if self.quiet >= self.quiet_points {
                        self.quiet = 0;
                        self.open.take()
                    } else {
                        None
                    }
                }
            }
        }
    }
}

impl Default for EpisodeTracker {
    /// Tuned to the default detector: its alarm level opens, a third of it keeps open, and an
    /// hour of 5-minute points closes.
    fn default() -> Self {
        EpisodeTracker::new(0.3, 0.1, 12)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(score: f64) -> Observation {
        Observation {
            score,
            expected: 10.0,
            expected_low: 9.0,
            expected_high: 11.0,
            part: "",
        }
    }

    #[test]
    fn with_the_band_option_an_episode_lasts_while_values_are_outside_it() {
        let mut t = EpisodeTracker::new(0.5, 0.2, 2).while_outside_band();
        // Scores fall at once (a muted detector) but values stay above the band until point 4.
        let points = [
            (10.0, 0.0),
            (30.0, 0.9),
            (30.0, 0.0),
            (30.0, 0.0),
            (10.0, 0.0),
            (10.0, 0.0),
        ];
        let closed: Vec<Episode> = points
            .iter()
            .enumerate()
            .filter_map(|(i, &(v, s))| t.push(i as i64, v, &obs(s)))
            .collect();
        assert_eq!(closed.len(), 1);
        assert_eq!(
            (closed[0].start_ms, closed[0].end_ms, closed[0].points),
            (1, 3, 3)
        );
    }

    #[test]
    fn groups_anomalous_points_and_closes_after_quiet() {
        let mut t = EpisodeTracker::new(0.5, 0.2, 2);
        let scores = [0.0, 0.6, 0.3, 0.9, 0.1, 0.1, 0.0];
        let closed: Vec<Episode> = scores
            .iter()
            .enumerate()
            .filter_map(|(i, &s)| t.push(i as i64, i as f64, &obs(s)))
            .collect();
        assert_eq!(closed.len(), 1);
        let e = &closed[0];
        assert_eq!((e.start_ms, e.end_ms, e.peak_ms, e.points), (1, 3, 3, 3));
        assert_eq!(e.severity, 0.9);
        assert!(t.open_episode().is_none());
    }
}
