//! The profiler's overhead budget: oxeye (the whole process, plus the kernel time of its BPF
//! programs) should use at most a share of the host's CPU (default 1 %). When a measurement
//! interval goes over, the sampling rates step down one level: first the base rate of the quiet
//! (not boosted) processes, halving down to a quarter of it (19 → 9 → 4 Hz), then the boosted
//! rate, halving while it stays above the base (99 → 49 → 24 → 12 → 6 Hz). When two intervals
//! in a row used less than half the budget, they step back up one level, boosted rate first.
//!
//! Pure: readings come in, rates come out, so the policy is tested with synthetic readings.

use serde_json::{Value, json};

/// Intervals in a row under half the budget before a rate goes back up.
const CALM_INTERVALS: u32 = 2;

/// Cumulative CPU counters at one moment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpuReading {
    /// Monotonic wall-clock time, nanoseconds.
    pub at_ns: u64,
    /// oxeye's own user + system time, nanoseconds.
    pub own_cpu_ns: u64,
    /// Run time of oxeye's BPF programs, nanoseconds (0 when the kernel does not time them).
    pub bpf_ns: u64,
}

/// Samples per second per CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rates {
    pub base_hz: u32,
    pub boost_hz: u32,
}

/// The levels from the configured rates down: base first, then boost.
fn ladder(configured: Rates) -> Vec<Rates> {
    let mut levels = vec![configured];
    let floor = (configured.base_hz / 4).max(1);
    let mut base = configured.base_hz;
    while base / 2 >= floor && base / 2 >= 1 {
        base /= 2;
        levels.push(Rates {
            base_hz: base,
            boost_hz: configured.boost_hz,
        });
    }
    let mut boost = configured.boost_hz;
    while boost / 2 > base {
        boost /= 2;
        levels.push(Rates {
            base_hz: base,
            boost_hz: boost,
        });
    }
    levels
}

pub struct BudgetGovernor {
    /// Share of the host's CPU (all CPUs) oxeye may use: 0.01 is 1 %.
    share: f64,
    cpus: u32,
    ladder: Vec<Rates>,
    level: usize,
    last: Option<CpuReading>,
    calm: u32,
    /// The share used in the last interval, and of it the BPF programs' share.
    usage: Option<f64>,
    bpf_usage: Option<f64>,
    /// How many times the rates were lowered since start.
    lowered: u64,
    /// Intervals measured so far; the first is not judged: it holds oxeye's start, when every
    /// process on the host is symbolized at first sight.
    intervals: u64,
}

impl BudgetGovernor {
    pub fn new(share: f64, cpus: u32, configured: Rates) -> Self {
        Self {
            share,
            cpus: cpus.max(1),
            ladder: ladder(configured),
            level: 0,
            last: None,
            calm: 0,
            usage: None,
            bpf_usage: None,
            lowered: 0,
            intervals: 0,
        }
    }

    pub fn rates(&self) -> Rates {
        self.ladder[self.level]
    }

    /// Takes a reading; returns the new rates when they change.
    pub fn observe(&mut self, now: CpuReading) -> Option<Rates> {
        let last = self.last.replace(now)?;
        let wall = now.at_ns.saturating_sub(last.at_ns);
        if wall == 0 {
            return None;
        }
        let used =
            now.own_cpu_ns.saturating_sub(last.own_cpu_ns) + now.bpf_ns.saturating_sub(last.bpf_ns);
        let capacity = wall as f64 * f64::from(self.cpus);
        let usage = used as f64 / capacity;
        self.usage = Some(usage);
        self.bpf_usage = Some(now.bpf_ns.saturating_sub(last.bpf_ns) as f64 / capacity);
        self.intervals += 1;
        if self.intervals == 1 {
            return None;
        }
        if usage > self.share {
            self.calm = 0;
            if self.level + 1 < self.ladder.len() {
                self.level += 1;
                self.lowered += 1;
                let r = self.rates();
                tracing::warn!(
                    usage_pct = usage * 100.0,
                    budget_pct = self.share * 100.0,
                    base_hz = r.base_hz,
                    boost_hz = r.boost_hz,
                    "profiler over its CPU budget: sampling rate lowered ({})",
                    self.state()
                );
                return Some(r);
            }
            return None;
        }
        if usage < self.share / 2.0 && self.level > 0 {
            self.calm += 1;
            if self.calm >= CALM_INTERVALS {
                self.calm = 0;
                self.level -= 1;
                let r = self.rates();
                tracing::info!(
                    usage_pct = usage * 100.0,
                    base_hz = r.base_hz,
                    boost_hz = r.boost_hz,
                    "profiler back under its CPU budget: sampling rate raised"
                );
                return Some(r);
            }
        } else {
            self.calm = 0;
        }
        None
    }

    /// In words, what the budget is doing to the rates.
    fn state(&self) -> String {
        let (now, configured) = (self.rates(), self.ladder[0]);
        if self.level == 0 {
            return "within budget".into();
        }
        let mut s = format!(
            "over budget: quiet processes at {} Hz instead of {}",
            now.base_hz, configured.base_hz
        );
        if now.boost_hz != configured.boost_hz {
            s.push_str(&format!(
                ", boosted ones at {} Hz instead of {}",
                now.boost_hz, configured.boost_hz
            ));
        }
        s
    }

    pub fn status(&self) -> Value {
        let (now, configured) = (self.rates(), self.ladder[0]);
        json!({
            "budget_share": self.share,
            "usage_share": self.usage,
            "bpf_share": self.bpf_usage,
            "state": self.state(),
            "lowered": self.level > 0,
            "times_lowered": self.lowered,
            "base_hz": now.base_hz,
            "boost_hz": now.boost_hz,
            "configured_base_hz": configured.base_hz,
            "configured_boost_hz": configured.boost_hz,
        })
    }
}

/// Parses `1%`, `0.5%` or a fraction (`0.01`) into a share of the host's CPU.
pub fn parse_share(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let v = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| format!("expected a share of the host's CPU such as 1% or 0.01, found {s:?}"))?;
    if !(v > 0.0 && v <= 1.0) {
        return Err(format!(
            "expected a share above 0% and at most 100%, found {s:?}"
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    /// A reading after `secs` seconds with oxeye having used `own` and its programs `bpf`
    /// CPU-seconds in all.
    fn at(secs: u64, own: f64, bpf: f64) -> CpuReading {
        CpuReading {
            at_ns: secs * SECOND,
            own_cpu_ns: (own * SECOND as f64) as u64,
            bpf_ns: (bpf * SECOND as f64) as u64,
        }
    }

    fn rates(base_hz: u32, boost_hz: u32) -> Rates {
        Rates { base_hz, boost_hz }
    }

    #[test]
    fn the_ladder_lowers_quiet_processes_before_boosted_ones() {
        assert_eq!(
            ladder(rates(19, 99)),
            vec![
                rates(19, 99),
                rates(9, 99),
                rates(4, 99),
                rates(4, 49),
                rates(4, 24),
                rates(4, 12),
                rates(4, 6),
            ]
        );
        assert_eq!(ladder(rates(1, 2)), vec![rates(1, 2)]);
    }

    #[test]
    fn over_budget_lowers_the_quiet_rate_first_and_calm_restores_the_boost_first() {
        // 2 CPUs, 1 %: 0.2 CPU-seconds per 10 s interval.
        let mut g = BudgetGovernor::new(0.01, 2, rates(19, 99));
        assert_eq!(
            g.observe(at(0, 0.0, 0.0)),
            None,
            "the first reading is a start"
        );
        // oxeye's start (every process symbolized at first sight) is not judged: 5 %.
        assert_eq!(g.observe(at(10, 1.0, 0.0)), None);
        // From here on, times and CPU as if the start had not been.
        let at = |secs: u64, own: f64, bpf: f64| at(secs + 10, own + 1.0, bpf);
        assert_eq!(g.observe(at(10, 0.1, 0.05)), None, "0.75 %: within");
        assert_eq!(g.status()["bpf_share"], 0.0025);
        // 0.3 CPU-s of oxeye plus 0.1 of BPF in 10 s on 2 CPUs: 2 %.
        assert_eq!(g.observe(at(20, 0.4, 0.15)), Some(rates(9, 99)));
        assert_eq!(
            g.status()["state"],
            "over budget: quiet processes at 9 Hz instead of 19"
        );
        assert_eq!(g.observe(at(30, 0.7, 0.25)), Some(rates(4, 99)));
        // Only now, with the quiet processes at their floor, does the boost give way.
        assert_eq!(g.observe(at(40, 1.0, 0.35)), Some(rates(4, 49)));
        assert_eq!(g.status()["times_lowered"], 3);
        // Between half the budget and the budget: hold.
        assert_eq!(g.observe(at(50, 1.15, 0.35)), None);
        assert_eq!(g.rates(), rates(4, 49));
        // Two calm intervals (0.25 %) raise one level, the boosted rate first.
        assert_eq!(g.observe(at(60, 1.2, 0.35)), None);
        assert_eq!(g.observe(at(70, 1.25, 0.35)), Some(rates(4, 99)));
        assert_eq!(g.observe(at(80, 1.25, 0.35)), None);
        assert_eq!(g.observe(at(90, 1.25, 0.35)), Some(rates(9, 99)));
        // A busy interval in between starts the count again.
        assert_eq!(g.observe(at(100, 1.25, 0.35)), None);
        assert_eq!(g.observe(at(110, 1.4, 0.35)), None);
        assert_eq!(g.observe(at(120, 1.4, 0.35)), None);
        assert_eq!(g.observe(at(130, 1.4, 0.35)), Some(rates(19, 99)));
        assert_eq!(g.status()["state"], "within budget");
        assert_eq!(g.status()["lowered"], false);
    }

    #[test]
    fn at_the_floor_it_stays_there_and_says_so() {
        let mut g = BudgetGovernor::new(0.001, 1, rates(19, 99));
        g.observe(at(0, 0.0, 0.0));
        for i in 1..21u64 {
            g.observe(at(i * 10, i as f64, 0.0));
        }
        assert_eq!(g.rates(), rates(4, 6));
        assert_eq!(
            g.status()["state"],
            "over budget: quiet processes at 4 Hz instead of 19, boosted ones at 6 Hz instead of 99"
        );
    }

    #[test]
    fn shares_parse_as_percentages_or_fractions() {
        assert_eq!(parse_share("1%"), Ok(0.01));
        assert_eq!(parse_share("0.5 %"), Ok(0.005));
        assert_eq!(parse_share("0.02"), Ok(0.02));
        assert!(parse_share("0%").is_err());
        assert!(parse_share("150%").is_err());
        assert!(parse_share("lots").unwrap_err().contains("found \"lots\""));
    }
}
