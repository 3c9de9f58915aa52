//! The botocore service models of `bedrock-agentcore-control` (control plane) and
//! `bedrock-agentcore` (data plane), embedded at build time from `models/` (regenerate with
//! `tools/update-models.py`).

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use serde::Deserialize;

/// Which of the two AgentCore services an operation belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Plane {
    Control,
    Data,
}

/// One botocore service model.
#[derive(Debug, Deserialize)]
pub struct ServiceModel {
    #[serde(skip, default = "default_plane")]
    pub plane: Plane,
    pub metadata: Metadata,
    pub operations: BTreeMap<String, Operation>,
    pub shapes: HashMap<String, Shape>,
}

fn default_plane() -> Plane {
    Plane::Control
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub api_version: String,
    pub signing_name: String,
    pub service_id: String,
    #[serde(default)]
    pub botocore_version: String,
}

/// An operation: its HTTP binding and its input, output and error shapes.
#[derive(Debug, Deserialize)]
pub struct Operation {
    pub name: String,
    pub http: HttpTrait,
    pub input: Option<ShapeRef>,
    pub output: Option<ShapeRef>,
    #[serde(default)]
    pub errors: Vec<ShapeRef>,
}

impl Operation {
    /// Whether the operation models the error shape `name`.
    pub fn has_error(&self, name: &str) -> bool {
        self.errors.iter().any(|e| e.shape == name)
    }

    /// The modelled success status (200 when the model is silent).
    pub fn success_code(&self) -> u16 {
        self.http.response_code.unwrap_or(200)
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpTrait {
    pub method: String,
    pub request_uri: String,
    pub response_code: Option<u16>,
}

#[derive(Debug, Deserialize)]
pub struct ShapeRef {
    pub shape: String,
}

/// Where a member travels in the HTTP request or response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Location {
    Uri,
    Querystring,
    Header,
    Headers,
    StatusCode,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub shape: String,
    pub location: Option<Location>,
    pub location_name: Option<String>,
    #[serde(default)]
    pub idempotency_token: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShapeType {
    Structure,
    String,
    List,
    Map,
    Integer,
    Long,
    Float,
    Double,
    Boolean,
    Timestamp,
    Blob,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorTrait {
    pub http_status_code: u16,
}

/// A shape and the constraints the model puts on it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Shape {
    #[serde(rename = "type")]
    pub kind: ShapeType,
    #[serde(default)]
    pub members: BTreeMap<String, Member>,
    #[serde(default)]
    pub required: Vec<String>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub pattern: Option<String>,
    #[serde(rename = "enum", default)]
    pub enum_values: Vec<String>,
    #[serde(default)]
    pub union: bool,
    #[serde(default)]
    pub document: bool,
    #[serde(default)]
    pub sensitive: bool,
    #[serde(default)]
    pub streaming: bool,
    #[serde(default)]
    pub eventstream: bool,
    pub member: Option<ShapeRef>,
    pub key: Option<ShapeRef>,
    pub value: Option<ShapeRef>,
    pub payload: Option<String>,
    pub timestamp_format: Option<String>,
    pub error: Option<ErrorTrait>,
}

impl ServiceModel {
    fn parse(text: &str, plane: Plane) -> ServiceModel {
        let mut model: ServiceModel = serde_json::from_str(text).expect("invariant: the embedded service model parses");
        model.plane = plane;
        model
    }

    /// The shape named `name`. Every reference inside a model resolves, which the tests check.
    pub fn shape(&self, name: &str) -> Option<&Shape> {
        self.shapes.get(name)
    }

    pub fn operation(&self, name: &str) -> Option<&Operation> {
        self.operations.get(name)
    }

    /// The HTTP status of error shape `name`, if the model declares it.
    pub fn error_status(&self, name: &str) -> Option<u16> {
        self.shape(name)?.error.as_ref().map(|e| e.http_status_code)
    }
}

/// Both service models.
#[derive(Debug)]
pub struct Models {
    pub control: ServiceModel,
    pub data: ServiceModel,
}

impl Models {
    pub fn plane(&self, plane: Plane) -> &ServiceModel {
        match plane {
            Plane::Control => &self.control,
            Plane::Data => &self.data,
        }
    }
}

static MODELS: LazyLock<Models> = LazyLock::new(|| Models {
    control: ServiceModel::parse(include_str!("../models/bedrock-agentcore-control.json"), Plane::Control),
    data: ServiceModel::parse(include_str!("../models/bedrock-agentcore.json"), Plane::Data),
});

/// The embedded models, parsed on first use.
pub fn models() -> &'static Models {
    &MODELS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(shape: &Shape) -> Vec<&str> {
        let mut out: Vec<&str> = shape.members.values().map(|m| m.shape.as_str()).collect();
        for r in [&shape.member, &shape.key, &shape.value].into_iter().flatten() {
            out.push(&r.shape);
        }
        out
    }

    #[test]
    fn every_shape_reference_resolves() {
        for model in [&models().control, &models().data] {
            for (name, shape) in &model.shapes {
                for target in refs(shape) {
                    assert!(model.shape(target).is_some(), "{name} refers to missing {target}");
                }
            }
            for op in model.operations.values() {
                for r in op.input.iter().chain(op.output.iter()).chain(op.errors.iter()) {
                    assert!(
                        model.shape(&r.shape).is_some(),
                        "{} refers to missing {}",
                        op.name,
                        r.shape
                    );
                }
            }
        }
    }

    #[test]
    fn both_planes_sign_as_bedrock_agentcore() {
        assert_eq!(models().control.metadata.signing_name, "bedrock-agentcore");
        assert_eq!(models().data.metadata.signing_name, "bedrock-agentcore");
        assert_eq!(
            models().control.operation("CreateMemory").map(|o| o.success_code()),
            Some(202)
        );
    }
}
