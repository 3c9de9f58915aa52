//! Responses framed as an AWS event stream (spec §2.7): InvokeCodeInterpreter and
//! InvokeAgentRuntimeCommand.

use std::convert::Infallible;

use axum::body::Body;
use axum::response::Response;
use berth_wire::eventstream;
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderName, HeaderValue, StatusCode, header};
use tokio::sync::mpsc;

/// Streams `events`, each encoded by `encode`, with the given response headers. The response
/// starts once the first event is ready: the SDK's helpers (`upload_file`, `install_packages`)
/// return without reading the stream, and their callers expect the call's effect to be there
/// when they make the next one.
pub async fn respond<T, E>(mut events: mpsc::Receiver<T>, encode: E, headers: &[(&'static str, &str)]) -> Response
where
    T: Send + 'static,
    E: Fn(T) -> Bytes + Clone + Send + Sync + 'static,
{
    let first = events.recv().await.map(&encode);
    let rest = futures::stream::unfold(events, move |mut events| {
        let encode = encode.clone();
        async move { Some((encode(events.recv().await?), events)) }
    });
    let frames = futures::stream::iter(first).chain(rest).map(Ok::<Bytes, Infallible>);
    let mut response = Response::new(Body::from_stream(frames));
    *response.status_mut() = StatusCode::OK;
    let out = response.headers_mut();
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(eventstream::CONTENT_TYPE),
    );
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(value) {
            out.insert(HeaderName::from_static(name), value);
        }
    }
    response
}
