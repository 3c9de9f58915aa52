//! Record metadata a strategy's `memoryRecordSchema` asks for: `LLM_INFERRED` keys are asked
//! of the model for each new record (one structured call, the keys' `definition` and
//! `llmExtractionInstruction` as the prompt, their `validation` as the schema);
//! `STRICTLY_CONSISTENT` keys are copied from the metadata of the events the record came from.
//! Values are written in the record metadata's union form and kept within its patterns.

use serde_json::{Map, Value, json};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    String,
    StringList,
    Number,
}

#[derive(Clone, Debug)]
pub struct Field {
    pub key: String,
    pub kind: Kind,
    /// Copied from the events' metadata instead of inferred.
    pub strict: bool,
    pub definition: String,
    pub instruction: Option<String>,
    pub validation: Option<Value>,
}

/// The fields of a stored strategy definition's `memoryRecordSchema`.
pub fn fields(definition: &Map<String, Value>) -> Vec<Field> {
    let entries = definition
        .get("memoryRecordSchema")
        .and_then(|s| s.get("metadataSchema"))
        .and_then(Value::as_array);
    entries
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let key = entry.get("key")?.as_str()?.to_string();
            let kind = match entry.get("type").and_then(Value::as_str) {
                Some("STRINGLIST") => Kind::StringList,
                Some("NUMBER") => Kind::Number,
                _ => Kind::String,
            };
            let config = entry.pointer("/extractionConfig/llmExtractionConfig");
            let text = |name: &str| {
                config
                    .and_then(|c| c.get(name))
                    .and_then(Value::as_str)
                    .map(String::from)
            };
            Some(Field {
                strict: entry.get("extractionType").and_then(Value::as_str) == Some("STRICTLY_CONSISTENT"),
                definition: text("definition").unwrap_or_else(|| key.clone()),
                instruction: text("llmExtractionInstruction"),
                validation: config.and_then(|c| c.get("validation")).cloned(),
                key,
                kind,
            })
        })
        .collect()
}

/// The answer schema for the inferred fields: one member per key.
pub fn schema(fields: &[&Field]) -> Value {
    let mut properties = Map::new();
    for field in fields {
        let validation = field.validation.as_ref();
        let property = match field.kind {
            Kind::String => match validation.and_then(|v| v.pointer("/stringValidation/allowedValues")) {
                Some(allowed) => json!({"type": "string", "enum": allowed}),
                None => json!({"type": "string", "maxLength": 256}),
            },
            Kind::StringList => {
                let max = validation
                    .and_then(|v| v.pointer("/stringListValidation/maxItems"))
                    .and_then(Value::as_u64)
                    .unwrap_or(5)
                    .min(5);
                let item = match validation.and_then(|v| v.pointer("/stringListValidation/allowedValues")) {
                    Some(allowed) => json!({"type": "string", "enum": allowed}),
                    None => json!({"type": "string", "maxLength": 64}),
                };
                json!({"type": "array", "maxItems": max, "items": item})
            }
            Kind::Number => json!({"type": "number"}),
        };
        properties.insert(field.key.clone(), property);
    }
    let required: Vec<&str> = fields.iter().map(|f| f.key.as_str()).collect();
    json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false})
}

pub const PROMPT: &str = "You label a memory extracted from a conversation with metadata. Fill each field as its \
description says, from the memory and the conversation. Use short values.";

/// The user message describing the fields, the memory and where it came from.
pub fn request(fields: &[&Field], record: &str, conversation: &str) -> String {
    let described: Vec<String> = fields
        .iter()
        .map(|f| match &f.instruction {
            Some(instruction) => format!("- {}: {} ({instruction})", f.key, f.definition),
            None => format!("- {}: {}", f.key, f.definition),
        })
        .collect();
    format!(
        "Fields:\n{}\n\nMemory: {record}\n\nConversation:\n{conversation}",
        described.join("\n")
    )
}

/// Keeps what a metadata string value may hold (`[a-zA-Z0-9\s._:/=+@-]`, up to `max`).
fn clean(text: &str, max: usize) -> Option<String> {
    let kept: String = text
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || c.is_whitespace() || "._:/=+@-".contains(*c))
        .take(max)
        .collect();
    let kept = kept.trim().to_string();
    (!kept.is_empty()).then_some(kept)
}

/// One field's value in the union form, or `None` when nothing usable is left.
fn value(field: &Field, raw: &Value) -> Option<Value> {
    match field.kind {
        Kind::String => clean(raw.as_str()?, 256).map(|s| json!({"stringValue": s})),
        Kind::StringList => {
            let items: Vec<String> = match raw {
                Value::Array(items) => items
                    .iter()
                    .filter_map(Value::as_str)
                    .filter_map(|s| clean(s, 64))
                    .take(5)
                    .collect(),
                Value::String(s) => clean(s, 64).into_iter().collect(),
                _ => Vec::new(),
            };
            (!items.is_empty()).then(|| json!({"stringListValue": items}))
        }
        Kind::Number => {
            let mut number = raw.as_f64().or_else(|| raw.as_str()?.trim().parse().ok())?;
            let bound = |name: &str| {
                field
                    .validation
                    .as_ref()?
                    .pointer(&format!("/numberValidation/{name}"))?
                    .as_f64()
            };
            if let Some(min) = bound("minValue") {
                number = number.max(min);
            }
            if let Some(max) = bound("maxValue") {
                number = number.min(max);
            }
            Some(json!({"numberValue": number}))
        }
    }
}

/// A record's metadata from the model's answer (inferred keys) and the events' metadata
/// (strict keys; events' values are `{stringValue}`).
pub fn record_metadata(fields: &[Field], answer: Option<&Value>, events: &Map<String, Value>) -> Option<String> {
    let mut out = Map::new();
    for field in fields {
        let raw = if field.strict {
            events.get(&field.key).and_then(|v| v.get("stringValue")).cloned()
        } else {
            answer.and_then(|a| a.get(&field.key)).cloned()
        };
        if let Some(v) = raw.as_ref().and_then(|raw| value(field, raw)) {
            out.insert(field.key.clone(), v);
        }
    }
    (!out.is_empty()).then(|| Value::Object(out).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition() -> Map<String, Value> {
        serde_json::from_value(json!({"memoryRecordSchema": {"metadataSchema": [
            {"key": "topic", "type": "STRING", "extractionType": "LLM_INFERRED",
             "extractionConfig": {"llmExtractionConfig": {"definition": "what it is about",
                "validation": {"stringValidation": {"allowedValues": ["pets", "food"]}}}}},
            {"key": "tags", "type": "STRINGLIST"},
            {"key": "priority", "type": "NUMBER",
             "extractionConfig": {"llmExtractionConfig": {"definition": "1 to 5",
                "validation": {"numberValidation": {"minValue": 1, "maxValue": 5}}}}},
            {"key": "channel", "type": "STRING", "extractionType": "STRICTLY_CONSISTENT"}
        ]}}))
        .expect("map")
    }

    #[test]
    fn fields_become_a_schema_and_answers_become_union_values() {
        let fields = fields(&definition());
        let inferred: Vec<&Field> = fields.iter().filter(|f| !f.strict).collect();
        let schema = schema(&inferred);
        assert_eq!(schema["properties"]["topic"]["enum"], json!(["pets", "food"]));
        assert_eq!(schema["required"], json!(["topic", "tags", "priority"]));
        let answer = json!({"topic": "pets", "tags": ["dogs!", "", "walks"], "priority": 9});
        let events: Map<String, Value> =
            serde_json::from_value(json!({"channel": {"stringValue": "mobile app"}})).expect("map");
        let metadata: Value =
            serde_json::from_str(&record_metadata(&fields, Some(&answer), &events).expect("some")).expect("json");
        assert_eq!(
            metadata,
            json!({"topic": {"stringValue": "pets"}, "tags": {"stringListValue": ["dogs", "walks"]},
                   "priority": {"numberValue": 5.0}, "channel": {"stringValue": "mobile app"}})
        );
        assert_eq!(record_metadata(&fields, None, &Map::new()), None);
    }
}
