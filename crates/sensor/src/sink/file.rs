//! Alerts appended to a local file, one a line, synced after each batch.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use model::security::Alert;

use super::{AlertSink, Payload, SendError};
use crate::format::{cef, ocsf};

pub struct FileSink {
    path: PathBuf,
    payload: Payload,
}

impl FileSink {
    pub fn new(path: &Path, payload: Payload) -> Self {
        FileSink {
            path: path.to_path_buf(),
            payload,
        }
    }
}

/// One alert as a line of the chosen payload.
pub fn line(alert: &Alert, payload: Payload) -> String {
    match payload {
        Payload::Ocsf => ocsf::finding(alert).to_string(),
        // An alert is plain data; serializing it cannot fail.
        Payload::Alert => serde_json::to_string(alert).unwrap_or_default(),
        Payload::Cef => cef::line(alert),
    }
}

impl AlertSink for FileSink {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn send(&mut self, alerts: &[Alert]) -> Result<(), SendError> {
        let mut text = String::new();
        for a in alerts {
            text.push_str(&line(a, self.payload));
            text.push('\n');
        }
        let retry = |e: std::io::Error| {
            SendError::Retry(format!(
                "expected to append to {}, {e}",
                self.path.display()
            ))
        };
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(retry)?;
        f.write_all(text.as_bytes()).map_err(retry)?;
        f.sync_data().map_err(retry)
    }
}
