//! Alerts to a real rsyslog (Debian's `rsyslog` package) over UDP and TCP: the test writes its
//! own configuration listening on free local ports and writing to a file in a temporary
//! directory, starts `rsyslogd -n` itself, sends alerts, parses the CEF lines rsyslog wrote,
//! and stops it.

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use model::security::{Alert, AlertSource, AnomalyDetail, Severity};
use sensor::format::syslog::SyslogHeader;
use sensor::sink::{self, Forwarder, RetryConfig, SinkConfig, Transport};
use sensor::testing::*;

use crate::formats::parse_cef;

fn rsyslogd() -> PathBuf {
    for p in ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("rsyslogd not found: install Debian's rsyslog package (./oxeye.sh test does)");
}

/// Stops rsyslogd however the test ends.
struct Rsyslog(Child);

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_ports() -> (u16, u16) {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    (
        tcp.local_addr().unwrap().port(),
        udp.local_addr().unwrap().port(),
    )
}

fn start(dir: &Path, tcp: u16, udp: u16) -> (Rsyslog, PathBuf) {
    let out = dir.join("alerts.log");
    let conf = dir.join("rsyslog.conf");
    // One line per message: the parsed RFC 5424 header fields, then MSG.
    std::fs::write(
        &conf,
        format!(
            r#"global(workDirectory="{dir}")
module(load="imudp")
module(load="imtcp")
template(name="fields" type="string" string="%pri%|%protocol-version%|%timereported:::date-rfc3339%|%hostname%|%app-name%|%procid%|%msgid%|%msg%\n")
ruleset(name="oxeye") {{
  action(type="omfile" file="{out}" template="fields")
}}
input(type="imudp" address="127.0.0.1" port="{udp}" ruleset="oxeye")
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="oxeye")
"#,
            dir = dir.display(),
            out = out.display(),
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("rsyslogd.stderr")).unwrap();
    let child = Command::new(rsyslogd())
        .arg("-n")
        .arg("-f")
        .arg(&conf)
        .arg("-i")
        .arg(dir.join("rsyslogd.pid"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("rsyslogd starts");
    let mut rsyslog = Rsyslog(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", tcp)).is_err() {
        if let Ok(Some(status)) = rsyslog.0.try_wait() {
            panic!(
                "rsyslogd exited ({status}): {}",
                std::fs::read_to_string(dir.join("rsyslogd.stderr")).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "rsyslogd did not listen on {tcp}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (rsyslog, out)
}

fn alerts(prefix: &str) -> Vec<Alert> {
    let connect_event = connect(4242, 1_764_331_200_000_000_000, "203.0.113.9:4444");
    let mut rule = Alert {
        id: format!("{prefix}-rule"),
        time_unix_nano: 1_764_331_200_000_000_000,
        severity: Severity::Medium,
        source: AlertSource::Rule {
            name: "outbound-port-not-allowed".into(),
        },
        summary: "/srv/app (4242) connected to 203.0.113.9:4444/tcp".into(),
        events: vec![connect_event.clone()],
        process: connect_event.process().clone(),
        exe: Some("/srv/app".into()),
        anomaly: None,
        count: 1,
        last_time_unix_nano: 1_764_331_200_000_000_000,
    };
    rule.process.container_id = Some("3f2a9c".into());
    let mut anomaly = rule.clone();
    anomaly.id = format!("{prefix}-anomaly");
    anomaly.severity = Severity::High;
    anomaly.source = AlertSource::Anomaly {
        name: "new_child".into(),
    };
    // Characters CEF must escape, and a line break that must not split the syslog line.
    anomaly.summary = "a|b=c\\d\nsecond line".into();
    anomaly.anomaly = Some(AnomalyDetail {
        score: 1.0,
        expected: "children: [/usr/bin/gzip]".into(),
        seen: "/bin/sh".into(),
        departure: None,
    });
    vec![rule, anomaly]
}

struct Line {
    pri: String,
    version: String,
    timestamp: String,
    hostname: String,
    app: String,
    msgid: String,
    header: Vec<String>,
    ext: Vec<(String, String)>,
}

fn parse(line: &str) -> Line {
    let f: Vec<&str> = line.splitn(8, '|').collect();
    assert_eq!(f.len(), 8, "{line}");
    let (header, ext) = parse_cef(f[7]);
    Line {
        pri: f[0].into(),
        version: f[1].into(),
        timestamp: f[2].into(),
        hostname: f[3].into(),
        app: f[4].into(),
        msgid: f[6].into(),
        header,
        ext,
    }
}

fn get<'a>(line: &'a Line, key: &str) -> &'a str {
    line.ext
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key} in {:?}", line.ext))
}

#[test]
fn rsyslog_receives_cef_alerts_over_udp_and_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let (tcp, udp) = free_ports();
    let (_rsyslog, out) = start(dir.path(), tcp, udp);

    for (transport, port, prefix) in [(Transport::Udp, udp, "udp"), (Transport::Tcp, tcp, "tcp")] {
        let sink = sink::build(&SinkConfig::Syslog {
            address: format!("127.0.0.1:{port}"),
            transport,
            header: SyslogHeader::default(),
        })
        .unwrap();
        let queue = dir.path().join(format!("{prefix}.queue"));
        let mut f = Forwarder::new(sink, &queue, RetryConfig::default()).unwrap();
        f.enqueue(&alerts(prefix)).unwrap();
        assert_eq!(f.pump(Instant::now()).unwrap(), 2, "{:?}", f.last_error());
        assert_eq!(f.pending(), 0);
    }

    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if text.lines().count() >= 4 {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "rsyslog wrote {} of 4 lines:\n{text}",
            text.lines().count()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    println!("rsyslog wrote:\n{text}");
    let lines: Vec<Line> = text.lines().map(parse).collect();
    assert_eq!(lines.len(), 4, "one line per alert, line breaks escaped");
    for prefix in ["udp", "tcp"] {
        let find = |id: String| {
            lines
                .iter()
                .find(|l| get(l, "externalId") == id)
                .unwrap_or_else(|| panic!("no line for {id}"))
        };
        let rule = find(format!("{prefix}-rule"));
        // authpriv (10) * 8 + warning (4) for Medium; + err (3) for High.
        assert_eq!(rule.pri, "84");
        assert_eq!(rule.version, "1");
        assert!(
            rule.timestamp.starts_with("2025-11-28T12:00:00"),
            "{}",
            rule.timestamp
        );
        assert_eq!(rule.hostname, HOST);
        assert_eq!(rule.app, "oxeye");
        assert_eq!(rule.msgid, "alert");
        assert_eq!(rule.header[0], "CEF:0");
        assert_eq!(rule.header[1..3], ["oxeye", "oxeye"]);
        assert_eq!(rule.header[4], "outbound-port-not-allowed");
        assert_eq!(rule.header[6], "5");
        assert_eq!(get(rule, "dst"), "203.0.113.9");
        assert_eq!(get(rule, "dpt"), "4444");
        assert_eq!(get(rule, "spid"), "4242");
        assert_eq!(get(rule, "cs2"), "3f2a9c");
        assert_eq!(get(rule, "act"), "connect");

        let anomaly = find(format!("{prefix}-anomaly"));
        assert_eq!(anomaly.pri, "83");
        assert_eq!(anomaly.header[4], "new_child");
        assert_eq!(anomaly.header[5], "a|b=c\\d second line");
        assert_eq!(anomaly.header[6], "8");
        assert_eq!(get(anomaly, "msg"), "a|b=c\\d\nsecond line");
        assert_eq!(get(anomaly, "cs4"), "children: [/usr/bin/gzip]");
        assert_eq!(get(anomaly, "cs5"), "/bin/sh");
        assert_eq!(get(anomaly, "cn1"), "100");
    }
}
