//! HEC and webhook sinks against a small HTTP/1.1 server on a free local port.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use model::security::{Alert, AlertSource, SecurityProcess, Severity};
use sensor::format::hec::HecFields;
use sensor::sink::{self, Forwarder, Payload, RetryConfig, SinkConfig};
use serde_json::Value;

struct Request {
    head: String,
    body: String,
}

/// Answers each connection with the next status of `statuses`, and reports what it got.
fn server(statuses: Vec<u16>) -> (String, mpsc::Receiver<Request>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for status in statuses {
            let (mut stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let text = if status == 200 {
                r#"{"text":"Success","code":0}"#
            } else {
                r#"{"text":"Server is busy","code":9}"#
            };
            write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            )
            .unwrap();
            tx.send(Request {
                head,
                body: String::from_utf8(body).unwrap(),
            })
            .unwrap();
        }
    });
    (format!("http://{addr}"), rx)
}

fn alert(n: u64) -> Alert {
    Alert {
        id: format!("h-{n}"),
        time_unix_nano: n * 1_000_000_000,
        severity: Severity::Critical,
        source: AlertSource::Rule {
            name: "setuid-root-from-user".into(),
        },
        summary: format!("alert {n}"),
        events: vec![],
        process: SecurityProcess {
            pid: 9,
            host: "web-1".into(),
            ..Default::default()
        },
        exe: None,
        anomaly: None,
        count: 1,
        last_time_unix_nano: n * 1_000_000_000,
    }
}

#[test]
fn hec_retries_a_busy_collector_and_then_delivers_every_alert() {
    let (url, got) = server(vec![503, 200]);
    let dir = tempfile::tempdir().unwrap();
    let sink = sink::build(&SinkConfig::Hec {
        url,
        token: "00000000-0000-0000-0000-000000000000".into(),
        fields: HecFields::default(),
    })
    .unwrap();
    let retry = RetryConfig {
        initial_ms: 200,
        ..Default::default()
    };
    let mut f = Forwarder::new(sink, &dir.path().join("hec.queue"), retry).unwrap();
    f.enqueue(&[alert(1), alert(2)]).unwrap();
    let t0 = Instant::now();
    assert_eq!(f.pump(t0).unwrap(), 0);
    assert_eq!(f.pending(), 2);
    assert!(
        f.last_error().unwrap().contains("found 503"),
        "{:?}",
        f.last_error()
    );
    let busy = got.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        busy.head
            .starts_with("POST /services/collector/event HTTP/1.1\r\n")
    );
    assert_eq!(f.pump(t0 + Duration::from_millis(200)).unwrap(), 2);
    assert_eq!(f.pending(), 0);
    let ok = got.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        ok.head
            .contains("Authorization: Splunk 00000000-0000-0000-0000-000000000000\r\n"),
        "{}",
        ok.head
    );
    let events: Vec<Value> = ok
        .body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["host"], "web-1");
    assert_eq!(events[1]["event"]["finding_info"]["uid"], "h-2");
    assert_eq!(events[1]["event"]["severity_id"], 5);
}

#[test]
fn a_webhook_gets_a_json_array_and_a_refusal_drops_the_batch() {
    let (url, got) = server(vec![200, 400]);
    let dir = tempfile::tempdir().unwrap();
    let sink = sink::build(&SinkConfig::Webhook {
        url: format!("{url}/hooks/oxeye"),
        headers: [("X-Token".to_string(), "s3cret".to_string())].into(),
        payload: Payload::Alert,
    })
    .unwrap();
    let mut f =
        Forwarder::new(sink, &dir.path().join("hook.queue"), RetryConfig::default()).unwrap();
    f.enqueue(&[alert(1)]).unwrap();
    assert_eq!(f.pump(Instant::now()).unwrap(), 1);
    let req = got.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(req.head.starts_with("POST /hooks/oxeye HTTP/1.1\r\n"));
    assert!(req.head.contains("X-Token: s3cret\r\n"));
    let body: Vec<Alert> = serde_json::from_str(&req.body).unwrap();
    assert_eq!(body, [alert(1)]);

    f.enqueue(&[alert(2)]).unwrap();
    assert_eq!(f.pump(Instant::now()).unwrap(), 0);
    assert_eq!(f.pending(), 0, "a 400 is final: retrying cannot help");
    assert_eq!(f.stats().rejected, 1);
}
