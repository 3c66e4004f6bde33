//! `/api/v1/anomalies`, their series and ranked evidence, `/api/v1/forecast` and
//! `/api/v1/saturation`, `/api/v1/load-latency`: the store's reads shaped for the dashboard; the
//! models and weights are `insight`'s.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use insight::evidence::{correlation, deploy_weight, growth_weight, moved_together_weight};
use insight::forecast::{ForecastSettings, RegularSeries, forecast};
use insight::{LoadSample, SaturationAlert, TimeToSaturation, UslFit};
use profile::ProfileKind;
use profile::bottleneck;
use serde_json::{Value, json};
use store::insights::{Anomaly, AnomalyFilter};
use store::profiles::ProfileFilter;
use store::read::TimeRange;

use crate::ServerState;
use crate::api::{ApiError, Params, attr_filters, bad, num, param, range};

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;
/// The width of the RED buckets the insights job scores (its default).
const RED_BUCKET_MS: i64 = MINUTE_MS;
/// Evidence of each kind listed at most.
const PER_KIND: usize = 5;
/// Resource series correlated at most per evidence request.
const MAX_RESOURCE_SERIES: usize = 200;
/// Series checked at most by `/saturation`.
const MAX_SATURATION_SERIES: usize = 200;

/// Services fitted at most by `/load-latency` without `service`.
const MAX_LOAD_SERVICES: usize = 50;
/// Points of the fitted curve returned for the chart.
const CURVE_POINTS: usize = 48;
/// Observed (rate, p99) samples returned for the chart at most.
const MAX_OBSERVED: usize = 400;

fn ms_range(start_ms: i64, end_ms: i64) -> TimeRange {
    TimeRange {
        start_ns: start_ms.saturating_mul(1_000_000),
        end_ns: end_ms.saturating_mul(1_000_000),
    }
}

fn anomaly_id(id: &str) -> Result<&str, ApiError> {
    if id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(id)
    } else {
        Err(bad(format!(
            "anomaly id: expected 16 hex characters, found {id:?}"
        )))
    }
}

fn flag(p: &[(String, String)], key: &str) -> Result<Option<bool>, ApiError> {
    param(p, key)
        .map(|v| match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            _ => Err(bad(format!(
                "parameter {key}: expected true or false, found {v:?}"
            ))),
        })
        .transpose()
}

/// `30m`, `6h`, `7d`, `90s` or plain milliseconds.
fn duration_ms(p: &[(String, String)], key: &str) -> Result<Option<i64>, ApiError> {
    let Some(v) = param(p, key) else {
        return Ok(None);
    };
    let (digits, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
    let n: i64 = digits.parse().map_err(|_| {
        bad(format!(
            "parameter {key}: expected a duration like 90s, 30m, 6h or 7d, found {v:?}"
        ))
    })?;
    let unit_ms = match unit {
        "" | "ms" => 1,
        "s" => 1000,
        "m" => MINUTE_MS,
        "h" => HOUR_MS,
        "d" => DAY_MS,
        _ => {
            return Err(bad(format!(
                "parameter {key}: unknown unit {unit:?} (use ms, s, m, h or d)"
            )));
        }
    };
    if n <= 0 {
        return Err(bad(format!(
            "parameter {key}: must be positive, found {v:?}"
        )));
    }
    Ok(Some(n.saturating_mul(unit_ms)))
}

pub async fn list(State(s): State<ServerState>, Query(p): Params) -> Result<Json<Value>, ApiError> {
    let r = if param(&p, "start").is_some() || param(&p, "end").is_some() {
        Some(range(&p)?)
    } else {
        None
    };
    let f = AnomalyFilter {
        service: param(&p, "service").map(String::from),
        metric: param(&p, "metric").map(String::from),
        series_id: param(&p, "series").map(String::from),
        range: r,
        open: flag(&p, "open")?,
        limit: num::<usize>(&p, "limit", "a count")?
            .unwrap_or(200)
            .clamp(1, 5000),
    };
    Ok(Json(json!({ "anomalies": s.store.anomalies(&f).await? })))
}

async fn find(s: &ServerState, id: &str) -> Result<Anomaly, ApiError> {
    s.store
        .anomaly(anomaly_id(id)?)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("anomaly {id} not found")))
}

/// The window a chart shows around an anomaly.
fn chart_window(a: &Anomaly) -> (i64, i64) {
    let pad = (3 * (a.end_ms - a.start_ms)).max(2 * HOUR_MS);
    (a.start_ms - pad, a.end_ms + pad / 4)
}

/// The points of the anomaly's series in `[start_ms, end_ms)`, oldest first.
async fn series_points(
    s: &ServerState,
    a: &Anomaly,
    start_ms: i64,
    end_ms: i64,
) -> Result<Vec<(i64, f64)>, ApiError> {
    let r = ms_range(start_ms, end_ms);
    if a.source == "red" {
        let rows = s.store.red_buckets(r, RED_BUCKET_MS).await?;
        return Ok(rows
            .iter()
            .filter(|b| b.service == a.service)
            .filter_map(|b| {
                let t = b.start_ms + RED_BUCKET_MS / 2;
                let v = match a.metric.as_str() {
                    "red.rate" => Some(b.requests as f64 * 1000.0 / RED_BUCKET_MS as f64),
                    "red.error_ratio" => {
                        (b.requests > 0).then(|| b.errors as f64 / b.requests as f64)
                    }
                    _ => b.p99_ms,
                };
                v.map(|v| (t, v))
            })
            .collect());
    }
    let attrs: Vec<(String, String)> = a
        .attributes
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str()
                    .map(String::from)
                    .unwrap_or_else(|| v.to_string()),
            )
        })
        .collect();
    let Some(m) = s
        .store
        .metric_points(&a.metric, Some(&a.service), &attrs, Some(r), true)
        .await?
    else {
        return Ok(Vec::new());
    };
    let points = m
        .series
        .into_iter()
        .find(|x| x.series_id == a.series_id)
        .map(|x| x.points)
        .unwrap_or_default();
    let mut out: Vec<(i64, f64)> = points
        .iter()
        .filter_map(|p| Some((p["t"].as_f64()? as i64, p["value"].as_f64()?)))
        .collect();
    // Monotonic cumulative sums are scored as their rate; show the same.
    if m.kind == "sum"
        && points
            .first()
            .is_some_and(|p| p["is_monotonic"] == true && p["temporality"] == 2)
    {
        out = out
            .windows(2)
            .filter(|w| w[1].0 > w[0].0 && w[1].1 >= w[0].1)
            .map(|w| {
                (
                    w[1].0,
                    (w[1].1 - w[0].1) * 1000.0 / (w[1].0 - w[0].0) as f64,
                )
            })
            .collect();
    }
    Ok(out)
}

pub async fn detail(
    State(s): State<ServerState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let a = find(&s, &id).await?;
    let (start, end) = chart_window(&a);
    let points = series_points(&s, &a, start, end).await?;
    Ok(Json(json!({
        "anomaly": a,
        "window": { "start_ms": start, "end_ms": end },
        "points": points.iter().map(|(t, v)| json!([t, v])).collect::<Vec<_>>(),
    })))
}

/// Ranked causes from the anomaly's window: deploys (a new `service.version`), functions whose
/// profile share grew, security alerts on the service, host and process resource series that
/// moved with the anomalous one.
pub async fn evidence(
    State(s): State<ServerState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let a = find(&s, &id).await?;
    let mut items: Vec<Value> = Vec::new();
    let mut sources = serde_json::Map::new();
    let lead = HOUR_MS;
    let end = a.end_ms + RED_BUCKET_MS;

    // Deploys: a version first seen after another one was running.
    let versions = s
        .store
        .service_versions(&a.service, ms_range(a.start_ms - 2 * lead, end))
        .await?;
    let mut deploys = 0;
    for w in versions.windows(2) {
        let (old, new) = (&w[0], &w[1]);
        let weight = deploy_weight(new.first_ms, a.start_ms, lead);
        if weight > 0.0 {
            deploys += 1;
            items.push(json!({
                "kind": "deploy",
                "weight": weight,
                "title": format!("{} deployed {} (was {})", a.service, new.version, old.version),
                "at_ms": new.first_ms,
                "detail": { "version": new.version, "previous": old.version, "spans": new.spans },
                "link": format!("#/traces?service={}&start={}&end={}", enc(&a.service), new.first_ms, new.first_ms + 15 * MINUTE_MS),
            }));
        }
    }
    sources.insert(
        "deploys".into(),
        json!({ "versions_seen": versions.len(), "found": deploys }),
    );

    // Profiles: functions whose share grew against the period of the same length before.
    let now_start = a.start_ms - 5 * MINUTE_MS;
    let len = (end - now_start).max(10 * MINUTE_MS);
    let (now_r, before_r) = (
        ms_range(now_start, now_start + len),
        ms_range(now_start - len, now_start),
    );
    let mut profiled = 0;
    for (kind, name) in [(ProfileKind::Cpu, "cpu"), (ProfileKind::OffCpu, "off_cpu")] {
        let f = ProfileFilter {
            service: Some(a.service.clone()),
            kind: Some(name.into()),
            ..ProfileFilter::default()
        };
        let now = s.store.profile_stacks(&f, now_r).await?;
        let before = s.store.profile_stacks(&f, before_r).await?;
        profiled += now.len();
        let ranked = bottleneck::rank(kind, weights(&now), weights(&before), PER_KIND);
        for b in &ranked.grew {
            let weight = growth_weight(b.before.share, b.now.share, b.z);
            if weight > 0.0 {
                items.push(json!({
                    "kind": "profile",
                    "weight": weight,
                    "title": format!("{} {}: {} grew from {:.1} % to {:.1} %", a.service, if name == "cpu" { "on-CPU" } else { "off-CPU" }, b.function, 100.0 * b.before.share, 100.0 * b.now.share),
                    "detail": { "function": b.function, "profile": name, "before": b.before.share, "now": b.now.share, "z": b.z },
                    "link": format!("#/profiles?service={}&kind={name}&start={}&end={}&q={}", enc(&a.service), now_start, now_start + len, enc(&b.function)),
                }));
            }
        }
    }
    sources.insert("profiles".into(), json!({ "stacks": profiled }));

    // Security alerts, when the store keeps them.
    match s
        .store
        .service_alerts(&a.service, ms_range(a.start_ms - lead, end), PER_KIND)
        .await
    {
        Ok(Some(alerts)) => {
            sources.insert("alerts".into(), json!({ "found": alerts.len() }));
            for al in alerts {
                let title = ["Title", "RuleName", "Rule", "Message"]
                    .iter()
                    .find_map(|k| al.get(*k).and_then(Value::as_str))
                    .unwrap_or("security alert")
                    .to_string();
                items.push(json!({
                    "kind": "alert",
                    "weight": 0.9,
                    "title": format!("{}: {title}", a.service),
                    "detail": al,
                    "link": format!("#/query?sql={}", enc(&format!("SELECT * FROM alerts WHERE ServiceName = '{}'", a.service.replace('\'', "''")))),
                }));
            }
        }
        Ok(None) => {
            sources.insert(
                "alerts".into(),
                json!({ "unavailable": "the store has no alerts table" }),
            );
        }
        Err(e) => {
            sources.insert("alerts".into(), json!({ "unavailable": e.to_string() }));
        }
    }

    // Resources that moved together with the anomalous series.
    let (w_start, w_end) = (a.start_ms - 2 * lead, end + 15 * MINUTE_MS);
    let mine = series_points(&s, &a, w_start, w_end).await?;
    let step = median_step(&mine).max(RED_BUCKET_MS / 4);
    let resources = s
        .store
        .series_points(ms_range(w_start, w_end), Some(&["system.", "process."]))
        .await?;
    let mut by_series: BTreeMap<String, ResourceSeries> = BTreeMap::new();
    for p in resources {
        if p.series_id == a.series_id {
            continue;
        }
        if by_series.len() >= MAX_RESOURCE_SERIES && !by_series.contains_key(&p.series_id) {
            continue;
        }
        by_series
            .entry(p.series_id)
            .or_insert_with(|| ResourceSeries {
                metric: p.metric,
                service: p.service,
                attributes: p.attributes,
                points: Vec::new(),
            })
            .points
            .push((p.t_ms, p.value));
    }
    let mut moved: Vec<Value> = Vec::new();
    for ResourceSeries {
        metric,
        service,
        attributes: attrs,
        points: pts,
    } in by_series.values()
    {
        let Some(r) = correlation(&mine, pts, step, 8) else {
            continue;
        };
        let weight = moved_together_weight(r, 0.5);
        if weight > 0.0 {
            let label: Vec<String> = attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            moved.push(json!({
                "kind": "resource",
                "weight": weight,
                "title": format!("{metric}{} moved {} with it (r = {r:.2})", if label.is_empty() { String::new() } else { format!(" {{{}}}", label.join(", ")) }, if r > 0.0 { "up" } else { "opposite" }),
                "detail": { "metric": metric, "service": service, "attributes": attrs.iter().cloned().collect::<BTreeMap<_, _>>(), "correlation": r },
                "link": format!("#/metrics?name={}&service={}&start={w_start}&end={w_end}", enc(metric), enc(service)),
            }));
        }
    }
    sources.insert(
        "resources".into(),
        json!({ "series": by_series.len(), "found": moved.len() }),
    );
    moved.sort_by(|x, y| weight_of(y).total_cmp(&weight_of(x)));
    items.extend(moved.into_iter().take(PER_KIND));

    items.sort_by(|x, y| weight_of(y).total_cmp(&weight_of(x)));
    Ok(Json(json!({
        "anomaly": a,
        "evidence": items,
        "sources": sources,
    })))
}

/// A `system.*` or `process.*` series read for correlation.
struct ResourceSeries {
    metric: String,
    service: String,
    attributes: Vec<(String, String)>,
    points: Vec<(i64, f64)>,
}

fn weights(
    stacks: &[store::profiles::WeightedStack],
) -> impl Iterator<Item = bottleneck::StackWeight<'_>> {
    stacks.iter().map(|x| bottleneck::StackWeight {
        frames: &x.frames,
        samples: x.samples,
        value_ns: x.value_ns,
    })
}

fn weight_of(v: &Value) -> f64 {
    v["weight"].as_f64().unwrap_or(0.0)
}

fn median_step(points: &[(i64, f64)]) -> i64 {
    let mut steps: Vec<i64> = points
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .filter(|d| *d > 0)
        .collect();
    if steps.is_empty() {
        return MINUTE_MS;
    }
    steps.sort_unstable();
    steps[steps.len() / 2]
}

/// Percent-encodes a URL query value.
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// History for forecasts: `start`/`end` when given, else the last week.
fn history(p: &[(String, String)]) -> Result<TimeRange, ApiError> {
    let mut r = range(p)?;
    if param(p, "start").is_none() {
        r.start_ns = r.end_ns - 7 * DAY_MS * 1_000_000;
    }
    Ok(r)
}

/// Holt-Winters forecast of one metric series with a 90 % band, and when it reaches `limit`.
pub async fn forecast_series(
    State(s): State<ServerState>,
    Query(p): Params,
) -> Result<Json<Value>, ApiError> {
    let name = param(&p, "metric").ok_or_else(|| bad("parameter metric is required"))?;
    let horizon = duration_ms(&p, "horizon")?.unwrap_or(DAY_MS);
    let limit = num::<f64>(&p, "limit", "a number")?;
    if limit.is_some_and(|l| !l.is_finite()) {
        return Err(bad("parameter limit: expected a finite number"));
    }
    let r = history(&p)?;
    let m = s
        .store
        .metric_points(
            name,
            param(&p, "service"),
            &attr_filters(&p)?,
            Some(r),
            true,
        )
        .await?
        .ok_or_else(|| ApiError::not_found(format!("metric {name:?} not found")))?;
    let series = match param(&p, "series") {
        Some(id) => m.series.iter().find(|x| x.series_id == id).ok_or_else(|| {
            ApiError::not_found(format!("metric {name:?} has no series {id:?} in the range"))
        })?,
        None => match m.series.as_slice() {
            [one] => one,
            [] => {
                return Err(ApiError::not_found(format!(
                    "metric {name:?} has no points in the range"
                )));
            }
            many => {
                return Err(bad(format!(
                    "metric {name:?} has {} series in the range; name one with series= (one of {})",
                    many.len(),
                    many.iter()
                        .take(10)
                        .map(|x| x.series_id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        },
    };
    let points: Vec<(i64, f64)> = series.finite_points();
    let regular = RegularSeries::from_points(&points).ok_or_else(|| {
        bad(format!(
            "metric {name:?}: too few points to forecast ({})",
            points.len()
        ))
    })?;
    let steps = usize::try_from(horizon / regular.step_ms.max(1))
        .unwrap_or(usize::MAX)
        .clamp(1, 2000);
    let settings = ForecastSettings {
        level: 0.9,
        ..ForecastSettings::default()
    };
    let f = forecast(&regular, steps, &settings).ok_or_else(|| {
        bad(format!(
            "metric {name:?}: too little history to forecast ({} points)",
            points.len()
        ))
    })?;
    let times: Vec<i64> = (0..f.mean.len()).map(|i| f.time_of(i)).collect();
    let saturation = match limit {
        None => Value::Null,
        Some(l) => {
            let crossing = TimeToSaturation::default().estimate_series(&regular, l, horizon);
            let alert = SaturationAlert {
                warn_within_ms: horizon,
                critical_within_ms: horizon / 4,
            };
            let now = regular.last_ms();
            json!({
                "limit": l,
                "crossing": crossing,
                "level": alert.decide(now, crossing.as_ref()),
                "in_ms": crossing.map(|c| c.at_ms - now),
            })
        }
    };
    Ok(Json(json!({
        "metric": name,
        "series_id": series.series_id,
        "service": series.service,
        "attributes": series.attributes,
        "history_points": points.len(),
        "step_ms": f.step_ms,
        "level": f.level,
        "horizon_ms": horizon,
        "forecast": { "t": times, "mean": f.mean, "lower": f.lower, "upper": f.upper },
        "saturation": saturation,
    })))
}

/// Resources with a known limit predicted to reach it within `horizon` (default 7 days).
pub async fn saturation(
    State(s): State<ServerState>,
    Query(p): Params,
) -> Result<Json<Value>, ApiError> {
    let horizon = duration_ms(&p, "horizon")?.unwrap_or(7 * DAY_MS);
    let mut r = range(&p)?;
    if param(&p, "start").is_none() {
        r.start_ns = r.end_ns - DAY_MS * 1_000_000;
    }
    let alert = SaturationAlert {
        warn_within_ms: horizon,
        critical_within_ms: horizon / 4,
    };
    let mut checked = 0usize;
    let mut out: Vec<Value> = Vec::new();
    for name in insight::saturation::SATURATING_METRICS {
        let Some(m) = s
            .store
            .metric_points(name, None, &[], Some(r), true)
            .await?
        else {
            continue;
        };
        let limit = insight::saturation::utilization_limit(&m.unit);
        for series in m.series {
            if checked >= MAX_SATURATION_SERIES {
                break;
            }
            checked += 1;
            let points: Vec<(i64, f64)> = series.finite_points();
            let Some(last) = points.last().copied() else {
                continue;
            };
            let Some(c) = TimeToSaturation::estimate(&points, limit, horizon) else {
                continue;
            };
            out.push(json!({
                "metric": name,
                "service": series.service,
                "series_id": series.series_id,
                "attributes": series.attributes,
                "limit": limit,
                "last": { "t": last.0, "value": last.1 },
                "crossing": c,
                "level": alert.decide(last.0, Some(&c)),
                "in_ms": c.at_ms - last.0,
            }));
        }
    }
    out.sort_by_key(|v| v["crossing"]["at_ms"].as_i64().unwrap_or(i64::MAX));
    Ok(Json(json!({
        "horizon_ms": horizon,
        "checked_series": checked,
        "resources": out,
    })))
}

/// Load-to-latency per service: the Universal Scalability Law fit of p99 against request rate
/// over RED buckets of the history, the rate at which p99 reaches the objective, and when the
/// traffic forecast gets there. With `service`, one service with its curve and samples for a
/// chart; without, every service's summary.
pub async fn load_latency(
    State(s): State<ServerState>,
    Query(p): Params,
) -> Result<Json<Value>, ApiError> {
    let objective_ms = match param(&p, "objective") {
        Some(_) => duration_ms(&p, "objective")?.unwrap_or(0) as f64,
        None => s.latency_objective_ms,
    };
    let horizon = duration_ms(&p, "horizon")?.unwrap_or(7 * DAY_MS);
    let bucket = duration_ms(&p, "bucket")?.unwrap_or(RED_BUCKET_MS);
    if bucket < 1000 {
        return Err(bad(format!(
            "parameter bucket: at least 1s, found {bucket} ms"
        )));
    }
    let r = history(&p)?;
    let service = param(&p, "service");
    let rows = s.store.red_buckets(r, bucket).await?;
    let mut by_service: BTreeMap<&str, Vec<&store::insights::RedBucket>> = BTreeMap::new();
    // Buckets cut by the range's edges hold part of their traffic: their rate would lie.
    let (first_ms, last_ms) = (r.start_ns / 1_000_000, r.end_ns / 1_000_000);
    for row in &rows {
        let whole = row.start_ms >= first_ms && row.start_ms + bucket <= last_ms;
        if whole && service.is_none_or(|svc| svc == row.service) {
            by_service.entry(&row.service).or_default().push(row);
        }
    }
    if let Some(svc) = service
        && !by_service.contains_key(svc)
    {
        return Err(ApiError::not_found(format!(
            "no spans of service {svc:?} in the range"
        )));
    }
    let mut out = Vec::new();
    for (svc, buckets) in by_service.into_iter().take(MAX_LOAD_SERVICES) {
        out.push(service_load(
            svc,
            &buckets,
            bucket,
            objective_ms,
            horizon,
            service.is_some(),
        ));
    }
    if service.is_some() {
        return Ok(Json(out.pop().unwrap_or(Value::Null)));
    }
    Ok(Json(json!({
        "objective_ms": objective_ms,
        "horizon_ms": horizon,
        "services": out,
    })))
}

fn service_load(
    service: &str,
    buckets: &[&store::insights::RedBucket],
    bucket_ms: i64,
    objective_ms: f64,
    horizon_ms: i64,
    detailed: bool,
) -> Value {
    let per_second = 1000.0 / bucket_ms as f64;
    let samples: Vec<LoadSample> = buckets
        .iter()
        .filter_map(|b| {
            Some(LoadSample {
                rate: b.requests as f64 * per_second,
                latency: b.p99_ms?,
            })
        })
        .collect();
    let traffic: Vec<(i64, f64)> = buckets
        .iter()
        .map(|b| (b.start_ms + bucket_ms / 2, b.requests as f64 * per_second))
        .collect();
    let current_rate = traffic.last().map(|t| t.1);
    let fit = UslFit::fit(&samples);
    let mut v = json!({
        "service": service,
        "objective_ms": objective_ms,
        "horizon_ms": horizon_ms,
        "samples": samples.len(),
        "current_rate": current_rate,
        "max_observed_rate": samples.iter().map(|s| s.rate).fold(0.0, f64::max),
        "fit": Value::Null,
        "capacity_rate": Value::Null,
        "rate_at_objective": Value::Null,
        "objective_crossing": Value::Null,
    });
    if let Some(fit) = fit {
        let capacity = fit.capacity();
        let at = fit.rate_at_objective(objective_ms);
        v["fit"] = json!(fit);
        v["capacity_rate"] = json!(capacity.is_finite().then_some(capacity));
        v["rate_at_objective"] = json!(at);
        if at.rate > 0.0
            && let Some(c) = TimeToSaturation::estimate(&traffic, at.rate, horizon_ms)
        {
            let last = traffic.last().map_or(0, |t| t.0);
            v["objective_crossing"] = json!({
                "crossing": c,
                "in_ms": (c.at_ms - last).max(0),
            });
        }
        if detailed {
            let top = if capacity.is_finite() {
                capacity
            } else {
                at.rate.max(v["max_observed_rate"].as_f64().unwrap_or(0.0)) * 1.2
            };
            let curve: Vec<Value> = (0..CURVE_POINTS)
                .filter_map(|i| {
                    let rate = top * i as f64 / CURVE_POINTS as f64;
                    let p99 = fit.latency_at(rate)?;
                    Some(json!({"rate": rate, "p99_ms": p99}))
                })
                .collect();
            v["curve"] = json!(curve);
        }
    }
    if detailed {
        let step = samples.len().div_ceil(MAX_OBSERVED).max(1);
        let observed: Vec<Value> = samples
            .iter()
            .step_by(step)
            .map(|s| json!({"rate": s.rate, "p99_ms": s.latency}))
            .collect();
        v["observed"] = json!(observed);
    }
    v
}

#[cfg(test)]
#[path = "insights_tests.rs"]
mod tests;
