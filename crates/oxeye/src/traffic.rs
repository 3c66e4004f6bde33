//! High traffic per service, learned from its spans: when a service's request rate rises above
//! its baseline (or a configured threshold), the profiler samples that service's processes at the
//! boosted rate for a while and labels those samples `high_traffic`.
//!
//! A request is a span of kind SERVER or CONSUMER, or a root span. Requests are counted per
//! service in 10 s buckets; each closed bucket's rate (requests per second) feeds an
//! exponentially weighted mean and variance (about the last five minutes). A bucket is *high*
//! when the rate is at least the configured threshold, or, once the baseline has seen its
//! warm-up (three minutes), when it is at least `min_rate`, at least `factor` × the mean, and
//! more than `z` standard deviations above it. The first high bucket opens a window that lasts
//! `boost_for`; every further high bucket extends it to `boost_for` after that bucket. While high,
//! the baseline learns at a quarter of its usual pace, so a burst does not teach itself to be
//! normal at once but a lasting change of level does become the new normal.
//!
//! The monitor is fed by the store's sink, like [`crate::profiler::TracedProcesses`], and read by
//! the profiling agent once a second. It reads no clock itself: times are passed in.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// A process is boosted for its service while it sent spans this recently.
const PID_FRESH_FOR: Duration = Duration::from_secs(600);
/// Services that sent nothing for this long are forgotten, baseline and all.
const SERVICE_IDLE_FOR: Duration = Duration::from_secs(3600);
/// Finished windows kept for the status endpoint (the store keeps the labelled samples).
const RECENT_WINDOWS: usize = 50;
/// At most this many processes are boosted at once (the kernel map's size).
pub const MAX_BOOSTED: usize = 1024;

#[derive(Clone, Debug)]
pub struct TrafficConfig {
    /// Requests are counted per bucket of this length.
    pub bucket: Duration,
    /// Weight of the newest bucket in the mean and variance (2 / (30 + 1): about five minutes).
    pub alpha: f64,
    /// Buckets seen before the baseline may call anything high.
    pub warmup_buckets: u32,
    /// How many standard deviations above the mean a high bucket is.
    pub z: f64,
    /// How many times the mean a high bucket is at least.
    pub factor: f64,
    /// Requests per second below which nothing is high (a service going from 0.1 to 0.5/s is
    /// not under load).
    pub min_rate: f64,
    /// Requests per second at which a bucket is high whatever the baseline says.
    pub threshold: Option<f64>,
    /// How long a window lasts after its last high bucket.
    pub boost_for: Duration,
}

impl Default for TrafficConfig {
    fn default() -> Self {
        Self {
            bucket: Duration::from_secs(10),
            alpha: 2.0 / 31.0,
            warmup_buckets: 18,
            z: 3.0,
            factor: 1.5,
            min_rate: 1.0,
            threshold: None,
            boost_for: Duration::from_secs(300),
        }
    }
}

/// Exponentially weighted mean and variance of a service's request rate.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Baseline {
    pub mean: f64,
    pub variance: f64,
    pub buckets: u32,
}

impl Baseline {
    fn learn(&mut self, rate: f64, alpha: f64) {
        if self.buckets == 0 {
            self.mean = rate;
            self.variance = 0.0;
        } else {
            // West's incremental form: the variance uses the deviation from the old mean.
            let d = rate - self.mean;
            self.mean += alpha * d;
            self.variance = (1.0 - alpha) * (self.variance + alpha * d * d);
        }
        self.buckets = self.buckets.saturating_add(1);
    }

    fn sd(&self) -> f64 {
        self.variance.max(0.0).sqrt()
    }
}

/// A period of high traffic of one service.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    pub service: String,
    pub start: SystemTime,
    /// Set when the window closed.
    pub end: Option<SystemTime>,
    /// The highest bucket rate in the window, requests per second.
    pub peak_rate: f64,
    /// The baseline mean when the window opened.
    pub baseline_rate: f64,
    /// Open until then; extended by every high bucket.
    until: Instant,
}

#[derive(Debug)]
struct ServiceTraffic {
    baseline: Baseline,
    /// Requests in the bucket being counted.
    requests: u64,
    pids: HashMap<u32, Instant>,
    last_span: Instant,
    window: Option<Window>,
}

#[derive(Debug)]
struct Inner {
    origin: Option<Instant>,
    /// Index of the bucket being counted, from `origin`.
    bucket: u64,
    services: HashMap<String, ServiceTraffic>,
    finished: VecDeque<Window>,
}

/// Request rates per service, their baselines, and the high-traffic windows open now.
#[derive(Clone)]
pub struct TrafficMonitor {
    config: Arc<TrafficConfig>,
    host_name: Arc<str>,
    inner: Arc<Mutex<Inner>>,
}

/// What the profiler should do now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BoostPlan {
    /// Processes to sample at the boosted rate, with the service they are boosted for.
    pub boosted: HashMap<u32, String>,
    /// Every local process that sent spans recently, with the service its spans name.
    pub services: HashMap<u32, String>,
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn window_json(w: &Window) -> Value {
    json!({
        "service": w.service,
        "start_ms": unix_ms(w.start),
        "end_ms": w.end.map(unix_ms),
        "peak_rate": w.peak_rate,
        "baseline_rate": w.baseline_rate,
    })
}

impl TrafficMonitor {
    pub fn new(host_name: &str, config: TrafficConfig) -> Self {
        Self {
            config: Arc::new(config),
            host_name: Arc::from(host_name),
            inner: Arc::new(Mutex::new(Inner {
                origin: None,
                bucket: 0,
                services: HashMap::new(),
                finished: VecDeque::new(),
            })),
        }
    }

    #[cfg(test)]
    fn config(&self) -> &TrafficConfig {
        &self.config
    }

    /// Counts the requests among a batch's spans, per service, and notes which local process
    /// sent them. Resources naming another host are someone else's processes and traffic.
    /// `groups`: the batch's [`model::Batch::span_groups`].
    pub fn note(&self, groups: &[(&model::Resource, usize)], now: Instant) {
        if groups.is_empty() {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        for &(resource, requests) in groups {
            if resource
                .get("host.name")
                .is_some_and(|h| h != &*self.host_name)
            {
                continue;
            }
            let Some(service) = resource.get("service.name") else {
                continue;
            };
            let requests = requests as u64;
            let pid = resource
                .get("process.pid")
                .and_then(|p| p.parse::<u32>().ok());
            let entry = inner
                .services
                .entry(service.to_string())
                .or_insert_with(|| ServiceTraffic {
                    baseline: Baseline::default(),
                    requests: 0,
                    pids: HashMap::new(),
                    last_span: now,
                    window: None,
                });
            entry.requests += requests;
            entry.last_span = now;
            if let Some(pid) = pid {
                entry.pids.insert(pid, now);
            }
        }
    }

    /// Closes the buckets that ended by `now`, updates baselines and windows, and says which
    /// processes to boost. `wall` is the wall-clock time matching `now`, for the windows' times.
    pub fn tick(&self, now: Instant, wall: SystemTime) -> BoostPlan {
        let Ok(mut inner) = self.inner.lock() else {
            return BoostPlan::default();
        };
        let inner = &mut *inner;
        let origin = *inner.origin.get_or_insert(now);
        let bucket_secs = self.config.bucket.as_secs_f64().max(0.001);
        let index = (now.saturating_duration_since(origin).as_secs_f64() / bucket_secs) as u64;
        // Buckets nobody counted in (the agent was stalled) close with no requests, at most a
        // warm-up's worth so a long stall costs little.
        let closing = index.saturating_sub(inner.bucket);
        for n in 0..closing.min(u64::from(self.config.warmup_buckets) + 1) {
            let first = n == 0;
            for (service, traffic) in inner.services.iter_mut() {
                let requests = if first {
                    std::mem::take(&mut traffic.requests)
                } else {
                    0
                };
                self.close_bucket(service, traffic, requests as f64 / bucket_secs, now, wall);
            }
        }
        inner.bucket = index;
        // Windows whose time is up close now.
        for traffic in inner.services.values_mut() {
            if traffic.window.as_ref().is_some_and(|w| now >= w.until)
                && let Some(mut w) = traffic.window.take()
            {
                w.end = Some(wall);
                tracing::info!(
                    service = %w.service,
                    peak_rate = w.peak_rate,
                    baseline_rate = w.baseline_rate,
                    "traffic back to normal: profiling at the base rate again"
                );
                inner.finished.push_back(w);
                if inner.finished.len() > RECENT_WINDOWS {
                    inner.finished.pop_front();
                }
            }
            traffic
                .pids
                .retain(|_, t| now.saturating_duration_since(*t) <= PID_FRESH_FOR);
        }
        inner.services.retain(|_, t| {
            t.window.is_some() || now.saturating_duration_since(t.last_span) <= SERVICE_IDLE_FOR
        });
        let mut plan = BoostPlan::default();
        for (service, traffic) in &inner.services {
            for &pid in traffic.pids.keys() {
                plan.services.insert(pid, service.clone());
                if traffic.window.is_some() && plan.boosted.len() < MAX_BOOSTED {
                    plan.boosted.insert(pid, service.clone());
                }
            }
        }
        plan
    }

    fn close_bucket(
        &self,
        service: &str,
        t: &mut ServiceTraffic,
        rate: f64,
        now: Instant,
        wall: SystemTime,
    ) {
        let c = &*self.config;
        let b = &t.baseline;
        let learned = b.buckets >= c.warmup_buckets
            && rate >= c.min_rate
            && rate >= c.factor * b.mean
            && rate - b.mean > c.z * b.sd();
        let high = learned || c.threshold.is_some_and(|th| rate >= th);
        if high {
            match &mut t.window {
                Some(w) => {
                    w.peak_rate = w.peak_rate.max(rate);
                    w.until = now + c.boost_for;
                }
                None => {
                    tracing::info!(
                        service,
                        rate,
                        baseline_rate = b.mean,
                        processes = t.pids.len(),
                        "high traffic: profiling the service's processes at the boosted rate"
                    );
                    t.window = Some(Window {
                        service: service.to_string(),
                        start: wall,
                        end: None,
                        peak_rate: rate,
                        baseline_rate: b.mean,
                        until: now + c.boost_for,
                    });
                }
            }
            t.baseline.learn(rate, c.alpha / 4.0);
        } else {
            t.baseline.learn(rate, c.alpha);
        }
    }

    /// The baselines, open windows and recent windows, for `/api/v1/profiles/status`.
    pub fn status(&self) -> Value {
        let Ok(inner) = self.inner.lock() else {
            return json!({});
        };
        let mut services: Vec<Value> = inner
            .services
            .iter()
            .map(|(name, t)| {
                json!({
                    "service": name,
                    "baseline_rate": t.baseline.mean,
                    "baseline_sd": t.baseline.sd(),
                    "buckets": t.baseline.buckets,
                    "warm": t.baseline.buckets >= self.config.warmup_buckets,
                    "pids": t.pids.len(),
                    "high_traffic": t.window.as_ref().map(window_json),
                })
            })
            .collect();
        services.sort_by(|a, b| a["service"].as_str().cmp(&b["service"].as_str()));
        json!({
            "bucket_s": self.config.bucket.as_secs_f64(),
            "warmup_buckets": self.config.warmup_buckets,
            "z": self.config.z,
            "factor": self.config.factor,
            "min_rate": self.config.min_rate,
            "threshold": self.config.threshold,
            "boost_for_s": self.config.boost_for.as_secs_f64(),
            "services": services,
            "recent_windows": inner.finished.iter().rev().map(window_json).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{Batch, Group, Resource, Scope, Span, SpanId, StatusCode, TraceId};

    /// `n` spans of `kind` (roots when `root`) from `service` in process `pid` on `host`.
    use model::SpanKind;

    fn spans(service: &str, pid: u32, host: &str, n: usize, kind: SpanKind, root: bool) -> Batch {
        let span = Span {
            trace_id: TraceId([1; 16]),
            span_id: SpanId([2; 8]),
            parent_span_id: (!root).then_some(SpanId([3; 8])),
            trace_state: String::new(),
            name: "GET /".into(),
            kind,
            start_unix_nano: 0,
            end_unix_nano: 1,
            attributes: Vec::new(),
            events: Vec::new(),
            links: Vec::new(),
            status_code: StatusCode::Unset,
            status_message: String::new(),
        };
        Batch::Spans(vec![Group {
            resource: Arc::new(Resource {
                attributes: vec![
                    ("service.name".into(), service.into()),
                    ("process.pid".into(), pid.to_string()),
                    ("host.name".into(), host.into()),
                ],
                schema_url: String::new(),
            }),
            scope: Arc::new(Scope::default()),
            items: vec![span; n],
        }])
    }

    /// Drives a monitor bucket by bucket: `rate(i)` requests per second in bucket `i`.
    struct Clock {
        t0: Instant,
        w0: SystemTime,
        bucket: Duration,
        i: u32,
    }

    impl Clock {
        fn new(m: &TrafficMonitor) -> Self {
            let c = Clock {
                t0: Instant::now(),
                w0: SystemTime::now(),
                bucket: m.config().bucket,
                i: 0,
            };
            m.tick(c.t0, c.w0);
            c
        }

        /// One bucket with `per_s` SERVER spans a second from `svc`/`pid`, then its close.
        fn bucket(&mut self, m: &TrafficMonitor, svc: &str, pid: u32, per_s: usize) -> BoostPlan {
            let at = self.t0 + self.bucket * self.i;
            let n = per_s * self.bucket.as_secs() as usize;
            m.note(
                &spans(svc, pid, "here", n, SpanKind::Server, false).span_groups(),
                at,
            );
            self.i += 1;
            m.tick(
                self.t0 + self.bucket * self.i,
                self.w0 + self.bucket * self.i,
            )
        }
    }

    #[test]
    fn a_burst_above_the_learned_baseline_boosts_the_services_processes_then_ends() {
        let m = TrafficMonitor::new("here", TrafficConfig::default());
        let mut clock = Clock::new(&m);
        // Warm-up at about 5 requests a second, with some noise.
        for i in 0..30 {
            let plan = clock.bucket(&m, "shop", 42, 4 + i % 3);
            assert!(plan.boosted.is_empty(), "nothing is high in steady traffic");
            assert_eq!(plan.services.get(&42).map(String::as_str), Some("shop"));
        }
        let plan = clock.bucket(&m, "shop", 42, 40);
        assert_eq!(plan.boosted.get(&42).map(String::as_str), Some("shop"));
        let status = m.status();
        let window = &status["services"][0]["high_traffic"];
        assert_eq!(window["peak_rate"], 40.0);
        let baseline = window["baseline_rate"].as_f64().unwrap_or_default();
        assert!((4.0..6.0).contains(&baseline), "{baseline}");
        // A higher bucket raises the peak; the window lasts 5 minutes after the last high one.
        clock.bucket(&m, "shop", 42, 60);
        for _ in 0..29 {
            let plan = clock.bucket(&m, "shop", 42, 5);
            assert!(plan.boosted.contains_key(&42), "still within boost_for");
        }
        let plan = clock.bucket(&m, "shop", 42, 5);
        assert!(
            plan.boosted.is_empty(),
            "boost_for after the last high bucket"
        );
        let status = m.status();
        assert_eq!(status["recent_windows"][0]["peak_rate"], 60.0);
        assert!(status["recent_windows"][0]["end_ms"].is_i64());
        assert!(status["services"][0]["high_traffic"].is_null());
    }

    #[test]
    fn nothing_is_high_during_warm_up_or_below_the_minimum_rate() {
        let m = TrafficMonitor::new("here", TrafficConfig::default());
        let mut clock = Clock::new(&m);
        for _ in 0..5 {
            clock.bucket(&m, "shop", 1, 2);
        }
        assert!(
            clock.bucket(&m, "shop", 1, 50).boosted.is_empty(),
            "warm-up"
        );
        // From nothing to less than one request a second is not load.
        let quiet = TrafficMonitor::new("here", TrafficConfig::default());
        let mut c2 = Clock::new(&quiet);
        for _ in 0..30 {
            c2.bucket(&quiet, "quiet", 1, 0);
        }
        let at = c2.t0 + c2.bucket * c2.i;
        quiet.note(
            &spans("quiet", 1, "here", 5, SpanKind::Server, false).span_groups(),
            at,
        );
        c2.i += 1;
        let plan = quiet.tick(c2.t0 + c2.bucket * c2.i, c2.w0);
        assert!(plan.boosted.is_empty(), "0.5/s is under min_rate");
    }

    #[test]
    fn a_configured_threshold_needs_no_warm_up() {
        let m = TrafficMonitor::new(
            "here",
            TrafficConfig {
                threshold: Some(20.0),
                ..TrafficConfig::default()
            },
        );
        let mut clock = Clock::new(&m);
        assert!(clock.bucket(&m, "api", 7, 10).boosted.is_empty());
        assert!(clock.bucket(&m, "api", 7, 20).boosted.contains_key(&7));
    }

    #[test]
    fn only_requests_from_this_host_count() {
        let m = TrafficMonitor::new(
            "here",
            TrafficConfig {
                threshold: Some(1.0),
                ..TrafficConfig::default()
            },
        );
        let t0 = Instant::now();
        let w0 = SystemTime::now();
        m.tick(t0, w0);
        // Internal child spans are not requests; another host's spans are not ours.
        m.note(
            &spans("a", 1, "here", 100, SpanKind::Internal, false).span_groups(),
            t0,
        );
        m.note(
            &spans("b", 2, "elsewhere", 100, SpanKind::Server, true).span_groups(),
            t0,
        );
        m.note(
            &spans("c", 3, "here", 100, SpanKind::Internal, true).span_groups(),
            t0,
        );
        m.note(
            &spans("d", 4, "here", 100, SpanKind::Consumer, false).span_groups(),
            t0,
        );
        let plan = m.tick(t0 + Duration::from_secs(10), w0);
        let mut boosted: Vec<u32> = plan.boosted.keys().copied().collect();
        boosted.sort();
        assert_eq!(boosted, vec![3, 4], "roots and consumers are requests");
        assert!(!plan.services.contains_key(&2));
    }
}
