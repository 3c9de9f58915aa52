//! The file tools. Everything runs inside the sandbox through the guest, so the session's own
//! view of its files (and nothing else) is what they see.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use berth_sandbox::{ExecSpec, Sandbox};
use serde_json::{Value, json};

use crate::paths::{WorkspacePath, mime_type};
use crate::tools::{error_result, result, text_block};

/// The largest file readFiles returns: one result event per file, and botocore refuses event
/// payloads over 24 MiB, which base64 and JSON must fit in.
pub const MAX_READ_BYTES: u64 = 17 * 1024 * 1024;
/// How many entries listFiles returns.
const MAX_LISTED: usize = 10_000;

async fn shell(
    sandbox: &dyn Sandbox,
    vars: &BTreeMap<String, String>,
    script: &str,
    args: impl IntoIterator<Item = String>,
) -> Result<berth_sandbox::guest::ExecOutput, String> {
    let mut argv = vec!["/bin/sh".to_string(), "-c".into(), script.into(), "sh".into()];
    argv.extend(args);
    let spec = ExecSpec {
        argv,
        env: vars.clone(),
        cwd: None,
        timeout_ms: Some(60_000),
    };
    sandbox
        .guest()
        .exec_collect(spec, 8 * 1024 * 1024)
        .await
        .map_err(|e| e.to_string())
}

/// Writes every file under a temporary name beside its target, then renames them all; if any
/// write fails, the temporary files are removed and no target changes.
pub async fn write(
    sandbox: &dyn Sandbox,
    vars: &BTreeMap<String, String>,
    files: &[(WorkspacePath, Vec<u8>)],
) -> Value {
    let suffix = berth_core::ids::random_alphanumeric(10);
    let temporary = |path: &WorkspacePath| {
        let absolute = path.absolute();
        let (dir, name) = absolute.rsplit_once('/').unwrap_or(("", &absolute));
        format!("{dir}/.{name}.berth-upload-{suffix}")
    };
    let mut written = Vec::new();
    let mut failure = None;
    for (path, data) in files {
        let temp = temporary(path);
        match sandbox.guest().write_file(&temp, data, None).await {
            Ok(()) => written.push(temp),
            Err(e) => {
                failure = Some(format!("could not write {}: {e}", path.relative()));
                written.push(temp);
                break;
            }
        }
    }
    if failure.is_none() {
        let mut args = Vec::new();
        for (path, _) in files {
            args.push(temporary(path));
            args.push(path.absolute());
        }
        // `mv -T`: a directory in the way is an error, not a place to move into.
        let script = "while [ $# -gt 0 ]; do mv -fT -- \"$1\" \"$2\" || exit 1; shift 2; done";
        match shell(sandbox, vars, script, args).await {
            Ok(output) if output.status.code == Some(0) => {
                let names: Vec<&str> = files.iter().map(|(p, _)| p.relative()).collect();
                return result(
                    vec![text_block(format!(
                        "Successfully wrote {} file(s): {}",
                        files.len(),
                        names.join(", ")
                    ))],
                    None,
                    false,
                );
            }
            Ok(output) => failure = Some(String::from_utf8_lossy(&output.stderr).trim().to_string()),
            Err(e) => failure = Some(e),
        }
    }
    let _ = shell(sandbox, vars, "rm -f -- \"$@\"", written).await;
    error_result(format!("no file was written: {}", failure.unwrap_or_default()))
}

/// One result per file: a `resource` block with the text, or the bytes as base64.
pub async fn read(sandbox: &dyn Sandbox, path: &WorkspacePath) -> Value {
    let data = match sandbox.guest().read_file(&path.absolute(), MAX_READ_BYTES).await {
        Ok(data) => data,
        Err(e) => {
            let message = e.to_string();
            let message = message.replace("/workspace/", "");
            return error_result(format!(
                "could not read {}: {}",
                path.relative(),
                message.strip_prefix("guest: ").unwrap_or(&message)
            ));
        }
    };
    let mime = mime_type(path.file_name());
    let resource = match String::from_utf8(data) {
        Ok(text) if !text.contains('\0') && !mime.is_some_and(|m| m.starts_with("image/")) => json!({
            "type": "text",
            "uri": path.uri(),
            "mimeType": mime.unwrap_or("text/plain"),
            "text": text,
        }),
        Ok(text) => blob(path, mime, text.as_bytes()),
        Err(e) => blob(path, mime, e.as_bytes()),
    };
    result(vec![json!({"type": "resource", "resource": resource})], None, false)
}

fn blob(path: &WorkspacePath, mime: Option<&str>, data: &[u8]) -> Value {
    json!({
        "type": "blob",
        "uri": path.uri(),
        "mimeType": mime.unwrap_or("application/octet-stream"),
        "blob": BASE64.encode(data),
    })
}

/// The directory's entries as `resource_link` blocks.
pub async fn list(sandbox: &dyn Sandbox, vars: &BTreeMap<String, String>, directory: &WorkspacePath) -> Value {
    // %y type, %s size, %f name; NUL-terminated so any file name survives.
    let script = "cd -- \"$1\" && find . -mindepth 1 -maxdepth 1 -printf '%y\\t%s\\t%f\\0'";
    let output = match shell(sandbox, vars, script, [directory.absolute()]).await {
        Ok(output) if output.status.code == Some(0) => output,
        Ok(output) => {
            let stderr = String::from_utf8_lossy(&output.stderr).replace("/workspace/", "");
            return error_result(format!("could not list {}: {}", display(directory), stderr.trim()));
        }
        Err(e) => return error_result(format!("could not list {}: {e}", display(directory))),
    };
    let mut entries: Vec<(bool, u64, String)> = output
        .stdout
        .split(|b| *b == 0)
        .filter_map(|record| {
            let record = String::from_utf8_lossy(record);
            let mut parts = record.splitn(3, '\t');
            let (kind, size, name) = (parts.next()?, parts.next()?, parts.next()?);
            Some((kind == "d", size.parse().unwrap_or(0), name.to_string()))
        })
        .collect();
    entries.sort_by(|a, b| a.2.cmp(&b.2));
    let total = entries.len();
    let blocks: Vec<Value> = entries
        .into_iter()
        .take(MAX_LISTED)
        .map(|(is_dir, size, name)| {
            let relative = if directory.is_root() {
                name.clone()
            } else {
                format!("{}/{name}", directory.relative())
            };
            let mut block = json!({
                "type": "resource_link",
                "uri": format!("file://{relative}"),
                "name": name,
                "description": if is_dir { "Directory" } else { "File" },
            });
            if is_dir {
                block["mimeType"] = json!("inode/directory");
            } else {
                block["size"] = json!(size);
                block["mimeType"] = json!(mime_type(&name).unwrap_or("application/octet-stream"));
            }
            block
        })
        .collect();
    let mut content = blocks;
    if total > MAX_LISTED {
        content.push(text_block(format!(
            "{} more entries were not listed",
            total - MAX_LISTED
        )));
    }
    result(content, None, false)
}

fn display(directory: &WorkspacePath) -> &str {
    if directory.is_root() { "." } else { directory.relative() }
}

/// Removes files and directories (recursively); paths that do not exist are reported.
pub async fn remove(sandbox: &dyn Sandbox, vars: &BTreeMap<String, String>, paths: &[WorkspacePath]) -> Value {
    let script = "status=0; for p; do if [ -e \"$p\" ] || [ -L \"$p\" ]; then rm -rf -- \"$p\" || status=1; \
                  else echo \"$p\"; status=1; fi; done; exit $status";
    let output = match shell(sandbox, vars, script, paths.iter().map(WorkspacePath::absolute)).await {
        Ok(output) => output,
        Err(e) => return error_result(format!("could not remove files: {e}")),
    };
    let missing: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| l.trim_start_matches("/workspace/").to_string())
        .collect();
    let removed: Vec<&str> = paths
        .iter()
        .map(WorkspacePath::relative)
        .filter(|p| !missing.iter().any(|m| m == p))
        .collect();
    let mut text = format!("Removed {} path(s): {}", removed.len(), removed.join(", "));
    if !missing.is_empty() {
        text.push_str(&format!("\nNot found: {}", missing.join(", ")));
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !stderr.trim().is_empty() {
        text.push_str(&format!("\n{}", stderr.trim().replace("/workspace/", "")));
    }
    result(vec![text_block(text)], None, output.status.code != Some(0))
}
