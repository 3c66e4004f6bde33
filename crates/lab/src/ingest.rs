//! `oxeye lab bench ingest`: OTLP/gRPC spans from a generator into a fresh oxeye; reports
//! spans/s, spans per server CPU-second, server RSS and export latency percentiles.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use serde::Serialize;

use crate::LabError;
use crate::proc::{Server, cpu_seconds, rss_bytes, thread_cpu_seconds};

#[derive(clap::Args, Clone, Debug)]
pub struct IngestArgs {
    /// Spans to send after warm-up.
    #[arg(long, default_value_t = 2_000_000)]
    pub spans: u64,
    /// Spans per export request.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Export requests in flight.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Where to write the JSON figures.
    #[arg(long, default_value = "target/lab/bench-ingest.json")]
    pub out: PathBuf,
    /// Data directory for the server under test, kept by every run [default: a fresh
    /// temporary one per run].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Runs, each against a fresh server; the figures are their medians, with every run's in
    /// the JSON (one run on a shared VM can be 20 % off).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeats: u32,
    /// Keep the eBPF profiler and security sensor running in the server under test (they are
    /// off by default so the figures are the OTLP path's alone; as root they would also sample
    /// and watch the generator).
    #[arg(long)]
    pub with_agents: bool,
}

/// What `--out` holds: the median of each figure over the runs, and every run.
#[derive(Debug, Serialize)]
pub struct IngestReport {
    pub repeats: u32,
    pub median: IngestFigures,
    /// The lowest and highest spans per server CPU-second of the runs.
    pub spans_per_server_cpu_second_range: [f64; 2],
    pub runs: Vec<IngestFigures>,
}

/// The spine's targets: spans stored durably per server CPU-second, and peak RSS.
const TARGET_SPANS_PER_CPU_SECOND: f64 = 300_000.0;
const TARGET_RSS_MIB: f64 = 500.0;

#[derive(Debug, Serialize, Clone)]
pub struct IngestFigures {
    pub spans_sent: u64,
    pub spans_acked: u64,
    pub requests_refused: u64,
    pub wall_seconds: f64,
    pub spans_per_second: f64,
    pub server_cpu_seconds: f64,
    /// The server's CPU seconds by thread name: the flusher (`oxeye-flush`), the receivers and
    /// span encoding (`tokio-rt-worker`), the WAL (`oxeye-wal`), ...
    pub server_cpu_seconds_by_thread: std::collections::BTreeMap<String, f64>,
    pub spans_per_server_cpu_second: f64,
    pub server_rss_mib: f64,
    pub server_peak_rss_mib: f64,
    pub export_latency_ms: Latency,
    pub batch: usize,
    pub concurrency: usize,
    pub with_agents: bool,
    pub target_spans_per_cpu_second: f64,
    pub target_rss_mib: f64,
    pub meets_targets: bool,
}

impl IngestFigures {
    fn meets(&self) -> bool {
        self.spans_per_server_cpu_second >= self.target_spans_per_cpu_second
            && self.server_peak_rss_mib < self.target_rss_mib
    }
}

#[derive(Debug, Serialize, Clone)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

fn kv(k: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

/// A realistic request: a few services, HTTP-ish attributes, one event on some spans.
fn request(seed: u64, n: usize) -> ExportTraceServiceRequest {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut rng = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let services = ["frontend", "checkout", "payments", "inventory"];
    let svc = services[(seed % 4) as usize];
    let mut spans = Vec::with_capacity(n);
    let mut trace_id = [0u8; 16];
    let mut root = [0u8; 8];
    for i in 0..n {
        if i % 8 == 0 {
            trace_id[..8].copy_from_slice(&next().to_le_bytes());
            trace_id[8..].copy_from_slice(&next().to_le_bytes());
            root = next().to_le_bytes();
        }
        let span_id = if i % 8 == 0 {
            root
        } else {
            next().to_le_bytes()
        };
        let start = now - (next() % 1_000_000_000);
        let dur = 50_000 + next() % 50_000_000;
        spans.push(Span {
            trace_id: trace_id.to_vec(),
            span_id: span_id.to_vec(),
            parent_span_id: if i % 8 == 0 { vec![] } else { root.to_vec() },
            name: format!("GET /api/v{}/items", i % 5),
            kind: if i % 8 == 0 { 2 } else { 3 },
            start_time_unix_nano: start,
            end_time_unix_nano: start + dur,
            attributes: vec![
                kv(
                    "http.request.method",
                    any_value::Value::StringValue("GET".into()),
                ),
                kv("http.response.status_code", any_value::Value::IntValue(200)),
                kv(
                    "url.path",
                    any_value::Value::StringValue(format!("/api/items/{}", next() % 1000)),
                ),
                kv(
                    "server.address",
                    any_value::Value::StringValue("10.0.0.1".into()),
                ),
            ],
            events: if i % 16 == 0 {
                vec![span::Event {
                    time_unix_nano: start + 1000,
                    name: "cache.miss".into(),
                    attributes: vec![kv("key", any_value::Value::StringValue("item".into()))],
                    dropped_attributes_count: 0,
                }]
            } else {
                vec![]
            },
            status: Some(Status {
                code: if next() % 100 == 0 { 2 } else { 0 },
                message: String::new(),
            }),
            ..Default::default()
        });
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", any_value::Value::StringValue(svc.into())),
                    kv(
                        "service.version",
                        any_value::Value::StringValue("1.4.2".into()),
                    ),
                    kv(
                        "host.name",
                        any_value::Value::StringValue("bench-host".into()),
                    ),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "oxeye-lab".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

pub fn bench_ingest(exe: &Path, a: IngestArgs) -> Result<(), LabError> {
    let mut runs = Vec::new();
    for run in 1..=a.repeats {
        let f = run_once(exe, &a, run)?;
        if a.repeats > 1 {
            println!(
                "run {run}/{}: {:.0} spans/s, {:.0} spans per server CPU-second, peak RSS {:.0} MiB, p99 {:.1} ms",
                a.repeats,
                f.spans_per_second,
                f.spans_per_server_cpu_second,
                f.server_peak_rss_mib,
                f.export_latency_ms.p99
            );
        }
        runs.push(f);
    }
    let median = median_figures(&runs);
    let per_cpu: Vec<f64> = runs.iter().map(|r| r.spans_per_server_cpu_second).collect();
    let range = [
        per_cpu.iter().copied().fold(f64::INFINITY, f64::min),
        per_cpu.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    ];
    let report = IngestReport {
        repeats: a.repeats,
        median,
        spans_per_server_cpu_second_range: range,
        runs,
    };
    crate::write_figures(&a.out, &report)?;
    let m = &report.median;
    println!(
        "ingest ({}): {:.0} spans/s, {:.0} spans per server CPU-second{} (target {TARGET_SPANS_PER_CPU_SECOND}), server RSS {:.0} MiB (peak {:.0}, target < {TARGET_RSS_MIB}), export p99 {:.1} ms; server CPU by thread: {}; {} acked, {} refused; figures in {}",
        if a.repeats > 1 {
            format!("median of {} runs", a.repeats)
        } else {
            "1 run".to_string()
        },
        m.spans_per_second,
        m.spans_per_server_cpu_second,
        if a.repeats > 1 {
            format!(" [{:.0} .. {:.0}]", range[0], range[1])
        } else {
            String::new()
        },
        m.server_rss_mib,
        m.server_peak_rss_mib,
        m.export_latency_ms.p99,
        thread_shares(&m.server_cpu_seconds_by_thread),
        m.spans_acked,
        m.requests_refused,
        a.out.display()
    );
    Ok(())
}

/// "oxeye-flush 46 %, tokio-rt-worker 49 %, ...": the largest shares first, the rest summed.
fn thread_shares(by_thread: &std::collections::BTreeMap<String, f64>) -> String {
    let total: f64 = by_thread.values().sum();
    if total <= 0.0 {
        return "not measured".to_string();
    }
    let mut v: Vec<(&String, f64)> = by_thread.iter().map(|(n, s)| (n, *s)).collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut parts: Vec<String> = v
        .iter()
        .take(4)
        .map(|(n, s)| format!("{n} {:.0} %", s / total * 100.0))
        .collect();
    let rest: f64 = v.iter().skip(4).map(|(_, s)| s).sum();
    if rest > 0.0 {
        parts.push(format!("other {:.0} %", rest / total * 100.0));
    }
    parts.join(", ")
}

/// Each figure's median over the runs (the upper middle for an even count); the counts (sent,
/// acked, refused) are totals over the runs, and `meets_targets` is judged on the medians.
fn median_figures(runs: &[IngestFigures]) -> IngestFigures {
    let med = |f: &dyn Fn(&IngestFigures) -> f64| -> f64 {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut m = runs[0].clone();
    m.wall_seconds = med(&|r| r.wall_seconds);
    m.spans_per_second = med(&|r| r.spans_per_second);
    m.server_cpu_seconds = med(&|r| r.server_cpu_seconds);
    m.spans_per_server_cpu_second = med(&|r| r.spans_per_server_cpu_second);
    let names: std::collections::BTreeSet<&String> = runs
        .iter()
        .flat_map(|r| r.server_cpu_seconds_by_thread.keys())
        .collect();
    m.server_cpu_seconds_by_thread = names
        .into_iter()
        .map(|n| {
            let secs = med(&|r| {
                r.server_cpu_seconds_by_thread
                    .get(n)
                    .copied()
                    .unwrap_or(0.0)
            });
            (n.clone(), secs)
        })
        .collect();
    m.server_rss_mib = med(&|r| r.server_rss_mib);
    m.server_peak_rss_mib = med(&|r| r.server_peak_rss_mib);
    m.export_latency_ms = Latency {
        p50: med(&|r| r.export_latency_ms.p50),
        p90: med(&|r| r.export_latency_ms.p90),
        p99: med(&|r| r.export_latency_ms.p99),
        max: med(&|r| r.export_latency_ms.max),
    };
    m.spans_acked = runs.iter().map(|r| r.spans_acked).sum();
    m.spans_sent = runs.iter().map(|r| r.spans_sent).sum();
    m.requests_refused = runs.iter().map(|r| r.requests_refused).sum();
    m.meets_targets = m.meets();
    m
}

/// One run against a fresh server (and, without `--data-dir`, a fresh data directory).
fn run_once(exe: &Path, a: &IngestArgs, run: u32) -> Result<IngestFigures, LabError> {
    let tmp = std::env::temp_dir().join(format!("oxeye-bench-{}-{run}", std::process::id()));
    let data_dir = a.data_dir.clone().unwrap_or_else(|| tmp.clone());
    let agents_off: &[&str] = &["--profile-hz", "0", "--off-cpu", "off", "--security", "off"];
    let server = Server::start(exe, &data_dir, if a.with_agents { &[] } else { agents_off })?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = rt.block_on(drive(&server, a));
    let pid = server.pid();
    let (rss, peak) = rss_bytes(pid);
    server.stop();
    if a.data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    let Outcome {
        acked,
        refused,
        sent,
        wall,
        cpu,
        by_thread,
        hist,
    } = result?;
    let q = |p: f64| hist.value_at_quantile(p) as f64 / 1000.0;
    let per_cpu = if cpu > 0.0 { acked as f64 / cpu } else { 0.0 };
    let mut figures = IngestFigures {
        spans_sent: sent,
        spans_acked: acked,
        requests_refused: refused,
        wall_seconds: wall,
        spans_per_second: acked as f64 / wall,
        server_cpu_seconds: cpu,
        server_cpu_seconds_by_thread: by_thread,
        spans_per_server_cpu_second: per_cpu,
        server_rss_mib: rss as f64 / 1048576.0,
        server_peak_rss_mib: peak as f64 / 1048576.0,
        export_latency_ms: Latency {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            max: hist.max() as f64 / 1000.0,
        },
        batch: a.batch,
        concurrency: a.concurrency,
        with_agents: a.with_agents,
        target_spans_per_cpu_second: TARGET_SPANS_PER_CPU_SECOND,
        target_rss_mib: TARGET_RSS_MIB,
        meets_targets: false,
    };
    figures.meets_targets = figures.meets();
    Ok(figures)
}

struct Outcome {
    acked: u64,
    refused: u64,
    sent: u64,
    wall: f64,
    cpu: f64,
    by_thread: std::collections::BTreeMap<String, f64>,
    hist: Histogram<u64>,
}

/// Sends requests encoded once, before the run: encoding 1000 spans per request took about a
/// third of the generator's CPU, and the generator shares the machine with the server measured.
struct Encoded;

struct Discard;

impl tonic::codec::Encoder for Encoded {
    type Item = bytes::Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: bytes::Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put(dst, item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Discard {
    type Item = ();
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<()>, tonic::Status> {
        bytes::Buf::advance(src, bytes::Buf::remaining(src));
        Ok(Some(()))
    }
}

impl tonic::codec::Codec for Encoded {
    type Encode = bytes::Bytes;
    type Decode = ();
    type Encoder = Encoded;
    type Decoder = Discard;
    fn encoder(&mut self) -> Encoded {
        Encoded
    }
    fn decoder(&mut self) -> Discard {
        Discard
    }
}

/// An OTLP trace client sending already encoded requests.
#[derive(Clone)]
struct Client(tonic::client::Grpc<tonic::transport::Channel>);

impl Client {
    async fn connect(url: &str) -> Result<Client, LabError> {
        let channel = tonic::transport::Endpoint::from_shared(url.to_string())
            .map_err(|e| LabError::Setup(format!("bad endpoint {url}: {e}")))?
            .connect()
            .await
            .map_err(|e| LabError::Setup(format!("cannot connect to {url}: {e}")))?;
        Ok(Client(tonic::client::Grpc::new(channel)))
    }

    async fn export(&mut self, request: bytes::Bytes) -> Result<(), tonic::Status> {
        self.0
            .ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let path = http::uri::PathAndQuery::from_static(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        );
        self.0
            .unary(tonic::Request::new(request), path, Encoded)
            .await
            .map(|_| ())
    }
}

async fn drive(server: &Server, a: &IngestArgs) -> Result<Outcome, LabError> {
    let url = format!("http://{}", server.grpc);
    let mut clients = Vec::new();
    for _ in 0..2 {
        clients.push(Client::connect(&url).await?);
    }
    let pool: Arc<Vec<bytes::Bytes>> = Arc::new(
        (0..64)
            .map(|i| prost::Message::encode_to_vec(&request(i + 1, a.batch)).into())
            .collect(),
    );
    // Warm-up: let allocations and the first WAL segment settle.
    for r in pool.iter().take(20) {
        let _ = clients[0].export(r.clone()).await;
    }
    let pid = server.pid();
    let cpu0 = cpu_seconds(pid);
    let threads0 = thread_cpu_seconds(pid);
    let t0 = Instant::now();
    let requests = a.spans.div_ceil(a.batch as u64);
    let next = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let bar = indicatif::ProgressBar::new(requests * a.batch as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} spans {per_sec} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut tasks = Vec::new();
    for w in 0..a.concurrency {
        let mut client = clients[w % clients.len()].clone();
        let (pool, next, acked, refused, bar) = (
            pool.clone(),
            next.clone(),
            acked.clone(),
            refused.clone(),
            bar.clone(),
        );
        let batch = a.batch as u64;
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).unwrap_or_else(|_| unreachable!());
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    break;
                }
                let req = pool[(i % pool.len() as u64) as usize].clone();
                let t = Instant::now();
                match client.export(req).await {
                    Ok(_) => {
                        acked.fetch_add(batch, Ordering::Relaxed);
                        let _ = hist.record(t.elapsed().as_micros() as u64);
                        bar.inc(batch);
                    }
                    Err(s)
                        if s.code() == tonic::Code::ResourceExhausted
                            || s.code() == tonic::Code::Unavailable =>
                    {
                        refused.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(s) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        eprintln!("export failed: {s}");
                    }
                }
            }
            hist
        }));
    }
    let mut hist = Histogram::<u64>::new(3).unwrap_or_else(|_| unreachable!());
    for t in tasks {
        if let Ok(h) = t.await {
            let _ = hist.add(h);
        }
    }
    bar.finish_and_clear();
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu0;
    let mut by_thread = thread_cpu_seconds(pid);
    for (name, s) in by_thread.iter_mut() {
        *s -= threads0.get(name).copied().unwrap_or(0.0);
    }
    by_thread.retain(|_, s| *s > 0.0);
    Ok(Outcome {
        acked: acked.load(Ordering::Relaxed),
        refused: refused.load(Ordering::Relaxed),
        sent: requests * a.batch as u64,
        wall,
        cpu,
        by_thread,
        hist,
    })
}
