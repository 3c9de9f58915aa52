//! The gVisor tier: the sandbox is an OCI container run by `runsc` (ptrace platform, no
//! network but its own loopback), so the agent's system calls meet gVisor's user-space kernel
//! instead of the host's. The guest runs inside as `berth-guest serve` and is reached over the
//! same Unix socket protocol (`--host-uds` lets the host connect to the socket the guest binds
//! in the shared control directory).

#![allow(unsafe_code)] // `pre_exec` to join the cgroup before runsc starts; see `spawn_runsc`.

use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use berth_guest::protocol::{Bridge, CONTROL_MOUNT, RootEntry, WORKSPACE_MOUNT, root_entries};
use serde_json::{Value, json};
use tokio::process::Command;

use crate::cgroup::Hierarchy;
use crate::host::{HostSide, UidPool, host_backed, prepare_state_dir};
use crate::{Backend, GuestClient, MountSpec, Sandbox, SandboxError, SandboxSpec, Tier, Usage};

/// What gVisor's sentry and gofer need on top of the agent's own limits.
const GVISOR_MEMORY_OVERHEAD: u64 = 192 * 1024 * 1024;
const GVISOR_HOST_THREADS: u64 = 1024;
/// Where the guest binary appears inside the container.
const GUEST_PATH: &str = "/.berth/guest";
/// Where the host's system directories appear in a sandbox that runs from an image's root.
const HOST_LIBS: &str = "/.berth/host";

#[derive(Clone, Debug)]
pub struct GvisorSettings {
    /// The guest command; its program is mounted into the container and `serve` appended.
    pub guest_command: Vec<OsString>,
    pub state_dir: PathBuf,
    pub runsc: PathBuf,
    /// `ptrace` works everywhere, nested virtualisation included; `kvm` needs bare metal.
    pub platform: String,
    pub start_timeout: Duration,
}

impl GvisorSettings {
    pub fn new(guest_command: Vec<OsString>, state_dir: PathBuf, runsc: PathBuf) -> Self {
        GvisorSettings {
            guest_command,
            state_dir,
            runsc,
            platform: "ptrace".into(),
            start_timeout: Duration::from_secs(20),
        }
    }
}

pub struct GvisorBackend {
    settings: GvisorSettings,
    hierarchy: Hierarchy,
    uids: UidPool,
}

impl GvisorBackend {
    pub fn new(settings: GvisorSettings) -> std::io::Result<Self> {
        prepare_state_dir(&settings.state_dir)?;
        std::fs::create_dir_all(settings.state_dir.join(".runsc"))?;
        Ok(GvisorBackend {
            settings,
            hierarchy: Hierarchy::detect(),
            uids: UidPool::new(200_000, 65_536),
        })
    }

    fn runsc(&self) -> Command {
        let mut command = Command::new(&self.settings.runsc);
        command
            .arg("--root")
            .arg(self.settings.state_dir.join(".runsc"))
            .arg(format!("--platform={}", self.settings.platform))
            .args(["--network=none", "--host-uds=all", "--ignore-cgroups"]);
        command
    }
}

fn bind(source: &Path, destination: &str, writable: bool) -> Value {
    json!({
        "destination": destination,
        "type": "bind",
        "source": source,
        "options": ["rbind", if writable { "rw" } else { "ro" }, "nosuid", "nodev"],
    })
}

/// The OCI runtime spec of one sandbox.
fn oci_config(
    host: &HostSide,
    spec: &SandboxSpec,
    agent_pids: u64,
    guest: &Path,
    guest_args: &[String],
    bridges: &[Bridge],
) -> Value {
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
        json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "nodev", "mode=1777", format!("size={}", spec.limits.tmp_bytes)]}),
    ];
    for entry in root_entries(spec.root.as_deref()) {
        if let RootEntry::Bind { name, source } = entry {
            mounts.push(bind(&source, &format!("/{name}"), false));
        }
    }
    for MountSpec {
        source,
        target,
        writable,
    } in &spec.mounts
    {
        mounts.push(bind(source, &target.to_string_lossy(), *writable));
    }
    mounts.push(bind(&host.control_dir(), CONTROL_MOUNT, true));
    mounts.push(bind(&host.workspace(), WORKSPACE_MOUNT, true));
    mounts.push(bind(guest, GUEST_PATH, false));
    let mut args = Vec::new();
    if spec.root.is_some() {
        // The guest is linked against the host's libc, which an image's root does not have:
        // the host's system directories go under HOST_LIBS, and the guest starts through the
        // host's dynamic loader with that library path. What it then starts (the agent) runs
        // on the image's own loader and libraries.
        for entry in root_entries(None) {
            if let RootEntry::Bind { name, source } = entry {
                mounts.push(bind(&source, &format!("{HOST_LIBS}/{name}"), false));
            }
        }
        // The loader's path is often a link to an absolute path (`/lib64/ld-linux-x86-64.so.2`
        // → `/lib/x86_64-linux-gnu/…`), which would resolve in the image: use its real path.
        if let Some(loader) = elf_interpreter(guest).and_then(|l| std::fs::canonicalize(l).ok()) {
            args.push(format!("{HOST_LIBS}{}", loader.display()));
            let triple = format!("{}-linux-gnu", std::env::consts::ARCH);
            let library_path: Vec<String> = [
                format!("lib/{triple}"),
                format!("usr/lib/{triple}"),
                "lib64".into(),
                "usr/lib64".into(),
                "lib".into(),
                "usr/lib".into(),
            ]
            .iter()
            .map(|dir| format!("{HOST_LIBS}/{dir}"))
            .collect();
            args.push("--library-path".into());
            args.push(library_path.join(":"));
        }
    }
    args.push(GUEST_PATH.to_string());
    args.extend(guest_args.iter().cloned());
    args.push("serve".into());
    args.push(serde_json::to_string(bridges).unwrap_or_else(|_| "[]".into()));
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            // The sandbox's own host uid, as in the namespace tier: gVisor's gofer creates files
            // as the calling user, so the host sees each sandbox's files under its uid.
            "user": {"uid": host.uid, "gid": host.uid},
            "args": args,
            "env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
            "cwd": WORKSPACE_MOUNT,
            "noNewPrivileges": true,
            "rlimits": [
                {"type": "RLIMIT_NOFILE", "hard": 65536, "soft": 65536},
                {"type": "RLIMIT_NPROC", "hard": agent_pids, "soft": agent_pids},
            ],
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "berth",
        "mounts": mounts,
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
        },
    })
}

/// The program interpreter (dynamic loader) an ELF executable names, if it names one.
fn elf_interpreter(path: &Path) -> Option<PathBuf> {
    let data = std::fs::read(path).ok()?;
    let u16_at = |at: usize| Some(u16::from_le_bytes(data.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(data.get(at..at + 8)?.try_into().ok()?));
    // A little-endian 64-bit ELF: the hosts Berth runs on.
    if data.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let (table, entry_size, entries) = (u64_at(0x20)? as usize, u16_at(0x36)? as usize, u16_at(0x38)? as usize);
    (0..entries).find_map(|i| {
        let header = table + i * entry_size;
        const PT_INTERP: u32 = 3;
        if u32_at(header)? != PT_INTERP {
            return None;
        }
        let (offset, size) = (u64_at(header + 8)? as usize, u64_at(header + 32)? as usize);
        let name = data.get(offset..offset + size)?;
        let name = name.strip_suffix(b"\0").unwrap_or(name);
        Some(PathBuf::from(std::str::from_utf8(name).ok()?))
    })
}

/// The container's root: empty mount points, and the merged-/usr symlinks of the host (or of
/// the image the sandbox runs from, with the host's under [`HOST_LIBS`] for the guest).
fn build_rootfs(rootfs: &Path, spec: &SandboxSpec) -> std::io::Result<()> {
    for dir in ["proc", "dev", "tmp", "run/berth", "workspace", ".berth"] {
        std::fs::create_dir_all(rootfs.join(dir))?;
    }
    std::fs::write(rootfs.join(".berth/guest"), b"")?;
    for entry in root_entries(spec.root.as_deref()) {
        match entry {
            RootEntry::Symlink { name, target } => std::os::unix::fs::symlink(target, rootfs.join(name))?,
            RootEntry::Bind { name, source } if source.is_dir() => std::fs::create_dir_all(rootfs.join(name))?,
            RootEntry::Bind { name, .. } => std::fs::write(rootfs.join(name), b"")?,
        }
    }
    for mount in &spec.mounts {
        let relative = mount.target.strip_prefix("/").unwrap_or(&mount.target);
        std::fs::create_dir_all(rootfs.join(relative))?;
    }
    if spec.root.is_some() {
        let host_libs = rootfs.join(HOST_LIBS.trim_start_matches('/'));
        std::fs::create_dir_all(&host_libs)?;
        for entry in root_entries(None) {
            match entry {
                RootEntry::Symlink { name, target } => std::os::unix::fs::symlink(target, host_libs.join(name))?,
                RootEntry::Bind { name, .. } => std::fs::create_dir_all(host_libs.join(name))?,
            }
        }
    }
    Ok(())
}

#[async_trait]
impl Backend for GvisorBackend {
    fn tier(&self) -> Tier {
        Tier::Gvisor
    }

    async fn create(&self, spec: SandboxSpec) -> Result<Arc<dyn Sandbox>, SandboxError> {
        let sandbox = GvisorSandbox {
            host: HostSide::new(&self.settings.state_dir, &self.uids)?,
            runsc: self.runsc_base(),
        };
        let mut sandbox = sandbox;
        match self.start(&mut sandbox.host, spec).await {
            Ok(()) => Ok(Arc::new(sandbox)),
            Err(e) => {
                sandbox.destroy().await;
                Err(e)
            }
        }
    }
}

impl GvisorBackend {
    fn runsc_base(&self) -> Vec<OsString> {
        let command = self.runsc();
        let std = command.as_std();
        std::iter::once(std.get_program().to_os_string())
            .chain(std.get_args().map(|a| a.to_os_string()))
            .collect()
    }

    async fn start(&self, host: &mut HostSide, mut spec: SandboxSpec) -> Result<(), SandboxError> {
        // The cgroup holds gVisor's own kernel and gofer too, not just the agent.
        spec.limits.memory_bytes += GVISOR_MEMORY_OVERHEAD;
        // Inside gVisor the agent's processes are tasks of the sentry, not host processes: the
        // host pids limit bounds the sentry's threads, and RLIMIT_NPROC (set in the OCI
        // process) bounds the agent's processes.
        let agent_pids = spec.limits.pids;
        spec.limits.pids = agent_pids.max(GVISOR_HOST_THREADS);
        let bridges = host.prepare(&spec, &self.hierarchy)?;
        let (guest, guest_args) = self
            .settings
            .guest_command
            .split_first()
            .ok_or_else(|| SandboxError::Start("no guest command configured".into()))?;
        let guest_args: Vec<String> = guest_args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        // runsc resolves a relative bind source against the bundle, not our working directory.
        let guest = std::fs::canonicalize(guest)
            .map_err(|e| SandboxError::Start(format!("the guest binary {}: {e}", guest.to_string_lossy())))?;
        let bundle = host.dir.join("bundle");
        build_rootfs(&bundle.join("rootfs"), &spec)?;
        let config = oci_config(host, &spec, agent_pids, &guest, &guest_args, &bridges);
        std::fs::write(
            bundle.join("config.json"),
            serde_json::to_vec_pretty(&config).unwrap_or_default(),
        )?;

        let mut command = self.runsc();
        command
            .arg("run")
            .arg("--bundle")
            .arg(&bundle)
            .arg(&host.id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // runsc forks its sandbox and gofer processes at once; they must start inside the
        // cgroup, so the child joins it between fork and exec. The files are opened here:
        // only an async-signal-safe write(2) runs in the child.
        let procs: Vec<std::fs::File> = match &host.cgroup {
            Some(cgroup) => cgroup
                .procs_files()
                .iter()
                .map(|path| std::fs::OpenOptions::new().write(true).open(path))
                .collect::<std::io::Result<_>>()?,
            None => vec![],
        };
        let fds: Vec<i32> = procs.iter().map(|f| f.as_raw_fd()).collect();
        // SAFETY: the closure only calls write(2) on descriptors opened above (kept alive by
        // `procs` until after spawn) with a static buffer; it allocates nothing and takes no
        // locks, so it is safe between fork and exec.
        unsafe {
            command.pre_exec(move || {
                for fd in &fds {
                    if libc::write(*fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .map_err(|e| SandboxError::Start(format!("cannot run {}: {e}", self.settings.runsc.display())))?;
        drop(procs);
        let stderr = child.stderr.take();
        *host.launcher.lock() = Some(child);
        host.wait_started(stderr, self.settings.start_timeout).await
    }
}

pub struct GvisorSandbox {
    host: HostSide,
    runsc: Vec<OsString>,
}

impl GvisorSandbox {
    async fn runsc(&self, args: &[&str]) {
        if let Some((program, base)) = self.runsc.split_first() {
            let _ = Command::new(program)
                .args(base)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await;
        }
    }
}

#[async_trait]
impl Sandbox for GvisorSandbox {
    host_backed!(Tier::Gvisor);

    async fn destroy(&self) {
        // Kill the container's processes and let `runsc run` exit by itself: it reaps its
        // sandbox and gofer, so the cgroup empties at once. Killed first instead, they would be
        // orphans whose zombies keep the cgroup busy; `runsc delete` alone waits 5 s for a gofer
        // it cannot reap. Teardown then kills whatever is left, and delete clears runsc's records.
        self.runsc(&["kill", "--all", &self.host.id, "KILL"]).await;
        self.host.wait_launcher_exit(Duration::from_secs(3)).await;
        self.host.teardown().await;
        self.runsc(&["delete", "--force", &self.host.id]).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loader_of_a_dynamic_executable_is_found() {
        let exe = std::env::current_exe().expect("the test binary");
        let loader = elf_interpreter(&exe).expect("test binaries are dynamically linked");
        assert!(loader.is_absolute() && loader.exists(), "{}", loader.display());
        assert_eq!(elf_interpreter(Path::new("/etc/hostname")), None);
    }
}
