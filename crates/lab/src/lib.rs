//! The performance lab: load generators and benchmarks that drive a real oxeye process and report
//! figures as JSON plus one line for humans.

mod ingest;
mod proc;
mod profiler;
mod sensor;
mod sensor_rate;

/// A command-line value's name as clap spells it (`open-read-close`).
fn cli_name(v: impl clap::ValueEnum) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_owned())
        .unwrap_or_default()
}

pub use ingest::{IngestArgs, bench_ingest};
pub use profiler::{FoldFn, ProfilerArgs, ProfilerFigures, RawSample, bench_profiler};
pub use sensor::{EmptyHookFn, SensorArgs, SensorFigures, Storm, bench_sensor, storm_child};
pub use sensor_rate::{
    RateStorm, SensorRateArgs, SensorRateFigures, bench_sensor_rate, storm_paced,
};

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("{0}")]
    Setup(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Writes a benchmark's figures as pretty JSON to `out`, creating its directory.
pub(crate) fn write_figures<T: serde::Serialize>(
    out: &std::path::Path,
    figures: &T,
) -> Result<(), LabError> {
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let json = serde_json::to_string_pretty(figures).map_err(|e| LabError::Setup(e.to_string()))?;
    std::fs::write(out, json)?;
    Ok(())
}
