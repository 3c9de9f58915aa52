//! The namespace tier's launcher: builds the sandbox and becomes its init.
//!
//! `berth-guest launch` runs on the host (spawned by `berth-sandbox`, already placed in the
//! session's cgroups) and reads a [`LaunchConfig`] from stdin. It clones a child into new user,
//! mount, pid, net, ipc and uts namespaces, maps root inside to the session's own unprivileged
//! host uid, and waits for it. The child, pid 1 of the new pid namespace, assembles a fresh root
//! from read-only binds, pivots into it, brings up loopback, binds the guest socket, confines
//! itself with Landlock and seccomp, and forks the guest server; pid 1 then only reaps orphans.
//!
//! Everything here runs before any thread exists, so `fork`/`clone` are safe to use.

#![allow(unsafe_code)] // clone(2), fork(2) and one ioctl; each use says why it is sound.

use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::symlink;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use nix::sys::statvfs::{FsFlags, statvfs};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Pid, Uid, fork, pivot_root, sethostname, setresgid, setresuid};

use crate::confine;
use crate::protocol::{CONTROL_MOUNT, GUEST_SOCKET, LaunchConfig, MountSpec, RootEntry, WORKSPACE_MOUNT};

type Result<T> = std::result::Result<T, String>;

const STAGING: &str = "/tmp";

fn context<T, E: std::fmt::Display>(result: std::result::Result<T, E>, what: impl FnOnce() -> String) -> Result<T> {
    result.map_err(|e| format!("{}: {e}", what()))
}

/// The launcher's entry point; returns the process exit code.
pub fn run() -> i32 {
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("berth-guest: cannot read the launch config: {e}");
        return 2;
    }
    let config: LaunchConfig = match serde_json::from_str(&input) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("berth-guest: bad launch config: {e}");
            return 2;
        }
    };
    match launch(&config) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("berth-guest: {message}");
            1
        }
    }
}

fn launch(config: &LaunchConfig) -> Result<i32> {
    let (maps_read, maps_write) = context(nix::unistd::pipe(), || "pipe".into())?;
    let flags = CloneFlags::CLONE_NEWUSER
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS;
    let mut stack = vec![0u8; 1024 * 1024];
    let mut maps_read = Some(maps_read);
    let child_main = Box::new(move || {
        let Some(maps_read) = maps_read.take() else { return 1 };
        match init(config, maps_read) {
            Ok(code) => code as isize,
            Err(message) => {
                eprintln!("berth-guest: sandbox setup failed: {message}");
                1
            }
        }
    });
    // SAFETY: this process is single-threaded (no runtime has started), the stack outlives the
    // child because the parent waits for it below, and the child only touches its own copy of
    // the address space.
    let child = context(
        unsafe { nix::sched::clone(child_main, &mut stack, flags, Some(Signal::SIGCHLD as i32)) },
        || "cannot create the namespaces (clone)".into(),
    )?;
    write_id_maps(child, config)?;
    let mut maps_write = fs::File::from(maps_write);
    context(maps_write.write_all(b"1"), || "signal the sandbox".into())?;
    drop(maps_write);
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(128 + signal as i32),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("waitpid: {e}")),
        }
    }
}

/// Root inside is exactly one host user; nothing else is mapped, so host files owned by
/// anyone else (root included) are out of reach of the sandbox's capabilities.
fn write_id_maps(child: Pid, config: &LaunchConfig) -> Result<()> {
    let proc = PathBuf::from(format!("/proc/{child}"));
    context(fs::write(proc.join("setgroups"), "deny"), || "setgroups".into())?;
    context(fs::write(proc.join("uid_map"), format!("0 {} 1\n", config.uid)), || {
        format!("map uid {}", config.uid)
    })?;
    context(fs::write(proc.join("gid_map"), format!("0 {} 1\n", config.gid)), || {
        format!("map gid {}", config.gid)
    })?;
    Ok(())
}

/// The host directories the sandbox mounts, opened while the child still has the launcher's
/// host credentials: root inside could not look up paths under, say, a 0700 home directory,
/// but it can bind an open descriptor through `/proc/self/fd`.
struct Sources {
    control: OwnedFd,
    workspace: OwnedFd,
    mounts: Vec<OwnedFd>,
    /// The image root, when the sandbox runs from one.
    root: Option<OwnedFd>,
}

impl Sources {
    fn open(config: &LaunchConfig) -> Result<Sources> {
        let open = |path: &Path| {
            let flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
            context(nix::fcntl::open(path, flags, Mode::empty()), || {
                format!("open {}", path.display())
            })
        };
        Ok(Sources {
            control: open(&config.control_dir)?,
            workspace: open(&config.workspace_dir)?,
            mounts: config.mounts.iter().map(|m| open(&m.source)).collect::<Result<_>>()?,
            root: config.root.as_deref().map(open).transpose()?,
        })
    }
}

fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Pid 1 of the sandbox.
fn init(config: &LaunchConfig, maps_read: OwnedFd) -> Result<i32> {
    let mut byte = [0u8; 1];
    context(fs::File::from(maps_read).read_exact(&mut byte), || {
        "wait for id maps".into()
    })?;
    // Opened in this mount namespace (a bind's source must be in the caller's), and before
    // switching to root-inside, while this process is still the launcher's host user.
    let sources = Sources::open(config)?;
    context(setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0)), || {
        "setgid".into()
    })?;
    context(setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0)), || {
        "setuid".into()
    })?;
    // If the launcher dies, so does the sandbox: pid 1 going takes every process in it along.
    // Set after the id change, which would clear it (the launcher is waiting for this process,
    // and the host also kills the sandbox's cgroup on teardown).
    context(nix::sys::prctl::set_pdeathsig(Signal::SIGKILL), || "pdeathsig".into())?;
    context(sethostname(&config.hostname), || "sethostname".into())?;

    build_root(config, &sources)?;
    loopback_up()?;
    let listener = context(UnixListener::bind(Path::new(CONTROL_MOUNT).join(GUEST_SOCKET)), || {
        "bind the guest socket".into()
    })?;
    let writable: Vec<&Path> = config
        .mounts
        .iter()
        .filter(|m| m.writable)
        .map(|m| m.target.as_path())
        .collect();
    confine::apply(&writable)?;

    // SAFETY: still single-threaded; the child starts its own runtime after the fork.
    match context(unsafe { fork() }, || "fork the guest server".into())? {
        ForkResult::Child => {
            let code = crate::server::run(listener, config.bridges.clone());
            std::process::exit(code);
        }
        ForkResult::Parent { child } => {
            drop(listener);
            Ok(reap_until(child))
        }
    }
}

/// The gVisor tier's entry: runsc has built the sandbox already (the container's own
/// namespaces, root and mounts under gVisor's kernel), so the guest only binds its socket,
/// forks the server and reaps as pid 1. `bridges` is the JSON list of [`crate::protocol::Bridge`].
pub fn serve(bridges: &str) -> i32 {
    let bridges = match serde_json::from_str(bridges) {
        Ok(bridges) => bridges,
        Err(e) => {
            eprintln!("berth-guest: bad bridges: {e}");
            return 2;
        }
    };
    let listener = match UnixListener::bind(Path::new(CONTROL_MOUNT).join(GUEST_SOCKET)) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("berth-guest: bind the guest socket: {e}");
            return 1;
        }
    };
    if let Err(e) = nix::sys::prctl::set_no_new_privs() {
        eprintln!("berth-guest: no_new_privs: {e}");
        return 1;
    }
    // SAFETY: single-threaded until the child starts its runtime.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => std::process::exit(crate::server::run(listener, bridges)),
        Ok(ForkResult::Parent { child }) => {
            drop(listener);
            reap_until(child)
        }
        Err(e) => {
            eprintln!("berth-guest: fork: {e}");
            1
        }
    }
}

/// Reaps every process that ends up parented to pid 1 until the guest server exits.
fn reap_until(server: Pid) -> i32 {
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == server => return code,
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == server => return 128 + signal as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return 1,
        }
    }
}

/// The new root is assembled on a tmpfs over `/tmp` of the sandbox's private mount namespace
/// (any directory every user can traverse would do; the host's /tmp is untouched).
fn build_root(config: &LaunchConfig, sources: &Sources) -> Result<()> {
    let root = Path::new(STAGING);
    let none: Option<&str> = None;
    context(
        mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none),
        || "make mounts private".into(),
    )?;
    context(
        mount(
            Some("tmpfs"),
            root,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("size=1m,mode=755"),
        ),
        || format!("mount the root tmpfs on {}", root.display()),
    )?;

    let image_root = sources.root.as_ref().map(fd_path);
    for entry in crate::protocol::root_entries(image_root.as_deref()) {
        match entry {
            RootEntry::Symlink { name, target } => {
                context(symlink(&target, root.join(&name)), || format!("symlink /{name}"))?;
            }
            RootEntry::Bind { name, source } => bind(
                root,
                &MountSpec {
                    source,
                    target: PathBuf::from("/").join(name),
                    writable: false,
                },
            )?,
        }
    }
    for (spec, fd) in config.mounts.iter().zip(&sources.mounts) {
        bind(
            root,
            &MountSpec {
                source: fd_path(fd),
                ..spec.clone()
            },
        )?;
    }
    let control = MountSpec {
        source: fd_path(&sources.control),
        target: CONTROL_MOUNT.into(),
        writable: true,
    };
    bind(root, &control)?;
    let workspace = MountSpec {
        source: fd_path(&sources.workspace),
        target: WORKSPACE_MOUNT.into(),
        writable: true,
    };
    bind(root, &workspace)?;

    let tmp = root.join("tmp");
    context(fs::create_dir_all(&tmp), || "mkdir /tmp".into())?;
    let tmp_options = format!("size={},mode=1777", config.tmp_bytes.max(1024 * 1024));
    context(
        mount(
            Some("tmpfs"),
            &tmp,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(tmp_options.as_str()),
        ),
        || "mount /tmp".into(),
    )?;
    build_dev(root)?;
    let proc = root.join("proc");
    context(fs::create_dir_all(&proc), || "mkdir /proc".into())?;
    let proc_flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    context(mount(Some("proc"), &proc, Some("proc"), proc_flags, none), || {
        "mount /proc".into()
    })?;

    context(std::env::set_current_dir(root), || "chdir to the new root".into())?;
    // pivot_root(".", ".") stacks the old root on top of the new one; detaching it leaves only
    // the new root, with no directory for the old one needed.
    context(pivot_root(".", "."), || "pivot_root".into())?;
    context(umount2(".", MntFlags::MNT_DETACH), || "detach the host root".into())?;
    context(std::env::set_current_dir("/"), || "chdir /".into())?;
    let read_only = MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    context(mount(none, "/", none, read_only, none), || "make / read-only".into())?;
    Ok(())
}

/// A minimal /dev: the harmless character devices, bound from the host (device nodes cannot be
/// created in a user namespace), plus the usual symlinks and a private /dev/shm.
fn build_dev(root: &Path) -> Result<()> {
    let dev = root.join("dev");
    context(fs::create_dir_all(&dev), || "mkdir /dev".into())?;
    let none: Option<&str> = None;
    context(
        mount(
            Some("tmpfs"),
            &dev,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("size=64k,mode=755"),
        ),
        || "mount /dev".into(),
    )?;
    for node in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = dev.join(node);
        context(fs::File::create(&target), || format!("create /dev/{node}"))?;
        let source = Path::new("/dev").join(node);
        context(mount(Some(&source), &target, none, MsFlags::MS_BIND, none), || {
            format!("bind /dev/{node}")
        })?;
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        context(symlink(target, dev.join(name)), || format!("symlink /dev/{name}"))?;
    }
    // Terminals for interactive shells: a private devpts instance (a user namespace may mount
    // one), so the sandbox sees its own terminals only.
    let pts = dev.join("pts");
    context(fs::create_dir_all(&pts), || "mkdir /dev/pts".into())?;
    let pts_flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    match mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        pts_flags,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    ) {
        Ok(()) => context(symlink("pts/ptmx", dev.join("ptmx")), || "symlink /dev/ptmx".into())?,
        Err(e) => eprintln!("berth-guest: no devpts ({e}); interactive shells will not start"),
    }
    let shm = dev.join("shm");
    context(fs::create_dir_all(&shm), || "mkdir /dev/shm".into())?;
    context(
        mount(
            Some("tmpfs"),
            &shm,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("size=64m,mode=1777"),
        ),
        || "mount /dev/shm".into(),
    )?;
    Ok(())
}

/// Bind-mounts `spec.source` at `spec.target` under `root`, read-only unless writable.
fn bind(root: &Path, spec: &MountSpec) -> Result<()> {
    let relative = spec.target.strip_prefix("/").unwrap_or(&spec.target);
    let target = root.join(relative);
    if spec.source.is_dir() {
        context(fs::create_dir_all(&target), || {
            format!("mkdir {}", spec.target.display())
        })?;
    } else {
        if let Some(parent) = target.parent() {
            context(fs::create_dir_all(parent), || {
                format!("mkdir {}", spec.target.display())
            })?;
        }
        context(fs::File::create(&target), || {
            format!("create {}", spec.target.display())
        })?;
    }
    let none: Option<&str> = None;
    context(
        mount(
            Some(&spec.source),
            &target,
            none,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            none,
        ),
        || format!("bind {} at {}", spec.source.display(), spec.target.display()),
    )?;
    // A bind remount must keep the flags the kernel locked on the source mount (nosuid, nodev,
    // noexec, atime), or it fails with EPERM inside a user namespace.
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if let Ok(stat) = statvfs(&spec.source) {
        let locked = stat.flags();
        for (fs_flag, ms_flag) in [
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if locked.contains(fs_flag) {
                flags |= ms_flag;
            }
        }
        if !spec.writable || locked.contains(FsFlags::ST_RDONLY) {
            flags |= MsFlags::MS_RDONLY;
        }
    } else if !spec.writable {
        flags |= MsFlags::MS_RDONLY;
    }
    context(mount(none, &target, none, flags, none), || {
        format!("remount {}", spec.target.display())
    })?;
    Ok(())
}

/// A new network namespace has only `lo`, and it is down.
fn loopback_up() -> Result<()> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    let sock = context(
        socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None),
        || "socket for loopback".into(),
    )?;
    // SAFETY: `ifreq` is plain data; zeroed is a valid value, and the name fits with its NUL.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request
        .ifr_name
        .iter_mut()
        .zip(CString::from(c"lo").as_bytes_with_nul())
    {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write only the `ifreq` passed, which lives on
    // this stack frame for the duration of each call.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) < 0 {
            return Err(format!("read loopback flags: {}", std::io::Error::last_os_error()));
        }
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &request) < 0 {
            return Err(format!("bring loopback up: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}
