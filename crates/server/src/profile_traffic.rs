//! `/api/v1/profiles/status`, `/api/v1/profiles/high_traffic` (the windows in which a service's
//! processes were sampled at the boosted rate, each compared with its normal traffic) and
//! `/api/v1/profiles/traces` (the traces whose spans ran a function of a flame graph).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use profile::ProfileKind;
use profile::bottleneck;
use serde_json::{Value, json};
use store::profile_join::{SampleAt, SpanAt};
use store::profiles::ProfileFilter;
use store::read::TimeRange;

use crate::ServerState;
use crate::api::{ApiError, Params, bad, num, param, range};
use crate::profiles::{bottlenecks_json, weights};

/// The label the profiler gives samples taken at the boosted rate under high traffic.
const HIGH_TRAFFIC: &str = "high_traffic";
/// Labelled samples are grouped in buckets of this length, as the profiler counts requests.
const BUCKET_NS: i64 = 10_000_000_000;
/// Labelled buckets this close together belong to one window (a boosted process that was idle
/// for a while has no samples, but its window went on).
const MERGE_GAP_NS: i64 = 60_000_000_000;
/// Normal traffic: the unlabelled samples and requests of this long before a window.
const NORMAL_BEFORE_NS: i64 = 600_000_000_000;
const MAX_WINDOWS: usize = 100;
/// Spans that started this long before the range may still have run in it.
const SPAN_LOOKBACK_NS: i64 = 600_000_000_000;

pub async fn status(State(s): State<ServerState>) -> Json<Value> {
    let v = s.profiler.get();
    if v.is_null() {
        return Json(json!({
            "running": false,
            "note": "the profiler is not running (see the profiler line `oxeye up` printed, or `oxeye doctor`)",
        }));
    }
    Json(v)
}

/// A run of labelled buckets: [start, end) and the samples in it.
#[derive(Debug, PartialEq)]
struct Window {
    start_ns: i64,
    end_ns: i64,
    samples: u64,
}

fn windows(buckets: &[(i64, u64)]) -> Vec<Window> {
    let mut out: Vec<Window> = Vec::new();
    for &(b, n) in buckets {
        match out.last_mut() {
            Some(w) if b - w.end_ns <= MERGE_GAP_NS => {
                w.end_ns = b + BUCKET_NS;
                w.samples += n;
            }
            _ => out.push(Window {
                start_ns: b,
                end_ns: b + BUCKET_NS,
                samples: n,
            }),
        }
    }
    out
}

/// Requests per second: the busiest bucket of the window, and the mean over [from, that).
/// A window's boost begins when a high bucket closes, so the bucket just before its first
/// labelled samples is part of it.
fn rates(requests: &[(i64, u64)], from: i64, start: i64, end: i64) -> (f64, f64) {
    let secs = BUCKET_NS as f64 / 1e9;
    let start = start - BUCKET_NS;
    let peak = requests
        .iter()
        .filter(|(b, _)| (start..end).contains(b))
        .map(|(_, n)| *n as f64 / secs)
        .fold(0.0, f64::max);
    let before: u64 = requests
        .iter()
        .filter(|(b, _)| (from..start).contains(b))
        .map(|(_, n)| n)
        .sum();
    let span = ((start - from) as f64 / 1e9).max(1e-9);
    (peak, before as f64 / span)
}

/// Per service, the high-traffic windows in the range: when, how busy (peak request rate and
/// the mean rate of the ten minutes before), how many samples, and what grew against normal
/// traffic (the unlabelled samples of the ten minutes before), with the diff's URL.
pub async fn high_traffic(
    State(s): State<ServerState>,
    Query(p): Params,
) -> Result<Json<Value>, ApiError> {
    let r = range(&p)?;
    let limit = num::<usize>(&p, "limit", "a number of functions")?
        .unwrap_or(5)
        .clamp(1, 50);
    let services = match param(&p, "service") {
        Some(svc) => vec![svc.to_string()],
        None => s.store.labelled_services(HIGH_TRAFFIC, r).await?,
    };
    let ms = |ns: i64| ns.div_euclid(1_000_000);
    let mut out = Vec::new();
    for service in services {
        let buckets = s
            .store
            .labelled_buckets(&service, HIGH_TRAFFIC, r, BUCKET_NS)
            .await?;
        let found = windows(&buckets);
        let requests = s
            .store
            .request_buckets(
                &service,
                TimeRange {
                    start_ns: r.start_ns - NORMAL_BEFORE_NS,
                    end_ns: r.end_ns + BUCKET_NS,
                },
                BUCKET_NS,
            )
            .await?;
        // Newest first: the one a user is looking for.
        for w in found.iter().rev().take(MAX_WINDOWS) {
            let normal = TimeRange {
                start_ns: w.start_ns - NORMAL_BEFORE_NS,
                end_ns: w.start_ns,
            };
            let (peak, baseline) = rates(&requests, normal.start_ns, w.start_ns, w.end_ns);
            let f = ProfileFilter {
                service: Some(service.clone()),
                kind: Some("cpu".into()),
                label: Some(HIGH_TRAFFIC.into()),
                ..ProfileFilter::default()
            };
            let during = TimeRange {
                start_ns: w.start_ns,
                end_ns: w.end_ns,
            };
            let now = s.store.profile_stacks(&f, during).await?;
            let base_filter = ProfileFilter {
                label: Some(String::new()),
                ..f
            };
            let then = s.store.profile_stacks(&base_filter, normal).await?;
            let ranked = bottleneck::rank(ProfileKind::Cpu, weights(&now), weights(&then), limit);
            let query = form_urlencoded(&[
                ("service", service.as_str()),
                ("label", HIGH_TRAFFIC),
                ("base_label", "normal"),
                ("start", &ms(w.start_ns).to_string()),
                ("end", &(ms(w.end_ns) - 1).to_string()),
                ("base_start", &ms(normal.start_ns).to_string()),
                ("base_end", &(ms(normal.end_ns) - 1).to_string()),
            ]);
            out.push(json!({
                "service": service,
                "start_ms": ms(w.start_ns),
                "end_ms": ms(w.end_ns) - 1,
                "samples": w.samples,
                "peak_rate": peak,
                "baseline_rate": baseline,
                "normal": { "start_ms": ms(normal.start_ns), "end_ms": ms(normal.end_ns) - 1 },
                "diff_url": format!("/api/v1/profiles/diff?{query}"),
                "diff": bottlenecks_json(&ranked),
            }));
        }
    }
    Ok(Json(json!({
        "start_ms": ms(r.start_ns),
        "end_ms": ms(r.end_ns) - 1,
        "bucket_s": BUCKET_NS / 1_000_000_000,
        "windows": out,
    })))
}

fn form_urlencoded(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Sample times per process and per thread, sorted, to count those inside a span.
struct SampleIndex {
    by_thread: HashMap<(u32, u32), Vec<i64>>,
    by_process: HashMap<u32, Vec<i64>>,
}

impl SampleIndex {
    fn new(samples: &[SampleAt]) -> Self {
        let mut by_thread: HashMap<(u32, u32), Vec<i64>> = HashMap::new();
        let mut by_process: HashMap<u32, Vec<i64>> = HashMap::new();
        for s in samples {
            by_thread.entry((s.pid, s.tid)).or_default().push(s.time_ns);
            by_process.entry(s.pid).or_default().push(s.time_ns);
        }
        for v in by_thread.values_mut().chain(by_process.values_mut()) {
            v.sort_unstable();
        }
        Self {
            by_thread,
            by_process,
        }
    }

    /// Samples of the span's thread (or, without `thread.id`, of its process) in [start, end].
    fn count(&self, span: &SpanAt) -> u64 {
        let times = match span.tid {
            Some(tid) => self.by_thread.get(&(span.pid, tid)),
            None => self.by_process.get(&span.pid),
        };
        let Some(t) = times else {
            return 0;
        };
        let a = t.partition_point(|x| *x < span.start_ns);
        let b = t.partition_point(|x| *x <= span.end_ns);
        (b - a) as u64
    }
}

/// Per trace, its span that ran the function most (the innermost on ties: nested spans of one
/// thread share their samples), ranked by samples.
fn rank_traces(spans: &[SpanAt], index: &SampleIndex, limit: usize) -> Vec<Value> {
    let mut best: HashMap<&str, (&SpanAt, u64)> = HashMap::new();
    for span in spans {
        let n = index.count(span);
        if n == 0 {
            continue;
        }
        let dur = |s: &SpanAt| s.end_ns - s.start_ns;
        best.entry(span.trace_id.as_str())
            .and_modify(|(b, bn)| {
                if n > *bn || (n == *bn && dur(span) < dur(b)) {
                    *b = span;
                    *bn = n;
                }
            })
            .or_insert((span, n));
    }
    let mut list: Vec<(&SpanAt, u64)> = best.into_values().collect();
    list.sort_by(|a, b| {
        b.1.cmp(&a.1)
            .then(b.0.start_ns.cmp(&a.0.start_ns))
            .then(a.0.trace_id.cmp(&b.0.trace_id))
    });
    list.truncate(limit);
    list.into_iter()
        .map(|(s, n)| {
            json!({
                "trace_id": s.trace_id,
                "span_id": s.span_id,
                "span_name": s.name,
                "service": s.service,
                "pid": s.pid,
                "tid": s.tid,
                "start_ms": s.start_ns.div_euclid(1_000_000),
                "duration_ns": s.end_ns - s.start_ns,
                "samples": n,
                "match": if s.tid.is_some() { "thread" } else { "process" },
            })
        })
        .collect()
}

/// The traces whose spans spent time in `function`: CPU samples whose stack holds it, joined
/// with spans by process (`process.pid`), thread (`thread.id`) and time.
pub async fn traces(
    State(s): State<ServerState>,
    Query(p): Params,
) -> Result<Json<Value>, ApiError> {
    let function = param(&p, "function")
        .ok_or_else(|| bad("parameter function: expected a frame name of a flame graph"))?;
    let r = range(&p)?;
    let limit = num::<usize>(&p, "limit", "a number of traces")?
        .unwrap_or(20)
        .clamp(1, 200);
    let samples = s
        .store
        .samples_in_function(function, param(&p, "service"), r)
        .await?;
    let mut pids: Vec<u32> = samples.iter().map(|x| x.pid).collect();
    pids.sort_unstable();
    pids.dedup();
    let spans = if pids.is_empty() {
        Vec::new()
    } else {
        s.store
            .spans_of_processes(
                &pids,
                TimeRange {
                    start_ns: r.start_ns - SPAN_LOOKBACK_NS,
                    end_ns: r.end_ns,
                },
            )
            .await?
    };
    let index = SampleIndex::new(&samples);
    Ok(Json(json!({
        "function": function,
        "samples": samples.len(),
        "processes": pids.len(),
        "traces": rank_traces(&spans, &index, limit),
        "note": "samples are matched to spans by process.pid, thread.id and time: exact for \
                 thread-per-request servers, approximate for async runtimes and for spans \
                 without thread.id (every thread of the process counts)",
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(trace: &str, tid: Option<u32>, start: i64, end: i64) -> SpanAt {
        SpanAt {
            trace_id: trace.into(),
            span_id: format!("{trace}-{start}-{end}"),
            name: "op".into(),
            service: "svc".into(),
            pid: 1,
            tid,
            start_ns: start,
            end_ns: end,
        }
    }

    #[test]
    fn labelled_buckets_close_together_make_one_window() {
        let s = 1_000_000_000;
        let w = windows(&[(0, 5), (10 * s, 7), (70 * s, 1), (200 * s, 2)]);
        assert_eq!(
            w,
            vec![
                Window {
                    start_ns: 0,
                    end_ns: 80 * s,
                    samples: 13
                },
                Window {
                    start_ns: 200 * s,
                    end_ns: 210 * s,
                    samples: 2
                },
            ]
        );
    }

    #[test]
    fn peak_is_the_busiest_bucket_and_baseline_the_mean_before() {
        let s = 1_000_000_000;
        // 50 requests in each of 5 buckets before (5/s), then 400 in the bucket whose close
        // opened the window, and 200 and 100 in the window's labelled buckets.
        let mut req: Vec<(i64, u64)> = (0..5).map(|i| (i * 10 * s, 50)).collect();
        req.extend([(50 * s, 400), (60 * s, 200), (70 * s, 100)]);
        let (peak, base) = rates(&req, 0, 60 * s, 80 * s);
        assert_eq!(peak, 40.0);
        assert_eq!(base, 5.0);
    }

    #[test]
    fn samples_join_spans_by_thread_and_time_and_the_innermost_span_wins_ties() {
        let at = |tid, t| SampleAt {
            pid: 1,
            tid,
            time_ns: t,
        };
        let index = SampleIndex::new(&[at(10, 5), at(10, 6), at(10, 50), at(11, 7)]);
        let spans = vec![
            span("a", Some(10), 0, 10),  // 2 samples of thread 10
            span("a", Some(10), 4, 8),   // the same 2, and shorter: wins
            span("b", Some(11), 0, 100), // 1 sample of thread 11
            span("c", None, 0, 100),     // no thread.id: all 4 of the process
            span("d", Some(12), 0, 100), // another thread: none
        ];
        let ranked = rank_traces(&spans, &index, 10);
        let got: Vec<(String, u64, String)> = ranked
            .iter()
            .map(|v| {
                (
                    v["trace_id"].as_str().unwrap_or_default().to_string(),
                    v["samples"].as_u64().unwrap_or_default(),
                    v["match"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("c".to_string(), 4, "process".to_string()),
                ("a".to_string(), 2, "thread".to_string()),
                ("b".to_string(), 1, "thread".to_string()),
            ]
        );
        assert_eq!(ranked[1]["span_id"], "a-4-8");
    }
}
