//! `berth deploy PATH --name NAME [--protocol HTTP|MCP|A2A]`: package a local agent project, create or update its
//! runtime, wait until it is READY, and print its identifiers. `berth invoke`: call it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sha2::Digest;

use crate::client::{Client, encode_segment};

/// The bucket `berth deploy` uploads bundles to (any name works; this one says who put them).
const DEPLOY_BUCKET: &str = "berth-deploy";
/// Files an agent project is started from, in the order `deploy` looks for them.
const ENTRYPOINTS: [&str; 4] = ["main.py", "agent.py", "app.py", "server.py"];
/// What never goes into a bundle.
const SKIPPED: [&str; 6] = [
    ".venv",
    "venv",
    "__pycache__",
    ".git",
    ".bedrock_agentcore",
    "node_modules",
];

#[derive(clap::Args, Debug)]
pub struct DeployArgs {
    /// The agent project directory (entry point plus requirements.txt or pyproject.toml)
    pub path: PathBuf,
    /// The runtime's name ([a-zA-Z][a-zA-Z0-9_]{0,47})
    #[arg(long)]
    pub name: String,
    /// The entry file, relative to PATH [default: main.py, agent.py, app.py or server.py]
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// PYTHON_3_10 … PYTHON_3_14 [default: the host's python3]
    #[arg(long)]
    pub runtime: Option<String>,
    /// PUBLIC (egress to any domain) or VPC (the configured allowlist only)
    #[arg(long, default_value = "PUBLIC")]
    pub network_mode: String,
    /// What the agent serves: HTTP (/invocations on 8080), MCP (/mcp on 8000) or A2A (/ on 9000)
    #[arg(long, default_value = "HTTP", value_parser = ["HTTP", "MCP", "A2A"])]
    pub protocol: String,
    /// Environment variables for the agent, NAME=VALUE (repeatable)
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Give up waiting for READY after this many seconds
    #[arg(long, default_value_t = 900)]
    pub wait_seconds: u64,
}

#[derive(clap::Args, Debug)]
pub struct InvokeArgs {
    /// The runtime's ARN, id or name
    pub runtime: String,
    /// The payload (JSON)
    pub payload: String,
    /// The runtime session id (33+ characters) [default: a new one]
    #[arg(long)]
    pub session: Option<String>,
    /// The endpoint to invoke [default: DEFAULT]
    #[arg(long)]
    pub qualifier: Option<String>,
}

/// Zips a project directory (deflate), skipping environments, caches and VCS data.
pub fn pack(dir: &Path) -> anyhow::Result<Vec<u8>> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    let mut stack = vec![dir.to_path_buf()];
    let mut files = Vec::new();
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).with_context(|| format!("reading {}", current.display()))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if SKIPPED.contains(&name.as_str()) || name.ends_with(".pyc") {
                continue;
            }
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    for file in files {
        let relative = file.strip_prefix(dir)?.to_string_lossy().replace('\\', "/");
        writer.start_file(relative, options)?;
        writer.write_all(&std::fs::read(&file)?)?;
    }
    Ok(writer.finish()?.into_inner())
}

fn host_python_runtime() -> String {
    let version = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.version_info[1])"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string());
    format!("PYTHON_3_{}", version.unwrap_or_else(|| "11".into()))
}

async fn find_runtime(client: &Client, name_or_id: &str) -> anyhow::Result<Option<Value>> {
    let mut token: Option<String> = None;
    loop {
        let query = match &token {
            Some(t) => format!("/runtimes/?maxResults=100&nextToken={}", encode_segment(t)),
            None => "/runtimes/?maxResults=100".into(),
        };
        let page = client.json("POST", &query, None).await?;
        for runtime in page["agentRuntimes"].as_array().into_iter().flatten() {
            if runtime["agentRuntimeName"] == name_or_id
                || runtime["agentRuntimeId"] == name_or_id
                || runtime["agentRuntimeArn"] == name_or_id
            {
                return Ok(Some(runtime.clone()));
            }
        }
        match page["nextToken"].as_str() {
            Some(next) => token = Some(next.to_string()),
            None => return Ok(None),
        }
    }
}

pub async fn deploy(client: &Client, args: &DeployArgs) -> anyhow::Result<Value> {
    let dir = &args.path;
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let entrypoint = match &args.entrypoint {
        Some(entry) => entry.clone(),
        None => ENTRYPOINTS
            .iter()
            .find(|name| dir.join(name).is_file())
            .map(|name| name.to_string())
            .with_context(|| format!("no entry point in {}; pass --entrypoint FILE", dir.display()))?,
    };
    if !dir.join(&entrypoint).is_file() {
        bail!("the entry point {entrypoint} is not in {}", dir.display());
    }
    let bundle = pack(dir)?;
    let key = format!("{}/{}.zip", args.name, hex::encode(sha2::Sha256::digest(&bundle)));
    let path = format!("/_berth/artifacts/{DEPLOY_BUCKET}/{}", encode_segment(&key));
    let response = client
        .send("PUT", &path, &[("content-type", "application/zip")], bundle)
        .await?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        bail!("uploading the bundle: {status}: {}", String::from_utf8_lossy(&body));
    }
    let mut environment = serde_json::Map::new();
    for pair in &args.env {
        let (name, value) = pair
            .split_once('=')
            .with_context(|| format!("--env {pair}: expected NAME=VALUE"))?;
        environment.insert(name.into(), json!(value));
    }
    let runtime = args.runtime.clone().unwrap_or_else(host_python_runtime);
    let mut definition = json!({
        "agentRuntimeArtifact": {"codeConfiguration": {
            "code": {"s3": {"bucket": DEPLOY_BUCKET, "prefix": key}},
            "runtime": runtime,
            "entryPoint": [entrypoint],
        }},
        "roleArn": "arn:aws:iam::000000000000:role/berth-deploy",
        "networkConfiguration": {"networkMode": args.network_mode},
        "protocolConfiguration": {"serverProtocol": args.protocol},
    });
    if !environment.is_empty() {
        definition["environmentVariables"] = Value::Object(environment);
    }
    let answer = match find_runtime(client, &args.name).await? {
        Some(existing) => {
            let id = existing["agentRuntimeId"].as_str().unwrap_or_default().to_string();
            client
                .json("PUT", &format!("/runtimes/{}/", encode_segment(&id)), Some(&definition))
                .await?
        }
        None => {
            definition["agentRuntimeName"] = json!(args.name);
            client.json("PUT", "/runtimes/", Some(&definition)).await?
        }
    };
    let id = answer["agentRuntimeId"].as_str().unwrap_or_default().to_string();
    let deadline = Instant::now() + Duration::from_secs(args.wait_seconds);
    loop {
        let got = client
            .json("GET", &format!("/runtimes/{}/", encode_segment(&id)), None)
            .await?;
        match got["status"].as_str().unwrap_or_default() {
            "READY" => {
                return Ok(json!({
                    "agentRuntimeArn": got["agentRuntimeArn"],
                    "agentRuntimeId": got["agentRuntimeId"],
                    "agentRuntimeVersion": got["agentRuntimeVersion"],
                    "status": "READY",
                }));
            }
            status @ ("CREATE_FAILED" | "UPDATE_FAILED") => {
                bail!(
                    "{status}: {}",
                    got["failureReason"].as_str().unwrap_or("no reason given")
                );
            }
            _ if Instant::now() >= deadline => bail!("the runtime was not READY after {} s", args.wait_seconds),
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Streams the agent's answer to stdout as it arrives.
pub async fn invoke(client: &Client, args: &InvokeArgs) -> anyhow::Result<()> {
    serde_json::from_str::<Value>(&args.payload).context("the payload must be JSON")?;
    let arn = if args.runtime.starts_with("arn:") {
        args.runtime.clone()
    } else {
        let runtime = find_runtime(client, &args.runtime)
            .await?
            .with_context(|| format!("no runtime named {}", args.runtime))?;
        runtime["agentRuntimeArn"].as_str().unwrap_or_default().to_string()
    };
    let session = args
        .session
        .clone()
        .unwrap_or_else(|| format!("berth-cli-{}", berth_core::ids::random_alphanumeric(32)));
    let mut path = format!("/runtimes/{}/invocations", encode_segment(&arn));
    if let Some(qualifier) = &args.qualifier {
        path.push_str(&format!("?qualifier={}", encode_segment(qualifier)));
    }
    let headers = [
        ("content-type", "application/json"),
        ("accept", "text/event-stream, application/json"),
        ("x-amzn-bedrock-agentcore-runtime-session-id", session.as_str()),
    ];
    let response = client
        .send("POST", &path, &headers, args.payload.as_bytes().to_vec())
        .await?;
    let status = response.status();
    eprintln!("session: {session}");
    let mut body = response.into_body();
    let mut stdout = std::io::stdout();
    let mut failed = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if status.is_success() {
                stdout.write_all(&data)?;
                stdout.flush()?;
            } else {
                failed.extend_from_slice(&data);
            }
        }
    }
    if !status.is_success() {
        let value: Value = serde_json::from_slice(&failed).unwrap_or(Value::Null);
        bail!(
            "{status}: {}",
            value["message"].as_str().unwrap_or(&String::from_utf8_lossy(&failed))
        );
    }
    Ok(())
}
