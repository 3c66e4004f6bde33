//! Alerts as SIEMs read them: OCSF JSON, CEF, RFC 5424 syslog, Splunk HEC.

pub mod cef;
pub mod hec;
pub mod ocsf;
pub mod syslog;
