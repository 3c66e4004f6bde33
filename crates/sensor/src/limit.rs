//! Keeps an alert storm from flooding a SIEM: repeats of the same alert (same rule or anomaly,
//! same process, same executable) within a window are merged into one follow-up alert with a
//! count, and a global token bucket caps the rate of everything that leaves. What the bucket
//! drops is counted and reported in one alert once there is room again.

use std::collections::HashMap;

use model::security::{Alert, AlertSource, SecurityProcess, Severity};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitConfig {
    /// Repeats within this many seconds of an alert are merged into one.
    pub dedup_window_secs: u64,
    /// The sustained rate of alerts let through, per second.
    pub max_alerts_per_sec: f64,
    /// How many alerts may pass at once before the rate applies.
    pub burst: u32,
}

impl Default for LimitConfig {
    fn default() -> Self {
        LimitConfig {
            dedup_window_secs: 60,
            max_alerts_per_sec: 5.0,
            burst: 50,
        }
    }
}

type Key = (String, u32, Option<String>);

#[derive(Debug)]
struct Window {
    opened: u64,
    first: Alert,
    repeats: u64,
    first_repeat: u64,
    last_repeat: u64,
}

/// Counts of what the limiter held back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimitStats {
    /// Alerts merged into a follow-up instead of sent on their own.
    pub merged: u64,
    /// Alerts dropped by the rate limit.
    pub dropped: u64,
}

#[derive(Debug)]
pub struct AlertLimiter {
    config: LimitConfig,
    windows: HashMap<Key, Window>,
    tokens: f64,
    refilled_at: Option<u64>,
    dropped_unreported: u64,
    stats: LimitStats,
    host: String,
}

impl AlertLimiter {
    pub fn new(config: LimitConfig, host: &str) -> Self {
        AlertLimiter {
            tokens: f64::from(config.burst),
            config,
            windows: HashMap::new(),
            refilled_at: None,
            dropped_unreported: 0,
            stats: LimitStats::default(),
            host: host.to_string(),
        }
    }

    pub fn stats(&self) -> LimitStats {
        self.stats
    }

    /// Lets `alert` through, merges it into an open window, or drops it; also releases whatever
    /// became due at `now`.
    pub fn admit(&mut self, alert: Alert, now: u64) -> Vec<Alert> {
        let mut out = self.due(now);
        let key = (
            alert.source.name().to_string(),
            alert.process.pid,
            alert.exe.clone(),
        );
        if let Some(w) = self.windows.get_mut(&key) {
            if w.repeats == 0 {
                w.first_repeat = alert.time_unix_nano;
            }
            w.repeats += alert.count;
            w.last_repeat = alert.time_unix_nano.max(w.last_repeat);
            self.stats.merged += alert.count;
            return self.pass(out, now);
        }
        self.windows.insert(
            key,
            Window {
                opened: now,
                first: alert.clone(),
                repeats: 0,
                first_repeat: 0,
                last_repeat: 0,
            },
        );
        out.push(alert);
        self.pass(out, now)
    }

    /// Releases the merged follow-ups of windows that closed by `now`, and the report of what
    /// the rate limit dropped.
    pub fn flush(&mut self, now: u64) -> Vec<Alert> {
        let out = self.due(now);
        self.pass(out, now)
    }

    fn due(&mut self, now: u64) -> Vec<Alert> {
        let window = self.config.dedup_window_secs.saturating_mul(1_000_000_000);
        let closed: Vec<Key> = self
            .windows
            .iter()
            .filter(|(_, w)| now.saturating_sub(w.opened) >= window)
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::new();
        for key in closed {
            let Some(w) = self.windows.remove(&key) else {
                continue;
            };
            if w.repeats == 0 {
                continue;
            }
            let mut merged = w.first;
            merged.id = format!("{}-r{}", merged.id, w.repeats);
            merged.count = w.repeats;
            merged.time_unix_nano = w.first_repeat;
            merged.last_time_unix_nano = w.last_repeat;
            merged.summary = format!(
                "{} (repeated {} more times within {} s)",
                merged.summary, w.repeats, self.config.dedup_window_secs
            );
            out.push(merged);
        }
        out.sort_by_key(|a| a.time_unix_nano);
        out
    }

    fn refill(&mut self, now: u64) {
        if let Some(then) = self.refilled_at {
            let seconds = now.saturating_sub(then) as f64 / 1e9;
            self.tokens = (self.tokens + seconds * self.config.max_alerts_per_sec)
                .min(f64::from(self.config.burst));
        }
        self.refilled_at = Some(now.max(self.refilled_at.unwrap_or(0)));
    }

    fn pass(&mut self, alerts: Vec<Alert>, now: u64) -> Vec<Alert> {
        self.refill(now);
        let mut out = Vec::new();
        if self.dropped_unreported > 0 && self.tokens >= 1.0 && alerts.is_empty() {
            self.tokens -= 1.0;
            out.push(self.dropped_report(now));
        }
        for alert in alerts {
            if self.tokens >= 1.0 {
                self.tokens -= 1.0;
                out.push(alert);
            } else {
                self.stats.dropped += alert.count;
                self.dropped_unreported += alert.count;
            }
        }
        out
    }

    fn dropped_report(&mut self, now: u64) -> Alert {
        let n = std::mem::take(&mut self.dropped_unreported);
        Alert {
            id: format!("{}-{now:x}-ratelimit", self.host),
            time_unix_nano: now,
            severity: Severity::Medium,
            source: AlertSource::Rule {
                name: "oxeye.rate_limited".into(),
            },
            summary: format!(
                "{n} alerts dropped by the rate limit ({} a second, bursts of {})",
                self.config.max_alerts_per_sec, self.config.burst
            ),
            events: Vec::new(),
            process: SecurityProcess {
                time_unix_nano: now,
                host: self.host.clone(),
                ..Default::default()
            },
            exe: None,
            anomaly: None,
            count: n,
            last_time_unix_nano: now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(rule: &str, pid: u32, time: u64) -> Alert {
        Alert {
            id: format!("h-{time}"),
            time_unix_nano: time,
            severity: Severity::High,
            source: AlertSource::Rule { name: rule.into() },
            summary: "s".into(),
            events: vec![],
            process: SecurityProcess {
                pid,
                host: "h".into(),
                ..Default::default()
            },
            exe: Some("/bin/x".into()),
            anomaly: None,
            count: 1,
            last_time_unix_nano: time,
        }
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn repeats_within_the_window_become_one_follow_up_with_a_count() {
        let mut limiter = AlertLimiter::new(
            LimitConfig {
                dedup_window_secs: 10,
                max_alerts_per_sec: 100.0,
                burst: 100,
            },
            "h",
        );
        assert_eq!(limiter.admit(alert("r", 1, S), S).len(), 1);
        for t in 2..7 {
            assert!(limiter.admit(alert("r", 1, t * S), t * S).is_empty());
        }
        // Another process or another rule is not a repeat.
        assert_eq!(limiter.admit(alert("r", 2, 7 * S), 7 * S).len(), 1);
        assert_eq!(limiter.admit(alert("q", 1, 7 * S), 7 * S).len(), 1);
        assert!(limiter.flush(10 * S).is_empty(), "window still open");
        let follow_up = limiter.flush(11 * S);
        assert_eq!(follow_up.len(), 1);
        assert_eq!(follow_up[0].count, 5);
        assert_eq!(
            (
                follow_up[0].time_unix_nano,
                follow_up[0].last_time_unix_nano
            ),
            (2 * S, 6 * S)
        );
        assert!(follow_up[0].summary.contains("repeated 5 more times"));
        // The window closed: the next one is news again.
        assert_eq!(limiter.admit(alert("r", 1, 12 * S), 12 * S).len(), 1);
        assert_eq!(limiter.stats().merged, 5);
    }

    #[test]
    fn a_storm_is_capped_by_the_token_bucket_and_the_drop_is_reported() {
        let mut limiter = AlertLimiter::new(
            LimitConfig {
                dedup_window_secs: 0,
                max_alerts_per_sec: 2.0,
                burst: 5,
            },
            "h",
        );
        let passed: usize = (0..1000)
            .map(|pid| limiter.admit(alert("r", pid, S), S).len())
            .sum();
        assert_eq!(passed, 5);
        assert_eq!(limiter.stats().dropped, 995);
        // Two seconds later there is room for the report and one more alert.
        let report = limiter.flush(3 * S);
        assert_eq!(report.len(), 1);
        assert_eq!(report[0].source.name(), "oxeye.rate_limited");
        assert_eq!(report[0].count, 995);
        assert!(limiter.flush(3 * S).is_empty(), "reported once");
    }
}
