//! "Probe, don't assume": which tiers work on this host, and for each that does not, why.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::{Backend, Egress, ExecSpec, Limits, SandboxSpec, Tier};

#[derive(Clone, Debug, Serialize)]
pub struct TierReport {
    pub tier: Tier,
    pub available: bool,
    /// What was checked and what it found.
    pub detail: String,
}

/// Builds a sandbox, runs `true` in it and tears it down.
pub async fn probe_backend(backend: &dyn Backend) -> TierReport {
    let started = Instant::now();
    let spec = SandboxSpec {
        label: "probe".into(),
        mounts: vec![],
        limits: Limits::default(),
        egress: Egress::Denied,
        forwards: vec![],
        root: None,
    };
    let report = |available, detail| TierReport {
        tier: backend.tier(),
        available,
        detail,
    };
    let sandbox = match backend.create(spec).await {
        Ok(sandbox) => sandbox,
        Err(e) => return report(false, hint(&e.to_string())),
    };
    let ran = sandbox
        .guest()
        .exec_collect(
            ExecSpec {
                argv: vec!["true".into()],
                timeout_ms: Some(5000),
                ..ExecSpec::default()
            },
            1024,
        )
        .await;
    let ready = started.elapsed();
    let destroying = Instant::now();
    sandbox.destroy().await;
    match ran {
        Ok(output) if output.status.code == Some(0) => report(
            true,
            format!(
                "sandbox started and ran a command in {:.0} ms, torn down in {:.0} ms",
                ready.as_secs_f64() * 1000.0,
                destroying.elapsed().as_secs_f64() * 1000.0
            ),
        ),
        Ok(output) => report(false, format!("`true` {} in the sandbox", output.status.describe())),
        Err(e) => report(false, format!("the guest did not run a command: {e}")),
    }
}

/// Adds the usual cause to a namespace failure.
fn hint(error: &str) -> String {
    let mut detail = error.to_string();
    if let Ok(value) = std::fs::read_to_string("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
        && value.trim() == "1"
    {
        detail.push_str("; kernel.apparmor_restrict_unprivileged_userns=1 forbids user namespaces");
    }
    if let Ok(value) = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        && value.trim() == "0"
    {
        detail.push_str("; user.max_user_namespaces=0 forbids user namespaces");
    }
    if Path::new("/.dockerenv").exists() {
        detail.push_str("; inside Docker, the default seccomp profile blocks namespaces (run with --privileged or a profile that allows clone/unshare)");
    }
    detail
}

/// The microVM tier needs a KVM device that can really boot a guest; on nested or PVM hosts
/// it exists but cannot. Berth does not ship the microVM tier's guest kernel yet, so it reports
/// what it found and keeps the tier off.
pub fn probe_microvm() -> TierReport {
    let report = |detail: String| TierReport {
        tier: Tier::Microvm,
        available: false,
        detail,
    };
    if !Path::new("/dev/kvm").exists() {
        return report("/dev/kvm does not exist (no hardware virtualisation exposed to this host)".into());
    }
    let qemu = which("qemu-system-x86_64");
    let nested_pvm = std::fs::read_to_string("/sys/module/kvm_pvm/parameters/nested_pvm").is_ok();
    let vmx = std::fs::read_to_string("/proc/cpuinfo")
        .map(|info| info.contains(" vmx") || info.contains(" svm"))
        .unwrap_or(false);
    let mut detail = String::from("/dev/kvm exists");
    if nested_pvm || !vmx {
        detail.push_str("; KVM here is PVM / nested without vmx or svm, which cannot boot a stock guest kernel");
    }
    match qemu {
        Some(path) => detail.push_str(&format!("; QEMU found at {}", path.display())),
        None => detail.push_str("; qemu-system-x86_64 is not installed"),
    }
    detail.push_str("; the microVM tier is not built into this Berth yet");
    report(detail)
}

/// The `runsc` binary of the gVisor tier, if installed.
pub fn runsc() -> Option<std::path::PathBuf> {
    which("runsc").or_else(|| Some(std::path::PathBuf::from("/usr/bin/runsc")).filter(|p| p.exists()))
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|path| path.is_file())
}

/// How long to wait for a probe sandbox at most.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(15);
