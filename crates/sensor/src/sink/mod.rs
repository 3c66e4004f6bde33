//! SIEM destinations. Each is an [`AlertSink`] (one required method) behind a [`Forwarder`],
//! which owns its durable queue and its retry schedule: alerts are queued to disk first, sent in
//! order, and removed only once the destination took them.

pub mod file;
pub mod http;
pub mod queue;
pub mod syslog;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use model::security::Alert;
use serde::{Deserialize, Serialize};

use crate::format::hec::HecFields;
use crate::format::syslog::SyslogHeader;
pub use queue::{DurableQueue, QueueError};

/// Why a send failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Worth trying again later (unreachable, busy, timed out).
    #[error("{0}")]
    Retry(String),
    /// The destination refused these alerts for good (malformed for it); they are dropped.
    #[error("{0}")]
    Rejected(String),
}

/// A destination for alerts.
pub trait AlertSink: Send {
    fn kind(&self) -> &'static str;
    /// Delivers `alerts` in order; `Ok` means the destination has them all.
    fn send(&mut self, alerts: &[Alert]) -> Result<(), SendError>;
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    #[default]
    Udp,
    Tcp,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Payload {
    /// OCSF Detection Finding JSON.
    #[default]
    Ocsf,
    /// oxeye's own alert JSON (`model::security::Alert`).
    Alert,
    /// One CEF line per alert.
    Cef,
}

/// One destination, chosen by `type`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkConfig {
    /// RFC 5424 syslog with a CEF message, over UDP or TCP (RFC 6587 octet counting).
    Syslog {
        /// `host:port`.
        address: String,
        #[serde(default)]
        transport: Transport,
        #[serde(default)]
        header: SyslogHeader,
    },
    /// Splunk HTTP Event Collector.
    Hec {
        /// `http://host:8088`; the path defaults to `/services/collector/event`.
        url: String,
        token: String,
        #[serde(default)]
        fields: HecFields,
    },
    /// A JSON array of alerts POSTed to any URL.
    Webhook {
        url: String,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        #[serde(default)]
        payload: Payload,
    },
    /// Appended to a local file, one alert a line.
    File {
        path: PathBuf,
        #[serde(default)]
        payload: Payload,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("invalid sink configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// The sink a configuration describes (no connection is made yet).
pub fn build(config: &SinkConfig) -> Result<Box<dyn AlertSink>, SinkError> {
    Ok(match config {
        SinkConfig::Syslog {
            address,
            transport,
            header,
        } => Box::new(syslog::SyslogSink::new(
            address,
            *transport,
            header.clone(),
        )?),
        SinkConfig::Hec { url, token, fields } => {
            Box::new(http::HttpSink::hec(url, token, fields.clone())?)
        }
        SinkConfig::Webhook {
            url,
            headers,
            payload,
        } => Box::new(http::HttpSink::webhook(url, headers.clone(), *payload)?),
        SinkConfig::File { path, payload } => Box::new(file::FileSink::new(path, *payload)),
    })
}

/// The retry schedule: doubling delays between failed attempts, capped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    pub initial_ms: u64,
    pub max_ms: u64,
    /// Alerts sent per attempt.
    pub batch: usize,
    /// The durable queue's bound.
    pub max_queue_bytes: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial_ms: 500,
            max_ms: 60_000,
            batch: 100,
            max_queue_bytes: 64 << 20,
        }
    }
}

/// What a [`Forwarder`] has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForwarderStats {
    pub sent: u64,
    pub failed_attempts: u64,
    /// Refused for good by the destination.
    pub rejected: u64,
}

/// A sink with its durable queue and retry schedule.
pub struct Forwarder {
    sink: Box<dyn AlertSink>,
    queue: DurableQueue,
    retry: RetryConfig,
    delay: Duration,
    next_attempt: Option<Instant>,
    last_error: Option<String>,
    stats: ForwarderStats,
}

impl Forwarder {
    /// `queue_path` holds the alerts not yet delivered, across restarts.
    pub fn new(
        sink: Box<dyn AlertSink>,
        queue_path: &Path,
        retry: RetryConfig,
    ) -> Result<Self, SinkError> {
        let queue = DurableQueue::open(queue_path, retry.max_queue_bytes)?;
        Ok(Forwarder {
            sink,
            queue,
            delay: Duration::from_millis(retry.initial_ms),
            retry,
            next_attempt: None,
            last_error: None,
            stats: ForwarderStats::default(),
        })
    }

    pub fn kind(&self) -> &'static str {
        self.sink.kind()
    }

    /// Queues alerts durably; they are sent by [`Self::pump`].
    pub fn enqueue(&mut self, alerts: &[Alert]) -> Result<usize, SinkError> {
        Ok(self.queue.push(alerts)?)
    }

    /// Sends what is queued, in batches, until the queue is empty or an attempt fails; does
    /// nothing before the retry delay after a failure has passed. Returns how many were sent.
    pub fn pump(&mut self, now: Instant) -> Result<usize, SinkError> {
        if self.next_attempt.is_some_and(|t| now < t) {
            return Ok(0);
        }
        let mut sent = 0;
        while !self.queue.is_empty() {
            let batch = self.queue.peek(self.retry.batch.max(1));
            match self.sink.send(&batch) {
                Ok(()) => {
                    self.queue.ack(batch.len())?;
                    sent += batch.len();
                    self.stats.sent += batch.len() as u64;
                    self.delay = Duration::from_millis(self.retry.initial_ms);
                    self.next_attempt = None;
                    self.last_error = None;
                }
                Err(SendError::Rejected(e)) => {
                    self.queue.ack(batch.len())?;
                    self.stats.rejected += batch.len() as u64;
                    self.last_error = Some(e);
                }
                Err(SendError::Retry(e)) => {
                    self.stats.failed_attempts += 1;
                    self.last_error = Some(e);
                    self.next_attempt = Some(now + self.delay);
                    self.delay = (self.delay * 2).min(Duration::from_millis(self.retry.max_ms));
                    break;
                }
            }
        }
        Ok(sent)
    }

    /// When the next attempt may be made, after a failure.
    pub fn next_attempt(&self) -> Option<Instant> {
        self.next_attempt
    }

    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    pub fn dropped(&self) -> u64 {
        self.queue.dropped()
    }

    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    pub fn stats(&self) -> ForwarderStats {
        self.stats
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use model::security::{AlertSource, SecurityProcess, Severity};
    use std::sync::{Arc, Mutex};

    pub fn alert(n: u64) -> Alert {
        Alert {
            id: format!("a{n}"),
            time_unix_nano: n * 1_000_000_000,
            severity: Severity::High,
            source: AlertSource::Rule {
                name: "ptrace-attach".into(),
            },
            summary: format!("alert {n}"),
            events: vec![],
            process: SecurityProcess {
                pid: 42,
                host: "h".into(),
                ..Default::default()
            },
            exe: Some("/usr/bin/x".into()),
            anomaly: None,
            count: 1,
            last_time_unix_nano: n * 1_000_000_000,
        }
    }

    /// Fails the first `failures` sends, then records what it is given.
    struct Flaky {
        failures: usize,
        got: Arc<Mutex<Vec<String>>>,
    }

    impl AlertSink for Flaky {
        fn kind(&self) -> &'static str {
            "flaky"
        }
        fn send(&mut self, alerts: &[Alert]) -> Result<(), SendError> {
            if self.failures > 0 {
                self.failures -= 1;
                return Err(SendError::Retry("connection refused".into()));
            }
            let mut got = self.got.lock().unwrap();
            got.extend(alerts.iter().map(|a| a.id.clone()));
            Ok(())
        }
    }

    #[test]
    fn failed_sends_are_retried_after_a_growing_delay_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flaky.queue");
        let got = Arc::new(Mutex::new(Vec::new()));
        let retry = RetryConfig {
            initial_ms: 100,
            max_ms: 1000,
            batch: 2,
            ..Default::default()
        };
        let sink = Flaky {
            failures: 2,
            got: got.clone(),
        };
        let mut f = Forwarder::new(Box::new(sink), &path, retry.clone()).unwrap();
        f.enqueue(&[alert(1), alert(2), alert(3)]).unwrap();
        let t0 = Instant::now();
        assert_eq!(f.pump(t0).unwrap(), 0);
        assert_eq!(f.next_attempt(), Some(t0 + Duration::from_millis(100)));
        assert_eq!(
            f.pump(t0 + Duration::from_millis(50)).unwrap(),
            0,
            "too early"
        );
        assert_eq!(f.pump(t0 + Duration::from_millis(100)).unwrap(), 0);
        assert_eq!(
            f.next_attempt(),
            Some(t0 + Duration::from_millis(300)),
            "the delay doubled"
        );
        assert_eq!(f.stats().failed_attempts, 2);
        assert_eq!(f.last_error(), Some("connection refused"));
        drop(f);

        // A restart: the queue still holds all three.
        let sink = Flaky {
            failures: 0,
            got: got.clone(),
        };
        let mut f = Forwarder::new(Box::new(sink), &path, retry).unwrap();
        assert_eq!(f.pending(), 3);
        assert_eq!(f.pump(t0).unwrap(), 3);
        assert_eq!(*got.lock().unwrap(), ["a1", "a2", "a3"]);
        assert_eq!(f.pending(), 0);
    }

    #[test]
    fn sink_configs_are_a_closed_tagged_enum_that_refuses_unknown_fields() {
        let yaml = "type: syslog\naddress: 127.0.0.1:514\ntransport: tcp\n";
        let c: SinkConfig = serde_yaml::from_str(yaml).unwrap();
        assert!(matches!(
            c,
            SinkConfig::Syslog {
                transport: Transport::Tcp,
                ..
            }
        ));
        let err =
            serde_yaml::from_str::<SinkConfig>("type: hec\nurl: http://x\ntoken: t\ncolour: red\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("unknown field `colour`"), "{err}");
        assert!(
            build(&SinkConfig::Hec {
                url: "https://splunk:8088".into(),
                token: "t".into(),
                fields: HecFields::default()
            })
            .is_err()
        );
    }
}
