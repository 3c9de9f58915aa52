//! `berth serve`: open the store, build the services, run the listener and the background
//! workers until SIGINT/SIGTERM, then drain with a deadline.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use berth_core::SystemClock;
use berth_interpreter::{
    Environment, InterpreterService, SessionSettings as InterpreterSessionSettings, Sessions, ToolSettings,
};
use berth_memory::MemoryService;
use berth_runtime::{RuntimeService, SessionManager, SessionSettings};
use berth_sandbox::gvisor::{GvisorBackend, GvisorSettings};
use berth_sandbox::namespace::{NamespaceBackend, NamespaceSettings};
use berth_sandbox::{Backend, Tier};
use berth_server::{AppState, KeyStore, ServerSettings, Services};
use berth_store::Store;
use berth_store::jobs::Worker;
use tokio::sync::watch;

use crate::config::Config;
use crate::credentials;

/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

/// Everything `serve` starts, before it starts listening.
pub struct Built {
    pub state: AppState,
    pub worker: Worker,
    pub memory: MemoryService,
    pub runtime: RuntimeService,
    pub interpreter: InterpreterService,
    pub store: Store,
}

/// The sandbox backends, the configured default first; the guest runs from this very binary
/// (`berth __guest`). gVisor is offered when `runsc` is installed.
pub fn sandbox_backends(config: &Config) -> anyhow::Result<Vec<Arc<dyn Backend>>> {
    let exe = std::env::current_exe().context("locating the berth binary for the sandbox guest")?;
    let guest = vec![exe.into_os_string(), "__guest".into()];
    let sandboxes = config.data_dir.join("sandboxes");
    let namespace = NamespaceBackend::new(NamespaceSettings::new(guest.clone(), sandboxes.join("namespace")))
        .context("preparing the sandbox directory")?;
    if let berth_sandbox::cgroup::Hierarchy::Unavailable(reason) = namespace.hierarchy() {
        tracing::warn!(%reason, "sandbox resource limits are not enforced");
    }
    let mut backends: Vec<Arc<dyn Backend>> = vec![Arc::new(namespace)];
    match berth_sandbox::probe::runsc() {
        Some(runsc) => {
            let settings = GvisorSettings::new(guest, sandboxes.join("gvisor"), runsc);
            backends.push(Arc::new(
                GvisorBackend::new(settings).context("preparing the gVisor state directory")?,
            ));
        }
        None if config.runtime.isolation == Tier::Gvisor => {
            anyhow::bail!("runtime.isolation is gvisor, but runsc is not installed (Debian package `runsc`)")
        }
        None => {}
    }
    backends.sort_by_key(|b| b.tier() != config.runtime.isolation);
    Ok(backends)
}

/// `api_address` is where the listener is (sandboxes reach Berth's API through it).
pub async fn build(config: &Config, api_address: std::net::SocketAddr) -> anyhow::Result<Built> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let root = credentials::load_or_create(&config.data_dir)?;
    let mut keys = vec![root];
    keys.extend(config.access_keys.iter().cloned());
    let keys = KeyStore::new(keys);
    let store = Store::open(&config.database_url, Arc::new(SystemClock))
        .await
        .with_context(|| format!("opening database {}", redact(&config.database_url)))?;
    let mut worker = Worker::new(store.clone());
    let models = berth_models::providers::build(&config.models, &config.models_dir).map_err(anyhow::Error::msg)?;
    if let Some(reason) = &models.embedder_missing {
        tracing::warn!(%reason, "no embedder: memory records are retrieved by full-text search only");
    }
    if let Some(reason) = &models.chat_missing {
        tracing::warn!(%reason, "no chat model: memory strategies will not extract records (their jobs fail visibly)");
    }
    let mut memory = MemoryService::new(store.clone(), &config.region)
        .with_models(models)
        .with_extraction_settings(config.extraction.clone());
    memory.attach_worker(&mut worker);
    let runtime_config = &config.runtime;
    let session_settings = SessionSettings {
        region: config.region.clone(),
        api_address,
        public_endpoint: config.endpoint_url(),
        limits: runtime_config.limits.clone(),
        egress_enabled: runtime_config.egress,
        egress_allowlist: runtime_config.egress_allowlist.clone(),
        startup_timeout: Duration::from_secs(runtime_config.startup_timeout_seconds),
    };
    let backends = sandbox_backends(config)?;
    let sessions = SessionManager::new(session_settings, backends.clone(), Arc::new(keys.clone()));
    let runtime = RuntimeService::new(
        store.clone(),
        &config.region,
        config.data_dir.clone(),
        sessions,
        runtime_config.pip_index_url.clone(),
    );
    runtime.attach_worker(&mut worker);
    let settings = ServerSettings {
        region: config.region.clone(),
        max_body_bytes: config.max_body_bytes,
        max_clock_skew_seconds: config.max_clock_skew_seconds,
        max_payload_bytes: runtime_config.max_payload_bytes,
        max_tool_payload_bytes: config.interpreter.max_payload_bytes,
        spool_dir: config.data_dir.join("tmp"),
    };
    std::fs::create_dir_all(&settings.spool_dir)
        .with_context(|| format!("creating {}", settings.spool_dir.display()))?;
    let interpreter = interpreter_service(config, &store, &backends)?;
    let services = Services {
        memory: memory.clone(),
        runtime: Some(runtime.clone()),
        interpreter: Some(interpreter.clone()),
    };
    let state = AppState::new(settings, keys, store.clone(), services);
    Ok(Built {
        state,
        worker,
        memory,
        runtime,
        interpreter,
        store,
    })
}

fn interpreter_service(
    config: &Config,
    store: &Store,
    backends: &[Arc<dyn Backend>],
) -> anyhow::Result<InterpreterService> {
    let settings = &config.interpreter;
    let backend = backends
        .iter()
        .find(|b| b.tier() == settings.isolation)
        .cloned()
        .with_context(|| {
            format!(
                "interpreter.isolation: the {} tier is not available",
                settings.isolation.name()
            )
        })?;
    let environment = Environment::new(&settings.environment_dir);
    if !environment.is_built() {
        tracing::warn!(dir = %settings.environment_dir.display(),
            "the Code Interpreter environment is not built (make interpreter-env): sessions get the host's Python \
             without data libraries, and no JavaScript");
    }
    let session_settings = InterpreterSessionSettings {
        limits: settings.limits.clone(),
        egress_enabled: config.runtime.egress,
        tools: ToolSettings {
            execution_timeout: Duration::from_secs(settings.execution_timeout_seconds),
            max_output_bytes: settings.max_output_bytes,
            max_running_tasks: 16,
        },
        warm_pool: settings.warm_pool,
        max_sessions: settings.max_sessions,
    };
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let node = format!("{}:{}", host.trim(), config.data_dir.display());
    Ok(InterpreterService::new(
        store.clone(),
        &config.region,
        node,
        settings.network_mode.clone(),
        Sessions::new(session_settings, environment, backend),
    ))
}

/// Hides the password of a database URL in messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let address = listener.local_addr()?;
    let Built {
        state,
        worker,
        memory,
        runtime,
        interpreter,
        store,
    } = build(&config, address).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(worker.run(stopped(stop_rx.clone())));
    tasks.spawn(memory.clone().run_extractor(stopped(stop_rx.clone())));
    // Ends expired Code Interpreter sessions and keeps the warm pool; on stop, ends them all.
    tasks.spawn(interpreter.run_reaper(stopped(stop_rx.clone())));
    let sweep_every = Duration::from_secs(config.expiry_sweep_seconds);
    let sweeper_store = store.clone();
    let mut sweeper_stop = stop_rx.clone();
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(sweep_every);
        loop {
            tokio::select! {
                _ = sweeper_stop.wait_for(|stop| *stop) => return,
                _ = tick.tick() => {}
            }
            match memory.sweep_expired_events().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(events = n, "expired events deleted"),
                Err(error) => tracing::warn!(%error, "event expiry sweep failed"),
            }
            match memory.sweep_expired_records().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(records = n, "expired memory records deleted"),
                Err(error) => tracing::warn!(%error, "memory record expiry sweep failed"),
            }
            if let Err(error) = sweeper_store.idempotency_sweep().await {
                tracing::warn!(%error, "client token sweep failed");
            }
        }
    });

    let reaper_runtime = runtime.clone();
    let mut reaper_stop = stop_rx.clone();
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = reaper_stop.wait_for(|stop| *stop) => return,
                _ = tick.tick() => {}
            }
            reaper_runtime.sessions().reap().await;
        }
    });

    tracing::info!(%address, database = store.backend().name(), region = %config.region, "berth is serving");
    println!("berth listening on http://{address}");
    let app = berth_server::app(state);
    // Streamed responses (agents' SSE) go out in several writes; without TCP_NODELAY, Nagle's
    // algorithm holds each one for the client's delayed ACK (~40 ms).
    let listener = axum::serve::ListenerExt::tap_io(listener, |stream: &mut tokio::net::TcpStream| {
        let _ = stream.set_nodelay(true);
    });
    if let Some(tls) = &config.tls {
        let (tls_config, ca) = crate::tls::server_config(&tls.dir, &tls.hostnames)?;
        let tls_listener = tokio::net::TcpListener::bind(tls.listen)
            .await
            .with_context(|| format!("listening on {} (TLS)", tls.listen))?;
        let tls_address = tls_listener.local_addr()?;
        let tls_listener = crate::tls::TlsListener::new(tls_listener, tls_config)?;
        println!(
            "berth listening on https://{tls_address} (trust {}; names: {})",
            ca.display(),
            tls.hostnames.join(", ")
        );
        let (tls_app, tls_stop) = (app.clone(), stopped(stop_rx.clone()));
        tasks.spawn(async move {
            if let Err(error) = axum::serve(tls_listener, tls_app)
                .with_graceful_shutdown(tls_stop)
                .await
            {
                tracing::error!(%error, "TLS server error");
            }
        });
    }
    let server_stop = stopped(stop_rx.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(server_stop).await });

    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    match tokio::time::timeout(DRAIN_DEADLINE, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => tracing::error!(%error, "server error"),
        Ok(Err(error)) => tracing::error!(%error, "server task failed"),
        Err(_) => tracing::warn!("requests still running after the drain deadline; exiting anyway"),
    }
    let _ = tokio::time::timeout(DRAIN_DEADLINE, async { while tasks.join_next().await.is_some() {} }).await;
    runtime.sessions().stop_all().await;
    store.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redacts_database_passwords() {
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite:///x/berth.db"), "sqlite:///x/berth.db");
    }
}
