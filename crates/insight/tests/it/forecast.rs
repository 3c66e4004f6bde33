//! Backtests of bottleneck prediction: on generated workloads the forecaster beats seasonal-naive
//! (MASE < 1 and a lower out-of-sample error at every horizon) and time-to-saturation finds every
//! crossing close to its true time; on NAB's AWS CloudWatch series the table is printed.

use std::path::Path;

use insight::backtest::{self, BacktestReport, BacktestSettings, Workload};

#[test]
fn forecasts_beat_seasonal_naive_and_crossings_are_found_on_generated_workloads() {
    let settings = BacktestSettings {
        origins: 4,
        ..BacktestSettings::default()
    };
    let report = backtest::generated_report(&settings);
    assert_eq!(report.forecast.len(), Workload::standard_set().len());
    assert_eq!(
        report.saturation.len(),
        Workload::standard_set().len() * backtest::SATURATION_LEADS_MS.len()
    );
    println!("{report}");
    for row in &report.forecast {
        for h in &row.horizons {
            assert!(h.mase < 1.0, "{}: {h:?}", row.name);
            assert!(h.relative_mae < 1.0, "{}: {h:?}", row.name);
        }
    }
    // A daily peak can come within noise of the limit a day before the true crossing, so single
    // errors of up to one period (plus an hour) are allowed; typical errors are far smaller and
    // the band must hold the true time.
    let mut errors: Vec<f64> = Vec::new();
    for t in &report.saturation {
        let error = t
            .error_hours
            .expect("every workload saturates within the horizon");
        assert!(error.abs() <= 25.0, "{t:?}");
        assert!(t.inside_band, "{t:?}");
        errors.push(error.abs());
    }
    errors.sort_by(f64::total_cmp);
    let median = errors[errors.len() / 2];
    assert!(median <= 2.0, "median crossing error {median} h");
}

#[test]
fn aws_cloudwatch_backtest_table() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/nab");
    let settings = BacktestSettings {
        origins: 4,
        ..BacktestSettings::default()
    };
    let rows = insight::nab::aws_forecast_backtests(&data, &settings).expect("AWS series");
    assert_eq!(rows.len(), 12);
    let report = BacktestReport {
        forecast: rows,
        saturation: Vec::new(),
    };
    println!("{report}");
    for row in &report.forecast {
        for h in &row.horizons {
            assert!(h.forecasts > 0 && h.mase.is_finite(), "{}: {h:?}", row.name);
        }
    }
}
