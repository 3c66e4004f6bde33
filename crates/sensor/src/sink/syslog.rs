//! Syslog over UDP (one RFC 5424 message a datagram) or TCP (RFC 6587 octet counting, one
//! connection kept open and remade after an error). The message is the alert's CEF line.

use std::io::Write;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::Duration;

use model::security::Alert;

use super::{AlertSink, SendError, SinkError, Transport};
use crate::format::{cef, syslog};

/// A UDP datagram is cut to this many bytes (rsyslog's default maximum message size is 8 KiB).
const MAX_DATAGRAM: usize = 8192;
const TIMEOUT: Duration = Duration::from_secs(5);

pub struct SyslogSink {
    address: String,
    transport: Transport,
    header: syslog::SyslogHeader,
    udp: Option<UdpSocket>,
    tcp: Option<TcpStream>,
}

impl SyslogSink {
    pub fn new(
        address: &str,
        transport: Transport,
        header: syslog::SyslogHeader,
    ) -> Result<Self, SinkError> {
        if !address.contains(':') {
            return Err(SinkError::Config(format!(
                "expected a syslog address as host:port, found {address:?}"
            )));
        }
        if header.facility > 23 {
            return Err(SinkError::Config(format!(
                "expected a syslog facility from 0 to 23, found {}",
                header.facility
            )));
        }
        Ok(SyslogSink {
            address: address.to_string(),
            transport,
            header,
            udp: None,
            tcp: None,
        })
    }

    fn resolve(&self) -> Result<SocketAddr, SendError> {
        self.address
            .to_socket_addrs()
            .map_err(|e| SendError::Retry(format!("expected to resolve {}, {e}", self.address)))?
            .next()
            .ok_or_else(|| SendError::Retry(format!("{} resolves to no address", self.address)))
    }

    /// The RFC 5424 message for one alert.
    pub fn message(&self, alert: &Alert) -> String {
        syslog::rfc5424(alert, &self.header, &cef::line(alert))
    }

    fn send_udp(&mut self, alerts: &[Alert]) -> Result<(), SendError> {
        if self.udp.is_none() {
            let target = self.resolve()?;
            let local = if target.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            let socket = UdpSocket::bind(local)
                .and_then(|s| s.connect(target).map(|()| s))
                .map_err(|e| SendError::Retry(format!("expected a udp socket to {target}, {e}")))?;
            self.udp = Some(socket);
        }
        for alert in alerts {
            let message = self.message(alert);
            let mut bytes = message.as_bytes();
            if bytes.len() > MAX_DATAGRAM {
                bytes = &bytes[..MAX_DATAGRAM];
            }
            let sent = self.udp.as_ref().map(|s| s.send(bytes));
            if let Some(Err(e)) = sent {
                self.udp = None;
                return Err(SendError::Retry(format!(
                    "expected to send to {} over udp, {e}",
                    self.address
                )));
            }
        }
        Ok(())
    }

    fn send_tcp(&mut self, alerts: &[Alert]) -> Result<(), SendError> {
        if self.tcp.is_none() {
            let target = self.resolve()?;
            let stream = TcpStream::connect_timeout(&target, TIMEOUT)
                .and_then(|s| s.set_write_timeout(Some(TIMEOUT)).map(|()| s))
                .map_err(|e| SendError::Retry(format!("expected to connect to {target}, {e}")))?;
            self.tcp = Some(stream);
        }
        let mut frames = String::new();
        for alert in alerts {
            frames.push_str(&syslog::octet_counted(&self.message(alert)));
        }
        let written = match self.tcp.as_mut() {
            Some(stream) => stream
                .write_all(frames.as_bytes())
                .and_then(|()| stream.flush()),
            None => Ok(()),
        };
        written.map_err(|e| {
            self.tcp = None;
            SendError::Retry(format!(
                "expected to send to {} over tcp, {e}",
                self.address
            ))
        })
    }
}

impl AlertSink for SyslogSink {
    fn kind(&self) -> &'static str {
        "syslog"
    }

    fn send(&mut self, alerts: &[Alert]) -> Result<(), SendError> {
        match self.transport {
            Transport::Udp => self.send_udp(alerts),
            Transport::Tcp => self.send_tcp(alerts),
        }
    }
}
