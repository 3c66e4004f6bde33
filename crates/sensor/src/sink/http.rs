//! HTTP POST sinks: Splunk HEC and a generic webhook. Plain `http://` only, with a minimal
//! HTTP/1.1 client over `TcpStream` (one request per connection): no HTTP client crate is in the
//! dependency tree, and TLS would need one.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use model::security::Alert;

use super::{AlertSink, Payload, SendError, SinkError};
use crate::format::{cef, hec, ocsf};

const TIMEOUT: Duration = Duration::from_secs(10);
/// Responses are read up to this size; the status line is what matters.
const MAX_RESPONSE: u64 = 64 * 1024;

/// A parsed `http://host[:port]/path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl HttpUrl {
    pub fn parse(url: &str) -> Result<Self, SinkError> {
        let Some(rest) = url.strip_prefix("http://") else {
            return Err(SinkError::Config(format!(
                "expected an http:// url (https is not supported yet), found {url:?}"
            )));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                let port = p.parse::<u16>().map_err(|_| {
                    SinkError::Config(format!("expected a port number in {url:?}, found {p:?}"))
                })?;
                (h, port)
            }
            _ => (authority, 80),
        };
        if host.is_empty() {
            return Err(SinkError::Config(format!(
                "expected a host in {url:?}, found none"
            )));
        }
        Ok(HttpUrl {
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }
}

/// The status code of a response, after POSTing `body`.
pub fn post(
    url: &HttpUrl,
    headers: &BTreeMap<String, String>,
    content_type: &str,
    body: &[u8],
) -> Result<u16, String> {
    let host = url.host.trim_start_matches('[').trim_end_matches(']');
    let addr = (host, url.port)
        .to_socket_addrs()
        .map_err(|e| format!("expected to resolve {host}, {e}"))?
        .next()
        .ok_or_else(|| format!("{host} resolves to no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)
        .map_err(|e| format!("expected to connect to {addr}, {e}"))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| format!("expected socket timeouts, {e}"))?;
    let mut request = format!(
        "POST {} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: oxeye/{}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        url.path,
        url.host,
        url.port,
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .and_then(|()| stream.write_all(body))
        .map_err(|e| format!("expected to send the request to {addr}, {e}"))?;
    let mut response = Vec::new();
    let _ = (&stream).take(MAX_RESPONSE).read_to_end(&mut response);
    let status_line = response.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let status_line = String::from_utf8_lossy(status_line);
    let mut parts = status_line.split_whitespace();
    match (
        parts.next(),
        parts.next().and_then(|c| c.parse::<u16>().ok()),
    ) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") => Ok(code),
        _ => Err(format!(
            "expected an HTTP/1.x status line from {addr}, found {:?}",
            status_line.trim()
        )),
    }
}

enum Kind {
    Hec(hec::HecFields),
    Webhook(Payload),
}

pub struct HttpSink {
    url: HttpUrl,
    headers: BTreeMap<String, String>,
    kind: Kind,
}

impl HttpSink {
    /// Splunk HEC at `url` (the path defaults to `/services/collector/event`).
    pub fn hec(url: &str, token: &str, fields: hec::HecFields) -> Result<Self, SinkError> {
        let mut url = HttpUrl::parse(url)?;
        if url.path == "/" {
            url.path = "/services/collector/event".into();
        }
        if token.is_empty() {
            return Err(SinkError::Config("expected a HEC token, found none".into()));
        }
        let headers = BTreeMap::from([("Authorization".to_string(), format!("Splunk {token}"))]);
        Ok(HttpSink {
            url,
            headers,
            kind: Kind::Hec(fields),
        })
    }

    pub fn webhook(
        url: &str,
        headers: BTreeMap<String, String>,
        payload: Payload,
    ) -> Result<Self, SinkError> {
        Ok(HttpSink {
            url: HttpUrl::parse(url)?,
            headers,
            kind: Kind::Webhook(payload),
        })
    }
}

impl AlertSink for HttpSink {
    fn kind(&self) -> &'static str {
        match self.kind {
            Kind::Hec(_) => "hec",
            Kind::Webhook(_) => "webhook",
        }
    }

    fn send(&mut self, alerts: &[Alert]) -> Result<(), SendError> {
        let (content_type, body) = match &self.kind {
            Kind::Hec(fields) => ("application/json", hec::body(alerts, fields)),
            Kind::Webhook(Payload::Cef) => (
                "text/plain; charset=utf-8",
                alerts.iter().map(|a| cef::line(a) + "\n").collect(),
            ),
            Kind::Webhook(Payload::Ocsf) => (
                "application/json",
                serde_json::Value::Array(alerts.iter().map(ocsf::finding).collect()).to_string(),
            ),
            // An alert is plain data; serializing it cannot fail.
            Kind::Webhook(Payload::Alert) => (
                "application/json",
                serde_json::to_string(alerts).unwrap_or_default(),
            ),
        };
        let status = post(&self.url, &self.headers, content_type, body.as_bytes())
            .map_err(SendError::Retry)?;
        match status {
            200..=299 => Ok(()),
            // Busy, throttled, or not (yet) authorized: the alerts wait in the queue.
            401 | 403 | 404 | 408 | 429 | 500..=599 => Err(SendError::Retry(format!(
                "expected 2xx from {}{}, found {status}",
                self.url.host, self.url.path
            ))),
            _ => Err(SendError::Rejected(format!(
                "expected 2xx from {}{}, found {status}: the alerts were refused",
                self.url.host, self.url.path
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = HttpUrl::parse("http://splunk:8088").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("splunk", 8088, "/")
        );
        let u = HttpUrl::parse("http://[::1]:9000/hook?x=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("[::1]", 9000, "/hook?x=1")
        );
        assert_eq!(HttpUrl::parse("http://example.com/a").unwrap().port, 80);
        assert!(HttpUrl::parse("https://example.com").is_err());
        assert!(HttpUrl::parse("http://x:port/").is_err());
    }
}
