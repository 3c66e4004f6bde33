//! The `otlp` exporter: sends this host's profile samples to an OTLP/gRPC endpoint
//! (`ProfilesService/Export`), gzip'd by default, with the configured headers.
//!
//! The store is the exporter's durable queue: every interval it reads the samples of the next
//! window of time, sends them and only then advances a cursor kept in `<data>/export/<name>.cursor`.
//! A failed send is retried with doubling delays (1 s up to 30 s) until it succeeds, so an outage
//! delays data but loses none that retention still holds, and a restart resumes where the last
//! acknowledged send ended.
//!
//! The cursor never passes a time for which samples may still arrive: with the profiler running,
//! windows end at its watermark ([`StoredUpTo`]: every sample it took before that time is stored),
//! however far the store lags behind a busy host, and never later than [`SETTLE`] ago. With the
//! profiler off, this host's samples are those OTLP receivers stored under its `host.name`; their
//! times are the senders', so windows end [`SETTLE`] ago and a sample that arrives stamped before
//! the cursor is not exported. The same holds for such received samples when the profiler runs.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use model::otlp_profiles::profiles_to_otlp;
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::collector::profiles::v1development::profiles_service_client::ProfilesServiceClient;
use store::Store;
use store::profiles::ProfileFilter;
use store::read::TimeRange;
use tokio::sync::watch;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::transport::Channel;

use crate::profiler::StoredUpTo;

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

/// Samples newer than this are left for the next round, whatever the profiler's watermark says:
/// it keeps requests from being cut into slivers, and gives received samples a moment to land.
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

/// The end of what may be read now: [`SETTLE`] ago, and with the profiler running no later than
/// its watermark, so samples still on their way to the store are read in a later round.
fn readable_until(now_ns: i64, stored: Option<&StoredUpTo>) -> i64 {
    let settled = now_ns - SETTLE.as_nanos() as i64;
    match stored {
        Some(s) => settled.min(i64::try_from(s.get()).unwrap_or(i64::MAX)),
        None => settled,
    }
}

/// Where requests go.
trait Destination {
    /// Delivers one request, retrying as long as it takes; `false` when the exporter is to stop
    /// before it went through.
    fn deliver(
        &mut self,
        req: ExportProfilesServiceRequest,
        samples: usize,
    ) -> impl Future<Output = bool> + Send;
}

/// An OTLP/gRPC `ProfilesService`.
struct Grpc {
    name: String,
    client: ProfilesServiceClient<Channel>,
    headers: Vec<(
        MetadataKey<tonic::metadata::Ascii>,
        MetadataValue<tonic::metadata::Ascii>,
    )>,
    stop: watch::Receiver<bool>,
}

impl Destination for Grpc {
    async fn deliver(&mut self, req: ExportProfilesServiceRequest, samples: usize) -> bool {
        let mut delay = Duration::from_secs(1);
        loop {
            let mut r = tonic::Request::new(req.clone());
            for (k, v) in &self.headers {
                r.metadata_mut().insert(k.clone(), v.clone());
            }
            match self.client.export(r).await {
                Ok(resp) => {
                    if let Some(p) = resp.into_inner().partial_success
                        && p.rejected_profiles > 0
                    {
                        tracing::warn!(exporter = %self.name, rejected = p.rejected_profiles, reason = %p.error_message, "endpoint rejected profiles");
                    }
                    tracing::debug!(exporter = %self.name, samples, "profiles exported");
                    return true;
                }
                // Bad data is not retried: it would never pass.
                Err(status) if status.code() == tonic::Code::InvalidArgument => {
                    tracing::warn!(exporter = %self.name, %status, "endpoint refused the profiles; skipping them");
                    return true;
                }
                Err(status) => {
                    tracing::warn!(exporter = %self.name, %status, retry_in = ?delay, "export failed");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.stop.wait_for(|v| *v) => return false,
                    }
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

/// The samples already sent: everything before `at`.
struct Cursor {
    at: i64,
    path: PathBuf,
}

impl Cursor {
    fn moved_to(&mut self, ns: i64, exporter: &str) {
        self.at = ns;
        if let Err(e) = write_cursor(&self.path, ns) {
            tracing::warn!(exporter, error = %e, path = %self.path.display(), "cannot save the export cursor");
        }
    }
}

/// Sends every sample of `filter` from the cursor up to `until`, window by window, moving the
/// cursor after each delivered window; `Ok(false)` when stopped on the way.
async fn catch_up(
    store: &Store,
    filter: &ProfileFilter,
    cursor: &mut Cursor,
    until: i64,
    to: &mut impl Destination,
    exporter: &str,
) -> anyhow::Result<bool> {
    while cursor.at < until {
        let mut range = TimeRange {
            start_ns: cursor.at,
            end_ns: until.min(cursor.at + MAX_WINDOW.as_nanos() as i64),
        };
        let mut batch = store.profile_batch(filter, range, MAX_SAMPLES).await?;
        if batch.samples.len() >= MAX_SAMPLES {
            // Cut before the last timestamp read: rows sharing it may not all be here.
            let last = batch.samples.last().map_or(0, |s| s.time_unix_nano as i64);
            if last > cursor.at {
                range.end_ns = last;
                batch.samples.retain(|s| (s.time_unix_nano as i64) < last);
            }
        }
        if !batch.samples.is_empty() {
            let (req, missing) = profiles_to_otlp(&batch);
            if missing > 0 {
                tracing::warn!(
                    exporter,
                    missing,
                    "samples without a stored stack were not exported"
                );
            }
            if !to.deliver(req, batch.samples.len()).await {
                return Ok(false);
            }
        }
        cursor.moved_to(range.end_ns, exporter);
    }
    Ok(true)
}

/// Runs until `stop` turns true. Never returns an error: a broken endpoint is retried and logged.
/// `stored` is the profiler's watermark, `None` when the profiler is off.
pub async fn run(
    cfg: OtlpExporterConfig,
    store: Store,
    host: String,
    data_dir: PathBuf,
    started_ns: i64,
    stored: Option<StoredUpTo>,
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
    let mut cursor = Cursor {
        at: read_cursor(&path).unwrap_or(started_ns),
        path,
    };
    let filter = ProfileFilter {
        host: Some(host),
        ..ProfileFilter::default()
    };
    let mut to = Grpc {
        name: cfg.name.clone(),
        client,
        headers,
        stop: stop.clone(),
    };
    tracing::info!(exporter = %cfg.name, endpoint = %uri, "exporting profiles over OTLP/gRPC");
    loop {
        let until = readable_until(now_ns(), stored.as_ref());
        if !catch_up(&store, &filter, &mut cursor, until, &mut to, &cfg.name).await? {
            return Ok(());
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

    /// Collects what would have been sent.
    #[derive(Default)]
    struct Collect(Vec<u64>);

    impl Destination for Collect {
        async fn deliver(&mut self, req: ExportProfilesServiceRequest, _samples: usize) -> bool {
            for rp in &req.resource_profiles {
                for sp in &rp.scope_profiles {
                    for p in &sp.profiles {
                        for s in &p.samples {
                            self.0.extend(s.timestamps_unix_nano.iter().copied());
                        }
                    }
                }
            }
            true
        }
    }

    fn sample(time: i64, host: &str) -> model::ProfileBatch {
        model::ProfileBatch {
            samples: vec![model::ProfileSample {
                time_unix_nano: time as u64,
                service_name: "shop".into(),
                host_name: host.into(),
                pid: 7,
                tid: 7,
                comm: "shop".into(),
                kind: model::ProfileKind::Cpu,
                stack_id: 1,
                value_nanos: 10_000_000,
                label: String::new(),
            }],
            stacks: vec![model::ProfileStack {
                stack_id: 1,
                first_seen_unix_nano: time as u64,
                service_name: "shop".into(),
                frames: vec!["main".into(), "work".into()],
                modules: vec!["shop".into(), "shop".into()],
                truncated: false,
            }],
        }
    }

    #[test]
    fn without_the_profiler_windows_end_settle_ago() {
        let now = 100_000_000_000;
        let settled = now - SETTLE.as_nanos() as i64;
        assert_eq!(readable_until(now, None), settled);
        let stored = StoredUpTo::new(settled as u64 + 1);
        assert_eq!(readable_until(now, Some(&stored)), settled);
    }

    /// On a busy host the profiler's writes land seconds after the samples were taken: a sample
    /// stored late, but after the watermark passed it, is exported in a later round.
    #[tokio::test]
    async fn a_sample_stored_late_is_still_exported_and_the_cursor_waits_for_the_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            &dir.path().join("data"),
            store::StoreConfig {
                retention_age: None,
                ..store::StoreConfig::default()
            },
        )
        .unwrap();
        let sec = 1_000_000_000i64;
        let t0 = now_ns() - 60 * sec;
        store
            .write(&model::Batch::Profiles(sample(t0 + sec, "here")))
            .await
            .unwrap();
        store
            .write(&model::Batch::Profiles(sample(t0 + sec, "elsewhere")))
            .await
            .unwrap();
        // The profiler has stored everything before t0 + 2 s; a sample it took at t0 + 3 s is
        // still on its way.
        let stored = StoredUpTo::new((t0 + 2 * sec) as u64);
        let filter = ProfileFilter {
            host: Some("here".into()),
            ..ProfileFilter::default()
        };
        let mut cursor = Cursor {
            at: t0,
            path: cursor_path(dir.path(), "otlp"),
        };
        let mut to = Collect::default();
        let until = readable_until(now_ns(), Some(&stored));
        assert!(
            catch_up(&store, &filter, &mut cursor, until, &mut to, "otlp")
                .await
                .unwrap()
        );
        assert_eq!(to.0, vec![(t0 + sec) as u64], "this host's sample only");
        assert_eq!(cursor.at, t0 + 2 * sec, "the cursor stops at the watermark");
        assert_eq!(read_cursor(&cursor.path), Some(t0 + 2 * sec));

        store
            .write(&model::Batch::Profiles(sample(t0 + 3 * sec, "here")))
            .await
            .unwrap();
        stored.advance((t0 + 4 * sec) as u64);
        let until = readable_until(now_ns(), Some(&stored));
        assert!(
            catch_up(&store, &filter, &mut cursor, until, &mut to, "otlp")
                .await
                .unwrap()
        );
        assert_eq!(to.0, vec![(t0 + sec) as u64, (t0 + 3 * sec) as u64]);
        assert_eq!(cursor.at, t0 + 4 * sec);
        store.close().await;
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
