//! `berth doctor`: what is ready and what is missing, one line per check.

use std::os::unix::fs::PermissionsExt;

use crate::config::Config;
use crate::credentials;
use crate::serve;

struct Report {
    failed: bool,
}

impl Report {
    fn line(&mut self, ok: bool, what: &str, detail: &str) {
        if !ok {
            self.failed = true;
        }
        println!("{} {what:<14} {detail}", if ok { "ok  " } else { "FAIL" });
    }

    fn info(&self, what: &str, detail: &str) {
        println!("--   {what:<14} {detail}");
    }
}

pub async fn run(config: Config) -> anyhow::Result<bool> {
    let mut report = Report { failed: false };
    let dir = &config.data_dir;
    let probe = dir.join(".doctor-write-test");
    let writable = std::fs::create_dir_all(dir).is_ok() && std::fs::write(&probe, b"ok").is_ok();
    let _ = std::fs::remove_file(&probe);
    report.line(
        writable,
        "data dir",
        &format!(
            "{} {}",
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

    match serve::build(&config).await {
        Ok(built) => {
            let version = built.store.schema_version().await.unwrap_or(0);
            report.line(
                true,
                "database",
                &format!(
                    "{} ({}), schema version {version}",
                    built.store.backend().name(),
                    serve::redact(&config.database_url)
                ),
            );
            let implemented = built.state.inner.registry.names();
            report.line(
                true,
                "memory",
                &format!(
                    "ready: control plane, short-term events ({} operations in all); long-term extraction not implemented yet",
                    implemented.len()
                ),
            );
            built.store.close().await;
        }
        Err(error) => report.line(false, "database", &format!("{error:#}")),
    }
    for service in [
        "runtime",
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
