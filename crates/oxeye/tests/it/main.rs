mod bench;
mod boost;
mod budget;
mod cli;
mod otlp_profiles;
mod tidy;
mod unwind;

/// The address a banner line of `oxeye up` names (`  dashboard  http://127.0.0.1:7070/` →
/// `127.0.0.1:7070`).
fn banner_addr(line: &str) -> String {
    line.split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

/// `oxeye up` on `data_dir` with every listener on a free loopback port; tests add their flags.
fn oxeye_up(data_dir: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_oxeye"));
    cmd.args(["up", "--data-dir"]).arg(data_dir).args([
        "--http-addr",
        "127.0.0.1:0",
        "--otlp-grpc-addr",
        "127.0.0.1:0",
        "--otlp-http-addr",
        "127.0.0.1:0",
    ]);
    cmd
}
