//! The host side of the guest protocol (`berth_guest::protocol`).

use std::path::PathBuf;
use std::time::Duration;

use berth_guest::protocol::{
    ExecSpec, ExitStatus, FrameKind, MAX_FRAME, Reply, Request, ServiceSpec, ServiceState, ShellSpec, TerminalSize,
    frame_header,
};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::SandboxError;

/// Talks to one sandbox's guest; cheap to clone.
#[derive(Clone, Debug)]
pub struct GuestClient {
    socket: PathBuf,
}

fn guest_error(message: impl Into<String>) -> SandboxError {
    SandboxError::Guest(message.into())
}

async fn read_reply<R: AsyncRead + Unpin>(stream: &mut BufReader<R>) -> Result<Reply, SandboxError> {
    let mut line = String::new();
    let n = (&mut *stream).take(1024 * 1024).read_line(&mut line).await?;
    if n == 0 {
        return Err(guest_error("the guest closed the connection"));
    }
    serde_json::from_str(&line).map_err(|e| guest_error(format!("bad reply from the guest: {e}")))
}

fn check(reply: Reply) -> Result<Reply, SandboxError> {
    if reply.ok {
        Ok(reply)
    } else {
        Err(guest_error(reply.error.unwrap_or_else(|| "the guest refused".into())))
    }
}

impl GuestClient {
    pub fn new(socket: PathBuf) -> Self {
        GuestClient { socket }
    }

    /// Sends `request`; returns the stream positioned after the guest's (successful) reply.
    async fn request(&self, request: &Request) -> Result<(BufReader<UnixStream>, Reply), SandboxError> {
        let mut stream = UnixStream::connect(&self.socket).await?;
        let mut line = serde_json::to_vec(request).map_err(|e| guest_error(e.to_string()))?;
        line.push(b'\n');
        stream.write_all(&line).await?;
        let mut stream = BufReader::new(stream);
        let reply = check(read_reply(&mut stream).await?)?;
        Ok((stream, reply))
    }

    pub async fn ping(&self) -> Result<(), SandboxError> {
        self.request(&Request::Ping).await.map(|_| ())
    }

    /// Waits until the guest answers, polling every millisecond, for at most `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), SandboxError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.ping().await {
                Ok(()) => return Ok(()),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    }

    /// A byte stream to `127.0.0.1:port` inside the sandbox.
    pub async fn connect(&self, port: u16) -> Result<UnixStream, SandboxError> {
        let (stream, _) = self.request(&Request::Connect { port }).await?;
        if !stream.buffer().is_empty() {
            return Err(guest_error("the guest sent data before the pipe opened"));
        }
        Ok(stream.into_inner())
    }

    /// Runs a command; its output arrives on the returned stream.
    pub async fn exec(&self, spec: ExecSpec) -> Result<ExecStream, SandboxError> {
        let (stream, _) = self.request(&Request::Exec(spec)).await?;
        Ok(ExecStream { stream, done: false })
    }

    /// Runs a command and collects its output, keeping at most `limit` bytes of each stream.
    pub async fn exec_collect(&self, spec: ExecSpec, limit: usize) -> Result<ExecOutput, SandboxError> {
        let mut stream = self.exec(spec).await?;
        let mut output = ExecOutput::default();
        while let Some(event) = stream.next().await? {
            match event {
                ExecEvent::Stdout(data) => append_capped(&mut output.stdout, &data, limit),
                ExecEvent::Stderr(data) => append_capped(&mut output.stderr, &data, limit),
                ExecEvent::Exit(status) => output.status = status,
            }
        }
        Ok(output)
    }

    /// Attaches to the interactive shell `spec.id`, starting it if it does not run; says
    /// whether it was running.
    pub async fn shell(&self, spec: ShellSpec) -> Result<(ShellStream, bool), SandboxError> {
        let (stream, reply) = self.request(&Request::Shell(spec)).await?;
        // The replay may follow the reply at once, already in the reader's buffer.
        let early = stream.buffer().to_vec();
        let (read, write) = stream.into_inner().into_split();
        Ok((
            ShellStream {
                reader: BufReader::new(std::io::Cursor::new(early).chain(read)),
                writer: write,
            },
            reply.reconnected.unwrap_or(false),
        ))
    }

    pub async fn start_service(&self, spec: ServiceSpec) -> Result<ServiceState, SandboxError> {
        let (_, reply) = self.request(&Request::StartService(spec)).await?;
        Ok(reply.service.unwrap_or_default())
    }

    pub async fn service_status(&self) -> Result<ServiceState, SandboxError> {
        let (_, reply) = self.request(&Request::ServiceStatus).await?;
        Ok(reply.service.unwrap_or_default())
    }

    pub async fn signal_service(&self, signal: i32) -> Result<(), SandboxError> {
        self.request(&Request::SignalService { signal }).await.map(|_| ())
    }

    pub async fn write_file(&self, path: &str, data: &[u8], mode: Option<u32>) -> Result<(), SandboxError> {
        let request = Request::WriteFile {
            path: path.into(),
            len: data.len() as u64,
            mode,
        };
        let (mut stream, _) = self.request(&request).await?;
        stream.get_mut().write_all(data).await?;
        check(read_reply(&mut stream).await?).map(|_| ())
    }

    pub async fn read_file(&self, path: &str, max_len: u64) -> Result<Vec<u8>, SandboxError> {
        let request = Request::ReadFile {
            path: path.into(),
            max_len,
        };
        let (mut stream, reply) = self.request(&request).await?;
        let len = reply.len.unwrap_or(0).min(max_len);
        let mut data = Vec::with_capacity(len as usize);
        (&mut stream).take(len).read_to_end(&mut data).await?;
        if data.len() as u64 != len {
            return Err(guest_error("the file ended early"));
        }
        Ok(data)
    }
}

fn append_capped(buffer: &mut Vec<u8>, data: &[u8], limit: usize) {
    let room = limit.saturating_sub(buffer.len());
    buffer.extend_from_slice(&data[..data.len().min(room)]);
}

#[derive(Clone, Debug, Default)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub status: ExitStatus,
}

#[derive(Debug)]
pub enum ExecEvent {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(ExitStatus),
}

/// The output of one exec, frame by frame.
pub struct ExecStream {
    stream: BufReader<UnixStream>,
    done: bool,
}

/// One guest → host frame.
async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> Result<(FrameKind, Vec<u8>), SandboxError> {
    let mut header = [0u8; 5];
    reader.read_exact(&mut header).await?;
    let kind = FrameKind::from_byte(header[0]).ok_or_else(|| guest_error("bad frame kind"))?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > MAX_FRAME {
        return Err(guest_error("frame too large"));
    }
    let mut data = vec![0u8; len];
    reader.read_exact(&mut data).await?;
    Ok((kind, data))
}

fn parse_exit(data: &[u8]) -> Result<ExitStatus, SandboxError> {
    serde_json::from_slice(data).map_err(|e| guest_error(format!("bad exit status: {e}")))
}

impl ExecStream {
    /// The next piece of output; `None` after the exit status.
    pub async fn next(&mut self) -> Result<Option<ExecEvent>, SandboxError> {
        if self.done {
            return Ok(None);
        }
        let (kind, data) = read_frame(&mut self.stream).await?;
        Ok(Some(match kind {
            FrameKind::Stdout => ExecEvent::Stdout(data),
            FrameKind::Stderr => ExecEvent::Stderr(data),
            FrameKind::Exit => {
                self.done = true;
                ExecEvent::Exit(parse_exit(&data)?)
            }
            _ => return Err(guest_error("unexpected frame in an exec's output")),
        }))
    }
}

/// What an attached shell sends.
#[derive(Debug)]
pub enum ShellEvent {
    Output(Vec<u8>),
    Exit(ExitStatus),
    /// Another attach took the shell over.
    Detached,
}

/// An attached shell: its terminal's output in, keystrokes, resizes and close out.
type ShellReader = BufReader<tokio::io::Chain<std::io::Cursor<Vec<u8>>, tokio::net::unix::OwnedReadHalf>>;

pub struct ShellStream {
    reader: ShellReader,
    writer: tokio::net::unix::OwnedWriteHalf,
}

/// The sending half of a [`ShellStream`].
pub struct ShellInput {
    writer: tokio::net::unix::OwnedWriteHalf,
}

/// The receiving half of a [`ShellStream`].
pub struct ShellOutput {
    reader: ShellReader,
}

impl ShellStream {
    pub fn split(self) -> (ShellInput, ShellOutput) {
        (ShellInput { writer: self.writer }, ShellOutput { reader: self.reader })
    }
}

impl ShellInput {
    async fn send(&mut self, kind: FrameKind, data: &[u8]) -> Result<(), SandboxError> {
        self.writer.write_all(&frame_header(kind, data.len())).await?;
        self.writer.write_all(data).await?;
        Ok(self.writer.flush().await?)
    }

    /// Keystrokes, at most [`MAX_FRAME`] bytes at a time.
    pub async fn stdin(&mut self, data: &[u8]) -> Result<(), SandboxError> {
        for piece in data.chunks(MAX_FRAME) {
            self.send(FrameKind::Stdin, piece).await?;
        }
        Ok(())
    }

    pub async fn resize(&mut self, size: TerminalSize) -> Result<(), SandboxError> {
        let json = serde_json::to_vec(&size).map_err(|e| guest_error(e.to_string()))?;
        self.send(FrameKind::Resize, &json).await
    }

    /// Ends the shell (a hang-up to its process group).
    pub async fn close(&mut self) -> Result<(), SandboxError> {
        self.send(FrameKind::Close, &[]).await
    }
}

impl ShellOutput {
    /// The next event; an error once the guest connection is gone.
    pub async fn next(&mut self) -> Result<ShellEvent, SandboxError> {
        let (kind, data) = read_frame(&mut self.reader).await?;
        match kind {
            FrameKind::Stdout => Ok(ShellEvent::Output(data)),
            FrameKind::Exit => Ok(ShellEvent::Exit(parse_exit(&data)?)),
            FrameKind::Detached => Ok(ShellEvent::Detached),
            _ => Err(guest_error("unexpected frame from a shell")),
        }
    }
}
