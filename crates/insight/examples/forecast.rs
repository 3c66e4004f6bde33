//! `forecast [NAB_DATA]` prints the forecasting and time-to-saturation backtests: MASE against
//! seasonal-naive by rolling origin on NAB's AWS CloudWatch series and on generated workloads, and
//! the crossing-time error on those workloads; then the same as JSON.

use std::path::PathBuf;

use insight::TimeToSaturation;
use insight::backtest::{self, BacktestReport, BacktestSettings, Workload};

const HOUR_MS: i64 = 3_600_000;

fn main() {
    let data = std::env::args()
        .nth(1)
        .map_or_else(|| PathBuf::from("../shared/nab"), PathBuf::from);
    let settings = BacktestSettings::default();
    let aws = match insight::nab::aws_forecast_backtests(&data, &settings) {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let workloads = Workload::standard_set();
    let generated = backtest::workload_forecast_backtests(&workloads, &settings);
    let trials = backtest::saturation_trials(
        &workloads,
        &[72 * HOUR_MS, 24 * HOUR_MS, 6 * HOUR_MS],
        14 * 24 * HOUR_MS,
        &TimeToSaturation::default(),
    );
    let aws = BacktestReport {
        forecast: aws,
        saturation: Vec::new(),
    };
    let generated = BacktestReport {
        forecast: generated,
        saturation: trials,
    };
    println!(
        "NAB AWS CloudWatch ({} series, 5-minute steps)\n{aws}",
        aws.forecast.len()
    );
    println!("Generated workloads with known saturation\n{generated}");
    let json = serde_json::json!({ "aws": aws, "generated": generated });
    println!("{json}");
}
