//! The isolation suite: build real sandboxes of each tier (namespace always; gVisor when `runsc`
//! is installed, required with `BERTH_TEST_REQUIRE_GVISOR=1`) with the real guest, and check
//! what runs inside them and what cannot. These need root (or unprivileged user namespaces)
//! like Berth itself.

#![allow(
    clippy::unwrap_used,
    reason = "a test binary with its own harness; clippy cannot tell"
)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use berth_sandbox::cgroup::Hierarchy;
use berth_sandbox::gvisor::{GvisorBackend, GvisorSettings};
use berth_sandbox::namespace::{NamespaceBackend, NamespaceSettings};
use berth_sandbox::{Backend, Egress, ExecSpec, Limits, Sandbox, SandboxSpec, Tier};

type Test = fn(Tier) -> Pin<Box<dyn Future<Output = ()> + Send>>;

fn runsc() -> Option<std::path::PathBuf> {
    ["/usr/bin/runsc", "/usr/local/bin/runsc"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("__guest") {
        std::process::exit(berth_guest::main_with_args(&args[1..]));
    }
    let filter = args.iter().find(|a| !a.starts_with('-')).cloned().unwrap_or_default();
    let tests: &[(&str, Test)] = &[
        ("runs_commands_as_root_of_its_own_namespaces", |tier| {
            Box::pin(runs_commands_as_root_of_its_own_namespaces(tier))
        }),
        ("sessions_cannot_see_each_other_or_the_host", |tier| {
            Box::pin(sessions_cannot_see_each_other_or_the_host(tier))
        }),
        ("root_is_read_only_and_privileged_calls_fail", |tier| {
            Box::pin(root_is_read_only_and_privileged_calls_fail(tier))
        }),
        ("network_is_loopback_only_and_egress_is_filtered", |tier| {
            Box::pin(network_is_loopback_only_and_egress_is_filtered(tier))
        }),
        ("fork_bombs_and_memory_hogs_are_contained", |tier| {
            Box::pin(fork_bombs_and_memory_hogs_are_contained(tier))
        }),
        ("files_and_ports_reach_inside", |tier| {
            Box::pin(files_and_ports_reach_inside(tier))
        }),
        ("a_flood_of_output_stays_bounded", |tier| {
            Box::pin(a_flood_of_output_stays_bounded(tier))
        }),
        ("shells_run_on_a_terminal_and_survive_a_detach", |tier| {
            Box::pin(shells_run_on_a_terminal_and_survive_a_detach(tier))
        }),
        ("a_dropped_sandbox_leaves_no_process", |tier| {
            Box::pin(a_dropped_sandbox_leaves_no_process(tier))
        }),
    ];
    let mut tiers = vec![Tier::Namespace];
    if runsc().is_some() {
        tiers.push(Tier::Gvisor);
    } else if std::env::var_os("BERTH_TEST_REQUIRE_GVISOR").is_some() {
        println!("runsc is not installed but BERTH_TEST_REQUIRE_GVISOR is set");
        std::process::exit(1);
    } else {
        println!("runsc is not installed: the gVisor tier is not tested");
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut failed = 0;
    for tier in tiers {
        for (name, test) in tests.iter().filter(|(name, _)| name.contains(&filter)) {
            let outcome = runtime.block_on(async { tokio::spawn(async move { test(tier).await }).await });
            match outcome {
                Ok(()) => println!("test {}::{name} ... ok", tier.name()),
                Err(_) => {
                    println!("test {}::{name} ... FAILED", tier.name());
                    failed += 1;
                }
            }
        }
    }
    if failed > 0 {
        std::process::exit(1);
    }
}

fn backend(dir: &tempfile::TempDir, tier: Tier) -> Box<dyn Backend> {
    let exe = std::env::current_exe().unwrap();
    let guest = vec![exe.into(), "__guest".into()];
    let state = dir.path().join("sandboxes");
    match tier {
        Tier::Namespace => Box::new(NamespaceBackend::new(NamespaceSettings::new(guest, state)).unwrap()),
        Tier::Gvisor => Box::new(GvisorBackend::new(GvisorSettings::new(guest, state, runsc().unwrap())).unwrap()),
        Tier::Microvm => unreachable!("not built"),
    }
}

fn spec() -> SandboxSpec {
    SandboxSpec {
        label: "test".into(),
        mounts: vec![],
        limits: Limits::default(),
        egress: Egress::Denied,
        forwards: vec![],
        root: None,
    }
}

async fn sh(sandbox: &Arc<dyn Sandbox>, script: &str) -> (i32, String, String) {
    let output = sandbox
        .guest()
        .exec_collect(
            ExecSpec {
                argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
                timeout_ms: Some(20_000),
                ..ExecSpec::default()
            },
            1 << 20,
        )
        .await
        .unwrap();
    (
        output.status.code.unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn runs_commands_as_root_of_its_own_namespaces(tier: Tier) {
    let dir = tempfile::tempdir().unwrap();
    let backend = backend(&dir, tier);
    let sandbox = backend.create(spec()).await.unwrap();
    let (code, out, err) = sh(
        &sandbox,
        "id -u; hostname; echo $$; test -d /workspace && echo has-workspace; cat /proc/1/cmdline | tr '\\0' ' '",
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    // Root of its namespaces; under gVisor, the sandbox's own unprivileged uid.
    if tier == Tier::Namespace {
        assert_eq!(lines[0], "0");
    } else {
        assert!(lines[0].parse::<u32>().unwrap() >= 200_000, "{out}");
    }
    assert_eq!(lines[1], "berth");
    assert!(lines[2].parse::<u32>().unwrap() < 100, "pid namespace: {out}");
    assert!(out.contains("has-workspace"), "{out} / {err}");
    sandbox.destroy().await;
    assert!(!sandbox.is_alive());
}

async fn sessions_cannot_see_each_other_or_the_host(tier: Tier) {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("host-secret");
    std::fs::write(&secret, "host data").unwrap();
    let backend = backend(&dir, tier);
    let a = backend.create(spec()).await.unwrap();
    let b = backend.create(spec()).await.unwrap();
    let (code, _, err) = sh(&a, "echo private > /workspace/a.txt && sleep 30 &").await;
    assert_eq!(code, 0, "{err}");

    let a_file = a.workspace().join("a.txt");
    let script = format!(
        "cat {} 2>&1; cat {} 2>&1; cat /etc/shadow 2>&1; ls /workspace; ps -e -o pid= 2>/dev/null | wc -l; ls /proc | grep -c '^[0-9]'",
        a_file.display(),
        secret.display()
    );
    let (_, out, _) = sh(&b, &script).await;
    assert!(!out.contains("private"), "another session's file leaked: {out}");
    assert!(!out.contains("host data"), "a host file leaked: {out}");
    assert!(!out.contains("root:"), "/etc/shadow leaked: {out}");
    assert!(!out.lines().any(|line| line == "a.txt"), "{out}");
    // Only B's own few processes are visible (init, server, sh, and the listing itself).
    let visible: usize = out.lines().last().unwrap().trim().parse().unwrap();
    assert!(visible < 8, "{out}");

    // Each session's root is a different host user.
    use std::os::unix::fs::MetadataExt;
    let uid_a = std::fs::metadata(a.workspace()).unwrap().uid();
    let uid_b = std::fs::metadata(b.workspace()).unwrap().uid();
    assert_ne!(uid_a, uid_b);
    a.destroy().await;
    b.destroy().await;
}

async fn root_is_read_only_and_privileged_calls_fail(tier: Tier) {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = backend(&dir, tier).create(spec()).await.unwrap();
    let script = r#"
        touch /usr/evil 2>/dev/null && echo usr-writable
        touch /evil 2>/dev/null && echo root-writable
        touch /workspace/ok /tmp/ok && echo scratch-writable
        mount -t tmpfs none /mnt 2>/dev/null && echo mounted
        unshare -U true 2>/dev/null && echo unshared
        python3 -c 'import ctypes; print("ptrace", ctypes.CDLL(None).ptrace(16, 1, 0, 0))'
        echo still-here
    "#;
    let (_, out, err) = sh(&sandbox, script).await;
    assert!(!out.contains("usr-writable"), "{out}");
    assert!(!out.contains("root-writable"), "{out}");
    assert!(out.contains("scratch-writable"), "{out} {err}");
    assert!(!out.contains("mounted"), "{out}");
    if tier == Tier::Namespace {
        // Under gVisor these reach only gVisor's own kernel, which is the boundary there.
        assert!(!out.contains("unshared"), "{out}");
        assert!(out.contains("ptrace -1"), "{out} {err}");
    }
    assert!(out.contains("still-here"), "{out}");
    // Killing init from inside ends at most the session itself (the namespace tier's init
    // ignores it; gVisor's lets it end the sandbox), never anything outside.
    let bystander = backend(&dir, tier).create(spec()).await.unwrap();
    let _ = sandbox
        .guest()
        .exec_collect(
            ExecSpec {
                argv: vec!["/bin/sh".into(), "-c".into(), "kill -9 1".into()],
                timeout_ms: Some(5000),
                ..ExecSpec::default()
            },
            1024,
        )
        .await;
    if tier == Tier::Namespace {
        assert!(sandbox.is_alive());
    }
    let (code, out, _) = sh(&bystander, "echo fine").await;
    assert_eq!((code, out.trim()), (0, "fine"));
    sandbox.destroy().await;
    bystander.destroy().await;
}

async fn network_is_loopback_only_and_egress_is_filtered(tier: Tier) {
    let dir = tempfile::tempdir().unwrap();
    let backend = backend(&dir, tier);
    let closed = backend.create(spec()).await.unwrap();
    let probe = r#"python3 - <<'PY'
import socket
for target in [("1.1.1.1", 80), ("127.0.0.1", 3128)]:
    try:
        socket.create_connection(target, timeout=2)
        print("connected", target)
    except OSError as e:
        print("refused", target, e.errno)
PY"#;
    let (_, out, err) = sh(&closed, probe).await;
    assert!(!out.contains("connected"), "{out} {err}");
    closed.destroy().await;

    let filtered = backend
        .create(SandboxSpec {
            egress: Egress::Allowlist(vec!["pypi.org".into()]),
            ..spec()
        })
        .await
        .unwrap();
    let connect = r#"python3 - <<'PY'
import socket
for host in ["evil.example.com", "localhost"]:
    s = socket.create_connection(("127.0.0.1", 3128), timeout=5)
    s.sendall(f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    print(host, s.recv(200).split(b"\r\n")[0].decode())
PY"#;
    let (_, out, err) = sh(&filtered, connect).await;
    assert!(out.contains("evil.example.com HTTP/1.1 403"), "{out} {err}");
    assert!(out.contains("localhost HTTP/1.1 403"), "{out} {err}");
    assert_eq!(filtered.usage().egress_denied, 2);
    filtered.destroy().await;
}

async fn fork_bombs_and_memory_hogs_are_contained(tier: Tier) {
    let dir = tempfile::tempdir().unwrap();
    let backend = backend(&dir, tier);
    if let Hierarchy::Unavailable(reason) = Hierarchy::detect() {
        println!("cgroups unavailable here; limits are not enforced: {reason}");
        return;
    }
    let limits = Limits {
        memory_bytes: 64 * 1024 * 1024,
        pids: 32,
        ..Limits::default()
    };
    let sandbox = backend.create(SandboxSpec { limits, ..spec() }).await.unwrap();
    let (_, out, _) = sh(
        &sandbox,
        "python3 -c '\nimport os, time\nn = 0\nfor i in range(100):\n    try:\n        if os.fork() == 0:\n            time.sleep(3); os._exit(0)\n        n += 1\n    except OSError:\n        break\nprint(n)'",
    )
    .await;
    let running: usize = out.trim().parse().unwrap_or(0);
    assert!(
        (1..32).contains(&running),
        "{running} forks succeeded under a limit of 32: {out}"
    );
    if tier == Tier::Namespace {
        assert!(sandbox.usage().pids_limit_hits > 0, "{:?}", sandbox.usage());
    }
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let hog = sandbox
        .guest()
        .exec_collect(
            ExecSpec {
                argv: vec![
                    "python3".into(),
                    "-c".into(),
                    "x = bytearray(512 * 1024 * 1024); print(len(x))".into(),
                ],
                timeout_ms: Some(20_000),
                ..ExecSpec::default()
            },
            1024,
        )
        .await;
    let usage = sandbox.usage();
    assert!(usage.oom_kills > 0, "{usage:?}");
    assert!(usage.cpu_seconds > 0.0, "{usage:?}");
    match tier {
        // The namespace tier kills the process that went over; the sandbox lives on.
        Tier::Namespace => {
            assert_ne!(hog.unwrap().status.code, Some(0));
            let (code, out, _) = sh(&sandbox, "echo alive").await;
            assert_eq!((code, out.trim()), (0, "alive"));
        }
        // Under gVisor all of the agent's memory is the sentry's: going over the limit ends
        // the whole sandbox, and nothing else.
        _ => assert!(hog.is_err() || hog.unwrap().status.code != Some(0)),
    }
    sandbox.destroy().await;
}

async fn files_and_ports_reach_inside(tier: Tier) {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = backend(&dir, tier).create(spec()).await.unwrap();
    let guest = sandbox.guest();
    guest
        .write_file("/workspace/sub/hello.txt", b"hello", Some(0o600))
        .await
        .unwrap();
    assert_eq!(
        guest.read_file("/workspace/sub/hello.txt", 100).await.unwrap(),
        b"hello"
    );
    assert!(guest.read_file("/workspace/sub/hello.txt", 2).await.is_err());
    assert!(guest.write_file("/usr/nope", b"x", None).await.is_err());

    let server = berth_sandbox::ServiceSpec {
        argv: vec![
            "python3".into(),
            "-m".into(),
            "http.server".into(),
            "8080".into(),
            "--bind".into(),
            "127.0.0.1".into(),
        ],
        log_limit_bytes: 1 << 20,
        ..Default::default()
    };
    guest.start_service(server).await.unwrap();
    let mut answer = String::new();
    for _ in 0..200 {
        if let Ok(mut stream) = guest.connect(8080).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            stream.write_all(b"GET /sub/hello.txt HTTP/1.0\r\n\r\n").await.unwrap();
            // Read by Content-Length, as HTTP clients do: under gVisor (runsc 2022) the close
            // of a connection through the guest does not always reach the host promptly.
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
            while !String::from_utf8_lossy(&buf).ends_with("hello") && tokio::time::Instant::now() < deadline {
                match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
                    Ok(Ok(0)) | Err(_) => break,
                    Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                    Ok(Err(e)) => panic!("{e}"),
                }
            }
            answer = String::from_utf8_lossy(&buf).into_owned();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(
        answer.starts_with("HTTP/1.0 200") && answer.ends_with("hello"),
        "{answer}"
    );
    let status = guest.service_status().await.unwrap();
    assert!(status.started && status.exit.is_none());
    guest.signal_service(15).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(guest.service_status().await.unwrap().exit.is_some());
    sandbox.destroy().await;
}

async fn a_flood_of_output_stays_bounded(tier: Tier) {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = backend(&dir, tier).create(spec()).await.unwrap();
    let noisy = berth_sandbox::ServiceSpec {
        argv: vec![
            "python3".into(),
            "-c".into(),
            "import sys\nfor _ in range(3000): sys.stdout.write('x' * 16384 + '\\n')".into(),
        ],
        log_limit_bytes: 1 << 20,
        ..Default::default()
    };
    sandbox.guest().start_service(noisy).await.unwrap();
    for _ in 0..600 {
        if sandbox.guest().service_status().await.unwrap().exit.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let status = sandbox.guest().service_status().await.unwrap();
    assert_eq!(status.exit.and_then(|e| e.code), Some(0));
    // ~48 MiB written; at most twice the 1 MiB limit (plus one write) kept.
    let kept: u64 = ["service.log", "service.log.1"]
        .iter()
        .filter_map(|name| std::fs::metadata(sandbox.control_dir().join(name)).ok())
        .map(|m| m.len())
        .sum();
    assert!(kept > 0 && kept <= 2 * (1 << 20) + 65_536, "{kept} bytes of log kept");
    sandbox.destroy().await;
}

/// Reads a shell's output until `needle` appears (or the shell ends), for at most 10 s.
async fn read_until(
    output: &mut berth_sandbox::guest::ShellOutput,
    needle: &str,
) -> (String, Option<berth_sandbox::ExitStatus>) {
    use berth_sandbox::guest::ShellEvent;
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !seen.contains(needle) {
        match tokio::time::timeout_at(deadline, output.next()).await {
            Ok(Ok(ShellEvent::Output(data))) => seen.push_str(&String::from_utf8_lossy(&data)),
            Ok(Ok(ShellEvent::Exit(status))) => return (seen, Some(status)),
            other => panic!("waiting for {needle:?} after {seen:?}: {other:?}"),
        }
    }
    (seen, None)
}

async fn shells_run_on_a_terminal_and_survive_a_detach(tier: Tier) {
    use berth_sandbox::guest::ShellEvent;
    use berth_sandbox::{ShellSpec, TerminalSize};
    let dir = tempfile::tempdir().unwrap();
    let sandbox = backend(&dir, tier).create(spec()).await.unwrap();
    let shell = |cols| ShellSpec {
        id: "debug".into(),
        argv: vec!["/bin/sh".into()],
        cols,
        rows: 40,
        ..Default::default()
    };
    let (stream, reconnected) = sandbox.guest().shell(shell(100)).await.unwrap();
    assert!(!reconnected);
    let (mut input, mut output) = stream.split();
    input.stdin(b"tty; stty size; export MARK=kept\n").await.unwrap();
    let (seen, _) = read_until(&mut output, "40 100").await;
    assert!(seen.contains("/dev/pts/"), "{seen}");
    input.resize(TerminalSize { cols: 120, rows: 30 }).await.unwrap();
    input.stdin(b"stty size\n").await.unwrap();
    read_until(&mut output, "30 120").await;
    // Hang up; the shell keeps running, and a re-attach gets what it printed and its state.
    drop((input, output));
    let (stream, reconnected) = sandbox.guest().shell(shell(80)).await.unwrap();
    assert!(reconnected);
    let (input, mut output) = stream.split();
    read_until(&mut output, "30 120").await;
    // A second attach takes the shell over; the first is told.
    let (second, _) = sandbox.guest().shell(shell(80)).await.unwrap();
    let (mut second_input, mut second_output) = second.split();
    loop {
        match output.next().await.unwrap() {
            ShellEvent::Detached => break,
            ShellEvent::Output(_) => continue,
            ShellEvent::Exit(status) => panic!("exited: {status:?}"),
        }
    }
    drop(input);
    second_input.stdin(b"echo $MARK; exit 7\n").await.unwrap();
    let (seen, status) = read_until(&mut second_output, "\u{0}never").await;
    assert!(seen.contains("kept"), "{seen}");
    assert_eq!(status.and_then(|s| s.code), Some(7));
    sandbox.destroy().await;
}

/// Host processes running as `uid`.
fn processes_of(uid: u32) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("status")).ok())
        .filter(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|u| u.parse::<u32>().ok())
                == Some(uid)
        })
        .count()
}

async fn a_dropped_sandbox_leaves_no_process(tier: Tier) {
    // If Berth loses a sandbox without tearing it down (a panic, a crash), the sandbox's
    // processes die with their launcher instead of running on unseen.
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = backend(&dir, tier).create(spec()).await.unwrap();
    let uid = std::fs::metadata(sandbox.workspace()).unwrap().uid();
    let sleeper = berth_sandbox::ServiceSpec {
        argv: vec!["sleep".into(), "300".into()],
        log_limit_bytes: 4096,
        ..Default::default()
    };
    sandbox.guest().start_service(sleeper).await.unwrap();
    if tier == Tier::Namespace {
        assert!(processes_of(uid) >= 3, "init, the guest server and sleep run as {uid}");
    }
    drop(sandbox);
    let mut left = usize::MAX;
    for _ in 0..100 {
        left = processes_of(uid);
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(left, 0, "processes of uid {uid} outlived their sandbox");
    // Its cgroup and files are removed in the background; give that time before the test
    // binary exits.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
}
