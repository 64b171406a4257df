//! Sentence embeddings with all-MiniLM-L6-v2, in-process on the CPU: candle-transformers' BERT,
//! then mean pooling over real tokens and L2 normalisation (the sentence-transformers recipe of
//! this model: Transformer → Pooling(mean) → Normalize), inputs cut at 256 word pieces.
//! The model directory holds config.json, tokenizer.json and model.safetensors (`nanbeige pull
//! minilm`). It does not download anything and does not do GPUs.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use std::path::Path;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// sentence-transformers' max_seq_length for this model.
pub const MAX_TOKENS: usize = 256;

pub struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    pub dim: usize,
}

impl Embedder {
    pub fn load(dir: &Path) -> Result<Embedder> {
        let need = |f: &str| {
            let p = dir.join(f);
            if !p.is_file() {
                bail!("embedding model {} lacks {f} (fetch it with `nanbeige pull minilm`)", dir.display());
            }
            Ok(p)
        };
        let (cfg_p, tok_p, w_p) = (need("config.json")?, need("tokenizer.json")?, need("model.safetensors")?);
        let cfg: Config = serde_json::from_str(&std::fs::read_to_string(&cfg_p)?)
            .with_context(|| format!("parsing {}", cfg_p.display()))?;
        let dim = cfg.hidden_size;
        let mut tokenizer =
            Tokenizer::from_file(&tok_p).map_err(|e| anyhow::anyhow!("loading {}: {e}", tok_p.display()))?;
        // The shipped tokenizer.json pads/truncates to 128; use sentence-transformers' settings.
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: MAX_TOKENS, ..Default::default() }))
            .map_err(|e| anyhow::anyhow!("tokenizer truncation: {e}"))?;
        tokenizer.with_padding(Some(PaddingParams { strategy: PaddingStrategy::BatchLongest, ..Default::default() }));
        // SAFETY: the weights file is memory-mapped read-only; nanbeige never writes model files in place.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(std::slice::from_ref(&w_p), DType::F32, &Device::Cpu) }
            .with_context(|| format!("reading {}", w_p.display()))?;
        let model = BertModel::load(vb, &cfg).with_context(|| format!("loading BERT from {}", w_p.display()))?;
        Ok(Embedder { model, tokenizer, dim })
    }

    /// Unit-length embeddings, one per text.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(vec![]);
        }
        let enc = self.tokenizer.encode_batch(texts.to_vec(), true).map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?;
        let n = enc.len();
        let len = enc[0].get_ids().len();
        let flat = |f: &dyn Fn(&tokenizers::Encoding) -> Vec<u32>| -> Vec<u32> { enc.iter().flat_map(f).collect() };
        let ids = Tensor::from_vec(flat(&|e| e.get_ids().to_vec()), (n, len), &Device::Cpu)?;
        let types = Tensor::from_vec(flat(&|e| e.get_type_ids().to_vec()), (n, len), &Device::Cpu)?;
        let mask = Tensor::from_vec(flat(&|e| e.get_attention_mask().to_vec()), (n, len), &Device::Cpu)?;
        let hidden = self.model.forward(&ids, &types, Some(&mask))?; // (n, len, dim)
                                                                     // Mean over the real tokens only.
        let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&m)?.sum(1)?;
        let counts = m.sum(1)?.clamp(1e-9, f32::MAX)?;
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f32::MAX)?;
        Ok(mean.broadcast_div(&norm)?.to_vec2::<f32>()?)
    }

    /// Embed many texts in batches of similar length (less padding), calling `progress(done)`.
    pub fn embed_all(&self, texts: &[String], batch: usize, mut progress: impl FnMut(usize)) -> Result<Vec<Vec<f32>>> {
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let mut out = vec![vec![]; texts.len()];
        for group in order.chunks(batch.max(1)) {
            let refs: Vec<&str> = group.iter().map(|&i| texts[i].as_str()).collect();
            for (&i, v) in group.iter().zip(self.embed(&refs)?) {
                out[i] = v;
            }
            progress(group.len());
        }
        Ok(out)
    }
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
