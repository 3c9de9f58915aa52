//! `berth-bench --quality MODELS_DIR [--seed N]`: retrieval quality on a generated multi-session
//! conversation set with known facts and questions. Each user tells facts across several
//! sessions, mixed with small talk and hard negatives (the same kind of fact about someone
//! else); each question is worded differently from the fact that answers it. Records are
//! written with BatchCreateMemoryRecords, one namespace per user, so retrieval is measured apart
//! from extraction. Reports recall@5 of the answering record for full-text, dense and hybrid
//! retrieval side by side. The set is a function of the seed.

use std::sync::Arc;

use berth_core::{AccountId, Caller, SystemClock};
use berth_memory::MemoryService;
use berth_memory::records::{BatchCreateMemoryRecordsInput, RetrievalMode, RetrieveMemoryRecordsInput};
use berth_store::Store;
use berth_store::jobs::Worker;
use serde_json::json;

/// A kind of fact: how users state it (`{}` is the value), the values, and the question.
struct Topic {
    statements: &'static [&'static str],
    values: &'static [&'static str],
    question: &'static str,
    /// Someone else's fact of the same kind, as a distractor.
    negative: &'static str,
}

#[rustfmt::skip]
const TOPICS: &[Topic] = &[
    Topic { statements: &["I moved to {} last spring.", "These days I'm based in {}.", "My flat in {} is tiny but I love it."],
            values: &["Lisbon", "Porto", "Oslo", "Kyoto", "Denver", "Nairobi", "Lyon", "Quito"],
            question: "Where does the user live?", negative: "My cousin lives in {}." },
    Topic { statements: &["I work as a {} at the hospital.", "My job as a {} keeps me busy.", "I've been a {} for ten years."],
            values: &["nurse", "radiologist", "pharmacist", "surgeon", "paramedic", "midwife"],
            question: "What is the user's profession?", negative: "My neighbour trained as a {}." },
    Topic { statements: &["My dog {} chewed my shoes again.", "I took {}, my dog, to the vet.", "{} is the sweetest puppy."],
            values: &["Biscuit", "Rex", "Luna", "Pepper", "Milo", "Nala"],
            question: "What is the name of the user's pet?", negative: "My friend's cat is called {}." },
    Topic { statements: &["{} is my favourite dish.", "I could eat {} every day.", "Nothing beats a plate of {}."],
            values: &["green curry", "ramen", "paella", "lasagne", "falafel", "pho"],
            question: "What food does the user enjoy most?", negative: "My sister hates {}." },
    Topic { statements: &["My brother {} is visiting next week.", "I called my brother {} yesterday.", "{}, my older brother, is a pilot."],
            values: &["Tomás", "Henrik", "Kenji", "Marco", "Idris", "Pavel"],
            question: "What is the name of the user's sibling?", negative: "My coworker {} has three sisters." },
    Topic { statements: &["On weekends I go {}.", "I've really gotten into {} lately.", "Nothing relaxes me like {}."],
            values: &["rock climbing", "sea kayaking", "birdwatching", "trail running", "pottery", "sailing"],
            question: "What does the user do in their free time?", negative: "My boss tried {} once." },
    Topic { statements: &["I drive a {} to work.", "My {} needs new tyres.", "I finally bought a {}."],
            values: &["Volvo estate", "Toyota Prius", "Fiat Panda", "Tesla Model 3", "Subaru Outback"],
            question: "Which car does the user own?", negative: "My uncle sold his {}." },
    Topic { statements: &["I'm allergic to {}.", "I have to avoid {} or I get hives.", "{} makes me sneeze terribly."],
            values: &["peanuts", "shellfish", "penicillin", "cat hair", "pollen", "latex"],
            question: "What is the user allergic to?", negative: "My roommate is allergic to {}." },
    Topic { statements: &["I play the {} in a band.", "I practise the {} every evening.", "I started {} lessons in March."],
            values: &["cello", "trumpet", "bass guitar", "violin", "saxophone", "drums"],
            question: "Which musical instrument does the user play?", negative: "My nephew wants to learn the {}." },
    Topic { statements: &["I'm learning {} for my trip.", "My {} classes are on Tuesdays.", "I can finally order coffee in {}."],
            values: &["Japanese", "Portuguese", "Swahili", "Norwegian", "Korean", "Greek"],
            question: "Which language is the user studying?", negative: "My teacher speaks fluent {}." },
    Topic { statements: &["I drink {} every morning.", "A mug of {} starts my day.", "I can't wake up without {}."],
            values: &["matcha", "black coffee", "chai", "yerba mate", "espresso", "rooibos"],
            question: "What does the user have for a morning beverage?", negative: "My partner prefers {}." },
    Topic { statements: &["My birthday is in {}.", "I was born in {}.", "I'm turning forty this {}."],
            values: &["January", "April", "July", "October", "December", "March"],
            question: "When is the user's birthday?", negative: "My mother's anniversary is in {}." },
];

#[rustfmt::skip]
const SMALL_TALK: &[&str] = &[
    "The weather was lovely today.", "I watched a documentary about whales.", "Traffic was terrible this morning.",
    "Can you recommend a good podcast?", "I need to buy new headphones.", "The meeting ran late again.",
    "I tried a new recipe for bread.", "My phone battery dies so fast.", "I'm thinking about repainting the kitchen.",
    "The train was delayed by twenty minutes.", "I finished a long novel last night.", "I should drink more water.",
];

/// A small deterministic generator (xorshift64*), so a seed always gives the same set.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// One user's records (content, session) and questions (text, index of the answering record).
struct User {
    records: Vec<(String, String)>,
    questions: Vec<(String, usize)>,
}

fn generate(rng: &mut Rng, users: usize) -> Vec<User> {
    (0..users)
        .map(|_| {
            let mut records = Vec::new();
            let mut questions = Vec::new();
            for topic in TOPICS {
                let value = rng.pick(topic.values);
                let session = format!("s-{}", rng.below(5));
                let statement = rng.pick(topic.statements).replace("{}", value);
                questions.push((topic.question.to_string(), records.len()));
                records.push((statement, session));
                // Someone else's fact of the same kind, with another value.
                let other = rng.pick(topic.values);
                records.push((topic.negative.replace("{}", other), format!("s-{}", rng.below(5))));
            }
            for _ in 0..12 {
                records.push((rng.pick(SMALL_TALK).to_string(), format!("s-{}", rng.below(5))));
            }
            User { records, questions }
        })
        .collect()
}

pub async fn run(models: &std::path::Path, seed: u64) -> anyhow::Result<()> {
    let embedder = Arc::new(berth_models::MiniLm::load(&models.join(berth_models::MINILM_DIR))?);
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("quality.db").display());
    let store = Store::open(&url, Arc::new(SystemClock)).await?;
    let mut worker = Worker::new(store.clone());
    let mut base = MemoryService::new(store.clone(), "us-east-1").with_embedder(embedder);
    base.attach_worker(&mut worker);
    let caller = Caller {
        account: AccountId::try_from("123456789012".to_string()).map_err(anyhow::Error::msg)?,
        access_key_id: "AKIABENCHMARK0000001".into(),
        bearer_token: None,
    };
    let input = serde_json::from_value(json!({"name": "quality", "eventExpiryDuration": 30}))?;
    let memory_id = base.create_memory(&caller, input).await?.memory.id;
    worker.run_due().await?;

    let users = generate(&mut Rng(seed.max(1)), 20);
    let mut ids: Vec<Vec<String>> = Vec::new();
    for (u, user) in users.iter().enumerate() {
        let records: Vec<_> = user
            .records
            .iter()
            .enumerate()
            .map(|(i, (content, _session))| {
                json!({"requestIdentifier": format!("r{i}"), "namespaces": [format!("/users/u{u}/")],
                       "content": {"text": content}, "timestamp": 1_700_000_000.0})
            })
            .collect();
        let input: BatchCreateMemoryRecordsInput =
            serde_json::from_value(json!({"memoryId": memory_id, "records": records}))?;
        let out = base.batch_create_memory_records(&caller, input).await?;
        anyhow::ensure!(
            out.failed_records.is_empty(),
            "records failed: {:?}",
            out.failed_records
        );
        // Successful records come back in request order.
        ids.push(out.successful_records.into_iter().map(|r| r.memory_record_id).collect());
    }

    let questions: usize = users.iter().map(|u| u.questions.len()).sum();
    println!(
        "seed {seed}: {} users, {} records, {questions} questions",
        users.len(),
        ids.iter().map(Vec::len).sum::<usize>()
    );
    println!();
    println!("| retrieval | recall@5 | recall@1 |");
    println!("|---|---:|---:|");
    for (label, mode) in [
        ("full text", RetrievalMode::Lexical),
        ("dense", RetrievalMode::Dense),
        ("hybrid", RetrievalMode::Hybrid),
    ] {
        let service = base.clone().with_retrieval_mode(mode);
        let (mut at5, mut at1) = (0, 0);
        for (u, user) in users.iter().enumerate() {
            for (question, answer) in &user.questions {
                let input: RetrieveMemoryRecordsInput = serde_json::from_value(json!({
                    "memoryId": memory_id, "namespace": format!("/users/u{u}/"),
                    "searchCriteria": {"searchQuery": question, "topK": 5}
                }))?;
                let found: Vec<String> = service
                    .retrieve_memory_records(&caller, input)
                    .await?
                    .memory_record_summaries
                    .into_iter()
                    .map(|r| r.memory_record_id)
                    .collect();
                let wanted = &ids[u][*answer];
                at5 += usize::from(found.contains(wanted));
                at1 += usize::from(found.first() == Some(wanted));
            }
        }
        println!(
            "| {label} | {:.3} | {:.3} |",
            at5 as f64 / questions as f64,
            at1 as f64 / questions as f64
        );
    }
    store.close().await;
    Ok(())
}
