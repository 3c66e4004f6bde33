//! ArcSight CEF (Common Event Format, revision 25):
//! `CEF:0|oxeye|oxeye|version|signature id|name|severity|extension`. In the header `\` and `|`
//! are escaped with a backslash; in extension values `\` and `=` are, and line breaks become
//! `\n` / `\r`.

use model::security::{Alert, AlertSource, SecurityEvent, Severity};

/// A header field: `\` → `\\`, `|` → `\|`; line breaks are not allowed there and become spaces.
pub fn escape_header(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// An extension value: `\` → `\\`, `=` → `\=`, line breaks → `\n`, `\r`.
pub fn escape_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// CEF's 0–10 severity.
pub fn severity(s: Severity) -> u8 {
    match s {
        Severity::Info => 1,
        Severity::Low => 3,
        Severity::Medium => 5,
        Severity::High => 8,
        Severity::Critical => 10,
    }
}

/// The alert as one CEF line (no line break).
pub fn line(alert: &Alert) -> String {
    let mut ext: Vec<(&str, String)> = Vec::new();
    let p = &alert.process;
    ext.push(("rt", (alert.time_unix_nano / 1_000_000).to_string()));
    ext.push(("dvchost", p.host.clone()));
    ext.push(("externalId", alert.id.clone()));
    ext.push(("cnt", alert.count.to_string()));
    ext.push(("spid", p.pid.to_string()));
    if !p.comm.is_empty() {
        ext.push(("sproc", p.comm.clone()));
    }
    ext.push(("suid", p.uid.to_string()));
    if let Some(exe) = &alert.exe {
        ext.push(("sfname", exe.clone()));
    }
    let kind = match &alert.source {
        AlertSource::Rule { .. } => "rule",
        AlertSource::Anomaly { .. } => "anomaly",
    };
    ext.push(("cs1Label", "kind".into()));
    ext.push(("cs1", kind.into()));
    if let Some(id) = &p.container_id {
        ext.push(("cs2Label", "containerId".into()));
        ext.push(("cs2", id.clone()));
    }
    if let Some(service) = &p.service_name {
        ext.push(("cs3Label", "service".into()));
        ext.push(("cs3", service.clone()));
    }
    if let Some(a) = &alert.anomaly {
        ext.push(("cn1Label", "score".into()));
        ext.push(("cn1", ((a.score * 100.0).round() as i64).to_string()));
        ext.push(("cs4Label", "expected".into()));
        ext.push(("cs4", a.expected.clone()));
        ext.push(("cs5Label", "seen".into()));
        ext.push(("cs5", a.seen.clone()));
    }
    if let Some(e) = alert.events.first() {
        ext.push(("act", e.kind().name().into()));
        match e {
            SecurityEvent::Connect(c) | SecurityEvent::Accept(c) => {
                let (src, dst) = if matches!(e, SecurityEvent::Connect(_)) {
                    (c.local, c.remote)
                } else {
                    (c.remote, c.local)
                };
                ext.push(("src", src.ip().to_canonical().to_string()));
                ext.push(("spt", src.port().to_string()));
                ext.push(("dst", dst.ip().to_canonical().to_string()));
                ext.push(("dpt", dst.port().to_string()));
                ext.push(("proto", c.protocol.name().to_uppercase()));
            }
            SecurityEvent::FileOpen(f) => ext.push(("filePath", f.path.clone())),
            SecurityEvent::Exec(x) => {
                ext.push(("cs6Label", "cmdLine".into()));
                ext.push(("cs6", x.argv.join(" ")));
            }
            _ => {}
        }
    }
    ext.push(("msg", alert.summary.clone()));
    let extension: Vec<String> = ext
        .iter()
        .map(|(k, v)| format!("{k}={}", escape_value(v)))
        .collect();
    format!(
        "CEF:0|oxeye|oxeye|{}|{}|{}|{}|{}",
        escape_header(env!("CARGO_PKG_VERSION")),
        escape_header(alert.source.name()),
        escape_header(&alert.summary),
        severity(alert.severity),
        extension.join(" ")
    )
}
