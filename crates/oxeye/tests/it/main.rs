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

/// What `oxeye up` printed up to its profiler line.
#[derive(Debug, Default)]
struct Banner {
    /// The dashboard and API address (`127.0.0.1:7070`).
    api: String,
    /// OTLP/gRPC and OTLP/HTTP addresses.
    grpc: String,
    otlp_http: String,
    /// The profiler line after its label (`19 Hz per CPU…` or `off: …`).
    profiler: String,
}

/// Spawns `cmd` (an [`oxeye_up`] with the test's flags) with its stdout piped and its stderr in
/// `stderr`, and reads the banner up to the profiler line; the rest of stdout is drained so its
/// next line never meets a closed pipe. Panics with what oxeye wrote to `stderr` when it did not
/// start.
fn start_up(mut cmd: std::process::Command, stderr: &std::path::Path) -> (boost::Killed, Banner) {
    use std::io::BufRead;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(stderr).expect("a stderr file"))
        .spawn()
        .expect("start oxeye up");
    let stdout = child.stdout.take().expect("stdout");
    let child = boost::Killed(child);
    let mut banner = Banner::default();
    let mut lines = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok);
    for line in lines.by_ref() {
        let l = line.trim_start();
        let second = || l.split_whitespace().nth(2).unwrap_or_default();
        if l.starts_with("dashboard") {
            banner.api = banner_addr(l);
        } else if l.starts_with("OTLP gRPC") {
            banner.grpc = second().to_string();
        } else if l.starts_with("OTLP HTTP") {
            banner.otlp_http = second().trim_start_matches("http://").to_string();
        } else if let Some(rest) = l.strip_prefix("profiler") {
            banner.profiler = rest.trim().to_string();
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    assert!(
        !banner.api.is_empty() && !banner.grpc.is_empty() && !banner.otlp_http.is_empty(),
        "oxeye up did not start: {banner:?}\n{}",
        std::fs::read_to_string(stderr).unwrap_or_default()
    );
    (child, banner)
}
