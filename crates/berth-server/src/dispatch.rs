//! The one handler behind every AgentCore operation.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use berth_core::{Caller, ErrorKind, ids};
use std::collections::HashSet;
use std::sync::Arc;

use berth_store::idempotency::{self, StoredResponse, TokenKey};
use berth_wire::model::Location;
use berth_wire::router::RouteError;
use berth_wire::sigv4::{AuthError, Payload, SignedRequest};
use berth_wire::{AwsError, Operation, Plane, RawRequest, ServiceModel, bind_request};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use parking_lot::Mutex;
use serde_json::Value;
use tracing::Instrument;

use crate::auth::ensure_host;
use crate::operations::{INVOKE, INVOKE_COMMAND, INVOKE_TOOL};
use crate::spool::{self, SpoolError};
use crate::state::AppState;

/// Code bundles are uploaded here (`PUT /_berth/artifacts/{bucket}/{key}`, SigV4-signed);
/// `codeConfiguration.code.s3 {bucket, prefix: key}` then names them. Not an AgentCore path.
pub const ARTIFACT_PREFIX: &str = "/_berth/artifacts/";

const REQUEST_ID: &str = "x-amzn-requestid";
const ERROR_TYPE: &str = "x-amzn-errortype";
/// Presigned URLs on the REST API may live as long as SigV4 allows (7 days); the WebSocket
/// routes that cap it at 300 s check their own limit.
const MAX_PRESIGN_SECONDS: u64 = 7 * 24 * 60 * 60;
/// How long a request waits for another one with the same client token to finish.
const IN_FLIGHT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
const IN_FLIGHT_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// Moves output members the model binds to headers out of the JSON body, and makes a payload
/// member (GetAgentCard's `agentCard`) the whole body.
fn bind_output_headers(model: &ServiceModel, operation: &Operation, response: &mut Response, body: &mut Vec<u8>) {
    let Some(shape) = operation.output.as_ref().and_then(|o| model.shape(&o.shape)) else {
        return;
    };
    let header_members: Vec<_> = shape
        .members
        .iter()
        .filter(|(_, m)| m.location == Some(Location::Header))
        .collect();
    if header_members.is_empty() && shape.payload.is_none() {
        return;
    }
    let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    for (name, member) in header_members {
        if let Some(value) = object.remove(name) {
            let text = value.as_str().map(str::to_string).unwrap_or_else(|| value.to_string());
            let header_name = member.location_name.as_deref().unwrap_or(name);
            if let (Ok(name), Ok(value)) = (http::HeaderName::try_from(header_name), HeaderValue::from_str(&text)) {
                response.headers_mut().insert(name, value);
            }
        }
    }
    *body = match &shape.payload {
        Some(payload) => serde_json::to_vec(&object.remove(payload).unwrap_or(Value::Null)),
        None => serde_json::to_vec(&object),
    }
    .unwrap_or_default();
}

fn operation_response(
    model: &ServiceModel,
    operation: &Operation,
    status: StatusCode,
    request_id: &str,
    mut body: Vec<u8>,
) -> Response {
    let mut headers = Response::new(Body::empty());
    bind_output_headers(model, operation, &mut headers, &mut body);
    let mut response = json_response(status, request_id, body);
    response.headers_mut().extend(headers.headers().clone());
    response
}

fn json_response(status: StatusCode, request_id: &str, body: Vec<u8>) -> Response {
    let mut response = Response::new(if status == StatusCode::NO_CONTENT {
        Body::empty()
    } else {
        Body::from(body)
    });
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if status != StatusCode::NO_CONTENT {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert(REQUEST_ID, id);
    }
    response
}

/// Encodes an AWS error. Internal errors show only the request id; the details are logged.
pub fn error_response(error: &AwsError, request_id: &str) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = json_response(status, request_id, error.body().to_string().into_bytes());
    if let Ok(shape) = HeaderValue::from_str(&error.shape) {
        response.headers_mut().insert(ERROR_TYPE, shape);
    }
    response
}

/// The operation's error for `kind`, with internal details kept out of the message.
pub(crate) fn operation_error(
    model: &ServiceModel,
    operation: &Operation,
    kind: &ErrorKind,
    message: &str,
    request_id: &str,
) -> AwsError {
    if *kind == ErrorKind::Internal {
        tracing::error!(request_id, operation = %operation.name, error = message, "internal error");
        let message = format!("internal error; request id {request_id}");
        return AwsError::from_kind(model, operation, kind, &message);
    }
    AwsError::from_kind(model, operation, kind, message)
}

/// The idempotency token member of an operation's input, if the model declares one.
fn token_member(model: &'static ServiceModel, operation: &Operation) -> Option<&'static str> {
    let input = model.shape(&operation.input.as_ref()?.shape)?;
    input
        .members
        .iter()
        .find(|(_, m)| m.idempotency_token)
        .map(|(name, _)| name.as_str())
}

pub async fn dispatch(State(state): State<AppState>, request: Request) -> Response {
    let request_id = ids::request_id();
    let span = tracing::info_span!("request", request_id = %request_id, operation = tracing::field::Empty);
    handle(state, request, request_id).instrument(span).await
}

async fn handle(state: AppState, request: Request, request_id: String) -> Response {
    let inner = &state.inner;
    let (mut parts, body) = request.into_parts();
    let limit = inner.settings.max_body_bytes;
    ensure_host(&mut parts.headers, parts.uri.authority().map(|a| a.as_str()));
    let method = parts.method.as_str().to_string();
    let raw_path = parts.uri.path().to_string();
    let raw_query = parts.uri.query().map(str::to_string);
    let refuse = |error: AuthError| {
        tracing::info!(%error, "request refused");
        error_response(&AwsError::new(error.code(), 403, error.to_string()), &request_id)
    };
    // Everything but the signature itself is checked before the body is read, so only holders
    // of a known key with a current signature can make the server buffer a body.
    let envelope = SignedRequest {
        method: &method,
        raw_path: &raw_path,
        raw_query: raw_query.as_deref(),
        headers: &parts.headers,
        body: Payload::Bytes(&[]),
        max_presign_expires: MAX_PRESIGN_SECONDS,
    };
    let bearer = crate::bearer::token(&parts.headers);
    if bearer.is_none()
        && let Err(error) = inner.keys.precheck(&inner.verifier, &envelope, inner.clock.now())
    {
        return refuse(error);
    }
    // Routing needs only the method and path, and decides how large a body may be.
    let artifact = raw_path.strip_prefix(ARTIFACT_PREFIX).map(str::to_string);
    let found = if artifact.is_some() {
        None
    } else {
        match inner.router.route(&method, &raw_path) {
            Ok(found) => Some(found),
            Err(error) => {
                let (shape, status) = match error {
                    RouteError::NotFound => ("UnknownOperationException", 404),
                    RouteError::MethodNotAllowed => ("UnknownOperationException", 405),
                    RouteError::BadEncoding => ("ValidationException", 400),
                };
                return error_response(
                    &AwsError::new(shape, status, format!("{method} {raw_path}: {error}")),
                    &request_id,
                );
            }
        }
    };
    // A bearer token is checked against the target runtime's JWT authorizer before the body
    // is read, as a signature is.
    let bearer_caller = match bearer {
        None => None,
        Some(token) => {
            match crate::bearer::authorize(&state, found.as_ref(), raw_query.as_deref(), token, &request_id).await {
                Ok(caller) => Some(caller),
                Err(error) => return error_response(&error, &request_id),
            }
        }
    };
    let carries_payload = artifact.is_some() || found.as_ref().is_some_and(|f| f.operation.name == INVOKE);
    let limit = if carries_payload {
        inner.settings.max_payload_bytes
    } else if found.as_ref().is_some_and(|f| f.operation.name == INVOKE_TOOL) {
        inner.settings.max_tool_payload_bytes
    } else {
        limit
    };
    let too_large = || {
        let mut error = AwsError::validation(ErrorKind::REASON_CANNOT_PARSE, &[]);
        error.status = 413;
        error.message = format!("the request body is larger than the {limit}-byte limit");
        error_response(&error, &request_id)
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return too_large();
    }
    // An invocation's payload is read to the end (spilling to disk past a megabyte) and only
    // then, its signature checked, streamed to the agent; other bodies are small JSON.
    let invocation = found.as_ref().is_some_and(|f| f.operation.name == INVOKE);
    let (body, spooled) = if invocation {
        match spool::spool(body, limit, &inner.settings.spool_dir).await {
            Ok(spooled) => (Bytes::new(), Some(spooled)),
            Err(SpoolError::TooLarge(_)) => return too_large(),
            Err(error @ SpoolError::Client(_)) => {
                let mut invalid = AwsError::validation(ErrorKind::REASON_CANNOT_PARSE, &[]);
                invalid.message = error.to_string();
                return error_response(&invalid, &request_id);
            }
            Err(error @ SpoolError::Disk(_)) => {
                tracing::error!(%error, "could not spool a payload");
                return error_response(
                    &AwsError::new("InternalServerException", 500, error.to_string()),
                    &request_id,
                );
            }
        }
    } else {
        match axum::body::to_bytes(body, limit).await {
            Ok(bytes) => (bytes, None),
            Err(_) => return too_large(),
        }
    };
    let signed = SignedRequest {
        method: &method,
        raw_path: &raw_path,
        raw_query: raw_query.as_deref(),
        headers: &parts.headers,
        body: match &spooled {
            Some(spooled) => Payload::Sha256(&spooled.sha256),
            None => Payload::Bytes(&body),
        },
        max_presign_expires: MAX_PRESIGN_SECONDS,
    };
    let caller = match bearer_caller {
        Some(caller) => caller,
        None => match inner.keys.authenticate(&inner.verifier, &signed, inner.clock.now()) {
            Ok(caller) => caller,
            Err(error) => return refuse(error),
        },
    };
    let scoped = inner.keys.is_data_plane_only(&caller.access_key_id);
    let control_plane = found.as_ref().is_none_or(|f| f.plane == Plane::Control);
    if scoped && control_plane {
        let message = "this key was issued to an agent session and is valid for the data plane only";
        return error_response(&AwsError::new("AccessDeniedException", 403, message), &request_id);
    }
    let Some(found) = found else {
        return upload_artifact(
            &state,
            &method,
            artifact.as_deref().unwrap_or_default(),
            caller,
            body,
            &request_id,
        )
        .await;
    };

    let operation = found.operation;
    tracing::Span::current().record("operation", operation.name.as_str());
    let model = berth_wire::models().plane(found.plane);
    if !inner.registry.implements(found.plane, &operation.name) {
        let error = AwsError::new(
            "UnknownOperationException",
            501,
            format!("{} is not implemented by this Berth server yet", operation.name),
        );
        return error_response(&error, &request_id);
    }

    let bound = bind_request(
        model,
        operation,
        RawRequest {
            labels: &found.labels,
            query: raw_query.as_deref(),
            headers: &parts.headers,
            body,
        },
    );
    let input = match bound {
        Ok(bound) => bound.input,
        Err(kind) => {
            return error_response(&operation_error(model, operation, &kind, "", &request_id), &request_id);
        }
    };
    if operation.name == INVOKE {
        let Some(runtime) = &inner.registry.runtime else {
            return error_response(
                &AwsError::new("UnknownOperationException", 501, "Runtime is disabled"),
                &request_id,
            );
        };
        return crate::invoke::invoke(
            runtime,
            model,
            operation,
            caller,
            input,
            &parts.headers,
            spooled,
            &request_id,
        )
        .await;
    }
    if operation.name == INVOKE_COMMAND
        && let Some(runtime) = &inner.registry.runtime
    {
        return crate::command::invoke(runtime, model, operation, caller, input, &request_id).await;
    }
    if operation.name == INVOKE_TOOL
        && let Some(interpreter) = &inner.registry.interpreter
    {
        return crate::interpreter::invoke(interpreter, model, operation, caller, input, &request_id).await;
    }
    let Some(handler) = inner.registry.get(found.plane, &operation.name) else {
        return error_response(
            &AwsError::new("UnknownOperationException", 501, "not implemented"),
            &request_id,
        );
    };
    run(
        &state,
        found.plane,
        model,
        operation,
        handler,
        caller,
        input,
        &request_id,
    )
    .await
}

#[expect(
    clippy::too_many_arguments,
    reason = "one call site; the pieces are the dispatch context"
)]
async fn run(
    state: &AppState,
    plane: Plane,
    model: &'static ServiceModel,
    operation: &'static Operation,
    handler: &crate::operations::OpHandler,
    caller: Caller,
    input: Value,
    request_id: &str,
) -> Response {
    let store = &state.inner.store;
    let success = StatusCode::from_u16(operation.success_code()).unwrap_or(StatusCode::OK);
    let token_name = token_member(model, operation);
    let token = token_name
        .and_then(|name| input.get(name))
        .and_then(Value::as_str)
        .map(str::to_string);

    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return match handler(caller, input).await {
            Ok(body) => operation_response(model, operation, success, request_id, body),
            Err(e) => error_response(
                &operation_error(model, operation, &e.kind, &e.message, request_id),
                request_id,
            ),
        };
    };
    let key = TokenKey {
        account_id: caller.account.to_string(),
        operation: format!("{plane:?}:{}", operation.name),
        token,
    };
    let mut without_token = input.clone();
    if let (Some(object), Some(name)) = (without_token.as_object_mut(), token_name) {
        object.remove(name);
    }
    let request_hash = idempotency::request_hash(&without_token);
    let internal = |message: String| {
        error_response(
            &operation_error(model, operation, &ErrorKind::Internal, &message, request_id),
            request_id,
        )
    };
    // A request with the same token may be running (or recording its response); wait for it
    // and answer as it did, up to a deadline.
    let deadline = tokio::time::Instant::now() + IN_FLIGHT_WAIT;
    let running = loop {
        match store.idempotency_lookup(&key).await {
            Err(e) => return internal(e.to_string()),
            Ok(Some(stored)) if stored.request_hash == request_hash => {
                let status = StatusCode::from_u16(stored.status).unwrap_or(success);
                return operation_response(model, operation, status, request_id, stored.body.into_bytes());
            }
            Ok(Some(_)) => {
                let kind = ErrorKind::Validation {
                    reason: ErrorKind::REASON_IDEMPOTENT_MISMATCH,
                    fields: vec![],
                };
                let message = "the client token was already used with different request parameters";
                return error_response(
                    &operation_error(model, operation, &kind, message, request_id),
                    request_id,
                );
            }
            Ok(None) => {}
        }
        if let Some(running) = InFlight::claim(&state.inner.in_flight, &key) {
            break running;
        }
        if tokio::time::Instant::now() >= deadline {
            let message = "a request with this client token is still in progress";
            return error_response(
                &operation_error(model, operation, &ErrorKind::Conflict, message, request_id),
                request_id,
            );
        }
        tokio::time::sleep(IN_FLIGHT_POLL).await;
    };
    match handler(caller, input).await {
        Ok(body) => {
            // The operation is durable; its token's record follows on the grouped write path
            // while the response goes out. The token stays marked as running until the record
            // is written, so a retry meanwhile is told to wait rather than run again.
            let stored = StoredResponse {
                request_hash,
                status: success.as_u16(),
                body: String::from_utf8_lossy(&body).into_owned(),
            };
            store.idempotency_record(&running.key.clone(), &stored, move |outcome| {
                if let Err(error) = outcome {
                    tracing::error!(%error, "could not record a client token");
                }
                drop(running);
            });
            operation_response(model, operation, success, request_id, body)
        }
        Err(e) => error_response(
            &operation_error(model, operation, &e.kind, &e.message, request_id),
            request_id,
        ),
    }
}

/// Marks a client token as running in this process until dropped, so a retry that arrives
/// while the first attempt is still running does not run the operation a second time.
struct InFlight {
    set: Arc<Mutex<HashSet<TokenKey>>>,
    key: TokenKey,
}

impl InFlight {
    fn claim(set: &Arc<Mutex<HashSet<TokenKey>>>, key: &TokenKey) -> Option<Self> {
        set.lock().insert(key.clone()).then(|| InFlight {
            set: set.clone(),
            key: key.clone(),
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.set.lock().remove(&self.key);
    }
}

/// `PUT /_berth/artifacts/{bucket}/{key}`: stores a code bundle for the caller's account.
async fn upload_artifact(
    state: &AppState,
    method: &str,
    path: &str,
    caller: Caller,
    body: Bytes,
    request_id: &str,
) -> Response {
    let Some(runtime) = &state.inner.services.runtime else {
        return error_response(
            &AwsError::new("UnknownOperationException", 501, "Runtime is disabled"),
            request_id,
        );
    };
    if method != "PUT" {
        let error = AwsError::new("UnknownOperationException", 405, "artifacts are uploaded with PUT");
        return error_response(&error, request_id);
    }
    let decoded = percent_encoding::percent_decode_str(path)
        .decode_utf8_lossy()
        .into_owned();
    let Some((bucket, key)) = decoded.split_once('/') else {
        let kind = ErrorKind::invalid_field("key", "the path must be /_berth/artifacts/{bucket}/{key}");
        return error_response(
            &AwsError::validation(ErrorKind::REASON_FIELD_VALIDATION, &kind_fields(&kind)),
            request_id,
        );
    };
    match runtime.put_artifact(&caller, bucket, key, body).await {
        Ok(value) => json_response(StatusCode::OK, request_id, value.to_string().into_bytes()),
        Err(e) => {
            use berth_core::ApiError;
            let kind = e.kind();
            if kind == ErrorKind::Internal {
                tracing::error!(request_id, error = %e, "artifact upload failed");
                return error_response(
                    &AwsError::new(
                        "InternalServerException",
                        500,
                        format!("internal error; request id {request_id}"),
                    ),
                    request_id,
                );
            }
            error_response(
                &AwsError::validation(ErrorKind::REASON_FIELD_VALIDATION, &kind_fields(&kind)),
                request_id,
            )
        }
    }
}

fn kind_fields(kind: &ErrorKind) -> Vec<berth_core::FieldError> {
    match kind {
        ErrorKind::Validation { fields, .. } => fields.clone(),
        _ => vec![],
    }
}
