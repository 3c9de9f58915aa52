//! Per-sandbox cgroups: limits on memory, pids and CPU, and the accounting behind `Usage`.
//!
//! Written against the cgroup files directly rather than with `cgroups-rs`: Berth needs a dozen
//! files on two hierarchies (v2, and v1 as on hybrid hosts like Debian 12 VMs), and the crate's
//! abstraction over every controller would be most of the code to read here.

use std::fs;
use std::path::{Path, PathBuf};

use crate::{Limits, Usage};

const ROOT: &str = "/sys/fs/cgroup";
const PARENT: &str = "berth";
const V1_CONTROLLERS: [&str; 4] = ["memory", "pids", "cpu", "cpuacct"];
const CPU_PERIOD_US: u64 = 100_000;

/// Which cgroup hierarchy this host offers Berth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hierarchy {
    /// The unified hierarchy with the memory, pids and cpu controllers.
    V2,
    /// Separate v1 hierarchies per controller (also hybrid hosts).
    V1,
    /// No usable, writable cgroups: limits cannot be enforced.
    Unavailable(String),
}

impl Hierarchy {
    pub fn detect() -> Hierarchy {
        let root = Path::new(ROOT);
        let v2 = fs::read_to_string(root.join("cgroup.controllers")).ok();
        let candidate = match v2 {
            Some(controllers) => {
                let missing: Vec<_> = ["memory", "pids", "cpu"]
                    .into_iter()
                    .filter(|c| !controllers.split_whitespace().any(|x| x == *c))
                    .collect();
                if !missing.is_empty() {
                    return Hierarchy::Unavailable(format!("cgroup v2 lacks the {} controller(s)", missing.join(", ")));
                }
                Hierarchy::V2
            }
            None => {
                let missing: Vec<_> = V1_CONTROLLERS.into_iter().filter(|c| !root.join(c).is_dir()).collect();
                if !missing.is_empty() {
                    return Hierarchy::Unavailable(format!(
                        "no cgroup v2 at {ROOT} and no v1 hierarchy for {}",
                        missing.join(", ")
                    ));
                }
                Hierarchy::V1
            }
        };
        // Creating our parent group is the real test: read-only /sys/fs/cgroup (containers) fails.
        for dir in candidate.parent_dirs() {
            if let Err(e) = fs::create_dir_all(&dir) {
                return Hierarchy::Unavailable(format!("cannot create {}: {e}", dir.display()));
            }
        }
        if candidate == Hierarchy::V2 {
            // Controllers must be enabled for the children of our parent group.
            let control = Path::new(ROOT).join(PARENT).join("cgroup.subtree_control");
            if let Err(e) = fs::write(&control, "+memory +pids +cpu") {
                return Hierarchy::Unavailable(format!("cannot enable controllers in {}: {e}", control.display()));
            }
        }
        candidate
    }

    fn parent_dirs(&self) -> Vec<PathBuf> {
        match self {
            Hierarchy::V2 => vec![Path::new(ROOT).join(PARENT)],
            Hierarchy::V1 => V1_CONTROLLERS
                .iter()
                .map(|c| Path::new(ROOT).join(c).join(PARENT))
                .collect(),
            Hierarchy::Unavailable(_) => vec![],
        }
    }
}

/// One sandbox's cgroup(s). Removed by [`SandboxCgroup::remove`] once its processes are gone.
#[derive(Debug)]
pub struct SandboxCgroup {
    hierarchy: Hierarchy,
    name: String,
}

fn write(path: PathBuf, value: &str) -> std::io::Result<()> {
    fs::write(&path, value).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

fn read_u64(path: PathBuf) -> u64 {
    fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// `key value` lines (cpu.stat, memory.events, memory.oom_control, pids.events).
fn read_keyed(path: PathBuf, key: &str) -> u64 {
    fs::read_to_string(path)
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let (k, v) = line.split_once(' ')?;
                (k == key).then(|| v.trim().parse().ok()).flatten()
            })
        })
        .unwrap_or(0)
}

impl SandboxCgroup {
    /// Creates the group and sets its limits.
    pub fn create(hierarchy: &Hierarchy, name: &str, limits: &Limits) -> std::io::Result<SandboxCgroup> {
        let group = SandboxCgroup {
            hierarchy: hierarchy.clone(),
            name: name.to_string(),
        };
        for dir in group.dirs() {
            fs::create_dir_all(&dir)?;
        }
        let quota = limits.cpu_millicores.max(10) * CPU_PERIOD_US / 1000;
        match hierarchy {
            Hierarchy::V2 => {
                let dir = group.dir("");
                write(dir.join("memory.max"), &limits.memory_bytes.to_string())?;
                // Without this the limit only pushes the sandbox into swap.
                let _ = write(dir.join("memory.swap.max"), "0");
                write(dir.join("pids.max"), &limits.pids.to_string())?;
                write(dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
            }
            Hierarchy::V1 => {
                write(
                    group.dir("memory").join("memory.limit_in_bytes"),
                    &limits.memory_bytes.to_string(),
                )?;
                let _ = write(
                    group.dir("memory").join("memory.memsw.limit_in_bytes"),
                    &limits.memory_bytes.to_string(),
                );
                write(group.dir("pids").join("pids.max"), &limits.pids.to_string())?;
                write(group.dir("cpu").join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                write(group.dir("cpu").join("cpu.cfs_quota_us"), &quota.to_string())?;
            }
            Hierarchy::Unavailable(_) => {}
        }
        Ok(group)
    }

    fn dir(&self, controller: &str) -> PathBuf {
        match self.hierarchy {
            Hierarchy::V2 => Path::new(ROOT).join(PARENT).join(&self.name),
            _ => Path::new(ROOT).join(controller).join(PARENT).join(&self.name),
        }
    }

    fn dirs(&self) -> Vec<PathBuf> {
        match self.hierarchy {
            Hierarchy::V2 => vec![self.dir("")],
            Hierarchy::V1 => V1_CONTROLLERS.iter().map(|c| self.dir(c)).collect(),
            Hierarchy::Unavailable(_) => vec![],
        }
    }

    /// The `cgroup.procs` files a process writes `0` to in order to join the group.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs().into_iter().map(|dir| dir.join("cgroup.procs")).collect()
    }

    /// Moves a process (and its future children) into the group.
    pub fn add(&self, pid: u32) -> std::io::Result<()> {
        for dir in self.dirs() {
            write(dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    pub fn usage(&self) -> Usage {
        match self.hierarchy {
            Hierarchy::V2 => {
                let dir = self.dir("");
                Usage {
                    cpu_seconds: read_keyed(dir.join("cpu.stat"), "usage_usec") as f64 / 1e6,
                    memory_peak_bytes: read_u64(dir.join("memory.peak")),
                    memory_current_bytes: read_u64(dir.join("memory.current")),
                    oom_kills: read_keyed(dir.join("memory.events"), "oom_kill"),
                    pids_limit_hits: read_keyed(dir.join("pids.events"), "max"),
                    egress_denied: 0,
                }
            }
            Hierarchy::V1 => Usage {
                cpu_seconds: read_u64(self.dir("cpuacct").join("cpuacct.usage")) as f64 / 1e9,
                memory_peak_bytes: read_u64(self.dir("memory").join("memory.max_usage_in_bytes")),
                memory_current_bytes: read_u64(self.dir("memory").join("memory.usage_in_bytes")),
                oom_kills: read_keyed(self.dir("memory").join("memory.oom_control"), "oom_kill"),
                pids_limit_hits: read_keyed(self.dir("pids").join("pids.events"), "max"),
                egress_denied: 0,
            },
            Hierarchy::Unavailable(_) => Usage::default(),
        }
    }

    /// The processes still in the group.
    fn pids(&self) -> Vec<i32> {
        let Some(dir) = self.dirs().into_iter().next() else {
            return vec![];
        };
        fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Kills every process in the group, then removes it (retrying while processes exit).
    pub async fn remove(&self) {
        if matches!(self.hierarchy, Hierarchy::Unavailable(_)) {
            return;
        }
        for _ in 0..200 {
            if self.hierarchy == Hierarchy::V2 {
                let _ = fs::write(self.dir("").join("cgroup.kill"), "1");
            }
            for pid in self.pids() {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
            let all_removed = self
                .dirs()
                .into_iter()
                .all(|dir| fs::remove_dir(&dir).is_ok() || !dir.exists());
            if all_removed {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        tracing::warn!(cgroup = %self.name, "cgroup still busy after killing its processes; left in place");
    }
}
