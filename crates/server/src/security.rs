//! `/api/v1/security/*`: alerts and events from the store, one alert with its service's RED
//! series and busiest functions around it, and the live baselines. The baselines live in the
//! sensor, which this crate does not depend on: `oxeye` hands in a [`SecurityControl`].

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use model::security::BaselineDeparture;
use serde_json::{Value, json};
use store::profiles::ProfileFilter;
use store::read::TimeRange;
use store::security::{ALERT_STATUSES, AlertFilter, SecurityEventFilter};

use crate::ServerState;
use crate::api::{ApiError, Params, bad, num, param, range, require_token};

/// The running security sensor, as far as the API needs it.
pub trait SecurityControl: Send + Sync {
    /// Every executable's baseline, as JSON objects (`exe`, `learning`, `children`, `peers`,
    /// `syscalls`, …).
    fn baselines(&self) -> Vec<Value>;
    /// Takes what an anomaly found as normal: adds exactly that to the executable's baseline.
    /// `Ok(false)` when the executable has no baseline.
    fn accept(&self, departure: &BaselineDeparture) -> Result<bool, String>;
    /// Forgets `exe`'s baseline; it learns from scratch. `Ok(false)` when it had none.
    fn reset(&self, exe: &str) -> Result<bool, String>;
    /// What the sensor is doing: rules, drops, sinks.
    fn status(&self) -> Value;
}

const SEVERITIES: [&str; 5] = ["info", "low", "medium", "high", "critical"];
const KINDS: [&str; 8] = [
    "exec",
    "exit",
    "connect",
    "accept",
    "file_open",
    "privilege_change",
    "ptrace",
    "module_load",
];

/// Minutes either side of an alert that its detail view covers.
const CONTEXT_MINUTES: i64 = 15;

fn min_severity(v: &str) -> Result<u32, ApiError> {
    if let Ok(n) = v.parse::<u32>()
        && (1..=5).contains(&n)
    {
        return Ok(n);
    }
    SEVERITIES
        .iter()
        .position(|s| s.eq_ignore_ascii_case(v))
        .map(|i| i as u32 + 1)
        .ok_or_else(|| {
            bad(format!(
                "parameter severity: expected info, low, medium, high, critical or 1-5, found {v:?}"
            ))
        })
}

pub(crate) async fn alerts(
    State(s): State<ServerState>,
    Query(p): Params,
) -> Result<Json<Value>, ApiError> {
    let r = range(&p)?;
    let source = param(&p, "source").map(String::from);
    if let Some(v) = &source
        && v != "rule"
        && v != "anomaly"
    {
        return Err(bad(format!(
            "parameter source: expected rule or anomaly, found {v:?}"
        )));
    }
    let status = param(&p, "status").map(String::from);
    if let Some(v) = &status
        && !ALERT_STATUSES.contains(&v.as_str())
    {
        return Err(bad(format!(
            "parameter status: expected one of {}, found {v:?}",
            ALERT_STATUSES.join(", ")
        )));
    }
    let f = AlertFilter {
        min_severity: param(&p, "severity").map(min_severity).transpose()?,
        status,
        service: param(&p, "service").map(String::from),
        kind: param(&p, "kind").map(String::from),
        source,
        pid: num(&p, "pid", "a process id")?,
        limit: num(&p, "limit", "a count")?.unwrap_or(500),
    };
    Ok(Json(
        json!({ "alerts": s.store.security_alerts(&f, r).await? }),
    ))
}

pub(crate) async fn events(
    State(s): State<ServerState>,
    Query(p): Params,
) -> Result<Json<Value>, ApiError> {
    let r = range(&p)?;
    let kind = param(&p, "kind").map(String::from);
    if let Some(k) = &kind
        && !KINDS.contains(&k.as_str())
    {
        return Err(bad(format!(
            "parameter kind: expected one of {}, found {k:?}",
            KINDS.join(", ")
        )));
    }
    let f = SecurityEventFilter {
        kind,
        pid: num(&p, "pid", "a process id")?,
        exe: param(&p, "exe").map(String::from),
        service: param(&p, "service").map(String::from),
        text: param(&p, "q").map(String::from),
        limit: num(&p, "limit", "a count")?.unwrap_or(200),
    };
    Ok(Json(
        json!({ "events": s.store.security_events(&f, r).await? }),
    ))
}

/// The functions with the most CPU time at the top of the stack (self) and anywhere in it
/// (total), heaviest first.
fn top_functions(stacks: &[store::profiles::WeightedStack], limit: usize) -> Vec<Value> {
    let mut by_name: HashMap<&str, (u64, u64)> = HashMap::new();
    let mut all = 0u64;
    for st in stacks {
        all += st.value_ns;
        if let Some(leaf) = st.frames.last() {
            by_name.entry(leaf.as_str()).or_default().0 += st.value_ns;
        }
        let mut seen = std::collections::HashSet::new();
        for f in &st.frames {
            if seen.insert(f.as_str()) {
                by_name.entry(f.as_str()).or_default().1 += st.value_ns;
            }
        }
    }
    let mut list: Vec<(&str, u64, u64)> = by_name
        .into_iter()
        .filter(|(_, (self_ns, _))| *self_ns > 0)
        .map(|(n, (a, b))| (n, a, b))
        .collect();
    list.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    list.truncate(limit);
    let share = |v: u64| {
        if all > 0 { v as f64 / all as f64 } else { 0.0 }
    };
    list.into_iter()
        .map(|(name, self_ns, total_ns)| {
            json!({
                "function": name,
                "self_ns": self_ns,
                "total_ns": total_ns,
                "self_share": share(self_ns),
                "total_share": share(total_ns),
            })
        })
        .collect()
}

fn check_alert_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > 200 {
        return Err(bad(format!(
            "alert id: expected 1 to 200 characters, found {}",
            id.len()
        )));
    }
    Ok(())
}

pub(crate) async fn alert(
    State(s): State<ServerState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_alert_id(&id)?;
    let Some(a) = s.store.security_alert(&id).await? else {
        return Err(ApiError::not_found(format!("alert {id:?} not found")));
    };
    let t = a.time_unix_nano.parse::<i64>().unwrap_or(0);
    let window = TimeRange {
        start_ns: t - CONTEXT_MINUTES * 60_000_000_000,
        end_ns: t + CONTEXT_MINUTES * 60_000_000_000,
    };
    let red = if a.service.is_empty() {
        Vec::new()
    } else {
        s.store.service_red_series(&a.service, window, 30).await?
    };
    let by_service = ProfileFilter {
        service: Some(a.service.clone()),
        ..ProfileFilter::default()
    };
    let mut stacks = s.store.profile_stacks(&by_service, window).await?;
    let mut profile_scope = "service";
    if stacks.is_empty() && a.pid != 0 {
        // Samples are stored under the name the profiler knew the process by; the pid is exact.
        let by_pid = ProfileFilter {
            pid: Some(a.pid),
            ..ProfileFilter::default()
        };
        stacks = s.store.profile_stacks(&by_pid, window).await?;
        profile_scope = "pid";
    }
    let events = s
        .store
        .security_events(
            &SecurityEventFilter {
                pid: (a.pid != 0).then_some(a.pid),
                limit: 50,
                ..SecurityEventFilter::default()
            },
            window,
        )
        .await?;
    Ok(Json(json!({
        "alert": a,
        "window": { "start_ms": window.start_ns as f64 / 1e6, "end_ms": window.end_ns as f64 / 1e6 },
        "red": red,
        "top_functions": top_functions(&stacks, 15),
        "profile_scope": profile_scope,
        "process_events": events,
    })))
}

fn control(s: &ServerState) -> Result<&dyn SecurityControl, ApiError> {
    s.security.as_deref().ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the security sensor is not running (it needs root and BTF; see `oxeye up` output or --security)".into(),
        )
    })
}

pub(crate) async fn baselines(State(s): State<ServerState>) -> Result<Json<Value>, ApiError> {
    let c = control(&s)?;
    Ok(Json(json!({ "baselines": c.baselines() })))
}

pub(crate) async fn status(State(s): State<ServerState>) -> Json<Value> {
    match s.security.as_deref() {
        Some(c) => Json(c.status()),
        None => Json(json!({ "running": false })),
    }
}

fn exe_param(exe: &str) -> Result<String, ApiError> {
    // `/api/v1/security/baselines/{*exe}` keeps the leading slash of the path off: put it back.
    let exe = if exe.starts_with('/') {
        exe.to_string()
    } else {
        format!("/{exe}")
    };
    if exe.len() < 2 || exe.len() > 4096 {
        return Err(bad(format!(
            "executable: expected an absolute path, found {exe:?}"
        )));
    }
    Ok(exe)
}

async fn change(
    s: ServerState,
    headers: HeaderMap,
    exe: String,
    what: &str,
) -> Result<Json<Value>, ApiError> {
    require_token(&s, &headers)?;
    let c = control(&s)?;
    let exe = exe_param(&exe)?;
    let done = c
        .reset(&exe)
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e))?;
    if !done {
        return Err(ApiError::not_found(format!(
            "no baseline for executable {exe:?}"
        )));
    }
    Ok(Json(json!({ "exe": exe, "done": what })))
}

/// `POST /security/baselines/{exe}/reset`: the executable path is the rest of the URL, so the
/// action is its last component.
pub(crate) async fn baseline_action(
    State(s): State<ServerState>,
    headers: HeaderMap,
    Path(rest): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let Some((exe, action)) = rest.rsplit_once('/') else {
        return Err(bad(format!(
            "expected /security/baselines/<executable path>/reset, found {rest:?}"
        )));
    };
    match action {
        "reset" => change(s, headers, exe.to_string(), action).await,
        "accept" => Err(bad(
            "a whole executable cannot be accepted as normal: accept one of its anomalies \
             (POST /api/v1/security/alerts/{id}/accept), or reset its baseline"
                .to_string(),
        )),
        other => Err(bad(format!(
            "expected reset after the executable path, found {other:?}"
        ))),
    }
}

fn unix_now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// `POST /security/alerts/{id}/{action}`: `acknowledge`, `resolve` or `reopen` set its status;
/// `accept` (an anomaly's) adds what it found to the executable's baseline and resolves it.
pub(crate) async fn alert_action(
    State(s): State<ServerState>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    require_token(&s, &headers)?;
    check_alert_id(&id)?;
    let status = match action.as_str() {
        "acknowledge" => "acknowledged",
        "resolve" | "accept" => "resolved",
        "reopen" => "open",
        other => {
            return Err(bad(format!(
                "expected acknowledge, resolve, reopen or accept after the alert id, found {other:?}"
            )));
        }
    };
    let Some(alert) = s.store.security_alert(&id).await? else {
        return Err(ApiError::not_found(format!("alert {id:?} not found")));
    };
    let mut accepted = Value::Null;
    if action == "accept" {
        if alert.departure.is_null() {
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!(
                    "alert {id:?} comes from rule {:?}, not from a baseline: only anomalies can \
                     be accepted as normal (change the rule, or resolve the alert)",
                    alert.kind
                ),
            ));
        }
        let departure: BaselineDeparture = serde_json::from_value(alert.departure.clone())
            .map_err(|e| {
                bad(format!(
                    "alert {id:?}: expected a baseline departure, found {} ({e})",
                    alert.departure
                ))
            })?;
        let c = control(&s)?;
        let done = c
            .accept(&departure)
            .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e))?;
        if !done {
            return Err(ApiError::not_found(format!(
                "no baseline for executable {:?}",
                departure.exe()
            )));
        }
        accepted = alert.departure.clone();
    }
    let Some(updated) = s
        .store
        .set_alert_status(&id, status, unix_now_nanos())
        .await?
    else {
        return Err(ApiError::not_found(format!("alert {id:?} not found")));
    };
    Ok(Json(json!({ "alert": updated, "accepted": accepted })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::profiles::WeightedStack;

    #[test]
    fn top_functions_rank_by_self_time_and_count_recursion_once() {
        let st = |frames: &[&str], v: u64| WeightedStack {
            frames: frames.iter().map(|f| f.to_string()).collect(),
            truncated: false,
            samples: 1,
            value_ns: v,
        };
        let top = top_functions(
            &[
                st(&["main", "work", "work", "hash"], 60),
                st(&["main", "io"], 40),
            ],
            10,
        );
        assert_eq!(top[0]["function"], "hash");
        assert_eq!(top[0]["self_ns"], 60);
        assert_eq!(top[1]["function"], "io");
        assert_eq!(top.len(), 2, "main and work have no self time: {top:?}");
    }

    #[test]
    fn severities_are_names_or_ocsf_numbers() {
        assert_eq!(min_severity("high").ok(), Some(4));
        assert_eq!(min_severity("2").ok(), Some(2));
        assert!(min_severity("severe").is_err());
        assert!(min_severity("9").is_err());
    }
}
