//! What the profiling agent reports about itself (rates, overhead budget, boosted processes,
//! traffic baselines), published by the agent about once a second and served as it is.

use std::sync::{Arc, RwLock};

use serde_json::Value;

#[derive(Clone, Default)]
pub struct ProfilerStatus(Arc<RwLock<Value>>);

impl ProfilerStatus {
    pub fn set(&self, v: Value) {
        if let Ok(mut s) = self.0.write() {
            *s = v;
        }
    }

    /// `Null` until the agent has reported (or when profiling is off).
    pub fn get(&self) -> Value {
        self.0.read().map(|s| s.clone()).unwrap_or(Value::Null)
    }
}
