//! OCSF 1.3.0 JSON: events as Process Activity (1007), File System Activity (1001) and Network
//! Activity (4001); alerts as Detection Finding (2004). Each class's required attributes are
//! always present (see the tests, which list them from the schema at the 1.3.0 tag).

use model::security::{Alert, AlertSource, SecurityEvent, SecurityProcess};
use serde_json::{Map, Value, json};

pub const OCSF_VERSION: &str = "1.3.0";

/// Process Activity, File System Activity, Network Activity, Detection Finding.
pub const PROCESS_ACTIVITY: u32 = 1007;
pub const FILE_SYSTEM_ACTIVITY: u32 = 1001;
pub const NETWORK_ACTIVITY: u32 = 4001;
pub const DETECTION_FINDING: u32 = 2004;

fn metadata() -> Value {
    json!({
        "version": OCSF_VERSION,
        "product": {
            "name": "oxeye",
            "vendor_name": "oxeye",
            "version": env!("CARGO_PKG_VERSION"),
        },
    })
}

fn device(host: &str) -> Value {
    json!({ "hostname": host, "type_id": 0, "type": "Unknown" })
}

fn process(p: &SecurityProcess, exe: Option<&str>, cmd_line: Option<String>) -> Value {
    let mut out = Map::new();
    out.insert("pid".into(), json!(p.pid));
    out.insert("tid".into(), json!(p.tid));
    if !p.comm.is_empty() {
        out.insert("name".into(), json!(p.comm));
    }
    out.insert("user".into(), json!({ "uid": p.uid.to_string() }));
    if let Some(exe) = exe {
        out.insert("file".into(), file(exe));
    }
    if let Some(cmd) = cmd_line {
        out.insert("cmd_line".into(), json!(cmd));
    }
    if p.ppid != 0 {
        out.insert("parent_process".into(), json!({ "pid": p.ppid }));
    }
    Value::Object(out)
}

fn file(path: &str) -> Value {
    let name = path.rsplit('/').next().unwrap_or(path);
    json!({ "path": path, "name": name, "type_id": 1, "type": "Regular File" })
}

#[allow(clippy::too_many_arguments)]
fn base(
    class_uid: u32,
    class_name: &str,
    activity_id: u32,
    activity_name: &str,
    severity_id: u32,
    time_unix_nano: u64,
    host: &str,
    message: String,
) -> Map<String, Value> {
    let category_uid = class_uid / 1000;
    let category_name = match category_uid {
        1 => "System Activity",
        2 => "Findings",
        4 => "Network Activity",
        _ => "Other",
    };
    let mut m = Map::new();
    m.insert("category_uid".into(), json!(category_uid));
    m.insert("category_name".into(), json!(category_name));
    m.insert("class_uid".into(), json!(class_uid));
    m.insert("class_name".into(), json!(class_name));
    m.insert("activity_id".into(), json!(activity_id));
    m.insert("activity_name".into(), json!(activity_name));
    m.insert(
        "type_uid".into(),
        json!(u64::from(class_uid) * 100 + u64::from(activity_id)),
    );
    m.insert("severity_id".into(), json!(severity_id));
    m.insert("time".into(), json!(time_unix_nano / 1_000_000));
    m.insert("metadata".into(), metadata());
    m.insert("device".into(), device(host));
    m.insert("message".into(), json!(message));
    m
}

/// One security event as its OCSF activity class; `exe` is the process's executable if known.
pub fn event(e: &SecurityEvent, exe: Option<&str>) -> Value {
    use SecurityEvent as E;
    let p = e.process();
    let host = p.host.as_str();
    let t = p.time_unix_nano;
    let actor = |cmd: Option<String>| json!({ "process": process(p, exe, cmd) });
    let mut m = match e {
        E::Exec(x) => {
            let mut m = base(
                PROCESS_ACTIVITY,
                "Process Activity",
                1,
                "Launch",
                1,
                t,
                host,
                format!("{} executed {}", p.pid, x.exe()),
            );
            let parent = SecurityProcess {
                pid: p.ppid,
                tid: p.ppid,
                ppid: 0,
                comm: String::new(),
                ..p.clone()
            };
            m.insert(
                "actor".into(),
                json!({ "process": process(&parent, None, None) }),
            );
            let mut launched = process(p, Some(&x.exe()), Some(x.argv.join(" ")));
            if let (Some(hash), Some(file)) = (&x.exe_sha256, launched.get_mut("file")) {
                // OCSF fingerprint: algorithm_id 3 is SHA-256.
                file["hashes"] =
                    json!([{ "algorithm_id": 3, "algorithm": "SHA-256", "value": hash }]);
            }
            m.insert("process".into(), launched);
            m
        }
        E::Exit(x) => {
            let mut m = base(
                PROCESS_ACTIVITY,
                "Process Activity",
                2,
                "Terminate",
                1,
                t,
                host,
                format!("{} exited", p.pid),
            );
            m.insert("actor".into(), actor(None));
            m.insert("process".into(), process(p, exe, None));
            if let Some(code) = x.exit_code {
                m.insert("exit_code".into(), json!(code));
            }
            m
        }
        E::Ptrace(x) => {
            let (id, name) = if x.injects() {
                (4, "Inject")
            } else {
                (3, "Open")
            };
            let mut m = base(
                PROCESS_ACTIVITY,
                "Process Activity",
                id,
                name,
                3,
                t,
                host,
                format!("{} {} on {}", p.pid, x.request_name(), x.target_pid),
            );
            m.insert("actor".into(), actor(None));
            m.insert("process".into(), json!({ "pid": x.target_pid }));
            m.insert("status_id".into(), status(x.result >= 0));
            m
        }
        E::PrivilegeChange(x) => {
            let (id, name) = if x.syscall.sets_user() {
                (5, "Set User ID")
            } else {
                (99, "Other")
            };
            let mut m = base(
                PROCESS_ACTIVITY,
                "Process Activity",
                id,
                name,
                2,
                t,
                host,
                format!("{} called {}", p.pid, x.syscall.name()),
            );
            m.insert("actor".into(), actor(None));
            m.insert("process".into(), process(p, exe, None));
            m.insert("status_id".into(), status(x.result >= 0));
            m
        }
        E::ModuleLoad(x) => {
            let mut m = base(
                PROCESS_ACTIVITY,
                "Process Activity",
                99,
                "Other",
                3,
                t,
                host,
                format!("{} loaded a kernel module", p.pid),
            );
            m.insert("actor".into(), actor(None));
            m.insert("process".into(), process(p, exe, None));
            m.insert("status_id".into(), status(x.result >= 0));
            m.insert(
                "unmapped".into(),
                json!({ "oxeye_activity": "module_load" }),
            );
            m
        }
        E::FileOpen(x) => {
            let mut m = base(
                FILE_SYSTEM_ACTIVITY,
                "File System Activity",
                14,
                "Open",
                1,
                t,
                host,
                format!("{} opened {}", p.pid, x.path),
            );
            m.insert("actor".into(), actor(None));
            m.insert("file".into(), file(&x.path));
            m.insert("status_id".into(), status(x.result >= 0));
            m
        }
        E::Connect(c) | E::Accept(c) => {
            let (id, name) = if c.result >= 0 || c.result == -115 {
                (1, "Open")
            } else if c.result == -111 {
                (5, "Refuse")
            } else {
                (4, "Fail")
            };
            let outbound = matches!(e, E::Connect(_));
            let mut m = base(
                NETWORK_ACTIVITY,
                "Network Activity",
                id,
                name,
                1,
                t,
                host,
                format!(
                    "{} {} {}",
                    p.pid,
                    if outbound { "connected to" } else { "accepted" },
                    c.remote
                ),
            );
            let endpoint = |a: std::net::SocketAddr| json!({ "ip": a.ip().to_canonical().to_string(), "port": a.port() });
            let (src, dst) = if outbound {
                (c.local, c.remote)
            } else {
                (c.remote, c.local)
            };
            m.insert("src_endpoint".into(), endpoint(src));
            m.insert("dst_endpoint".into(), endpoint(dst));
            m.insert(
                "connection_info".into(),
                json!({
                    "direction_id": if outbound { 2 } else { 1 },
                    "direction": if outbound { "Outbound" } else { "Inbound" },
                    "protocol_num": c.protocol.number(),
                    "protocol_name": c.protocol.name(),
                }),
            );
            m.insert("actor".into(), actor(None));
            m.insert(
                "status_id".into(),
                status(c.result >= 0 || c.result == -115),
            );
            m
        }
    };
    if let Some(id) = &p.container_id {
        m.insert("container".into(), json!({ "uid": id }));
    }
    Value::Object(m)
}

fn status(success: bool) -> Value {
    json!(if success { 1 } else { 2 })
}

/// An alert as a Detection Finding, with its events as evidence.
pub fn finding(alert: &Alert) -> Value {
    let (analytic_type, analytic_type_name, kind) = match &alert.source {
        AlertSource::Rule { .. } => (1, "Rule", "rule"),
        AlertSource::Anomaly { .. } => (3, "Statistical", "anomaly"),
    };
    let mut m = base(
        DETECTION_FINDING,
        "Detection Finding",
        1,
        "Create",
        alert.severity as u32,
        alert.time_unix_nano,
        alert.host(),
        alert.summary.clone(),
    );
    m.insert(
        "finding_info".into(),
        json!({
            "uid": alert.id,
            "title": alert.source.name(),
            "desc": alert.summary,
            "types": [kind],
            "analytic": {
                "uid": alert.source.name(),
                "name": alert.source.name(),
                "type_id": analytic_type,
                "type": analytic_type_name,
            },
            "first_seen_time": alert.time_unix_nano / 1_000_000,
            "last_seen_time": alert.last_time_unix_nano / 1_000_000,
        }),
    );
    m.insert("status_id".into(), json!(1));
    m.insert("status".into(), json!("New"));
    m.insert("count".into(), json!(alert.count));
    let mut evidences: Vec<Value> = alert
        .events
        .iter()
        .map(|e| {
            let mut ev = Map::new();
            let activity = event(e, alert.exe.as_deref());
            for key in ["actor", "process", "file", "src_endpoint", "dst_endpoint"] {
                if let Some(v) = activity.get(key) {
                    ev.insert(key.into(), v.clone());
                }
            }
            Value::Object(ev)
        })
        .collect();
    if evidences.is_empty() {
        evidences.push(json!({
            "process": process(&alert.process, alert.exe.as_deref(), None),
        }));
    }
    m.insert("evidences".into(), Value::Array(evidences));
    if let Some(a) = &alert.anomaly {
        m.insert("risk_score".into(), json!((a.score * 100.0).round() as i64));
        m.insert(
            "unmapped".into(),
            json!({ "anomaly": { "score": a.score, "expected": a.expected, "seen": a.seen } }),
        );
    }
    if let Some(id) = &alert.process.container_id {
        m.insert("container".into(), json!({ "uid": id }));
    }
    Value::Object(m)
}
