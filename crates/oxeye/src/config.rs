//! The YAML config (OpenTelemetry Collector vocabulary) and its validation.
//!
//! Everything wrong with a file is reported at once, each problem with its YAML path, before
//! anything starts. Flags and environment variables override the file; the file overrides defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_yaml::Value;

/// The settings `oxeye up` runs with, after defaults, file, env and flags are merged.
#[derive(Clone, Debug)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub http_addr: SocketAddr,
    /// None when the config disables the protocol.
    pub otlp_grpc_addr: Option<SocketAddr>,
    pub otlp_http_addr: Option<SocketAddr>,
    pub receiver_token: Option<String>,
    pub max_body_bytes: usize,
    pub queue_bytes: usize,
    pub retention_age: Option<Duration>,
    pub retention_bytes: Option<u64>,
    pub flush_interval: Duration,
    pub enrich_host: bool,
    pub enrich_process: bool,
    /// 0: profiling off.
    pub profile_hz: u32,
    pub off_cpu: crate::profiler::OffCpuMode,
    pub security: crate::security::SecuritySettings,
    /// How often the insights job scores new points; zero turns it off.
    pub insight_interval: Duration,
    /// `insights.alerts`: which anomalies and saturation forecasts raise alerts.
    pub insight_alerts: crate::insights::AlertSettings,
    /// `insights.latency_objective`: the p99 a service should stay under (load-to-latency).
    pub latency_objective: Duration,
    pub profile_boost_hz: u32,
    pub profile_boost_for: Duration,
    /// Requests per second that count as high traffic whatever the baseline says.
    pub profile_boost_threshold: Option<f64>,
    /// Share of the host's CPU (0.01: 1 %).
    pub profile_budget: f64,
    /// How often oxeye's CPU use is measured against the budget.
    pub profile_budget_interval: Duration,
    /// Kernel memory for `.eh_frame` unwind tables (12 bytes a row); 0 turns table unwinding off.
    pub profile_unwind_bytes: u64,
    /// `exporters: otlp…` entries: where this host's profiles are sent.
    pub otlp_exporters: Vec<crate::otlp_export::OtlpExporterConfig>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            data_dir: PathBuf::from("data"),
            http_addr: "127.0.0.1:7070".parse().unwrap_or_else(|_| unreachable!()),
            otlp_grpc_addr: "127.0.0.1:4317".parse().ok(),
            otlp_http_addr: "127.0.0.1:4318".parse().ok(),
            receiver_token: None,
            max_body_bytes: 16 << 20,
            queue_bytes: 64 << 20,
            retention_age: Some(Duration::from_secs(7 * 86400)),
            retention_bytes: None,
            flush_interval: Duration::from_secs(60),
            enrich_host: true,
            enrich_process: true,
            profile_hz: 19,
            off_cpu: crate::profiler::OffCpuMode::Traced,
            security: crate::security::SecuritySettings::default(),
            insight_interval: Duration::from_secs(30),
            insight_alerts: crate::insights::AlertSettings::default(),
            latency_objective: Duration::from_millis(500),
            profile_boost_hz: 99,
            profile_boost_for: Duration::from_secs(300),
            profile_boost_threshold: None,
            profile_budget: 0.01,
            profile_budget_interval: Duration::from_secs(30),
            profile_unwind_bytes: 12 << 20,
            otlp_exporters: Vec::new(),
        }
    }
}

/// Parses `10s`, `5m`, `12h`, `7d`, `250ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("expected a duration like 30s, 15m, 12h or 7d, found {s:?}"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        "w" => n * 7.0 * 86400.0,
        _ => {
            return Err(format!(
                "expected a duration like 30s, 15m, 12h or 7d, found {s:?}"
            ));
        }
    };
    Ok(Duration::from_secs_f64(secs))
}

/// Parses `1048576`, `512KiB`, `64MiB`, `10GiB`, `1GB`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("expected a size like 512MiB or 10GiB, found {s:?}"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "tib" => 1024f64.powi(4),
        _ => return Err(format!("expected a size like 512MiB or 10GiB, found {s:?}")),
    };
    Ok((n * mult) as u64)
}

pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let with_host = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_string()
    };
    let with_host = if with_host.starts_with("localhost:") {
        with_host.replacen("localhost", "127.0.0.1", 1)
    } else {
        with_host
    };
    with_host
        .parse()
        .map_err(|_| format!("expected host:port such as 127.0.0.1:4317, found {s:?}"))
}

/// Collects problems with their YAML paths.
#[derive(Default)]
pub(crate) struct Problems(Vec<String>);

impl Problems {
    pub(crate) fn add(&mut self, path: &str, msg: impl std::fmt::Display) {
        self.0.push(format!("{path}: {msg}"));
    }
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// The keys of a mapping (reporting unknown ones), or None with a problem if it is not a mapping.
pub(crate) fn mapping<'a>(
    v: &'a Value,
    path: &str,
    known: &[&str],
    p: &mut Problems,
) -> Option<Vec<(String, &'a Value)>> {
    match v {
        Value::Null => Some(Vec::new()),
        Value::Mapping(m) => {
            let mut out = Vec::new();
            for (k, val) in m {
                let Some(k) = k.as_str() else {
                    p.add(path, format!("keys must be strings, found {}", kind(k)));
                    continue;
                };
                if !known.is_empty()
                    && !known.contains(&k)
                    && !known
                        .iter()
                        .any(|kn| kn.ends_with('/') && k.starts_with(kn))
                {
                    p.add(
                        &join(path, k),
                        format!("unknown key (expected one of: {})", known.join(", ")),
                    );
                    continue;
                }
                out.push((k.to_string(), val));
            }
            Some(out)
        }
        other => {
            p.add(path, format!("expected a mapping, found {}", kind(other)));
            None
        }
    }
}

pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

pub(crate) fn string(v: &Value, path: &str, p: &mut Problems) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        other => {
            p.add(path, format!("expected a string, found {}", kind(other)));
            None
        }
    }
}

pub(crate) fn boolean(v: &Value, path: &str, p: &mut Problems) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        other => {
            p.add(
                path,
                format!("expected true or false, found {}", kind(other)),
            );
            None
        }
    }
}

pub(crate) fn with<T>(
    v: &Value,
    path: &str,
    p: &mut Problems,
    f: impl Fn(&str) -> Result<T, String>,
) -> Option<T> {
    let s = string(v, path, p)?;
    match f(&s) {
        Ok(t) => Some(t),
        Err(e) => {
            p.add(path, e);
            None
        }
    }
}

/// `insights.alerts`: `anomaly_severity` (minor, major, critical or off), `saturation_within`
/// (a duration, 0 turns saturation alerts off), `saturation_confidence` (0..1).
fn insight_alerts(v: &Value, path: &str, a: &mut crate::insights::AlertSettings, p: &mut Problems) {
    let known = [
        "anomaly_severity",
        "saturation_within",
        "saturation_confidence",
    ];
    for (k, v) in mapping(v, path, &known, p).unwrap_or_default() {
        let kp = join(path, &k);
        match k.as_str() {
            "anomaly_severity" => {
                let parse = |t: &str| match t {
                    "off" => Ok(None),
                    t if crate::insights::ANOMALY_SEVERITIES.contains(&t) => {
                        Ok(Some(t.to_string()))
                    }
                    t => Err(format!(
                        "expected minor, major, critical or off, found `{t}`"
                    )),
                };
                if let Some(x) = with(v, &kp, p, parse) {
                    a.anomaly_severity = x;
                }
            }
            "saturation_within" => {
                if let Some(d) = with(v, &kp, p, parse_duration) {
                    a.saturation_within = d;
                }
            }
            _ => {
                let parse = |t: &str| match t.parse::<f64>() {
                    Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
                    _ => Err(format!("expected a probability from 0 to 1, found `{t}`")),
                };
                if let Some(x) = with(v, &kp, p, parse) {
                    a.saturation_confidence = x;
                }
            }
        }
    }
}

/// Applies a config file on top of `s`. Returns every problem found, or the updated settings.
pub fn apply_file(text: &str, s: &mut Settings) -> Result<(), Vec<String>> {
    let root: Value =
        serde_yaml::from_str(text).map_err(|e| vec![format!("not valid YAML: {e}")])?;
    let mut p = Problems::default();
    let top = mapping(
        &root,
        "",
        &[
            "receivers",
            "processors",
            "exporters",
            "pipelines",
            "server",
            "security",
            "insights",
            "profiler",
        ],
        &mut p,
    )
    .unwrap_or_default();
    let mut receivers: Vec<String> = Vec::new();
    let mut processors: Vec<String> = Vec::new();
    let mut exporters: Vec<String> = Vec::new();
    for (key, val) in &top {
        match key.as_str() {
            "receivers" => {
                for (name, r) in
                    mapping(val, "receivers", &["otlp", "otlp/"], &mut p).unwrap_or_default()
                {
                    receivers.push(name.clone());
                    let path = format!("receivers.{name}");
                    for (k, v) in mapping(r, &path, &["protocols", "bearer_token"], &mut p)
                        .unwrap_or_default()
                    {
                        let kp = join(&path, &k);
                        match k.as_str() {
                            "bearer_token" => s.receiver_token = string(v, &kp, &mut p),
                            _ => {
                                s.otlp_grpc_addr = None;
                                s.otlp_http_addr = None;
                                for (proto, pv) in
                                    mapping(v, &kp, &["grpc", "http"], &mut p).unwrap_or_default()
                                {
                                    let pp = join(&kp, &proto);
                                    let default = if proto == "grpc" {
                                        "127.0.0.1:4317"
                                    } else {
                                        "127.0.0.1:4318"
                                    };
                                    let mut addr = parse_addr(default).ok();
                                    let known: &[&str] = if proto == "grpc" {
                                        &["endpoint"]
                                    } else {
                                        &["endpoint", "max_request_body_size"]
                                    };
                                    for (f, fv) in
                                        mapping(pv, &pp, known, &mut p).unwrap_or_default()
                                    {
                                        let fp = join(&pp, &f);
                                        match f.as_str() {
                                            "endpoint" => addr = with(fv, &fp, &mut p, parse_addr),
                                            _ => {
                                                if let Some(n) = with(fv, &fp, &mut p, parse_size) {
                                                    s.max_body_bytes = n as usize;
                                                }
                                            }
                                        }
                                    }
                                    if proto == "grpc" {
                                        s.otlp_grpc_addr = addr;
                                    } else {
                                        s.otlp_http_addr = addr;
                                    }
                                }
                            }
                        }
                    }
                }
            }
            "processors" => {
                for (name, pr) in mapping(
                    val,
                    "processors",
                    &["resourcedetection", "resourcedetection/", "memory_limiter"],
                    &mut p,
                )
                .unwrap_or_default()
                {
                    processors.push(name.clone());
                    let path = format!("processors.{name}");
                    if name.starts_with("resourcedetection") {
                        for (k, v) in
                            mapping(pr, &path, &["host", "process"], &mut p).unwrap_or_default()
                        {
                            let b = boolean(v, &join(&path, &k), &mut p);
                            match (k.as_str(), b) {
                                ("host", Some(b)) => s.enrich_host = b,
                                ("process", Some(b)) => s.enrich_process = b,
                                _ => {}
                            }
                        }
                    } else {
                        for (k, v) in mapping(pr, &path, &["limit"], &mut p).unwrap_or_default() {
                            if let Some(n) = with(v, &join(&path, &k), &mut p, parse_size) {
                                s.queue_bytes = n as usize;
                            }
                        }
                    }
                }
            }
            "exporters" => {
                for (name, e) in mapping(
                    val,
                    "exporters",
                    &["store", "store/", "otlp", "otlp/"],
                    &mut p,
                )
                .unwrap_or_default()
                {
                    exporters.push(name.clone());
                    let path = format!("exporters.{name}");
                    if name == "otlp" || name.starts_with("otlp/") {
                        if let Some(cfg) = otlp_exporter(&name, e, &path, &mut p) {
                            s.otlp_exporters.push(cfg);
                        }
                        continue;
                    }
                    for (k, v) in mapping(
                        e,
                        &path,
                        &["data_dir", "retention", "flush_interval"],
                        &mut p,
                    )
                    .unwrap_or_default()
                    {
                        let kp = join(&path, &k);
                        match k.as_str() {
                            "data_dir" => {
                                if let Some(d) = string(v, &kp, &mut p) {
                                    s.data_dir = PathBuf::from(d);
                                }
                            }
                            "flush_interval" => {
                                if let Some(d) = with(v, &kp, &mut p, parse_duration) {
                                    s.flush_interval = d;
                                }
                            }
                            _ => {
                                for (rk, rv) in mapping(v, &kp, &["max_age", "max_size"], &mut p)
                                    .unwrap_or_default()
                                {
                                    let rp = join(&kp, &rk);
                                    if rk == "max_age" {
                                        s.retention_age = with(rv, &rp, &mut p, parse_duration);
                                    } else {
                                        s.retention_bytes = with(rv, &rp, &mut p, parse_size);
                                    }
                                }
                            }
                        }
                    }
                }
            }
            "security" => crate::security::apply_config(val, &mut s.security, &mut p),
            "profiler" => apply_profiler(val, s, &mut p),
            "server" => {
                for (k, v) in mapping(val, "server", &["endpoint"], &mut p).unwrap_or_default() {
                    if let Some(a) = with(v, &join("server", &k), &mut p, parse_addr) {
                        s.http_addr = a;
                    }
                }
            }
            "insights" => {
                let known = ["interval", "latency_objective", "alerts"];
                for (k, v) in mapping(val, "insights", &known, &mut p).unwrap_or_default() {
                    let kp = join("insights", &k);
                    match k.as_str() {
                        "interval" => {
                            if let Some(d) = with(v, &kp, &mut p, parse_duration) {
                                s.insight_interval = d;
                            }
                        }
                        "latency_objective" => match with(v, &kp, &mut p, parse_duration) {
                            Some(d) if d.is_zero() => {
                                p.add(&kp, "expected a positive duration, e.g. 300ms")
                            }
                            Some(d) => s.latency_objective = d,
                            None => {}
                        },
                        _ => insight_alerts(v, &kp, &mut s.insight_alerts, &mut p),
                    }
                }
            }
            _ => {}
        }
    }
    // Pipelines may only name components defined above.
    if let Some((_, pl)) = top.iter().find(|(k, _)| k == "pipelines") {
        for (name, def) in mapping(
            pl,
            "pipelines",
            &[
                "traces",
                "metrics",
                "logs",
                "profiles",
                "traces/",
                "metrics/",
                "logs/",
                "profiles/",
            ],
            &mut p,
        )
        .unwrap_or_default()
        {
            let path = format!("pipelines.{name}");
            for (k, v) in mapping(
                def,
                &path,
                &["receivers", "processors", "exporters"],
                &mut p,
            )
            .unwrap_or_default()
            {
                let kp = join(&path, &k);
                let defined = match k.as_str() {
                    "receivers" => &receivers,
                    "processors" => &processors,
                    _ => &exporters,
                };
                match v {
                    Value::Sequence(items) => {
                        for (i, item) in items.iter().enumerate() {
                            let ip = format!("{kp}[{i}]");
                            if let Some(n) = string(item, &ip, &mut p)
                                && !defined.contains(&n)
                            {
                                p.add(&ip, format!("{n:?} is not defined under {k}"));
                            }
                        }
                    }
                    other => p.add(&kp, format!("expected a list, found {}", kind(other))),
                }
            }
        }
    }
    if p.0.is_empty() { Ok(()) } else { Err(p.0) }
}

/// Sampling rate of every process: 0 (off) to 1000 per second per CPU.
pub fn parse_profile_hz(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(v) if v <= 1000 => Ok(v),
        _ => Err(format!(
            "expected 0 (off) to 1000 samples per second, found {s:?}"
        )),
    }
}

/// The boosted sampling rate: 1 to 1000 per second per CPU.
pub fn parse_boost_hz(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(v) if (1..=1000).contains(&v) => Ok(v),
        _ => Err(format!(
            "expected 1 to 1000 samples per second, found {s:?}"
        )),
    }
}

/// Requests per second above zero.
pub fn parse_boost_threshold(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("expected requests per second above 0, found {s:?}")),
    }
}

/// `unwind_tables`: 0 (off) or a size from 1 MiB to 1 GiB.
pub fn parse_unwind_tables(s: &str) -> Result<u64, String> {
    match parse_size(s) {
        Ok(0) => Ok(0),
        Ok(n) if ((1 << 20)..=(1 << 30)).contains(&n) => Ok(n),
        _ => Err(format!(
            "expected 0 (off) or a size from 1MiB to 1GiB, found {s:?}"
        )),
    }
}

/// `profiler: { hz, off_cpu, boost: { hz, for, threshold }, budget, unwind_tables }`: the same
/// settings as the `--profile-*` and `--off-cpu` flags, which override them (`unwind_tables` is
/// only set here).
fn apply_profiler(v: &Value, s: &mut Settings, p: &mut Problems) {
    let known = ["hz", "off_cpu", "boost", "budget", "unwind_tables"];
    for (k, val) in mapping(v, "profiler", &known, p).unwrap_or_default() {
        let path = join("profiler", &k);
        match k.as_str() {
            "hz" => {
                if let Some(hz) = with(val, &path, p, parse_profile_hz) {
                    s.profile_hz = hz;
                }
            }
            "off_cpu" => {
                if let Some(mode) = with(val, &path, p, crate::profiler::OffCpuMode::parse) {
                    s.off_cpu = mode;
                }
            }
            "budget" => {
                if let Some(share) = with(val, &path, p, crate::budget::parse_share) {
                    s.profile_budget = share;
                }
            }
            "unwind_tables" => {
                if let Some(bytes) = with(val, &path, p, parse_unwind_tables) {
                    s.profile_unwind_bytes = bytes;
                }
            }
            _ => {
                let known = ["hz", "for", "threshold"];
                for (bk, bv) in mapping(val, &path, &known, p).unwrap_or_default() {
                    let bp = join(&path, &bk);
                    match bk.as_str() {
                        "hz" => {
                            if let Some(hz) = with(bv, &bp, p, parse_boost_hz) {
                                s.profile_boost_hz = hz;
                            }
                        }
                        "for" => {
                            if let Some(d) = with(bv, &bp, p, parse_duration) {
                                s.profile_boost_for = d;
                            }
                        }
                        _ => {
                            if let Some(t) = with(bv, &bp, p, parse_boost_threshold) {
                                s.profile_boost_threshold = Some(t);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `exporters.otlp: { endpoint, headers, bearer_token, compression, interval }`.
fn otlp_exporter(
    name: &str,
    e: &Value,
    path: &str,
    p: &mut Problems,
) -> Option<crate::otlp_export::OtlpExporterConfig> {
    let mut cfg = crate::otlp_export::OtlpExporterConfig {
        name: name.to_string(),
        endpoint: String::new(),
        headers: Vec::new(),
        gzip: true,
        interval: Duration::from_secs(10),
    };
    let before = p.0.len();
    let known = &[
        "endpoint",
        "headers",
        "bearer_token",
        "compression",
        "interval",
    ];
    for (k, v) in mapping(e, path, known, p).unwrap_or_default() {
        let kp = join(path, &k);
        match k.as_str() {
            "endpoint" => {
                if let Some(ep) = with(v, &kp, p, |s| {
                    crate::otlp_export::endpoint_uri(s).map(|_| s.to_string())
                }) {
                    cfg.endpoint = ep;
                }
            }
            "headers" => match v {
                Value::Mapping(m) => {
                    for (hk, hv) in m {
                        match (hk.as_str(), hv.as_str()) {
                            (Some(hk), Some(hv)) => cfg.headers.push((hk.into(), hv.into())),
                            _ => p.add(&kp, "expected header names mapped to strings"),
                        }
                    }
                }
                other => p.add(&kp, format!("expected a mapping, found {}", kind(other))),
            },
            "bearer_token" => {
                if let Some(t) = string(v, &kp, p) {
                    cfg.headers
                        .push(("authorization".into(), format!("Bearer {t}")));
                }
            }
            "compression" => match string(v, &kp, p).as_deref() {
                Some("gzip") => cfg.gzip = true,
                Some("none") => cfg.gzip = false,
                Some(other) => p.add(&kp, format!("expected gzip or none, found {other:?}")),
                None => {}
            },
            _ => {
                if let Some(d) = with(v, &kp, p, parse_duration) {
                    cfg.interval = d.max(Duration::from_millis(100));
                }
            }
        }
    }
    if cfg.endpoint.is_empty() && p.0.len() == before {
        p.add(
            &join(path, "endpoint"),
            "missing: where to send profiles (host:port of an OTLP/gRPC receiver)",
        );
    }
    (p.0.len() == before).then_some(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insight_alerts_and_the_latency_objective_are_read_and_checked() {
        let mut s = Settings::default();
        let yaml = "insights:\n  latency_objective: 250ms\n  alerts:\n    anomaly_severity: critical\n    saturation_within: 6h\n    saturation_confidence: 0.8\n";
        apply_file(yaml, &mut s).expect("valid");
        assert_eq!(s.latency_objective, Duration::from_millis(250));
        assert_eq!(
            s.insight_alerts.anomaly_severity.as_deref(),
            Some("critical")
        );
        assert_eq!(
            s.insight_alerts.saturation_within,
            Duration::from_secs(6 * 3600)
        );
        assert_eq!(s.insight_alerts.saturation_confidence, 0.8);
        let yaml = "insights:\n  alerts:\n    anomaly_severity: off\n";
        apply_file(yaml, &mut s).expect("valid");
        assert_eq!(s.insight_alerts.anomaly_severity, None);

        let bad = "insights:\n  latency_objective: 0s\n  alerts:\n    anomaly_severity: loud\n    saturation_confidence: 2\n    colour: red\n";
        let errs = apply_file(bad, &mut Settings::default()).unwrap_err();
        assert_eq!(
            errs,
            vec![
                "insights.latency_objective: expected a positive duration, e.g. 300ms",
                "insights.alerts.colour: unknown key (expected one of: anomaly_severity, saturation_within, saturation_confidence)",
                "insights.alerts.anomaly_severity: expected minor, major, critical or off, found `loud`",
                "insights.alerts.saturation_confidence: expected a probability from 0 to 1, found `2`",
            ]
        );
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let yaml = r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: "not an address"
      http:
        endpoint: 127.0.0.1:4318
        colour: blue
exporters:
  store:
    retention:
      max_age: forever
pipelines:
  traces:
    receivers: [otlp, zipkin]
    exporters: [store]
"#;
        let errs = apply_file(yaml, &mut Settings::default()).unwrap_err();
        assert_eq!(
            errs,
            vec![
                "receivers.otlp.protocols.grpc.endpoint: expected host:port such as 127.0.0.1:4317, found \"not an address\"",
                "receivers.otlp.protocols.http.colour: unknown key (expected one of: endpoint, max_request_body_size)",
                "exporters.store.retention.max_age: expected a duration like 30s, 15m, 12h or 7d, found \"forever\"",
                "pipelines.traces.receivers[1]: \"zipkin\" is not defined under receivers",
            ]
        );
    }

    #[test]
    fn a_valid_file_sets_values() {
        let yaml = "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:5317\nexporters:\n  store:\n    data_dir: /tmp/x\n    retention:\n      max_size: 2GiB\n";
        let mut s = Settings::default();
        apply_file(yaml, &mut s).unwrap();
        assert_eq!(s.otlp_grpc_addr, Some("127.0.0.1:5317".parse().unwrap()));
        assert_eq!(s.otlp_http_addr, None, "http not listed, so off");
        assert_eq!(s.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(s.retention_bytes, Some(2 << 30));
    }

    #[test]
    fn profiler_settings_are_read_from_the_file() {
        let yaml = "profiler:\n  hz: 49\n  off_cpu: all\n  boost: { hz: 199, for: 2m, threshold: 250 }\n  budget: 0.5%\n  unwind_tables: 48MiB\n";
        let mut s = Settings::default();
        apply_file(yaml, &mut s).unwrap();
        assert_eq!(s.profile_hz, 49);
        assert_eq!(s.off_cpu, crate::profiler::OffCpuMode::All);
        assert_eq!(s.profile_boost_hz, 199);
        assert_eq!(s.profile_unwind_bytes, 48 << 20);
        assert_eq!(s.profile_boost_for, Duration::from_secs(120));
        assert_eq!(s.profile_boost_threshold, Some(250.0));
        assert_eq!(s.profile_budget, 0.005);
        // 0 turns profiling off, as the flag does.
        apply_file("profiler: { hz: 0 }\n", &mut s).unwrap();
        assert_eq!(s.profile_hz, 0);
    }

    #[test]
    fn bad_profiler_settings_are_named_by_path() {
        let yaml = "profiler:\n  hz: 5000\n  off_cpu: sometimes\n  boost: { hz: 0, for: later, threshold: -1, rate: 3 }\n  budget: 150%\n  unwind_tables: 2TiB\n  colour: red\n";
        let errs = apply_file(yaml, &mut Settings::default()).unwrap_err();
        assert_eq!(
            errs,
            vec![
                "profiler.colour: unknown key (expected one of: hz, off_cpu, boost, budget, unwind_tables)",
                "profiler.hz: expected 0 (off) to 1000 samples per second, found \"5000\"",
                "profiler.off_cpu: expected off, traced or all, found \"sometimes\"",
                "profiler.boost.rate: unknown key (expected one of: hz, for, threshold)",
                "profiler.boost.hz: expected 1 to 1000 samples per second, found \"0\"",
                "profiler.boost.for: expected a duration like 30s, 15m, 12h or 7d, found \"later\"",
                "profiler.boost.threshold: expected requests per second above 0, found \"-1\"",
                "profiler.budget: expected a share above 0% and at most 100%, found \"150%\"",
                "profiler.unwind_tables: expected 0 (off) or a size from 1MiB to 1GiB, found \"2TiB\"",
            ]
        );
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn otlp_exporters_are_read_and_their_problems_named() {
        let yaml = "exporters:\n  otlp:\n    endpoint: collector:4317\n    headers: { x-tenant: a }\n    bearer_token: t\n    compression: none\n    interval: 5s\n  otlp/backup:\n    endpoint: http://b:4317\npipelines:\n  profiles: { exporters: [otlp, otlp/backup] }\n";
        let mut s = Settings::default();
        apply_file(yaml, &mut s).unwrap();
        assert_eq!(s.otlp_exporters.len(), 2);
        let e = &s.otlp_exporters[0];
        assert_eq!(
            (e.name.as_str(), e.endpoint.as_str(), e.gzip),
            ("otlp", "collector:4317", false)
        );
        assert_eq!(e.interval, Duration::from_secs(5));
        assert_eq!(
            e.headers,
            [
                ("x-tenant".to_string(), "a".to_string()),
                ("authorization".to_string(), "Bearer t".to_string())
            ]
        );
        assert!(s.otlp_exporters[1].gzip, "gzip by default");

        let bad = "exporters:\n  otlp:\n    compression: brotli\n  otlp/x:\n    endpoint: https://c:4317\n  otlp/y: {}\n";
        let errs = apply_file(bad, &mut Settings::default()).unwrap_err();
        assert!(errs.iter().any(|e| e == "exporters.otlp.compression: expected gzip or none, found \"brotli\""), "{errs:?}");
        assert!(
            errs.iter().any(|e| e.starts_with(
                "exporters.otlp/x.endpoint: \"https://c:4317\": https is not supported"
            )),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("exporters.otlp/y.endpoint: missing")),
            "{errs:?}"
        );
    }
}
