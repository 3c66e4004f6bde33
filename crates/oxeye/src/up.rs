//! `oxeye up`: resolve settings, bind every listener, open the store, then serve.
//! Anything that can fail is tried before anything starts, so a failure leaves nothing running.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, anyhow, bail};
use ingest::ReceiverContext;
use model::Batch;
use pipeline::{DurableSink, EnrichConfig, Enricher, Pipeline, SinkError};
use store::{Store, StoreConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::UpArgs;
use crate::config::{self, Settings};
use crate::profiler::{ProfilerConfig, TracedProcesses};
use crate::security::ServiceNames;
use crate::traffic::{TrafficConfig, TrafficMonitor};

/// Defaults, then the config file, then environment and flags.
pub fn resolve(a: &UpArgs) -> anyhow::Result<Settings> {
    let mut s = Settings::default();
    if let Some(path) = &a.config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --config {}", path.display()))?;
        if let Err(problems) = config::apply_file(&text, &mut s) {
            let mut msg = format!("{} has {} problem(s):", path.display(), problems.len());
            for p in problems {
                msg.push_str("\n  ");
                msg.push_str(&p);
            }
            bail!(msg);
        }
    }
    let mut problems = Vec::new();
    let mut flag = |name: &str, r: Result<(), String>| {
        if let Err(e) = r {
            problems.push(format!("--{name}: {e}"));
        }
    };
    if let Some(d) = &a.data_dir {
        s.data_dir = d.clone();
    }
    if let Some(v) = &a.http_addr {
        flag("http-addr", config::parse_addr(v).map(|x| s.http_addr = x));
    }
    if let Some(v) = &a.otlp_grpc_addr {
        flag(
            "otlp-grpc-addr",
            config::parse_addr(v).map(|x| s.otlp_grpc_addr = Some(x)),
        );
    }
    if let Some(v) = &a.otlp_http_addr {
        flag(
            "otlp-http-addr",
            config::parse_addr(v).map(|x| s.otlp_http_addr = Some(x)),
        );
    }
    if let Some(v) = &a.receiver_token {
        s.receiver_token = Some(v.clone());
    }
    if let Some(v) = &a.max_body_bytes {
        flag(
            "max-body-bytes",
            config::parse_size(v).map(|x| s.max_body_bytes = x as usize),
        );
    }
    if let Some(v) = &a.queue_bytes {
        flag(
            "queue-bytes",
            config::parse_size(v).map(|x| s.queue_bytes = x as usize),
        );
    }
    if let Some(v) = &a.retention_age {
        flag(
            "retention-age",
            config::parse_duration(v).map(|x| s.retention_age = Some(x)),
        );
    }
    if let Some(v) = &a.retention_size {
        flag(
            "retention-size",
            config::parse_size(v).map(|x| s.retention_bytes = Some(x)),
        );
    }
    if let Some(v) = &a.flush_interval {
        flag(
            "flush-interval",
            config::parse_duration(v).map(|x| s.flush_interval = x),
        );
    }
    if let Some(v) = a.profile_hz {
        flag(
            "profile-hz",
            config::parse_profile_hz(&v.to_string()).map(|x| s.profile_hz = x),
        );
    }
    if let Some(v) = &a.off_cpu {
        flag(
            "off-cpu",
            crate::profiler::OffCpuMode::parse(v).map(|m| s.off_cpu = m),
        );
    }
    if let Some(v) = &a.security {
        flag(
            "security",
            crate::security::parse_switch(v).map(|on| s.security.enabled = on),
        );
    }
    if let Some(v) = &a.insight_interval {
        flag(
            "insight-interval",
            config::parse_duration(v).map(|x| s.insight_interval = x),
        );
    }
    if let Some(v) = a.profile_boost_hz {
        flag(
            "profile-boost-hz",
            config::parse_boost_hz(&v.to_string()).map(|x| s.profile_boost_hz = x),
        );
    }
    if let Some(v) = &a.profile_boost_for {
        flag(
            "profile-boost-for",
            config::parse_duration(v).map(|x| s.profile_boost_for = x),
        );
    }
    if let Some(v) = a.profile_boost_threshold {
        flag(
            "profile-boost-threshold",
            config::parse_boost_threshold(&v.to_string())
                .map(|x| s.profile_boost_threshold = Some(x)),
        );
    }
    if let Some(v) = &a.profile_budget {
        flag(
            "profile-budget",
            crate::budget::parse_share(v).map(|x| s.profile_budget = x),
        );
    }
    if let Some(v) = &a.profile_budget_interval {
        flag(
            "profile-budget-interval",
            config::parse_duration(v).and_then(|d| {
                if d >= std::time::Duration::from_millis(100) {
                    s.profile_budget_interval = d;
                    Ok(())
                } else {
                    Err(format!("expected at least 100ms, found {v:?}"))
                }
            }),
        );
    }
    if !problems.is_empty() {
        bail!(problems.join("\n"));
    }
    if s.receiver_token.as_deref().is_some_and(str::is_empty) {
        s.receiver_token = None;
    }
    let exposed: Vec<SocketAddr> = [s.otlp_grpc_addr, s.otlp_http_addr]
        .into_iter()
        .flatten()
        .filter(|a| !a.ip().is_loopback())
        .collect();
    if !exposed.is_empty() && s.receiver_token.is_none() {
        bail!(
            "receivers on {} are reachable from other hosts, so they need a token: set --receiver-token \
             (or receivers.otlp.bearer_token), or bind 127.0.0.1",
            exposed
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(" and ")
        );
    }
    Ok(s)
}

async fn bind(addr: SocketAddr, what: &str, knob: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow!("cannot listen on {addr} for {what}: {e} (change it with {knob})"))
}

/// The store as the pipeline's durable sink. It also tells the profiler which local processes
/// send spans, the security sensor which service each names, and counts each service's requests
/// for high-traffic boosting (after enrichment, so senders on loopback have their `process.pid`).
struct StoreSink(Store, TracedProcesses, ServiceNames, TrafficMonitor);

impl DurableSink for StoreSink {
    fn write(&self, batch: Batch) -> pipeline::WriteFuture<'_> {
        Box::pin(async move {
            self.0.write(&batch).await.map_err(sink_error)?;
            // Only what was stored counts: a request refused as malformed is not traffic.
            let groups = batch.span_groups();
            self.1.note(&groups);
            self.2.note(&batch, &groups);
            self.3.note(&groups, Instant::now());
            Ok(())
        })
    }
}

/// A store's refusal as the pipeline reports it: malformed data is the sender's fault (4xx),
/// anything else is the store's (retry later).
pub(crate) fn sink_error(e: store::StoreError) -> SinkError {
    match e {
        store::StoreError::Malformed(e) => SinkError::Malformed(e),
        other => SinkError::Unavailable(other.to_string()),
    }
}

/// Reads the API token, creating it (mode 0600) on first start.
fn api_token(dir: &Path) -> anyhow::Result<(String, PathBuf)> {
    let path = dir.join("api-token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim().to_string();
        if !t.is_empty() {
            let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            }
            return Ok((t, path));
        }
    }
    let token: String = hex::encode(rand::random::<[u8; 24]>());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(f, "{token}")?;
    f.sync_all()?;
    Ok((token, path))
}

fn check_data_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    let fail = |e: &dyn std::fmt::Display| {
        anyhow!(
            "cannot use data directory {}: {e} (change it with --data-dir or exporters.store.data_dir)",
            dir.display()
        )
    };
    if dir.exists() && !dir.is_dir() {
        return Err(fail(&"it exists and is not a directory"));
    }
    std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"ok").map_err(|e| fail(&e))?;
    let _ = std::fs::remove_file(&probe);
    dir.canonicalize().map_err(|e| fail(&e))
}

pub fn run(a: UpArgs) -> anyhow::Result<()> {
    let s = resolve(&a)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(s))
}

async fn serve(s: Settings) -> anyhow::Result<()> {
    let started = Instant::now();
    let started_ns = crate::otlp_export::now_ns();
    let data_dir = check_data_dir(&s.data_dir)?;
    let http = bind(
        s.http_addr,
        "the dashboard and API",
        "--http-addr or server.endpoint",
    )
    .await?;
    let grpc = match s.otlp_grpc_addr {
        Some(a) => Some(
            bind(
                a,
                "OTLP/gRPC",
                "--otlp-grpc-addr or receivers.otlp.protocols.grpc.endpoint",
            )
            .await?,
        ),
        None => None,
    };
    let otlp_http = match s.otlp_http_addr {
        Some(a) => Some(
            bind(
                a,
                "OTLP/HTTP",
                "--otlp-http-addr or receivers.otlp.protocols.http.endpoint",
            )
            .await?,
        ),
        None => None,
    };
    let store_cfg = StoreConfig {
        flush_interval: s.flush_interval,
        retention_age: s.retention_age,
        retention_bytes: s.retention_bytes,
        ..StoreConfig::default()
    };
    let store = tokio::task::spawn_blocking({
        let d = data_dir.clone();
        move || Store::open(&d, store_cfg)
    })
    .await?
    .map_err(|e| {
        anyhow!(
            "cannot open the store in {} (--data-dir): {e}",
            data_dir.display()
        )
    })?;
    let (token, token_path) = api_token(&data_dir)?;
    let enricher = Enricher::new(EnrichConfig {
        host: s.enrich_host,
        process: s.enrich_process,
    });
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let host_name = host.clone();
    let traced = TracedProcesses::new(&host);
    let service_names = ServiceNames::new(&host);
    let traffic = TrafficMonitor::new(
        &host,
        TrafficConfig {
            threshold: s.profile_boost_threshold,
            boost_for: s.profile_boost_for,
            ..TrafficConfig::default()
        },
    );
    let profiler_status = server::ProfilerStatus::default();
    let pipeline = Pipeline::new(
        StoreSink(
            store.clone(),
            traced.clone(),
            service_names.clone(),
            traffic.clone(),
        ),
        enricher,
        s.queue_bytes,
    );
    let ctx = ReceiverContext {
        pipeline: pipeline.clone(),
        token: s.receiver_token.as_deref().map(Arc::from),
        max_body_bytes: s.max_body_bytes,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_rx_insights = stop_rx.clone();
    let stop_rx_for_export = stop_rx.clone();
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|v| *v).await;
        }
    };
    let (security, security_line) = if s.security.enabled {
        let config = crate::security::SecurityConfig {
            settings: s.security.clone(),
            state_dir: data_dir.join("security"),
            host: host.clone(),
            services: service_names,
        };
        match crate::security::start(config, pipeline.clone()) {
            Ok((h, summary)) => (Some(h), summary),
            Err(e) => {
                tracing::warn!(reason = %e, "security sensor is off");
                (None, format!("off: {e}"))
            }
        }
    } else {
        (None, "off (--security off)".to_string())
    };
    let mut tasks = tokio::task::JoinSet::new();
    let http_addr = http.local_addr()?;
    let state = server::ServerState {
        store: store.clone(),
        pipeline: pipeline.clone(),
        api_token: Arc::from(token.as_str()),
        data_dir: data_dir.clone(),
        started,
        security: security.as_ref().map(|h| h.control()),
        profiler: profiler_status.clone(),
        latency_objective_ms: s.latency_objective.as_secs_f64() * 1000.0,
    };
    let sd = stopped();
    tasks.spawn(async move {
        server::serve(state, http, sd)
            .await
            .map_err(|e| anyhow!("api server: {e}"))
    });
    let mut grpc_line = "off".to_string();
    if let Some(l) = grpc {
        grpc_line = l.local_addr()?.to_string();
        let (c, sd) = (ctx.clone(), stopped());
        tasks.spawn(async move {
            ingest::otlp::grpc::serve(c, l, sd)
                .await
                .map_err(|e| anyhow!("otlp grpc: {e}"))
        });
    }
    let mut http_line = "off".to_string();
    if let Some(l) = otlp_http {
        http_line = format!("http://{}", l.local_addr()?);
        let (c, sd) = (ctx.clone(), stopped());
        tasks.spawn(async move {
            ingest::otlp::http::serve(c, l, sd)
                .await
                .map_err(|e| anyhow!("otlp http: {e}"))
        });
    }
    let (profiler, profiler_line) = if s.profile_hz == 0 {
        (None, "off (--profile-hz 0)".to_string())
    } else {
        let config = ProfilerConfig {
            frequency_hz: s.profile_hz,
            boost_hz: s.profile_boost_hz,
            budget_share: s.profile_budget,
            budget_interval: s.profile_budget_interval,
            off_cpu: s.off_cpu,
            unwind_table_rows: u32::try_from(s.profile_unwind_bytes / 12).unwrap_or(u32::MAX),
            traced,
            traffic,
            status: profiler_status,
        };
        match crate::profiler::start(config, pipeline.clone(), host.clone()) {
            Ok((h, summary)) => (Some(h), summary),
            Err(e) => {
                tracing::warn!(reason = %e, "CPU profiling is off");
                (None, format!("off: {e}"))
            }
        }
    };
    // After the profiler starts: the exporter reads no further than its watermark.
    let stored_up_to = profiler
        .as_ref()
        .map(crate::profiler::ProfilerHandle::stored_up_to);
    let mut export_lines = Vec::new();
    for cfg in s.otlp_exporters.iter().cloned() {
        export_lines.push(format!(
            "\n  export      profiles → {} ({})",
            cfg.endpoint, cfg.name
        ));
        let (st, h, d, rx) = (
            store.clone(),
            host.clone(),
            data_dir.clone(),
            stop_rx_for_export.clone(),
        );
        tasks.spawn(crate::otlp_export::run(
            cfg,
            st,
            h,
            d,
            started_ns,
            stored_up_to.clone(),
            rx,
        ));
    }
    let insights_line = if s.insight_interval.is_zero() {
        "off (--insight-interval 0)".to_string()
    } else {
        let config = crate::insights::InsightsConfig {
            interval: s.insight_interval,
            alerts: s.insight_alerts.clone(),
            host: host_name.clone(),
            ..Default::default()
        };
        let mut job = crate::insights::InsightsJob::open(store.clone(), config, &data_dir);
        let followed = job.series();
        // Alerts go to the security sinks too, whether or not the sensor runs.
        let sinks = match crate::alert_sinks::AlertSinks::start(
            &s.security.sinks,
            &data_dir.join("insights"),
        ) {
            Ok(sinks) => sinks,
            Err(e) => {
                tracing::warn!(reason = %e, "insights: alerts are stored but not sent to sinks");
                None
            }
        };
        if let Some(out) = &sinks {
            job = job.with_outlet(out.sender());
        }
        let stop = stop_rx_insights.clone();
        tasks.spawn(async move {
            crate::insights::run(job, stop).await;
            drop(sinks);
            Ok(())
        });
        format!(
            "anomaly detection every {:?} ({followed} series resumed), alerts {}",
            s.insight_interval,
            crate::insights::describe_alerts(&s.insight_alerts, s.security.sinks.len())
        )
    };
    let retention = match (s.retention_age, s.retention_bytes) {
        (Some(a), Some(b)) => format!("{}d or {} MiB", a.as_secs() / 86400, b >> 20),
        (Some(a), None) => format!("{:.1}d", a.as_secs_f64() / 86400.0),
        (None, Some(b)) => format!("{} MiB", b >> 20),
        (None, None) => "forever".into(),
    };
    // A closed stdout (`oxeye up | head`) must not stop the server: the banner is best effort.
    let _ = writeln!(
        std::io::stdout().lock(),
        "oxeye is up ({} ms)\n  dashboard   http://{http_addr}/\n  OTLP gRPC   {grpc_line}\n  OTLP HTTP   {http_line}\n  data        {}  (retention {retention})\n  API token   {token}  (in {}, mode 0600)\n  receivers   {}\n  profiler    {profiler_line}{}\n  security    {security_line}\n  insights    {insights_line}",
        started.elapsed().as_millis(),
        data_dir.display(),
        token_path.display(),
        if s.receiver_token.is_some() {
            "bearer token required"
        } else {
            "no token (loopback only)"
        },
        export_lines.concat(),
    );
    let _ = std::io::stdout().flush();

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let outcome = tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = term.recv() => Ok(()),
        Some(r) = tasks.join_next() => match r {
            Ok(Ok(())) => Err(anyhow!("a listener or exporter stopped unexpectedly")),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(anyhow!("a listener panicked: {e}")),
        },
    };
    tracing::info!("shutting down: draining receivers and flushing the store");
    let _ = stop_tx.send(true);
    drop(profiler);
    drop(security);
    let drain = async { while tasks.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), drain).await;
    store.close().await;
    outcome
}
