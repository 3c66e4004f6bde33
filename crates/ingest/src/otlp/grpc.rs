//! OTLP/gRPC on tonic.

use std::net::SocketAddr;

use http::HeaderValue;
use model::Batch;
use model::otlp::{InvalidData, logs_from_otlp, metrics_from_otlp};
use model::otlp_profiles::profiles_from_otlp;
use model::otlp_wire::{WireError, scan_traces};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::profiles::v1development::profiles_service_server::{
    ProfilesService, ProfilesServiceServer,
};
use opentelemetry_proto::tonic::collector::profiles::v1development::{
    ExportProfilesServiceRequest, ExportProfilesServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use pipeline::{Origin, SinkError};
use prost::Message;
use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use crate::{ReceiverContext, reservation};

#[derive(Clone)]
struct Otlp(ReceiverContext);

impl Otlp {
    fn check_auth<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let header = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if self.0.authorized(header) {
            Ok(())
        } else {
            Err(Status::unauthenticated(
                "missing or wrong bearer token (metadata `authorization: Bearer <token>`)",
            ))
        }
    }

    async fn accept(
        &self,
        batch: Result<Batch, InvalidData>,
        wire_bytes: usize,
        peer: Option<SocketAddr>,
    ) -> Result<(), Status> {
        let batch = batch.map_err(|e| Status::invalid_argument(format!("invalid data: {e}")))?;
        if batch.is_empty() {
            return Ok(());
        }
        let bytes = reservation(&batch, wire_bytes);
        let ack = self
            .0
            .pipeline
            .submit(batch, bytes, Origin { peer })
            .map_err(|busy| Status::resource_exhausted(busy.to_string()))?;
        ack.wait().await.map_err(|e| match e {
            SinkError::Malformed(e) => refused(e),
            SinkError::Unavailable(e) => {
                Status::unavailable(format!("not stored, retry later: {e}"))
            }
        })
    }
}

/// The answer to a trace request that is not valid OTLP, whether the receiver or the store
/// found the fault.
fn refused(e: WireError) -> Status {
    match e {
        WireError::Invalid(e) => Status::invalid_argument(format!("invalid data: {e}")),
        WireError::Protobuf(m) => {
            Status::invalid_argument(format!("failed to decode ExportTraceServiceRequest: {m}"))
        }
    }
}

#[tonic::async_trait]
impl MetricsService for Otlp {
    async fn export(
        &self,
        req: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.check_auth(&req)?;
        let peer = req.remote_addr();
        let req = req.into_inner();
        let n = req.encoded_len();
        self.accept(metrics_from_otlp(req), n, peer).await?;
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl LogsService for Otlp {
    async fn export(
        &self,
        req: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        self.check_auth(&req)?;
        let peer = req.remote_addr();
        let req = req.into_inner();
        let n = req.encoded_len();
        self.accept(logs_from_otlp(req), n, peer).await?;
        Ok(Response::new(ExportLogsServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl ProfilesService for Otlp {
    async fn export(
        &self,
        req: Request<ExportProfilesServiceRequest>,
    ) -> Result<Response<ExportProfilesServiceResponse>, Status> {
        self.check_auth(&req)?;
        let peer = req.remote_addr();
        let req = req.into_inner();
        let n = req.encoded_len();
        self.accept(profiles_from_otlp(req), n, peer).await?;
        Ok(Response::new(ExportProfilesServiceResponse {
            partial_success: None,
        }))
    }
}

/// OTLP `TraceService`, with each request kept as the bytes it came in: spans are validated
/// here and read straight from those bytes into the store's columns (see `model::otlp_wire`),
/// which costs a fraction of decoding them into messages and then into model spans.
#[derive(Clone)]
struct RawTraceServer {
    svc: Otlp,
    max: usize,
}

const TRACE_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

impl tonic::server::NamedService for RawTraceServer {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl tower::Service<http::Request<tonic::body::Body>> for RawTraceServer {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            if req.uri().path() != TRACE_EXPORT {
                return Ok(Status::unimplemented(format!(
                    "no method {} (this service has Export)",
                    req.uri().path()
                ))
                .into_http());
            }
            let mut grpc = tonic::server::Grpc::new(RawCodec)
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(this.max);
            Ok(grpc.unary(ExportRaw(this.svc), req).await)
        })
    }
}

struct ExportRaw(Otlp);

impl tonic::server::UnaryService<bytes::Bytes> for ExportRaw {
    type Response = ExportTraceServiceResponse;
    type Future = tonic::codegen::BoxFuture<Response<Self::Response>, Status>;

    fn call(&mut self, req: Request<bytes::Bytes>) -> Self::Future {
        let svc = self.0.clone();
        Box::pin(async move {
            svc.check_auth(&req)?;
            let peer = req.remote_addr();
            let body = req.into_inner();
            let n = body.len();
            let batch = scan_traces(body).map_err(refused)?;
            svc.accept(Ok(Batch::RawSpans(batch)), n, peer).await?;
            Ok(Response::new(ExportTraceServiceResponse {
                partial_success: None,
            }))
        })
    }
}

/// Hands the request message over as bytes; answers are ordinary protobuf.
struct RawCodec;

struct RawDecoder;

impl tonic::codec::Decoder for RawDecoder {
    type Item = bytes::Bytes;
    type Error = Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<bytes::Bytes>, Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = bytes::Bytes;
    type Encoder = tonic_prost::ProstEncoder<ExportTraceServiceResponse>;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic::codec::Codec::encoder(&mut tonic_prost::ProstCodec::<
            ExportTraceServiceResponse,
            ExportTraceServiceRequest,
        >::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

/// tonic reports undecodable messages as INTERNAL; to a client that is its own bad input,
/// so say INVALID_ARGUMENT (what the OTLP spec asks for).
fn bad_input_is_invalid_argument<B>(mut resp: http::Response<B>) -> http::Response<B> {
    let h = resp.headers();
    let internal = h.get("grpc-status").is_some_and(|v| v == "13");
    let msg = h
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if internal && (msg.contains("decode") || msg.contains("decompress")) {
        resp.headers_mut()
            .insert("grpc-status", HeaderValue::from_static("3"));
    }
    resp
}

/// Serves OTLP/gRPC on `listener` until `shutdown` resolves.
pub async fn serve(
    ctx: ReceiverContext,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let svc = Otlp(ctx.clone());
    // A gRPC message is limited by its decoded size; the same limit as an HTTP body.
    let max = ctx.max_body_bytes;
    tonic::transport::Server::builder()
        .layer(tower::util::MapResponseLayer::new(
            bad_input_is_invalid_argument,
        ))
        .add_service(RawTraceServer {
            svc: svc.clone(),
            max,
        })
        .add_service(
            MetricsServiceServer::new(svc.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(max),
        )
        .add_service(
            LogsServiceServer::new(svc.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(max),
        )
        .add_service(
            ProfilesServiceServer::new(svc)
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(max),
        )
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            shutdown,
        )
        .await
}
