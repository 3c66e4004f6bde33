//! The resource processor: what the host knows about a sender that the sender did not say.
//!
//! Adds `host.name` and `os.type`, and for senders on this host (loopback TCP peers) the sending
//! process (`process.pid`, `process.executable.name`, `process.executable.path`,
//! `process.command_line`) found through `/proc/net/tcp*` and `/proc/<pid>/fd`. Attributes the
//! sender set are never overwritten.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use model::Batch;

use crate::Origin;

#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnrichConfig {
    pub host: bool,
    pub process: bool,
}

impl Default for EnrichConfig {
    fn default() -> Self {
        EnrichConfig {
            host: true,
            process: true,
        }
    }
}

#[derive(Clone, Debug, Default)]
struct ProcessInfo {
    pid: u32,
    exe_name: String,
    exe_path: String,
    cmdline: String,
}

#[derive(Clone)]
pub struct Enricher {
    config: EnrichConfig,
    host_name: String,
    /// Peer address → process, including misses, so each connection is looked up once.
    cache: Arc<Mutex<HashMap<SocketAddr, Option<ProcessInfo>>>>,
}

impl Enricher {
    pub fn new(config: EnrichConfig) -> Enricher {
        let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        Enricher {
            config,
            host_name,
            cache: Default::default(),
        }
    }

    pub fn disabled() -> Enricher {
        let mut e = Enricher::new(EnrichConfig {
            host: false,
            process: false,
        });
        e.host_name.clear();
        e
    }

    pub async fn enrich(&self, batch: &mut Batch, origin: Origin) {
        let process = match origin.peer {
            Some(peer) if self.config.process && peer.ip().is_loopback() => {
                self.process_of(peer).await
            }
            _ => None,
        };
        for r in batch.resources_mut() {
            let r = Arc::make_mut(r);
            if self.config.host {
                if !self.host_name.is_empty() {
                    r.set_default("host.name", self.host_name.clone());
                }
                r.set_default("os.type", std::env::consts::OS);
            }
            if let Some(p) = &process
                && r.get("process.pid").is_none()
            {
                r.set_default("process.pid", p.pid.to_string());
                r.set_default("process.executable.name", p.exe_name.clone());
                r.set_default("process.executable.path", p.exe_path.clone());
                r.set_default("process.command_line", p.cmdline.clone());
            }
        }
    }

    async fn process_of(&self, peer: SocketAddr) -> Option<ProcessInfo> {
        if let Some(hit) = self.cache.lock().ok()?.get(&peer) {
            return hit.clone();
        }
        let found = tokio::task::spawn_blocking(move || find_process(peer))
            .await
            .ok()
            .flatten();
        if let Ok(mut c) = self.cache.lock() {
            if c.len() > 10_000 {
                c.clear();
            }
            c.insert(peer, found.clone());
        }
        found
    }
}

/// The inode of the TCP socket whose local address is `peer`.
fn socket_inode(peer: SocketAddr) -> Option<u64> {
    let port = format!("{:04X}", peer.port());
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() > 9
                && cols[1].rsplit(':').next() == Some(port.as_str())
                && let Ok(inode) = cols[9].parse()
            {
                return Some(inode);
            }
        }
    }
    None
}

fn find_process(peer: SocketAddr) -> Option<ProcessInfo> {
    let inode = socket_inode(peer)?;
    let target = format!("socket:[{inode}]");
    let me = std::process::id();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target.as_str()) {
                let exe_path = std::fs::read_link(entry.path().join("exe"))
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let cmdline = std::fs::read(entry.path().join("cmdline"))
                    .map(|b| {
                        b.split(|c| *c == 0)
                            .filter(|s| !s.is_empty())
                            .map(|s| String::from_utf8_lossy(s).into_owned())
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default();
                let exe_name = exe_path.rsplit('/').next().unwrap_or_default().to_string();
                return Some(ProcessInfo {
                    pid,
                    exe_name,
                    exe_path,
                    cmdline,
                });
            }
        }
    }
    None
}
