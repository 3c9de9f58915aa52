//! Interactive shells on a terminal (the guest side of `/ws/shells`, spec §3.6): each shell
//! runs on its own pseudo-terminal, keeps its last [`KEPT_OUTPUT`] bytes of output for a client
//! that re-attaches, and outlives the connection of the client that started it.

#![allow(unsafe_code)] // `pre_exec` to take the terminal, and the resize ioctl; each says why.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::protocol::{ExitStatus, FrameKind, MAX_FRAME, Reply, ShellSpec, TerminalSize};
use crate::server::write_frame;

/// Output kept for a client that re-attaches (the AgentCore contract's 256 KB).
pub const KEPT_OUTPUT: usize = 256 * 1024;
/// Events waiting for a slow client before the terminal's output is only kept.
const CLIENT_BACKLOG: usize = 256;

enum Event {
    Output(Vec<u8>),
    Exit(ExitStatus),
    Detached,
}

struct Shell {
    /// The terminal's master side: input is written here, its size set here.
    master: Mutex<std::fs::File>,
    pid: Option<u32>,
    kept: Mutex<VecDeque<u8>>,
    client: Mutex<Option<mpsc::Sender<Event>>>,
    exit: Mutex<Option<ExitStatus>>,
}

/// The shells of this sandbox, by id.
#[derive(Clone, Default)]
pub struct Shells {
    shells: Arc<Mutex<HashMap<String, Arc<Shell>>>>,
}

fn winsize(size: TerminalSize) -> nix::pty::Winsize {
    nix::pty::Winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

fn set_size(master: &std::fs::File, size: TerminalSize) {
    let size = winsize(size);
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which outlives the call; the
    // descriptor is a terminal master this process owns.
    unsafe {
        libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size as *const nix::pty::Winsize);
    }
}

/// Starts `spec.argv` on a new terminal as the leader of its own session.
fn spawn(spec: &ShellSpec) -> Result<(Arc<Shell>, std::fs::File, tokio::process::Child), String> {
    let size = winsize(TerminalSize {
        cols: spec.cols.max(1),
        rows: spec.rows.max(1),
    });
    let pty = nix::pty::openpty(Some(&size), None).map_err(|e| format!("no terminal for the shell: {e}"))?;
    let (program, args) = spec.argv.split_first().ok_or("argv is empty")?;
    let stdio = |fd: &OwnedFd| fd.try_clone().map(std::process::Stdio::from).map_err(|e| e.to_string());
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(&spec.env)
        .current_dir(spec.cwd.as_deref().unwrap_or(crate::protocol::WORKSPACE_MOUNT))
        .stdin(stdio(&pty.slave)?)
        .stdout(stdio(&pty.slave)?)
        .stderr(stdio(&pty.slave)?)
        .kill_on_drop(false);
    if !spec.env.contains_key("TERM") {
        command.env("TERM", "xterm-256color");
    }
    // SAFETY: between fork and exec the closure only makes two system calls (setsid, ioctl)
    // on the child's own descriptor 0; it allocates nothing and takes no locks.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            if libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().map_err(|e| format!("cannot run {program}: {e}"))?;
    drop(pty.slave);
    let master = std::fs::File::from(pty.master);
    let reader = master.try_clone().map_err(|e| e.to_string())?;
    let shell = Arc::new(Shell {
        master: Mutex::new(master),
        pid: child.id(),
        kept: Mutex::new(VecDeque::new()),
        client: Mutex::new(None),
        exit: Mutex::new(None),
    });
    Ok((shell, reader, child))
}

/// Copies the terminal's output to the kept buffer and the attached client, then reports the
/// exit once the output is drained.
fn watch(shell: Arc<Shell>, mut reader: std::fs::File, mut child: tokio::process::Child) {
    let output_shell = shell.clone();
    let output = tokio::task::spawn_blocking(move || {
        let mut buffer = vec![0u8; MAX_FRAME];
        // The read fails (EIO) once every process holding the terminal is gone.
        while let Ok(n) = reader.read(&mut buffer) {
            if n == 0 {
                break;
            }
            let data = buffer[..n].to_vec();
            {
                let mut kept = output_shell.kept.lock();
                kept.extend(&data);
                let excess = kept.len().saturating_sub(KEPT_OUTPUT);
                kept.drain(..excess);
            }
            if let Some(client) = output_shell.client.lock().as_ref() {
                // A client too slow to keep up misses live output; it is in the kept buffer.
                let _ = client.try_send(Event::Output(data));
            }
        }
    });
    tokio::spawn(async move {
        let status = match child.wait().await {
            Ok(status) => crate::server::exit_status(status),
            Err(_) => ExitStatus::default(),
        };
        crate::server::kill_group(shell.pid, libc::SIGKILL);
        let _ = tokio::time::timeout(Duration::from_secs(1), output).await;
        *shell.exit.lock() = Some(status.clone());
        if let Some(client) = shell.client.lock().take() {
            let _ = client.try_send(Event::Exit(status));
        }
    });
}

impl Shells {
    /// Serves one attach: the reply, the kept output on a re-attach, then frames both ways
    /// until the shell ends, another attach takes it, or the host hangs up.
    pub async fn attach(&self, mut stream: BufReader<UnixStream>, spec: ShellSpec) -> std::io::Result<()> {
        let existing = self.shells.lock().get(&spec.id).cloned();
        let (shell, reconnected) = match existing {
            Some(shell) if shell.exit.lock().is_none() => (shell, true),
            _ => match spawn(&spec) {
                Ok((shell, reader, child)) => {
                    self.shells.lock().insert(spec.id.clone(), shell.clone());
                    watch(shell.clone(), reader, child);
                    (shell, false)
                }
                Err(message) => return crate::server::reply(&mut stream, &Reply::error(message)).await,
            },
        };
        let (sender, mut events) = mpsc::channel(CLIENT_BACKLOG);
        let mine = sender.clone();
        // Take the shell over (the previous client is told), and snapshot what it kept, in one
        // step so no output falls between the replay and the live stream.
        let replay: Vec<u8> = {
            let mut client = shell.client.lock();
            if let Some(previous) = client.replace(sender) {
                let _ = previous.try_send(Event::Detached);
            }
            if reconnected {
                shell.kept.lock().iter().copied().collect()
            } else {
                Vec::new()
            }
        };
        let answer = Reply {
            reconnected: Some(reconnected),
            ..Reply::ok()
        };
        crate::server::reply(&mut stream, &answer).await?;
        for piece in replay.chunks(MAX_FRAME) {
            write_frame(&mut stream, FrameKind::Stdout, piece).await?;
        }
        let ended = shell.exit.lock().clone();
        if let Some(status) = ended {
            return write_exit(&mut stream, &status).await;
        }
        let (read_half, mut write_half) = stream.into_inner().into_split();
        let mut read_half = BufReader::new(read_half);
        loop {
            tokio::select! {
                frame = read_frame(&mut read_half) => match frame {
                    Ok((FrameKind::Stdin, data)) => {
                        let _ = shell.master.lock().write_all(&data);
                    }
                    Ok((FrameKind::Resize, data)) => {
                        if let Ok(size) = serde_json::from_slice::<TerminalSize>(&data) {
                            set_size(&shell.master.lock(), size);
                        }
                    }
                    Ok((FrameKind::Close, _)) => {
                        crate::server::kill_group(shell.pid, libc::SIGHUP);
                    }
                    Ok(_) => {}
                    // The host hung up: detach, and the shell waits for the next attach.
                    Err(_) => {
                        let mut client = shell.client.lock();
                        if client.as_ref().is_some_and(|c| c.same_channel(&mine)) {
                            *client = None;
                        }
                        return Ok(());
                    }
                },
                event = events.recv() => match event {
                    Some(Event::Output(data)) => write_frame(&mut write_half, FrameKind::Stdout, &data).await?,
                    Some(Event::Exit(status)) => return write_exit(&mut write_half, &status).await,
                    Some(Event::Detached) | None => return write_frame(&mut write_half, FrameKind::Detached, &[]).await,
                },
            }
        }
    }
}

async fn write_exit<S: tokio::io::AsyncWrite + Unpin>(stream: &mut S, status: &ExitStatus) -> std::io::Result<()> {
    write_frame(stream, FrameKind::Exit, &serde_json::to_vec(status).unwrap_or_default()).await
}

/// One host → guest frame.
async fn read_frame<R: tokio::io::AsyncRead + Unpin>(reader: &mut R) -> std::io::Result<(FrameKind, Vec<u8>)> {
    let mut header = [0u8; 5];
    reader.read_exact(&mut header).await?;
    let kind = FrameKind::from_byte(header[0]).ok_or_else(|| std::io::Error::other("bad frame kind"))?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other("frame too large"));
    }
    let mut data = vec![0u8; len];
    reader.read_exact(&mut data).await?;
    Ok((kind, data))
}
