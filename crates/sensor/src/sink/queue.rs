//! A bounded durable queue of alerts waiting for a sink: an append-only file of JSON lines
//! (`{"seq":n,"alert":{…}}`) plus `<file>.acked`, the highest sequence number the sink
//! acknowledged. Records at or below it are skipped when the file is read back; once nothing is
//! pending the file is emptied, and when acknowledged records make up most of a large file it is
//! rewritten with the pending ones only. A torn last line (a crash mid-append) is cut at open.
//! When the queue holds `max_bytes`, new alerts are dropped and counted (the oldest, first
//! evidence of an incident, are kept).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use model::security::Alert;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("expected to use the alert queue at {path}, {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

#[derive(Serialize, Deserialize)]
struct Record {
    seq: u64,
    alert: Alert,
}

#[derive(Debug)]
pub struct DurableQueue {
    path: PathBuf,
    file: File,
    /// (sequence, bytes on disk, alert), oldest first.
    pending: VecDeque<(u64, u64, Alert)>,
    pending_bytes: u64,
    file_bytes: u64,
    next_seq: u64,
    max_bytes: u64,
    dropped: u64,
    torn_bytes: u64,
}

/// Below this size the file is not rewritten just to drop acknowledged records.
const COMPACT_MIN_BYTES: u64 = 1 << 20;

impl DurableQueue {
    /// Opens (or creates) the queue at `path`, reading back what is still pending.
    pub fn open(path: &Path, max_bytes: u64) -> Result<Self, QueueError> {
        let io = |source| QueueError::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let acked = match std::fs::read_to_string(acked_path(path)) {
            Ok(s) => s.trim().parse::<u64>().unwrap_or(0),
            Err(_) => 0,
        };
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        let mut pending = VecDeque::new();
        let mut good_bytes = 0u64;
        let mut next_seq = acked + 1;
        let mut torn_bytes = 0;
        let total = file.metadata().map_err(io)?.len();
        let mut reader = BufReader::new(&file);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).map_err(io)? as u64;
            if n == 0 {
                break;
            }
            let record = line
                .ends_with(b"\n")
                .then(|| serde_json::from_slice::<Record>(&line).ok())
                .flatten();
            let Some(record) = record else {
                // A torn or corrupt tail: everything from here is cut.
                torn_bytes = total - good_bytes;
                break;
            };
            good_bytes += n;
            next_seq = next_seq.max(record.seq + 1);
            if record.seq > acked {
                pending.push_back((record.seq, n, record.alert));
            }
        }
        drop(reader);
        if torn_bytes > 0 {
            file.set_len(good_bytes).map_err(io)?;
        }
        let pending_bytes = pending.iter().map(|(_, n, _)| n).sum();
        let mut queue = DurableQueue {
            path: path.to_path_buf(),
            file,
            pending,
            pending_bytes,
            file_bytes: good_bytes,
            next_seq,
            max_bytes,
            dropped: 0,
            torn_bytes,
        };
        queue.compact_if_worth_it()?;
        Ok(queue)
    }

    fn io(&self, source: std::io::Error) -> QueueError {
        QueueError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// Appends `alerts` and syncs them to disk; returns how many were kept (the rest were
    /// dropped because the queue is full).
    pub fn push(&mut self, alerts: &[Alert]) -> Result<usize, QueueError> {
        let mut buf = Vec::new();
        let mut kept = Vec::new();
        for alert in alerts {
            let record = Record {
                seq: self.next_seq,
                alert: alert.clone(),
            };
            let mut line = serde_json::to_vec(&record).map_err(|e| self.io(e.into()))?;
            line.push(b'\n');
            let n = line.len() as u64;
            if self.pending_bytes + n > self.max_bytes {
                self.dropped += 1;
                continue;
            }
            self.pending_bytes += n;
            buf.extend_from_slice(&line);
            kept.push((self.next_seq, n, alert.clone()));
            self.next_seq += 1;
        }
        if buf.is_empty() {
            return Ok(0);
        }
        self.file.write_all(&buf).map_err(|e| self.io(e))?;
        self.file.sync_data().map_err(|e| self.io(e))?;
        self.file_bytes += buf.len() as u64;
        let n = kept.len();
        self.pending.extend(kept);
        Ok(n)
    }

    /// The oldest `n` pending alerts.
    pub fn peek(&self, n: usize) -> Vec<Alert> {
        self.pending
            .iter()
            .take(n)
            .map(|(_, _, a)| a.clone())
            .collect()
    }

    /// The oldest `n` pending alerts were delivered: forget them, durably.
    pub fn ack(&mut self, n: usize) -> Result<(), QueueError> {
        let mut last = None;
        for _ in 0..n {
            let Some((seq, bytes, _)) = self.pending.pop_front() else {
                break;
            };
            self.pending_bytes -= bytes;
            last = Some(seq);
        }
        let Some(last) = last else {
            return Ok(());
        };
        let acked = acked_path(&self.path);
        let tmp = acked.with_extension("acked.tmp");
        std::fs::write(&tmp, last.to_string()).map_err(|e| self.io(e))?;
        std::fs::rename(&tmp, &acked).map_err(|e| self.io(e))?;
        self.compact_if_worth_it()
    }

    fn compact_if_worth_it(&mut self) -> Result<(), QueueError> {
        if self.pending.is_empty() {
            if self.file_bytes > 0 {
                self.file.set_len(0).map_err(|e| self.io(e))?;
                self.file_bytes = 0;
            }
            return Ok(());
        }
        if self.file_bytes < COMPACT_MIN_BYTES || self.file_bytes < 2 * self.pending_bytes {
            return Ok(());
        }
        let tmp = self.path.with_extension("compact.tmp");
        let mut out = File::create(&tmp).map_err(|e| self.io(e))?;
        for (seq, _, alert) in &self.pending {
            let record = Record {
                seq: *seq,
                alert: alert.clone(),
            };
            let mut line = serde_json::to_vec(&record).map_err(|e| self.io(e.into()))?;
            line.push(b'\n');
            out.write_all(&line).map_err(|e| self.io(e))?;
        }
        out.sync_data().map_err(|e| self.io(e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| self.io(e))?;
        self.file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| self.io(e))?;
        self.file_bytes = self.pending_bytes;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Alerts refused because the queue was full, since it was opened.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Bytes of a torn tail cut when the queue was opened.
    pub fn torn_bytes(&self) -> u64 {
        self.torn_bytes
    }

    /// The size of the queue file.
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }
}

fn acked_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".acked");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::tests::alert;

    #[test]
    fn pending_alerts_survive_a_reopen_and_acknowledged_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q/syslog.queue");
        let mut q = DurableQueue::open(&path, 1 << 20).unwrap();
        assert_eq!(q.push(&[alert(1), alert(2), alert(3)]).unwrap(), 3);
        q.ack(1).unwrap();
        drop(q);
        let mut q = DurableQueue::open(&path, 1 << 20).unwrap();
        let ids: Vec<String> = q.peek(10).into_iter().map(|a| a.id).collect();
        assert_eq!(ids, ["a2", "a3"]);
        q.push(&[alert(4)]).unwrap();
        q.ack(3).unwrap();
        assert!(q.is_empty());
        assert_eq!(q.file_bytes(), 0, "emptied once nothing is pending");
        drop(q);
        let q = DurableQueue::open(&path, 1 << 20).unwrap();
        assert!(q.is_empty());
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hec.queue");
        let mut q = DurableQueue::open(&path, 1 << 20).unwrap();
        q.push(&[alert(1), alert(2)]).unwrap();
        drop(q);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        let torn = b"{\"seq\":3,\"alert\":{\"id\":";
        f.write_all(torn).unwrap();
        drop(f);
        let mut q = DurableQueue::open(&path, 1 << 20).unwrap();
        assert_eq!(q.len(), 2);
        assert_eq!(q.torn_bytes(), torn.len() as u64);
        q.push(&[alert(5)]).unwrap();
        drop(q);
        let q = DurableQueue::open(&path, 1 << 20).unwrap();
        let ids: Vec<String> = q.peek(10).into_iter().map(|a| a.id).collect();
        assert_eq!(ids, ["a1", "a2", "a5"]);
    }

    #[test]
    fn a_full_queue_drops_the_newest_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("full.queue");
        let one = serde_json::to_vec(&Record {
            seq: 1,
            alert: alert(1),
        })
        .unwrap()
        .len() as u64
            + 1;
        let mut q = DurableQueue::open(&path, one * 2 + one / 2).unwrap();
        assert_eq!(q.push(&[alert(1), alert(2), alert(3)]).unwrap(), 2);
        assert_eq!(q.dropped(), 1);
        let ids: Vec<String> = q.peek(10).into_iter().map(|a| a.id).collect();
        assert_eq!(ids, ["a1", "a2"]);
    }
}
