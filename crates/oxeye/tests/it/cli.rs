//! The binary's startup contract: clear one-line errors, nothing half-started.

use std::net::TcpListener;
use std::process::Command;

fn oxeye() -> Command {
    Command::new(env!("CARGO_BIN_EXE_oxeye"))
}

#[test]
fn a_port_in_use_names_the_address_and_the_flag() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = oxeye()
        .args(["up", "--data-dir"])
        .arg(dir.path())
        .args([
            "--http-addr",
            &addr,
            "--otlp-grpc-addr",
            "127.0.0.1:0",
            "--otlp-http-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&addr) && err.contains("--http-addr"), "{err}");
    assert!(
        !dir.path().join("wal").exists(),
        "the store must not be opened when a port is taken"
    );
}

#[test]
fn a_file_as_data_dir_is_refused_naming_the_flag() {
    let f = tempfile::NamedTempFile::new().unwrap();
    let out = crate::oxeye_up(f.path()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--data-dir") && err.contains("not a directory"),
        "{err}"
    );
}

#[test]
fn a_public_receiver_without_a_token_is_refused() {
    let out = oxeye()
        .args(["up", "--otlp-grpc-addr", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--receiver-token"));
}

#[test]
fn config_errors_are_all_reported_with_their_paths() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    use std::io::Write;
    writeln!(f, "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: nowhere\nexporters:\n  store:\n    retention:\n      max_size: lots").unwrap();
    let out = oxeye()
        .args(["up", "--config"])
        .arg(f.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("receivers.otlp.protocols.grpc.endpoint"),
        "{err}"
    );
    assert!(err.contains("exporters.store.retention.max_size"), "{err}");
}

#[test]
fn insight_backtest_prints_the_tables_and_writes_json() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/nab");
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("sub/backtest.json");
    let out = oxeye()
        .args(["insight", "backtest", "--origins", "2", "--data"])
        .arg(&data)
        .arg("--out")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("NAB AWS CloudWatch (12 series"), "{stdout}");
    assert!(stdout.contains("MASE ours / seasonal-naive"), "{stdout}");
    assert!(stdout.contains("queue_depth"), "{stdout}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["aws"]["forecast"].as_array().map(Vec::len), Some(12));
    let trials = v["generated"]["saturation"].as_array().unwrap();
    assert!(
        trials.iter().all(|t| t["error_hours"].is_number()),
        "every generated workload's crossing is forecast: {trials:?}"
    );

    let missing = oxeye()
        .args(["insight", "backtest", "--data"])
        .arg(dir.path().join("nowhere"))
        .output()
        .unwrap();
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("nowhere") && err.contains("--data"), "{err}");
}
