//! Berth's HTTP front: one axum listener serving both AgentCore planes.
//!
//! Every request goes through the same steps, each in one place: read the body under a size
//! limit → authenticate (SigV4, [`auth`]) → route on the raw path and bind + validate the input
//! (`berth-wire`) → replay or reserve the client token ([`dispatch`]) → the service's
//! `async fn` ([`operations`]) → encode the response or the modelled AWS error.
//!
//! This is the only crate that knows axum; services receive typed inputs and a caller.

pub mod auth;
pub mod bearer;
pub mod command;
pub mod dispatch;
pub mod event_stream;
pub mod generic;
pub mod interpreter;
pub mod invoke;
pub mod metrics;
pub mod operations;
pub mod spool;
pub mod state;
pub mod ws;

pub use auth::{AccessKey, KeyStore};
pub use state::{AppState, ServerSettings, Services};

use axum::Router;
use axum::routing::get;

/// The application: `/health` and every AgentCore operation.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/health", get(state::health))
        .route("/metrics", get(metrics::metrics))
        .route("/runtimes/{arn}/ws", get(ws::agent::connect))
        .route("/runtimes/{arn}/ws/shells", get(ws::shell::connect))
        .fallback(dispatch::dispatch)
        .with_state(state)
}
