//! The HTTP API (`/api/v1`) and the dashboard's static files. Only this crate speaks the UI's
//! JSON; it holds no logic beyond parsing parameters and mapping errors to statuses.

mod api;
mod api_tests;
mod assets;
mod insights;
mod profile_traffic;
mod profiler_status;
mod profiles;
mod security;
mod security_tests;
#[cfg(test)]
mod test_state;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use pipeline::Pipeline;
use store::Store;
use tokio::net::TcpListener;

pub use profiler_status::ProfilerStatus;
pub use security::SecurityControl;

#[derive(Clone)]
pub struct ServerState {
    pub store: Store,
    pub pipeline: Pipeline,
    /// Required as `Authorization: Bearer <token>` on admin and write endpoints.
    pub api_token: Arc<str>,
    pub data_dir: PathBuf,
    pub started: Instant,
    /// The running security sensor's baselines; `None` when it is off.
    pub security: Option<Arc<dyn SecurityControl>>,
    /// The profiling agent's own report, for `/api/v1/profiles/status`.
    pub profiler: ProfilerStatus,
    /// The p99 objective of `/api/v1/load-latency` when the request names none
    /// (`insights.latency_objective`).
    pub latency_objective_ms: f64,
}

pub fn router(state: ServerState) -> Router {
    Router::new()
        .nest("/api/v1", api::router(state))
        .merge(assets::router())
}

pub async fn serve(
    state: ServerState,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
