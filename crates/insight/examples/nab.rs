//! `nab run DATA OUT` runs the default detector over NAB; `nab score DATA RESULTS/<detector>`
//! scores an existing results directory.

use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let report = match args.get(1).map(String::as_str) {
        Some("run") if args.len() == 4 => {
            insight::nab::run(Path::new(&args[2]), Path::new(&args[3]), |_| {})
        }
        Some("score") if args.len() == 4 => {
            insight::nab::score_results(Path::new(&args[2]), Path::new(&args[3]))
        }
        _ => {
            eprintln!("usage: nab run DATA OUT | nab score DATA RESULTS_DIR");
            std::process::exit(2);
        }
    };
    match report {
        Ok(r) => {
            if std::env::var_os("NAB_PER_FILE").is_some() {
                for f in &r.per_file {
                    println!(
                        "{:<60} {:>8.3} {}/{} fp {}",
                        f.name, f.raw, f.detected_windows, f.windows, f.false_positives
                    );
                }
            }
            println!("{r}");
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
