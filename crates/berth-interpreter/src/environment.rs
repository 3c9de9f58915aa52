//! The interpreter environment sessions mount: a Python virtual environment with the data
//! libraries and Deno, built by `tools/build-interpreter-env.sh` (`make interpreter-env`) and
//! mounted read-only at the same path inside every sandbox, so its scripts' interpreter paths
//! and matplotlib's font cache hold there too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_guest::protocol::WORKSPACE_MOUNT;
use berth_sandbox::{Egress, MountSpec};

/// Where `pip install` puts packages in a session (the environment itself is read-only).
pub const PACKAGES_DIR: &str = "/workspace/.python-packages";
/// Host-side scratch inside the sandbox: task pid files, JavaScript cells.
pub const SCRATCH_DIR: &str = "/tmp/.berth";

/// Ahead of the environment on `PATH` in sessions without network: a `pip` that says why
/// installing cannot work instead of retrying a connection for minutes.
pub const NO_NETWORK_BIN: &str = "/tmp/.berth/bin";
pub const NO_NETWORK_PIP: &str = r#"#!/bin/sh
case "$1" in
  install|download|wheel)
    echo "pip $1 needs network access, and this code interpreter session has none (network mode SANDBOX)." >&2
    echo "Create a code interpreter with networkConfiguration.networkMode PUBLIC to install packages." >&2
    exit 1 ;;
esac
exec python3 -m pip "$@"
"#;

#[derive(Clone, Debug)]
pub struct Environment {
    /// The built environment, or `None` (the host's Python alone, no JavaScript).
    dir: Option<PathBuf>,
}

impl Environment {
    /// `dir` is used when it holds a built environment.
    pub fn new(dir: &Path) -> Self {
        let built = dir.join("python/bin/python3").exists();
        Environment {
            dir: built.then(|| dir.to_path_buf()),
        }
    }

    pub fn is_built(&self) -> bool {
        self.dir.is_some()
    }

    fn venv(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join("python"))
    }

    pub fn python(&self) -> String {
        match self.venv() {
            Some(venv) => venv.join("bin/python3").display().to_string(),
            None => "/usr/bin/python3".into(),
        }
    }

    pub fn deno(&self) -> Option<String> {
        let deno = self.venv()?.join("bin/deno");
        deno.exists().then(|| deno.display().to_string())
    }

    /// Node.js, where the host has it (`runtime: nodejs`).
    pub fn node(&self) -> Option<String> {
        ["/usr/bin/node", "/usr/local/bin/node"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .map(str::to_string)
    }

    pub fn mounts(&self) -> Vec<MountSpec> {
        self.dir
            .iter()
            .map(|dir| MountSpec {
                source: dir.clone(),
                target: dir.clone(),
                writable: false,
            })
            .collect()
    }

    /// The variables every process of a session starts with.
    pub fn variables(&self, egress: &Egress) -> BTreeMap<String, String> {
        let mut path = String::new();
        let mut vars = BTreeMap::new();
        if let (Some(dir), Some(venv)) = (&self.dir, self.venv()) {
            path = format!("{}/bin:", venv.display());
            vars.insert("VIRTUAL_ENV".into(), venv.display().to_string());
            vars.insert(
                "BERTH_MPLCONFIG_PREBUILT".into(),
                dir.join("mplconfig").display().to_string(),
            );
        }
        path.push_str("/usr/local/bin:/usr/bin:/bin");
        if *egress == Egress::Denied {
            path = format!("{NO_NETWORK_BIN}:{path}");
        }
        let fixed = [
            ("PATH", path),
            ("HOME", WORKSPACE_MOUNT.into()),
            ("LANG", "C.UTF-8".into()),
            ("PYTHONIOENCODING", "utf-8".into()),
            ("PYTHONPATH", PACKAGES_DIR.into()),
            ("PIP_TARGET", PACKAGES_DIR.into()),
            ("PIP_DISABLE_PIP_VERSION_CHECK", "1".into()),
            ("MPLBACKEND", "Agg".into()),
            ("MPLCONFIGDIR", "/tmp/.matplotlib".into()),
            ("DENO_DIR", "/tmp/.deno".into()),
            ("DENO_NO_UPDATE_CHECK", "1".into()),
            ("NO_COLOR", "1".into()),
        ];
        for (name, value) in fixed {
            vars.insert(name.into(), value);
        }
        if *egress != Egress::Denied {
            let proxy = format!("http://127.0.0.1:{}", berth_sandbox::EGRESS_PROXY_PORT);
            for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
                vars.insert(name.into(), proxy.clone());
            }
            vars.insert("NO_PROXY".into(), "127.0.0.1,localhost".into());
            vars.insert("no_proxy".into(), "127.0.0.1,localhost".into());
        }
        vars
    }
}
