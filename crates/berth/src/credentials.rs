//! The root access key pair, created in the data dir on first start (file mode 0600).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use berth_core::{AccountId, ids};
use berth_server::AccessKey;

const FILE: &str = "credentials.json";

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

/// Reads the root key, creating the file (0600) when it does not exist yet.
pub fn load_or_create(data_dir: &Path) -> anyhow::Result<AccessKey> {
    let file = path(data_dir);
    if file.exists() {
        return load(&file);
    }
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating data dir {}", data_dir.display()))?;
    let account_id = AccountId::try_from(ids::account_id()).map_err(anyhow::Error::msg)?;
    let key = AccessKey {
        access_key_id: format!("AKIA{}", ids::secret(16).to_ascii_uppercase()),
        secret_access_key: ids::secret(40),
        account_id,
    };
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&file)
        .with_context(|| format!("creating {}", file.display()))?;
    out.write_all(serde_json::to_string_pretty(&key)?.as_bytes())?;
    out.sync_all()?;
    Ok(key)
}

fn load(file: &Path) -> anyhow::Result<AccessKey> {
    let mode = std::fs::metadata(file)?.permissions().mode();
    if mode & 0o077 != 0 {
        bail!(
            "{} is readable by other users (mode {:o}); run `chmod 600` on it",
            file.display(),
            mode & 0o777
        );
    }
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a valid credentials file", file.display()))
}

/// The shell lines `berth credentials` prints.
pub fn export_lines(key: &AccessKey, region: &str, endpoint: &str) -> String {
    let lines = [
        format!("export AWS_ACCESS_KEY_ID={}", key.access_key_id),
        format!("export AWS_SECRET_ACCESS_KEY={}", key.secret_access_key),
        "unset AWS_SESSION_TOKEN AWS_PROFILE".to_string(),
        format!("export AWS_REGION={region}"),
        format!("export AWS_DEFAULT_REGION={region}"),
        format!("export AWS_ENDPOINT_URL_BEDROCK_AGENTCORE={endpoint}"),
        format!("export AWS_ENDPOINT_URL_BEDROCK_AGENTCORE_CONTROL={endpoint}"),
        format!("export BEDROCK_AGENTCORE_DP_ENDPOINT={endpoint}"),
        format!("export BEDROCK_AGENTCORE_CP_ENDPOINT={endpoint}"),
        format!("export BEDROCK_AGENTCORE_CONTROL_ENDPOINT={endpoint}"),
    ];
    lines.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_a_private_key_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(path(dir.path())).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create(dir.path()).unwrap(), first);
        assert_eq!(first.account_id.as_str().len(), 12);
        let lines = export_lines(&first, "us-east-1", "http://127.0.0.1:8470");
        assert!(lines.contains(&format!("AWS_ACCESS_KEY_ID={}", first.access_key_id)));
        assert!(lines.contains("AWS_ENDPOINT_URL_BEDROCK_AGENTCORE_CONTROL=http://127.0.0.1:8470"));
    }

    #[test]
    fn refuses_a_world_readable_key_file() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create(dir.path()).unwrap();
        std::fs::set_permissions(path(dir.path()), std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_or_create(dir.path()).is_err());
    }
}
