//! `oxeye`: the command line. Thin glue over the library crates.

mod config;
mod doctor;
mod query;
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
}

#[derive(Args)]
pub struct QueryArgs {
    /// The SQL (tables: otel_traces, otel_logs, otel_metrics_gauge, _sum, _histogram, _exponential_histogram, _summary).
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
enum LabCommand {
    /// Run a benchmark.
    Bench {
        #[command(subcommand)]
        which: BenchCommand,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// OTLP/gRPC span ingest into a fresh oxeye started for the run.
    Ingest(lab::IngestArgs),
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OXEYE_LOG")
                .unwrap_or_else(|_| "info,h2=warn,hyper=warn,datafusion=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Up(a) => up::run(a),
        Command::Query(a) => query::run(a),
        Command::Doctor(a) => doctor::run(a),
        Command::Lab {
            command:
                LabCommand::Bench {
                    which: BenchCommand::Ingest(a),
                },
        } => std::env::current_exe()
            .map_err(anyhow::Error::from)
            .and_then(|exe| lab::bench_ingest(&exe, a).map_err(anyhow::Error::from)),
    };
    if let Err(e) = result {
        eprintln!("oxeye: error: {e:#}");
        std::process::exit(1);
    }
}
