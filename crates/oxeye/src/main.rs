//! `oxeye`: the command line. Thin glue over the library crates.

mod alert_sinks;
mod bench;
mod budget;
mod config;
mod doctor;
mod exe_hash;
mod insights;
mod otlp_export;
mod profiler;
mod query;
mod security;
mod traffic;
mod up;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

// The ingest path allocates many small strings on several threads; glibc's allocator spent a
// fifth of the server's CPU there and fragmented its memory.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "oxeye",
    version,
    about = "Observability in one binary: OTLP in, durable store, query API and dashboard"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the receivers, the store, the API and the dashboard.
    Up(UpArgs),
    /// Run SQL over a data directory (works while `oxeye up` is running).
    Query(QueryArgs),
    /// Check the host: kernel, BTF, privileges, ports and store health.
    Doctor(DoctorArgs),
    /// Anomaly detection: run and score the detector on a benchmark corpus.
    Insight {
        #[command(subcommand)]
        command: InsightCommand,
    },
    /// Performance lab: benchmarks against a live oxeye.
    Lab {
        #[command(subcommand)]
        command: LabCommand,
    },
}

#[derive(Args, Clone, Default)]
pub struct UpArgs {
    /// YAML config in the OpenTelemetry Collector vocabulary (flags override it).
    #[arg(long, env = "OXEYE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the WAL and Parquet files live [default: ./data].
    #[arg(long, env = "OXEYE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Dashboard and API address [default: 127.0.0.1:7070].
    #[arg(long, env = "OXEYE_HTTP_ADDR")]
    pub http_addr: Option<String>,
    /// OTLP/gRPC address [default: 127.0.0.1:4317].
    #[arg(long, env = "OXEYE_OTLP_GRPC_ADDR")]
    pub otlp_grpc_addr: Option<String>,
    /// OTLP/HTTP address [default: 127.0.0.1:4318].
    #[arg(long, env = "OXEYE_OTLP_HTTP_ADDR")]
    pub otlp_http_addr: Option<String>,
    /// Bearer token senders must present (required when a receiver binds a non-loopback address).
    #[arg(long, env = "OXEYE_RECEIVER_TOKEN", hide_env_values = true)]
    pub receiver_token: Option<String>,
    /// Largest OTLP request body, compressed [default: 16MiB].
    #[arg(long, env = "OXEYE_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<String>,
    /// Ingest queue bound in bytes of decoded data; beyond it senders get 429 / RESOURCE_EXHAUSTED [default: 64MiB].
    #[arg(long, env = "OXEYE_QUEUE_BYTES")]
    pub queue_bytes: Option<String>,
    /// Delete data older than this [default: 7d].
    #[arg(long, env = "OXEYE_RETENTION_AGE")]
    pub retention_age: Option<String>,
    /// Delete the oldest data while the store is larger than this [default: unlimited].
    #[arg(long, env = "OXEYE_RETENTION_SIZE")]
    pub retention_size: Option<String>,
    /// Write memory to Parquet at least this often [default: 60s].
    #[arg(long, env = "OXEYE_FLUSH_INTERVAL")]
    pub flush_interval: Option<String>,
    /// CPU samples per second per CPU for every process (eBPF, needs root); 0 turns profiling off
    /// [default: 19].
    #[arg(long, env = "OXEYE_PROFILE_HZ")]
    pub profile_hz: Option<u32>,
    /// Off-CPU profiling (time threads spend blocked, with their stacks): `traced` follows the
    /// processes on this host that sent spans in the last 10 minutes, `all` every process (costly
    /// on hosts with many context switches), `off` none [default: traced].
    #[arg(long, env = "OXEYE_OFF_CPU")]
    pub off_cpu: Option<String>,
    /// The eBPF security sensor (exec, connects, watched-file opens, privilege changes… judged
    /// by rules and learned baselines; needs root): `on` or `off` [default: on].
    #[arg(long, env = "OXEYE_SECURITY")]
    pub security: Option<String>,
    /// How often anomaly detection scores the points stored since its last run, for every
    /// metric series and every service's rate, error ratio and p99 latency; 0 turns it off
    /// [default: 30s].
    #[arg(long, env = "OXEYE_INSIGHT_INTERVAL")]
    pub insight_interval: Option<String>,
    /// CPU samples per second per CPU for the processes of a service under high traffic
    /// [default: 99].
    #[arg(long, env = "OXEYE_PROFILE_BOOST_HZ")]
    pub profile_boost_hz: Option<u32>,
    /// How long the boosted rate lasts after a service's traffic was last high [default: 5m].
    #[arg(long, env = "OXEYE_PROFILE_BOOST_FOR")]
    pub profile_boost_for: Option<String>,
    /// Requests per second (a service's SERVER/CONSUMER and root spans) at which its traffic
    /// counts as high whatever its learned baseline says [default: none, the baseline decides].
    #[arg(long, env = "OXEYE_PROFILE_BOOST_THRESHOLD")]
    pub profile_boost_threshold: Option<f64>,
    /// The most of the host's CPU oxeye may use (itself plus its BPF programs); beyond it the
    /// sampling rates are lowered, quiet processes first [default: 1%].
    #[arg(long, env = "OXEYE_PROFILE_BUDGET")]
    pub profile_budget: Option<String>,
    /// How often oxeye's CPU use is measured against the budget [default: 30s]. Shorter
    /// intervals react to single flushes; tests use it to see the budget act in seconds.
    #[arg(long, env = "OXEYE_PROFILE_BUDGET_INTERVAL", hide = true)]
    pub profile_budget_interval: Option<String>,
}

#[derive(Args)]
pub struct QueryArgs {
    /// The SQL (tables: otel_traces, otel_logs, otel_metrics_gauge, _sum, _histogram, _exponential_histogram, _summary, profile_samples, profile_stacks, security_events, alerts, anomalies).
    pub sql: String,
    #[arg(long, env = "OXEYE_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// table, json or csv.
    #[arg(long, default_value = "table")]
    pub format: String,
}

#[derive(Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub up: UpArgs,
}

#[derive(Subcommand)]
enum InsightCommand {
    /// Run the streaming detector over the Numenta Anomaly Benchmark files (no look-ahead), write
    /// NAB's results layout and print the standard, reward_low_FP and reward_low_FN scores.
    Nab {
        /// The corpus: a directory with data/ and labels/combined_windows.json.
        #[arg(long, default_value = "../shared/nab")]
        data: PathBuf,
        /// Where to write <detector>/<category>/<detector>_<name>.csv.
        #[arg(long, default_value = "target/nab-results")]
        out: PathBuf,
    },
    /// Backtest the forecaster behind saturation alerts: MASE against seasonal-naive by rolling
    /// origin on NAB's AWS CloudWatch series and on generated workloads with known saturation
    /// points, and how far from the true crossing time-to-saturation lands; prints the tables.
    Backtest {
        /// The corpus: a directory with data/realAWSCloudwatch/.
        #[arg(long, default_value = "../shared/nab")]
        data: PathBuf,
        /// Where to write the same as JSON.
        #[arg(long, default_value = "target/insight-backtest.json")]
        out: PathBuf,
        /// Forecast origins per series, spread evenly after the first three days.
        #[arg(long, default_value_t = 10)]
        origins: usize,
    },
}

#[derive(Subcommand)]
enum LabCommand {
    /// Run a benchmark.
    Bench {
        #[command(subcommand)]
        which: BenchCommand,
    },
    /// One syscall storm, timed (the workload of `lab bench sensor`).
    #[command(hide = true)]
    Storm {
        #[arg(value_enum)]
        kind: lab::Storm,
        ops: u64,
    },
    /// Security events at a paced rate (the driver of `lab bench sensor-rate`).
    #[command(hide = true)]
    StormPaced {
        #[arg(value_enum)]
        kind: lab::RateStorm,
        events_per_sec: u64,
        seconds: f64,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// OTLP/gRPC span ingest into a fresh oxeye started for the run.
    Ingest(lab::IngestArgs),
    /// What the security sensor costs syscall storms, against auditd watching the same syscalls
    /// (root).
    Sensor(lab::SensorArgs),
    /// Security events a second the sensor sustains without losing any (execs, connects, opens
    /// of a watched file at doubling rates), with oxeye's CPU and RSS (root).
    SensorRate(lab::SensorRateArgs),
    /// The profiler's overhead (19 Hz, 99 Hz, perf), processing speed (vs perf script |
    /// inferno-collapse-perf) and its own CPU and memory.
    Profiler(lab::ProfilerArgs),
}

fn run_nab(data: &std::path::Path, out: &std::path::Path) -> anyhow::Result<()> {
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} files  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let report = insight::nab::run(data, out, |p| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
        bar.set_message(p.file.to_string());
    })
    .map_err(|e| anyhow::anyhow!("{e} (choose the corpus with --data)"))?;
    bar.finish_and_clear();
    println!("{report}");
    Ok(())
}

fn run_backtest(
    data: &std::path::Path,
    out: &std::path::Path,
    origins: usize,
) -> anyhow::Result<()> {
    use insight::backtest::{self, BacktestReport, BacktestSettings};
    anyhow::ensure!(origins > 0, "--origins must be at least 1");
    let settings = BacktestSettings {
        origins,
        ..BacktestSettings::default()
    };
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar.set_message("backtesting NAB's AWS CloudWatch series");
    let aws = insight::nab::aws_forecast_backtests(data, &settings)
        .map_err(|e| anyhow::anyhow!("{e} (choose the corpus with --data)"))?;
    bar.set_message("backtesting the generated workloads");
    let generated = backtest::generated_report(&settings);
    bar.finish_and_clear();
    let aws = BacktestReport {
        forecast: aws,
        saturation: Vec::new(),
    };
    println!(
        "NAB AWS CloudWatch ({} series, 5-minute steps)\n{aws}",
        aws.forecast.len()
    );
    println!("Generated workloads with known saturation\n{generated}");
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e} (choose --out)", dir.display()))?;
    }
    let json = serde_json::json!({ "aws": aws, "generated": generated });
    std::fs::write(out, format!("{json}\n"))
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e} (choose --out)", out.display()))?;
    println!("JSON in {}", out.display());
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OXEYE_LOG")
                .unwrap_or_else(|_| "info,h2=warn,hyper=warn,datafusion=warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, not in a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Up(a) => up::run(a),
        Command::Query(a) => query::run(a),
        Command::Doctor(a) => doctor::run(a),
        Command::Insight {
            command: InsightCommand::Nab { data, out },
        } => run_nab(&data, &out),
        Command::Insight {
            command: InsightCommand::Backtest { data, out, origins },
        } => run_backtest(&data, &out, origins),
        Command::Lab {
            command:
                LabCommand::Bench {
                    which: BenchCommand::Ingest(a),
                },
        } => std::env::current_exe()
            .map_err(anyhow::Error::from)
            .and_then(|exe| lab::bench_ingest(&exe, a).map_err(anyhow::Error::from)),
        Command::Lab {
            command:
                LabCommand::Bench {
                    which: BenchCommand::Sensor(a),
                },
        } => std::env::current_exe()
            .map_err(anyhow::Error::from)
            .and_then(|exe| {
                let empty_hook = || {
                    ebpf::SyscallHookFloor::attach()
                        .map(|h| Box::new(h) as Box<dyn std::any::Any>)
                        .map_err(|e| e.to_string())
                };
                lab::bench_sensor(&exe, a, &empty_hook)
                    .map(|_| ())
                    .map_err(anyhow::Error::from)
            }),
        Command::Lab {
            command:
                LabCommand::Bench {
                    which: BenchCommand::Profiler(a),
                },
        } => std::env::current_exe()
            .map_err(anyhow::Error::from)
            .and_then(|exe| {
                lab::bench_profiler(&exe, a, &bench::fold)
                    .map(|_| ())
                    .map_err(anyhow::Error::from)
            }),
        Command::Lab {
            command:
                LabCommand::Bench {
                    which: BenchCommand::SensorRate(a),
                },
        } => std::env::current_exe()
            .map_err(anyhow::Error::from)
            .and_then(|exe| {
                lab::bench_sensor_rate(&exe, a)
                    .map(|_| ())
                    .map_err(anyhow::Error::from)
            }),
        Command::Lab {
            command: LabCommand::Storm { kind, ops },
        } => lab::storm_child(kind, ops).map_err(anyhow::Error::from),
        Command::Lab {
            command:
                LabCommand::StormPaced {
                    kind,
                    events_per_sec,
                    seconds,
                },
        } => lab::storm_paced(kind, events_per_sec, seconds).map_err(anyhow::Error::from),
    };
    if let Err(e) = result {
        eprintln!("oxeye: error: {e:#}");
        std::process::exit(1);
    }
}
