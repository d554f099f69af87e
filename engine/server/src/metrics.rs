//! `/metrics` (Prometheus, OpenMetrics text) and the layer that measures
//! every request. Served to admins with their bearer token on the API's
//! address, and without a token on a separate address when the operator
//! names one (the `FLOWFORM_METRICS_ADDR` setting), for a scraper inside
//! the network.

use crate::auth::{Auth, require_admin};
use crate::{ApiError, AppState};
use axum::extract::{MatchedPath, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use flowform_runtime::Runtime;
use flowform_runtime::metrics::{HttpLabels, RouteLabels};
use std::sync::Arc;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[utoipa::path(get, path = "/metrics", tag = "admin", summary = "Prometheus metrics (admin)",
    description = "OpenMetrics text: requests by route and status with latency histograms, commands by workflow, transition and outcome, reloads, timers, the outbox, the store's commits and log syncs. See docs/operations.md.",
    responses((status = 200, description = "the metrics, as text", content_type = "application/openmetrics-text", body = String), (status = "4XX", description = "an error", body = crate::error::ErrorBody)))]
pub(crate) async fn metrics(State(s): State<AppState>, Auth(actor): Auth) -> Result<Response, ApiError> {
    require_admin(&s, &actor, "read the metrics")?;
    Ok(scrape(s.runtime).await)
}

/// The metrics as text (the gauges read the store: off the async threads).
pub async fn scrape(runtime: Arc<Runtime>) -> Response {
    match tokio::task::spawn_blocking(move || runtime.metrics_text()).await {
        Ok(text) => ([(CONTENT_TYPE, OPENMETRICS)], text).into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

/// The router of the separate metrics address: `/metrics` without a token.
pub fn open_router(runtime: Arc<Runtime>) -> axum::Router {
    axum::Router::new().route("/metrics", axum::routing::get(move || scrape(runtime.clone())))
}

/// Serves [`open_router`] on `listener` until `shutdown` resolves.
pub async fn serve_open(
    listener: tokio::net::TcpListener,
    runtime: Arc<Runtime>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, open_router(runtime)).with_graceful_shutdown(shutdown).await
}

/// Counts and times every request by its route template (`unmatched` for
/// paths no route has, so a scan of random paths adds no label values).
pub(crate) async fn track(State(s): State<AppState>, request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = match request.method().as_str() {
        m @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS") => m.to_string(),
        _ => "other".to_string(),
    };
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let m = s.runtime.metrics();
    m.http_seconds.get_or_create(&RouteLabels { method: method.clone(), route: route.clone() }).observe(started.elapsed().as_secs_f64());
    m.http_requests.get_or_create(&HttpLabels { method, route, status: response.status().as_u16() }).inc();
    response
}
