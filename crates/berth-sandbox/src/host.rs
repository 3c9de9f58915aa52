//! What every tier does on the host around its sandbox: private directories, the egress proxy
//! and forwards, the cgroup, waiting for the guest, and tearing it all down.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use berth_guest::protocol::{Bridge, GUEST_SOCKET};
use parking_lot::Mutex;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStderr};
use tokio::task::JoinHandle;

use crate::cgroup::{Hierarchy, SandboxCgroup};
use crate::egress::{self, EgressStats};
use crate::{EGRESS_PROXY_PORT, Egress, GuestClient, SandboxError, SandboxSpec, Usage};

const EGRESS_SOCKET: &str = "egress.sock";

/// Where uid claims live: one locked file per uid in use, shared by every Berth process on the
/// host, so two servers (or a server and a test run) never hand out the same uid. A claim is an
/// advisory lock, released by the kernel when its process dies, so a crash leaks nothing.
const UID_CLAIMS: &str = "/run/berth-sandbox-uids";

/// Host uids handed to sandboxes, so no two live sandboxes share one.
#[derive(Clone, Debug)]
pub(crate) struct UidPool {
    base: u32,
    count: u32,
    claims: Arc<Mutex<std::collections::HashMap<u32, nix::fcntl::Flock<std::fs::File>>>>,
}

impl UidPool {
    pub(crate) fn new(base: u32, count: u32) -> Self {
        UidPool {
            base,
            count,
            claims: Arc::default(),
        }
    }

    /// A free uid when Berth runs as root; otherwise the only uid it may map, its own.
    pub(crate) fn allocate(&self) -> Result<u32, SandboxError> {
        let euid = nix::unistd::geteuid().as_raw();
        if euid != 0 {
            return Ok(euid);
        }
        std::fs::create_dir_all(UID_CLAIMS)?;
        let mut claims = self.claims.lock();
        for uid in self.base..self.base + self.count {
            if claims.contains_key(&uid) {
                continue;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(Path::new(UID_CLAIMS).join(uid.to_string()))?;
            if let Ok(lock) = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
                claims.insert(uid, lock);
                return Ok(uid);
            }
        }
        Err(SandboxError::Start("every sandbox uid is in use".into()))
    }

    fn release(&self, uid: u32) {
        // Dropping the lock releases the claim; the file stays for the next claimant.
        self.claims.lock().remove(&uid);
    }
}

pub(crate) fn new_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{:04x}{:04x}", nanos, std::process::id() & 0xffff, n & 0xffff)
}

/// Empties a tier's state directory (what a previous run left) and keeps it private.
pub(crate) fn prepare_state_dir(dir: &Path) -> std::io::Result<()> {
    if dir.exists() {
        for entry in std::fs::read_dir(dir)?.flatten() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

fn private_dir(path: &Path, uid: u32) -> std::io::Result<()> {
    std::fs::create_dir_all(path)?;
    std::os::unix::fs::chown(path, Some(uid), Some(uid))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

fn sanitize(label: &str) -> String {
    label
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(48)
        .collect()
}

/// The `Sandbox` methods every tier answers from its [`HostSide`] (a field named `host`).
macro_rules! host_backed {
    ($tier:expr) => {
        fn id(&self) -> &str {
            &self.host.id
        }

        fn tier(&self) -> Tier {
            $tier
        }

        fn guest(&self) -> &GuestClient {
            &self.host.guest
        }

        fn workspace(&self) -> PathBuf {
            self.host.workspace()
        }

        fn control_dir(&self) -> PathBuf {
            self.host.control_dir()
        }

        fn usage(&self) -> Usage {
            self.host.usage()
        }

        fn is_alive(&self) -> bool {
            self.host.is_alive()
        }
    };
}
pub(crate) use host_backed;

/// One sandbox's host side.
pub(crate) struct HostSide {
    pub(crate) id: String,
    pub(crate) dir: PathBuf,
    pub(crate) uid: u32,
    pub(crate) guest: GuestClient,
    /// The process whose life is the sandbox's (the launcher, or `runsc run`).
    pub(crate) launcher: Mutex<Option<Child>>,
    pub(crate) cgroup: Option<SandboxCgroup>,
    tasks: Vec<JoinHandle<()>>,
    egress_stats: Arc<EgressStats>,
    uids: UidPool,
    torn_down: std::sync::atomic::AtomicBool,
}

impl HostSide {
    pub(crate) fn new(state_dir: &Path, uids: &UidPool) -> Result<Self, SandboxError> {
        let id = new_id();
        let dir = state_dir.join(&id);
        Ok(HostSide {
            guest: GuestClient::new(dir.join("control").join(GUEST_SOCKET)),
            uid: uids.allocate()?,
            id,
            dir,
            launcher: Mutex::new(None),
            cgroup: None,
            tasks: Vec::new(),
            egress_stats: Arc::default(),
            uids: uids.clone(),
            torn_down: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub(crate) fn control_dir(&self) -> PathBuf {
        self.dir.join("control")
    }

    pub(crate) fn workspace(&self) -> PathBuf {
        self.dir.join("workspace")
    }

    /// Creates the directories, the proxy and forwards, and the cgroup; returns the bridges
    /// the guest must offer inside.
    pub(crate) fn prepare(&mut self, spec: &SandboxSpec, hierarchy: &Hierarchy) -> Result<Vec<Bridge>, SandboxError> {
        let control = self.control_dir();
        std::fs::create_dir_all(&self.dir)?;
        private_dir(&control, self.uid)?;
        private_dir(&self.workspace(), self.uid)?;
        // A writable mount is the sandbox's to fill (a build's output directory).
        for mount in spec.mounts.iter().filter(|m| m.writable) {
            std::os::unix::fs::chown(&mount.source, Some(self.uid), Some(self.uid))?;
        }
        let mut bridges = Vec::new();
        if spec.egress != Egress::Denied {
            let proxy = egress::serve_proxy(
                &control.join(EGRESS_SOCKET),
                spec.egress.clone(),
                self.egress_stats.clone(),
            )?;
            self.tasks.push(proxy);
            bridges.push(Bridge {
                port: EGRESS_PROXY_PORT,
                socket: EGRESS_SOCKET.into(),
            });
        }
        for forward in &spec.forwards {
            let socket = format!("forward-{}.sock", forward.guest_port);
            self.tasks
                .push(egress::serve_forward(&control.join(&socket), forward.target)?);
            bridges.push(Bridge {
                port: forward.guest_port,
                socket,
            });
        }
        // Without cgroups limits cannot be enforced (`berth doctor` says why); the sandbox
        // still isolates.
        if !matches!(hierarchy, Hierarchy::Unavailable(_)) {
            let name = format!("{}-{}", sanitize(&spec.label), self.id);
            self.cgroup = Some(SandboxCgroup::create(hierarchy, &name, &spec.limits)?);
        }
        Ok(bridges)
    }

    /// Waits for the guest to answer, or for the launcher to fail (with its stderr as reason).
    pub(crate) async fn wait_started(
        &mut self,
        stderr: Option<ChildStderr>,
        timeout: Duration,
    ) -> Result<(), SandboxError> {
        let ready = self.guest.wait_ready(timeout);
        let exited = wait_exit(&self.launcher);
        tokio::select! {
            ready = ready => {
                ready?;
                if let Some(stderr) = stderr {
                    self.tasks.push(tokio::spawn(log_stderr(self.id.clone(), stderr)));
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

    pub(crate) fn usage(&self) -> Usage {
        let mut usage = self.cgroup.as_ref().map(SandboxCgroup::usage).unwrap_or_default();
        usage.egress_denied = self.egress_stats.denied.load(Ordering::Relaxed);
        usage
    }

    pub(crate) fn is_alive(&self) -> bool {
        match self.launcher.lock().as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Waits up to `timeout` for the launcher to exit on its own.
    pub(crate) async fn wait_launcher_exit(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, wait_exit(&self.launcher)).await;
    }

    /// Kills the launcher and everything in the cgroup, stops the proxy, removes the files.
    pub(crate) async fn teardown(&self) {
        self.torn_down.store(true, Ordering::SeqCst);
        let launcher = self.launcher.lock().take();
        if let Some(mut launcher) = launcher {
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
        self.uids.release(self.uid);
    }
}

/// A sandbox dropped without `destroy` (a panic, a lost handle) still goes away: the launcher
/// is killed on drop (which ends the sandbox), and its cgroup and files are removed in the
/// background.
impl Drop for HostSide {
    fn drop(&mut self) {
        if self.torn_down.load(Ordering::SeqCst) {
            return;
        }
        for task in &self.tasks {
            task.abort();
        }
        self.uids.release(self.uid);
        let (cgroup, dir) = (self.cgroup.take(), self.dir.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Some(cgroup) = cgroup {
                    cgroup.remove().await;
                }
                let _ = tokio::fs::remove_dir_all(dir).await;
            });
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

async fn log_stderr(id: String, mut stderr: ChildStderr) {
    let mut buf = vec![0u8; 4096];
    while let Ok(n) = stderr.read(&mut buf).await {
        if n == 0 {
            return;
        }
        let text = String::from_utf8_lossy(&buf[..n]);
        tracing::warn!(sandbox = %id, "{}", text.trim_end());
    }
}
