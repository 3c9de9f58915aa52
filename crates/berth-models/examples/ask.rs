//! Asks the embedded chat model one structured question: `cargo run --release -p berth-models
//! --example ask -- MODELS_DIR SYSTEM USER SCHEMA_JSON`. For trying prompts on SmolLM2.

use berth_models::{ChatRequest, Message, SMOLLM_DIR, SmolLm};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, system, user, schema] = args.as_slice() else {
        return Err("usage: ask MODELS_DIR SYSTEM USER SCHEMA_JSON".into());
    };
    let model = SmolLm::load(&std::path::Path::new(dir).join(SMOLLM_DIR))?;
    let request = ChatRequest {
        system: system.clone(),
        messages: vec![Message::user(user.clone())],
        schema_name: "answer".into(),
        schema: serde_json::from_str(schema)?,
        max_output_tokens: 200,
        model: None,
    };
    let started = std::time::Instant::now();
    let answer = model.chat_blocking(&request)?;
    println!("{} ({:?}, {:?})", answer.value, answer.usage, started.elapsed());
    Ok(())
}
