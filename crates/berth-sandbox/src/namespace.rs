//! The namespace tier: Linux namespaces, a fresh read-only root, Landlock, seccomp and cgroups,
//! built by `berth-guest launch` (see that module for the steps inside).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use berth_guest::protocol::LaunchConfig;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::cgroup::Hierarchy;
use crate::host::{HostSide, UidPool, host_backed, prepare_state_dir};
use crate::{Backend, GuestClient, Sandbox, SandboxError, SandboxSpec, Tier, Usage};

#[derive(Clone, Debug)]
pub struct NamespaceSettings {
    /// The program (and leading arguments) that runs the guest; `launch` is appended.
    pub guest_command: Vec<OsString>,
    /// Sandboxes' host directories live under here, one per sandbox.
    pub state_dir: PathBuf,
    /// When Berth runs as root, each sandbox's root is its own host uid from this range, so
    /// sandboxes cannot touch each other's files even outside their mount namespaces.
    pub uid_base: u32,
    pub uid_count: u32,
    /// How long the guest may take to answer after launch.
    pub start_timeout: Duration,
}

impl NamespaceSettings {
    pub fn new(guest_command: Vec<OsString>, state_dir: PathBuf) -> Self {
        NamespaceSettings {
            guest_command,
            state_dir,
            uid_base: 200_000,
            uid_count: 65_536,
            start_timeout: Duration::from_secs(10),
        }
    }
}

pub struct NamespaceBackend {
    settings: NamespaceSettings,
    hierarchy: Hierarchy,
    uids: UidPool,
}

impl NamespaceBackend {
    /// Prepares the state directory, removing what a previous run left behind.
    pub fn new(settings: NamespaceSettings) -> std::io::Result<Self> {
        prepare_state_dir(&settings.state_dir)?;
        Ok(NamespaceBackend {
            uids: UidPool::new(settings.uid_base, settings.uid_count),
            settings,
            hierarchy: Hierarchy::detect(),
        })
    }

    /// The cgroup hierarchy in use, or why limits cannot be enforced.
    pub fn hierarchy(&self) -> &Hierarchy {
        &self.hierarchy
    }
}

#[async_trait]
impl Backend for NamespaceBackend {
    fn tier(&self) -> Tier {
        Tier::Namespace
    }

    async fn create(&self, spec: SandboxSpec) -> Result<Arc<dyn Sandbox>, SandboxError> {
        let mut sandbox = NamespaceSandbox {
            host: HostSide::new(&self.settings.state_dir, &self.uids)?,
        };
        // From here on, a failure tears down whatever was built.
        match start(&mut sandbox.host, &self.settings, &self.hierarchy, spec).await {
            Ok(()) => Ok(Arc::new(sandbox)),
            Err(e) => {
                sandbox.destroy().await;
                Err(e)
            }
        }
    }
}

async fn start(
    host: &mut HostSide,
    settings: &NamespaceSettings,
    hierarchy: &Hierarchy,
    spec: SandboxSpec,
) -> Result<(), SandboxError> {
    let bridges = host.prepare(&spec, hierarchy)?;
    let config = LaunchConfig {
        control_dir: host.control_dir(),
        workspace_dir: host.workspace(),
        mounts: spec.mounts.clone(),
        uid: host.uid,
        gid: host.uid,
        hostname: "berth".into(),
        tmp_bytes: spec.limits.tmp_bytes,
        bridges,
        root: spec.root.clone(),
    };
    let (program, args) = settings
        .guest_command
        .split_first()
        .ok_or_else(|| SandboxError::Start("no guest command configured".into()))?;
    let mut child = Command::new(program)
        .args(args)
        .arg("launch")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| SandboxError::Start(format!("cannot run the guest {}: {e}", program.to_string_lossy())))?;
    // The launcher reads its config only after it is in the cgroup, so everything it starts
    // is counted and limited from the first instruction.
    if let (Some(cgroup), Some(pid)) = (&host.cgroup, child.id()) {
        cgroup.add(pid)?;
    }
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| SandboxError::Start("no stdin".into()))?;
    let json = serde_json::to_vec(&config).map_err(|e| SandboxError::Start(e.to_string()))?;
    stdin.write_all(&json).await?;
    drop(stdin);
    let stderr = child.stderr.take();
    *host.launcher.lock() = Some(child);
    host.wait_started(stderr, settings.start_timeout).await
}

pub struct NamespaceSandbox {
    host: HostSide,
}

#[async_trait]
impl Sandbox for NamespaceSandbox {
    host_backed!(Tier::Namespace);

    async fn destroy(&self) {
        // Killing the launcher kills pid 1 (parent-death signal), which ends the namespace.
        self.host.teardown().await;
    }
}
