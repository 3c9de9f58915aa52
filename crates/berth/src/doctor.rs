//! `berth doctor`: what is ready and what is missing, one line per check. It changes nothing:
//! it neither creates the database nor applies migrations.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use berth_core::SystemClock;
use berth_memory::MemoryService;
use berth_server::Services;
use berth_server::operations::Registry;
use berth_store::Store;

use crate::config::Config;
use crate::credentials;
use crate::serve::redact;

struct Report {
    failed: bool,
}

impl Report {
    fn line(&mut self, ok: bool, what: &str, detail: &str) {
        if !ok {
            self.failed = true;
        }
        println!("{} {what:<17} {detail}", if ok { "ok  " } else { "FAIL" });
    }

    fn info(&self, what: &str, detail: &str) {
        println!("--   {what:<17} {detail}");
    }
}

/// Builds and tears down a probe sandbox per tier (in a temporary directory, not the data dir)
/// and says, for each tier that does not work, why.
async fn probe_sandboxes(report: &mut Report) {
    use berth_sandbox::cgroup::Hierarchy;
    use berth_sandbox::gvisor::{GvisorBackend, GvisorSettings};
    use berth_sandbox::namespace::{NamespaceBackend, NamespaceSettings};
    use berth_sandbox::probe;

    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return report.line(false, "sandbox", &format!("cannot locate the berth binary: {e}")),
    };
    let state = std::env::temp_dir().join(format!("berth-doctor-{}", std::process::id()));
    let guest = vec![exe.into_os_string(), "__guest".into()];
    let settings = NamespaceSettings::new(guest.clone(), state.join("namespace"));
    match NamespaceBackend::new(settings) {
        Ok(backend) => {
            match backend.hierarchy() {
                Hierarchy::Unavailable(reason) => report.info("cgroups", &format!("limits not enforced: {reason}")),
                hierarchy => report.line(
                    true,
                    "cgroups",
                    &format!("{hierarchy:?}: memory, pids and cpu limits and metering"),
                ),
            }
            let namespace = tokio::time::timeout(probe::PROBE_TIMEOUT, probe::probe_backend(&backend)).await;
            match namespace {
                Ok(tier) => report.line(tier.available, "tier namespace", &tier.detail),
                Err(_) => report.line(false, "tier namespace", "the probe sandbox did not answer in time"),
            }
        }
        Err(e) => report.line(
            false,
            "tier namespace",
            &format!("cannot prepare {}: {e}", state.display()),
        ),
    }
    match probe::runsc() {
        Some(runsc) => {
            let settings = GvisorSettings::new(guest, state.join("gvisor"), runsc);
            match GvisorBackend::new(settings) {
                Ok(backend) => match tokio::time::timeout(probe::PROBE_TIMEOUT, probe::probe_backend(&backend)).await {
                    Ok(tier) => report.line(tier.available, "tier gvisor", &tier.detail),
                    Err(_) => report.line(false, "tier gvisor", "the probe sandbox did not answer in time"),
                },
                Err(e) => report.line(
                    false,
                    "tier gvisor",
                    &format!("cannot prepare its state directory: {e}"),
                ),
            }
        }
        None => report.info("tier gvisor", "runsc is not installed (Debian package `runsc`)"),
    }
    let _ = std::fs::remove_dir_all(&state);
    let microvm = probe::probe_microvm();
    report.info("tier microvm", &microvm.detail);
    let pythons: Vec<String> = (10..=14)
        .filter(|minor| std::path::Path::new(&format!("/usr/bin/python3.{minor}")).exists())
        .map(|minor| format!("PYTHON_3_{minor}"))
        .collect();
    if pythons.is_empty() {
        report.line(false, "runtime", "no /usr/bin/python3.x: code runtimes cannot be built");
    } else {
        report.line(
            true,
            "runtime",
            &format!("code runtimes available: {}", pythons.join(", ")),
        );
    }
}

/// The SQLite file a `sqlite://PATH?…` URL names.
fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    Some(rest.split('?').next().unwrap_or(rest))
}

/// The configured providers (not contacted: a doctor run makes no paid calls), then the
/// embedded models, each loaded and run. A missing embedded model is news, not a failure, unless
/// the configuration chose it: Berth serves without it, with less.
fn check_models(report: &mut Report, config: &Config) {
    let models = &config.models;
    for (name, provider) in &models.providers {
        let endpoint = provider
            .base_url
            .as_deref()
            .or(provider.endpoint_url.as_deref())
            .unwrap_or("its public endpoint");
        report.info(
            "model provider",
            &format!(
                "{name}: {} {} at {endpoint} (configured, not contacted)",
                provider.kind,
                provider.model.as_deref().unwrap_or("?")
            ),
        );
    }
    if let Err(error) = berth_models::providers::build(models, std::path::Path::new("/nonexistent")) {
        report.line(false, "models", &error);
    }
    let embedded =
        |role: Option<&str>| role.unwrap_or(berth_models::providers::EMBEDDED) == berth_models::providers::EMBEDDED;
    let (embedder, chat) = (embedded(models.embedder.as_deref()), embedded(models.chat.as_deref()));
    for (what, status) in berth_models::doctor(&config.models_dir, embedder, chat) {
        match status {
            Ok(detail) => report.line(true, what, &detail),
            Err(reason) => {
                let without = if what == "chat model" {
                    "strategies cannot extract records (their extraction jobs fail visibly)"
                } else {
                    "retrieval is full-text only"
                };
                report.info(what, &format!("{reason}; without it {without}"));
            }
        }
    }
}

pub async fn run(config: Config) -> anyhow::Result<bool> {
    let mut report = Report { failed: false };
    let dir = &config.data_dir;
    let writable = if dir.exists() {
        let probe = dir.join(".doctor-write-test");
        let ok = std::fs::write(&probe, b"ok").is_ok();
        let _ = std::fs::remove_file(&probe);
        ok
    } else {
        dir.ancestors()
            .skip(1)
            .find(|a| a.exists())
            .is_some_and(|a| std::fs::metadata(a).is_ok_and(|m| !m.permissions().readonly()))
    };
    let state = if dir.exists() { "" } else { " (created on first start)" };
    report.line(
        writable,
        "data dir",
        &format!(
            "{}{state} {}",
            dir.display(),
            if writable { "is writable" } else { "is not writable" }
        ),
    );

    let key_file = credentials::path(dir);
    match std::fs::metadata(&key_file) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            report.line(
                mode & 0o077 == 0,
                "credentials",
                &format!("{} (mode {mode:o})", key_file.display()),
            );
        }
        Err(_) => report.info(
            "credentials",
            &format!("{} will be created on first start", key_file.display()),
        ),
    }

    let url = &config.database_url;
    let missing_sqlite = sqlite_path(url).is_some_and(|path| !std::path::Path::new(path).exists());
    if missing_sqlite {
        report.info("database", &format!("{} will be created on first start", redact(url)));
    } else {
        match Store::connect(url, Arc::new(SystemClock)).await {
            Ok(store) => {
                let version = store.schema_version().await.unwrap_or(0);
                let pending = store.pending_migrations().await;
                let migrations = match pending {
                    0 => "up to date".to_string(),
                    n => format!("{n} migration(s) pending; `berth serve` applies them"),
                };
                report.line(
                    true,
                    "database",
                    &format!(
                        "{} ({}), schema version {version}, {migrations}",
                        store.backend().name(),
                        redact(url)
                    ),
                );
                let memory = MemoryService::new(store.clone(), &config.region);
                let registry = Registry::new(
                    &Services {
                        memory,
                        runtime: None,
                        interpreter: None,
                    },
                    &store,
                );
                report.line(
                    true,
                    "memory",
                    &format!(
                        "ready: control plane, short-term events, long-term records and extraction ({} operations served in all)",
                        registry.names().len()
                    ),
                );
                store.close().await;
            }
            Err(error) => report.line(false, "database", &format!("{} is not reachable: {error}", redact(url))),
        }
    }
    probe_sandboxes(&mut report).await;
    check_models(&mut report, &config);
    for service in [
        "gateway",
        "identity",
        "code interpreter",
        "browser",
        "observability",
        "evaluations",
        "policy",
    ] {
        report.info(service, "not implemented yet");
    }
    Ok(!report.failed)
}
