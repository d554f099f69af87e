//! The Flowform HTTP API (axum). A thin layer: it authenticates, parses, calls
//! the runtime and renders. It knows nothing of any particular application.
//!
//! [`app`] builds the router (tested with `oneshot`, no socket); [`serve`]
//! runs it on a bound listener until the shutdown future resolves.

pub mod auth;
mod error;
mod extract;
mod records;
mod routes;
mod views;

use axum::Router;
use flowform_runtime::Runtime;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

pub use error::ApiError;

#[derive(Clone)]
pub struct AppState {
    pub runtime: Arc<Runtime>,
    pub auth: auth::AuthConfig,
}

/// The whole API and the sign-in pages.
pub fn app(runtime: Arc<Runtime>) -> Router {
    app_with(runtime, auth::AuthConfig::default())
}

/// [`app`] with how the server is reached (e.g. behind a TLS proxy).
pub fn app_with(runtime: Arc<Runtime>, config: auth::AuthConfig) -> Router {
    routes::router().merge(auth::router()).with_state(AppState { runtime, auth: config }).layer(axum::middleware::from_fn(error::json_errors))
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets requests in
/// flight finish. Handlers see the client's address (sign-in throttling, audit).
pub async fn serve(listener: TcpListener, app: Router, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).with_graceful_shutdown(shutdown).await
}

/// Serves `app` to the local CLI on a Unix socket (created with mode 0600 in
/// the data directory): every request there acts as `cli` with the admin
/// role, as the owner of the data directory already may.
pub async fn serve_admin_socket(path: &std::path::Path, app: Router, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let app = app.layer(axum::Extension(auth::LocalAdmin));
    let result = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    let _ = std::fs::remove_file(path);
    result
}
