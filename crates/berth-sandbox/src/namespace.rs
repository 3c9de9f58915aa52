//! The namespace tier: Linux namespaces, a fresh read-only root, Landlock, seccomp and cgroups,
//! built by `berth-guest launch` (see that module for the steps inside).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use berth_guest::protocol::{Bridge, GUEST_SOCKET, LaunchConfig};
use parking_lot::Mutex;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::cgroup::{Hierarchy, SandboxCgroup};
use crate::egress::{self, EgressStats};
use crate::{Backend, EGRESS_PROXY_PORT, Egress, GuestClient, Sandbox, SandboxError, SandboxSpec, Tier, Usage};

const EGRESS_SOCKET: &str = "egress.sock";

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
    uids: Arc<Mutex<BTreeSet<u32>>>,
}

impl NamespaceBackend {
    /// Prepares the state directory, removing what a previous run left behind.
    pub fn new(settings: NamespaceSettings) -> std::io::Result<Self> {
        if settings.state_dir.exists() {
            for entry in std::fs::read_dir(&settings.state_dir)?.flatten() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        std::fs::create_dir_all(&settings.state_dir)?;
        std::fs::set_permissions(&settings.state_dir, std::fs::Permissions::from_mode(0o700))?;
        Ok(NamespaceBackend {
            settings,
            hierarchy: Hierarchy::detect(),
            uids: Arc::default(),
        })
    }

    /// The cgroup hierarchy in use, or why limits cannot be enforced.
    pub fn hierarchy(&self) -> &Hierarchy {
        &self.hierarchy
    }

    fn allocate_uid(&self) -> Result<u32, SandboxError> {
        let euid = nix::unistd::geteuid().as_raw();
        if euid != 0 {
            // Unprivileged: the only host uid we may map is our own.
            return Ok(euid);
        }
        let mut used = self.uids.lock();
        let free = (self.settings.uid_base..self.settings.uid_base + self.settings.uid_count)
            .find(|uid| !used.contains(uid))
            .ok_or_else(|| SandboxError::Start("every sandbox uid is in use".into()))?;
        used.insert(free);
        Ok(free)
    }
}

fn new_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{:04x}{:04x}", nanos, std::process::id() & 0xffff, n & 0xffff)
}

fn private_dir(path: &Path, uid: u32) -> std::io::Result<()> {
    std::fs::create_dir_all(path)?;
    std::os::unix::fs::chown(path, Some(uid), Some(uid))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

#[async_trait]
impl Backend for NamespaceBackend {
    fn tier(&self) -> Tier {
        Tier::Namespace
    }

    async fn create(&self, spec: SandboxSpec) -> Result<Arc<dyn Sandbox>, SandboxError> {
        let id = new_id();
        let uid = self.allocate_uid()?;
        let dir = self.settings.state_dir.join(&id);
        let mut sandbox = NamespaceSandbox {
            id: id.clone(),
            guest: GuestClient::new(dir.join("control").join(GUEST_SOCKET)),
            dir: dir.clone(),
            uid,
            uids: self.uids.clone(),
            launcher: Mutex::new(None),
            cgroup: None,
            tasks: Vec::new(),
            egress_stats: Arc::default(),
        };
        // From here on, a failure tears down whatever was built.
        match start(&mut sandbox, &self.settings, &self.hierarchy, spec).await {
            Ok(()) => Ok(Arc::new(sandbox)),
            Err(e) => {
                sandbox.destroy().await;
                Err(e)
            }
        }
    }
}

async fn start(
    sandbox: &mut NamespaceSandbox,
    settings: &NamespaceSettings,
    hierarchy: &Hierarchy,
    spec: SandboxSpec,
) -> Result<(), SandboxError> {
    let control = sandbox.control_dir();
    std::fs::create_dir_all(&sandbox.dir)?;
    private_dir(&control, sandbox.uid)?;
    private_dir(&sandbox.workspace(), sandbox.uid)?;
    // A writable mount is the sandbox's to fill (a build's output directory).
    for mount in spec.mounts.iter().filter(|m| m.writable) {
        std::os::unix::fs::chown(&mount.source, Some(sandbox.uid), Some(sandbox.uid))?;
    }

    let mut bridges = Vec::new();
    if spec.egress != Egress::Denied {
        let task = egress::serve_proxy(
            &control.join(EGRESS_SOCKET),
            spec.egress.clone(),
            sandbox.egress_stats.clone(),
        )?;
        sandbox.tasks.push(task);
        bridges.push(Bridge {
            port: EGRESS_PROXY_PORT,
            socket: EGRESS_SOCKET.into(),
        });
    }
    for forward in &spec.forwards {
        let socket = format!("forward-{}.sock", forward.guest_port);
        sandbox
            .tasks
            .push(egress::serve_forward(&control.join(&socket), forward.target)?);
        bridges.push(Bridge {
            port: forward.guest_port,
            socket,
        });
    }

    if let Hierarchy::Unavailable(_) = hierarchy {
        // Limits cannot be enforced; `berth doctor` reports why. The sandbox still isolates.
    } else {
        let name = format!("{}-{}", sanitize(&spec.label), sandbox.id);
        sandbox.cgroup = Some(SandboxCgroup::create(hierarchy, &name, &spec.limits)?);
    }

    let config = LaunchConfig {
        control_dir: control.clone(),
        workspace_dir: sandbox.workspace(),
        mounts: spec.mounts.clone(),
        uid: sandbox.uid,
        gid: sandbox.uid,
        hostname: "berth".into(),
        tmp_bytes: spec.limits.tmp_bytes,
        bridges,
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
    if let (Some(cgroup), Some(pid)) = (&sandbox.cgroup, child.id()) {
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
    *sandbox.launcher.lock() = Some(child);

    let ready = sandbox.guest.wait_ready(settings.start_timeout);
    let exited = wait_exit(&sandbox.launcher);
    tokio::select! {
        ready = ready => {
            ready?;
            if let Some(stderr) = stderr {
                sandbox.tasks.push(tokio::spawn(log_stderr(sandbox.id.clone(), stderr)));
            }
            Ok(())
        }
        () = exited => {
            let mut message = String::new();
            if let Some(mut stderr) = stderr {
                let _ = stderr.read_to_string(&mut message).await;
            }
            Err(SandboxError::Start(message.trim().to_string()))
        }
    }
}

/// Resolves when the launcher has exited.
async fn wait_exit(launcher: &Mutex<Option<Child>>) {
    loop {
        let exited = match launcher.lock().as_mut() {
            Some(child) => !matches!(child.try_wait(), Ok(None)),
            None => true,
        };
        if exited {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn sanitize(label: &str) -> String {
    label
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(48)
        .collect()
}

async fn log_stderr(id: String, mut stderr: tokio::process::ChildStderr) {
    let mut buf = vec![0u8; 4096];
    while let Ok(n) = stderr.read(&mut buf).await {
        if n == 0 {
            return;
        }
        let text = String::from_utf8_lossy(&buf[..n]);
        tracing::warn!(sandbox = %id, "{}", text.trim_end());
    }
}

pub struct NamespaceSandbox {
    id: String,
    guest: GuestClient,
    dir: PathBuf,
    uid: u32,
    uids: Arc<Mutex<BTreeSet<u32>>>,
    launcher: Mutex<Option<Child>>,
    cgroup: Option<SandboxCgroup>,
    tasks: Vec<JoinHandle<()>>,
    egress_stats: Arc<EgressStats>,
}

#[async_trait]
impl Sandbox for NamespaceSandbox {
    fn id(&self) -> &str {
        &self.id
    }

    fn tier(&self) -> Tier {
        Tier::Namespace
    }

    fn guest(&self) -> &GuestClient {
        &self.guest
    }

    fn workspace(&self) -> PathBuf {
        self.dir.join("workspace")
    }

    fn control_dir(&self) -> PathBuf {
        self.dir.join("control")
    }

    fn usage(&self) -> Usage {
        let mut usage = self.cgroup.as_ref().map(SandboxCgroup::usage).unwrap_or_default();
        usage.egress_denied = self.egress_stats.denied.load(Ordering::Relaxed);
        usage
    }

    fn is_alive(&self) -> bool {
        match self.launcher.lock().as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    async fn destroy(&self) {
        let launcher = self.launcher.lock().take();
        if let Some(mut launcher) = launcher {
            // Killing the launcher kills pid 1 (parent-death signal), which ends the namespace.
            let _ = launcher.start_kill();
            let _ = launcher.wait().await;
        }
        if let Some(cgroup) = &self.cgroup {
            cgroup.remove().await;
        }
        for task in &self.tasks {
            task.abort();
        }
        if let Err(e) = tokio::fs::remove_dir_all(&self.dir).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(sandbox = %self.id, error = %e, "could not remove the sandbox directory");
        }
        self.uids.lock().remove(&self.uid);
    }
}
