//! Learned baselines, per executable: during a learning period each executable's syscall-class
//! mix and per-interval rates, its network peers (port and address group) and the executables it
//! starts are recorded; afterwards anything outside them is an anomaly with a score and what was
//! expected. Rates are judged robustly (median and median absolute deviation), so a few busy
//! intervals while learning do not widen the range much.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;

use model::security::{BaselineDeparture, ConnectionEvent, SecurityEvent, Severity, SyscallClass};
pub use model::security::{Direction, Peer};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BaselineConfig {
    /// How long an executable is watched, from its first sight, before departures are reported.
    pub learning_period_secs: u64,
    /// A rate is a burst when it is this many robust deviations above the learned median.
    pub burst_threshold: f64,
    /// …and at least this many syscalls a second (a quiet process going from 1/s to 20/s is not
    /// worth an alert).
    pub burst_min_rate: f64,
    /// Rates are not judged for an executable learned from fewer intervals than this.
    pub min_rate_samples: usize,
    /// Per class, at most this many interval rates are kept while learning (the latest ones).
    pub max_rate_samples: usize,
    /// Peers are grouped by address block: IPv4 /24, IPv6 /64 by default.
    pub ipv4_group_bits: u8,
    pub ipv6_group_bits: u8,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        BaselineConfig {
            learning_period_secs: 3600,
            burst_threshold: 8.0,
            burst_min_rate: 100.0,
            min_rate_samples: 10,
            max_rate_samples: 512,
            ipv4_group_bits: 24,
            ipv6_group_bits: 64,
        }
    }
}

/// One syscall class's rates per interval, for one executable.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RateProfile {
    /// Syscalls of this class seen while learning; 0 means the class is new if seen later.
    pub total: u64,
    /// Intervals that contributed a rate.
    pub intervals: u64,
    /// Per-second rates of the latest intervals; dropped when learning ends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<f64>,
    pub median: f64,
    /// Median absolute deviation of the rates.
    pub mad: f64,
    pub max: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExeBaseline {
    pub first_seen_unix_nano: u64,
    /// When learning ended; `None` while learning.
    pub learned_unix_nano: Option<u64>,
    pub syscalls: BTreeMap<SyscallClass, RateProfile>,
    pub peers: BTreeSet<Peer>,
    pub children: BTreeSet<String>,
}

/// A departure from a learned baseline.
#[derive(Clone, Debug, PartialEq)]
pub struct Anomaly {
    /// `new_child`, `new_peer`, `new_syscall_class` or `syscall_burst`.
    pub name: &'static str,
    pub severity: Severity,
    /// 0..1, higher is more unusual.
    pub score: f64,
    pub expected: String,
    pub seen: String,
    pub summary: String,
    /// Exactly what was outside the baseline (what [`Baselines::accept`] adds).
    pub departure: BaselineDeparture,
}

/// Every executable's baseline.
#[derive(Clone, Debug, Default)]
pub struct Baselines {
    config: BaselineConfig,
    executables: BTreeMap<String, ExeBaseline>,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    version: u32,
    executables: BTreeMap<String, ExeBaseline>,
}

#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("expected baselines readable at {path}, {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("expected baselines as oxeye's JSON (version 1), found {0}")]
    Format(String),
}

impl Baselines {
    pub fn new(config: BaselineConfig) -> Self {
        Baselines {
            config,
            executables: BTreeMap::new(),
        }
    }

    pub fn config(&self) -> &BaselineConfig {
        &self.config
    }

    pub fn get(&self, exe: &str) -> Option<&ExeBaseline> {
        self.executables.get(exe)
    }

    pub fn executables(&self) -> impl Iterator<Item = (&String, &ExeBaseline)> {
        self.executables.iter()
    }

    /// Forgets what was learned about `exe`; it learns again from its next sight.
    pub fn reset(&mut self, exe: &str) -> bool {
        self.executables.remove(exe).is_some()
    }

    /// Takes what an anomaly found as normal ("accept as normal"): adds exactly that child,
    /// peer or syscall class to the executable's baseline, or widens the class's rate range to
    /// hold the burst's rate, and keeps everything else. `false` when the executable has no
    /// baseline.
    pub fn accept(&mut self, departure: &BaselineDeparture) -> bool {
        let threshold = self.config.burst_threshold.max(f64::MIN_POSITIVE);
        let min_samples = self.config.min_rate_samples as u64;
        let Some(base) = self.executables.get_mut(departure.exe()) else {
            return false;
        };
        match departure {
            BaselineDeparture::NewChild { child, .. } => {
                base.children.insert(child.clone());
            }
            BaselineDeparture::NewPeer { peer, .. } => {
                base.peers.insert(peer.clone());
            }
            BaselineDeparture::NewSyscallClass { class, rate, .. } => {
                let profile = base.syscalls.entry(*class).or_default();
                if profile.total == 0 {
                    // One interval's rate is all that is known: it becomes the range, and
                    // bursts far above it are still reported.
                    let rate = rate.max(0.0);
                    profile.total = rate.ceil().max(1.0) as u64;
                    profile.intervals = profile.intervals.max(min_samples);
                    profile.median = rate;
                    profile.mad = 0.0;
                    profile.max = rate;
                }
            }
            BaselineDeparture::SyscallBurst { class, rate, .. } => {
                let profile = base.syscalls.entry(*class).or_default();
                profile.total = profile.total.max(1);
                profile.max = profile.max.max(*rate);
                // Widen the deviation so that `rate` is within `threshold` deviations.
                let needed = (rate - profile.median) / threshold / 1.4826;
                if needed > profile.mad {
                    profile.mad = needed * (1.0 + 1e-9);
                }
            }
        }
        true
    }

    /// Whether `exe` is (still) learning at `now`; ends the learning period when it is over.
    pub fn is_learning(&mut self, exe: &str, now: u64) -> bool {
        let period = self
            .config
            .learning_period_secs
            .saturating_mul(1_000_000_000);
        let base = self.entry(exe, now);
        if base.learned_unix_nano.is_some() {
            return false;
        }
        if now.saturating_sub(base.first_seen_unix_nano) < period {
            return true;
        }
        base.learned_unix_nano = Some(now);
        for profile in base.syscalls.values_mut() {
            finish(profile);
        }
        false
    }

    fn entry(&mut self, exe: &str, now: u64) -> &mut ExeBaseline {
        self.executables
            .entry(exe.to_string())
            .or_insert_with(|| ExeBaseline {
                first_seen_unix_nano: now,
                ..Default::default()
            })
    }

    /// Judges one event of a process running `exe`; `parent_exe` is its parent's, for execs.
    pub fn observe_event(
        &mut self,
        event: &SecurityEvent,
        exe: &str,
        parent_exe: Option<&str>,
    ) -> Vec<Anomaly> {
        let now = event.time_unix_nano();
        match event {
            SecurityEvent::Exec(_) => {
                // The child's own clock starts at its first exec.
                self.entry(exe, now);
                let Some(parent) = parent_exe else {
                    return Vec::new();
                };
                if self.is_learning(parent, now) {
                    self.entry(parent, now).children.insert(exe.to_string());
                    return Vec::new();
                }
                let base = self.entry(parent, now);
                if base.children.contains(exe) {
                    return Vec::new();
                }
                let shell = matches!(
                    exe.rsplit('/').next(),
                    Some("sh" | "bash" | "dash" | "zsh" | "ash" | "ksh" | "busybox")
                );
                vec![Anomaly {
                    name: "new_child",
                    severity: if shell {
                        Severity::High
                    } else {
                        Severity::Medium
                    },
                    score: if shell { 1.0 } else { 0.8 },
                    expected: format!("children: {}", list(&base.children)),
                    seen: exe.to_string(),
                    summary: format!(
                        "{parent} started {exe}, which it never started while learned"
                    ),
                    departure: BaselineDeparture::NewChild {
                        exe: parent.to_string(),
                        child: exe.to_string(),
                    },
                }]
            }
            SecurityEvent::Connect(c) | SecurityEvent::Accept(c) => {
                if c.result < 0 && c.result != -115 {
                    return Vec::new();
                }
                let peer = self.peer(event, c);
                if self.is_learning(exe, now) {
                    self.entry(exe, now).peers.insert(peer);
                    return Vec::new();
                }
                let base = self.entry(exe, now);
                if base.peers.contains(&peer) {
                    return Vec::new();
                }
                let port_known = base
                    .peers
                    .iter()
                    .any(|p| p.direction == peer.direction && p.port == peer.port);
                let remote = c.remote.ip().to_canonical();
                vec![Anomaly {
                    name: "new_peer",
                    severity: if port_known {
                        Severity::Low
                    } else {
                        Severity::Medium
                    },
                    score: if port_known { 0.5 } else { 0.9 },
                    expected: format!("peers: {}", list(&base.peers)),
                    seen: format!("{peer} ({remote})"),
                    summary: format!(
                        "{exe} {} {peer} ({remote}), not among its learned peers",
                        match peer.direction {
                            Direction::Outbound => "connected over",
                            Direction::Inbound => "accepted",
                        }
                    ),
                    departure: BaselineDeparture::NewPeer {
                        exe: exe.to_string(),
                        peer: peer.clone(),
                    },
                }]
            }
            _ => Vec::new(),
        }
    }

    fn peer(&self, event: &SecurityEvent, c: &ConnectionEvent) -> Peer {
        let (direction, port) = match event {
            SecurityEvent::Accept(_) => (Direction::Inbound, c.local.port()),
            _ => (Direction::Outbound, c.remote.port()),
        };
        Peer {
            direction,
            protocol: c.protocol.name(),
            port,
            group: group(
                c.remote.ip(),
                self.config.ipv4_group_bits,
                self.config.ipv6_group_bits,
            ),
        }
    }

    /// Judges one interval of a process running `exe`: `deltas[class]` syscalls in `seconds`.
    pub fn observe_rates(
        &mut self,
        exe: &str,
        now: u64,
        seconds: f64,
        deltas: &[u64; 14],
    ) -> Vec<Anomaly> {
        if seconds <= 0.0 {
            return Vec::new();
        }
        let learning = self.is_learning(exe, now);
        let config = self.config.clone();
        let base = self.entry(exe, now);
        if learning {
            for class in SyscallClass::ALL {
                let delta = deltas[class as usize];
                let profile = base.syscalls.entry(class).or_default();
                profile.total += delta;
                profile.intervals += 1;
                if profile.samples.len() >= config.max_rate_samples.max(1) {
                    profile.samples.remove(0);
                }
                profile.samples.push(delta as f64 / seconds);
            }
            return Vec::new();
        }
        let mut out = Vec::new();
        for class in SyscallClass::ALL {
            let delta = deltas[class as usize];
            if delta == 0 {
                continue;
            }
            let rate = delta as f64 / seconds;
            let profile = base.syscalls.get(&class);
            let learned: Vec<&str> = base
                .syscalls
                .iter()
                .filter(|(_, p)| p.total > 0)
                .map(|(c, _)| c.name())
                .collect();
            match profile {
                Some(p) if p.total > 0 => {
                    if p.intervals < config.min_rate_samples as u64 {
                        continue;
                    }
                    let scale = (1.4826 * p.mad).max(0.05 * p.median).max(1.0);
                    let z = (rate - p.median) / scale;
                    if z > config.burst_threshold && rate >= config.burst_min_rate {
                        out.push(Anomaly {
                            name: "syscall_burst",
                            severity: Severity::Medium,
                            score: 1.0 - (-z / config.burst_threshold).exp(),
                            expected: format!(
                                "{}: median {:.1}/s, up to {:.1}/s (learned max {:.1}/s)",
                                class.name(),
                                p.median,
                                p.median + config.burst_threshold * scale,
                                p.max
                            ),
                            seen: format!("{}: {rate:.1}/s", class.name()),
                            summary: format!(
                                "{exe} made {rate:.0} {} syscalls/s, {z:.0} deviations above its median {:.1}/s",
                                class.name(),
                                p.median
                            ),
                            departure: BaselineDeparture::SyscallBurst {
                                exe: exe.to_string(),
                                class,
                                rate,
                            },
                        });
                    }
                }
                _ => {
                    let sensitive = matches!(
                        class,
                        SyscallClass::Kernel | SyscallClass::Debug | SyscallClass::Privilege
                    );
                    out.push(Anomaly {
                        name: "new_syscall_class",
                        severity: if sensitive {
                            Severity::High
                        } else {
                            Severity::Medium
                        },
                        score: if sensitive { 1.0 } else { 0.8 },
                        expected: format!("syscall classes: [{}]", learned.join(", ")),
                        seen: format!("{}: {delta} calls", class.name()),
                        summary: format!(
                            "{exe} made {} syscalls, a class it never used while learned",
                            class.name()
                        ),
                        departure: BaselineDeparture::NewSyscallClass {
                            exe: exe.to_string(),
                            class,
                            rate,
                        },
                    });
                }
            }
        }
        out
    }

    /// The baselines as JSON (what [`Self::save`] writes).
    pub fn to_json(&self) -> String {
        let stored = Stored {
            version: 1,
            executables: self.executables.clone(),
        };
        // Plain data (strings, numbers, maps with string-like keys) always serializes.
        serde_json::to_string_pretty(&stored).unwrap_or_default()
    }

    pub fn from_json(config: BaselineConfig, text: &str) -> Result<Self, BaselineError> {
        let stored: Stored =
            serde_json::from_str(text).map_err(|e| BaselineError::Format(e.to_string()))?;
        if stored.version != 1 {
            return Err(BaselineError::Format(format!("version {}", stored.version)));
        }
        Ok(Baselines {
            config,
            executables: stored.executables,
        })
    }

    /// Writes the baselines to `path` atomically (a temporary file renamed over it).
    pub fn save(&self, path: &Path) -> Result<(), BaselineError> {
        let io = |source| BaselineError::Io {
            path: path.display().to_string(),
            source,
        };
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, self.to_json()).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Reads baselines saved by [`Self::save`]; a missing file is an empty set.
    pub fn load(config: BaselineConfig, path: &Path) -> Result<Self, BaselineError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_json(config, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::new(config)),
            Err(source) => Err(BaselineError::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }
}

fn finish(profile: &mut RateProfile) {
    let mut samples = std::mem::take(&mut profile.samples);
    if samples.is_empty() {
        return;
    }
    samples.sort_by(f64::total_cmp);
    profile.median = median(&samples);
    profile.max = samples.last().copied().unwrap_or(0.0);
    let mut deviations: Vec<f64> = samples.iter().map(|r| (r - profile.median).abs()).collect();
    deviations.sort_by(f64::total_cmp);
    profile.mad = median(&deviations);
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// The address block `ip` belongs to, e.g. `203.0.113.0/24`.
pub fn group(ip: IpAddr, v4_bits: u8, v6_bits: u8) -> String {
    match ip.to_canonical() {
        IpAddr::V4(a) => {
            let bits = v4_bits.min(32);
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            format!("{}/{bits}", std::net::Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let bits = v6_bits.min(128);
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            format!("{}/{bits}", std::net::Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

fn list<T: std::fmt::Display>(items: &BTreeSet<T>) -> String {
    const SHOWN: usize = 8;
    let mut parts: Vec<String> = items.iter().take(SHOWN).map(ToString::to_string).collect();
    if items.len() > SHOWN {
        parts.push(format!("… {} more", items.len() - SHOWN));
    }
    format!("[{}]", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_grouped_by_address_block() {
        assert_eq!(
            group("203.0.113.77".parse().unwrap(), 24, 64),
            "203.0.113.0/24"
        );
        assert_eq!(
            group("2001:db8:1:2:3:4:5:6".parse().unwrap(), 24, 64),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            group("::ffff:10.1.2.3".parse().unwrap(), 16, 64),
            "10.1.0.0/16"
        );
    }

    #[test]
    fn the_range_is_robust_to_a_few_busy_intervals() {
        let mut p = RateProfile {
            samples: vec![10.0, 12.0, 11.0, 9.0, 10.0, 500.0, 11.0],
            ..Default::default()
        };
        finish(&mut p);
        assert_eq!(p.median, 11.0);
        assert_eq!(p.mad, 1.0);
        assert_eq!(p.max, 500.0);
        assert!(p.samples.is_empty());
    }
}
