//! Sandboxes for agent sessions.
//!
//! Every sandbox, whatever its tier, runs `berth-guest` as init and is driven through it over a
//! Unix socket ([`GuestClient`]); the tiers differ only in how the sandbox is built and torn
//! down. Runtime, Code Interpreter and Browser use the [`Sandbox`] trait and nothing else.

pub mod cgroup;
pub mod egress;
pub mod guest;
pub mod gvisor;
mod host;
pub mod namespace;
pub mod probe;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;

pub use berth_guest::protocol::{ExecSpec, ExitStatus, MountSpec, ServiceSpec, ServiceState, ShellSpec, TerminalSize};
pub use guest::{ExecEvent, ExecStream, GuestClient};

/// The isolation tiers, weakest boundary first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Namespace,
    Gvisor,
    Microvm,
}

impl Tier {
    pub fn name(self) -> &'static str {
        match self {
            Tier::Namespace => "namespace",
            Tier::Gvisor => "gvisor",
            Tier::Microvm => "microvm",
        }
    }

    pub fn parse(name: &str) -> Option<Tier> {
        match name {
            "namespace" => Some(Tier::Namespace),
            "gvisor" => Some(Tier::Gvisor),
            "microvm" => Some(Tier::Microvm),
            _ => None,
        }
    }
}

/// Resource limits, enforced with cgroups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: u64,
    pub pids: u64,
    /// CPU time per wall-clock second, in thousandths of a core.
    pub cpu_millicores: u64,
    /// Size of the sandbox's `/tmp`.
    pub tmp_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 2 * 1024 * 1024 * 1024,
            pids: 512,
            cpu_millicores: 1000,
            tmp_bytes: 256 * 1024 * 1024,
        }
    }
}

/// Where a sandbox may open connections outside itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Egress {
    /// Loopback only: no proxy is offered.
    Denied,
    /// Through the proxy, to these domains only (`example.com` or `*.example.com`).
    Allowlist(Vec<String>),
    /// Through the proxy, anywhere.
    Any,
}

impl Egress {
    /// Whether a connection to `host` is allowed.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        match self {
            Egress::Denied => false,
            Egress::Any => true,
            Egress::Allowlist(domains) => domains.iter().any(|pattern| {
                let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
                match pattern.strip_prefix("*.") {
                    Some(parent) => host.ends_with(&format!(".{parent}")),
                    None => host == pattern,
                }
            }),
        }
    }
}

/// A TCP port on the sandbox's loopback that reaches a host TCP address (Berth's own API).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostForward {
    pub guest_port: u16,
    pub target: std::net::SocketAddr,
}

/// The inside port of the egress proxy (`HTTP(S)_PROXY=http://127.0.0.1:3128`).
pub const EGRESS_PROXY_PORT: u16 = 3128;

/// What to build.
#[derive(Clone, Debug)]
pub struct SandboxSpec {
    /// A short label for logs and cgroup names; the sandbox's id is unique regardless.
    pub label: String,
    /// Extra host directories to mount (the agent's code and environment).
    pub mounts: Vec<MountSpec>,
    pub limits: Limits,
    pub egress: Egress,
    pub forwards: Vec<HostForward>,
    /// A root filesystem to run from (a container image's), read-only, instead of the host's
    /// system directories.
    pub root: Option<std::path::PathBuf>,
}

/// Resource use so far, from cgroup accounting.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// CPU time actually used (I/O wait and idle are not counted).
    pub cpu_seconds: f64,
    pub memory_peak_bytes: u64,
    pub memory_current_bytes: u64,
    /// How often the memory limit made the kernel kill a process.
    pub oom_kills: u64,
    /// How often a fork failed on the pids limit.
    pub pids_limit_hits: u64,
    /// Connections the egress proxy refused.
    pub egress_denied: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("the {tier} tier is not available: {reason}")]
    TierUnavailable { tier: &'static str, reason: String },
    #[error("the sandbox did not start: {0}")]
    Start(String),
    #[error("guest: {0}")]
    Guest(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// One running sandbox. Dropping the last handle does not stop it; call [`Sandbox::destroy`].
#[async_trait]
pub trait Sandbox: Send + Sync {
    fn id(&self) -> &str;
    fn tier(&self) -> Tier;
    /// The guest agent of this sandbox.
    fn guest(&self) -> &GuestClient;
    /// The host directory mounted read-write at `/workspace`.
    fn workspace(&self) -> PathBuf;
    /// The host directory holding the guest's socket and the service log.
    fn control_dir(&self) -> PathBuf;
    fn usage(&self) -> Usage;
    /// Whether the sandbox's init still runs.
    fn is_alive(&self) -> bool;
    /// Kills everything in the sandbox and removes its files and cgroups.
    async fn destroy(&self);
}

/// Builds sandboxes of one tier.
#[async_trait]
pub trait Backend: Send + Sync {
    fn tier(&self) -> Tier;
    async fn create(&self, spec: SandboxSpec) -> Result<Arc<dyn Sandbox>, SandboxError>;
}
