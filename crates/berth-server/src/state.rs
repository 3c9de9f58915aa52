//! Shared server state and `/health`.

use std::collections::HashSet;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use berth_core::Clock;
use berth_memory::MemoryService;
use berth_runtime::RuntimeService;
use berth_store::Store;
use berth_store::idempotency::TokenKey;
use berth_wire::Router as WireRouter;
use berth_wire::sigv4::VerifierSettings;
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::auth::KeyStore;
use crate::operations::Registry;

/// Settings the server needs, already validated by the binary's config loader.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// The region in ARNs and in the SigV4 credential scope.
    pub region: String,
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// How far a request's signing time may be from the server clock.
    pub max_clock_skew_seconds: i64,
    /// The largest InvokeAgentRuntime payload and uploaded code bundle, in bytes.
    pub max_payload_bytes: usize,
    /// The largest InvokeCodeInterpreter request (writeFiles carries files inline, base64).
    pub max_tool_payload_bytes: usize,
    /// Where payloads too large to keep in memory wait for their signature check.
    pub spool_dir: std::path::PathBuf,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            region: "us-east-1".into(),
            max_body_bytes: 32 * 1024 * 1024,
            max_clock_skew_seconds: 300,
            max_payload_bytes: 100 * 1024 * 1024,
            max_tool_payload_bytes: 150 * 1024 * 1024,
            spool_dir: std::env::temp_dir(),
        }
    }
}

/// The services the server dispatches to. Runtime is absent where no sandbox backend was
/// built (tools that only need the store); its operations then answer 501.
#[derive(Clone)]
pub struct Services {
    pub memory: MemoryService,
    pub runtime: Option<RuntimeService>,
    /// Absent, like Runtime, where no sandbox backend was built.
    pub interpreter: Option<berth_interpreter::InterpreterService>,
}

/// Everything a request handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub inner: Arc<Inner>,
}

pub struct Inner {
    pub settings: ServerSettings,
    pub verifier: VerifierSettings,
    pub keys: KeyStore,
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub services: Services,
    pub router: WireRouter,
    pub registry: Registry,
    /// Client tokens of requests running in this process (see `dispatch`).
    pub in_flight: Arc<Mutex<HashSet<TokenKey>>>,
}

impl AppState {
    pub fn new(settings: ServerSettings, keys: KeyStore, store: Store, services: Services) -> Self {
        let verifier = VerifierSettings {
            region: settings.region.clone(),
            service: berth_wire::models().data.metadata.signing_name.clone(),
            max_skew_seconds: settings.max_clock_skew_seconds,
        };
        let registry = Registry::new(&services, &store);
        AppState {
            inner: Arc::new(Inner {
                clock: store.clock().clone(),
                settings,
                verifier,
                keys,
                store,
                services,
                router: WireRouter::new(berth_wire::models()),
                registry,
                in_flight: Arc::new(Mutex::new(HashSet::new())),
            }),
        }
    }
}

/// `GET /health`: 200 once the server is serving and its database answers.
pub async fn health(State(state): State<AppState>) -> (http::StatusCode, Json<Value>) {
    let store = &state.inner.store;
    let database = store.ping().await.is_ok();
    let status = if database {
        http::StatusCode::OK
    } else {
        http::StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if database { "ok" } else { "degraded" },
            "version": env!("CARGO_PKG_VERSION"),
            "region": state.inner.settings.region,
            "database": { "backend": store.backend().name(), "reachable": database },
            "services": {
                "memory": "ready",
                "runtime": if state.inner.services.runtime.is_some() { "ready" } else { "disabled" },
                "codeInterpreter": if state.inner.services.interpreter.is_some() { "ready" } else { "disabled" },
            },
            "runtimeSessions": state.inner.services.runtime.as_ref().map(|r| r.sessions().reports()).unwrap_or_default(),
        })),
    )
}
