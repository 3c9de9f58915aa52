//! Configuration: compiled-in defaults < config file < `BERTH_*` environment variables < flags,
//! merged once into a validated [`Config`]. Unknown keys in the file and unknown `BERTH_*`
//! variables are errors.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use berth_server::AccessKey;
use serde::Deserialize;

/// The config file, every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub models_dir: Option<PathBuf>,
    pub region: Option<String>,
    pub log: Option<String>,
    #[serde(default)]
    pub limits: LimitsFile,
    #[serde(default)]
    pub memory: MemoryFile,
    #[serde(default)]
    pub runtime: RuntimeFile,
    #[serde(default)]
    pub interpreter: InterpreterFile,
    #[serde(default)]
    pub tls: TlsFile,
    #[serde(default)]
    pub models: berth_models::ModelsConfig,
    #[serde(default)]
    pub access_keys: Vec<AccessKey>,
}

/// `[tls]`: the HTTPS listener of `serve --tls`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub enabled: Option<bool>,
    /// [default: 127.0.0.1:8443]
    pub listen: Option<String>,
    /// The names the server certificate covers [default: localhost, 127.0.0.1,
    /// agentcore.local.api.aws and the region's bedrock-agentcore(-control) hosts]
    pub hostnames: Option<Vec<String>>,
}

/// The HTTPS listener, when enabled.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub listen: SocketAddr,
    pub hostnames: Vec<String>,
    /// Where the local CA lives (`DATA_DIR/tls`).
    pub dir: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    pub max_body_bytes: Option<usize>,
    pub max_clock_skew_seconds: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryFile {
    pub expiry_sweep_seconds: Option<u64>,
    /// How long a session's newest event waits before extraction, batching the turns that
    /// arrive together (default 2000).
    pub extraction_delay_ms: Option<u64>,
    /// The wait before a failed extraction's first retry; it doubles for each later one
    /// (default 30).
    pub extraction_retry_seconds: Option<u64>,
    /// Attempts before a failed extraction waits for StartMemoryExtractionJob (default 3).
    pub extraction_max_attempts: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeFile {
    /// Whether sandboxes get the egress proxy at all (default true).
    pub egress: Option<bool>,
    /// Domains `VPC`-mode runtimes may reach through the proxy.
    pub egress_allowlist: Option<Vec<String>>,
    pub session_memory_bytes: Option<u64>,
    pub session_pids: Option<u64>,
    pub session_cpu_millicores: Option<u64>,
    pub startup_timeout_seconds: Option<u64>,
    pub max_payload_bytes: Option<usize>,
    /// A package index for code builds (pip's PIP_INDEX_URL).
    pub pip_index_url: Option<String>,
    /// The default isolation tier: namespace or gvisor.
    pub isolation: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterpreterFile {
    /// The built interpreter environment (`make interpreter-env`) [default: ~/.cache/berth/interpreter].
    pub environment_dir: Option<PathBuf>,
    /// The isolation tier of sessions: namespace or gvisor [default: runtime.isolation].
    pub isolation: Option<String>,
    /// The system interpreter's network: SANDBOX (none, the default) or PUBLIC.
    pub network_mode: Option<String>,
    /// How long one executeCode or executeCommand may run (default 240).
    pub execution_timeout_seconds: Option<u64>,
    /// Output kept per stream of one tool call (default 1 MiB).
    pub max_output_bytes: Option<usize>,
    /// Sessions kept started ahead, without network (default 2).
    pub warm_pool: Option<usize>,
    /// Live sessions at most (default 64).
    pub max_sessions: Option<usize>,
    pub session_memory_bytes: Option<u64>,
    pub session_pids: Option<u64>,
    pub session_cpu_millicores: Option<u64>,
    /// The largest InvokeCodeInterpreter request (default 150 MiB: 100 MB of files in base64).
    pub max_payload_bytes: Option<usize>,
}

/// Code Interpreter's validated settings.
#[derive(Debug, Clone)]
pub struct InterpreterConfig {
    pub environment_dir: PathBuf,
    pub isolation: berth_sandbox::Tier,
    pub network_mode: String,
    pub execution_timeout_seconds: u64,
    pub max_output_bytes: usize,
    pub warm_pool: usize,
    pub max_sessions: usize,
    pub limits: berth_sandbox::Limits,
    pub max_payload_bytes: usize,
}

fn tier(field: &str, name: Option<&str>, default: berth_sandbox::Tier) -> anyhow::Result<berth_sandbox::Tier> {
    match name {
        None => Ok(default),
        Some(name @ ("namespace" | "gvisor")) => Ok(berth_sandbox::Tier::parse(name).unwrap_or(default)),
        Some(other) => bail!("{field}: `{other}` is not a tier; use namespace or gvisor"),
    }
}

fn session_limits(
    section: &str,
    memory: Option<u64>,
    pids: Option<u64>,
    cpu: Option<u64>,
) -> anyhow::Result<berth_sandbox::Limits> {
    let defaults = berth_sandbox::Limits::default();
    let limits = berth_sandbox::Limits {
        memory_bytes: memory.unwrap_or(defaults.memory_bytes),
        pids: pids.unwrap_or(defaults.pids),
        cpu_millicores: cpu.unwrap_or(defaults.cpu_millicores),
        tmp_bytes: defaults.tmp_bytes,
    };
    if limits.memory_bytes < 32 * 1024 * 1024 {
        bail!("{section}.session_memory_bytes: must be at least 33554432 (32 MiB)");
    }
    if limits.pids < 8 {
        bail!("{section}.session_pids: must be at least 8");
    }
    if !(10..=1_000_000).contains(&limits.cpu_millicores) {
        bail!("{section}.session_cpu_millicores: must be between 10 and 1000000");
    }
    Ok(limits)
}

impl InterpreterConfig {
    fn from_file(
        file: InterpreterFile,
        environment_dir: PathBuf,
        runtime: &RuntimeConfig,
    ) -> anyhow::Result<InterpreterConfig> {
        let network_mode = file.network_mode.unwrap_or_else(|| "SANDBOX".into());
        if !["SANDBOX", "PUBLIC"].contains(&network_mode.as_str()) {
            bail!("interpreter.network_mode: `{network_mode}` is not SANDBOX or PUBLIC");
        }
        let execution_timeout_seconds = file.execution_timeout_seconds.unwrap_or(240);
        if !(1..=28_800).contains(&execution_timeout_seconds) {
            bail!("interpreter.execution_timeout_seconds: must be between 1 and 28800");
        }
        let max_output_bytes = file.max_output_bytes.unwrap_or(1024 * 1024);
        if !(1024..=16 * 1024 * 1024).contains(&max_output_bytes) {
            bail!("interpreter.max_output_bytes: must be between 1024 and 16777216");
        }
        let max_sessions = file.max_sessions.unwrap_or(64);
        if max_sessions == 0 {
            bail!("interpreter.max_sessions: must be at least 1");
        }
        let max_payload_bytes = file.max_payload_bytes.unwrap_or(150 * 1024 * 1024);
        if !(1024..=1 << 31).contains(&max_payload_bytes) {
            bail!("interpreter.max_payload_bytes: must be between 1024 and 2147483648");
        }
        Ok(InterpreterConfig {
            environment_dir,
            isolation: tier("interpreter.isolation", file.isolation.as_deref(), runtime.isolation)?,
            network_mode,
            execution_timeout_seconds,
            max_output_bytes,
            warm_pool: file.warm_pool.unwrap_or(2).min(64),
            max_sessions,
            limits: session_limits(
                "interpreter",
                file.session_memory_bytes,
                file.session_pids,
                file.session_cpu_millicores,
            )?,
            max_payload_bytes,
        })
    }
}

/// Runtime's validated settings.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub egress: bool,
    pub egress_allowlist: Vec<String>,
    pub limits: berth_sandbox::Limits,
    pub startup_timeout_seconds: u64,
    pub max_payload_bytes: usize,
    pub pip_index_url: Option<String>,
    pub isolation: berth_sandbox::Tier,
}

impl RuntimeConfig {
    fn from_file(file: RuntimeFile) -> anyhow::Result<RuntimeConfig> {
        let limits = session_limits(
            "runtime",
            file.session_memory_bytes,
            file.session_pids,
            file.session_cpu_millicores,
        )?;
        let max_payload_bytes = file.max_payload_bytes.unwrap_or(100 * 1024 * 1024);
        if !(1024..=1 << 31).contains(&max_payload_bytes) {
            bail!("runtime.max_payload_bytes: must be between 1024 and 2147483648");
        }
        let startup_timeout_seconds = file.startup_timeout_seconds.unwrap_or(60);
        if !(1..=3600).contains(&startup_timeout_seconds) {
            bail!("runtime.startup_timeout_seconds: must be between 1 and 3600");
        }
        let isolation = tier(
            "runtime.isolation",
            file.isolation.as_deref(),
            berth_sandbox::Tier::Namespace,
        )?;
        Ok(RuntimeConfig {
            isolation,
            egress: file.egress.unwrap_or(true),
            egress_allowlist: file.egress_allowlist.unwrap_or_default(),
            limits,
            startup_timeout_seconds,
            max_payload_bytes,
            pip_index_url: file.pip_index_url,
        })
    }
}

/// Values from flags or their `BERTH_*` variables (clap resolves flag over variable).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Overrides {
    /// Address to listen on [default: 127.0.0.1:8470]
    #[arg(long, env = "BERTH_LISTEN")]
    pub listen: Option<String>,
    /// Directory for the database, keys and artifacts [default: ~/.local/share/berth]
    #[arg(long, env = "BERTH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// sqlite://PATH or postgres://… [default: SQLite in the data dir]
    #[arg(long, env = "BERTH_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Directory of the embedded models (`make models` fills it) [default: ~/.cache/berth/models]
    #[arg(long, env = "BERTH_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,
    /// The Code Interpreter environment (`make interpreter-env` builds it) [default: ~/.cache/berth/interpreter]
    #[arg(long, env = "BERTH_INTERPRETER_DIR")]
    pub interpreter_dir: Option<PathBuf>,
    /// Config file (TOML)
    #[arg(long, env = "BERTH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Region in ARNs and the SigV4 scope [default: us-east-1]
    #[arg(long, env = "BERTH_REGION")]
    pub region: Option<String>,
    /// Log filter, e.g. `info` or `berth=debug` [default: info]
    #[arg(long, env = "BERTH_LOG")]
    pub log: Option<String>,
    /// Also serve HTTPS, with a certificate from a local CA (DATA_DIR/tls/ca.pem), for the SDK
    /// helpers that only talk to AWS-named https:// hosts
    #[arg(long, env = "BERTH_TLS")]
    pub tls: bool,
    /// Address of the HTTPS listener [default: 127.0.0.1:8443]
    #[arg(long, env = "BERTH_TLS_LISTEN")]
    pub tls_listen: Option<String>,
}

/// The environment variables Berth reads. `BERTH_TEST_*` is reserved for the test suite.
const KNOWN_VARIABLES: [&str; 10] = [
    "BERTH_LISTEN",
    "BERTH_DATA_DIR",
    "BERTH_DATABASE_URL",
    "BERTH_MODELS_DIR",
    "BERTH_INTERPRETER_DIR",
    "BERTH_CONFIG",
    "BERTH_REGION",
    "BERTH_LOG",
    "BERTH_TLS",
    "BERTH_TLS_LISTEN",
];

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub models_dir: PathBuf,
    pub region: String,
    pub log: String,
    pub max_body_bytes: usize,
    pub max_clock_skew_seconds: i64,
    pub expiry_sweep_seconds: u64,
    pub extraction: berth_memory::ExtractionSettings,
    pub models: berth_models::ModelsConfig,
    pub access_keys: Vec<AccessKey>,
    pub runtime: RuntimeConfig,
    pub interpreter: InterpreterConfig,
    pub tls: Option<TlsConfig>,
}

/// `$XDG_…/within`, or `$HOME/home_fallback/within` when the XDG variable is not set.
fn xdg_dir(variable: &str, home_fallback: &str, within: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os(variable) {
        return PathBuf::from(dir).join(within);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(home_fallback).join(within)
}

fn default_data_dir() -> PathBuf {
    xdg_dir("XDG_DATA_HOME", ".local/share", "berth")
}

/// Where `make interpreter-env` (tools/build-interpreter-env.sh) builds it by default.
fn default_interpreter_dir() -> PathBuf {
    xdg_dir("XDG_CACHE_HOME", ".cache", "berth/interpreter")
}

/// Where `make models` (tools/fetch-models.sh) unpacks the embedded models by default.
fn default_models_dir() -> PathBuf {
    xdg_dir("XDG_CACHE_HOME", ".cache", "berth/models")
}

fn valid_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
        && parts.last().is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

impl Config {
    /// Rejects `BERTH_*` variables Berth does not know (a typo would otherwise be ignored).
    pub fn check_environment(vars: impl Iterator<Item = String>) -> anyhow::Result<()> {
        for name in vars.filter(|n| n.starts_with("BERTH_") && !n.starts_with("BERTH_TEST_")) {
            if !KNOWN_VARIABLES.contains(&name.as_str()) {
                bail!(
                    "unknown environment variable `{name}`; Berth reads {}",
                    KNOWN_VARIABLES.join(", ")
                );
            }
        }
        Ok(())
    }

    pub fn load(overrides: &Overrides) -> anyhow::Result<Config> {
        let file = match &overrides.config {
            Some(path) => Self::read_file(path)?,
            None => FileConfig::default(),
        };
        Self::merge(file, overrides.clone())
    }

    fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("in config file {}", path.display()))
    }

    /// Merges the file under the overrides and validates every field, naming the one that fails.
    pub fn merge(file: FileConfig, overrides: Overrides) -> anyhow::Result<Config> {
        let listen = overrides
            .listen
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:8470".into());
        let listen: SocketAddr = listen
            .parse()
            .with_context(|| format!("listen: `{listen}` is not an address like 127.0.0.1:8470"))?;
        let data_dir = overrides.data_dir.or(file.data_dir).unwrap_or_else(default_data_dir);
        let database_url = overrides
            .database_url
            .or(file.database_url)
            .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", data_dir.join("berth.db").display()));
        if !["sqlite:", "postgres:", "postgresql:"]
            .iter()
            .any(|p| database_url.starts_with(p))
        {
            bail!("database_url: `{database_url}` must start with sqlite:// or postgres://");
        }
        let region = overrides.region.or(file.region).unwrap_or_else(|| "us-east-1".into());
        if !valid_region(&region) {
            bail!("region: `{region}` is not a region name like us-east-1");
        }
        let max_body_bytes = file.limits.max_body_bytes.unwrap_or(32 * 1024 * 1024);
        if !(1024..=1 << 30).contains(&max_body_bytes) {
            bail!("limits.max_body_bytes: must be between 1024 and 1073741824");
        }
        let max_clock_skew_seconds = file.limits.max_clock_skew_seconds.unwrap_or(300);
        if !(1..=3600).contains(&max_clock_skew_seconds) {
            bail!("limits.max_clock_skew_seconds: must be between 1 and 3600");
        }
        let expiry_sweep_seconds = file.memory.expiry_sweep_seconds.unwrap_or(60);
        if expiry_sweep_seconds == 0 {
            bail!("memory.expiry_sweep_seconds: must be at least 1");
        }
        let defaults = berth_memory::ExtractionSettings::default();
        let extraction = berth_memory::ExtractionSettings {
            batch_delay: file
                .memory
                .extraction_delay_ms
                .map_or(defaults.batch_delay, Duration::from_millis),
            retry_delay: file
                .memory
                .extraction_retry_seconds
                .map_or(defaults.retry_delay, Duration::from_secs),
            max_attempts: file.memory.extraction_max_attempts.unwrap_or(defaults.max_attempts),
            ..defaults
        };
        if extraction.batch_delay > Duration::from_secs(3600) {
            bail!("memory.extraction_delay_ms: must be at most 3600000");
        }
        if extraction.retry_delay.is_zero() || extraction.retry_delay > Duration::from_secs(86_400) {
            bail!("memory.extraction_retry_seconds: must be between 1 and 86400");
        }
        if !(1..=20).contains(&extraction.max_attempts) {
            bail!("memory.extraction_max_attempts: must be between 1 and 20");
        }
        let runtime = RuntimeConfig::from_file(file.runtime)?;
        let interpreter_dir = overrides
            .interpreter_dir
            .clone()
            .or(file.interpreter.environment_dir.clone())
            .unwrap_or_else(default_interpreter_dir);
        let tls = if overrides.tls || overrides.tls_listen.is_some() || file.tls.enabled.unwrap_or(false) {
            let tls_listen = overrides
                .tls_listen
                .or(file.tls.listen)
                .unwrap_or_else(|| "127.0.0.1:8443".into());
            let hostnames = file
                .tls
                .hostnames
                .unwrap_or_else(|| crate::tls::default_hostnames(&region));
            if hostnames.is_empty() {
                bail!("tls.hostnames: name at least one host");
            }
            Some(TlsConfig {
                listen: tls_listen
                    .parse()
                    .with_context(|| format!("tls.listen: `{tls_listen}` is not an address like 127.0.0.1:8443"))?,
                hostnames,
                dir: data_dir.join("tls"),
            })
        } else {
            None
        };
        for (i, key) in file.access_keys.iter().enumerate() {
            if key.access_key_id.len() < 16 || key.secret_access_key.len() < 16 {
                bail!("access_keys[{i}]: access_key_id and secret_access_key must be at least 16 characters");
            }
        }
        Ok(Config {
            listen,
            data_dir,
            database_url,
            models_dir: overrides
                .models_dir
                .or(file.models_dir)
                .unwrap_or_else(default_models_dir),
            region,
            log: overrides.log.or(file.log).unwrap_or_else(|| "info".into()),
            max_body_bytes,
            max_clock_skew_seconds,
            expiry_sweep_seconds,
            extraction,
            models: file.models,
            access_keys: file.access_keys,
            interpreter: InterpreterConfig::from_file(file.interpreter, interpreter_dir, &runtime)?,
            runtime,
            tls,
        })
    }

    /// The URL clients use to reach this server.
    pub fn endpoint_url(&self) -> String {
        let host = if self.listen.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else if self.listen.is_ipv6() {
            format!("[{}]", self.listen.ip())
        } else {
            self.listen.ip().to_string()
        };
        format!("http://{host}:{}", self.listen.port())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_file_and_overrides_stack_in_order() {
        let file: FileConfig =
            toml::from_str("listen = \"127.0.0.1:9000\"\nregion = \"eu-west-1\"\n[limits]\nmax_body_bytes = 2048\n")
                .unwrap();
        let overrides = Overrides {
            region: Some("us-west-2".into()),
            ..Default::default()
        };
        let config = Config::merge(file, overrides).unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.region, "us-west-2");
        assert_eq!(config.max_body_bytes, 2048);
        assert_eq!(config.endpoint_url(), "http://127.0.0.1:9000");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_field() {
        assert!(toml::from_str::<FileConfig>("listn = \"x\"").is_err());
        assert!(toml::from_str::<FileConfig>("[limits]\nmax_body = 1").is_err());
        let bad = |o: Overrides| Config::merge(FileConfig::default(), o).unwrap_err().to_string();
        assert!(
            bad(Overrides {
                listen: Some("nowhere".into()),
                ..Default::default()
            })
            .starts_with("listen")
        );
        assert!(
            bad(Overrides {
                region: Some("mars".into()),
                ..Default::default()
            })
            .starts_with("region")
        );
        assert!(
            bad(Overrides {
                database_url: Some("mysql://x".into()),
                ..Default::default()
            })
            .starts_with("database_url")
        );
    }

    #[test]
    fn unknown_berth_variables_are_rejected() {
        assert!(Config::check_environment(["BERTH_LISTEN".to_string(), "PATH".to_string()].into_iter()).is_ok());
        assert!(Config::check_environment(["BERTH_TEST_POSTGRES_URL".to_string()].into_iter()).is_ok());
        assert!(Config::check_environment(["BERTH_LISTN".to_string()].into_iter()).is_err());
    }
}
