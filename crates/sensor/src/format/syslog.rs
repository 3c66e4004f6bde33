//! RFC 5424 syslog messages, and RFC 6587 octet-counting framing for TCP.

use chrono::{DateTime, SecondsFormat, Utc};
use model::security::{Alert, Severity};
use serde::{Deserialize, Serialize};

/// The header fields that do not come from the alert.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyslogHeader {
    /// 0–23; 10 is `authpriv`, 4 `auth`, 16–23 `local0`–`local7`.
    pub facility: u8,
    pub app_name: String,
    /// The HOSTNAME field; empty: the alert's host.
    pub hostname: String,
}

impl Default for SyslogHeader {
    fn default() -> Self {
        SyslogHeader {
            facility: 10,
            app_name: "oxeye".into(),
            hostname: String::new(),
        }
    }
}

/// Syslog's severity (0 emergency … 7 debug).
pub fn severity(s: Severity) -> u8 {
    match s {
        Severity::Critical => 2,
        Severity::High => 3,
        Severity::Medium => 4,
        Severity::Low => 5,
        Severity::Info => 6,
    }
}

/// A header field: printable US-ASCII without spaces, at most `max` characters, `-` if empty.
fn field(s: &str, max: usize) -> String {
    let out: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if out.is_empty() { "-".into() } else { out }
}

/// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG`, with `msg` (e.g. a CEF line) as MSG.
pub fn rfc5424(alert: &Alert, header: &SyslogHeader, msg: &str) -> String {
    let pri = u16::from(header.facility.min(23)) * 8 + u16::from(severity(alert.severity));
    let time = DateTime::<Utc>::from_timestamp(
        (alert.time_unix_nano / 1_000_000_000) as i64,
        (alert.time_unix_nano % 1_000_000_000) as u32,
    )
    .unwrap_or_default()
    .to_rfc3339_opts(SecondsFormat::Micros, true);
    let host = if header.hostname.is_empty() {
        alert.host()
    } else {
        &header.hostname
    };
    format!(
        "<{pri}>1 {time} {} {} {} alert - {msg}",
        field(host, 255),
        field(&header.app_name, 48),
        std::process::id()
    )
}

/// RFC 6587 octet counting: `LEN SP MSG`.
pub fn octet_counted(msg: &str) -> String {
    format!("{} {msg}", msg.len())
}
