//! The `otlp` exporter: sends this host's profile samples to an OTLP/gRPC endpoint
//! (`ProfilesService/Export`), gzip'd by default, with the configured headers.
//!
//! The store is the exporter's durable queue: every interval it reads the samples of the next
//! window of time (up to a few seconds ago, so the profiler's last drain has landed), sends them
//! and only then advances a cursor kept in `<data>/export/<name>.cursor`. A failed send is retried
//! with doubling delays (1 s up to 30 s) until it succeeds, so an outage delays data but loses
//! none that retention still holds, and a restart resumes where the last acknowledged send ended.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use model::otlp_profiles::profiles_to_otlp;
use opentelemetry_proto::tonic::collector::profiles::v1development::profiles_service_client::ProfilesServiceClient;
use store::Store;
use store::profiles::ProfileFilter;
use store::read::TimeRange;
use tokio::sync::watch;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{MetadataKey, MetadataValue};

/// `exporters: otlp…:` in the config file.
#[derive(Clone, Debug, PartialEq)]
pub struct OtlpExporterConfig {
    /// The name under `exporters` (`otlp`, `otlp/backup`), which also names the cursor file.
    pub name: String,
    /// `http://host:port` of an OTLP/gRPC receiver.
    pub endpoint: String,
    pub headers: Vec<(String, String)>,
    pub gzip: bool,
    pub interval: Duration,
}

/// Samples newer than this are left for the next round: the profiler drains about once a
/// second and the write path takes a moment more.
const SETTLE: Duration = Duration::from_secs(3);
/// At most this much time goes into one request.
const MAX_WINDOW: Duration = Duration::from_secs(60);
/// At most this many samples go into one request; the window shrinks to fit.
const MAX_SAMPLES: usize = 50_000;

pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn cursor_path(data_dir: &Path, name: &str) -> PathBuf {
    data_dir
        .join("export")
        .join(format!("{}.cursor", name.replace('/', "_")))
}

fn read_cursor(path: &Path) -> Option<i64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn write_cursor(path: &Path, ns: i64) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, ns.to_string())?;
    std::fs::rename(tmp, path)
}

/// Normalises an endpoint to a URI tonic connects to.
pub fn endpoint_uri(endpoint: &str) -> Result<String, String> {
    let e = endpoint.trim();
    if e.starts_with("https://") {
        return Err(format!(
            "{e:?}: https is not supported yet (no TLS client in oxeye); use http:// or a local collector"
        ));
    }
    let uri = if e.starts_with("http://") {
        e.to_string()
    } else {
        format!("http://{e}")
    };
    uri.parse::<http::Uri>()
        .map_err(|err| format!("expected host:port or http://host:port, found {e:?} ({err})"))?;
    Ok(uri)
}

/// Runs until `stop` turns true. Never returns an error: a broken endpoint is retried and logged.
pub async fn run(
    cfg: OtlpExporterConfig,
    store: Store,
    host: String,
    data_dir: PathBuf,
    started_ns: i64,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let uri = endpoint_uri(&cfg.endpoint).map_err(|e| anyhow::anyhow!(e))?;
    let channel = tonic::transport::Endpoint::from_shared(uri.clone())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect_lazy();
    let mut client = ProfilesServiceClient::new(channel).max_encoding_message_size(64 << 20);
    if cfg.gzip {
        client = client.send_compressed(CompressionEncoding::Gzip);
    }
    let mut headers = Vec::new();
    for (k, v) in &cfg.headers {
        let key = MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
            .map_err(|e| anyhow::anyhow!("exporters.{}.headers.{k}: {e}", cfg.name))?;
        let value = MetadataValue::try_from(v.as_str())
            .map_err(|e| anyhow::anyhow!("exporters.{}.headers.{k}: {e}", cfg.name))?;
        headers.push((key, value));
    }
    let path = cursor_path(&data_dir, &cfg.name);
    // A first start sends what arrived since this process started, not the whole history.
    let mut cursor = read_cursor(&path).unwrap_or(started_ns);
    let filter = ProfileFilter {
        host: Some(host),
        ..ProfileFilter::default()
    };
    tracing::info!(exporter = %cfg.name, endpoint = %uri, "exporting profiles over OTLP/gRPC");
    loop {
        let upto = now_ns() - SETTLE.as_nanos() as i64;
        while cursor < upto {
            let mut range = TimeRange {
                start_ns: cursor,
                end_ns: upto.min(cursor + MAX_WINDOW.as_nanos() as i64),
            };
            let mut batch = store.profile_batch(&filter, range, MAX_SAMPLES).await?;
            if batch.samples.len() >= MAX_SAMPLES {
                // Cut before the last timestamp read: rows sharing it may not all be here.
                let last = batch.samples.last().map_or(0, |s| s.time_unix_nano as i64);
                if last > cursor {
                    range.end_ns = last;
                    batch.samples.retain(|s| (s.time_unix_nano as i64) < last);
                }
            }
            if !batch.samples.is_empty() {
                let (req, missing) = profiles_to_otlp(&batch);
                if missing > 0 {
                    tracing::warn!(exporter = %cfg.name, missing, "samples without a stored stack were not exported");
                }
                let mut delay = Duration::from_secs(1);
                loop {
                    let mut r = tonic::Request::new(req.clone());
                    for (k, v) in &headers {
                        r.metadata_mut().insert(k.clone(), v.clone());
                    }
                    match client.export(r).await {
                        Ok(resp) => {
                            if let Some(p) = resp.into_inner().partial_success
                                && p.rejected_profiles > 0
                            {
                                tracing::warn!(exporter = %cfg.name, rejected = p.rejected_profiles, reason = %p.error_message, "endpoint rejected profiles");
                            }
                            tracing::debug!(exporter = %cfg.name, samples = batch.samples.len(), "profiles exported");
                            break;
                        }
                        // Bad data is not retried: it would never pass.
                        Err(status) if status.code() == tonic::Code::InvalidArgument => {
                            tracing::warn!(exporter = %cfg.name, %status, "endpoint refused the profiles; skipping them");
                            break;
                        }
                        Err(status) => {
                            tracing::warn!(exporter = %cfg.name, %status, retry_in = ?delay, "export failed");
                            tokio::select! {
                                _ = tokio::time::sleep(delay) => {}
                                _ = stop.wait_for(|v| *v) => return Ok(()),
                            }
                            delay = (delay * 2).min(Duration::from_secs(30));
                        }
                    }
                }
            }
            cursor = range.end_ns;
            if let Err(e) = write_cursor(&path, cursor) {
                tracing::warn!(exporter = %cfg.name, error = %e, path = %path.display(), "cannot save the export cursor");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.interval) => {}
            _ = stop.wait_for(|v| *v) => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_become_http_uris_and_https_is_refused() {
        assert_eq!(
            endpoint_uri("127.0.0.1:4317").unwrap(),
            "http://127.0.0.1:4317"
        );
        assert_eq!(endpoint_uri("http://c:4317").unwrap(), "http://c:4317");
        assert!(
            endpoint_uri("https://c:4317")
                .unwrap_err()
                .contains("https is not supported")
        );
    }

    #[test]
    fn the_cursor_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let p = cursor_path(dir.path(), "otlp/backup");
        assert_eq!(read_cursor(&p), None);
        write_cursor(&p, 42).unwrap();
        assert_eq!(read_cursor(&p), Some(42));
        assert!(p.ends_with("export/otlp_backup.cursor"));
    }
}
