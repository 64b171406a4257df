//! Model hyper-parameters, read from an HF `config.json` or from GGUF metadata.
//!
//! One plain struct covers every Llama-family model we run (Nanbeige4.1 / Llama, SmolLM2, Qwen2):
//! they differ only in sizes, biases, tied embeddings and RoPE details. Nothing here touches weights.

use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file;
use serde_json::Value;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
        }
    }
}

/// RoPE frequency scaling, as named by transformers' `rope_scaling.rope_type`.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    Linear {
        factor: f64,
    },
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
    Yarn {
        factor: f64,
        original_max_position_embeddings: f64,
        beta_fast: f64,
        beta_slow: f64,
        attention_factor: Option<f64>,
        mscale: Option<f64>,
        mscale_all_dim: Option<f64>,
        truncate: bool,
    },
}

#[derive(Debug, Clone)]
pub struct Config {
    pub arch: Arch,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Bias on q/k/v projections (Qwen2 always; Llama when `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on o_proj (Llama `attention_bias` only).
    pub o_bias: bool,
    pub mlp_bias: bool,
    /// GGUF files of arch `llama` store q/k rows permuted for interleaved (GPT-J style) RoPE;
    /// HF checkpoints and GGUF `qwen2` use the half-split (NeoX) layout.
    pub rope_interleaved: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

fn get_usize(v: &Value, key: &str) -> Result<usize> {
    v.get(key)
        .and_then(Value::as_u64)
        .map(|x| x as usize)
        .with_context(|| format!("config.json: missing or invalid integer field `{key}`"))
}

fn opt_f64(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

fn token_ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a.iter().filter_map(|x| x.as_u64().map(|x| x as u32)).collect(),
        _ => vec![],
    }
}

impl Config {
    pub fn from_hf_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let v: Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        Self::from_hf_json(&v)
    }

    pub fn from_hf_json(v: &Value) -> Result<Config> {
        let model_type = v.get("model_type").and_then(Value::as_str).unwrap_or("");
        let arch = match model_type {
            "llama" | "mistral" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            other => bail!("unsupported architecture `{other}` (supported: llama, mistral, qwen2)"),
        };
        let hidden_size = get_usize(v, "hidden_size")?;
        let num_heads = get_usize(v, "num_attention_heads")?;
        let num_kv_heads = v.get("num_key_value_heads").and_then(Value::as_u64).map(|x| x as usize).unwrap_or(num_heads);
        let head_dim = match v.get("head_dim").and_then(Value::as_u64) {
            Some(h) => h as usize,
            None => {
                if num_heads == 0 || hidden_size % num_heads != 0 {
                    bail!("config.json: hidden_size {hidden_size} is not divisible by num_attention_heads {num_heads}");
                }
                hidden_size / num_heads
            }
        };
        let attention_bias = v.get("attention_bias").and_then(Value::as_bool).unwrap_or(false);
        let max_position_embeddings = v.get("max_position_embeddings").and_then(Value::as_u64).unwrap_or(4096) as usize;
        let cfg = Config {
            arch,
            vocab_size: get_usize(v, "vocab_size")?,
            hidden_size,
            intermediate_size: get_usize(v, "intermediate_size")?,
            num_layers: get_usize(v, "num_hidden_layers")?,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: opt_f64(v, "rms_norm_eps").unwrap_or(1e-6),
            // transformers 5 writes `rope_parameters` (theta and scaling together) instead.
            rope_theta: opt_f64(v, "rope_theta")
                .or_else(|| v.get("rope_parameters").and_then(|r| opt_f64(r, "rope_theta")))
                .unwrap_or(10000.0),
            rope_scaling: parse_rope_scaling(
                v.get("rope_scaling").or_else(|| v.get("rope_parameters")),
                max_position_embeddings,
            )?,
            max_position_embeddings,
            tie_word_embeddings: v.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(false),
            qkv_bias: arch == Arch::Qwen2 || attention_bias,
            o_bias: arch == Arch::Llama && attention_bias,
            mlp_bias: v.get("mlp_bias").and_then(Value::as_bool).unwrap_or(false),
            rope_interleaved: false,
            bos_token_id: v.get("bos_token_id").and_then(Value::as_u64).map(|x| x as u32),
            eos_token_ids: token_ids(v.get("eos_token_id")),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn from_gguf(content: &gguf_file::Content) -> Result<Config> {
        let md = &content.metadata;
        let arch_name = md
            .get("general.architecture")
            .context("GGUF: missing general.architecture")?
            .to_string()
            .context("GGUF: general.architecture is not a string")?
            .clone();
        let arch = match arch_name.as_str() {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            other => bail!("unsupported architecture `{other}` (supported: llama, qwen2)"),
        };
        let key = |k: &str| format!("{arch_name}.{k}");
        let u = |k: &str| -> Result<usize> {
            let v = md.get(&key(k)).with_context(|| format!("GGUF: missing {}", key(k)))?;
            Ok(gguf_int(v).with_context(|| format!("GGUF: {} is not an integer", key(k)))? as usize)
        };
        let f = |k: &str| -> Option<f64> { md.get(&key(k)).and_then(|v| gguf_float(v)) };
        let hidden_size = u("embedding_length")?;
        let num_heads = u("attention.head_count")?;
        let num_kv_heads = u("attention.head_count_kv").unwrap_or(num_heads);
        let head_dim = match u("attention.key_length") {
            Ok(h) => h,
            Err(_) => {
                if num_heads == 0 || hidden_size % num_heads != 0 {
                    bail!("GGUF: embedding_length {hidden_size} not divisible by head_count {num_heads}");
                }
                hidden_size / num_heads
            }
        };
        let vocab_size = match u("vocab_size") {
            Ok(v) => v,
            Err(_) => match md.get("tokenizer.ggml.tokens") {
                Some(gguf_file::Value::Array(a)) => a.len(),
                _ => content
                    .tensor_infos
                    .get("token_embd.weight")
                    .map(|t| t.shape.dims()[0])
                    .context("GGUF: cannot determine vocab size")?,
            },
        };
        let max_position_embeddings = u("context_length").unwrap_or(4096);
        let rope_scaling = match md.get(&key("rope.scaling.type")).and_then(|v| v.to_string().ok()).map(|s| s.as_str()) {
            None | Some("none") => None,
            Some("linear") => Some(RopeScaling::Linear { factor: f("rope.scaling.factor").unwrap_or(1.0) }),
            Some("yarn") => {
                let factor = f("rope.scaling.factor").unwrap_or(1.0);
                let orig = f("rope.scaling.original_context_length").unwrap_or(max_position_embeddings as f64);
                Some(RopeScaling::Yarn {
                    factor,
                    original_max_position_embeddings: orig,
                    beta_fast: 32.0,
                    beta_slow: 1.0,
                    attention_factor: f("rope.scaling.attn_factor"),
                    mscale: None,
                    mscale_all_dim: None,
                    truncate: true,
                })
            }
            Some(other) => bail!("GGUF: unsupported rope scaling type `{other}`"),
        };
        let has = |name: &str| content.tensor_infos.contains_key(name);
        let eos = md.get("tokenizer.ggml.eos_token_id").and_then(gguf_int).map(|x| vec![x as u32]).unwrap_or_default();
        let cfg = Config {
            arch,
            vocab_size,
            hidden_size,
            intermediate_size: u("feed_forward_length")?,
            num_layers: u("block_count")?,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: f("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
            rope_theta: f("rope.freq_base").unwrap_or(10000.0),
            rope_scaling,
            max_position_embeddings,
            tie_word_embeddings: !has("output.weight"),
            qkv_bias: has("blk.0.attn_q.bias"),
            o_bias: has("blk.0.attn_output.bias"),
            mlp_bias: has("blk.0.ffn_up.bias"),
            rope_interleaved: arch == Arch::Llama,
            bos_token_id: md.get("tokenizer.ggml.bos_token_id").and_then(gguf_int).map(|x| x as u32),
            eos_token_ids: eos,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        let dims = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_layers),
            ("num_attention_heads", self.num_heads),
            ("num_key_value_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
        ];
        for (name, v) in dims {
            if v == 0 || v > 1 << 24 {
                bail!("invalid model config: {name} = {v}");
            }
        }
        if self.num_heads % self.num_kv_heads != 0 {
            bail!(
                "invalid model config: num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_heads,
                self.num_kv_heads
            );
        }
        if self.head_dim % 2 != 0 {
            bail!("invalid model config: head_dim {} must be even for RoPE", self.head_dim);
        }
        Ok(())
    }

    /// Parameter count implied by the config (what `info` reports).
    pub fn num_params(&self) -> u64 {
        let (h, i, v) = (self.hidden_size as u64, self.intermediate_size as u64, self.vocab_size as u64);
        let q = (self.num_heads * self.head_dim) as u64;
        let kv = (self.num_kv_heads * self.head_dim) as u64;
        let mut attn = h * q + 2 * h * kv + q * h;
        if self.qkv_bias {
            attn += q + 2 * kv;
        }
        let layer = attn + 3 * h * i + 2 * h;
        let head = if self.tie_word_embeddings { 0 } else { v * h };
        v * h + self.num_layers as u64 * layer + h + head
    }
}

fn parse_rope_scaling(v: Option<&Value>, max_pos: usize) -> Result<Option<RopeScaling>> {
    let Some(v) = v else { return Ok(None) };
    if v.is_null() {
        return Ok(None);
    }
    let kind = v
        .get("rope_type")
        .or_else(|| v.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let factor = opt_f64(v, "factor");
    let need_factor = || factor.context("config.json: rope_scaling.factor missing");
    Ok(match kind {
        "default" => None,
        "linear" => Some(RopeScaling::Linear { factor: need_factor()? }),
        "llama3" => Some(RopeScaling::Llama3 {
            factor: need_factor()?,
            low_freq_factor: opt_f64(v, "low_freq_factor").context("rope_scaling.low_freq_factor missing")?,
            high_freq_factor: opt_f64(v, "high_freq_factor").context("rope_scaling.high_freq_factor missing")?,
            original_max_position_embeddings: opt_f64(v, "original_max_position_embeddings")
                .context("rope_scaling.original_max_position_embeddings missing")?,
        }),
        "yarn" => Some(RopeScaling::Yarn {
            factor: need_factor()?,
            original_max_position_embeddings: opt_f64(v, "original_max_position_embeddings").unwrap_or(max_pos as f64),
            beta_fast: opt_f64(v, "beta_fast").unwrap_or(32.0),
            beta_slow: opt_f64(v, "beta_slow").unwrap_or(1.0),
            attention_factor: opt_f64(v, "attention_factor"),
            mscale: opt_f64(v, "mscale"),
            mscale_all_dim: opt_f64(v, "mscale_all_dim"),
            truncate: v.get("truncate").and_then(Value::as_bool).unwrap_or(true),
        }),
        other => bail!("unsupported rope_scaling type `{other}` (supported: linear, llama3, yarn)"),
    })
}

pub(crate) fn gguf_int(v: &gguf_file::Value) -> Option<i64> {
    use gguf_file::Value::*;
    Some(match v {
        U8(x) => *x as i64,
        I8(x) => *x as i64,
        U16(x) => *x as i64,
        I16(x) => *x as i64,
        U32(x) => *x as i64,
        I32(x) => *x as i64,
        U64(x) => *x as i64,
        I64(x) => *x,
        _ => return None,
    })
}

pub(crate) fn gguf_float(v: &gguf_file::Value) -> Option<f64> {
    match v {
        gguf_file::Value::F32(x) => Some(*x as f64),
        gguf_file::Value::F64(x) => Some(*x),
        other => gguf_int(other).map(|x| x as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanbeige_config_parses_and_counts_params() {
        let v: Value = serde_json::from_str(include_str!("../../../tests/fixtures/nanbeige-config.json")).unwrap();
        let c = Config::from_hf_json(&v).unwrap();
        assert_eq!((c.num_heads, c.num_kv_heads, c.head_dim), (20, 4, 128));
        assert!(!c.tie_word_embeddings && !c.qkv_bias);
        assert_eq!(c.rope_theta, 7e7);
        // MODEL.md: 3.93B parameters.
        let p = c.num_params() as f64 / 1e9;
        assert!((p - 3.93).abs() < 0.01, "{p}");
    }

    #[test]
    fn transformers_v5_rope_parameters_are_read() {
        let v = serde_json::json!({"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4,
            "intermediate_size": 10, "num_hidden_layers": 1, "vocab_size": 10,
            "rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 5e5}});
        let c = Config::from_hf_json(&v).unwrap();
        assert_eq!(c.rope_theta, 5e5);
        assert_eq!(c.rope_scaling, Some(RopeScaling::Linear { factor: 2.0 }));
    }

    #[test]
    fn unknown_architecture_is_an_error() {
        let v = serde_json::json!({"model_type": "gpt_neox", "hidden_size": 8});
        let e = Config::from_hf_json(&v).unwrap_err().to_string();
        assert!(e.contains("unsupported architecture `gpt_neox`"), "{e}");
    }

    #[test]
    fn bad_head_ratio_is_an_error() {
        let v = serde_json::json!({"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4,
            "num_key_value_heads": 3, "intermediate_size": 10, "num_hidden_layers": 1, "vocab_size": 10});
        assert!(Config::from_hf_json(&v).unwrap_err().to_string().contains("multiple"));
    }
}
