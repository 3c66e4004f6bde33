//! `/api/v1/profiles/*` and the span → samples join: weighted stacks from the store, shaped as a
//! flame graph tree (or folded text) for the dashboard and other tools.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use profile::bottleneck::{self, Bottleneck, Bottlenecks, Share, StackWeight};
use profile::{
    Frame, FrameKind, PprofMeta, ProfileKind, Stack, StackAggregate, StackTable, Totals, to_pprof,
};
use serde_json::{Value, json};
use store::profiles::{ProfileFilter, WeightedStack};
use store::read::TimeRange;

use crate::ServerState;
use crate::api::{ApiError, Params, bad, num, param, range};

/// Services ranked at most per bottlenecks request when none is named.
const MAX_BOTTLENECK_SERVICES: usize = 20;

/// The root frame under which stacks that did not reach their thread's start are shown.
const TRUNCATED: &str = "[truncated]";

fn filter(p: &[(String, String)]) -> Result<ProfileFilter, ApiError> {
    let kind = param(p, "kind").map(String::from);
    if let Some(k) = &kind
        && k != "cpu"
        && k != "off_cpu"
    {
        return Err(bad(format!(
            "parameter kind: expected cpu or off_cpu, found {k:?}"
        )));
    }
    Ok(ProfileFilter {
        service: param(p, "service").map(String::from),
        host: param(p, "host").map(String::from),
        pid: num(p, "pid", "a process id")?,
        tid: num(p, "tid", "a thread id")?,
        kind,
        label: label(p, "label"),
    })
}

/// A label parameter: `high_traffic`, or `normal` for samples taken with no label.
fn label(p: &[(String, String)], key: &str) -> Option<String> {
    param(p, key).map(|l| match l {
        "normal" => String::new(),
        other => other.to_string(),
    })
}

struct Node {
    name: String,
    value: u64,
    self_value: u64,
    samples: u64,
    /// Time through this frame in the comparison profile (diffs only).
    base: u64,
    children: Vec<usize>,
}

/// Merges stacks into a tree: each node's value is the time of every stack through it. With
/// `base`, each node also carries the time through it in that profile; frames seen only there
/// get a node of value 0 (the tree keeps the current profile's shape).
pub(crate) fn flame_tree(stacks: &[WeightedStack], base: Option<&[WeightedStack]>) -> Value {
    let mut nodes = vec![Node {
        name: "all".into(),
        value: 0,
        self_value: 0,
        samples: 0,
        base: 0,
        children: Vec::new(),
    }];
    let mut index: HashMap<(usize, &str), usize> = HashMap::new();
    let tagged = stacks
        .iter()
        .map(|s| (s, false))
        .chain(base.unwrap_or_default().iter().map(|s| (s, true)));
    for (st, is_base) in tagged {
        let path = st
            .truncated
            .then_some(TRUNCATED)
            .into_iter()
            .chain(st.frames.iter().map(String::as_str));
        let mut at = 0;
        let add = |n: &mut Node| {
            if is_base {
                n.base += st.value_ns;
            } else {
                n.value += st.value_ns;
                n.samples += st.samples;
            }
        };
        add(&mut nodes[0]);
        for name in path {
            let next = match index.get(&(at, name)) {
                Some(&i) => i,
                None => {
                    nodes.push(Node {
                        name: name.to_string(),
                        value: 0,
                        self_value: 0,
                        samples: 0,
                        base: 0,
                        children: Vec::new(),
                    });
                    let i = nodes.len() - 1;
                    nodes[at].children.push(i);
                    index.insert((at, name), i);
                    i
                }
            };
            add(&mut nodes[next]);
            at = next;
        }
        if !is_base {
            nodes[at].self_value += st.value_ns;
        }
    }
    fn render(nodes: &[Node], i: usize, diff: bool) -> Value {
        let n = &nodes[i];
        let mut kids: Vec<usize> = n.children.clone();
        kids.sort_by(|a, b| nodes[*b].value.cmp(&nodes[*a].value));
        let mut v = json!({
            "name": n.name,
            "value": n.value,
            "self": n.self_value,
            "samples": n.samples,
            "children": kids.into_iter().map(|k| render(nodes, k, diff)).collect::<Vec<_>>(),
        });
        if diff {
            v["base"] = json!(n.base);
        }
        v
    }
    render(&nodes, 0, base.is_some())
}

fn flamegraph_body(stacks: &[WeightedStack], kind: &str) -> Value {
    let total: u64 = stacks.iter().map(|s| s.value_ns).sum();
    let truncated: u64 = stacks
        .iter()
        .filter(|s| s.truncated)
        .map(|s| s.value_ns)
        .sum();
    json!({
        "kind": kind,
        "unit": "nanoseconds",
        "total": total,
        "samples": stacks.iter().map(|s| s.samples).sum::<u64>(),
        "truncated_share": if total > 0 { truncated as f64 / total as f64 } else { 0.0 },
        "root": flame_tree(stacks, None),
    })
}

/// The current range's flame graph with, on every frame, its time in a comparison range
/// (`base_start`/`base_end`, default: the period of the same length just before). Shares, not
/// times, are what to compare: the two ranges may hold different amounts of samples.
pub async fn diff(State(s): State<ServerState>, Query(p): Params) -> Result<Json<Value>, ApiError> {
    let (f, r) = (filter(&p)?, range(&p)?);
    let base_end = num::<i64>(&p, "base_end", "unix milliseconds")?;
    let base_start = num::<i64>(&p, "base_start", "unix milliseconds")?;
    let base = match (base_start, base_end) {
        (Some(a), Some(b)) if a <= b => TimeRange {
            start_ns: a.saturating_mul(1_000_000),
            end_ns: b.saturating_add(1).saturating_mul(1_000_000),
        },
        (Some(a), Some(b)) => {
            return Err(bad(format!(
                "parameter base_start ({a}) is after base_end ({b})"
            )));
        }
        (None, None) => TimeRange {
            start_ns: r.start_ns - (r.end_ns - r.start_ns),
            end_ns: r.start_ns,
        },
        _ => return Err(bad("parameters base_start and base_end go together")),
    };
    let now = s.store.profile_stacks(&f, r).await?;
    // `base_label` compares with other samples of the same processes (high traffic against
    // normal traffic); without it both sides use `label`.
    let base_filter = ProfileFilter {
        label: label(&p, "base_label").or_else(|| f.label.clone()),
        ..f.clone()
    };
    let then = s.store.profile_stacks(&base_filter, base).await?;
    let ms = |ns: i64| ns.div_euclid(1_000_000);
    Ok(Json(json!({
        "kind": f.kind.as_deref().unwrap_or("cpu"),
        "unit": "nanoseconds",
        "total": now.iter().map(|s| s.value_ns).sum::<u64>(),
        "samples": now.iter().map(|s| s.samples).sum::<u64>(),
        "base_total": then.iter().map(|s| s.value_ns).sum::<u64>(),
        "base_samples": then.iter().map(|s| s.samples).sum::<u64>(),
        "base": { "start_ms": ms(base.start_ns), "end_ms": ms(base.end_ns) - 1 },
        "root": flame_tree(&now, Some(&then)),
    })))
}

pub async fn flamegraph(
    State(s): State<ServerState>,
    Query(p): Params,
) -> Result<Json<Value>, ApiError> {
    let (f, r) = (filter(&p)?, range(&p)?);
    let stacks = s.store.profile_stacks(&f, r).await?;
    Ok(Json(flamegraph_body(
        &stacks,
        f.kind.as_deref().unwrap_or("cpu"),
    )))
}

/// Brendan Gregg's folded format, one stack per line with its sample count.
pub async fn folded(State(s): State<ServerState>, Query(p): Params) -> Result<Response, ApiError> {
    let (f, r) = (filter(&p)?, range(&p)?);
    let mut out = String::new();
    for st in s.store.profile_stacks(&f, r).await? {
        let frames = st
            .truncated
            .then_some(TRUNCATED)
            .into_iter()
            .chain(st.frames.iter().map(String::as_str))
            .map(|f| f.replace(';', ":"))
            .collect::<Vec<_>>()
            .join(";");
        out.push_str(&format!("{frames} {}\n", st.samples));
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], out).into_response())
}

fn profile_kind(kind: Option<&str>) -> ProfileKind {
    match kind {
        Some("off_cpu") => ProfileKind::OffCpu,
        _ => ProfileKind::Cpu,
    }
}

/// A stored stack (frame names root first, `_[k]` kernel, `_[j]` JIT) as `profile` has it.
fn stack_of(st: &WeightedStack) -> Stack {
    let frame = |name: &String| {
        let (kind, function) = if let Some(f) = name.strip_suffix("_[k]") {
            (FrameKind::Kernel, f)
        } else if let Some(f) = name.strip_suffix("_[j]") {
            (FrameKind::Jit, f)
        } else {
            (FrameKind::User, name.as_str())
        };
        Frame::new(kind, function, "")
    };
    Stack {
        frames: st.frames.iter().rev().map(frame).collect(),
        truncated: st.truncated,
    }
}

/// The same samples as the flame graph, as gzip'd pprof (`go tool pprof` reads it).
pub async fn pprof(State(s): State<ServerState>, Query(p): Params) -> Result<Response, ApiError> {
    let (f, r) = (filter(&p)?, range(&p)?);
    let kind = profile_kind(f.kind.as_deref());
    let mut table = StackTable::new();
    let mut aggregate = StackAggregate::new(kind);
    for st in s.store.profile_stacks(&f, r).await? {
        let id = table.insert(stack_of(&st));
        aggregate.add_totals(
            id,
            Totals {
                samples: st.samples,
                value_ns: st.value_ns,
            },
        );
    }
    let meta = PprofMeta {
        time_unix_ns: u64::try_from(r.start_ns).unwrap_or(0),
        duration_ns: u64::try_from(r.end_ns - r.start_ns).unwrap_or(0),
        // Rates differ between processes and boosts; every sample carries its own weight.
        period_ns: 0,
    };
    let name = if kind == ProfileKind::OffCpu {
        "off_cpu"
    } else {
        "cpu"
    };
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"oxeye-{name}.pb.gz\""),
            ),
        ],
        to_pprof(&table, &aggregate, meta),
    )
        .into_response())
}

fn share_json(s: &Share) -> Value {
    json!({ "samples": s.samples, "value_ns": s.value_ns, "share": s.share })
}

fn bottleneck_json(b: &Bottleneck) -> Value {
    json!({
        "function": b.function,
        "now": share_json(&b.now),
        "before": share_json(&b.before),
        "change": b.change,
        "z": b.z,
    })
}

pub(crate) fn bottlenecks_json(b: &Bottlenecks) -> Value {
    json!({
        "total": share_json(&b.total),
        "total_before": share_json(&b.total_before),
        "largest": b.largest.iter().map(bottleneck_json).collect::<Vec<_>>(),
        "grew": b.grew.iter().map(bottleneck_json).collect::<Vec<_>>(),
    })
}

pub(crate) fn weights(stacks: &[WeightedStack]) -> impl Iterator<Item = StackWeight<'_>> {
    stacks.iter().map(|st| StackWeight {
        frames: &st.frames,
        samples: st.samples,
        value_ns: st.value_ns,
    })
}

/// Per service, the functions with the largest self share of on-CPU and off-CPU time, and those
/// whose share grew most against the period of the same length just before.
pub async fn bottlenecks(
    State(s): State<ServerState>,
    Query(p): Params,
) -> Result<Json<Value>, ApiError> {
    let r = range(&p)?;
    let limit = num::<usize>(&p, "limit", "a number of functions")?
        .unwrap_or(10)
        .clamp(1, 100);
    let before = TimeRange {
        start_ns: r.start_ns - (r.end_ns - r.start_ns),
        end_ns: r.start_ns,
    };
    let services = match param(&p, "service") {
        Some(svc) => vec![svc.to_string()],
        None => {
            s.store
                .profiled_services(r, MAX_BOTTLENECK_SERVICES)
                .await?
        }
    };
    let mut out = Vec::with_capacity(services.len());
    for service in services {
        let mut entry = serde_json::Map::new();
        entry.insert("service".into(), json!(service));
        for kind in [ProfileKind::Cpu, ProfileKind::OffCpu] {
            let name = if kind == ProfileKind::OffCpu {
                "off_cpu"
            } else {
                "cpu"
            };
            let f = ProfileFilter {
                service: Some(service.clone()),
                kind: Some(name.to_string()),
                ..ProfileFilter::default()
            };
            let now = s.store.profile_stacks(&f, r).await?;
            let then = s.store.profile_stacks(&f, before).await?;
            let ranked = bottleneck::rank(kind, weights(&now), weights(&then), limit);
            entry.insert(name.into(), bottlenecks_json(&ranked));
        }
        out.push(Value::Object(entry));
    }
    // Ends are inclusive to the millisecond, as the `end` parameter is.
    let ms = |ns: i64| ns.div_euclid(1_000_000);
    Ok(Json(json!({
        "start_ms": ms(r.start_ns),
        "end_ms": ms(r.end_ns) - 1,
        "before": { "start_ms": ms(before.start_ns), "end_ms": ms(before.end_ns) - 1 },
        "min_z": bottleneck::MIN_Z,
        "min_samples": bottleneck::MIN_SAMPLES,
        "services": out,
    })))
}

/// The CPU samples a span's thread took while the span ran. Exact when the span names its
/// thread (`thread.id`) and the runtime runs one request per thread; with only `process.pid`
/// it is every thread of the process in that window, and says so.
pub async fn span_profile(
    State(s): State<ServerState>,
    Path((trace_id, span_id)): Path<(String, String)>,
    Query(p): Params,
) -> Result<Json<Value>, ApiError> {
    let Some(span) = s.store.span_thread(&trace_id, &span_id).await? else {
        return Err(ApiError::not_found(format!(
            "no span {span_id} in trace {trace_id}"
        )));
    };
    let f = filter(&p)?;
    let kind = f.kind.clone().unwrap_or_else(|| "cpu".to_string());
    let Some(pid) = span.pid else {
        return Ok(Json(json!({
            "span": span,
            "match": "none",
            "note": "the span's resource has no process.pid, so its samples cannot be found",
            "flamegraph": flamegraph_body(&[], &kind),
        })));
    };
    let f = ProfileFilter {
        pid: Some(pid),
        tid: span.tid,
        kind: Some(kind.clone()),
        ..f
    };
    let r = TimeRange {
        start_ns: span.start_ns,
        end_ns: span.end_ns.max(span.start_ns + 1),
    };
    let stacks = s.store.profile_stacks(&f, r).await?;
    let (matched, note) = if span.tid.is_some() {
        (
            "thread",
            "samples of the span's thread (thread.id) while it ran",
        )
    } else {
        (
            "process",
            "the span has no thread.id: samples of every thread of its process while it ran",
        )
    };
    Ok(Json(json!({
        "span": span,
        "match": matched,
        "note": note,
        "flamegraph": flamegraph_body(&stacks, &kind),
    })))
}

/// Rows per OTLP export request unless `limit` says otherwise, and the most it may say.
const OTLP_DEFAULT_ROWS: usize = 100_000;
const OTLP_MAX_ROWS: usize = 1_000_000;

/// The samples of a range as one OTLP `ExportProfilesServiceRequest` (protobuf, or OTLP JSON
/// with `format=json`), one row per timestamp, every kind unless `kind` names one. When the
/// range holds more than `limit` rows the oldest are sent and `x-oxeye-limit-reached: true`
/// says so.
pub async fn otlp(State(s): State<ServerState>, Query(p): Params) -> Result<Response, ApiError> {
    let (f, r) = (filter(&p)?, range(&p)?);
    let limit = num::<usize>(&p, "limit", "a number of samples")?.unwrap_or(OTLP_DEFAULT_ROWS);
    if limit == 0 || limit > OTLP_MAX_ROWS {
        return Err(bad(format!(
            "parameter limit: expected 1 to {OTLP_MAX_ROWS}, found {limit}"
        )));
    }
    let json = match param(&p, "format") {
        None | Some("protobuf") => false,
        Some("json") => true,
        Some(other) => {
            return Err(bad(format!(
                "parameter format: expected protobuf or json, found {other:?}"
            )));
        }
    };
    let batch = s.store.profile_batch(&f, r, limit).await?;
    let reached = batch.samples.len() >= limit;
    let (req, _missing) = model::otlp_profiles::profiles_to_otlp(&batch);
    let (ctype, body) = if json {
        (
            "application/json",
            serde_json::to_vec(&req).map_err(|e| ApiError::internal(e.to_string()))?,
        )
    } else {
        (
            "application/x-protobuf",
            prost::Message::encode_to_vec(&req),
        )
    };
    Ok((
        [
            (header::CONTENT_TYPE, ctype),
            (
                header::HeaderName::from_static("x-oxeye-limit-reached"),
                if reached { "true" } else { "false" },
            ),
        ],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(frames: &[&str], truncated: bool, v: u64) -> WeightedStack {
        WeightedStack {
            frames: frames.iter().map(|f| f.to_string()).collect(),
            truncated,
            samples: 1,
            value_ns: v,
        }
    }

    #[test]
    fn stacks_merge_into_a_tree_with_self_time() {
        let t = flame_tree(
            &[
                st(&["main", "a", "hot"], false, 30),
                st(&["main", "a"], false, 10),
                st(&["main", "b"], false, 5),
                st(&["hot"], true, 7),
            ],
            None,
        );
        assert!(t.get("base").is_none(), "no base outside diffs");
        assert_eq!(t["value"], 52);
        let main = &t["children"][0];
        assert_eq!(main["name"], "main");
        assert_eq!(main["value"], 45);
        assert_eq!(main["children"][0]["name"], "a");
        assert_eq!(main["children"][0]["value"], 40);
        assert_eq!(main["children"][0]["self"], 10);
        assert_eq!(t["children"][1]["name"], TRUNCATED);
        assert_eq!(t["children"][1]["children"][0]["self"], 7);
    }

    #[test]
    fn a_diff_carries_each_frames_time_in_the_base_profile() {
        let t = flame_tree(
            &[
                st(&["main", "parse"], false, 50),
                st(&["main", "lock"], false, 60),
            ],
            Some(&[
                st(&["main", "parse"], false, 50),
                st(&["main", "lock"], false, 5),
                st(&["main", "gone"], false, 9),
            ]),
        );
        assert_eq!(t["value"], 110);
        assert_eq!(t["base"], 64);
        let main = &t["children"][0];
        let child = |name: &str| {
            main["children"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == name)
                .cloned()
                .unwrap()
        };
        assert_eq!(child("lock")["value"], 60);
        assert_eq!(child("lock")["base"], 5);
        assert_eq!(child("parse")["base"], 50);
        // Only in the base profile: present, with no current time.
        assert_eq!(child("gone")["value"], 0);
        assert_eq!(child("gone")["base"], 9);
    }
}
