//! Runtime sessions: one sandbox per `runtimeSessionId`, the agent started in it, requests
//! proxied to it over the guest's port forwarding, and the idle / lifetime limits enforced.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use berth_core::{AccountId, CredentialIssuer};
use berth_guest::protocol::{SERVICE_LOG, WORKSPACE_MOUNT};
use berth_sandbox::{Backend, Egress, HostForward, Limits, Sandbox, SandboxSpec, ServiceSpec, Tier, Usage};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde::Serialize;

use crate::build::Program;
use crate::error::{Result, RuntimeError};
use crate::model::Definition;

const SERVICE_LOG_LIMIT: u64 = 8 * 1024 * 1024;
const PING_INTERVAL: Duration = Duration::from_millis(10);
const ERROR_BODY_LIMIT: usize = 4096;
const MCP: &str = "MCP";
const A2A: &str = "A2A";
const MCP_SESSION_HEADER: &str = "mcp-session-id";
const AGENT_CARD_PATH: &str = "/.well-known/agent-card.json";

/// Settings sessions need from the server's configuration.
#[derive(Clone, Debug)]
pub struct SessionSettings {
    pub region: String,
    /// Berth's API, reached from inside sandboxes through a forward on the same port.
    pub api_address: std::net::SocketAddr,
    /// How clients reach Berth (for `AGENTCORE_RUNTIME_URL`).
    pub public_endpoint: String,
    pub limits: Limits,
    /// Whether sandboxes get the egress proxy at all.
    pub egress_enabled: bool,
    /// Domains a `VPC`-mode runtime may reach (PUBLIC reaches any).
    pub egress_allowlist: Vec<String>,
    /// How long an agent may take to answer `/ping` after its sandbox starts.
    pub startup_timeout: Duration,
}

impl SessionSettings {
    pub fn egress_for(&self, network_mode: &str) -> Egress {
        match (self.egress_enabled, network_mode) {
            (false, _) => Egress::Denied,
            (true, "PUBLIC") => Egress::Any,
            (true, _) if self.egress_allowlist.is_empty() => Egress::Denied,
            (true, _) => Egress::Allowlist(self.egress_allowlist.clone()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SessionKey {
    runtime_id: String,
    session_id: String,
}

/// One live session.
pub struct Session {
    key: SessionKey,
    version: i64,
    sandbox: Arc<dyn Sandbox>,
    /// `serverProtocol`: HTTP, MCP, A2A or AGUI.
    protocol: String,
    port: u16,
    path: String,
    started: Instant,
    last_active: Mutex<Instant>,
    active: AtomicUsize,
    idle_timeout: Duration,
    max_lifetime: Duration,
    access_key_id: String,
    /// The agent's environment and working directory; commands run with them too.
    env: BTreeMap<String, String>,
    cwd: String,
}

/// What `/health` and the metrics show of a session.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionReport {
    pub agent_runtime_id: String,
    pub runtime_session_id: String,
    pub agent_runtime_version: String,
    pub isolation: &'static str,
    pub age_seconds: u64,
    pub idle_seconds: u64,
    pub active_invocations: usize,
    pub usage: Usage,
}

/// What to start a session of.
pub struct SessionTarget<'a> {
    /// The isolation tier the runtime asked for (`berth:isolation` tag), else the default.
    pub tier: Option<Tier>,
    pub account: &'a AccountId,
    pub runtime_id: &'a str,
    pub runtime_arn: &'a str,
    pub version: i64,
    pub definition: &'a Definition,
    /// What runs in the sandbox: the built code, or a container image's root and command.
    pub program: Program,
}

type Slot = Arc<tokio::sync::Mutex<Option<Arc<Session>>>>;

pub struct SessionManager {
    settings: SessionSettings,
    /// The tiers this server can build, the default first.
    backends: Vec<Arc<dyn Backend>>,
    issuer: Arc<dyn CredentialIssuer>,
    slots: Mutex<HashMap<SessionKey, Slot>>,
}

impl SessionManager {
    /// `backends` are the tiers available, the default first.
    pub fn new(settings: SessionSettings, backends: Vec<Arc<dyn Backend>>, issuer: Arc<dyn CredentialIssuer>) -> Self {
        SessionManager {
            settings,
            backends,
            issuer,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The backend of `tier`, or the default one; an unavailable tier is an error.
    pub fn backend(&self, tier: Option<Tier>) -> Result<&Arc<dyn Backend>> {
        match tier {
            None => self
                .backends
                .first()
                .ok_or_else(|| RuntimeError::Internal("no sandbox backend is configured".into())),
            Some(tier) => self.backends.iter().find(|b| b.tier() == tier).ok_or_else(|| {
                RuntimeError::invalid(
                    "tags.berth:isolation",
                    format!(
                        "the {} tier is not available on this server (see `berth doctor`)",
                        tier.name()
                    ),
                )
            }),
        }
    }

    pub fn settings(&self) -> &SessionSettings {
        &self.settings
    }

    fn slot(&self, key: &SessionKey) -> Slot {
        self.slots.lock().entry(key.clone()).or_default().clone()
    }

    /// The live session for `session_id`, starting one (and its agent) if there is none.
    pub async fn session(&self, target: SessionTarget<'_>, session_id: &str) -> Result<Arc<Session>> {
        let key = SessionKey {
            runtime_id: target.runtime_id.to_string(),
            session_id: session_id.to_string(),
        };
        let slot = self.slot(&key);
        let mut current = slot.lock().await;
        if let Some(session) = current.as_ref() {
            if session.is_running().await {
                return Ok(session.clone());
            }
            self.finish(session).await;
            *current = None;
        }
        let session = Arc::new(self.start(key, target).await?);
        *current = Some(session.clone());
        Ok(session)
    }

    async fn start(&self, key: SessionKey, target: SessionTarget<'_>) -> Result<Session> {
        let definition = target.definition;
        let (protocol, port, path) = definition.protocol();
        let (idle, max_lifetime) = definition.lifecycle();
        let egress = self.settings.egress_for(definition.network_mode());
        let api_port = self.settings.api_address.port();
        let spec = SandboxSpec {
            label: target.runtime_id.to_string(),
            mounts: target.program.mounts.clone(),
            limits: self.settings.limits.clone(),
            egress: egress.clone(),
            forwards: vec![HostForward {
                guest_port: api_port,
                target: self.settings.api_address,
            }],
            root: target.program.root.clone(),
        };
        let sandbox = self
            .backend(target.tier)?
            .create(spec)
            .await
            .map_err(|e| RuntimeError::Internal(format!("could not start a sandbox: {e}")))?;
        let (key_id, secret) = self.issuer.issue_data_plane_key(target.account);
        let env = self.environment(&target, &egress, api_port, &key_id, &secret);
        let session = Session {
            key,
            version: target.version,
            sandbox,
            protocol,
            port,
            path,
            started: Instant::now(),
            last_active: Mutex::new(Instant::now()),
            active: AtomicUsize::new(0),
            idle_timeout: Duration::from_secs(idle),
            max_lifetime: Duration::from_secs(max_lifetime),
            access_key_id: key_id,
            env,
            cwd: target.program.cwd.clone(),
        };
        let service = ServiceSpec {
            argv: target.program.argv.clone(),
            env: session.env.clone(),
            cwd: Some(target.program.cwd.clone()),
            log_limit_bytes: SERVICE_LOG_LIMIT,
        };
        let started = async {
            session
                .sandbox
                .guest()
                .start_service(service)
                .await
                .map_err(|e| RuntimeError::Agent(format!("the agent did not start: {e}")))?;
            session.wait_healthy(self.settings.startup_timeout).await
        };
        if let Err(e) = started.await {
            self.finish(&session).await;
            return Err(e);
        }
        tracing::info!(runtime = %session.key.runtime_id, session = %session.key.session_id,
            elapsed_ms = session.started.elapsed().as_millis() as u64, "runtime session started");
        Ok(session)
    }

    /// The environment of spec §3.7, pointed at this Berth.
    fn environment(
        &self,
        target: &SessionTarget<'_>,
        egress: &Egress,
        api_port: u16,
        key_id: &str,
        secret: &str,
    ) -> BTreeMap<String, String> {
        let mut env = target.program.base_env.clone();
        env.extend(target.definition.environment_variables.clone());
        let api = format!("http://127.0.0.1:{api_port}");
        let region = self.settings.region.clone();
        let invocation_url = format!(
            "{}/runtimes/{}/invocations",
            self.settings.public_endpoint.trim_end_matches('/'),
            percent_encoding::utf8_percent_encode(target.runtime_arn, PATH_SEGMENT)
        );
        let platform = [
            ("AWS_REGION", region.clone()),
            ("AWS_DEFAULT_REGION", region),
            ("AWS_ACCESS_KEY_ID", key_id.to_string()),
            ("AWS_SECRET_ACCESS_KEY", secret.to_string()),
            ("AWS_ENDPOINT_URL_BEDROCK_AGENTCORE", api.clone()),
            ("AWS_ENDPOINT_URL_BEDROCK_AGENTCORE_CONTROL", api.clone()),
            ("BEDROCK_AGENTCORE_CONTROL_ENDPOINT", api),
            ("AGENTCORE_RUNTIME_URL", invocation_url),
            ("DOCKER_CONTAINER", "1".into()),
            ("HOME", WORKSPACE_MOUNT.into()),
            ("PYTHONUNBUFFERED", "1".into()),
        ];
        for (name, value) in platform {
            env.insert(name.into(), value);
        }
        env.extend(target.program.forced_env.clone());
        if *egress != Egress::Denied {
            let proxy = format!("http://127.0.0.1:{}", berth_sandbox::EGRESS_PROXY_PORT);
            for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
                env.insert(name.into(), proxy.clone());
            }
            env.insert("NO_PROXY".into(), "127.0.0.1,localhost".into());
            env.insert("no_proxy".into(), "127.0.0.1,localhost".into());
        }
        env
    }

    /// Ends a session: its sandbox and its credentials.
    async fn finish(&self, session: &Session) {
        session.sandbox.destroy().await;
        self.issuer.revoke(&session.access_key_id);
    }

    /// StopRuntimeSession.
    pub async fn stop(&self, runtime_id: &str, session_id: &str) -> Result<()> {
        let key = SessionKey {
            runtime_id: runtime_id.to_string(),
            session_id: session_id.to_string(),
        };
        let slot = self.slots.lock().get(&key).cloned();
        let Some(slot) = slot else {
            return Err(RuntimeError::SessionNotFound(session_id.to_string()));
        };
        let session = slot.lock().await.take();
        self.slots.lock().remove(&key);
        match session {
            Some(session) => {
                self.finish(&session).await;
                Ok(())
            }
            None => Err(RuntimeError::SessionNotFound(session_id.to_string())),
        }
    }

    /// Ends every session of a runtime (it is being deleted).
    pub async fn stop_runtime(&self, runtime_id: &str) {
        let keys: Vec<SessionKey> = self
            .slots
            .lock()
            .keys()
            .filter(|k| k.runtime_id == runtime_id)
            .cloned()
            .collect();
        for key in keys {
            let _ = self.stop(&key.runtime_id, &key.session_id).await;
        }
    }

    /// Ends every session (server shutdown).
    pub async fn stop_all(&self) {
        let keys: Vec<SessionKey> = self.slots.lock().keys().cloned().collect();
        for key in keys {
            let _ = self.stop(&key.runtime_id, &key.session_id).await;
        }
    }

    /// Ends sessions past their lifetime, idle past their timeout (unless the agent reports
    /// `HealthyBusy`), or whose sandbox died.
    pub async fn reap(&self) {
        let sessions: Vec<Arc<Session>> = {
            let slots: Vec<Slot> = self.slots.lock().values().cloned().collect();
            let mut sessions = Vec::new();
            for slot in slots {
                // A slot being started is skipped; it is not idle.
                if let Ok(guard) = slot.try_lock()
                    && let Some(session) = guard.as_ref()
                {
                    sessions.push(session.clone());
                }
            }
            sessions
        };
        for session in sessions {
            let reason = if !session.is_running().await {
                Some("its agent or sandbox ended")
            } else if session.started.elapsed() >= session.max_lifetime {
                Some("it reached its maxLifetime")
            } else if session.active.load(Ordering::SeqCst) == 0
                && session.last_active.lock().elapsed() >= session.idle_timeout
            {
                match session.ping().await {
                    Ok(status) if status == "HealthyBusy" => {
                        session.touch();
                        None
                    }
                    _ => Some("it was idle for its idleRuntimeSessionTimeout"),
                }
            } else {
                None
            };
            if let Some(reason) = reason {
                tracing::info!(runtime = %session.key.runtime_id, session = %session.key.session_id, reason, "runtime session ended");
                let _ = self.stop(&session.key.runtime_id, &session.key.session_id).await;
            }
        }
    }

    pub fn reports(&self) -> Vec<SessionReport> {
        let slots: Vec<Slot> = self.slots.lock().values().cloned().collect();
        slots
            .iter()
            .filter_map(|slot| slot.try_lock().ok().and_then(|g| g.clone()))
            .map(|s| SessionReport {
                agent_runtime_id: s.key.runtime_id.clone(),
                runtime_session_id: s.key.session_id.clone(),
                agent_runtime_version: s.version.to_string(),
                isolation: s.sandbox.tier().name(),
                age_seconds: s.started.elapsed().as_secs(),
                idle_seconds: s.last_active.lock().elapsed().as_secs(),
                active_invocations: s.active.load(Ordering::SeqCst),
                usage: s.sandbox.usage(),
            })
            .collect()
    }
}

/// Everything but RFC 3986 unreserved characters (an ARN as one path segment).
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A request body on its way to an agent, streamed.
pub type RequestBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// A request body of bytes already in memory.
pub fn request_body(bytes: impl Into<Bytes>) -> RequestBody {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A request to the agent.
pub struct AgentRequest {
    pub headers: Vec<(String, String)>,
    pub body: RequestBody,
}

/// The agent's answer, streamed.
pub struct AgentResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: AgentBody,
}

impl Session {
    /// Whether the sandbox and the agent in it still run. A session whose agent died is over:
    /// the next call with its id starts a new sandbox, as on AgentCore.
    async fn is_running(&self) -> bool {
        self.sandbox.is_alive()
            && matches!(self.sandbox.guest().service_status().await, Ok(status) if status.exit.is_none())
    }

    fn touch(&self) {
        *self.last_active.lock() = Instant::now();
    }

    pub(crate) fn sandbox(&self) -> &Arc<dyn Sandbox> {
        &self.sandbox
    }

    pub(crate) fn env(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    pub(crate) fn cwd(&self) -> &str {
        &self.cwd
    }

    /// Sends one HTTP/1.1 request to the agent over a fresh guest connection.
    async fn send<B>(
        &self,
        method: http::Method,
        path: &str,
        headers: &[(String, String)],
        body: B,
    ) -> std::result::Result<http::Response<Incoming>, String>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let stream = self
            .sandbox
            .guest()
            .connect(self.port)
            .await
            .map_err(|e| format!("the agent is not listening on port {}: {e}", self.port))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, format!("127.0.0.1:{}", self.port));
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let request = request.body(body).map_err(|e| e.to_string())?;
        sender.send_request(request).await.map_err(|e| e.to_string())
    }

    /// `GET /ping`: the status string, or why the agent is not healthy.
    pub async fn ping(&self) -> std::result::Result<String, String> {
        let response = self
            .send(http::Method::GET, "/ping", &[], Empty::<Bytes>::new())
            .await?;
        if !response.status().is_success() {
            return Err(format!("/ping answered {}", response.status()));
        }
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        Ok(json["status"].as_str().unwrap_or("Healthy").to_string())
    }

    /// Whether the agent is ready for requests: `/ping` answers 200 (spec §3.2). MCP servers
    /// have no `/ping` in the MCP guide's examples, so for them any HTTP answer will do.
    async fn is_ready(&self) -> std::result::Result<(), String> {
        if self.protocol != MCP {
            return self.ping().await.map(drop);
        }
        self.send(http::Method::GET, "/ping", &[], Empty::<Bytes>::new())
            .await
            .map(drop)
    }

    async fn wait_healthy(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let last_error = match self.is_ready().await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            let status = self.sandbox.guest().service_status().await.unwrap_or_default();
            if let Some(exit) = status.exit {
                return Err(RuntimeError::Agent(format!(
                    "the agent {} before answering /ping; its output:\n{}",
                    exit.describe(),
                    self.log_tail()
                )));
            }
            if Instant::now() >= deadline {
                return Err(RuntimeError::Agent(format!(
                    "the agent did not answer /ping within {timeout:?} ({last_error}); its output:\n{}",
                    self.log_tail()
                )));
            }
            tokio::time::sleep(PING_INTERVAL).await;
        }
    }

    /// The last lines of the agent's output.
    pub fn log_tail(&self) -> String {
        let log = self.sandbox.control_dir().join(SERVICE_LOG);
        let text = std::fs::read(&log).unwrap_or_default();
        let text = String::from_utf8_lossy(&text[text.len().saturating_sub(4096)..]).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Proxies one invocation; the response streams back as the agent writes it. An MCP
    /// request without `Mcp-Session-Id` gets the runtime session's id as one (spec §3.5), and
    /// the response carries it back unless the server chose its own.
    pub async fn invoke(self: &Arc<Self>, mut request: AgentRequest) -> Result<AgentResponse> {
        let activity = Activity::new(self.clone());
        let added_mcp_session = (self.protocol == MCP
            && !request
                .headers
                .iter()
                .any(|(name, _)| name.eq_ignore_ascii_case(MCP_SESSION_HEADER)))
        .then(|| self.key.session_id.clone());
        if let Some(id) = &added_mcp_session {
            request.headers.push((MCP_SESSION_HEADER.into(), id.clone()));
        }
        let response = self
            .send(http::Method::POST, &self.path, &request.headers, request.body)
            .await
            .map_err(|e| {
                RuntimeError::Agent(format!(
                    "the agent could not be reached: {e}; its output:\n{}",
                    self.log_tail()
                ))
            })?;
        let status = response.status().as_u16();
        let mut headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .filter_map(|(name, value)| Some((name.as_str().to_string(), value.to_str().ok()?.to_string())))
            .collect();
        if let Some(id) = added_mcp_session
            && !headers.iter().any(|(name, _)| name == MCP_SESSION_HEADER)
        {
            headers.push((MCP_SESSION_HEADER.into(), id));
        }
        if status >= 400 {
            let body = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_LIMIT)]).into_owned();
            return Err(RuntimeError::Agent(format!(
                "Received error ({status}) from runtime: {text}"
            )));
        }
        Ok(AgentResponse {
            status,
            headers,
            body: AgentBody {
                inner: response.into_body(),
                _activity: activity,
            },
        })
    }

    /// A connection to the agent's WebSocket port (spec §3.6), for the caller to upgrade; the
    /// session counts as busy while the returned guard lives.
    pub async fn connect_agent(self: &Arc<Self>) -> Result<(tokio::net::UnixStream, SessionActivity)> {
        let activity = SessionActivity {
            _activity: Activity::new(self.clone()),
        };
        let stream = self.sandbox.guest().connect(self.port).await.map_err(|e| {
            RuntimeError::Agent(format!(
                "the agent is not listening on port {}: {e}; its output:\n{}",
                self.port,
                self.log_tail()
            ))
        })?;
        Ok((stream, activity))
    }

    /// Attaches to the interactive shell `shell_id` in this session's sandbox (bash when the
    /// sandbox has it, else sh), with the agent's environment and working directory; says
    /// whether the shell was already running.
    pub async fn open_shell(
        self: &Arc<Self>,
        shell_id: &str,
    ) -> Result<(berth_sandbox::guest::ShellStream, bool, SessionActivity)> {
        let activity = SessionActivity {
            _activity: Activity::new(self.clone()),
        };
        let spec = berth_sandbox::ShellSpec {
            id: shell_id.to_string(),
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                "if command -v bash >/dev/null 2>&1; then exec bash -i; fi; exec sh -i".into(),
            ],
            env: self.env.clone(),
            cwd: Some(self.cwd.clone()),
            cols: 80,
            rows: 24,
        };
        let (stream, reconnected) = self
            .sandbox
            .guest()
            .shell(spec)
            .await
            .map_err(|e| RuntimeError::Agent(format!("the shell could not start in the session's sandbox: {e}")))?;
        Ok((stream, reconnected, activity))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// GetAgentCard: the A2A agent's `/.well-known/agent-card.json`.
    pub async fn agent_card(self: &Arc<Self>) -> Result<serde_json::Value> {
        if self.protocol != A2A {
            return Err(RuntimeError::invalid(
                "agentRuntimeArn",
                format!(
                    "agent cards are served by A2A runtimes; this one serves {}",
                    self.protocol
                ),
            ));
        }
        let _activity = Activity::new(self.clone());
        let response = self
            .send(http::Method::GET, AGENT_CARD_PATH, &[], Empty::<Bytes>::new())
            .await
            .map_err(|e| RuntimeError::Agent(format!("the agent could not be reached: {e}")))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| RuntimeError::Agent(format!("the agent card could not be read: {e}")))?
            .to_bytes();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_LIMIT)]).into_owned();
            return Err(RuntimeError::Agent(format!(
                "Received error ({status}) from runtime for {AGENT_CARD_PATH}: {text}"
            )));
        }
        serde_json::from_slice(&body).map_err(|e| RuntimeError::Agent(format!("the agent card is not JSON: {e}")))
    }
}

/// Keeps a session from being reaped as idle while a WebSocket to its agent is open.
pub struct SessionActivity {
    _activity: Activity,
}

/// Counts an invocation as active from its start until its response body is dropped, so a
/// long stream keeps the session from being reaped as idle.
pub(crate) struct Activity(Arc<Session>);

impl Activity {
    pub(crate) fn new(session: Arc<Session>) -> Self {
        session.active.fetch_add(1, Ordering::SeqCst);
        session.touch();
        Activity(session)
    }
}

impl Drop for Activity {
    fn drop(&mut self) {
        self.0.touch();
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The agent's response body, passed through frame by frame.
pub struct AgentBody {
    inner: Incoming,
    _activity: Activity,
}

impl Body for AgentBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
