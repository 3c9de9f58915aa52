//! What each strategy does with a run of conversation: the prompts and output schemas of its
//! extraction, the namespace its records go to, and consolidation against what is stored.

use std::sync::Arc;

use berth_models::{ChatModel, ChatRequest, Message, Models};
use serde_json::{Map, Value, json};

use crate::store::StrategyRow;

/// The built-in pipelines; custom strategies run one of them with overrides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pipeline {
    Semantic,
    UserPreference,
    Summary,
    Episodic,
}

/// `appendToPrompt` and `modelId` of one step of a custom strategy.
#[derive(Clone, Debug, Default)]
pub struct Override {
    pub append_to_prompt: Option<String>,
    pub model_id: Option<String>,
}

/// A strategy as extraction sees it.
#[derive(Clone, Debug)]
pub struct Plan {
    pub strategy_id: String,
    pub pipeline: Pipeline,
    pub namespace_template: String,
    pub extraction: Override,
    pub consolidation: Override,
    /// Episodic only: where reflections go, and how to make them.
    pub reflection: Option<(String, Override)>,
    pub expiry_days: Option<i64>,
    /// The record metadata its `memoryRecordSchema` asks for.
    pub metadata: Vec<super::metadata::Field>,
}

fn override_at(definition: &Map<String, Value>, pointer: &str) -> Override {
    let section = Value::Object(definition.clone());
    let found = section.pointer(pointer);
    let text = |key: &str| found.and_then(|v| v.get(key)).and_then(Value::as_str).map(String::from);
    Override {
        append_to_prompt: text("appendToPrompt"),
        model_id: text("modelId"),
    }
}

fn first_template(value: Option<&Value>) -> Option<String> {
    value
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .map(String::from)
}

impl Plan {
    /// The plan of a stored strategy; `None` for one that extracts nothing (self-managed).
    pub fn of(strategy: &StrategyRow) -> Option<Plan> {
        let d = &strategy.definition;
        let custom_type = d
            .get("configuration")
            .and_then(|c| c.get("type"))
            .and_then(Value::as_str);
        let (pipeline, prefix) = match (strategy.strategy_type.as_str(), custom_type) {
            ("SEMANTIC", _) | ("CUSTOM", Some("SEMANTIC_OVERRIDE")) => (Pipeline::Semantic, "semantic"),
            ("USER_PREFERENCE", _) | ("CUSTOM", Some("USER_PREFERENCE_OVERRIDE")) => {
                (Pipeline::UserPreference, "userPreference")
            }
            ("SUMMARIZATION", _) | ("CUSTOM", Some("SUMMARY_OVERRIDE")) => (Pipeline::Summary, "summary"),
            ("EPISODIC", _) | ("CUSTOM", Some("EPISODIC_OVERRIDE")) => (Pipeline::Episodic, "episodic"),
            _ => return None,
        };
        let namespace_template = first_template(d.get("namespaceTemplates").or_else(|| d.get("namespaces")))?;
        let whole = Value::Object(d.clone());
        let reflection = (pipeline == Pipeline::Episodic).then(|| {
            let configured =
                whole.pointer("/configuration/reflection/episodicReflectionConfiguration/namespaceTemplates");
            let custom =
                whole.pointer("/configuration/reflection/customReflectionConfiguration/episodicReflectionOverride");
            let template = first_template(configured)
                .or_else(|| first_template(custom.and_then(|c| c.get("namespaceTemplates"))))
                .unwrap_or_else(|| "/strategies/{memoryStrategyId}/actors/{actorId}/".into());
            let how = override_at(
                d,
                "/configuration/reflection/customReflectionConfiguration/episodicReflectionOverride",
            );
            (template, how)
        });
        Some(Plan {
            strategy_id: strategy.strategy_id.clone(),
            pipeline,
            namespace_template,
            extraction: override_at(
                d,
                &format!("/configuration/extraction/customExtractionConfiguration/{prefix}ExtractionOverride"),
            ),
            consolidation: override_at(
                d,
                &format!("/configuration/consolidation/customConsolidationConfiguration/{prefix}ConsolidationOverride"),
            ),
            reflection,
            expiry_days: d.get("recordExpiryDurationDays").and_then(Value::as_i64),
            metadata: super::metadata::fields(d),
        })
    }
}

/// Fills a namespace template. A variable without a value is an error naming it: the memory
/// declared it in `namespaceKeys`, but the events did not give it in `extractionConfig`.
pub fn resolve_namespace(
    template: &str,
    actor_id: &str,
    session_id: &str,
    strategy_id: &str,
    variables: &Map<String, Value>,
) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &rest[start + 1..start + len];
        match name {
            "actorId" => out.push_str(actor_id),
            "sessionId" => out.push_str(session_id),
            "memoryStrategyId" | "strategyId" => out.push_str(strategy_id),
            other => match variables.get(other).and_then(Value::as_str) {
                Some(value) => out.push_str(value),
                None => {
                    return Err(format!(
                        "namespace template `{template}` needs `{other}`, which the events' extractionConfig.namespaceVariables do not give"
                    ));
                }
            },
        }
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A chat model for one step, with the model id to ask it for.
pub struct StepModel {
    pub model: Arc<dyn ChatModel>,
    pub model_id: Option<String>,
}

pub fn step_model(models: &Models, how: &Override) -> Result<StepModel, String> {
    models
        .chat_for(how.model_id.as_deref())
        .map(|(model, model_id)| StepModel { model, model_id })
        .ok_or_else(|| {
            format!(
                "no chat model is available for extraction ({})",
                models.chat_missing.as_deref().unwrap_or("models.chat is not set")
            )
        })
}

fn system_prompt(base: &str, how: &Override) -> String {
    match &how.append_to_prompt {
        Some(extra) => format!("{base}\n\n{extra}"),
        None => base.to_string(),
    }
}

/// Asks `step` for one JSON answer.
pub async fn ask(
    step: &StepModel,
    base_prompt: &str,
    how: &Override,
    user: String,
    schema_name: &str,
    schema: Value,
    max_output_tokens: u32,
) -> Result<Value, String> {
    let request = ChatRequest {
        system: system_prompt(base_prompt, how),
        messages: vec![Message::user(user)],
        schema_name: schema_name.into(),
        schema,
        max_output_tokens,
        model: step.model_id.clone(),
    };
    step.model
        .chat(&request)
        .await
        .map(|answer| answer.value)
        .map_err(|e| format!("{}: {e}", step.model.name()))
}

// Each prompt carries one worked example: small models (the embedded 135M one above all) copy
// the shape of an example far better than they follow a description, and large ones lose
// nothing by it. Extracted facts must share a word with what the user said (`grounded`), so a
// model that copies the example's facts instead of extracting adds nothing.

const SEMANTIC_PROMPT: &str = "You extract long-term memories from a conversation between a user and an assistant. \
Write each fact the user stated about themselves, their life, work, plans, or the world as a short standalone \
sentence. Leave out greetings, questions, and what only the assistant said. Answer an empty list when there is \
nothing worth remembering.

Example conversation:
user: Hi! I just moved to Berlin for a job at a bank.
assistant: Welcome! How do you like it?
user: Great, and I started learning the cello.
Example answer: {\"memories\":[\"The user moved to Berlin.\",\"The user works at a bank.\",\"The user is learning the cello.\"]}";

const PREFERENCE_PROMPT: &str = "You extract the user's preferences from a conversation between a user and an \
assistant: what they like, dislike, choose or usually do. For each, write the preference as a short sentence, \
the context it came up in, and one to three topic categories. Answer an empty list when the user showed no preference.

Example conversation:
user: I always take the train, I hate flying.
Example answer: {\"preferences\":[{\"preference\":\"The user prefers trains to planes.\",\"context\":\"Talking about travel.\",\"categories\":[\"travel\"]}]}";

const SUMMARY_PROMPT: &str = "You maintain a running summary of a conversation between a user and an assistant. \
Rewrite the summary so far to include what the new messages add: topics, decisions and facts. Keep it short and \
factual, in the third person.

Example new messages:
user: Can you help me plan a trip to Rome in May?
assistant: Sure! How many days?
user: Five days, on a small budget.
Example answer: {\"summary\":\"The user is planning a five-day trip to Rome in May on a small budget and asked the assistant for help.\"}";

const EPISODE_PROMPT: &str = "You record an episode from a conversation between a user and an assistant: the \
situation, what the user wanted, what the assistant did, and how it turned out. Be brief and factual.";

const REFLECTION_PROMPT: &str = "You read recent episodes of an assistant's work with a user and write lessons \
that would help in future episodes: patterns in what the user wants and what worked or failed. Each lesson is one \
short sentence. Return an empty list when there is no lesson.";

pub const CONSOLIDATION_PROMPT: &str = "You keep a user's long-term memory free of duplicates and contradictions. \
Compare the new memory with the existing ones. Answer ADD when it is new information; UPDATE when it changes, \
corrects or refines an existing memory, with that memory's number and the merged text; NOOP when an existing memory \
already says the same. The memory field is the text to store for ADD or UPDATE.";

fn string_list(key: &str, max_items: u64, max_length: u64) -> Value {
    json!({
        "type": "object",
        "properties": {key: {"type": "array", "maxItems": max_items, "items": {"type": "string", "maxLength": max_length}}},
        "required": [key],
        "additionalProperties": false
    })
}

pub fn consolidation_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "action": {"type": "string", "enum": ["ADD", "UPDATE", "NOOP"]},
            "existing": {"type": "integer"},
            "memory": {"type": "string", "maxLength": 400}
        },
        "required": ["action", "existing", "memory"],
        "additionalProperties": false
    })
}

/// The words of a text that say what it is about: lowercased, without stop words and short
/// words, with a plural `s` dropped.
pub fn content_words(text: &str) -> std::collections::HashSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
        .filter(|w| w.chars().count() >= 3 && !crate::store::records::STOP_WORDS.contains(&w.as_str()))
        .map(|w| w.strip_suffix('s').map(String::from).unwrap_or(w))
        .collect()
}

/// Whether an extracted text shares a content word with what the user said.
fn grounded(text: &str, user_words: &std::collections::HashSet<String>) -> bool {
    let words = content_words(text);
    words.is_empty() || words.iter().any(|w| user_words.contains(w))
}

/// New candidate records of one extraction call. `user_text` is what the user said in the run.
pub async fn extract(
    step: &StepModel,
    plan: &Plan,
    conversation: &str,
    user_text: &str,
    previous_summary: Option<&str>,
) -> Result<Vec<String>, String> {
    let how = &plan.extraction;
    let user_words = content_words(user_text);
    match plan.pipeline {
        Pipeline::Semantic => {
            let answer = ask(
                step,
                SEMANTIC_PROMPT,
                how,
                format!("Conversation:\n{conversation}"),
                "memories",
                string_list("memories", 10, 300),
                220,
            )
            .await?;
            Ok(texts(&answer, "memories")
                .into_iter()
                .filter(|t| grounded(t, &user_words))
                .collect())
        }
        Pipeline::UserPreference => {
            let schema = json!({
                "type": "object",
                "properties": {"preferences": {"type": "array", "maxItems": 8, "items": {
                    "type": "object",
                    "properties": {
                        "preference": {"type": "string", "maxLength": 200},
                        "context": {"type": "string", "maxLength": 200},
                        "categories": {"type": "array", "maxItems": 3, "items": {"type": "string", "maxLength": 40}}
                    },
                    "required": ["preference", "context", "categories"],
                    "additionalProperties": false
                }}},
                "required": ["preferences"],
                "additionalProperties": false
            });
            let answer = ask(
                step,
                PREFERENCE_PROMPT,
                how,
                format!("Conversation:\n{conversation}"),
                "preferences",
                schema,
                260,
            )
            .await?;
            Ok(answer
                .get("preferences")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|p| {
                    p.get("preference")
                        .and_then(Value::as_str)
                        .is_some_and(|t| !t.trim().is_empty())
                })
                // The record text AgentCore writes: a JSON object in this member order.
                .map(|p| {
                    json!({"context": p["context"], "preference": p["preference"], "categories": p["categories"]})
                        .to_string()
                })
                .collect())
        }
        Pipeline::Summary => {
            let user = match previous_summary {
                Some(summary) => format!("Summary so far:\n{summary}\n\nNew messages:\n{conversation}"),
                None => format!("Summary so far: (none)\n\nNew messages:\n{conversation}"),
            };
            let schema = json!({
                "type": "object",
                "properties": {"summary": {"type": "string", "maxLength": 2000}},
                "required": ["summary"],
                "additionalProperties": false
            });
            let answer = ask(step, SUMMARY_PROMPT, how, user, "summary", schema, 320).await?;
            let summary = answer
                .get("summary")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .trim()
                .to_string();
            Ok(if summary.is_empty() { Vec::new() } else { vec![summary] })
        }
        Pipeline::Episodic => {
            let schema = json!({
                "type": "object",
                "properties": {
                    "situation": {"type": "string", "maxLength": 300},
                    "intent": {"type": "string", "maxLength": 300},
                    "actions": {"type": "string", "maxLength": 400},
                    "outcome": {"type": "string", "maxLength": 300}
                },
                "required": ["situation", "intent", "actions", "outcome"],
                "additionalProperties": false
            });
            let answer = ask(
                step,
                EPISODE_PROMPT,
                how,
                format!("Conversation:\n{conversation}"),
                "episode",
                schema,
                300,
            )
            .await?;
            let empty = ["situation", "intent", "actions", "outcome"].iter().all(|k| {
                answer
                    .get(*k)
                    .and_then(Value::as_str)
                    .is_none_or(|t| t.trim().is_empty())
            });
            Ok(if empty { Vec::new() } else { vec![answer.to_string()] })
        }
    }
}

/// Lessons drawn from recent episodes.
pub async fn reflect(step: &StepModel, how: &Override, episodes: &[String]) -> Result<Vec<String>, String> {
    let listing: Vec<String> = episodes
        .iter()
        .enumerate()
        .map(|(i, e)| format!("{}. {e}", i + 1))
        .collect();
    let answer = ask(
        step,
        REFLECTION_PROMPT,
        how,
        format!("Episodes:\n{}", listing.join("\n")),
        "lessons",
        string_list("lessons", 5, 300),
        200,
    )
    .await?;
    Ok(texts(&answer, "lessons"))
}

/// The non-empty strings of an answer's list member `key`, trimmed.
fn texts(answer: &Value, key: &str) -> Vec<String> {
    answer
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracted_text_must_share_a_word_with_what_the_user_said() {
        let said = content_words("I live in Lisbon and my sisters are nurses.");
        assert!(grounded("The user lives in Lisbon.", &said));
        assert!(grounded("The user's sister is a nurse.", &said));
        assert!(!grounded("The user moved to Berlin.", &said));
        assert!(!grounded("The user is learning the cello.", &said));
    }

    #[test]
    fn namespaces_are_filled_and_missing_variables_named() {
        let variables: Map<String, Value> = [("tenant".to_string(), json!("acme"))].into_iter().collect();
        assert_eq!(
            resolve_namespace(
                "/t/{tenant}/strategies/{memoryStrategyId}/actors/{actorId}/s/{sessionId}/",
                "u-1",
                "s-1",
                "facts-1",
                &variables
            ),
            Ok("/t/acme/strategies/facts-1/actors/u-1/s/s-1/".to_string())
        );
        assert_eq!(
            resolve_namespace("{strategyId}/x", "a", "s", "id", &Map::new()),
            Ok("id/x".to_string())
        );
        let error = resolve_namespace("/{region}/", "a", "s", "id", &Map::new()).expect_err("missing");
        assert!(error.contains("`region`"), "{error}");
    }

    fn strategy(kind: &str, definition: Value) -> StrategyRow {
        StrategyRow {
            strategy_id: "s-1".into(),
            memory_id: "m".into(),
            position: 0,
            name: "n".into(),
            strategy_type: kind.into(),
            status: "ACTIVE".into(),
            definition: definition.as_object().cloned().unwrap_or_default(),
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn plans_read_pipelines_overrides_and_reflection_namespaces() {
        let semantic = Plan::of(&strategy(
            "SEMANTIC",
            json!({"namespaceTemplates": ["/a/{actorId}/"], "recordExpiryDurationDays": 40}),
        ))
        .expect("plan");
        assert_eq!(
            (
                semantic.pipeline,
                semantic.namespace_template.as_str(),
                semantic.expiry_days
            ),
            (Pipeline::Semantic, "/a/{actorId}/", Some(40))
        );
        let custom = Plan::of(&strategy(
            "CUSTOM",
            json!({"namespaceTemplates": ["/c/"], "configuration": {"type": "USER_PREFERENCE_OVERRIDE",
                "extraction": {"customExtractionConfiguration": {"userPreferenceExtractionOverride": {"appendToPrompt": "Only food.", "modelId": "big"}}}}}),
        ))
        .expect("plan");
        assert_eq!(custom.pipeline, Pipeline::UserPreference);
        assert_eq!(custom.extraction.append_to_prompt.as_deref(), Some("Only food."));
        assert_eq!(custom.extraction.model_id.as_deref(), Some("big"));
        assert!(custom.consolidation.model_id.is_none());
        let episodic = Plan::of(&strategy(
            "EPISODIC",
            json!({"namespaceTemplates": ["/e/{sessionId}/"], "configuration": {"reflection": {"episodicReflectionConfiguration": {"namespaceTemplates": ["/r/{actorId}/"]}}}}),
        ))
        .expect("plan");
        assert_eq!(episodic.reflection.map(|r| r.0).as_deref(), Some("/r/{actorId}/"));
        assert!(
            Plan::of(&strategy(
                "CUSTOM",
                json!({"namespaceTemplates": ["/x/"], "configuration": {"type": "SELF_MANAGED"}})
            ))
            .is_none()
        );
    }
}
