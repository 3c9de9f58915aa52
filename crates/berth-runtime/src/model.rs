//! Typed views of a runtime version's stored definition (the modelled request members).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::authorizer::CustomJwtAuthorizer;

pub const DEFAULT_ENDPOINT: &str = "DEFAULT";
pub const DEFAULT_IDLE_SECONDS: u64 = 900;
pub const DEFAULT_MAX_LIFETIME_SECONDS: u64 = 28_800;

pub const CREATING: &str = "CREATING";
pub const CREATE_FAILED: &str = "CREATE_FAILED";
pub const UPDATING: &str = "UPDATING";
pub const UPDATE_FAILED: &str = "UPDATE_FAILED";
pub const READY: &str = "READY";
pub const DELETING: &str = "DELETING";

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Definition {
    #[serde(default)]
    pub agent_runtime_artifact: Artifact,
    pub network_configuration: Option<NetworkConfiguration>,
    pub protocol_configuration: Option<ProtocolConfiguration>,
    pub lifecycle_configuration: Option<LifecycleConfiguration>,
    #[serde(default)]
    pub environment_variables: BTreeMap<String, String>,
    pub authorizer_configuration: Option<AuthorizerConfiguration>,
    pub request_header_configuration: Option<RequestHeaderConfiguration>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizerConfiguration {
    #[serde(rename = "customJWTAuthorizer")]
    pub custom_jwt_authorizer: Option<CustomJwtAuthorizer>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestHeaderConfiguration {
    #[serde(default)]
    pub request_header_allowlist: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    pub container_configuration: Option<ContainerConfiguration>,
    pub code_configuration: Option<CodeConfiguration>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerConfiguration {
    /// `oci:PATH[:REF]`, `oci-archive:PATH[:REF]`, or `[REGISTRY/]REPOSITORY[:TAG|@DIGEST]`.
    pub container_uri: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CodeConfiguration {
    pub code: Code,
    pub runtime: String,
    pub entry_point: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Code {
    pub s3: Option<S3Location>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct S3Location {
    pub bucket: String,
    pub prefix: String,
    pub version_id: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkConfiguration {
    pub network_mode: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtocolConfiguration {
    pub server_protocol: String,
    pub port: Option<u16>,
    pub path: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleConfiguration {
    pub idle_runtime_session_timeout: Option<u64>,
    pub max_lifetime: Option<u64>,
}

impl Definition {
    /// The agent's port and invocation path (spec §3.1).
    pub fn protocol(&self) -> (String, u16, String) {
        let protocol = self.protocol_configuration.as_ref();
        let server = protocol
            .map(|p| p.server_protocol.clone())
            .unwrap_or_else(|| "HTTP".into());
        let (port, path) = match server.as_str() {
            "MCP" => (8000, "/mcp"),
            "A2A" => (9000, "/"),
            _ => (8080, "/invocations"),
        };
        let port = protocol.and_then(|p| p.port).unwrap_or(port);
        let path = protocol
            .and_then(|p| p.path.clone())
            .unwrap_or_else(|| path.to_string());
        (server, port, path)
    }

    pub fn lifecycle(&self) -> (u64, u64) {
        let lifecycle = self.lifecycle_configuration.clone().unwrap_or_default();
        (
            lifecycle.idle_runtime_session_timeout.unwrap_or(DEFAULT_IDLE_SECONDS),
            lifecycle.max_lifetime.unwrap_or(DEFAULT_MAX_LIFETIME_SECONDS),
        )
    }

    /// The runtime's JWT authorizer; `None` means SigV4.
    pub fn jwt_authorizer(&self) -> Option<&CustomJwtAuthorizer> {
        self.authorizer_configuration.as_ref()?.custom_jwt_authorizer.as_ref()
    }

    pub fn header_allowlist(&self) -> &[String] {
        self.request_header_configuration
            .as_ref()
            .map(|c| c.request_header_allowlist.as_slice())
            .unwrap_or_default()
    }

    pub fn network_mode(&self) -> &str {
        self.network_configuration
            .as_ref()
            .map(|n| n.network_mode.as_str())
            .unwrap_or("PUBLIC")
    }
}

/// The interpreter for a `codeConfiguration.runtime` value, if it is a Python one.
pub fn python_for(runtime: &str) -> Option<String> {
    let minor = runtime.strip_prefix("PYTHON_3_")?;
    minor.parse::<u32>().ok()?;
    Some(format!("python3.{minor}"))
}
