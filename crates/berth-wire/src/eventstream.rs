//! `application/vnd.amazon.eventstream` messages (spec §2.7): the response framing of
//! InvokeCodeInterpreter and InvokeAgentRuntimeCommand. Framing and checksums are
//! `aws-smithy-eventstream`'s, the same code the AWS SDKs decode with.

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use bytes::Bytes;
use serde_json::Value;

use crate::AwsError;

pub const CONTENT_TYPE: &str = "application/vnd.amazon.eventstream";

fn encode(headers: Vec<Header>, payload: &Value) -> Bytes {
    let message = Message::new_from_parts(headers, serde_json::to_vec(payload).unwrap_or_default());
    let mut buffer = Vec::new();
    // Writing fails only for header names or values past the format's limits; ours are fixed.
    if let Err(error) = write_message_to(&message, &mut buffer) {
        tracing::error!(%error, "could not encode an event-stream message");
    }
    Bytes::from(buffer)
}

fn string(name: &'static str, value: &str) -> Header {
    Header::new(name, HeaderValue::String(value.to_string().into()))
}

/// An event of the stream's union member `event_type` (e.g. `result`).
pub fn event(event_type: &str, payload: &Value) -> Bytes {
    let headers = vec![
        string(":message-type", "event"),
        string(":event-type", event_type),
        string(":content-type", "application/json"),
    ];
    encode(headers, payload)
}

/// A modelled error after the stream started: its union member is the shape name in lower
/// camel case (`ValidationException` → `validationException`).
pub fn exception(error: &AwsError) -> Bytes {
    let mut member = error.shape.clone();
    if let Some(first) = member.get_mut(..1) {
        first.make_ascii_lowercase();
    }
    let headers = vec![
        string(":message-type", "exception"),
        string(":exception-type", &member),
        string(":content-type", "application/json"),
    ];
    encode(headers, &error.body())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_eventstream::frame::read_message_from;
    use serde_json::json;

    fn header<'a>(message: &'a Message, name: &str) -> &'a str {
        message
            .headers()
            .iter()
            .find(|h| h.name().as_str() == name)
            .and_then(|h| h.value().as_string().ok())
            .map(|s| s.as_str())
            .unwrap_or_default()
    }

    #[test]
    fn events_and_exceptions_decode_with_the_sdk_reader() {
        let payload = json!({"content": [{"type": "text", "text": "42\n"}], "isError": false});
        let message = read_message_from(event("result", &payload)).expect("decodes");
        assert_eq!(header(&message, ":message-type"), "event");
        assert_eq!(header(&message, ":event-type"), "result");
        assert_eq!(serde_json::from_slice::<Value>(message.payload()).ok(), Some(payload));

        let error = AwsError::new("InternalServerException", 500, "boom");
        let message = read_message_from(exception(&error)).expect("decodes");
        assert_eq!(header(&message, ":message-type"), "exception");
        assert_eq!(header(&message, ":exception-type"), "internalServerException");
        assert_eq!(
            serde_json::from_slice::<Value>(message.payload())
                .ok()
                .and_then(|v| v["message"].as_str().map(String::from)),
            Some("boom".into())
        );
    }
}
