//! What the host and `berth-guest` say to each other.
//!
//! The host connects to the guest's Unix socket once per request and writes one JSON
//! [`Request`] line. The guest answers with one JSON [`Reply`] line; what follows depends on the
//! request: nothing, a byte pipe to a port inside the sandbox (`connect`), a file's bytes, or
//! exec output [`Frame`]s. One connection per request keeps the protocol free of multiplexing:
//! the kernel does that.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The guest's socket, in the control directory.
pub const GUEST_SOCKET: &str = "guest.sock";
/// Where the control directory appears inside the sandbox.
pub const CONTROL_MOUNT: &str = "/run/berth";
/// Where the private writable workspace appears inside the sandbox.
pub const WORKSPACE_MOUNT: &str = "/workspace";
/// The service's log, in the control directory (rotated once to `service.log.1`).
pub const SERVICE_LOG: &str = "service.log";

/// How the host asks the launcher to build a sandbox (written to its stdin as JSON).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LaunchConfig {
    /// A host directory shared with the guest at [`CONTROL_MOUNT`]: sockets and logs.
    pub control_dir: PathBuf,
    /// The session's private writable directory, mounted at [`WORKSPACE_MOUNT`].
    pub workspace_dir: PathBuf,
    /// Host directories to mount inside, read-only unless `writable`.
    pub mounts: Vec<MountSpec>,
    /// The host user and group that root inside the sandbox is.
    pub uid: u32,
    pub gid: u32,
    pub hostname: String,
    /// Size of the `/tmp` tmpfs.
    pub tmp_bytes: u64,
    /// TCP ports on the sandbox's loopback that lead to host Unix sockets.
    pub bridges: Vec<Bridge>,
    /// A root filesystem (a container image's) to run from instead of the host's system
    /// directories; read-only.
    #[serde(default)]
    pub root: Option<PathBuf>,
}

/// The host's directories every sandbox sees, read-only, when it has no root of its own.
pub const SYSTEM_DIRS: [&str; 8] = ["usr", "etc", "bin", "sbin", "lib", "lib32", "lib64", "libx32"];
/// Top-level names of an image's root that the sandbox provides itself.
const SANDBOX_OWNED: [&str; 6] = ["proc", "dev", "tmp", "run", "workspace", ".berth"];

/// One top-level entry of a sandbox's root, outside the sandbox's own mounts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootEntry {
    /// A directory or file bound read-only from `source`.
    Bind { name: String, source: PathBuf },
    /// A symbolic link (merged-/usr systems' `/bin -> usr/bin`), recreated as it is.
    Symlink { name: String, target: PathBuf },
}

/// What goes at the top of a sandbox's root: the host's system directories (and `/opt` when it
/// is a link; as a directory it would hide the runtimes' `/opt/venv` mount point), or, with an
/// image root, that root's top-level directories, files and links. `image_root` may be a
/// `/proc/self/fd/N` path to it.
pub fn root_entries(image_root: Option<&std::path::Path>) -> Vec<RootEntry> {
    let classify = |name: String, path: PathBuf| -> Option<RootEntry> {
        match std::fs::read_link(&path) {
            Ok(target) => Some(RootEntry::Symlink { name, target }),
            Err(_) if path.is_dir() || path.is_file() => Some(RootEntry::Bind { name, source: path }),
            Err(_) => None,
        }
    };
    match image_root {
        None => {
            let mut entries: Vec<RootEntry> = SYSTEM_DIRS
                .iter()
                .filter_map(|dir| classify(dir.to_string(), std::path::Path::new("/").join(dir)))
                .collect();
            if let Ok(target) = std::fs::read_link("/opt") {
                entries.push(RootEntry::Symlink {
                    name: "opt".into(),
                    target,
                });
            }
            entries
        }
        Some(root) => {
            let mut names: Vec<String> = std::fs::read_dir(root)
                .map(|entries| {
                    entries
                        .flatten()
                        .filter_map(|e| e.file_name().into_string().ok())
                        .filter(|name| !SANDBOX_OWNED.contains(&name.as_str()))
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            names
                .into_iter()
                .filter_map(|name| {
                    let path = root.join(&name);
                    classify(name, path)
                })
                .collect()
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MountSpec {
    pub source: PathBuf,
    pub target: PathBuf,
    pub writable: bool,
}

/// `127.0.0.1:port` inside the sandbox, forwarded to `socket` in the control directory.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Bridge {
    pub port: u16,
    pub socket: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Answers at once; the host's readiness probe.
    Ping,
    /// After the reply, the connection is a byte pipe to `127.0.0.1:port` inside.
    Connect { port: u16 },
    /// Runs a command to completion; after the reply, output [`Frame`]s follow.
    Exec(ExecSpec),
    /// Starts the sandbox's long-running service (the agent); its output goes to the log.
    StartService(ServiceSpec),
    /// Whether the service runs, and how it ended.
    ServiceStatus,
    /// Sends a signal to the service's process group.
    SignalService { signal: i32 },
    /// After the reply, the host sends exactly `len` bytes, then the guest replies again.
    WriteFile { path: String, len: u64, mode: Option<u32> },
    /// The reply carries `len`; that many bytes follow. Larger files are refused.
    ReadFile { path: String, max_len: u64 },
    /// Attaches to the interactive shell `id` on a terminal, starting it if it is not running
    /// (the reply says whether it was). Then the host sends `Stdin`/`Resize`/`Close` frames,
    /// and the guest sends `Stdout` (the terminal's output; on a re-attach first what it kept),
    /// then `Exit` when the shell ends, or `Detached` when another attach took it over. A host
    /// that hangs up leaves the shell running for the next attach.
    Shell(ShellSpec),
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ShellSpec {
    pub id: String,
    pub argv: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub cwd: Option<String>,
    pub cols: u16,
    pub rows: u16,
}

/// The terminal size of a `Resize` frame (JSON).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TerminalSize {
    pub cols: u16,
    pub rows: u16,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ExecSpec {
    pub argv: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub cwd: Option<String>,
    /// Kill the command (and its process group) after this long.
    pub timeout_ms: Option<u64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub argv: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub cwd: Option<String>,
    /// The log rotates when it reaches this size, so at most twice this stays on disk.
    pub log_limit_bytes: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExitStatus {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    #[serde(default)]
    pub timed_out: bool,
}

impl ExitStatus {
    pub fn describe(&self) -> String {
        match (self.code, self.signal) {
            _ if self.timed_out => "timed out and was killed".into(),
            (Some(code), _) => format!("exited with code {code}"),
            (None, Some(signal)) => format!("was killed by signal {signal}"),
            (None, None) => "ended".into(),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceState {
    pub started: bool,
    pub pid: Option<u32>,
    /// Set once the service has ended.
    pub exit: Option<ExitStatus>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub len: Option<u64>,
    /// For `Shell`: whether an already running shell was attached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnected: Option<bool>,
}

impl Reply {
    pub fn ok() -> Self {
        Reply {
            ok: true,
            ..Reply::default()
        }
    }

    pub fn error(message: impl Into<String>) -> Self {
        Reply {
            ok: false,
            error: Some(message.into()),
            ..Reply::default()
        }
    }
}

/// Exec output: a 1-byte kind, a 4-byte big-endian length, then the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    Stdout = 1,
    Stderr = 2,
    /// The last frame; its data is an [`ExitStatus`] as JSON.
    Exit = 3,
    /// Host → guest, shells: bytes for the terminal.
    Stdin = 4,
    /// Host → guest, shells: a [`TerminalSize`] as JSON.
    Resize = 5,
    /// Host → guest, shells: end the shell.
    Close = 6,
    /// Guest → host, shells: another attach took the shell over.
    Detached = 7,
}

impl FrameKind {
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(FrameKind::Stdout),
            2 => Some(FrameKind::Stderr),
            3 => Some(FrameKind::Exit),
            4 => Some(FrameKind::Stdin),
            5 => Some(FrameKind::Resize),
            6 => Some(FrameKind::Close),
            7 => Some(FrameKind::Detached),
            _ => None,
        }
    }
}

/// The largest frame either side writes or accepts.
pub const MAX_FRAME: usize = 64 * 1024;

pub fn frame_header(kind: FrameKind, len: usize) -> [u8; 5] {
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    [kind as u8, len[0], len[1], len[2], len[3]]
}
