//! The live sessions of this process, the warm pool, and the reaper of expired sessions.
//!
//! A session is one sandbox with the environment mounted read-only and the Python kernel
//! already running. Sandboxes without network access are interchangeable until claimed, so a
//! few are kept started ahead (`warm_pool`): starting a session then only claims one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_sandbox::{Backend, Egress, Limits, Sandbox, SandboxSpec};
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::environment::{Environment, NO_NETWORK_BIN, NO_NETWORK_PIP};
use crate::kernel;
use crate::session::{LiveSession, SessionKey, ToolSettings};

#[derive(Clone, Debug)]
pub struct SessionSettings {
    pub limits: Limits,
    /// Whether sandboxes may get the egress proxy at all (PUBLIC interpreters).
    pub egress_enabled: bool,
    pub tools: ToolSettings,
    /// Started sandboxes kept ready for sessions without network access.
    pub warm_pool: usize,
    /// Live sessions this process runs at most.
    pub max_sessions: usize,
}

pub struct Sessions {
    settings: SessionSettings,
    environment: Environment,
    backend: Arc<dyn Backend>,
    live: Mutex<HashMap<SessionKey, Arc<LiveSession>>>,
    pool: Mutex<Vec<Arc<dyn Sandbox>>>,
    refill: Notify,
}

impl Sessions {
    pub fn new(settings: SessionSettings, environment: Environment, backend: Arc<dyn Backend>) -> Self {
        Sessions {
            settings,
            environment,
            backend,
            live: Mutex::new(HashMap::new()),
            pool: Mutex::new(Vec::new()),
            refill: Notify::new(),
        }
    }

    pub fn environment(&self) -> &Environment {
        &self.environment
    }

    pub fn tier(&self) -> berth_sandbox::Tier {
        self.backend.tier()
    }

    pub fn egress_for(&self, network_mode: &str) -> Egress {
        match (self.settings.egress_enabled, network_mode) {
            (true, "PUBLIC") => Egress::Any,
            _ => Egress::Denied,
        }
    }

    /// A sandbox with the kernel running.
    async fn launch(&self, egress: Egress) -> Result<Arc<dyn Sandbox>, String> {
        let spec = SandboxSpec {
            label: "code-interpreter".into(),
            mounts: self.environment.mounts(),
            limits: self.settings.limits.clone(),
            egress: egress.clone(),
            forwards: Vec::new(),
            root: None,
        };
        let sandbox = self
            .backend
            .create(spec)
            .await
            .map_err(|e| format!("could not start a sandbox: {e}"))?;
        let vars = self.environment.variables(&egress);
        let prepared = async {
            if egress == Egress::Denied {
                for name in ["pip", "pip3"] {
                    let path = format!("{NO_NETWORK_BIN}/{name}");
                    sandbox
                        .guest()
                        .write_file(&path, NO_NETWORK_PIP.as_bytes(), Some(0o755))
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
            kernel::start(&*sandbox, &self.environment.python(), &vars).await
        };
        if let Err(e) = prepared.await {
            sandbox.destroy().await;
            return Err(e);
        }
        Ok(sandbox)
    }

    fn take_warm(&self) -> Option<Arc<dyn Sandbox>> {
        let mut pool = self.pool.lock();
        while let Some(sandbox) = pool.pop() {
            if sandbox.is_alive() {
                return Some(sandbox);
            }
        }
        None
    }

    /// Starts a session; the caller records it.
    pub async fn open(
        &self,
        key: SessionKey,
        network_mode: &str,
        lifetime: Duration,
    ) -> Result<Arc<LiveSession>, OpenError> {
        if self.live.lock().len() >= self.settings.max_sessions {
            return Err(OpenError::Quota(self.settings.max_sessions));
        }
        let egress = self.egress_for(network_mode);
        let warm = if egress == Egress::Denied {
            self.take_warm()
        } else {
            None
        };
        let sandbox = match warm {
            Some(sandbox) => {
                self.refill.notify_one();
                sandbox
            }
            None => self.launch(egress.clone()).await.map_err(OpenError::Sandbox)?,
        };
        let session = Arc::new(LiveSession::new(
            key.clone(),
            sandbox,
            self.environment.variables(&egress),
            self.environment.clone(),
            self.settings.tools.clone(),
            Instant::now() + lifetime,
        ));
        self.live.lock().insert(key, session.clone());
        Ok(session)
    }

    pub fn get(&self, key: &SessionKey) -> Option<Arc<LiveSession>> {
        self.live.lock().get(key).cloned()
    }

    /// Ends a live session; `false` when it was not live here.
    pub async fn close(&self, key: &SessionKey) -> bool {
        let session = self.live.lock().remove(key);
        match session {
            Some(session) => {
                session.end().await;
                true
            }
            None => false,
        }
    }

    /// The keys of sessions past their timeout or whose sandbox died; they are closed.
    pub async fn reap(&self) -> Vec<SessionKey> {
        let now = Instant::now();
        let expired: Vec<SessionKey> = self
            .live
            .lock()
            .values()
            .filter(|s| s.deadline <= now || !s.sandbox.is_alive())
            .map(|s| s.key.clone())
            .collect();
        for key in &expired {
            self.close(key).await;
        }
        expired
    }

    pub fn live_keys(&self) -> Vec<SessionKey> {
        self.live.lock().keys().cloned().collect()
    }

    /// Keeps the warm pool full until `stop` resolves; then empties it.
    pub async fn run_pool(&self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut failures = 0u32;
        loop {
            while self.pool.lock().len() < self.settings.warm_pool {
                match self.launch(Egress::Denied).await {
                    Ok(sandbox) => {
                        failures = 0;
                        self.pool.lock().push(sandbox);
                    }
                    Err(error) => {
                        failures += 1;
                        tracing::warn!(%error, "could not start a warm Code Interpreter sandbox");
                        break;
                    }
                }
            }
            let retry = Duration::from_secs(if failures > 0 {
                5u64.saturating_mul(failures.into()).min(300)
            } else {
                3600
            });
            tokio::select! {
                () = &mut stop => break,
                () = self.refill.notified() => {}
                () = tokio::time::sleep(retry) => {}
            }
        }
        let pool: Vec<_> = self.pool.lock().drain(..).collect();
        for sandbox in pool {
            sandbox.destroy().await;
        }
    }

    /// Ends every session and warm sandbox (shutdown).
    pub async fn close_all(&self) {
        for key in self.live_keys() {
            self.close(&key).await;
        }
        let pool: Vec<_> = self.pool.lock().drain(..).collect();
        for sandbox in pool {
            sandbox.destroy().await;
        }
    }
}

#[derive(Debug)]
pub enum OpenError {
    Quota(usize),
    Sandbox(String),
}
