//! The embedded embedder against the reference numbers of sentence-transformers (its quickstart
//! prints these similarities for all-MiniLM-L6-v2). Needs the model files: `make test` unpacks
//! them and sets `BERTH_TEST_MODELS_DIR`; without it the test says so and passes.

use berth_models::{Embedder, MINILM_DIR, MiniLm};

fn model() -> Option<MiniLm> {
    let Ok(dir) = std::env::var("BERTH_TEST_MODELS_DIR") else {
        eprintln!("BERTH_TEST_MODELS_DIR is not set: skipping the embedder test");
        return None;
    };
    Some(MiniLm::load(&std::path::Path::new(&dir).join(MINILM_DIR)).expect("the model loads"))
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[tokio::test]
async fn matches_the_reference_similarities_of_sentence_transformers() {
    let Some(model) = model() else { return };
    assert_eq!(model.dimensions(), 384);
    let texts = [
        "The weather is lovely today.",
        "It's so sunny outside!",
        "He drove to the stadium.",
    ];
    let vectors = model
        .embed(texts.iter().map(|t| t.to_string()).collect())
        .await
        .unwrap();
    assert_eq!(vectors.len(), 3);
    for vector in &vectors {
        assert_eq!(vector.len(), 384);
        assert!((dot(vector, vector) - 1.0).abs() < 1e-4, "unit length");
    }
    let reference = [(0, 1, 0.6660), (0, 2, 0.1046), (1, 2, 0.1411)];
    for (a, b, expected) in reference {
        let similarity = dot(&vectors[a], &vectors[b]);
        assert!(
            (similarity - expected).abs() < 2e-3,
            "similarity of {a} and {b}: {similarity}, sentence-transformers says {expected}"
        );
    }
}

#[tokio::test]
async fn a_text_embeds_the_same_alone_or_padded_in_a_batch() {
    let Some(model) = model() else { return };
    let short = "cats".to_string();
    let long = "a much longer sentence that forces the batch to be padded well past one token".to_string();
    let alone = model.embed(vec![short.clone()]).await.unwrap();
    let batched = model.embed(vec![long, short, String::new()]).await.unwrap();
    assert!(dot(&alone[0], &batched[1]) > 0.9999, "padding changed the vector");
    assert_eq!(batched[2].len(), 384, "an empty text still gets a vector");
    // Past the model's 256-token window the text is truncated, not refused.
    let huge = "word ".repeat(5000);
    assert_eq!(model.embed(vec![huge]).await.unwrap()[0].len(), 384);
}

#[test]
fn a_missing_model_says_what_is_missing_and_how_to_get_it() {
    let empty = std::env::temp_dir().join("berth-no-models-here");
    let error = MiniLm::load(&empty).err().expect("no files, no model").to_string();
    assert!(
        error.contains("config.json") && error.contains("make models"),
        "{error}"
    );
}
