//! The AgentCore wire protocol, driven by the same botocore service models boto3 uses.
//!
//! * [`model`]: the two service models (control plane and data plane), loaded once.
//! * [`router`]: `(method, raw percent-encoded path)` → operation and path labels.
//! * [`bind`]: one request's labels, query string, headers and body → the operation's input as a
//!   JSON object, validated against every modelled constraint (`ValidationException.fieldList`).
//! * [`error`]: AWS error shapes and the HTTP status the model gives each.
//! * [`sigv4`]: Signature Version 4 verification, header and presigned-query forms.
//!
//! This crate knows the protocol's encodings but runs no server: it never touches sockets or
//! axum, and it knows nothing about any one service's behaviour.

pub mod bind;
pub mod error;
pub mod eventstream;
pub mod model;
pub mod router;
pub mod sigv4;

pub use bind::{BoundInput, RawRequest, bind_request};
pub use error::AwsError;
pub use model::{Models, Operation, Plane, ServiceModel, Shape, models};
pub use router::{RouteMatch, Router};
