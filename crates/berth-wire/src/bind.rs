//! Request binding and validation.
//!
//! Every operation's input is assembled into one JSON object — path labels, query parameters and
//! headers under their member names, plus the JSON body's members — and then checked against the
//! input shape: required members, types, unions, lengths, ranges, patterns and enums. Services
//! deserialize that object into their typed request structs and never see raw HTTP.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use berth_core::{ErrorKind, FieldError};
use bytes::Bytes;
use http::HeaderMap;
use parking_lot::RwLock;
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value};

use crate::model::{Location, Operation, ServiceModel, Shape, ShapeType};

/// The parts of an HTTP request that carry input members.
pub struct RawRequest<'a> {
    /// Decoded path labels from the router.
    pub labels: &'a [(String, String)],
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: Bytes,
}

/// A bound, validated input.
#[derive(Debug)]
pub struct BoundInput {
    /// Every non-payload member, by member name.
    pub input: Value,
    /// The raw body when the operation binds a blob member to the whole payload
    /// (`InvokeAgentRuntime`'s `payload`).
    pub payload: Option<Bytes>,
}

/// Binds and validates `request` as the input of `operation`. On failure the error kind is a
/// `Validation` with every failing field in `fields`.
pub fn bind_request(
    model: &ServiceModel,
    operation: &Operation,
    request: RawRequest<'_>,
) -> Result<BoundInput, ErrorKind> {
    let Some(input_ref) = &operation.input else {
        return Ok(BoundInput {
            input: Value::Object(Map::new()),
            payload: None,
        });
    };
    let shape = model
        .shape(&input_ref.shape)
        .expect("invariant: model references resolve (checked by tests)");
    let mut errors = Vec::new();
    let mut object = Map::new();
    let mut payload = None;

    let query = parse_query(request.query.unwrap_or_default());
    for (name, member) in &shape.members {
        let member_shape = model
            .shape(&member.shape)
            .expect("invariant: model references resolve (checked by tests)");
        let location_name = member.location_name.as_deref().unwrap_or(name);
        let raw: Option<Vec<String>> = match member.location {
            Some(Location::Uri) => request
                .labels
                .iter()
                .find(|(label, _)| label == location_name)
                .map(|(_, v)| vec![v.clone()]),
            Some(Location::Querystring) => {
                let values: Vec<String> = query
                    .iter()
                    .filter(|(k, _)| k == location_name)
                    .map(|(_, v)| v.clone())
                    .collect();
                (!values.is_empty()).then_some(values)
            }
            Some(Location::Header) => request
                .headers
                .get(location_name)
                .map(|v| vec![String::from_utf8_lossy(v.as_bytes()).into_owned()]),
            _ => None,
        };
        if let Some(values) = raw {
            match scalar_from_text(model, member_shape, values) {
                Ok(value) => {
                    object.insert(name.clone(), value);
                }
                Err(message) => errors.push(FieldError::new(name.clone(), message)),
            }
        }
    }

    if let Some(payload_member) = &shape.payload {
        let member = &shape.members[payload_member];
        let member_shape = model
            .shape(&member.shape)
            .expect("invariant: model references resolve (checked by tests)");
        match member_shape.kind {
            ShapeType::Blob | ShapeType::String => payload = Some(request.body),
            _ if request.body.is_empty() => {}
            _ => match serde_json::from_slice::<Value>(&request.body) {
                Ok(value) => {
                    object.insert(payload_member.clone(), value);
                }
                Err(e) => return Err(cannot_parse(&e)),
            },
        }
    } else if !request.body.is_empty() && request.body.iter().any(|b| !b.is_ascii_whitespace()) {
        let body: Value = serde_json::from_slice(&request.body).map_err(|e| cannot_parse(&e))?;
        let Value::Object(body) = body else {
            return Err(ErrorKind::Validation {
                reason: ErrorKind::REASON_CANNOT_PARSE,
                fields: vec![FieldError::new("body", "the request body must be a JSON object")],
            });
        };
        for (name, value) in body {
            let in_body = shape.members.get(&name).is_some_and(|m| m.location.is_none());
            if in_body && !value.is_null() {
                object.insert(name, value);
            }
        }
    }

    // A raw payload travels beside the input; a stand-in lets the required-member check see it.
    let raw_payload = shape.payload.as_ref().filter(|_| payload.is_some());
    if let Some(name) = raw_payload {
        object.insert(name.clone(), Value::String(String::new()));
    }
    let mut input = Value::Object(object);
    if errors.is_empty() {
        validate(model, shape, &mut input, "", &mut errors, true);
    }
    if let (Some(name), Value::Object(object)) = (raw_payload, &mut input) {
        object.remove(name);
    }
    if errors.is_empty() {
        Ok(BoundInput { input, payload })
    } else {
        Err(ErrorKind::Validation {
            reason: ErrorKind::REASON_FIELD_VALIDATION,
            fields: errors,
        })
    }
}

fn cannot_parse(error: &serde_json::Error) -> ErrorKind {
    ErrorKind::Validation {
        reason: ErrorKind::REASON_CANNOT_PARSE,
        fields: vec![FieldError::new(
            "body",
            format!("the request body is not valid JSON: {error}"),
        )],
    }
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
            (decode(key), decode(value))
        })
        .collect()
}

/// Converts text from a label, query parameter or header into the member's JSON type.
fn scalar_from_text(model: &ServiceModel, shape: &Shape, mut values: Vec<String>) -> Result<Value, String> {
    if shape.kind == ShapeType::List {
        let member = shape
            .member
            .as_ref()
            .and_then(|m| model.shape(&m.shape))
            .expect("invariant: model references resolve (checked by tests)");
        let items: Result<Vec<Value>, String> = values
            .into_iter()
            .map(|v| scalar_from_text(model, member, vec![v]))
            .collect();
        return items.map(Value::Array);
    }
    let text = values.pop().unwrap_or_default();
    match shape.kind {
        ShapeType::Integer | ShapeType::Long => text
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| "Member must be an integer".to_string()),
        ShapeType::Float | ShapeType::Double => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| "Member must be a number".to_string()),
        ShapeType::Boolean => match text.as_str() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err("Member must be a boolean".to_string()),
        },
        _ => Ok(Value::String(text)),
    }
}

static PATTERNS: LazyLock<RwLock<HashMap<String, Option<Arc<fancy_regex::Regex>>>>> =
    LazyLock::new(|| RwLock::new(HashMap::new()));

/// Values Berth accepts beyond a model's pattern, by the field's path. The only one: container
/// images from a local OCI image layout or archive (`oci:PATH`, `oci-archive:PATH`) or from a
/// registry other than ECR, which the model's ECR-only pattern would refuse. The runtime parses
/// the value itself and refuses what it cannot use.
fn berth_extension(path: &str, text: &str) -> bool {
    if !path.ends_with("containerConfiguration.containerUri") {
        return false;
    }
    let registry_reference = text.split('/').count() >= 2
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-:/@".contains(&b));
    text.starts_with("oci:") || text.starts_with("oci-archive:") || registry_reference
}

/// The compiled, fully anchored form of a model pattern (AWS validates patterns as full matches).
fn pattern(source: &str) -> Option<Arc<fancy_regex::Regex>> {
    if let Some(found) = PATTERNS.read().get(source) {
        return found.clone();
    }
    let compiled = fancy_regex::Regex::new(&format!("^(?:{source})$")).ok().map(Arc::new);
    PATTERNS.write().insert(source.to_string(), compiled.clone());
    compiled
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

fn type_name(kind: ShapeType) -> &'static str {
    match kind {
        ShapeType::Structure => "an object",
        ShapeType::String => "a string",
        ShapeType::List => "a list",
        ShapeType::Map => "a map",
        ShapeType::Integer | ShapeType::Long => "an integer",
        ShapeType::Float | ShapeType::Double => "a number",
        ShapeType::Boolean => "a boolean",
        ShapeType::Timestamp => "a timestamp",
        ShapeType::Blob => "base64-encoded binary data",
    }
}

fn check_length(shape: &Shape, length: usize, what: &str, path: &str, errors: &mut Vec<FieldError>) {
    if let Some(min) = shape.min
        && (length as f64) < min
    {
        errors.push(FieldError::new(
            path,
            format!("Member must have {what} greater than or equal to {min}"),
        ));
    }
    if let Some(max) = shape.max
        && (length as f64) > max
    {
        errors.push(FieldError::new(
            path,
            format!("Member must have {what} less than or equal to {max}"),
        ));
    }
}

/// Validates `value` against `shape`, recording every failure under its member path. Nulls in
/// the body are treated as absent, as AWS does.
pub fn validate(
    model: &ServiceModel,
    shape: &Shape,
    value: &mut Value,
    path: &str,
    errors: &mut Vec<FieldError>,
    top: bool,
) {
    let resolve = |name: &str| {
        model
            .shape(name)
            .expect("invariant: model references resolve (checked by tests)")
    };
    let wrong_type = |errors: &mut Vec<FieldError>| {
        let field = if path.is_empty() { "body" } else { path };
        errors.push(FieldError::new(
            field,
            format!("Member must be {}", type_name(shape.kind)),
        ));
    };
    match shape.kind {
        ShapeType::Structure if shape.document => {}
        ShapeType::Structure => {
            let Value::Object(object) = value else {
                return wrong_type(errors);
            };
            object.retain(|_, v| !v.is_null());
            if shape.union && !top {
                let set: Vec<&String> = object.keys().filter(|k| shape.members.contains_key(*k)).collect();
                if set.len() != 1 {
                    let names: Vec<&str> = shape.members.keys().map(String::as_str).collect();
                    let field = if path.is_empty() { "body" } else { path };
                    errors.push(FieldError::new(
                        field,
                        format!("Member must set exactly one of: {}", names.join(", ")),
                    ));
                }
            }
            for required in &shape.required {
                if !object.contains_key(required) {
                    errors.push(FieldError::new(join(path, required), "Member must not be null"));
                }
            }
            for (name, member) in &shape.members {
                if let Some(child) = object.get_mut(name) {
                    validate(model, resolve(&member.shape), child, &join(path, name), errors, false);
                }
            }
        }
        ShapeType::List => {
            let Value::Array(items) = value else {
                return wrong_type(errors);
            };
            check_length(shape, items.len(), "length", path, errors);
            if let Some(member) = &shape.member {
                let member = resolve(&member.shape);
                for (i, item) in items.iter_mut().enumerate() {
                    validate(model, member, item, &format!("{path}[{i}]"), errors, false);
                }
            }
        }
        ShapeType::Map => {
            let Value::Object(entries) = value else {
                return wrong_type(errors);
            };
            check_length(shape, entries.len(), "length", path, errors);
            let key_shape = shape.key.as_ref().map(|k| resolve(&k.shape));
            let value_shape = shape.value.as_ref().map(|v| resolve(&v.shape));
            for (key, entry) in entries.iter_mut() {
                let entry_path = format!("{path}.{key}");
                if let Some(key_shape) = key_shape {
                    let mut key_value = Value::String(key.clone());
                    validate(model, key_shape, &mut key_value, &entry_path, errors, false);
                }
                if let Some(value_shape) = value_shape {
                    validate(model, value_shape, entry, &entry_path, errors, false);
                }
            }
        }
        ShapeType::String => {
            let Value::String(text) = value else {
                return wrong_type(errors);
            };
            check_length(shape, text.chars().count(), "length", path, errors);
            if !shape.enum_values.is_empty() && !shape.enum_values.iter().any(|e| e == text) {
                errors.push(FieldError::new(
                    path,
                    format!("Member must satisfy enum value set: [{}]", shape.enum_values.join(", ")),
                ));
            } else if let Some(source) = &shape.pattern {
                let matched =
                    pattern(source).is_none_or(|re| re.is_match(text).unwrap_or(false)) || berth_extension(path, text);
                if !matched {
                    errors.push(FieldError::new(
                        path,
                        format!("Member must satisfy regular expression pattern: {source}"),
                    ));
                }
            }
        }
        ShapeType::Integer | ShapeType::Long => {
            let Some(number) = value.as_i64() else {
                return wrong_type(errors);
            };
            check_range(shape, number as f64, path, errors);
        }
        ShapeType::Float | ShapeType::Double => {
            let Some(number) = value.as_f64() else {
                return wrong_type(errors);
            };
            check_range(shape, number, path, errors);
        }
        ShapeType::Boolean => {
            if !value.is_boolean() {
                wrong_type(errors);
            }
        }
        ShapeType::Timestamp => {
            let valid = match value {
                Value::Number(n) => n.as_f64().is_some_and(f64::is_finite),
                Value::String(s) => {
                    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
                }
                _ => false,
            };
            if !valid {
                wrong_type(errors);
            }
        }
        ShapeType::Blob => {
            let Value::String(encoded) = value else {
                return wrong_type(errors);
            };
            match STANDARD.decode(encoded.as_bytes()) {
                Ok(bytes) => check_length(shape, bytes.len(), "length", path, errors),
                Err(_) => wrong_type(errors),
            }
        }
    }
}

fn check_range(shape: &Shape, number: f64, path: &str, errors: &mut Vec<FieldError>) {
    if let Some(min) = shape.min
        && number < min
    {
        errors.push(FieldError::new(
            path,
            format!("Member must have value greater than or equal to {min}"),
        ));
    }
    if let Some(max) = shape.max
        && number > max
    {
        errors.push(FieldError::new(
            path,
            format!("Member must have value less than or equal to {max}"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::models;
    use crate::router::Router;

    fn bind(method: &str, path: &str, query: Option<&str>, body: &str) -> Result<BoundInput, ErrorKind> {
        let router = Router::new(models());
        let found = router.route(method, path).unwrap();
        let model = models().plane(found.plane);
        let headers = HeaderMap::new();
        bind_request(
            model,
            found.operation,
            RawRequest {
                labels: &found.labels,
                query,
                headers: &headers,
                body: Bytes::from(body.to_string()),
            },
        )
    }

    fn field_names(error: ErrorKind) -> Vec<String> {
        match error {
            ErrorKind::Validation { fields, .. } => fields.into_iter().map(|f| f.name).collect(),
            other => panic!("expected validation, got {other:?}"),
        }
    }

    #[test]
    fn container_uris_beyond_ecr_are_a_berth_extension_of_that_field_only() {
        let field = "agentRuntimeArtifact.containerConfiguration.containerUri";
        for accepted in [
            "oci:/srv/images/agent:v1",
            "oci-archive:/tmp/a.tar",
            "localhost:5000/agents/echo:v1",
            "ghcr.io/org/agent@sha256:ab",
        ] {
            assert!(berth_extension(field, accepted), "{accepted}");
        }
        for refused in ["Not A Reference!", "agent", "UPPER/case"] {
            assert!(!berth_extension(field, refused), "{refused}");
        }
        assert!(
            !berth_extension("agentRuntimeName", "oci:/x"),
            "other fields keep their patterns"
        );
    }

    #[test]
    fn every_model_pattern_compiles() {
        for model in [&models().control, &models().data] {
            for (name, shape) in &model.shapes {
                if let Some(source) = &shape.pattern {
                    assert!(pattern(source).is_some(), "{name}: {source}");
                }
            }
        }
    }

    #[test]
    fn binds_labels_and_body_members() {
        let bound = bind(
            "POST",
            "/memories/m1-abcdefghij/events",
            None,
            r#"{"actorId":"u1","sessionId":"s1","eventTimestamp":1714564800.123456,
                "payload":[{"conversational":{"content":{"text":"hi"},"role":"USER"}},{"blob":{"any":"json"}}],
                "metadata":{"k":{"stringValue":"v"}},"clientToken":"abc"}"#,
        )
        .unwrap();
        assert_eq!(bound.input["memoryId"], "m1-abcdefghij");
        assert_eq!(bound.input["payload"][1]["blob"]["any"], "json");
    }

    #[test]
    fn reports_every_failing_field_with_its_path() {
        let error = bind(
            "POST",
            "/memories/create",
            None,
            r#"{"name":"9bad","eventExpiryDuration":1,
                "memoryStrategies":[{"semanticMemoryStrategy":{"name":"ok"},"summaryMemoryStrategy":{"name":"x"}},{}]}"#,
        )
        .unwrap_err();
        let names = field_names(error);
        assert!(names.contains(&"name".to_string()), "{names:?}");
        assert!(names.contains(&"eventExpiryDuration".to_string()), "{names:?}");
        assert!(names.contains(&"memoryStrategies[0]".to_string()), "{names:?}");
        assert!(names.contains(&"memoryStrategies[1]".to_string()), "{names:?}");
    }

    #[test]
    fn rejects_wrong_types_missing_members_and_bad_json() {
        let names = field_names(bind("POST", "/memories/create", None, r#"{"name":5}"#).unwrap_err());
        assert_eq!(names, vec!["eventExpiryDuration", "name"]);
        let error = bind("POST", "/memories/create", None, "{not json").unwrap_err();
        assert!(matches!(
            error,
            ErrorKind::Validation {
                reason: "CannotParse",
                ..
            }
        ));
        let error = bind("POST", "/memories/create", None, "[1,2]").unwrap_err();
        assert!(matches!(
            error,
            ErrorKind::Validation {
                reason: "CannotParse",
                ..
            }
        ));
    }

    #[test]
    fn converts_query_members_by_type() {
        let bound = bind("POST", "/runtimes/", Some("maxResults=10&nextToken=abc"), "").unwrap();
        assert_eq!(bound.input["maxResults"], 10);
        assert_eq!(bound.input["nextToken"], "abc");
        let names = field_names(bind("POST", "/runtimes/", Some("maxResults=ten"), "").unwrap_err());
        assert_eq!(names, vec!["maxResults"]);
        let bound = bind(
            "DELETE",
            "/tags/arn%3Aaws%3Abedrock-agentcore%3Aus-east-1%3A123456789012%3Amemory%2Fm-abcdefghij",
            Some("tagKeys=a&tagKeys=b%20c"),
            "",
        )
        .unwrap();
        assert_eq!(bound.input["tagKeys"], serde_json::json!(["a", "b c"]));
    }

    #[test]
    fn validates_labels_too() {
        let names = field_names(bind("GET", "/memories/x/details", None, "").unwrap_err());
        assert!(!names.is_empty() && names.iter().all(|n| n == "memoryId"), "{names:?}");
    }
}
