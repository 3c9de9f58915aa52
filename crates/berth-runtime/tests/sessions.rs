//! Session lifecycle with real sandboxes and a dependency-free agent speaking the runtime
//! contract: idle timeout (and `HealthyBusy` keeping a session), max lifetime, stop, an agent
//! that never becomes healthy, and one that dies mid-stream.

#![allow(
    clippy::unwrap_used,
    reason = "a test binary with its own harness; clippy cannot tell"
)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use berth_core::{AccountId, CredentialIssuer};
use berth_runtime::build::BuiltVersion;
use berth_runtime::model::{CodeConfiguration, Definition};
use berth_runtime::sessions::{AgentRequest, SessionManager, SessionSettings, SessionTarget};
use berth_sandbox::namespace::{NamespaceBackend, NamespaceSettings};
use berth_sandbox::{Backend, Limits};
use http_body_util::BodyExt;

/// Answers /ping with the status in /workspace/status (default Healthy) and /invocations with
/// a stream of lines; `{"die": true}` makes it exit halfway through the stream.
const AGENT: &str = r#"
import http.server, json, os, sys, time
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args): pass
    def do_GET(self):
        status = open("/workspace/status").read().strip() if os.path.exists("/workspace/status") else "Healthy"
        body = json.dumps({"status": status, "time_of_last_update": int(time.time())}).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def do_POST(self):
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if payload.get("busy"):
            open("/workspace/status", "w").write("HealthyBusy")
        self.send_response(200); self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked"); self.end_headers()
        for i in range(4):
            chunk = f"data: {i}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk)); self.wfile.flush()
            if payload.get("die") and i == 1:
                os._exit(1)
        self.wfile.write(b"0\r\n\r\n")
http.server.ThreadingHTTPServer(("127.0.0.1", 8080), Handler).serve_forever()
"#;

struct Keys;

impl CredentialIssuer for Keys {
    fn issue_data_plane_key(&self, _: &AccountId) -> (String, String) {
        ("ASIATEST".into(), "secret".into())
    }
    fn revoke(&self, _: &str) {}
}

type Test = fn() -> Pin<Box<dyn Future<Output = ()> + Send>>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("__guest") {
        std::process::exit(berth_guest::main_with_args(&args[1..]));
    }
    let filter = args.iter().find(|a| !a.starts_with('-')).cloned().unwrap_or_default();
    let tests: &[(&str, Test)] = &[
        ("idle_sessions_end_unless_busy", || {
            Box::pin(idle_sessions_end_unless_busy())
        }),
        ("max_lifetime_and_stop_end_sessions", || {
            Box::pin(max_lifetime_and_stop_end_sessions())
        }),
        ("unhealthy_and_crashing_agents_are_contained", || {
            Box::pin(unhealthy_and_crashing_agents_are_contained())
        }),
    ];
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut failed = 0;
    for (name, test) in tests.iter().filter(|(name, _)| name.contains(&filter)) {
        match runtime.block_on(async { tokio::spawn(test()).await }) {
            Ok(()) => println!("test {name} ... ok"),
            Err(_) => {
                println!("test {name} ... FAILED");
                failed += 1;
            }
        }
    }
    std::process::exit(i32::from(failed > 0));
}

struct Fixture {
    _dir: tempfile::TempDir,
    manager: SessionManager,
    built: BuiltVersion,
    account: AccountId,
}

fn fixture(startup: Duration, agent: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let backend = NamespaceBackend::new(NamespaceSettings::new(
        vec![exe.into(), "__guest".into()],
        dir.path().join("sb"),
    ))
    .unwrap();
    let built = BuiltVersion::new(&dir.path().join("runtimes"), "agent-0123456789", 1);
    std::fs::create_dir_all(built.app()).unwrap();
    std::fs::write(built.app().join("main.py"), agent).unwrap();
    std::fs::create_dir_all(built.venv().join("bin")).unwrap();
    std::os::unix::fs::symlink("/usr/bin/python3", built.venv().join("bin/python")).unwrap();
    let settings = SessionSettings {
        region: "us-east-1".into(),
        api_address: "127.0.0.1:9".parse().unwrap(),
        public_endpoint: "http://127.0.0.1:9".into(),
        limits: Limits::default(),
        egress_enabled: false,
        egress_allowlist: vec![],
        startup_timeout: startup,
    };
    let backends: Vec<Arc<dyn Backend>> = vec![Arc::new(backend)];
    Fixture {
        manager: SessionManager::new(settings, backends, Arc::new(Keys)),
        built,
        account: AccountId::try_from("123456789012".to_string()).unwrap(),
        _dir: dir,
    }
}

fn definition(idle: u64, max: u64) -> (Definition, CodeConfiguration) {
    let definition: Definition = serde_json::from_value(serde_json::json!({
        "agentRuntimeArtifact": {"codeConfiguration": {"code": {"s3": {"bucket": "b", "prefix": "p"}},
            "runtime": "PYTHON_3_11", "entryPoint": ["main.py"]}},
        "lifecycleConfiguration": {"idleRuntimeSessionTimeout": idle, "maxLifetime": max},
    }))
    .unwrap();
    let code = definition.agent_runtime_artifact.code_configuration.clone().unwrap();
    (definition, code)
}

async fn call(
    f: &Fixture,
    definition: &Definition,
    code: &CodeConfiguration,
    sid: &str,
    payload: &str,
) -> Result<String, String> {
    let target = SessionTarget {
        tier: None,
        account: &f.account,
        runtime_id: "agent-0123456789",
        runtime_arn: "arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/agent-0123456789",
        version: 1,
        definition,
        program: f.built.code_program(code),
    };
    let session = f.manager.session(target, sid).await.map_err(|e| e.to_string())?;
    let response = session
        .invoke(AgentRequest {
            headers: vec![("content-type".into(), "application/json".into())],
            body: berth_runtime::request_body(payload.to_string()),
        })
        .await
        .map_err(|e| e.to_string())?;
    let body = response
        .body
        .collect()
        .await
        .map_err(|e| format!("stream broke: {e}"))?;
    Ok(String::from_utf8_lossy(&body.to_bytes()).into_owned())
}

fn live(f: &Fixture) -> Vec<String> {
    f.manager.reports().into_iter().map(|r| r.runtime_session_id).collect()
}

async fn reap_for(f: &Fixture, duration: Duration) {
    let until = tokio::time::Instant::now() + duration;
    while tokio::time::Instant::now() < until {
        f.manager.reap().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn idle_sessions_end_unless_busy() {
    let f = fixture(Duration::from_secs(20), AGENT);
    let (definition, code) = definition(1, 600);
    let out = call(&f, &definition, &code, "idle", "{}").await.unwrap();
    assert_eq!(out, "data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\n");
    call(&f, &definition, &code, "busy", r#"{"busy": true}"#).await.unwrap();
    reap_for(&f, Duration::from_secs(3)).await;
    assert_eq!(live(&f), vec!["busy".to_string()], "idle ends; HealthyBusy stays");
    f.manager.stop_all().await;
}

async fn max_lifetime_and_stop_end_sessions() {
    let f = fixture(Duration::from_secs(20), AGENT);
    let (definition, code) = definition(600, 2);
    call(&f, &definition, &code, "short", r#"{"busy": true}"#)
        .await
        .unwrap();
    let (long_definition, _) = self::definition(600, 600);
    call(&f, &long_definition, &code, "stopped", "{}").await.unwrap();
    f.manager.stop("agent-0123456789", "stopped").await.unwrap();
    assert!(f.manager.stop("agent-0123456789", "stopped").await.is_err());
    reap_for(&f, Duration::from_secs(3)).await;
    assert!(live(&f).is_empty(), "{:?}", live(&f));
}

async fn unhealthy_and_crashing_agents_are_contained() {
    // Never answers /ping: the call fails after the startup timeout with the agent's output.
    let silent = fixture(
        Duration::from_secs(2),
        "import time\nprint('warming up forever', flush=True)\ntime.sleep(600)\n",
    );
    let (definition, code) = definition(600, 600);
    let error = call(&silent, &definition, &code, "silent", "{}").await.unwrap_err();
    assert!(
        error.contains("did not answer /ping") && error.contains("warming up forever"),
        "{error}"
    );
    assert!(live(&silent).is_empty());

    // Dies mid-stream: the caller sees the stream break, and the next call gets a new sandbox.
    let f = fixture(Duration::from_secs(20), AGENT);
    let broken = call(&f, &definition, &code, "crash", r#"{"die": true}"#).await;
    assert!(
        broken.is_err() || !broken.as_ref().unwrap().contains("data: 3"),
        "{broken:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = call(&f, &definition, &code, "crash", "{}").await.unwrap();
    assert!(again.contains("data: 3"), "{again}");
    f.manager.stop_all().await;
}
