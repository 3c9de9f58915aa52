//! The one handler behind every AgentCore operation.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use berth_core::{Caller, ErrorKind, ids};
use std::collections::HashSet;
use std::sync::Arc;

use berth_store::idempotency::{self, StoredResponse, TokenKey};
use berth_wire::router::RouteError;
use berth_wire::sigv4::{AuthError, SignedRequest};
use berth_wire::{AwsError, Operation, Plane, RawRequest, ServiceModel, bind_request};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use parking_lot::Mutex;
use serde_json::Value;
use tracing::Instrument;

use crate::auth::ensure_host;
use crate::state::AppState;

const REQUEST_ID: &str = "x-amzn-requestid";
const ERROR_TYPE: &str = "x-amzn-errortype";
/// Presigned URLs on the REST API may live as long as SigV4 allows (7 days); the WebSocket
/// routes that cap it at 300 s check their own limit.
const MAX_PRESIGN_SECONDS: u64 = 7 * 24 * 60 * 60;
/// How long a request waits for another one with the same client token to finish.
const IN_FLIGHT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
const IN_FLIGHT_POLL: std::time::Duration = std::time::Duration::from_millis(10);

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
fn operation_error(
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
    let too_large = || {
        let mut error = AwsError::validation(ErrorKind::REASON_CANNOT_PARSE, &[]);
        error.status = 413;
        error.message = format!("the request body is larger than the {limit}-byte limit");
        error_response(&error, &request_id)
    };
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
        body: &[],
        max_presign_expires: MAX_PRESIGN_SECONDS,
    };
    if let Err(error) = inner.keys.precheck(&inner.verifier, &envelope, inner.clock.now()) {
        return refuse(error);
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return too_large();
    }
    let body: Bytes = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(_) => return too_large(),
    };
    let signed = SignedRequest {
        method: &method,
        raw_path: &raw_path,
        raw_query: raw_query.as_deref(),
        headers: &parts.headers,
        body: &body,
        max_presign_expires: MAX_PRESIGN_SECONDS,
    };
    let caller = match inner.keys.authenticate(&inner.verifier, &signed, inner.clock.now()) {
        Ok(caller) => caller,
        Err(error) => return refuse(error),
    };

    let found = match inner.router.route(&method, &raw_path) {
        Ok(found) => found,
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
    };
    let operation = found.operation;
    tracing::Span::current().record("operation", operation.name.as_str());
    let model = berth_wire::models().plane(found.plane);
    let Some(handler) = inner.registry.get(found.plane, &operation.name) else {
        let error = AwsError::new(
            "UnknownOperationException",
            501,
            format!("{} is not implemented by this Berth server yet", operation.name),
        );
        return error_response(&error, &request_id);
    };

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
            Ok(body) => json_response(success, request_id, body),
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
                return json_response(status, request_id, stored.body.into_bytes());
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
            let store = store.clone();
            tokio::spawn(async move {
                if let Err(error) = store.idempotency_record(&running.key, &stored).await {
                    tracing::error!(%error, "could not record a client token");
                }
                drop(running);
            });
            json_response(success, request_id, body)
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
