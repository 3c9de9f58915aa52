//! Memory strategies: turning a `MemoryStrategyInput` union into the stored output form, and
//! applying `modifyMemoryStrategies` to it.
//!
//! The input and output nest custom configurations differently (spec §5.1): the input says
//! `customMemoryStrategy.configuration.semanticOverride.extraction{…}`, the output says
//! `configuration{type: SEMANTIC_OVERRIDE, extraction{customExtractionConfiguration{
//! semanticExtractionOverride{…}}}}`. This module is the one place that knows the mapping.

use serde_json::{Map, Value, json};

use crate::error::{MemoryError, Result};

/// Template variables every memory understands.
const BUILT_IN_VARIABLES: [&str; 4] = ["actorId", "sessionId", "memoryStrategyId", "strategyId"];

const ACTOR_NAMESPACE: &str = "/strategies/{memoryStrategyId}/actors/{actorId}/";
const SESSION_NAMESPACE: &str = "/strategies/{memoryStrategyId}/actors/{actorId}/sessions/{sessionId}/";
const CUSTOM_NAMESPACE: &str = "custom/{actorId}/{sessionId}/";

/// A strategy ready to store.
#[derive(Debug)]
pub struct NewStrategy {
    pub name: String,
    pub strategy_type: &'static str,
    /// The output members other than id, name, type, status and timestamps.
    pub definition: Map<String, Value>,
}

/// The `{variable}` names a namespace template uses.
pub fn template_variables(template: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        out.push(&rest[start + 1..start + len]);
        rest = &rest[start + len + 1..];
    }
    out
}

fn check_templates(templates: &[Value], namespace_keys: &[String], field: &str) -> Result<()> {
    for template in templates.iter().filter_map(Value::as_str) {
        for variable in template_variables(template) {
            let known = BUILT_IN_VARIABLES.contains(&variable) || namespace_keys.iter().any(|k| k == variable);
            if !known {
                return Err(MemoryError::invalid(
                    field,
                    format!(
                        "namespace template `{template}` uses unknown variable `{{{variable}}}`; declare it in namespaceKeys or use actorId, sessionId or memoryStrategyId"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The namespace templates of an input (`namespaceTemplates`, or the deprecated `namespaces`),
/// or `default` when it names none. Both output members get the same list.
fn namespaces(input: &Map<String, Value>, default: &str, namespace_keys: &[String], field: &str) -> Result<Value> {
    let templates = input
        .get("namespaceTemplates")
        .or_else(|| input.get("namespaces"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_else(|| vec![json!(default)]);
    check_templates(&templates, namespace_keys, field)?;
    Ok(Value::Array(templates))
}

fn set_namespaces(definition: &mut Map<String, Value>, templates: Value) {
    definition.insert("namespaces".into(), templates.clone());
    definition.insert("namespaceTemplates".into(), templates);
}

fn apply_expiry(definition: &mut Map<String, Value>, specification: Option<&Value>) {
    match specification {
        Some(spec) if spec.get("action").is_some() => {
            definition.remove("recordExpiryDurationDays");
        }
        Some(spec) => {
            if let Some(days) = spec.get("recordExpiryDurationDays") {
                definition.insert("recordExpiryDurationDays".into(), days.clone());
            }
        }
        None => {}
    }
}

/// `{appendToPrompt, modelId}` wrapped under the output's override name.
fn wrap(section: Option<&Value>, outer: &str, inner: &str) -> Option<(String, Value)> {
    section.map(|value| (outer.to_string(), json!({ inner: value })))
}

/// The output `configuration` of a custom strategy's input `configuration` union, and the
/// namespace to use when the input names none.
fn custom_configuration(configuration: &Map<String, Value>) -> (Value, &'static str) {
    let (key, value) = configuration
        .iter()
        .next()
        .map(|(k, v)| (k.as_str(), v))
        .unwrap_or(("", &Value::Null));
    let extraction =
        |name: &str| wrap(value.get("extraction"), "customExtractionConfiguration", name).map(|(k, v)| json!({ k: v }));
    let consolidation = |name: &str| {
        wrap(value.get("consolidation"), "customConsolidationConfiguration", name).map(|(k, v)| json!({ k: v }))
    };
    let mut out = Map::new();
    let namespace = match key {
        "semanticOverride" | "userPreferenceOverride" | "episodicOverride" | "summaryOverride" => {
            let (kind, prefix, namespace) = match key {
                "semanticOverride" => ("SEMANTIC_OVERRIDE", "semantic", ACTOR_NAMESPACE),
                "userPreferenceOverride" => ("USER_PREFERENCE_OVERRIDE", "userPreference", ACTOR_NAMESPACE),
                "episodicOverride" => ("EPISODIC_OVERRIDE", "episodic", SESSION_NAMESPACE),
                _ => ("SUMMARY_OVERRIDE", "summary", SESSION_NAMESPACE),
            };
            out.insert("type".into(), json!(kind));
            if let Some(v) = extraction(&format!("{prefix}ExtractionOverride")) {
                out.insert("extraction".into(), v);
            }
            if let Some(v) = consolidation(&format!("{prefix}ConsolidationOverride")) {
                out.insert("consolidation".into(), v);
            }
            if let Some(reflection) = value.get("reflection") {
                out.insert(
                    "reflection".into(),
                    json!({"customReflectionConfiguration": {"episodicReflectionOverride": reflection}}),
                );
            }
            namespace
        }
        "selfManagedConfiguration" => {
            out.insert("type".into(), json!("SELF_MANAGED"));
            let mut managed = value.as_object().cloned().unwrap_or_default();
            managed.entry("triggerConditions").or_insert_with(|| json!([]));
            managed.entry("historicalContextWindowSize").or_insert_with(|| json!(4));
            out.insert("selfManagedConfiguration".into(), Value::Object(managed));
            SESSION_NAMESPACE
        }
        _ => CUSTOM_NAMESPACE,
    };
    (Value::Object(out), namespace)
}

/// Converts one `MemoryStrategyInput` (validated by the wire layer) into its stored form.
pub fn from_input(input: &Value, namespace_keys: &[String], field: &str) -> Result<NewStrategy> {
    let (key, body) = input
        .as_object()
        .and_then(|o| o.iter().next())
        .ok_or_else(|| MemoryError::invalid(field, "a memory strategy must set exactly one strategy type"))?;
    let body = body.as_object().cloned().unwrap_or_default();
    let name = body.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
    let mut definition = Map::new();
    if let Some(description) = body.get("description") {
        definition.insert("description".into(), description.clone());
    }
    if let Some(schema) = body.get("memoryRecordSchema") {
        definition.insert("memoryRecordSchema".into(), schema.clone());
    }
    apply_expiry(&mut definition, body.get("recordExpirySpecification"));
    let field = format!("{field}.{key}");
    let (strategy_type, default_namespace) = match key.as_str() {
        "semanticMemoryStrategy" => ("SEMANTIC", ACTOR_NAMESPACE),
        "summaryMemoryStrategy" => ("SUMMARIZATION", SESSION_NAMESPACE),
        "userPreferenceMemoryStrategy" => ("USER_PREFERENCE", ACTOR_NAMESPACE),
        "episodicMemoryStrategy" => {
            let reflection = body.get("reflectionConfiguration").and_then(Value::as_object);
            let templates = namespaces(
                reflection.unwrap_or(&Map::new()),
                ACTOR_NAMESPACE,
                namespace_keys,
                &format!("{field}.reflectionConfiguration.namespaceTemplates"),
            )?;
            let mut episodic = Map::new();
            set_namespaces(&mut episodic, templates);
            if let Some(schema) = reflection.and_then(|r| r.get("memoryRecordSchema")) {
                episodic.insert("memoryRecordSchema".into(), schema.clone());
            }
            definition.insert(
                "configuration".into(),
                json!({"reflection": {"episodicReflectionConfiguration": episodic}}),
            );
            ("EPISODIC", SESSION_NAMESPACE)
        }
        "customMemoryStrategy" => {
            let configuration = body.get("configuration").and_then(Value::as_object);
            match configuration {
                Some(configuration) => {
                    let (output, namespace) = custom_configuration(configuration);
                    definition.insert("configuration".into(), output);
                    ("CUSTOM", namespace)
                }
                None => ("CUSTOM", CUSTOM_NAMESPACE),
            }
        }
        other => {
            return Err(MemoryError::invalid(
                field,
                format!("unknown memory strategy type `{other}`"),
            ));
        }
    };
    let templates = namespaces(
        &body,
        default_namespace,
        namespace_keys,
        &format!("{field}.namespaceTemplates"),
    )?;
    set_namespaces(&mut definition, templates);
    Ok(NewStrategy {
        name,
        strategy_type,
        definition,
    })
}

/// Applies one `ModifyMemoryStrategyInput` to a stored definition.
pub fn apply_modification(
    definition: &mut Map<String, Value>,
    modification: &Map<String, Value>,
    namespace_keys: &[String],
    field: &str,
) -> Result<()> {
    if let Some(description) = modification.get("description") {
        definition.insert("description".into(), description.clone());
    }
    if modification.contains_key("namespaceTemplates") || modification.contains_key("namespaces") {
        let templates = namespaces(modification, "", namespace_keys, &format!("{field}.namespaceTemplates"))?;
        set_namespaces(definition, templates);
    }
    if let Some(schema) = modification.get("memoryRecordSchema") {
        definition.insert("memoryRecordSchema".into(), schema.clone());
    }
    apply_expiry(definition, modification.get("recordExpirySpecification"));
    if let Some(Value::Object(changes)) = modification.get("configuration") {
        // The modify input nests sections exactly as the output does (only the innermost shape
        // names end in `Input`), so each given section replaces the stored one.
        let configuration = definition
            .entry("configuration")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(configuration) = configuration {
            for (section, value) in changes {
                if section == "selfManagedConfiguration" {
                    let managed = configuration
                        .entry("selfManagedConfiguration")
                        .or_insert_with(|| Value::Object(Map::new()));
                    if let (Value::Object(managed), Value::Object(update)) = (managed, value) {
                        for (k, v) in update {
                            managed.insert(k.clone(), v.clone());
                        }
                    }
                } else {
                    configuration.insert(section.clone(), value.clone());
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_strategies_get_default_namespaces_in_both_members() {
        let strategy = from_input(&json!({"semanticMemoryStrategy": {"name": "facts"}}), &[], "s").unwrap();
        assert_eq!(strategy.strategy_type, "SEMANTIC");
        assert_eq!(strategy.definition["namespaceTemplates"], json!([ACTOR_NAMESPACE]));
        assert_eq!(strategy.definition["namespaces"], json!([ACTOR_NAMESPACE]));
        let summary = from_input(
            &json!({"summaryMemoryStrategy": {"name": "s", "namespaces": ["/x/{sessionId}"]}}),
            &[],
            "s",
        )
        .unwrap();
        assert_eq!(summary.definition["namespaceTemplates"], json!(["/x/{sessionId}"]));
    }

    #[test]
    fn custom_overrides_are_renested_for_output() {
        let strategy = from_input(
            &json!({"customMemoryStrategy": {"name": "c", "configuration": {"semanticOverride": {
                "extraction": {"appendToPrompt": "p", "modelId": "m"},
                "consolidation": {"appendToPrompt": "q", "modelId": "m"}}}}}),
            &[],
            "s",
        )
        .unwrap();
        assert_eq!(
            strategy.definition["configuration"],
            json!({"type": "SEMANTIC_OVERRIDE",
                   "extraction": {"customExtractionConfiguration": {"semanticExtractionOverride": {"appendToPrompt": "p", "modelId": "m"}}},
                   "consolidation": {"customConsolidationConfiguration": {"semanticConsolidationOverride": {"appendToPrompt": "q", "modelId": "m"}}}})
        );
    }

    #[test]
    fn unknown_template_variables_are_rejected_unless_declared() {
        let input = json!({"semanticMemoryStrategy": {"name": "f", "namespaceTemplates": ["/t/{tenant}/{actorId}"]}});
        assert!(matches!(from_input(&input, &[], "s"), Err(MemoryError::Invalid { .. })));
        assert!(from_input(&input, &["tenant".to_string()], "s").is_ok());
    }

    #[test]
    fn modifications_replace_sections() {
        let mut definition = from_input(&json!({"semanticMemoryStrategy": {"name": "f"}}), &[], "s")
            .unwrap()
            .definition;
        let change = json!({"memoryStrategyId": "f-AbCdEfGhIj", "description": "d", "namespaceTemplates": ["/n/{actorId}"],
                            "recordExpirySpecification": {"recordExpiryDurationDays": 40}});
        apply_modification(&mut definition, change.as_object().unwrap(), &[], "m").unwrap();
        assert_eq!(definition["description"], "d");
        assert_eq!(definition["namespaces"], json!(["/n/{actorId}"]));
        assert_eq!(definition["recordExpiryDurationDays"], 40);
    }
}
