//! Speed measurements of a loaded model, shaped like llama.cpp's `llama-bench` so the two can be
//! compared on the same file: prefill of a p-token prompt into an empty cache (pp), and decode of n
//! tokens one at a time (tg) from an empty cache or from a cache already filled to some depth.
//! Tokens are random ids (as llama-bench uses); each decode step takes the logits of the last
//! position to the host and picks the argmax, which is what a real greedy step costs.
//!
//! Also: bytes of weights read per decoded token (the decode ceiling's denominator).
//! Not here: the machine's bandwidth (machine.rs), argument parsing and printing (the CLI).

use crate::load::{Format, LoadedModel};
use crate::sampler::argmax;
use anyhow::{bail, Result};
use candle_core::quantized::GgmlDType;
use candle_core::DType;
use nanbeige_model::LoadOptions;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;

/// Tokens per forward pass when filling the cache to a decode depth.
pub const FILL_CHUNK: usize = 512;

#[derive(Clone, Debug, Serialize)]
pub struct Stat {
    /// Mean over repetitions of tokens/s.
    pub tokens_per_sec: f64,
    /// Standard deviation over repetitions (0 for one repetition).
    pub stddev: f64,
    /// Mean seconds per repetition.
    pub seconds: f64,
}

fn stat(tokens: usize, secs: &[f64]) -> Stat {
    let tps: Vec<f64> = secs.iter().map(|s| tokens as f64 / s).collect();
    let n = tps.len() as f64;
    let mean = tps.iter().sum::<f64>() / n;
    let var = if tps.len() > 1 { tps.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    Stat { tokens_per_sec: mean, stddev: var.sqrt(), seconds: secs.iter().sum::<f64>() / n }
}

#[derive(Clone, Debug, Serialize)]
pub struct Prefill {
    pub tokens: usize,
    #[serde(flatten)]
    pub stat: Stat,
    /// Prefill plus picking the first token, milliseconds (mean).
    pub time_to_first_token_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Decode {
    /// Tokens already in the cache when decoding starts.
    pub depth: usize,
    pub tokens: usize,
    #[serde(flatten)]
    pub stat: Stat,
    /// Filling the cache to `depth` (chunked prefill, chunks of FILL_CHUNK), when depth > 0.
    pub fill_seconds: Option<f64>,
    pub fill_tokens_per_sec: Option<f64>,
}

fn random_tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(0..vocab as u32)).collect()
}

/// Error unless the model (as loaded) accepts `tokens` tokens of context.
pub fn check_fits(lm: &LoadedModel, tokens: usize) -> Result<()> {
    if tokens > lm.context_len {
        bail!(
            "the benchmark needs {tokens} tokens of context but the model allows {} (max_position_embeddings {})",
            lm.context_len,
            lm.model.cfg.max_position_embeddings
        );
    }
    Ok(())
}

/// A few tokens through a throwaway cache: starts thread pools and first-touch allocations so the
/// first measured run is not penalised (llama-bench also warms up).
pub fn warmup(lm: &LoadedModel) -> Result<()> {
    let ids = random_tokens(8, lm.model.cfg.vocab_size, 1);
    let mut cache = lm.model.new_cache(16.min(lm.context_len));
    let logits = lm.model.forward_last(&ids[..ids.len().min(cache.max_len() - 2)], &mut cache)?;
    lm.model.forward_last(&[argmax(&logits)], &mut cache)?;
    Ok(())
}

/// Prefill `n` random tokens into an empty cache, `reps` times.
pub fn prefill(lm: &LoadedModel, n: usize, reps: usize, seed: u64) -> Result<Prefill> {
    check_fits(lm, n)?;
    let ids = random_tokens(n, lm.model.cfg.vocab_size, seed);
    let mut secs = vec![];
    let mut ttft = 0.0;
    for _ in 0..reps.max(1) {
        let mut cache = lm.model.new_cache(n);
        let t0 = Instant::now();
        let logits = lm.model.forward_last(&ids, &mut cache)?;
        secs.push(t0.elapsed().as_secs_f64());
        std::hint::black_box(argmax(&logits));
        ttft += t0.elapsed().as_secs_f64() * 1e3;
    }
    Ok(Prefill { tokens: n, stat: stat(n, &secs), time_to_first_token_ms: ttft / secs.len() as f64 })
}

/// Decode `n` tokens greedily after filling the cache with `depth` random tokens, `reps` times.
/// Decode `n` tokens after `depth` tokens of context. The context comes from a chunked prefill of
/// random tokens, or with `random_fill` from random keys and values written straight into the
/// cache (same decode cost, no prefill time).
pub fn decode(lm: &LoadedModel, depth: usize, n: usize, reps: usize, seed: u64, random_fill: bool) -> Result<Decode> {
    check_fits(lm, depth + n)?;
    let vocab = lm.model.cfg.vocab_size;
    let fill = random_tokens(depth, vocab, seed);
    let mut secs = vec![];
    let mut fill_secs = vec![];
    for r in 0..reps.max(1) {
        let mut cache = lm.model.new_cache(depth + n);
        let t_fill = Instant::now();
        if random_fill {
            cache.push_random(depth, lm.model.cfg.num_kv_heads, lm.model.cfg.head_dim)?;
        } else {
            for chunk in fill.chunks(FILL_CHUNK) {
                lm.model.forward_last(chunk, &mut cache)?;
            }
        }
        fill_secs.push(t_fill.elapsed().as_secs_f64());
        let mut tok = random_tokens(1, vocab, seed ^ (r as u64 + 1))[0];
        let t0 = Instant::now();
        for _ in 0..n {
            let logits = lm.model.forward_last(&[tok], &mut cache)?;
            tok = argmax(&logits);
        }
        secs.push(t0.elapsed().as_secs_f64());
    }
    let (fill_seconds, fill_tokens_per_sec) = if depth > 0 {
        let s = fill_secs.iter().sum::<f64>() / fill_secs.len() as f64;
        (Some(s), Some(depth as f64 / s))
    } else {
        (None, None)
    };
    Ok(Decode { depth, tokens: n, stat: stat(n, &secs), fill_seconds, fill_tokens_per_sec })
}

/// Decode of `batch` sequences together (the server's continuous-batching step): `n` steps of
/// one token per sequence from empty caches, `reps` times. tokens_per_sec is the aggregate.
pub fn decode_batch(lm: &LoadedModel, batch: usize, n: usize, reps: usize, seed: u64) -> Result<Stat> {
    check_fits(lm, n)?;
    let vocab = lm.model.cfg.vocab_size;
    let mut secs = vec![];
    for r in 0..reps.max(1) {
        let mut caches: Vec<_> = (0..batch).map(|_| lm.model.new_cache(n)).collect();
        let mut toks = random_tokens(batch, vocab, seed ^ (r as u64 + 1));
        let t0 = Instant::now();
        for _ in 0..n {
            let mut refs: Vec<&mut nanbeige_model::Cache> = caches.iter_mut().collect();
            let logits = lm.model.forward_decode_batch(&toks, &mut refs)?;
            toks = logits.iter().map(|l| argmax(l)).collect();
        }
        secs.push(t0.elapsed().as_secs_f64());
    }
    Ok(stat(batch * n, &secs))
}

#[derive(Clone, Debug, Serialize)]
pub struct WeightBytes {
    /// Bytes of weights one decode step reads: every tensor except the embedding table (one row per
    /// token), which counts only when it doubles as the LM head (tied embeddings).
    pub per_token: u64,
    /// Those bytes by storage type as held in memory ("Q4_K", "Q6_K", "bf16", ...).
    pub by_type: BTreeMap<String, u64>,
    /// llama.cpp's name for the file's quantization (general.file_type), or the dominant type.
    pub label: String,
}

/// llama.cpp's names for GGUF tensor types.
pub fn ggml_type_name(t: GgmlDType) -> &'static str {
    match t {
        GgmlDType::F32 => "F32",
        GgmlDType::F16 => "F16",
        GgmlDType::BF16 => "BF16",
        GgmlDType::Q4_0 => "Q4_0",
        GgmlDType::Q4_1 => "Q4_1",
        GgmlDType::Q5_0 => "Q5_0",
        GgmlDType::Q5_1 => "Q5_1",
        GgmlDType::Q8_0 => "Q8_0",
        GgmlDType::Q8_1 => "Q8_1",
        GgmlDType::Q2K => "Q2_K",
        GgmlDType::Q3K => "Q3_K",
        GgmlDType::Q4K => "Q4_K",
        GgmlDType::Q5K => "Q5_K",
        GgmlDType::Q6K => "Q6_K",
        GgmlDType::Q8K => "Q8_K",
    }
}

/// llama.cpp's `llama_ftype` names (general.file_type).
fn file_type_name(ft: u32) -> Option<&'static str> {
    Some(match ft {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        32 => "BF16",
        _ => return None,
    })
}

fn is_embedding(name: &str) -> bool {
    name == "model.embed_tokens.weight" || name == "token_embd.weight"
}

/// Weight bytes per decoded token as the model holds them in memory after loading with `opts`.
pub fn weight_bytes(lm: &LoadedModel, opts: &LoadOptions) -> Result<WeightBytes> {
    // (name, type as held, bytes as held)
    let mut held: Vec<(String, String, u64)> = vec![];
    let mut file_type = None;
    match lm.format {
        Format::Gguf => {
            let (_, content) = nanbeige_model::open_gguf(&lm.path)?;
            file_type =
                content.metadata.get("general.file_type").and_then(|v| v.to_u32().ok()).and_then(file_type_name);
            for (name, info) in &content.tensor_infos {
                let elems = info.shape.elem_count() as u64;
                let t = info.ggml_dtype;
                let is_float = matches!(t, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16);
                // The loader keeps quantized matrices as they are and turns float tensors (and,
                // with --dequantize, everything) into f32 or the requested dtype.
                let (ty, bytes) = if is_float || opts.dequantize || info.shape.rank() < 2 {
                    let d = opts.dtype.unwrap_or(DType::F32);
                    (format!("{d:?}").to_lowercase(), elems * d.size_in_bytes() as u64)
                } else {
                    (ggml_type_name(t).to_string(), elems / t.block_size() as u64 * t.type_size() as u64)
                };
                held.push((name.clone(), ty, bytes));
            }
        }
        Format::HfDir => {
            for (name, dtype, shape) in &lm.tensors {
                let stored = match dtype.as_str() {
                    "f32" => DType::F32,
                    "f16" => DType::F16,
                    "bf16" => DType::BF16,
                    _ => continue,
                };
                let d = opts.dtype.unwrap_or(stored);
                let elems: u64 = shape.iter().map(|&x| x as u64).product();
                held.push((name.clone(), format!("{d:?}").to_lowercase(), elems * d.size_in_bytes() as u64));
            }
        }
    }
    let tied = !held.iter().any(|(n, _, _)| n == "lm_head.weight" || n == "output.weight");
    let mut by_type: BTreeMap<String, u64> = BTreeMap::new();
    for (name, ty, bytes) in &held {
        if is_embedding(name) && !tied {
            continue;
        }
        *by_type.entry(ty.clone()).or_default() += bytes;
    }
    let per_token = by_type.values().sum();
    let dominant = by_type.iter().max_by_key(|(_, b)| **b).map(|(t, _)| t.clone()).unwrap_or_default();
    let label = file_type.map(String::from).unwrap_or(dominant);
    Ok(WeightBytes { per_token, by_type, label })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_average_rates_not_times() {
        let s = stat(100, &[1.0, 2.0]);
        assert!((s.tokens_per_sec - 75.0).abs() < 1e-9);
        assert!((s.seconds - 1.5).abs() < 1e-9);
        assert!(s.stddev > 0.0);
        assert_eq!(stat(10, &[2.0]).stddev, 0.0);
        assert_eq!(argmax(&[0.1, 3.0, -1.0]), 1);
        assert_eq!(random_tokens(5, 7, 3), random_tokens(5, 7, 3));
    }
}
