//! `/api/v1` handlers: parameters in, store reads out.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use store::StoreError;
use store::read::{LogFilter, TimeRange, TraceFilter};

use crate::ServerState;

pub(crate) type Params = Query<Vec<(String, String)>>;

pub struct ApiError(pub(crate) StatusCode, pub(crate) String);

impl ApiError {
    pub(crate) fn internal(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, msg.into())
    }

    pub(crate) fn not_found(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::NOT_FOUND, msg.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_query_error() {
            ApiError(StatusCode::BAD_REQUEST, e.to_string())
        } else {
            ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
    }
}

pub(crate) fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

pub(crate) fn param<'a>(p: &'a [(String, String)], key: &str) -> Option<&'a str> {
    p.iter()
        .rev()
        .find(|(k, v)| k == key && !v.is_empty())
        .map(|(_, v)| v.as_str())
}

pub(crate) fn num<T: std::str::FromStr>(
    p: &[(String, String)],
    key: &str,
    what: &str,
) -> Result<Option<T>, ApiError> {
    param(p, key)
        .map(|v| {
            v.parse::<T>()
                .map_err(|_| bad(format!("parameter {key}: expected {what}, found {v:?}")))
        })
        .transpose()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) fn range(p: &[(String, String)]) -> Result<TimeRange, ApiError> {
    let end = num::<i64>(p, "end", "unix milliseconds")?.unwrap_or_else(now_ms);
    let start = num::<i64>(p, "start", "unix milliseconds")?.unwrap_or(end - 3_600_000);
    if start > end {
        return Err(bad(format!(
            "parameter start ({start}) is after end ({end})"
        )));
    }
    // `end` is inclusive to the millisecond for users; the store's range is half-open.
    Ok(TimeRange {
        start_ns: start.saturating_mul(1_000_000),
        end_ns: end.saturating_add(1).saturating_mul(1_000_000),
    })
}

pub(crate) fn attr_filters(p: &[(String, String)]) -> Result<Vec<(String, String)>, ApiError> {
    p.iter()
        .filter(|(k, v)| k == "attr" && !v.is_empty())
        .map(|(_, v)| {
            v.split_once('=')
                .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))
                .filter(|(a, _)| !a.is_empty())
                .ok_or_else(|| bad(format!("parameter attr: expected key=value, found {v:?}")))
        })
        .collect()
}

pub(crate) fn require_token(state: &ServerState, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if pipeline::auth::bearer_matches(given, &state.api_token) {
        return Ok(());
    }
    Err(ApiError(
        StatusCode::UNAUTHORIZED,
        "this endpoint needs the API token: header `Authorization: Bearer <token>` (the token is in <data-dir>/api-token)".into(),
    ))
}

async fn status(State(s): State<ServerState>) -> Json<Value> {
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "data_dir": s.data_dir,
        "uptime_s": s.started.elapsed().as_secs_f64(),
        "store": s.store.stats(),
        "queue": { "capacity_bytes": s.pipeline.capacity_bytes(), "used_bytes": s.pipeline.used_bytes() },
    }))
}

async fn services(State(s): State<ServerState>, Query(p): Params) -> Result<Json<Value>, ApiError> {
    let r = range(&p)?;
    Ok(Json(json!({ "services": s.store.services(r).await? })))
}

async fn operations(
    State(s): State<ServerState>,
    Query(p): Params,
) -> Result<Json<Value>, ApiError> {
    let svc = param(&p, "service").ok_or_else(|| bad("parameter service is required"))?;
    let r = range(&p)?;
    Ok(Json(
        json!({ "operations": s.store.operations(svc, r).await? }),
    ))
}

async fn traces(State(s): State<ServerState>, Query(p): Params) -> Result<Json<Value>, ApiError> {
    let r = range(&p)?;
    let ms_to_ns = |v: Option<f64>| v.map(|ms| (ms.max(0.0) * 1e6) as u64);
    let status = match param(&p, "status").map(|v| v.to_ascii_lowercase()) {
        None => None,
        Some(v) => Some(match v.trim_start_matches("status_code_") {
            "ok" => "STATUS_CODE_OK",
            "error" => "STATUS_CODE_ERROR",
            "unset" => "STATUS_CODE_UNSET",
            _ => {
                return Err(bad(format!(
                    "parameter status: expected ok, error or unset, found {v:?}"
                )));
            }
        }),
    };
    let f = TraceFilter {
        service: param(&p, "service").map(String::from),
        operation: param(&p, "operation").map(String::from),
        min_duration_ns: ms_to_ns(num(&p, "min_duration_ms", "milliseconds")?),
        max_duration_ns: ms_to_ns(num(&p, "max_duration_ms", "milliseconds")?),
        status: status.map(String::from),
        attributes: attr_filters(&p)?,
        limit: num(&p, "limit", "a count")?.unwrap_or(20),
    };
    Ok(Json(
        json!({ "traces": s.store.search_traces(&f, r).await? }),
    ))
}

async fn trace(
    State(s): State<ServerState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(format!(
            "trace id: expected 32 hex characters, found {id:?}"
        )));
    }
    let spans = s.store.trace(&id).await?;
    if spans.is_empty() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("trace {id} not found"),
        ));
    }
    Ok(Json(
        json!({ "trace_id": id.to_ascii_lowercase(), "spans": spans }),
    ))
}

fn severity(v: &str) -> Result<i32, ApiError> {
    if let Ok(n) = v.parse::<i32>() {
        return if (1..=24).contains(&n) {
            Ok(n)
        } else {
            Err(bad(format!("parameter severity: expected 1-24, found {n}")))
        };
    }
    Ok(match v.to_ascii_lowercase().as_str() {
        "trace" => 1,
        "debug" => 5,
        "info" => 9,
        "warn" | "warning" => 13,
        "error" => 17,
        "fatal" => 21,
        _ => {
            return Err(bad(format!(
                "parameter severity: expected a number 1-24 or trace, debug, info, warn, error, fatal; found {v:?}"
            )));
        }
    })
}

async fn logs(State(s): State<ServerState>, Query(p): Params) -> Result<Json<Value>, ApiError> {
    let r = range(&p)?;
    let f = LogFilter {
        service: param(&p, "service").map(String::from),
        min_severity: param(&p, "severity").map(severity).transpose()?,
        text: param(&p, "q").map(String::from),
        trace_id: param(&p, "trace_id").map(String::from),
        limit: num(&p, "limit", "a count")?.unwrap_or(100),
    };
    Ok(Json(json!({ "logs": s.store.logs(&f, r).await? })))
}

async fn metrics(State(s): State<ServerState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "metrics": s.store.metric_names().await? })))
}

async fn metric_series(
    State(s): State<ServerState>,
    Query(p): Params,
) -> Result<Response, ApiError> {
    metric_query(s, p, false).await
}

async fn metric_points(
    State(s): State<ServerState>,
    Query(p): Params,
) -> Result<Response, ApiError> {
    metric_query(s, p, true).await
}

async fn metric_query(
    s: ServerState,
    p: Vec<(String, String)>,
    with_points: bool,
) -> Result<Response, ApiError> {
    let name = param(&p, "name").ok_or_else(|| bad("parameter name is required"))?;
    let r = if with_points { Some(range(&p)?) } else { None };
    match s
        .store
        .metric_points(
            name,
            param(&p, "service"),
            &attr_filters(&p)?,
            r,
            with_points,
        )
        .await?
    {
        Some(m) => Ok(Json(m).into_response()),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("metric {name:?} not found"),
        )),
    }
}

#[derive(serde::Deserialize)]
struct QueryBody {
    sql: String,
}

async fn query(
    State(s): State<ServerState>,
    body: Result<Json<QueryBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(q) = body.map_err(|e| {
        bad(format!(
            "expected a JSON body {{\"sql\": \"SELECT ...\"}}: {e}"
        ))
    })?;
    let first = q
        .sql
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    if !matches!(
        first.as_str(),
        "SELECT" | "WITH" | "EXPLAIN" | "SHOW" | "DESCRIBE" | "VALUES" | "("
    ) {
        return Err(bad(format!(
            "only read-only queries are allowed (SELECT, WITH, EXPLAIN, SHOW, DESCRIBE); found {first:?}"
        )));
    }
    let r = s.store.sql_json(&q.sql).await?;
    Ok(Json(json!(r)))
}

async fn flush(State(s): State<ServerState>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    require_token(&s, &headers)?;
    let n = s.store.flush().await?;
    Ok(Json(json!({ "flushed_rows": n })))
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

pub fn router(state: ServerState) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/services", get(services))
        .route("/operations", get(operations))
        .route("/traces", get(traces))
        .route("/traces/{id}", get(trace))
        .route("/logs", get(logs))
        .route("/metrics", get(metrics))
        .route("/metrics/series", get(metric_series))
        .route("/metrics/points", get(metric_points))
        .route("/profiles/flamegraph", get(crate::profiles::flamegraph))
        .route("/profiles/folded", get(crate::profiles::folded))
        .route("/profiles/pprof", get(crate::profiles::pprof))
        .route("/profiles/otlp", get(crate::profiles::otlp))
        .route("/profiles/diff", get(crate::profiles::diff))
        .route("/profiles/status", get(crate::profile_traffic::status))
        .route(
            "/profiles/high_traffic",
            get(crate::profile_traffic::high_traffic),
        )
        .route("/profiles/traces", get(crate::profile_traffic::traces))
        .route("/bottlenecks", get(crate::profiles::bottlenecks))
        .route(
            "/traces/{id}/spans/{span}/profile",
            get(crate::profiles::span_profile),
        )
        .route("/security/alerts", get(crate::security::alerts))
        .route("/security/alerts/{id}", get(crate::security::alert))
        .route(
            "/security/alerts/{id}/{action}",
            post(crate::security::alert_action),
        )
        .route("/security/events", get(crate::security::events))
        .route("/security/status", get(crate::security::status))
        .route("/security/baselines", get(crate::security::baselines))
        .route(
            "/security/baselines/{*rest}",
            post(crate::security::baseline_action),
        )
        .route("/anomalies", get(crate::insights::list))
        .route("/anomalies/{id}", get(crate::insights::detail))
        .route("/anomalies/{id}/evidence", get(crate::insights::evidence))
        .route("/forecast", get(crate::insights::forecast_series))
        .route("/saturation", get(crate::insights::saturation))
        .route("/load-latency", get(crate::insights::load_latency))
        .route("/query", post(query))
        .route("/admin/flush", post(flush))
        .route("/openapi.json", get(openapi))
        .fallback(|| async {
            ApiError(
                StatusCode::NOT_FOUND,
                "no such API endpoint; see /api/v1/openapi.json".into(),
            )
        })
        .with_state(state)
}
