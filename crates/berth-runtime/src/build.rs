//! Turning a code bundle into something a session can run: the bundle is unpacked on the host
//! and its dependencies are installed into a virtual environment by a build sandbox (so a
//! package's install scripts run confined, like the agent itself).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_sandbox::{Backend, Egress, ExecSpec, Limits, MountSpec, SandboxSpec};

use crate::image::{self, ImageConfig, ImageSource};
use crate::model::{CodeConfiguration, Definition, python_for};
use crate::registry;

/// Where a built version lives, and what it mounts.
#[derive(Clone, Debug)]
pub struct BuiltVersion {
    pub dir: PathBuf,
}

pub const APP_MOUNT: &str = "/app";
pub const VENV_MOUNT: &str = "/opt/venv";
/// The largest unpacked bundle.
const MAX_UNPACKED_BYTES: u64 = 2 * 1024 * 1024 * 1024;
const MAX_FILES: usize = 100_000;
const LOG_LIMIT: usize = 1024 * 1024;
const FAILURE_TAIL_LINES: usize = 25;

impl BuiltVersion {
    pub fn new(runtimes_dir: &Path, runtime_id: &str, version: i64) -> Self {
        BuiltVersion {
            dir: runtimes_dir.join(runtime_id).join(version.to_string()),
        }
    }

    pub fn app(&self) -> PathBuf {
        self.dir.join("app")
    }

    pub fn venv(&self) -> PathBuf {
        self.dir.join("venv")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("build.log")
    }

    /// A container image's root filesystem.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// A container image's command, environment and working directory.
    pub fn image_config(&self) -> PathBuf {
        self.dir.join("image.json")
    }

    /// A code version's program: the entry point in the built environment.
    pub fn code_program(&self, code: &CodeConfiguration) -> Program {
        Program {
            argv: entry_command(code),
            cwd: APP_MOUNT.into(),
            base_env: BTreeMap::new(),
            forced_env: BTreeMap::from([
                (
                    "PATH".to_string(),
                    format!("{VENV_MOUNT}/bin:/usr/local/bin:/usr/bin:/bin"),
                ),
                ("VIRTUAL_ENV".to_string(), VENV_MOUNT.to_string()),
            ]),
            mounts: self.mounts(),
            root: None,
        }
    }

    /// How a session of this version runs.
    pub fn program(&self, definition: &Definition) -> Result<Program, String> {
        let artifact = &definition.agent_runtime_artifact;
        if let Some(code) = &artifact.code_configuration {
            return Ok(self.code_program(code));
        }
        let text = std::fs::read(self.image_config())
            .map_err(|e| format!("the image of this version is not unpacked: {e}"))?;
        let image: ImageConfig = serde_json::from_slice(&text).map_err(|e| format!("image.json: {e}"))?;
        let mut base_env = image.env;
        base_env
            .entry("PATH".into())
            .or_insert_with(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        Ok(Program {
            argv: image.argv,
            cwd: image.working_dir.unwrap_or_else(|| "/".into()),
            base_env,
            forced_env: BTreeMap::new(),
            mounts: Vec::new(),
            root: Some(self.rootfs()),
        })
    }

    /// The read-only mounts a session of this version gets.
    pub fn mounts(&self) -> Vec<MountSpec> {
        vec![
            MountSpec {
                source: self.app(),
                target: APP_MOUNT.into(),
                writable: false,
            },
            MountSpec {
                source: self.venv(),
                target: VENV_MOUNT.into(),
                writable: false,
            },
        ]
    }
}

/// What a session runs, and from what.
#[derive(Clone, Debug)]
pub struct Program {
    pub argv: Vec<String>,
    pub cwd: String,
    /// The environment under the runtime's `environmentVariables` (an image's `Env`).
    pub base_env: BTreeMap<String, String>,
    /// Set over everything else (the code environment's `PATH`).
    pub forced_env: BTreeMap<String, String>,
    pub mounts: Vec<MountSpec>,
    /// An image's root filesystem, instead of the host's system directories.
    pub root: Option<PathBuf>,
}

/// What the build needs besides the bundle.
pub struct BuildContext {
    pub backend: Arc<dyn Backend>,
    pub egress: Egress,
    pub timeout: Duration,
    /// Passed to pip when set (a mirror or private index).
    pub pip_index_url: Option<String>,
}

/// The agent's command line for a code configuration.
pub fn entry_command(code: &CodeConfiguration) -> Vec<String> {
    let python = format!("{VENV_MOUNT}/bin/python");
    match code.entry_point.as_slice() {
        // ["opentelemetry-instrument", "main.py"]: a console script of the environment wrapping
        // the entry file; run through the interpreter so its shebang does not matter.
        [wrapper, file] => vec![
            python.clone(),
            format!("{VENV_MOUNT}/bin/{wrapper}"),
            python,
            format!("{APP_MOUNT}/{file}"),
        ],
        [file, ..] => vec![python, format!("{APP_MOUNT}/{file}")],
        [] => vec![python],
    }
}

/// Unpacks and builds; `Err` is the failure reason shown in `failureReason`.
pub async fn build(
    context: &BuildContext,
    definition: &Definition,
    bundle: Option<PathBuf>,
    target: &BuiltVersion,
    label: &str,
) -> Result<(), String> {
    let artifact = &definition.agent_runtime_artifact;
    let Some(code) = &artifact.code_configuration else {
        return match &artifact.container_configuration {
            Some(container) => build_image(&container.container_uri, target).await,
            None => Err("agentRuntimeArtifact names no code".into()),
        };
    };
    let Some(python) = python_for(&code.runtime) else {
        return Err(format!(
            "runtime {} is not supported by this Berth yet; use a PYTHON_3_x runtime",
            code.runtime
        ));
    };
    if !Path::new("/usr/bin").join(&python).exists() {
        return Err(format!(
            "runtime {} needs /usr/bin/{python}, which is not installed on the Berth host",
            code.runtime
        ));
    }
    let Some(bundle) = bundle else {
        let location = code
            .code
            .s3
            .as_ref()
            .map(|s3| format!("s3://{}/{}", s3.bucket, s3.prefix))
            .unwrap_or_default();
        return Err(format!(
            "code bundle {location} is not in Berth's artifact store; upload it with `berth deploy` or \
             PUT /_berth/artifacts/{{bucket}}/{{key}}"
        ));
    };

    let _ = tokio::fs::remove_dir_all(&target.dir).await;
    let (app, venv) = (target.app(), target.venv());
    let unpacked = {
        let app = app.clone();
        tokio::task::spawn_blocking(move || unpack(&bundle, &app))
            .await
            .map_err(|e| format!("unpacking failed: {e}"))?
    };
    unpacked?;
    let entry = code.entry_point.last().cloned().unwrap_or_default();
    if !app.join(&entry).is_file() {
        return Err(format!("the entry point {entry} is not in the code bundle"));
    }
    tokio::fs::create_dir_all(&venv).await.map_err(|e| e.to_string())?;

    let output = install(context, &python, target, label).await?;
    let log = [output.stdout.as_slice(), output.stderr.as_slice()].concat();
    let _ = tokio::fs::write(target.log(), &log).await;
    if output.status.code != Some(0) {
        let text = String::from_utf8_lossy(&log);
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(FAILURE_TAIL_LINES)..].join("\n");
        return Err(format!(
            "the build {}; last lines of its log:\n{tail}",
            output.status.describe()
        ));
    }
    // Sessions mount the environment read-only; root-owned also keeps them from changing it.
    let venv_owned = venv.clone();
    tokio::task::spawn_blocking(move || chown_tree(&venv_owned, 0))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("could not seal the environment: {e}"))?;
    Ok(())
}

/// Fetches and unpacks a container image into the version's root filesystem.
async fn build_image(uri: &str, target: &BuiltVersion) -> Result<(), String> {
    let source = ImageSource::parse(uri)?;
    let _ = tokio::fs::remove_dir_all(&target.dir).await;
    tokio::fs::create_dir_all(&target.dir)
        .await
        .map_err(|e| e.to_string())?;
    let local = match &source {
        ImageSource::Registry(reference) => {
            let layout = target.dir.join("layout");
            registry::pull(reference, &layout)
                .await
                .map_err(|e| format!("pulling {uri}: {e}"))?;
            ImageSource::Layout {
                path: layout,
                reference: None,
            }
        }
        local => local.clone(),
    };
    let (work, rootfs) = (target.dir.clone(), target.rootfs());
    let config = tokio::task::spawn_blocking(move || image::unpack_local(&local, &work, &rootfs))
        .await
        .map_err(|e| format!("unpacking failed: {e}"))?
        .map_err(|e| format!("the image {uri} could not be unpacked: {e}"))?;
    // The layout was only the way in; the root filesystem is what sessions use.
    let _ = tokio::fs::remove_dir_all(target.dir.join("layout")).await;
    if config.argv.is_empty() {
        return Err(format!("the image {uri} names no Entrypoint or Cmd"));
    }
    let json = serde_json::to_vec(&config).map_err(|e| e.to_string())?;
    tokio::fs::write(target.image_config(), json)
        .await
        .map_err(|e| e.to_string())
}

async fn install(
    context: &BuildContext,
    python: &str,
    target: &BuiltVersion,
    label: &str,
) -> Result<berth_sandbox::guest::ExecOutput, String> {
    let spec = SandboxSpec {
        label: format!("build-{label}"),
        mounts: vec![
            MountSpec {
                source: target.app(),
                target: APP_MOUNT.into(),
                writable: false,
            },
            MountSpec {
                source: target.venv(),
                target: VENV_MOUNT.into(),
                writable: true,
            },
        ],
        limits: Limits::default(),
        egress: context.egress.clone(),
        forwards: vec![],
        root: None,
    };
    let sandbox = context
        .backend
        .create(spec)
        .await
        .map_err(|e| format!("could not start the build sandbox: {e}"))?;
    let script = format!(
        "set -e\n\
         {python} -m venv {VENV_MOUNT}\n\
         pip() {{ {VENV_MOUNT}/bin/python -m pip --disable-pip-version-check --no-input \"$@\"; }}\n\
         if [ -f {APP_MOUNT}/requirements.txt ]; then pip install -r {APP_MOUNT}/requirements.txt\n\
         elif [ -f {APP_MOUNT}/pyproject.toml ]; then cp -r {APP_MOUNT} /tmp/src && pip install /tmp/src\n\
         else echo 'no requirements.txt or pyproject.toml: nothing to install'; fi\n"
    );
    let mut env = std::collections::BTreeMap::from([
        ("HOME".to_string(), "/workspace".to_string()),
        ("PIP_NO_CACHE_DIR".to_string(), "1".to_string()),
    ]);
    if context.egress != Egress::Denied {
        let proxy = format!("http://127.0.0.1:{}", berth_sandbox::EGRESS_PROXY_PORT);
        for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
            env.insert(name.into(), proxy.clone());
        }
    }
    if let Some(index) = &context.pip_index_url {
        env.insert("PIP_INDEX_URL".into(), index.clone());
    }
    let ran = sandbox
        .guest()
        .exec_collect(
            ExecSpec {
                argv: vec!["/bin/sh".into(), "-c".into(), script],
                env,
                cwd: Some("/workspace".into()),
                timeout_ms: Some(context.timeout.as_millis() as u64),
            },
            LOG_LIMIT,
        )
        .await;
    sandbox.destroy().await;
    ran.map_err(|e| format!("the build sandbox failed: {e}"))
}

/// Unpacks a zip bundle, refusing entries that would land outside `dest` and bundles that
/// unpack to more than [`MAX_UNPACKED_BYTES`].
fn unpack(bundle: &Path, dest: &Path) -> Result<(), String> {
    let file = std::fs::File::open(bundle).map_err(|e| format!("cannot open the code bundle: {e}"))?;
    let mut archive =
        zip::ZipArchive::new(file).map_err(|e| format!("the code bundle is not a valid zip file: {e}"))?;
    if archive.len() > MAX_FILES {
        return Err(format!("the code bundle has more than {MAX_FILES} files"));
    }
    std::fs::create_dir_all(dest).map_err(|e| e.to_string())?;
    let mut total = 0u64;
    for index in 0..archive.len() {
        let mut entry = archive.by_index(index).map_err(|e| format!("bad zip entry: {e}"))?;
        let Some(relative) = entry.enclosed_name() else {
            return Err(format!(
                "the code bundle has an unsafe path: {}",
                entry.name().unwrap_or_default()
            ));
        };
        let path = dest.join(relative);
        if entry.is_dir() {
            std::fs::create_dir_all(&path).map_err(|e| e.to_string())?;
            continue;
        }
        if entry.is_symlink() {
            return Err(format!(
                "the code bundle has a symlink, which Berth does not unpack: {}",
                entry.name().unwrap_or_default()
            ));
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        let mut out = std::fs::File::create(&path).map_err(|e| e.to_string())?;
        let budget = MAX_UNPACKED_BYTES - total;
        let copied = std::io::copy(&mut (&mut entry).take(budget + 1), &mut out).map_err(|e| e.to_string())?;
        total += copied;
        if total > MAX_UNPACKED_BYTES {
            return Err(format!(
                "the code bundle unpacks to more than {MAX_UNPACKED_BYTES} bytes"
            ));
        }
        if let Some(mode) = entry.unix_mode() {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o755));
        }
    }
    Ok(())
}

fn chown_tree(path: &Path, uid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid))?;
    if std::fs::symlink_metadata(path)?.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid)?;
        }
    }
    Ok(())
}
