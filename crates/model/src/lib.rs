//! The data model every other crate speaks: spans, metric points and log records grouped by the
//! resource that produced them, security events and alerts (`security`), plus the conversions
//! from OTLP wire types.
//!
//! Attribute values are kept as strings, as the store's ClickHouse-compatible schema keeps them;
//! the OTLP type survives in the text form (ints and doubles in decimal, arrays and maps as JSON).

pub mod anomaly;
mod attrs;
mod batch;
mod ids;
pub mod otlp;
pub mod otlp_profiles;
pub mod otlp_wire;
pub mod security;

pub use attrs::{Attrs, any_value_to_string};
pub use batch::*;
pub use ids::{SpanId, TraceId};
