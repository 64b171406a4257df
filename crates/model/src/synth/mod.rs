//! Synthetic models: random weights in the exact shape of any Llama-family config (built in:
//! Nanbeige4.1-3B), written as a real checkpoint would be — an HF directory of bf16 safetensors with
//! a Nanbeige-style SentencePiece tokenizer and chat template, or one GGUF file (F32, BF16, Q4_0,
//! Q8_0 or Q4_K_M) laid out as llama.cpp's converter and quantizer make it. They let speed and memory
//! be measured on the real shape without the real weights, and exercise the real loaders.
//!
//! Values are seeded per tensor name, so the HF and GGUF outputs of one seed hold the same
//! (bf16-rounded) numbers. Generation streams tensor by tensor. The text they produce is noise.

mod gguf;
mod hf;
mod plan;
mod rng;
pub mod vocab;

use crate::config::Config;
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub use gguf::tensor_type as gguf_tensor_type;
pub use hf::MAX_SHARD_BYTES as DEFAULT_SHARD_BYTES;
pub use plan::{tensors as tensor_plan, Role, TensorSpec};

/// Name under which the built-in Nanbeige4.1-3B config is chosen.
pub const NANBEIGE_3B: &str = "nanbeige-3b";
pub const NANBEIGE_3B_CONFIG: &str = include_str!("nanbeige-3b.config.json");
pub const NANBEIGE_CHAT_TEMPLATE: &str = include_str!("nanbeige.chat_template.jinja");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Hf,
    Gguf,
}

impl Format {
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "hf" | "safetensors" => Format::Hf,
            "gguf" => Format::Gguf,
            _ => bail!("unknown format `{s}` (hf, gguf)"),
        })
    }
}

/// Weight encoding. HF directories are bf16; GGUF files take any of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quant {
    Bf16,
    F32,
    Q4_0,
    Q8_0,
    /// llama.cpp's Q4_K_M mix: Q4_K, with Q6_K for the output matrix and for attn_v / ffn_down in
    /// about half the layers.
    Q4KM,
}

impl Quant {
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_uppercase().as_str() {
            "BF16" => Quant::Bf16,
            "F32" => Quant::F32,
            "Q4_0" => Quant::Q4_0,
            "Q8_0" => Quant::Q8_0,
            "Q4_K_M" => Quant::Q4KM,
            _ => bail!("unknown quantization `{s}` (bf16, f32, Q4_0, Q8_0, Q4_K_M)"),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Quant::Bf16 => "BF16",
            Quant::F32 => "F32",
            Quant::Q4_0 => "Q4_0",
            Quant::Q8_0 => "Q8_0",
            Quant::Q4KM => "Q4_K_M",
        }
    }
}

pub struct SynthOptions {
    /// An HF config.json, as JSON.
    pub config: Value,
    /// Model name written into the files (GGUF general.name).
    pub name: String,
    /// Output directory (HF) or .gguf file path (GGUF).
    pub out: PathBuf,
    pub format: Format,
    pub quant: Quant,
    /// Override num_hidden_layers (small variants for tests).
    pub layers: Option<usize>,
    pub seed: u64,
    /// Largest safetensors shard (HF output); `DEFAULT_SHARD_BYTES` unless testing sharding.
    pub shard_bytes: u64,
    /// Progress bar on stderr (drawn only when stderr is a terminal).
    pub progress: bool,
}

pub struct SynthSummary {
    pub config: Config,
    /// Files written and their sizes in bytes.
    pub files: Vec<(PathBuf, u64)>,
    pub tensors: usize,
    pub seconds: f64,
}

/// `nanbeige-3b` (built in) or the path of an HF config.json: the JSON and a display name.
pub fn read_config(spec: &str) -> Result<(Value, String)> {
    if spec == NANBEIGE_3B {
        let v = serde_json::from_str(NANBEIGE_3B_CONFIG).context("built-in Nanbeige4.1-3B config")?;
        return Ok((v, "Nanbeige4.1-3B".into()));
    }
    let path = Path::new(spec);
    let path = if path.is_dir() { path.join("config.json") } else { path.to_path_buf() };
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let v: Value = serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))?;
    let name = path
        .parent()
        .and_then(|p| p.file_name())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    Ok((v, name))
}

/// Write the model described by `opts`.
pub fn synthesize(opts: &SynthOptions) -> Result<SynthSummary> {
    let t0 = Instant::now();
    let mut json = opts.config.clone();
    let obj = json.as_object_mut().context("the config must be a JSON object")?;
    if let Some(n) = opts.layers {
        if n == 0 {
            bail!("--layers must be at least 1");
        }
        obj.insert("num_hidden_layers".into(), json!(n));
    }
    let cfg = Config::from_hf_json(&json)?;
    if opts.format == Format::Hf && opts.quant != Quant::Bf16 {
        bail!("HF directories are written in bf16; use --format gguf for {}", opts.quant.name());
    }
    let vocab = vocab::Vocab::new(cfg.vocab_size)?;
    // The synthetic tokenizer decides the special ids; the config must agree with it.
    let obj = json.as_object_mut().context("the config must be a JSON object")?;
    obj.insert("bos_token_id".into(), json!(vocab.bos_id()));
    obj.insert("eos_token_id".into(), json!(vocab.eos_id()));
    obj.insert("pad_token_id".into(), json!(0));
    obj.insert("torch_dtype".into(), json!("bfloat16"));

    let tensors = plan::tensors(&cfg);
    let total_elems: u64 = tensors.iter().map(|t| t.elem_count() as u64).sum();
    let bar = progress_bar(total_elems, opts.progress);
    let values = |spec: &TensorSpec| -> Result<Vec<f32>> {
        let mut v = vec![0f32; spec.elem_count()];
        let (mean, std) = spec.mean_std();
        rng::fill_normal(&mut v, rng::tensor_seed(opts.seed, &spec.hf_name), mean, std);
        Ok(v)
    };
    let files = match opts.format {
        Format::Hf => write_hf(opts, &cfg, &json, &vocab, &tensors, |s| {
            let v = values(s);
            if let Some(b) = &bar {
                b.inc(s.elem_count() as u64);
            }
            v
        })?,
        Format::Gguf => write_gguf(opts, &cfg, &json, &vocab, &tensors, |s| {
            let v = values(s);
            if let Some(b) = &bar {
                b.inc(s.elem_count() as u64);
            }
            v
        })?,
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(SynthSummary { config: cfg, files, tensors: tensors.len(), seconds: t0.elapsed().as_secs_f64() })
}

fn progress_bar(total: u64, show: bool) -> Option<ProgressBar> {
    if !show || !std::io::stderr().is_terminal() || total < 50_000_000 {
        return None;
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("synth {bar:40} {percent}% ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    Some(bar)
}

fn write_hf(
    opts: &SynthOptions,
    cfg: &Config,
    json: &Value,
    vocab: &vocab::Vocab,
    tensors: &[TensorSpec],
    values: impl FnMut(&TensorSpec) -> Result<Vec<f32>>,
) -> Result<Vec<(PathBuf, u64)>> {
    let dir = &opts.out;
    if dir.is_file() {
        bail!("{}: exists and is a file (HF output is a directory)", dir.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Weights of an earlier model in the same directory would mix with ours (a stale index or shard).
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.starts_with("model") && (name.ends_with(".safetensors") || name == "model.safetensors.index.json") {
            std::fs::remove_file(&p).with_context(|| format!("removing stale {}", p.display()))?;
        }
    }
    let mut files = hf::write_weights(dir, tensors, opts.shard_bytes, values)?;
    hf::write_side_files(dir, json, vocab, NANBEIGE_CHAT_TEMPLATE, cfg.max_position_embeddings)?;
    for f in [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors.index.json",
    ] {
        let p = dir.join(f);
        if let Ok(m) = std::fs::metadata(&p) {
            files.push((p, m.len()));
        }
    }
    Ok(files)
}

fn write_gguf(
    opts: &SynthOptions,
    cfg: &Config,
    json: &Value,
    vocab: &vocab::Vocab,
    tensors: &[TensorSpec],
    mut values: impl FnMut(&TensorSpec) -> Result<Vec<f32>>,
) -> Result<Vec<(PathBuf, u64)>> {
    let path = &opts.out;
    if !path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
        bail!("{}: a GGUF output path must end in .gguf", path.display());
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let head_dim_in_config = json.get("head_dim").is_some();
    let name = format!("{} (synthetic random weights)", opts.name);
    let md = gguf::metadata(cfg, head_dim_in_config, vocab, opts.quant, &name, NANBEIGE_CHAT_TEMPLATE)?;
    let typed: Vec<(TensorSpec, _)> =
        tensors.iter().map(|t| (t.clone(), gguf::tensor_type(opts.quant, t, cfg))).collect();
    // Written under a temporary name so an interrupted run never leaves a plausible-looking file.
    let partial = path.with_extension("gguf.partial");
    let size = gguf::write(&partial, &md, &typed, |spec, t| {
        let v = values(spec)?;
        let v = match gguf::permute_heads(cfg, spec) {
            Some(heads) => gguf::permute_rows(&v, spec.shape[0], v.len() / spec.shape[0], heads),
            None => v,
        };
        let cols = *spec.shape.last().expect("tensors have a shape");
        gguf::encode(&v, cols, t)
    })?;
    std::fs::rename(&partial, path).with_context(|| format!("renaming {} to {}", partial.display(), path.display()))?;
    Ok(vec![(path.clone(), size)])
}
