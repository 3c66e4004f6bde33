//! Security events → alerts. [`Sensor`] keeps a process table from exec/exit events, runs the
//! rules (`rules`) and the learned baselines (`baseline`) on each event and on each interval's
//! syscall counts, and passes what it raises through dedup and a rate limit (`limit`). The
//! alerts leave as OCSF, CEF, syslog or Splunk HEC (`format`) through sinks with a durable queue
//! and retry (`sink`).
//!
//! Nothing here loads BPF: the binary converts `ebpf`'s records to `model::security` events.

pub mod baseline;
pub mod format;
pub mod limit;
pub mod process_table;
pub mod rules;
pub mod sink;
#[doc(hidden)]
pub mod testing;

use std::collections::HashMap;

use model::security::{
    Alert, AlertSource, AnomalyDetail, SecurityEvent, SecurityProcess, SyscallCounts,
};
use serde::{Deserialize, Serialize};

pub use baseline::{BaselineConfig, Baselines};
pub use limit::{AlertLimiter, LimitConfig, LimitStats};
pub use process_table::{ProcessInfo, ProcessTable};
pub use rules::{RuleErrors, RuleSet};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SensorConfig {
    /// The host name put on alerts the sensor makes itself (rate anomalies, reports).
    pub host: String,
    pub baseline: BaselineConfig,
    pub limits: LimitConfig,
    /// How long an exited process stays in the process table.
    pub exit_grace_secs: u64,
}

impl Default for SensorConfig {
    fn default() -> Self {
        SensorConfig {
            host: "localhost".into(),
            baseline: BaselineConfig::default(),
            limits: LimitConfig::default(),
            exit_grace_secs: 30,
        }
    }
}

/// The sensor: feed it events with [`Sensor::observe`] and syscall counts with [`Sensor::tick`]
/// (about once a second); both return the alerts to send.
#[derive(Debug)]
pub struct Sensor {
    rules: RuleSet,
    processes: ProcessTable,
    baselines: Baselines,
    limiter: AlertLimiter,
    /// pid → (time, cumulative counts) at the last tick.
    last_counts: HashMap<u32, (u64, [u64; 14])>,
    host: String,
    sequence: u64,
}

impl Sensor {
    pub fn new(config: SensorConfig, rules: RuleSet) -> Sensor {
        Sensor {
            rules,
            processes: ProcessTable::new(config.exit_grace_secs.saturating_mul(1_000_000_000)),
            baselines: Baselines::new(config.baseline.clone()),
            limiter: AlertLimiter::new(config.limits.clone(), &config.host),
            last_counts: HashMap::new(),
            host: config.host,
            sequence: 0,
        }
    }

    /// Replaces the baselines (e.g. with those loaded from disk at start).
    pub fn with_baselines(mut self, baselines: Baselines) -> Sensor {
        self.baselines = baselines;
        self
    }

    pub fn baselines(&self) -> &Baselines {
        &self.baselines
    }

    pub fn baselines_mut(&mut self) -> &mut Baselines {
        &mut self.baselines
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// The process table, e.g. to seed it with processes that started before the sensor.
    pub fn processes_mut(&mut self) -> &mut ProcessTable {
        &mut self.processes
    }

    pub fn processes(&self) -> &ProcessTable {
        &self.processes
    }

    pub fn limit_stats(&self) -> LimitStats {
        self.limiter.stats()
    }

    /// Judges one event; returns the alerts to send now.
    pub fn observe(&mut self, event: &SecurityEvent) -> Vec<Alert> {
        let context = event.process();
        let pid = context.pid;
        let now = context.time_unix_nano;
        // Only privilege changes look at the process as it was before the event
        // (`privilege.previous_uid`); cloning it for every event was a tenth of the agent's CPU.
        let previous = match event {
            SecurityEvent::PrivilegeChange(_) => self.processes.get(pid).cloned(),
            _ => None,
        };
        if matches!(event, SecurityEvent::Exec(_)) {
            // Counts after an exec belong to the new image.
            self.last_counts.remove(&pid);
        }
        self.processes.observe(event);
        let mut raised = Vec::new();
        let parent_exe;
        {
            let ctx = rules::Context {
                event,
                process: self.processes.get(pid),
                previous: previous.as_ref(),
                ancestors: self.processes.ancestors(pid),
            };
            // The baselines judge a new child by its parent's: only execs need it.
            parent_exe = match event {
                SecurityEvent::Exec(_) => ctx.ancestors.first().and_then(|p| p.exe.clone()),
                _ => None,
            };
            for rule in self.rules.matches(&ctx) {
                raised.push((
                    AlertSource::Rule {
                        name: rule.id.clone(),
                    },
                    rule.severity,
                    rule.render_summary(&ctx),
                    None,
                ));
            }
        }
        let exe = self.processes.get(pid).and_then(|p| p.exe.clone());
        if let Some(exe) = &exe {
            for a in self
                .baselines
                .observe_event(event, exe, parent_exe.as_deref())
            {
                raised.push((
                    AlertSource::Anomaly {
                        name: a.name.into(),
                    },
                    a.severity,
                    a.summary,
                    Some(AnomalyDetail {
                        score: a.score,
                        expected: a.expected,
                        seen: a.seen,
                        departure: Some(a.departure),
                    }),
                ));
            }
        }
        let mut out = Vec::new();
        for (source, severity, summary, anomaly) in raised {
            let alert = Alert {
                id: self.next_id(now),
                time_unix_nano: now,
                severity,
                source,
                summary,
                events: vec![event.clone()],
                process: context.clone(),
                exe: exe.clone(),
                anomaly,
                count: 1,
                last_time_unix_nano: now,
            };
            out.extend(self.limiter.admit(alert, now));
        }
        out
    }

    /// Judges one interval's syscall counts (cumulative per process, as the kernel sensor reports
    /// them) at `now`; also releases merged alerts that became due and forgets exited processes.
    pub fn tick(&mut self, now: u64, counts: &[SyscallCounts]) -> Vec<Alert> {
        let mut out = Vec::new();
        let mut seen = HashMap::with_capacity(counts.len());
        for c in counts {
            if let Some((then, before)) = self.last_counts.get(&c.pid).copied()
                && now > then
            {
                let mut deltas = [0u64; 14];
                for (i, d) in deltas.iter_mut().enumerate() {
                    *d = c.counts[i].saturating_sub(before[i]);
                }
                let seconds = (now - then) as f64 / 1e9;
                let info = self.processes.get(c.pid).cloned();
                if let Some(exe) = info.as_ref().and_then(|p| p.exe.clone()) {
                    for a in self.baselines.observe_rates(&exe, now, seconds, &deltas) {
                        let process = process_context(info.as_ref(), c.pid, now, &self.host);
                        let alert = Alert {
                            id: self.next_id(now),
                            time_unix_nano: now,
                            severity: a.severity,
                            source: AlertSource::Anomaly {
                                name: a.name.into(),
                            },
                            summary: a.summary,
                            events: Vec::new(),
                            process,
                            exe: Some(exe.clone()),
                            anomaly: Some(AnomalyDetail {
                                score: a.score,
                                expected: a.expected,
                                seen: a.seen,
                                departure: Some(a.departure),
                            }),
                            count: 1,
                            last_time_unix_nano: now,
                        };
                        out.extend(self.limiter.admit(alert, now));
                    }
                }
            }
            if !c.exited {
                seen.insert(c.pid, (now, c.counts));
            }
        }
        self.last_counts = seen;
        self.processes.expire(now);
        out.extend(self.limiter.flush(now));
        out
    }

    fn next_id(&mut self, now: u64) -> String {
        self.sequence += 1;
        format!("{}-{now:x}-{}", self.host, self.sequence)
    }
}

/// An event-like description of a process known only from the table.
fn process_context(info: Option<&ProcessInfo>, pid: u32, now: u64, host: &str) -> SecurityProcess {
    let mut p = SecurityProcess {
        time_unix_nano: now,
        pid,
        tid: pid,
        host: host.to_string(),
        ..Default::default()
    };
    if let Some(i) = info {
        p.ppid = i.ppid;
        p.uid = i.uid;
        p.gid = i.gid;
        p.euid = i.euid;
        p.comm = i.comm.clone();
        p.cgroup_id = i.cgroup_id;
        p.container_id = i.container_id.clone();
        p.service_name = i.service_name.clone();
    }
    p
}
