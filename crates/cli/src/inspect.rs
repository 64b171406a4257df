//! Commands that look at a model without generating: `info`, `prompt`, `tokenize`, and `pull`
//! (fetch a known model into the cache). None of them reads the weights' data.

use crate::run::read_json_file;
use anyhow::{bail, Result};
use clap::Args;
use nanbeige_engine::hub;
use nanbeige_engine::load::load_text;
use nanbeige_engine::prompt::chat_prompt;
use nanbeige_model::{Config, LoadOptions, WeightSource};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

#[derive(Args)]
pub struct InfoArgs {
    /// Model directory, .gguf file or short name (default: smollm2).
    pub model: Option<String>,
    /// Print the whole chat template.
    #[arg(long)]
    pub template: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct PromptArgs {
    /// Model directory, .gguf file or short name (default: smollm2).
    pub model: Option<String>,
    /// JSON file: an array of messages, or an object with `messages` (and optionally `tools`).
    #[arg(long)]
    pub messages: PathBuf,
    /// JSON file with an array of tool definitions.
    #[arg(long)]
    pub tools: Option<PathBuf>,
    /// Also print the token ids (one JSON array on the last line).
    #[arg(long)]
    pub ids: bool,
    /// Do not append the assistant generation prompt.
    #[arg(long)]
    pub no_generation_prompt: bool,
}

#[derive(Args)]
pub struct TokenizeArgs {
    /// Model directory, .gguf file or short name.
    pub model: String,
    /// The text to tokenize.
    pub text: String,
    /// Add the tokenizer's BOS/special tokens as plain encoding would.
    #[arg(long)]
    pub special: bool,
    /// One line per token: id and its piece.
    #[arg(long)]
    pub pieces: bool,
}

#[derive(Args)]
pub struct PullArgs {
    /// smollm2, qwen2.5-coder, minilm (embeddings for `nanbeige index --embed`), or all.
    #[arg(default_value = "all")]
    pub name: String,
}

fn human(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n => n.to_string(),
    }
}

pub fn info(a: InfoArgs) -> Result<()> {
    let path = hub::resolve(a.model.as_deref())?;
    let opts = LoadOptions { progress: false, ..Default::default() };
    let (cfg, src, format) = if path.is_dir() {
        let cfg = Config::from_hf_file(&path.join("config.json"))?;
        (cfg, WeightSource::open_safetensors_dir(&path, opts)?, "HF safetensors directory")
    } else {
        let (file, content) = nanbeige_model::open_gguf(&path)?;
        let cfg = Config::from_gguf(&content)?;
        (cfg, WeightSource::from_gguf(&path, file, content, opts)?, "GGUF")
    };
    let (text, template) = load_text(&path)?;
    let tensors = src.tensor_types();
    let mut types: BTreeMap<String, usize> = BTreeMap::new();
    for (_, t, _) in &tensors {
        *types.entry(t.clone()).or_default() += 1;
    }
    let specials = text.tokenizer.special_tokens();
    let template_src = text.chat_template.clone().unwrap_or_default();
    let file_bytes: u64 = if path.is_dir() {
        std::fs::read_dir(&path)?.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum()
    } else {
        std::fs::metadata(&path)?.len()
    };
    if a.json {
        let out = json!({
            "path": path.display().to_string(),
            "format": format,
            "architecture": cfg.arch.name(),
            "parameters": cfg.num_params(),
            "layers": cfg.num_layers,
            "hidden_size": cfg.hidden_size,
            "intermediate_size": cfg.intermediate_size,
            "attention_heads": cfg.num_heads,
            "kv_heads": cfg.num_kv_heads,
            "head_dim": cfg.head_dim,
            "vocab_size": cfg.vocab_size,
            "context_length": cfg.max_position_embeddings,
            "rope_theta": cfg.rope_theta,
            "rope_scaling": cfg.rope_scaling.as_ref().map(|r| format!("{r:?}")),
            "tied_embeddings": cfg.tie_word_embeddings,
            "qkv_bias": cfg.qkv_bias,
            "tensor_types": types,
            "file_bytes": file_bytes,
            "bos_token": text.bos_token,
            "eos_token": text.eos_token,
            "eos_ids": text.eos_ids,
            "special_tokens": specials.iter().map(|(i, t)| json!([i, t])).collect::<Vec<_>>(),
            "chat_template": template.is_some().then_some(template_src),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("path:            {}", path.display());
    println!("format:          {format} ({:.1} MB)", file_bytes as f64 / 1e6);
    println!("architecture:    {}", cfg.arch.name());
    println!("parameters:      {}", human(cfg.num_params()));
    println!(
        "shape:           {} layers, hidden {}, mlp {}, {} heads / {} kv heads, head_dim {}",
        cfg.num_layers, cfg.hidden_size, cfg.intermediate_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    );
    println!("vocab:           {}", cfg.vocab_size);
    println!("context length:  {}", cfg.max_position_embeddings);
    println!(
        "rope:            theta {}{}",
        cfg.rope_theta,
        cfg.rope_scaling.as_ref().map(|r| format!(", scaling {r:?}")).unwrap_or_default()
    );
    println!("tied embeddings: {}   q/k/v bias: {}", cfg.tie_word_embeddings, cfg.qkv_bias);
    let types: Vec<String> = types.iter().map(|(t, n)| format!("{t} x{n}")).collect();
    println!("tensor types:    {}", types.join(", "));
    println!("bos / eos:       {:?} / {:?} (eos ids {:?})", text.bos_token, text.eos_token, text.eos_ids);
    let sp: Vec<String> = specials.iter().take(24).map(|(i, t)| format!("{t}={i}")).collect();
    println!(
        "special tokens:  {}{}",
        sp.join(" "),
        if specials.len() > 24 { format!(" … ({} in all)", specials.len()) } else { String::new() }
    );
    match (&template, a.template) {
        (None, _) => println!("chat template:   none"),
        (Some(_), true) => println!("chat template:\n{template_src}"),
        (Some(_), false) => println!(
            "chat template:   {} chars (first line: {:?}); --template prints it",
            template_src.len(),
            template_src.lines().next().unwrap_or("")
        ),
    }
    Ok(())
}

pub fn prompt(a: PromptArgs) -> Result<()> {
    let path = hub::resolve(a.model.as_deref())?;
    let (text, template) = load_text(&path)?;
    let file = read_json_file(&a.messages)?;
    let (messages, mut tools) = match &file {
        Value::Array(_) => (file.clone(), None),
        Value::Object(o) => (
            o.get("messages").cloned().unwrap_or(Value::Null),
            o.get("tools").cloned(),
        ),
        _ => bail!("{}: expected an array of messages or an object with `messages`", a.messages.display()),
    };
    if let Some(t) = &a.tools {
        tools = Some(read_json_file(t)?);
    }
    let p = chat_prompt(&text, template.as_ref(), &messages, tools.as_ref(), !a.no_generation_prompt)?;
    let mut out = std::io::stdout();
    write!(out, "{}", p.text)?;
    if a.ids {
        writeln!(out)?;
        writeln!(out, "{}", serde_json::to_string(&p.ids)?)?;
    }
    Ok(())
}

pub fn tokenize(a: TokenizeArgs) -> Result<()> {
    let path = hub::resolve(Some(&a.model))?;
    let (text, _) = load_text(&path)?;
    let ids = text.tokenizer.encode(&a.text, a.special)?;
    if a.pieces {
        for id in &ids {
            println!("{id}\t{:?}", text.tokenizer.id_to_token(*id).unwrap_or_default());
        }
    } else {
        println!("{}", serde_json::to_string(&ids)?);
    }
    Ok(())
}

pub fn pull(a: PullArgs) -> Result<()> {
    let list: Vec<&hub::KnownModel> = if a.name == "all" {
        hub::KNOWN.iter().collect()
    } else {
        match hub::find_known(&a.name) {
            Some(k) => vec![k],
            None => bail!("unknown model `{}` (known: smollm2, qwen2.5-coder, minilm, all)", a.name),
        }
    };
    for k in list {
        let p = hub::ensure_known(k)?;
        println!("{}", p.display());
    }
    Ok(())
}
