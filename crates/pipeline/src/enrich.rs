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
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .find_map(|table| {
            let text = std::fs::read_to_string(table).ok()?;
            inode_in_table(&text, peer)
        })
}

/// The inode of the live socket bound to `peer` in one `/proc/net/tcp*` table. Both the address
/// and the port must match (another address may use the same port), and sockets with no inode
/// (`TIME_WAIT` left by an earlier connection from the same port) are skipped.
fn inode_in_table(text: &str, peer: SocketAddr) -> Option<u64> {
    let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
    text.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let local = parse_proc_addr(cols.get(1)?)?;
        let inode: u64 = cols.get(9)?.parse().ok()?;
        (inode != 0 && local == peer).then_some(inode)
    })
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6): the kernel prints each 32-bit
/// word of the address in host byte order.
fn parse_proc_addr(field: &str) -> Option<SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for i in (0..ip.len()).step_by(8) {
        let word = u32::from_str_radix(ip.get(i..i + 8)?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => std::net::IpAddr::from(<[u8; 4]>::try_from(bytes.as_slice()).ok()?),
        16 => std::net::IpAddr::from(<[u8; 16]>::try_from(bytes.as_slice()).ok()?),
        _ => return None,
    };
    Some(SocketAddr::new(ip.to_canonical(), port))
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

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";

    #[test]
    #[cfg(target_endian = "little")]
    fn proc_addresses_parse_in_host_byte_order() {
        assert_eq!(
            parse_proc_addr("0100007F:1F90"),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            parse_proc_addr("00000000000000000000000001000000:0050"),
            Some("[::1]:80".parse().unwrap())
        );
        // An IPv4 peer on a dual-stack socket reads as the IPv4 address.
        assert_eq!(
            parse_proc_addr("0000000000000000FFFF00000100007F:1F90"),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(parse_proc_addr("0100007:1F90"), None);
        assert_eq!(parse_proc_addr("0100007F"), None);
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn the_live_socket_on_the_peers_address_is_found_not_a_leftover_on_its_port() {
        let table = format!(
            "{HEADER}\n\
             0: 0100007F:A1B2 0100007F:10E1 06 00000000:00000000 03:00000ED3 00000000 0 0 0 3 0000000000000000\n\
             1: 0500000A:A1B2 0A00000A:0050 01 00000000:00000000 00:00000000 00000000 0 0 111 1 0000000000000000\n\
             2: 0100007F:10E1 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 222 1 0000000000000000\n\
             3: 0100007F:A1B2 0100007F:10E1 01 00000000:00000000 00:00000000 00000000 0 0 4242 1 0000000000000000\n"
        );
        let peer: SocketAddr = "127.0.0.1:41394".parse().unwrap();
        assert_eq!(inode_in_table(&table, peer), Some(4242));
        assert_eq!(inode_in_table(&table, "127.0.0.1:1".parse().unwrap()), None);
    }

    #[test]
    fn a_real_loopback_connection_is_found_in_the_kernels_table() {
        use std::os::fd::AsRawFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
        let _server_side = listener.accept().expect("accept");
        let link = std::fs::read_link(format!("/proc/self/fd/{}", client.as_raw_fd()))
            .expect("fd link")
            .to_string_lossy()
            .into_owned();
        let inode = socket_inode(client.local_addr().unwrap());
        assert_eq!(inode.map(|i| format!("socket:[{i}]")), Some(link));
    }
}
