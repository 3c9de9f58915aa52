//! `berth serve`: open the store, build the services, run the listener and the background
//! workers until SIGINT/SIGTERM, then drain with a deadline.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use berth_core::SystemClock;
use berth_memory::MemoryService;
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
    pub store: Store,
}

pub async fn build(config: &Config) -> anyhow::Result<Built> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let root = credentials::load_or_create(&config.data_dir)?;
    let mut keys = vec![root];
    keys.extend(config.access_keys.iter().cloned());
    let store = Store::open(&config.database_url, Arc::new(SystemClock))
        .await
        .with_context(|| format!("opening database {}", redact(&config.database_url)))?;
    let mut worker = Worker::new(store.clone());
    let mut memory = MemoryService::new(store.clone(), &config.region);
    memory.attach_worker(&mut worker);
    let settings = ServerSettings {
        region: config.region.clone(),
        max_body_bytes: config.max_body_bytes,
        max_clock_skew_seconds: config.max_clock_skew_seconds,
    };
    let state = AppState::new(
        settings,
        KeyStore::new(keys),
        store.clone(),
        Services { memory: memory.clone() },
    );
    Ok(Built {
        state,
        worker,
        memory,
        store,
    })
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
    let Built {
        state,
        worker,
        memory,
        store,
    } = build(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let address = listener.local_addr()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(worker.run(stopped(stop_rx.clone())));
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
            if let Err(error) = sweeper_store.idempotency_sweep().await {
                tracing::warn!(%error, "client token sweep failed");
            }
        }
    });

    tracing::info!(%address, database = store.backend().name(), region = %config.region, "berth is serving");
    println!("berth listening on http://{address}");
    let app = berth_server::app(state);
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
