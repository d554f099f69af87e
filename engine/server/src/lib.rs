//! The Flowform HTTP API (axum). A thin layer: it authenticates, parses, calls
//! the runtime and renders. It knows nothing of any particular application.
//!
//! [`app`] builds the router (tested with `oneshot`, no socket); [`serve`]
//! runs it on a bound listener until the shutdown future resolves.

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
}

/// The whole API.
pub fn app(runtime: Arc<Runtime>) -> Router {
    routes::router().with_state(AppState { runtime })
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets requests in
/// flight finish.
pub async fn serve(listener: TcpListener, app: Router, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
