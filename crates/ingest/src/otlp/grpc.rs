//! OTLP/gRPC on tonic.

use std::net::SocketAddr;

use http::HeaderValue;
use model::Batch;
use model::otlp::{InvalidData, logs_from_otlp, metrics_from_otlp, spans_from_otlp};
use model::otlp_profiles::profiles_from_otlp;
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
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use pipeline::Origin;
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
        ack.wait()
            .await
            .map_err(|e| Status::unavailable(format!("not stored, retry later: {e}")))
    }
}

#[tonic::async_trait]
impl TraceService for Otlp {
    async fn export(
        &self,
        req: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.check_auth(&req)?;
        let peer = req.remote_addr();
        let req = req.into_inner();
        let n = req.encoded_len();
        self.accept(spans_from_otlp(req), n, peer).await?;
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
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
        .add_service(
            TraceServiceServer::new(svc.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(max),
        )
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
