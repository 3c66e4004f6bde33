//! OTLP/HTTP on axum: `POST /v1/{traces,metrics,logs}` and `/v1development/profiles`, protobuf
//! or JSON, optionally gzip.
//!
//! Errors carry a `google.rpc.Status` in the request's encoding (as the OTLP spec asks), so the
//! message naming the problem is readable in either form.

use std::io::Read;
use std::net::SocketAddr;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use pipeline::{Origin, SinkError};
use prost::Message;
use tokio::net::TcpListener;

use super::{DecodeError, Encoding, Signal, decode_bytes};
use crate::{ReceiverContext, reservation};

/// `google.rpc.Status`, the OTLP error body.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

struct Failure {
    status: StatusCode,
    encoding: Encoding,
    message: String,
    retry_after: Option<u32>,
}

impl Failure {
    fn new(status: StatusCode, encoding: Encoding, message: impl Into<String>) -> Self {
        Failure {
            status,
            encoding,
            message: message.into(),
            retry_after: None,
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let code = match self.status {
            StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE => 3,
            StatusCode::UNAUTHORIZED => 16,
            StatusCode::TOO_MANY_REQUESTS => 8,
            StatusCode::PAYLOAD_TOO_LARGE => 11,
            _ => 14,
        };
        let (ctype, body) = match self.encoding {
            Encoding::Json => (
                "application/json",
                serde_json::json!({"code": code, "message": self.message})
                    .to_string()
                    .into_bytes(),
            ),
            Encoding::Protobuf => (
                "application/x-protobuf",
                RpcStatus {
                    code,
                    message: self.message,
                }
                .encode_to_vec(),
            ),
        };
        let mut resp = (self.status, [(header::CONTENT_TYPE, ctype)], body).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, s.into());
        }
        resp
    }
}

fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

async fn handle(
    ctx: ReceiverContext,
    signal: Signal,
    peer: SocketAddr,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Failure> {
    let ct = media_type(&headers);
    let encoding = match ct.as_str() {
        "application/x-protobuf" | "application/protobuf" => Encoding::Protobuf,
        "application/json" => Encoding::Json,
        other => {
            let found = if other.is_empty() {
                "none".to_string()
            } else {
                format!("{other:?}")
            };
            return Err(Failure::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Encoding::Json,
                format!(
                    "unsupported content type {found}: expected application/x-protobuf or application/json"
                ),
            ));
        }
    };
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !ctx.authorized(auth) {
        return Err(Failure::new(
            StatusCode::UNAUTHORIZED,
            encoding,
            "missing or wrong bearer token (header `Authorization: Bearer <token>`)",
        ));
    }
    let too_large = |n: String| {
        Failure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            encoding,
            format!(
                "request body of {n} exceeds the limit of {} bytes (--max-body-bytes)",
                ctx.max_body_bytes
            ),
        )
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && len > ctx.max_body_bytes
    {
        return Err(too_large(format!("{len} bytes")));
    }
    let raw: Bytes = axum::body::to_bytes(body, ctx.max_body_bytes)
        .await
        .map_err(|_| too_large("more than the limit".into()))?;
    let content_encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    let body: bytes::Bytes = match content_encoding.as_str() {
        "" | "identity" => raw,
        "gzip" => {
            let mut out = Vec::new();
            let limit = ctx.max_decoded_bytes() as u64;
            flate2::read::GzDecoder::new(&raw[..])
                .take(limit + 1)
                .read_to_end(&mut out)
                .map_err(|e| {
                    Failure::new(
                        StatusCode::BAD_REQUEST,
                        encoding,
                        format!("invalid gzip body: {e}"),
                    )
                })?;
            if out.len() as u64 > limit {
                return Err(too_large(format!(
                    "more than {limit} bytes after gzip decompression"
                )));
            }
            out.into()
        }
        other => {
            return Err(Failure::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                encoding,
                format!("unsupported content-encoding {other:?}: expected gzip or identity"),
            ));
        }
    };
    let wire_len = body.len();
    let batch = decode_bytes(signal, encoding, body)
        .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, encoding, e.to_string()))?;
    if !batch.is_empty() {
        let bytes = reservation(&batch, wire_len);
        let ack = ctx
            .pipeline
            .submit(batch, bytes, Origin { peer: Some(peer) })
            .map_err(|busy| Failure {
                status: StatusCode::TOO_MANY_REQUESTS,
                encoding,
                message: busy.to_string(),
                retry_after: Some(1),
            })?;
        ack.wait().await.map_err(|e| match e {
            SinkError::Malformed(e) => Failure::new(
                StatusCode::BAD_REQUEST,
                encoding,
                DecodeError::wire(signal, e).to_string(),
            ),
            SinkError::Unavailable(e) => Failure {
                status: StatusCode::SERVICE_UNAVAILABLE,
                encoding,
                message: format!("not stored, retry later: {e}"),
                retry_after: Some(5),
            },
        })?;
    }
    // Every Export*ServiceResponse without partial success is the empty message.
    Ok(match encoding {
        Encoding::Json => ([(header::CONTENT_TYPE, "application/json")], "{}").into_response(),
        Encoding::Protobuf => (
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            Vec::<u8>::new(),
        )
            .into_response(),
    })
}

fn route(signal: Signal) -> axum::routing::MethodRouter<ReceiverContext> {
    post(
        move |State(ctx): State<ReceiverContext>,
              ConnectInfo(peer): ConnectInfo<SocketAddr>,
              headers: HeaderMap,
              body: Body| async move {
            handle(ctx, signal, peer, headers, body)
                .await
                .unwrap_or_else(|f| f.into_response())
        },
    )
}

pub fn router(ctx: ReceiverContext) -> Router {
    Router::new()
        .route("/v1/traces", route(Signal::Traces))
        .route("/v1/metrics", route(Signal::Metrics))
        .route("/v1/logs", route(Signal::Logs))
        .route("/v1development/profiles", route(Signal::Profiles))
        .layer(DefaultBodyLimit::disable())
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, "application/json")],
                r#"{"code":5,"message":"not found: OTLP/HTTP paths are /v1/traces, /v1/metrics, /v1/logs and /v1development/profiles"}"#,
            )
        })
        .with_state(ctx)
}

/// Serves OTLP/HTTP on `listener` until `shutdown` resolves.
pub async fn serve(
    ctx: ReceiverContext,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(ctx).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
