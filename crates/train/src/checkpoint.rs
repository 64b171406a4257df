//! Saving trained models as Hugging Face directories (config.json, model.safetensors,
//! tokenizer.json, tokenizer_config.json with the chat template, generation_config.json) that our
//! engine and transformers both load, and the resumable training state beside them
//! (trainer_state.json: step and data position; optimizer.safetensors: AdamW moments and f32
//! masters; adapter.safetensors: LoRA adapters).
//!
//! GGUF `llama` files store q/k rows permuted for llama.cpp's interleaved RoPE; saved weights (and
//! the optimizer moments of those weights) are permuted back to the HF half-split layout. Not here:
//! what is trained or when to save (sft.rs).

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use nanbeige_model::{Arch, Config, Llama, RopeScaling};
use nanbeige_text::TextAssets;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where the model being trained came from, for the side files of saved directories.
pub struct Origin {
    pub path: PathBuf,
    pub text: TextAssets,
    pub eos_ids: Vec<u32>,
}

/// llama.cpp's q/k row permutation undone: within each head, interleaved pairs (2i, 2i+1) go back
/// to rows i and i + head_dim/2.
pub fn unpermute_rows(t: &Tensor, n_head: usize) -> Result<Tensor> {
    let dims = t.dims().to_vec();
    let rows = dims[0];
    let cols: usize = dims[1..].iter().product();
    let hd = rows / n_head;
    // (heads, hd/2, 2, cols) -> (heads, 2, hd/2, cols)
    Ok(t.reshape((n_head, hd / 2, 2, cols))?.transpose(1, 2)?.contiguous()?.reshape(dims)?)
}

/// A tensor under its HF name in HF layout (q/k of a permuted GGUF model un-permuted).
pub fn to_hf_layout(cfg: &Config, name: &str, t: &Tensor) -> Result<Tensor> {
    if !cfg.rope_interleaved {
        return Ok(t.clone());
    }
    let base = name.split(".weight").next().unwrap_or(name);
    if base.ends_with("self_attn.q_proj") || name.contains("self_attn.q_proj.bias") {
        unpermute_rows(t, cfg.num_heads)
    } else if base.ends_with("self_attn.k_proj") || name.contains("self_attn.k_proj.bias") {
        unpermute_rows(t, cfg.num_kv_heads)
    } else {
        Ok(t.clone())
    }
}

pub fn write_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let mut meta = HashMap::new();
    // transformers refuses safetensors files without this marker.
    meta.insert("format".to_string(), "pt".to_string());
    let data: Vec<(&str, Tensor)> =
        tensors.iter().map(|(n, t)| t.contiguous().map(|t| (n.as_str(), t))).collect::<candle_core::Result<_>>()?;
    let tmp = path.with_extension("tmp");
    safetensors::serialize_to_file(data, Some(meta), &tmp).with_context(|| format!("writing {}", path.display()))?;
    std::fs::rename(&tmp, path)?;
    // The writer creates the file owner-only; a model directory is meant to be shared.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(())
}

pub fn read_safetensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    let m =
        candle_core::safetensors::load(path, &Device::Cpu).with_context(|| format!("reading {}", path.display()))?;
    Ok(m.into_iter().collect())
}

fn write_json(path: &Path, v: &Value) -> Result<()> {
    let mut s = serde_json::to_string_pretty(v)?;
    s.push('\n');
    std::fs::write(path, s).with_context(|| format!("writing {}", path.display()))
}

fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        _ => "float32",
    }
}

/// config.json for a model read from GGUF (an HF origin's own config.json is reused instead).
pub fn hf_config(cfg: &Config, dtype: DType) -> Value {
    let rope_scaling = match &cfg.rope_scaling {
        None => Value::Null,
        Some(RopeScaling::Linear { factor }) => json!({"rope_type": "linear", "factor": factor}),
        Some(RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings }) => {
            json!({"rope_type": "llama3", "factor": factor, "low_freq_factor": low_freq_factor,
                   "high_freq_factor": high_freq_factor,
                   "original_max_position_embeddings": *original_max_position_embeddings as u64})
        }
        Some(RopeScaling::Yarn { factor, original_max_position_embeddings, beta_fast, beta_slow, .. }) => {
            json!({"rope_type": "yarn", "factor": factor, "beta_fast": beta_fast, "beta_slow": beta_slow,
                   "original_max_position_embeddings": *original_max_position_embeddings as u64})
        }
    };
    let (arch, model_type) = match cfg.arch {
        Arch::Llama => ("LlamaForCausalLM", "llama"),
        Arch::Qwen2 => ("Qwen2ForCausalLM", "qwen2"),
    };
    let mut v = json!({
        "architectures": [arch],
        "model_type": model_type,
        "hidden_act": "silu",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": rope_scaling,
        "max_position_embeddings": cfg.max_position_embeddings,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "torch_dtype": dtype_name(dtype),
        "use_cache": true,
    });
    if cfg.arch == Arch::Llama {
        v["attention_bias"] = json!(cfg.qkv_bias);
        v["mlp_bias"] = json!(cfg.mlp_bias);
    }
    if let Some(b) = cfg.bos_token_id {
        v["bos_token_id"] = json!(b);
    }
    if let Some(e) = cfg.eos_token_ids.first() {
        v["eos_token_id"] = json!(e);
    }
    v
}

/// Write `model` as an HF directory at `dir` (created; files replaced).
pub fn save_model_dir(dir: &Path, model: &Llama, origin: &Origin, dtype: DType) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let cfg = &model.cfg;
    let mut tensors = Vec::new();
    for (name, t) in model.float_weights()? {
        tensors.push((name.clone(), to_hf_layout(cfg, &name, &t)?.to_dtype(dtype)?));
    }
    write_safetensors(&dir.join("model.safetensors"), &tensors)?;
    let src = &origin.path;
    let same = |f: &str| src.is_dir() && src.join(f).canonicalize().ok() == dir.join(f).canonicalize().ok();
    // Config: the origin's own (it may carry fields we do not model), else rebuilt from GGUF.
    if src.is_dir() {
        if !same("config.json") {
            let text = std::fs::read_to_string(src.join("config.json"))?;
            let mut v: Value = serde_json::from_str(&text)?;
            v["torch_dtype"] = json!(dtype_name(dtype));
            if v.get("dtype").is_some() {
                v["dtype"] = json!(dtype_name(dtype));
            }
            write_json(&dir.join("config.json"), &v)?;
        }
        for f in [
            "tokenizer.json",
            "tokenizer_config.json",
            "chat_template.jinja",
            "generation_config.json",
            "special_tokens_map.json",
        ] {
            if src.join(f).is_file() && !same(f) {
                std::fs::copy(src.join(f), dir.join(f)).with_context(|| format!("copying {f}"))?;
            }
        }
        if !dir.join("generation_config.json").exists() {
            write_generation_config(dir, cfg, &origin.eos_ids)?;
        }
    } else {
        write_json(&dir.join("config.json"), &hf_config(cfg, dtype))?;
        std::fs::write(dir.join("tokenizer.json"), origin.text.tokenizer.to_json()?)?;
        let t = &origin.text;
        let mut tc = json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "clean_up_tokenization_spaces": false,
            "model_max_length": cfg.max_position_embeddings,
        });
        if let Some(b) = &t.bos_token {
            tc["bos_token"] = json!(b);
        }
        if let Some(e) = &t.eos_token {
            tc["eos_token"] = json!(e);
        }
        if let Some(ct) = &t.chat_template {
            tc["chat_template"] = json!(ct);
        }
        write_json(&dir.join("tokenizer_config.json"), &tc)?;
        write_generation_config(dir, cfg, &origin.eos_ids)?;
    }
    Ok(())
}

/// Convert a model (GGUF dequantized, or an HF dir) into an HF directory of `dtype` weights.
pub fn export(model: &Path, out: &Path, dtype: DType) -> Result<()> {
    let lm = crate::sft::load_model(model, dtype, true)?;
    let (text, _) = nanbeige_engine::load::load_text(model)?;
    let origin = Origin { path: model.to_path_buf(), text, eos_ids: lm.eos_ids.clone() };
    save_model_dir(out, &lm.model, &origin, dtype)
}

fn write_generation_config(dir: &Path, cfg: &Config, eos: &[u32]) -> Result<()> {
    let mut g = json!({"do_sample": false});
    if let Some(b) = cfg.bos_token_id {
        g["bos_token_id"] = json!(b);
    }
    if !eos.is_empty() {
        g["eos_token_id"] = if eos.len() == 1 { json!(eos[0]) } else { json!(eos) };
    }
    write_json(&dir.join("generation_config.json"), &g)
}

/// Data position and progress, enough to continue exactly where a run stopped.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainerState {
    pub step: u64,
    pub tokens: u64,
    /// (epoch, cursor) per dataset stream.
    pub streams: Vec<(u64, usize)>,
    /// Settings that must not change across a resume (model, data, lr, ...), as given.
    pub run: Value,
}

impl TrainerState {
    pub fn to_json(&self) -> Value {
        json!({"step": self.step, "tokens": self.tokens,
               "streams": self.streams.iter().map(|(e, c)| json!({"epoch": e, "cursor": c})).collect::<Vec<_>>(),
               "run": self.run})
    }

    pub fn from_json(v: &Value) -> Result<Self> {
        let step = v.get("step").and_then(Value::as_u64).context("trainer_state: no step")?;
        let tokens = v.get("tokens").and_then(Value::as_u64).unwrap_or(0);
        let mut streams = Vec::new();
        for s in v.get("streams").and_then(Value::as_array).context("trainer_state: no streams")? {
            let e = s.get("epoch").and_then(Value::as_u64).context("trainer_state: stream epoch")?;
            let c = s.get("cursor").and_then(Value::as_u64).context("trainer_state: stream cursor")?;
            streams.push((e, c as usize));
        }
        Ok(Self { step, tokens, streams, run: v.get("run").cloned().unwrap_or(Value::Null) })
    }
}

/// Everything a resumable checkpoint holds besides the model directory.
pub struct Resumable<'a> {
    pub state: &'a TrainerState,
    /// AdamW state (`<param>.m` ...) and step count.
    pub optimizer: (Vec<(String, Tensor)>, u64),
    /// LoRA adapters, when training LoRA (the model directory then holds the merged model).
    pub adapters: Option<Vec<(String, Tensor)>>,
}

/// Write `dir/trainer_state.json`, `optimizer.safetensors` (and `adapter.safetensors`). The model
/// directory must be written to the same `dir` first; trainer_state.json goes last, so a directory
/// with it is complete.
pub fn save_resumable(dir: &Path, cfg: &Config, r: &Resumable) -> Result<()> {
    let (opt, t) = &r.optimizer;
    let mut tensors = Vec::with_capacity(opt.len());
    for (name, x) in opt {
        // Moments of q/k follow their weights into the HF layout.
        let param = name.rsplit_once('.').map(|(p, _)| p).unwrap_or(name);
        tensors.push((name.clone(), to_hf_layout(cfg, param, x)?));
    }
    tensors.push(("adamw.t".to_string(), Tensor::new(&[*t as f32], &Device::Cpu)?));
    write_safetensors(&dir.join("optimizer.safetensors"), &tensors)?;
    if let Some(a) = &r.adapters {
        write_safetensors(&dir.join("adapter.safetensors"), a)?;
    }
    write_json(&dir.join("trainer_state.json"), &r.state.to_json())
}

/// What `save_resumable` wrote.
pub struct Loaded {
    pub state: TrainerState,
    pub optimizer: HashMap<String, Tensor>,
    pub t: u64,
    pub adapters: Option<HashMap<String, Tensor>>,
}

pub fn load_resumable(dir: &Path) -> Result<Loaded> {
    let sp = dir.join("trainer_state.json");
    if !sp.is_file() {
        bail!("{}: no checkpoint to resume (trainer_state.json is missing)", dir.display());
    }
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(&sp)?).with_context(|| format!("parsing {}", sp.display()))?;
    let state = TrainerState::from_json(&v)?;
    let mut optimizer = read_safetensors(&dir.join("optimizer.safetensors"))?;
    let t = optimizer.remove("adamw.t").context("optimizer.safetensors has no step count")?.to_vec1::<f32>()?[0] as u64;
    let ap = dir.join("adapter.safetensors");
    let adapters = if ap.is_file() { Some(read_safetensors(&ap)?) } else { None };
    Ok(Loaded { state, optimizer, t, adapters })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permutation() {
        // 2 heads of head_dim 4, 3 columns: HF rows r -> llama.cpp order per head [0, 2, 1, 3].
        let hf: Vec<f32> = (0..24).map(|x| x as f32).collect();
        // llama.cpp's permute: within a head, row 2i + a <- row a * half + i.
        let mut perm = vec![0f32; 24];
        for h in 0..2 {
            for i in 0..2 {
                for a in 0..2 {
                    let (src, dst) = (h * 4 + a * 2 + i, h * 4 + 2 * i + a);
                    perm[dst * 3..dst * 3 + 3].copy_from_slice(&hf[src * 3..src * 3 + 3]);
                }
            }
        }
        let t = Tensor::from_vec(perm, (8, 3), &Device::Cpu).unwrap();
        let back = unpermute_rows(&t, 2).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(back, hf);
    }
}
