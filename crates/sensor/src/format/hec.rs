//! Splunk HTTP Event Collector event JSON (`/services/collector/event`): one object per alert,
//! the alert's OCSF Detection Finding as `event`.

use model::security::Alert;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::ocsf;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HecFields {
    pub source: String,
    pub sourcetype: String,
    /// The index to write to; empty: the token's default.
    pub index: String,
}

impl Default for HecFields {
    fn default() -> Self {
        HecFields {
            source: "oxeye".into(),
            sourcetype: "ocsf:detection_finding".into(),
            index: String::new(),
        }
    }
}

/// One HEC event object.
pub fn event(alert: &Alert, fields: &HecFields) -> Value {
    let mut v = json!({
        // Epoch seconds with milliseconds, as HEC reads it.
        "time": (alert.time_unix_nano / 1_000_000) as f64 / 1000.0,
        "host": alert.host(),
        "source": fields.source,
        "sourcetype": fields.sourcetype,
        "event": ocsf::finding(alert),
    });
    if !fields.index.is_empty() {
        v["index"] = json!(fields.index);
    }
    v
}

/// A request body: events concatenated, as HEC batches them.
pub fn body(alerts: &[Alert], fields: &HecFields) -> String {
    let mut out = String::new();
    for a in alerts {
        out.push_str(&event(a, fields).to_string());
        out.push('\n');
    }
    out
}
