//! `metadataFilters` of ListMemoryRecords and RetrieveMemoryRecords: AND-ed conditions on a
//! record's metadata, allowed only on the memory's `indexedKeys` (as AWS allows them).

use serde_json::{Map, Value};

use crate::error::{MemoryError, Result};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Operator {
    EqualsTo,
    Exists,
    NotExists,
    Before,
    After,
    Contains,
    GreaterThan,
    GreaterThanOrEquals,
    LessThan,
    LessThanOrEquals,
}

/// One parsed condition.
#[derive(Clone, Debug)]
pub struct MetadataFilter {
    key: String,
    operator: Operator,
    /// The right side's `metadataValue` union (`stringValue`, `numberValue`, …), if any.
    value: Option<Map<String, Value>>,
}

/// Parses and checks `filters` against the memory's `indexedKeys` (its attributes' list of
/// `{key, type}`); `field` names the member in errors.
pub fn parse(filters: &[Value], indexed_keys: Option<&Value>, field: &str) -> Result<Vec<MetadataFilter>> {
    let indexed: Vec<&str> = indexed_keys
        .and_then(Value::as_array)
        .map(|keys| keys.iter().filter_map(|k| k["key"].as_str()).collect())
        .unwrap_or_default();
    filters
        .iter()
        .map(|filter| {
            let invalid = |message: String| MemoryError::invalid(field, message);
            let key = filter["left"]["metadataKey"]
                .as_str()
                .ok_or_else(|| invalid("a filter needs left.metadataKey".into()))?;
            if !indexed.contains(&key) {
                return Err(invalid(format!(
                    "`{key}` is not one of this memory's indexedKeys ({})",
                    indexed.join(", ")
                )));
            }
            let operator = match filter["operator"].as_str().unwrap_or_default() {
                "EQUALS_TO" => Operator::EqualsTo,
                "EXISTS" => Operator::Exists,
                "NOT_EXISTS" => Operator::NotExists,
                "BEFORE" => Operator::Before,
                "AFTER" => Operator::After,
                "CONTAINS" => Operator::Contains,
                "GREATER_THAN" => Operator::GreaterThan,
                "GREATER_THAN_OR_EQUALS" => Operator::GreaterThanOrEquals,
                "LESS_THAN" => Operator::LessThan,
                "LESS_THAN_OR_EQUALS" => Operator::LessThanOrEquals,
                other => return Err(invalid(format!("unknown operator `{other}`"))),
            };
            let value = filter["right"]["metadataValue"].as_object().cloned();
            let needs = match operator {
                Operator::Exists | Operator::NotExists => None,
                Operator::EqualsTo => Some("a value"),
                Operator::Contains => Some("stringValue"),
                Operator::Before | Operator::After => Some("dateTimeValue"),
                _ => Some("numberValue"),
            };
            match (needs, &value) {
                (None, _) | (Some("a value"), Some(_)) => {}
                (Some(member), Some(v)) if v.contains_key(member) => {}
                (Some(member), _) => {
                    return Err(invalid(format!(
                        "`{key}`: this operator needs right.metadataValue.{member}"
                    )));
                }
            }
            Ok(MetadataFilter {
                key: key.to_string(),
                operator,
                value,
            })
        })
        .collect()
}

/// Whether a record's metadata (its stored JSON map, if any) meets every filter.
pub fn matches(filters: &[MetadataFilter], metadata: Option<&Value>) -> bool {
    filters.iter().all(|filter| {
        let field = metadata.and_then(|m| m.get(&filter.key)).and_then(Value::as_object);
        let wanted = filter.value.as_ref();
        let number = |union: Option<&Map<String, Value>>, member: &str| union?.get(member)?.as_f64();
        let compare = |member: &str| number(field, member).zip(number(wanted, member));
        match filter.operator {
            Operator::Exists => field.is_some(),
            Operator::NotExists => field.is_none(),
            Operator::EqualsTo => match (field, wanted) {
                (Some(have), Some(want)) => want.iter().all(|(member, value)| match (have.get(member), value) {
                    (Some(a), b) if a.is_number() && b.is_number() => a.as_f64() == b.as_f64(),
                    (Some(a), b) => a == b,
                    (None, _) => false,
                }),
                _ => false,
            },
            Operator::Contains => {
                let want = wanted
                    .and_then(|w| w.get("stringValue"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                match field {
                    Some(have) => {
                        have.get("stringListValue")
                            .and_then(Value::as_array)
                            .is_some_and(|list| list.iter().any(|v| v.as_str() == Some(want)))
                            || have
                                .get("stringValue")
                                .and_then(Value::as_str)
                                .is_some_and(|s| s.contains(want))
                    }
                    None => false,
                }
            }
            Operator::Before => compare("dateTimeValue").is_some_and(|(a, b)| a < b),
            Operator::After => compare("dateTimeValue").is_some_and(|(a, b)| a > b),
            Operator::GreaterThan => compare("numberValue").is_some_and(|(a, b)| a > b),
            Operator::GreaterThanOrEquals => compare("numberValue").is_some_and(|(a, b)| a >= b),
            Operator::LessThan => compare("numberValue").is_some_and(|(a, b)| a < b),
            Operator::LessThanOrEquals => compare("numberValue").is_some_and(|(a, b)| a <= b),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keys() -> Value {
        json!([{"key": "priority", "type": "NUMBER"}, {"key": "topic", "type": "STRING"},
               {"key": "tags", "type": "STRINGLIST"}, {"key": "due", "type": "NUMBER"}])
    }

    fn check(filter: Value, metadata: Value) -> bool {
        let parsed = parse(&[filter], Some(&keys()), "metadataFilters").unwrap();
        matches(&parsed, Some(&metadata))
    }

    fn filter(key: &str, operator: &str, value: Value) -> Value {
        json!({"left": {"metadataKey": key}, "operator": operator, "right": {"metadataValue": value}})
    }

    #[test]
    fn each_operator_compares_the_way_its_value_type_says() {
        let record = json!({"priority": {"numberValue": 5}, "topic": {"stringValue": "travel plans"},
                            "tags": {"stringListValue": ["a", "b"]}, "due": {"dateTimeValue": 1_800_000_000.5}});
        assert!(check(
            filter("priority", "EQUALS_TO", json!({"numberValue": 5.0})),
            record.clone()
        ));
        assert!(!check(
            filter("topic", "EQUALS_TO", json!({"stringValue": "travel"})),
            record.clone()
        ));
        assert!(check(
            filter("topic", "CONTAINS", json!({"stringValue": "travel"})),
            record.clone()
        ));
        assert!(check(
            filter("tags", "CONTAINS", json!({"stringValue": "b"})),
            record.clone()
        ));
        assert!(!check(
            filter("tags", "CONTAINS", json!({"stringValue": "c"})),
            record.clone()
        ));
        assert!(check(
            filter("priority", "GREATER_THAN", json!({"numberValue": 3})),
            record.clone()
        ));
        assert!(!check(
            filter("priority", "LESS_THAN", json!({"numberValue": 5})),
            record.clone()
        ));
        assert!(check(
            filter("priority", "LESS_THAN_OR_EQUALS", json!({"numberValue": 5})),
            record.clone()
        ));
        assert!(check(
            filter("due", "BEFORE", json!({"dateTimeValue": 1_900_000_000})),
            record.clone()
        ));
        assert!(!check(
            filter("due", "AFTER", json!({"dateTimeValue": 1_900_000_000})),
            record.clone()
        ));
        let exists = json!({"left": {"metadataKey": "topic"}, "operator": "EXISTS"});
        assert!(check(exists.clone(), record));
        assert!(!check(exists, json!({})));
        let missing = json!({"left": {"metadataKey": "topic"}, "operator": "NOT_EXISTS"});
        assert!(check(missing, json!({"priority": {"numberValue": 1}})));
    }

    #[test]
    fn filters_on_keys_that_are_not_indexed_or_without_the_value_they_need_are_refused() {
        let not_indexed = parse(
            &[filter("colour", "EXISTS", json!({}))],
            Some(&keys()),
            "metadataFilters",
        );
        assert!(
            not_indexed
                .unwrap_err()
                .to_string()
                .contains("not one of this memory's indexedKeys")
        );
        let no_keys = parse(&[filter("topic", "EXISTS", json!({}))], None, "metadataFilters");
        assert!(no_keys.is_err());
        let wrong_type = parse(
            &[filter("priority", "GREATER_THAN", json!({"stringValue": "5"}))],
            Some(&keys()),
            "metadataFilters",
        );
        assert!(wrong_type.unwrap_err().to_string().contains("numberValue"));
    }
}
