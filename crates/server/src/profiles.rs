//! `/api/v1/profiles/*` and the span → samples join: weighted stacks from the store, shaped as a
//! flame graph tree (or folded text) for the dashboard and other tools.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use store::profiles::{ProfileFilter, WeightedStack};
use store::read::TimeRange;

use crate::ServerState;
use crate::api::{ApiError, Params, bad, num, param, range};

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
        label: param(p, "label").map(String::from),
    })
}

struct Node {
    name: String,
    value: u64,
    self_value: u64,
    samples: u64,
    children: Vec<usize>,
}

/// Merges stacks into a tree: each node's value is the time of every stack through it.
fn flame_tree(stacks: &[WeightedStack]) -> Value {
    let mut nodes = vec![Node {
        name: "all".into(),
        value: 0,
        self_value: 0,
        samples: 0,
        children: Vec::new(),
    }];
    let mut index: HashMap<(usize, &str), usize> = HashMap::new();
    for st in stacks {
        let path = st
            .truncated
            .then_some(TRUNCATED)
            .into_iter()
            .chain(st.frames.iter().map(String::as_str));
        let mut at = 0;
        nodes[0].value += st.value_ns;
        nodes[0].samples += st.samples;
        for name in path {
            let next = match index.get(&(at, name)) {
                Some(&i) => i,
                None => {
                    nodes.push(Node {
                        name: name.to_string(),
                        value: 0,
                        self_value: 0,
                        samples: 0,
                        children: Vec::new(),
                    });
                    let i = nodes.len() - 1;
                    nodes[at].children.push(i);
                    index.insert((at, name), i);
                    i
                }
            };
            nodes[next].value += st.value_ns;
            nodes[next].samples += st.samples;
            at = next;
        }
        nodes[at].self_value += st.value_ns;
    }
    fn render(nodes: &[Node], i: usize) -> Value {
        let n = &nodes[i];
        let mut kids: Vec<usize> = n.children.clone();
        kids.sort_by(|a, b| nodes[*b].value.cmp(&nodes[*a].value));
        json!({
            "name": n.name,
            "value": n.value,
            "self": n.self_value,
            "samples": n.samples,
            "children": kids.into_iter().map(|k| render(nodes, k)).collect::<Vec<_>>(),
        })
    }
    render(&nodes, 0)
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
        "root": flame_tree(stacks),
    })
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
        let t = flame_tree(&[
            st(&["main", "a", "hot"], false, 30),
            st(&["main", "a"], false, 10),
            st(&["main", "b"], false, 5),
            st(&["hot"], true, 7),
        ]);
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
}
