//! OTLP/gRPC and OTLP/HTTP (protobuf and JSON) for traces, metrics, logs and profiles.

pub mod grpc;
pub mod http;

use model::Batch;
use model::otlp::{logs_from_otlp, metrics_from_otlp, spans_from_otlp};
use model::otlp_profiles::profiles_from_otlp;
use model::otlp_wire::{WireError, scan_traces};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Traces,
    Metrics,
    Logs,
    Profiles,
}

impl Signal {
    fn message_name(self) -> &'static str {
        match self {
            Signal::Traces => "ExportTraceServiceRequest",
            Signal::Metrics => "ExportMetricsServiceRequest",
            Signal::Logs => "ExportLogsServiceRequest",
            Signal::Profiles => "ExportProfilesServiceRequest",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("invalid protobuf {message}: {detail}")]
    Protobuf {
        message: &'static str,
        detail: String,
    },
    #[error("invalid OTLP json {message}: {detail}")]
    Json {
        message: &'static str,
        detail: String,
    },
    #[error("invalid data: {0}")]
    Invalid(String),
}

/// [`decode`] for a body the batch may keep: protobuf traces are only validated and indexed,
/// then read straight from these bytes when stored (see [`model::otlp_wire`]).
pub fn decode_bytes(
    signal: Signal,
    encoding: Encoding,
    body: bytes::Bytes,
) -> Result<Batch, DecodeError> {
    match (signal, encoding) {
        (Signal::Traces, Encoding::Protobuf) => scan_traces(body)
            .map(Batch::RawSpans)
            .map_err(|e| DecodeError::wire(signal, e)),
        _ => decode(signal, encoding, &body),
    }
}

impl DecodeError {
    /// A request body that is not valid OTLP, found by the receiver or by the store reading it.
    pub fn wire(signal: Signal, e: WireError) -> DecodeError {
        match e {
            WireError::Protobuf(detail) => DecodeError::Protobuf {
                message: signal.message_name(),
                detail,
            },
            WireError::Invalid(e) => DecodeError::Invalid(e.0),
        }
    }
}

/// Decodes one OTLP export request body (already decompressed).
pub fn decode(signal: Signal, encoding: Encoding, body: &[u8]) -> Result<Batch, DecodeError> {
    let message = signal.message_name();
    let pb = |e: prost::DecodeError| DecodeError::Protobuf {
        message,
        detail: e.to_string(),
    };
    let js = |e: serde_json::Error| DecodeError::Json {
        message,
        detail: e.to_string(),
    };
    let invalid = |e: model::otlp::InvalidData| DecodeError::Invalid(e.0);
    match (signal, encoding) {
        (Signal::Traces, Encoding::Protobuf) => {
            spans_from_otlp(ExportTraceServiceRequest::decode(body).map_err(pb)?)
        }
        (Signal::Traces, Encoding::Json) => {
            spans_from_otlp(serde_json::from_slice(body).map_err(js)?)
        }
        (Signal::Metrics, Encoding::Protobuf) => {
            metrics_from_otlp(ExportMetricsServiceRequest::decode(body).map_err(pb)?)
        }
        (Signal::Metrics, Encoding::Json) => {
            metrics_from_otlp(serde_json::from_slice(body).map_err(js)?)
        }
        (Signal::Logs, Encoding::Protobuf) => {
            logs_from_otlp(ExportLogsServiceRequest::decode(body).map_err(pb)?)
        }
        (Signal::Logs, Encoding::Json) => logs_from_otlp(serde_json::from_slice(body).map_err(js)?),
        (Signal::Profiles, Encoding::Protobuf) => {
            profiles_from_otlp(ExportProfilesServiceRequest::decode(body).map_err(pb)?)
        }
        (Signal::Profiles, Encoding::Json) => {
            profiles_from_otlp(serde_json::from_slice(body).map_err(js)?)
        }
    }
    .map_err(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_protobuf_names_the_message() {
        let err = decode(Signal::Traces, Encoding::Protobuf, &[0xff, 0xff, 0xff]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid protobuf ExportTraceServiceRequest:"),
            "{err}"
        );
    }

    #[test]
    fn otlp_json_with_hex_ids_decodes() {
        let body = br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}}]},
          "scopeSpans":[{"scope":{"name":"lib"},"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
          "name":"GET /","kind":2,"startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000",
          "attributes":[{"key":"http.status_code","value":{"intValue":"200"}}],"status":{"code":2,"message":"boom"}}]}]}]}"#;
        let Batch::Spans(g) = decode(Signal::Traces, Encoding::Json, body).unwrap() else {
            panic!("expected spans")
        };
        let s = &g[0].items[0];
        assert_eq!(g[0].resource.service_name(), "checkout");
        assert_eq!(s.trace_id.to_string(), "5b8efff798038103d269b633813fc60c");
        assert_eq!(s.duration_nanos(), 1_000_000_000);
        assert_eq!(
            s.attributes,
            vec![("http.status_code".to_string(), "200".to_string())]
        );
        assert_eq!(s.status_message, "boom");
    }

    #[test]
    fn malformed_json_is_a_json_error() {
        let err = decode(Signal::Logs, Encoding::Json, b"{not json").unwrap_err();
        assert!(matches!(err, DecodeError::Json { .. }), "{err}");
    }
}
