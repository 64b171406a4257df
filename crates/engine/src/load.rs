//! Loading a model with everything that comes with it: weights (nanbeige-model), tokenizer and
//! chat template (nanbeige-text), generation defaults (generation_config.json), from an HF
//! directory or a GGUF file.

use crate::sampler::SamplingParams;
use anyhow::{bail, Context, Result};
use candle_core::DType;
use nanbeige_model::{Config, Llama, LoadOptions, WeightSource};
use nanbeige_text::{ChatTemplate, TextAssets};
use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    HfDir,
    Gguf,
}

pub struct LoadedModel {
    pub model: Llama,
    pub text: TextAssets,
    pub template: Option<ChatTemplate>,
    /// Sampling defaults from generation_config.json, if the model has one.
    pub sampling_defaults: Option<SamplingParams>,
    /// Token ids that end generation: config, tokenizer and generation_config eos ids together.
    pub eos_ids: Vec<u32>,
    pub path: PathBuf,
    pub format: Format,
    /// (tensor name, storage type, shape) of every tensor in the file(s).
    pub tensors: Vec<(String, String, Vec<usize>)>,
    /// Longest prompt + output this instance accepts.
    pub context_len: usize,
    /// Each token's text on its own, built on first use (constrained decoding needs it).
    token_texts: std::sync::OnceLock<Vec<String>>,
}

impl LoadedModel {
    pub fn token_texts(&self) -> &[String] {
        self.token_texts.get_or_init(|| {
            let tok = &self.text.tokenizer;
            (0..self.model.cfg.vocab_size as u32).map(|i| tok.decode(&[i], false).unwrap_or_default()).collect()
        })
    }
}

#[derive(Default)]
pub struct EngineOptions {
    pub load: LoadOptions,
    /// Cap on the context (tokens); None uses the model's own, at most 32,768 unless asked.
    pub context_len: Option<usize>,
    /// How KV caches store keys and values (f32 exact, or q8 for long contexts).
    pub kv_cache: nanbeige_model::KvType,
}


const DEFAULT_CONTEXT_CAP: usize = 32768;

fn read_generation_config(dir: &Path) -> Result<(Option<SamplingParams>, Vec<u32>)> {
    let p = dir.join("generation_config.json");
    if !p.exists() {
        return Ok((None, vec![]));
    }
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    let v: Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
    let eos = match v.get("eos_token_id") {
        Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a.iter().filter_map(|x| x.as_u64().map(|x| x as u32)).collect(),
        _ => vec![],
    };
    let f = |k: &str| v.get(k).and_then(Value::as_f64).map(|x| x as f32);
    let mut s = SamplingParams { temperature: 1.0, top_p: 1.0, top_k: 0, ..Default::default() };
    if v.get("do_sample").and_then(Value::as_bool) == Some(false) {
        s.temperature = 0.0;
    } else if let Some(t) = f("temperature") {
        s.temperature = t;
    }
    if let Some(p) = f("top_p") {
        s.top_p = p;
    }
    if let Some(k) = v.get("top_k").and_then(Value::as_u64) {
        s.top_k = k as usize;
    }
    if let Some(m) = f("min_p") {
        s.min_p = m;
    }
    if let Some(r) = f("repetition_penalty") {
        s.repetition_penalty = r;
    }
    Ok((Some(s), eos))
}

pub fn load(path: &Path, opts: &EngineOptions) -> Result<LoadedModel> {
    let (model, text, sampling_defaults, gen_eos, format, tensors) = if path.is_dir() {
        let cfg_path = path.join("config.json");
        if !cfg_path.exists() {
            bail!("{}: not a model directory (no config.json)", path.display());
        }
        let cfg = Config::from_hf_file(&cfg_path)?;
        let text = TextAssets::from_hf_dir(path)?;
        let (defaults, gen_eos) = read_generation_config(path)?;
        let mut src = WeightSource::open_safetensors_dir(path, opts.load)?;
        let tensors = src.tensor_types();
        let model = Llama::load(cfg, &mut src).with_context(|| format!("loading {}", path.display()))?;
        (model, text, defaults, gen_eos, Format::HfDir, tensors)
    } else if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) || is_gguf_magic(path) {
        let (file, content) = nanbeige_model::open_gguf(path)?;
        let cfg = Config::from_gguf(&content).with_context(|| format!("{}", path.display()))?;
        let text = TextAssets::from_gguf(&content).with_context(|| format!("{}: tokenizer", path.display()))?;
        let mut src = WeightSource::from_gguf(path, file, content.clone(), opts.load)?;
        let tensors = src.tensor_types();
        let model = Llama::load(cfg, &mut src).with_context(|| format!("loading {}", path.display()))?;
        (model, text, None, vec![], Format::Gguf, tensors)
    } else if !path.exists() {
        bail!("{}: no such file or directory", path.display());
    } else {
        bail!("{}: not a model directory or a GGUF file", path.display());
    };
    let mut model = model;
    let mut eos_ids = model.cfg.eos_token_ids.clone();
    for id in text.eos_ids.iter().chain(gen_eos.iter()) {
        if !eos_ids.contains(id) {
            eos_ids.push(*id);
        }
    }
    let template = compile_template(&text)?;
    let model_ctx = model.cfg.max_position_embeddings;
    let context_len = match opts.context_len {
        Some(n) => n.min(model_ctx),
        None => model_ctx.min(DEFAULT_CONTEXT_CAP),
    };
    model.ensure_positions(context_len)?;
    model.kv_type = opts.kv_cache;
    Ok(LoadedModel {
        model,
        text,
        template,
        sampling_defaults,
        eos_ids,
        path: path.to_path_buf(),
        format,
        tensors,
        context_len,
        token_texts: Default::default(),
    })
}

fn is_gguf_magic(path: &Path) -> bool {
    let mut buf = [0u8; 4];
    std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf)).is_ok() && &buf == b"GGUF"
}

/// Float dtype for a `--dtype` flag value.
pub fn parse_dtype(s: &str) -> Result<DType> {
    Ok(match s {
        "f32" => DType::F32,
        "bf16" => DType::BF16,
        "f16" => DType::F16,
        other => bail!("unknown dtype `{other}` (f32, bf16, f16)"),
    })
}

/// Only the text side of a model (tokenizer, template), without reading any weights: for
/// `prompt` and `tokenize`.
pub fn load_text(path: &Path) -> Result<(TextAssets, Option<ChatTemplate>)> {
    let text = if path.is_dir() {
        TextAssets::from_hf_dir(path)?
    } else if path.exists() {
        let (_, content) = nanbeige_model::open_gguf(path)?;
        TextAssets::from_gguf(&content).with_context(|| format!("{}: tokenizer", path.display()))?
    } else {
        bail!("{}: no such file or directory", path.display());
    };
    let template = compile_template(&text)?;
    Ok((text, template))
}

fn compile_template(text: &TextAssets) -> Result<Option<ChatTemplate>> {
    text.chat_template
        .as_deref()
        .map(|src| {
            ChatTemplate::new(src, text.bos_token.as_deref(), text.eos_token.as_deref())
                .context("the model's chat template does not compile")
        })
        .transpose()
}
