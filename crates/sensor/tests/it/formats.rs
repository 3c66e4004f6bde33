//! The SIEM formats against their published definitions.
//!
//! OCSF required attributes below are those of the schema at tag 1.3.0 of
//! github.com/ocsf/ocsf-schema, resolved through each class's `extends` chain and `$include`s
//! (`includes/classification.json`, `includes/occurrence.json`, `events/base_event.json`,
//! `events/system/system.json`, `events/network/network.json`, `events/findings/finding.json`)
//! and, for objects, `objects/*.json` (`requirement: required` and `constraints.at_least_one`).

use model::security::{Alert, AlertSource, AnomalyDetail, SecurityEvent, Severity};
use sensor::format::{cef, hec, ocsf, syslog};
use sensor::testing::*;
use serde_json::Value;

/// base_event + classification + occurrence (1.3.0).
const BASE_REQUIRED: &[&str] = &[
    "activity_id",
    "category_uid",
    "class_uid",
    "metadata",
    "severity_id",
    "time",
    "type_uid",
];
/// events/system/process.json (1.3.0): system.json adds actor and device, the class process.
const PROCESS_ACTIVITY_REQUIRED: &[&str] = &["actor", "device", "process"];
/// events/system/filesystem.json (1.3.0).
const FILE_SYSTEM_ACTIVITY_REQUIRED: &[&str] = &["actor", "device", "file"];
/// events/network/network_activity.json (1.3.0): network.json requires dst_endpoint.
const NETWORK_ACTIVITY_REQUIRED: &[&str] = &["dst_endpoint"];
/// events/findings/detection_finding.json (1.3.0): finding.json requires finding_info.
const DETECTION_FINDING_REQUIRED: &[&str] = &["finding_info"];

/// objects/*.json (1.3.0): required attributes.
const OBJECT_REQUIRED: &[(&str, &[&str])] = &[
    ("metadata", &["product", "version"]),
    ("product", &["vendor_name"]),
    ("device", &["type_id"]),
    ("file", &["name", "type_id"]),
    ("finding_info", &["title", "uid"]),
    ("analytic", &["type_id"]),
];
/// objects/*.json (1.3.0): `constraints.at_least_one`.
const OBJECT_AT_LEAST_ONE: &[(&str, &[&str])] = &[
    ("process", &["pid", "uid"]),
    (
        "actor",
        &[
            "process",
            "user",
            "invoked_by",
            "session",
            "app_name",
            "app_uid",
        ],
    ),
    (
        "network_endpoint",
        &[
            "ip",
            "uid",
            "name",
            "hostname",
            "svc_name",
            "instance_uid",
            "interface_uid",
            "interface_name",
        ],
    ),
    ("user", &["account", "name", "uid"]),
];

fn has_all(v: &Value, what: &str, keys: &[&str]) {
    for k in keys {
        assert!(
            v.get(k).is_some_and(|x| !x.is_null()),
            "{what} lacks required `{k}`: {v:#}"
        );
    }
}

fn has_one(v: &Value, object: &str) {
    let (_, keys) = OBJECT_AT_LEAST_ONE
        .iter()
        .find(|(o, _)| *o == object)
        .unwrap();
    assert!(
        keys.iter().any(|k| v.get(k).is_some()),
        "{object} has none of {keys:?}: {v:#}"
    );
}

fn object(v: &Value, object: &str) {
    let (_, keys) = OBJECT_REQUIRED.iter().find(|(o, _)| *o == object).unwrap();
    has_all(v, object, keys);
}

/// The class-independent checks: base attributes, ids consistent, metadata, device.
fn check_base(v: &Value, class_uid: u64, extra: &[&str]) {
    has_all(v, "event", BASE_REQUIRED);
    has_all(v, "event", extra);
    assert_eq!(v["class_uid"], class_uid);
    assert_eq!(v["category_uid"], class_uid / 1000);
    let activity = v["activity_id"].as_u64().unwrap();
    assert_eq!(v["type_uid"], class_uid * 100 + activity);
    assert!((1..=6).contains(&v["severity_id"].as_u64().unwrap()) || v["severity_id"] == 99);
    assert!(v["time"].is_u64(), "time is epoch milliseconds");
    object(&v["metadata"], "metadata");
    object(&v["metadata"]["product"], "product");
    assert_eq!(v["metadata"]["version"], "1.3.0");
    if let Some(d) = v.get("device") {
        object(d, "device");
    }
    if let Some(a) = v.get("actor") {
        has_one(a, "actor");
        if let Some(p) = a.get("process") {
            has_one(p, "process");
        }
    }
    if let Some(p) = v.get("process") {
        has_one(p, "process");
        if let Some(f) = p.get("file") {
            object(f, "file");
        }
        if let Some(u) = p.get("user") {
            has_one(u, "user");
        }
    }
}

#[test]
fn ocsf_1_3_0_process_activity_1007_has_the_required_attributes_of_events_system_process_json() {
    for (event, activity) in [
        (exec(11, 10, 5_000_000_123, "/bin/sh", 33), 1),
        (exit(11, 10, 6), 2),
        (ptrace_attach(11, 7, 12), 3),
        (setuid(11, 8, 0), 5),
        (module_load(11, 9), 99),
    ] {
        let v = ocsf::event(&event, Some("/bin/sh"));
        check_base(&v, 1007, PROCESS_ACTIVITY_REQUIRED);
        assert_eq!(v["activity_id"], activity, "{v:#}");
    }
    let v = ocsf::event(&exec(11, 10, 5_000_000_123, "/bin/sh", 33), None);
    assert_eq!(v["time"], 5_000);
    assert_eq!(v["process"]["file"]["path"], "/bin/sh");
    assert_eq!(v["actor"]["process"]["pid"], 10);
    assert!(v["process"]["file"].get("hashes").is_none(), "{v:#}");
    // The executable's hash is an OCSF fingerprint (algorithm_id 3: SHA-256).
    let mut hashed = exec(11, 10, 5_000_000_123, "/bin/sh", 33);
    if let model::security::SecurityEvent::Exec(x) = &mut hashed {
        x.exe_sha256 = Some("ab".repeat(32));
    }
    let v = ocsf::event(&hashed, None);
    let fingerprint = &v["process"]["file"]["hashes"][0];
    assert_eq!(fingerprint["algorithm_id"], 3);
    assert_eq!(fingerprint["value"], "ab".repeat(32));
}

#[test]
fn ocsf_1_3_0_file_system_activity_1001_has_the_required_attributes_of_events_system_filesystem_json()
 {
    let v = ocsf::event(&open(11, 1, "/etc/shadow"), Some("/usr/bin/cat"));
    check_base(&v, 1001, FILE_SYSTEM_ACTIVITY_REQUIRED);
    object(&v["file"], "file");
    assert_eq!(v["activity_id"], 14, "Open");
    assert_eq!(v["file"]["name"], "shadow");
}

#[test]
fn ocsf_1_3_0_network_activity_4001_has_the_required_attributes_of_events_network_network_activity_json()
 {
    for event in [
        connect(11, 1, "203.0.113.9:4444"),
        accept(11, 1, 8080, "[2001:db8::1]:50000"),
    ] {
        let v = ocsf::event(&event, None);
        check_base(&v, 4001, NETWORK_ACTIVITY_REQUIRED);
        has_one(&v["dst_endpoint"], "network_endpoint");
        has_one(&v["src_endpoint"], "network_endpoint");
    }
    let v = ocsf::event(&connect(11, 1, "203.0.113.9:4444"), None);
    assert_eq!(v["dst_endpoint"]["port"], 4444);
    assert_eq!(v["connection_info"]["direction_id"], 2);
    let v = ocsf::event(&accept(11, 1, 8080, "[2001:db8::1]:50000"), None);
    assert_eq!(v["dst_endpoint"]["port"], 8080);
    assert_eq!(v["src_endpoint"]["ip"], "2001:db8::1");
}

fn alert(events: Vec<SecurityEvent>, anomaly: bool) -> Alert {
    let process = events
        .first()
        .map(|e| e.process().clone())
        .unwrap_or_else(|| context(1, 0, 0, 0));
    Alert {
        id: "test-host-1f-1".into(),
        time_unix_nano: 1_700_000_000_123_456_789,
        severity: Severity::High,
        source: if anomaly {
            AlertSource::Anomaly {
                name: "new_peer".into(),
            }
        } else {
            AlertSource::Rule {
                name: "outbound-port-not-allowed".into(),
            }
        },
        summary: "app connected to 203.0.113.9:4444|x=1 \\ done".into(),
        events,
        process,
        exe: Some("/srv/app".into()),
        anomaly: anomaly.then(|| AnomalyDetail {
            score: 0.9,
            expected: "peers: [tcp/443 to 10.0.0.0/24]".into(),
            seen: "tcp/4444 to 203.0.113.0/24".into(),
            departure: None,
        }),
        count: 3,
        last_time_unix_nano: 1_700_000_005_000_000_000,
    }
}

#[test]
fn ocsf_1_3_0_detection_finding_2004_has_the_required_attributes_of_events_findings_detection_finding_json()
 {
    for anomaly in [false, true] {
        let a = alert(vec![connect(11, 1, "203.0.113.9:4444")], anomaly);
        let v = ocsf::finding(&a);
        check_base(&v, 2004, DETECTION_FINDING_REQUIRED);
        object(&v["finding_info"], "finding_info");
        object(&v["finding_info"]["analytic"], "analytic");
        assert_eq!(v["activity_id"], 1, "Create");
        assert_eq!(v["severity_id"], 4, "High");
        assert_eq!(v["count"], 3);
        assert_eq!(v["finding_info"]["uid"], "test-host-1f-1");
        let evidence = &v["evidences"][0];
        assert!(evidence["dst_endpoint"]["port"] == 4444, "{evidence:#}");
        if anomaly {
            assert_eq!(v["finding_info"]["analytic"]["type_id"], 3, "Statistical");
            assert_eq!(
                v["unmapped"]["anomaly"]["seen"],
                "tcp/4444 to 203.0.113.0/24"
            );
            assert_eq!(v["risk_score"], 90);
        } else {
            assert_eq!(v["finding_info"]["analytic"]["type_id"], 1, "Rule");
        }
    }
    // A rate anomaly has no event: the process is the evidence.
    let mut a = alert(vec![], true);
    a.process.pid = 77;
    let v = ocsf::finding(&a);
    assert_eq!(v["evidences"][0]["process"]["pid"], 77);
}

/// Splits a CEF line into its seven header fields and extension pairs, undoing the escapes.
pub fn parse_cef(line: &str) -> (Vec<String>, Vec<(String, String)>) {
    let mut header = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars();
    while header.len() < 7 {
        match chars.next() {
            Some('\\') => field.push(chars.next().unwrap()),
            Some('|') => header.push(std::mem::take(&mut field)),
            Some(c) => field.push(c),
            None => panic!("a CEF line has 7 header fields: {line}"),
        }
    }
    let rest: String = chars.collect();
    // Keys are the words followed by an unescaped `=`; a value runs to the next key.
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut value = String::new();
    let mut word = String::new();
    let mut it = rest.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\\' => {
                let e = it.next().unwrap();
                word.push(match e {
                    'n' => '\n',
                    'r' => '\r',
                    e => e,
                });
            }
            '=' => {
                if let Some((_, v)) = pairs.last_mut() {
                    *v = value.trim_end().to_string();
                }
                pairs.push((std::mem::take(&mut word), String::new()));
                value.clear();
            }
            ' ' => {
                value.push_str(&word);
                value.push(' ');
                word.clear();
            }
            c => word.push(c),
        }
    }
    value.push_str(&word);
    if let Some((_, v)) = pairs.last_mut() {
        *v = value;
    }
    (header, pairs)
}

#[test]
fn cef_escapes_pipes_backslashes_and_equals_as_the_cef_spec_says() {
    assert_eq!(cef::escape_header(r"a|b\c=d"), r"a\|b\\c=d");
    assert_eq!(cef::escape_value("a|b\\c=d\ne"), r"a|b\\c\=d\ne");
    let a = alert(vec![connect(11, 1, "203.0.113.9:4444")], true);
    let line = cef::line(&a);
    assert!(
        line.starts_with(&format!(
            "CEF:0|oxeye|oxeye|{}|new_peer|app connected to 203.0.113.9:4444\\|x=1 \\\\ done|8|",
            env!("CARGO_PKG_VERSION")
        )),
        "{line}"
    );
    let (header, ext) = parse_cef(&line);
    assert_eq!(header[4], "new_peer");
    assert_eq!(header[5], "app connected to 203.0.113.9:4444|x=1 \\ done");
    let get = |k: &str| {
        ext.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {k} in {ext:?}"))
    };
    assert_eq!(get("msg"), "app connected to 203.0.113.9:4444|x=1 \\ done");
    assert_eq!(get("rt"), "1700000000123");
    assert_eq!(get("dst"), "203.0.113.9");
    assert_eq!(get("dpt"), "4444");
    assert_eq!(get("cnt"), "3");
    assert_eq!(get("cn1"), "90");
    assert_eq!(get("cs4"), "peers: [tcp/443 to 10.0.0.0/24]");
}

#[test]
fn rfc5424_header_and_rfc6587_octet_counting() {
    let a = alert(vec![], false);
    let msg = syslog::rfc5424(&a, &syslog::SyslogHeader::default(), "CEF:0|x");
    // authpriv (10) * 8 + err (3): High.
    let expected = format!(
        "<83>1 2023-11-14T22:13:20.123456Z {HOST} oxeye {} alert - CEF:0|x",
        std::process::id()
    );
    assert_eq!(msg, expected);
    assert_eq!(syslog::octet_counted("abc"), "3 abc");
    assert_eq!(syslog::octet_counted("é"), "2 é", "octets, not characters");
}

/// The keys of an event in Splunk's "Format events for HTTP Event Collector" (event metadata:
/// time, host, source, sourcetype, index, fields; and the event data).
const HEC_KEYS: &[&str] = &[
    "time",
    "host",
    "source",
    "sourcetype",
    "index",
    "fields",
    "event",
];

#[test]
fn hec_events_use_only_the_keys_of_splunk_format_events_for_http_event_collector() {
    let a = alert(vec![open(11, 1, "/etc/shadow")], false);
    let fields = hec::HecFields {
        index: "security".into(),
        ..Default::default()
    };
    let v = hec::event(&a, &fields);
    for k in v.as_object().unwrap().keys() {
        assert!(HEC_KEYS.contains(&k.as_str()), "unknown HEC key {k}");
    }
    assert!(v["event"].is_object(), "event is required");
    assert_eq!(v["time"], 1_700_000_000.123, "epoch seconds");
    assert_eq!(v["host"], HOST);
    assert_eq!(v["source"], "oxeye");
    assert_eq!(v["sourcetype"], "ocsf:detection_finding");
    assert_eq!(v["index"], "security");
    assert_eq!(v["event"]["class_uid"], 2004);
    let body = hec::body(&[a.clone(), a], &hec::HecFields::default());
    assert_eq!(body.lines().count(), 2, "events are concatenated");
    let first: Value = serde_json::from_str(body.lines().next().unwrap()).unwrap();
    assert!(
        first.get("index").is_none(),
        "no index: the token's default"
    );
}
