//! The JSON Schema subset Berth asks models for, and a validator for it.
//!
//! Memory's prompts need only: `type` (object, array, string, number, integer, boolean),
//! `properties`, `required`, `items`, `enum` (of strings), `maxItems` and `maxLength`. A
//! general validator crate would pull in regex engines and remote `$ref` resolution for
//! nothing; this one is small, and the constrained decoder ([`crate::grammar`]) compiles the
//! same subset, so what one accepts the other produces.

use serde_json::Value;

/// Checks `value` against `schema`; the error names the first path that does not match.
pub fn validate(schema: &Value, value: &Value) -> Result<(), String> {
    check(schema, value, "$")
}

fn check(schema: &Value, value: &Value, path: &str) -> Result<(), String> {
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        return Err(format!(
            "{path}: {value} is not one of {}",
            Value::Array(allowed.clone())
        ));
    }
    let Some(kind) = schema.get("type").and_then(Value::as_str) else {
        return Ok(());
    };
    let matches = match kind {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        _ => true,
    };
    if !matches {
        return Err(format!("{path}: expected {kind}, found {}", short(value)));
    }
    match value {
        Value::Object(members) => {
            for name in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
                if let Some(name) = name.as_str()
                    && !members.contains_key(name)
                {
                    return Err(format!("{path}: missing required member `{name}`"));
                }
            }
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (name, member) in members {
                    if let Some(member_schema) = properties.get(name) {
                        check(member_schema, member, &format!("{path}.{name}"))?;
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && items.len() as u64 > max
            {
                return Err(format!("{path}: more than {max} items"));
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(item_schema, item, &format!("{path}[{i}]"))?;
                }
            }
        }
        Value::String(text) => {
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && text.chars().count() as u64 > max
            {
                return Err(format!("{path}: longer than {max} characters"));
            }
        }
        _ => {}
    }
    Ok(())
}

fn short(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "facts": {"type": "array", "maxItems": 2, "items": {"type": "string", "maxLength": 5}},
                "action": {"type": "string", "enum": ["ADD", "SKIP"]},
                "n": {"type": "integer"}
            },
            "required": ["facts", "action"]
        })
    }

    #[test]
    fn accepts_what_matches() {
        assert_eq!(
            validate(&schema(), &json!({"facts": ["a", "bcde"], "action": "ADD", "n": 3})),
            Ok(())
        );
    }

    #[test]
    fn names_the_first_path_that_does_not_match() {
        let cases = [
            (json!({"action": "ADD"}), "$: missing required member `facts`"),
            (
                json!({"facts": [1], "action": "ADD"}),
                "$.facts[0]: expected string, found a number",
            ),
            (
                json!({"facts": ["toolong"], "action": "ADD"}),
                "$.facts[0]: longer than 5 characters",
            ),
            (
                json!({"facts": ["a", "b", "c"], "action": "ADD"}),
                "$.facts: more than 2 items",
            ),
            (
                json!({"facts": [], "action": "MAYBE"}),
                "$.action: \"MAYBE\" is not one of [\"ADD\",\"SKIP\"]",
            ),
            (
                json!({"facts": [], "action": "ADD", "n": 1.5}),
                "$.n: expected integer, found a number",
            ),
            (json!([]), "$: expected object, found an array"),
        ];
        for (value, message) in cases {
            assert_eq!(validate(&schema(), &value), Err(message.to_string()), "{value}");
        }
    }
}
