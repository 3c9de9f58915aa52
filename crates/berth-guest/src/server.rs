//! The guest server: answers the host's requests inside the sandbox (see `protocol`).

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::process::{Child, Command};

use crate::protocol::{
    Bridge, CONTROL_MOUNT, ExecSpec, ExitStatus, FrameKind, MAX_FRAME, Reply, Request, SERVICE_LOG, ServiceSpec,
    ServiceState, frame_header,
};

const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin";
/// A request line longer than this is refused.
const MAX_REQUEST_LINE: u64 = 1024 * 1024;

#[derive(Default)]
struct Service {
    state: ServiceState,
}

type Shared = Arc<Mutex<Service>>;

/// Runs the server until the host closes the sandbox; returns the process exit code.
pub fn run(listener: std::os::unix::net::UnixListener, bridges: Vec<Bridge>) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("berth-guest: cannot start the runtime: {e}");
            return 1;
        }
    };
    runtime.block_on(async move {
        if let Err(e) = listener.set_nonblocking(true) {
            eprintln!("berth-guest: {e}");
            return 1;
        }
        let listener = match UnixListener::from_std(listener) {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("berth-guest: {e}");
                return 1;
            }
        };
        for bridge in bridges {
            tokio::spawn(run_bridge(bridge));
        }
        let service: Shared = Arc::default();
        let shells = crate::shell::Shells::default();
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(handle(stream, service.clone(), shells.clone()));
                }
                Err(e) => {
                    eprintln!("berth-guest: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    })
}

/// Forwards `127.0.0.1:port` inside the sandbox to a host socket in the control directory.
async fn run_bridge(bridge: Bridge) {
    let listener = match TcpListener::bind(("127.0.0.1", bridge.port)).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("berth-guest: bridge port {}: {e}", bridge.port);
            return;
        }
    };
    let socket = Path::new(CONTROL_MOUNT).join(&bridge.socket);
    loop {
        let Ok((mut inside, _)) = listener.accept().await else {
            continue;
        };
        let socket = socket.clone();
        tokio::spawn(async move {
            if let Ok(host) = UnixStream::connect(&socket).await {
                let _ = relay(&mut inside, host).await;
            }
        });
    }
}

async fn handle(stream: UnixStream, service: Shared, shells: crate::shell::Shells) {
    let mut stream = BufReader::new(stream);
    let mut line = String::new();
    let read = (&mut stream).take(MAX_REQUEST_LINE).read_line(&mut line).await;
    if read.is_err() || !line.ends_with('\n') {
        return;
    }
    let request: Request = match serde_json::from_str(&line) {
        Ok(request) => request,
        Err(e) => {
            let _ = reply(&mut stream, &Reply::error(format!("bad request: {e}"))).await;
            return;
        }
    };
    let _ = match request {
        Request::Ping => reply(&mut stream, &Reply::ok()).await,
        Request::Connect { port } => connect(stream, port).await,
        Request::Exec(spec) => exec(stream, spec).await,
        Request::StartService(spec) => start_service(&mut stream, spec, service).await,
        Request::ServiceStatus => {
            let state = lock(&service).state.clone();
            reply(
                &mut stream,
                &Reply {
                    service: Some(state),
                    ..Reply::ok()
                },
            )
            .await
        }
        Request::SignalService { signal } => signal_service(&mut stream, signal, &service).await,
        Request::WriteFile { path, len, mode } => write_file(&mut stream, &path, len, mode).await,
        Request::ReadFile { path, max_len } => read_file(&mut stream, &path, max_len).await,
        Request::Shell(spec) => shells.attach(stream, spec).await,
    };
}

fn lock(service: &Shared) -> parking_lot::MutexGuard<'_, Service> {
    service.lock()
}

pub(crate) async fn reply<S: AsyncWrite + Unpin>(stream: &mut S, reply: &Reply) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
    line.push(b'\n');
    stream.write_all(&line).await?;
    stream.flush().await
}

async fn connect(mut stream: BufReader<UnixStream>, port: u16) -> std::io::Result<()> {
    match TcpStream::connect(("127.0.0.1", port)).await {
        Ok(mut target) => {
            target.set_nodelay(true)?;
            reply(&mut stream, &Reply::ok()).await?;
            // Bytes the host sent right after its request line are already buffered.
            let buffered = stream.buffer().to_vec();
            target.write_all(&buffered).await?;
            let mut stream = stream.into_inner();
            tokio::io::copy_bidirectional(&mut stream, &mut target)
                .await
                .map(|_| ())
        }
        Err(e) => {
            reply(
                &mut stream,
                &Reply::error(format!("nothing answers on port {port}: {e}")),
            )
            .await
        }
    }
}

/// Copies both ways between a client and the server it reached, and closes both when the
/// server has finished answering. A client's end of input is passed on as a half-close; the
/// server's is not waited on as one, because a half-close does not cross every boundary (gVisor's
/// host sockets drop it), while closing the connection does.
async fn relay<C, S>(client: &mut C, mut server: S) -> std::io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut server_read, mut server_write) = tokio::io::split(&mut server);
    let requests = async {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        let _ = server_write.shutdown().await;
        std::future::pending::<()>().await
    };
    let answers = async {
        tokio::io::copy(&mut server_read, &mut client_write).await?;
        client_write.shutdown().await
    };
    tokio::select! {
        answered = answers => answered,
        () = requests => Ok(()),
    }
}

/// Starts `argv` in its own process group with a clean environment, stdin closed and output
/// piped; the error is the message for the host.
fn spawn(
    argv: &[String],
    env: &std::collections::BTreeMap<String, String>,
    cwd: Option<&str>,
) -> Result<Child, String> {
    let (program, args) = argv.split_first().ok_or("argv is empty")?;
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(env)
        .process_group(0)
        .kill_on_drop(true)
        .current_dir(cwd.unwrap_or(crate::protocol::WORKSPACE_MOUNT))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if !env.contains_key("PATH") {
        command.env("PATH", DEFAULT_PATH);
    }
    command.spawn().map_err(|e| format!("cannot run {program}: {e}"))
}

pub(crate) fn exit_status(status: std::process::ExitStatus) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    ExitStatus {
        code: status.code(),
        signal: status.signal(),
        timed_out: false,
    }
}

pub(crate) fn kill_group(pid: Option<u32>, signal: i32) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        let signal = nix::sys::signal::Signal::try_from(signal).unwrap_or(nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), signal);
    }
}

async fn exec(mut stream: BufReader<UnixStream>, spec: ExecSpec) -> std::io::Result<()> {
    let mut child = match spawn(&spec.argv, &spec.env, spec.cwd.as_deref()) {
        Ok(child) => child,
        Err(message) => return reply(&mut stream, &Reply::error(message)).await,
    };
    reply(&mut stream, &Reply::ok()).await?;
    let pid = child.id();
    let result = stream_output(&mut stream, &mut child, spec.timeout_ms).await;
    // Whatever happened, nothing the command started outlives it.
    kill_group(pid, libc::SIGKILL);
    let status = result?;
    let status = serde_json::to_vec(&status).unwrap_or_default();
    stream.write_all(&frame_header(FrameKind::Exit, status.len())).await?;
    stream.write_all(&status).await?;
    stream.flush().await
}

async fn stream_output(
    stream: &mut BufReader<UnixStream>,
    child: &mut Child,
    timeout_ms: Option<u64>,
) -> std::io::Result<ExitStatus> {
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(std::io::Error::other("no output pipes"));
    };
    let deadline = timeout_ms.map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms));
    let sleep = async move {
        match deadline {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(sleep);
    let (mut out_buf, mut err_buf) = (vec![0u8; MAX_FRAME], vec![0u8; MAX_FRAME]);
    let (mut out_open, mut err_open) = (true, true);
    while out_open || err_open {
        tokio::select! {
            read = stdout.read(&mut out_buf), if out_open => {
                let n = read?;
                if n == 0 { out_open = false } else { write_frame(stream, FrameKind::Stdout, &out_buf[..n]).await? }
            }
            read = stderr.read(&mut err_buf), if err_open => {
                let n = read?;
                if n == 0 { err_open = false } else { write_frame(stream, FrameKind::Stderr, &err_buf[..n]).await? }
            }
            () = &mut sleep => {
                kill_group(child.id(), libc::SIGKILL);
                let status = child.wait().await?;
                return Ok(ExitStatus { timed_out: true, ..exit_status(status) });
            }
        }
    }
    tokio::select! {
        status = child.wait() => Ok(exit_status(status?)),
        () = &mut sleep => {
            kill_group(child.id(), libc::SIGKILL);
            let status = child.wait().await?;
            Ok(ExitStatus { timed_out: true, ..exit_status(status) })
        }
    }
}

pub(crate) async fn write_frame<S: AsyncWrite + Unpin>(
    stream: &mut S,
    kind: FrameKind,
    data: &[u8],
) -> std::io::Result<()> {
    stream.write_all(&frame_header(kind, data.len())).await?;
    stream.write_all(data).await?;
    stream.flush().await
}

async fn start_service(stream: &mut BufReader<UnixStream>, spec: ServiceSpec, service: Shared) -> std::io::Result<()> {
    // A service that ended may be started again (a Code Interpreter kernel is restarted so).
    let running = {
        let state = &lock(&service).state;
        state.started && state.exit.is_none()
    };
    if running {
        return reply(stream, &Reply::error("the service is already running")).await;
    }
    let mut child = match spawn(&spec.argv, &spec.env, spec.cwd.as_deref()) {
        Ok(child) => child,
        Err(message) => return reply(stream, &Reply::error(message)).await,
    };
    let log = Arc::new(tokio::sync::Mutex::new(RotatingLog::new(spec.log_limit_bytes)));
    let mut copies = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        copies.push(tokio::spawn(copy_to_log(stdout, log.clone())));
    }
    if let Some(stderr) = child.stderr.take() {
        copies.push(tokio::spawn(copy_to_log(stderr, log)));
    }
    let pid = child.id();
    lock(&service).state = ServiceState {
        started: true,
        pid,
        exit: None,
    };
    tokio::spawn(async move {
        let exit = match child.wait().await {
            Ok(status) => exit_status(status),
            Err(_) => ExitStatus::default(),
        };
        kill_group(pid, libc::SIGKILL);
        // The exit is reported once the output is in the log, so whoever sees the exit reads
        // the last words (a process outside the group holding the pipe gets a second).
        let _ = tokio::time::timeout(Duration::from_secs(1), wait_all(copies)).await;
        lock(&service).state.exit = Some(exit);
    });
    reply(
        stream,
        &Reply {
            service: Some(ServiceState {
                started: true,
                pid,
                exit: None,
            }),
            ..Reply::ok()
        },
    )
    .await
}

async fn wait_all(handles: Vec<tokio::task::JoinHandle<()>>) {
    for handle in handles {
        let _ = handle.await;
    }
}

async fn signal_service(stream: &mut BufReader<UnixStream>, signal: i32, service: &Shared) -> std::io::Result<()> {
    let state = lock(service).state.clone();
    if state.exit.is_some() || !state.started {
        return reply(stream, &Reply::error("the service is not running")).await;
    }
    kill_group(state.pid, signal);
    reply(stream, &Reply::ok()).await
}

/// The service's output, kept within twice `limit` bytes however much it writes: when the log
/// reaches the limit it becomes `service.log.1` (replacing the previous one).
struct RotatingLog {
    limit: u64,
    written: u64,
    file: Option<tokio::fs::File>,
}

impl RotatingLog {
    fn new(limit: u64) -> Self {
        RotatingLog {
            limit: limit.max(4096),
            written: 0,
            file: None,
        }
    }

    async fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        let path = Path::new(CONTROL_MOUNT).join(SERVICE_LOG);
        if self.written + data.len() as u64 > self.limit && self.written > 0 {
            self.file = None;
            tokio::fs::rename(&path, path.with_extension("log.1")).await?;
            self.written = 0;
        }
        if self.file.is_none() {
            let file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .await?;
            self.file = Some(file);
        }
        if let Some(file) = &mut self.file {
            file.write_all(data).await?;
            self.written += data.len() as u64;
        }
        Ok(())
    }
}

async fn copy_to_log<R: AsyncRead + Unpin>(mut pipe: R, log: Arc<tokio::sync::Mutex<RotatingLog>>) {
    let mut buf = vec![0u8; MAX_FRAME];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                // A full disk must not stop the service: its output is dropped instead.
                let _ = log.lock().await.write(&buf[..n]).await;
            }
        }
    }
}

async fn write_file(
    stream: &mut BufReader<UnixStream>,
    path: &str,
    len: u64,
    mode: Option<u32>,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let path = Path::new(path);
    if let Some(parent) = path.parent()
        && let Err(e) = tokio::fs::create_dir_all(parent).await
    {
        return reply(
            stream,
            &Reply::error(format!("cannot create {}: {e}", parent.display())),
        )
        .await;
    }
    let mut file = match tokio::fs::File::create(path).await {
        Ok(file) => file,
        Err(e) => return reply(stream, &Reply::error(format!("cannot write {}: {e}", path.display()))).await,
    };
    reply(stream, &Reply::ok()).await?;
    let copied = tokio::io::copy(&mut (&mut *stream).take(len), &mut file).await?;
    if copied != len {
        return reply(stream, &Reply::error("the host sent fewer bytes than announced")).await;
    }
    file.flush().await?;
    if let Some(mode) = mode {
        tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7777)).await?;
    }
    reply(
        stream,
        &Reply {
            len: Some(copied),
            ..Reply::ok()
        },
    )
    .await
}

async fn read_file(stream: &mut BufReader<UnixStream>, path: &str, max_len: u64) -> std::io::Result<()> {
    let file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(e) => return reply(stream, &Reply::error(format!("cannot read {path}: {e}"))).await,
    };
    let len = file.metadata().await?.len();
    if len > max_len {
        return reply(
            stream,
            &Reply::error(format!("{path} is {len} bytes, more than the {max_len} allowed")),
        )
        .await;
    }
    reply(
        stream,
        &Reply {
            len: Some(len),
            ..Reply::ok()
        },
    )
    .await?;
    let copied = tokio::io::copy(&mut file.take(len), stream.get_mut()).await?;
    // A file that shrank while being read is padded so the host's count stays right.
    if copied < len {
        stream.get_mut().write_all(&vec![0u8; (len - copied) as usize]).await?;
    }
    stream.get_mut().flush().await
}
