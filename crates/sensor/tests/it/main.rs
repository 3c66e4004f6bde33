//! The sensor crate's integration tests: one binary, one module per area.

mod formats;
mod http;
mod rsyslog;
mod scenario;
