//! `TextAssets`: everything text-related a Hugging Face model directory or a GGUF file carries — the
//! tokenizer, the chat template source, BOS/EOS and the ids that end generation.
//!
//! Loading follows transformers (v5): in a directory, `tokenizer.json` decides how text is encoded
//! (its post-processor decides BOS; `add_bos_token` in tokenizer_config.json is then ignored, as
//! transformers ignores it), the named special tokens of tokenizer_config.json are made special if the
//! file did not already list them, and a `chat_template.jinja` file wins over the config's template.
//! It does not render templates (template/) or pick sampling settings.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file;
use serde_json::Value as Json;
use tokenizers::AddedToken;

use super::gguf::{GgufVocab, Meta};
use super::Tokenizer;

/// Everything text-related a model directory or GGUF carries.
#[derive(Debug, Clone)]
pub struct TextAssets {
    pub tokenizer: Tokenizer,
    /// Raw template source, if the model ships one.
    pub chat_template: Option<String>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    /// Ids that end generation: the EOS token, plus end-of-turn/end-of-message ids (GGUF) or the
    /// `eos_token_id` list of generation_config.json (directories). Deduplicated, in that order.
    pub eos_ids: Vec<u32>,
    /// Whether `encode(.., true)` prepends BOS.
    pub add_bos: bool,
}

impl TextAssets {
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.is_file() {
            bail!("no tokenizer.json in {}", dir.display());
        }
        let tokenizer = Tokenizer::from_file(&tok_path)?;
        let config = read_json_if_exists(&dir.join("tokenizer_config.json"))?.unwrap_or(Json::Null);

        let bos_token = token_string(config.get("bos_token"));
        let eos_token = token_string(config.get("eos_token"));
        let tokenizer = add_config_tokens(tokenizer, &config);

        let template_file = dir.join("chat_template.jinja");
        let chat_template = if template_file.is_file() {
            Some(
                std::fs::read_to_string(&template_file)
                    .with_context(|| format!("reading {}", template_file.display()))?,
            )
        } else {
            config_template(config.get("chat_template"))?
        };

        let mut eos_ids = Vec::new();
        if let Some(id) = eos_token.as_deref().and_then(|t| tokenizer.token_to_id(t)) {
            eos_ids.push(id);
        }
        if let Some(gen) = read_json_if_exists(&dir.join("generation_config.json"))? {
            for id in json_ids(gen.get("eos_token_id")) {
                push_unique(&mut eos_ids, id);
            }
        }

        let add_bos = adds_bos(&tokenizer)?;
        Ok(TextAssets {
            tokenizer,
            chat_template,
            bos_token,
            eos_token,
            eos_ids,
            add_bos,
        })
    }

    pub fn from_gguf(content: &gguf_file::Content) -> Result<Self> {
        let tokenizer = Tokenizer::from_gguf(content)?;
        let meta = Meta(&content.metadata);
        let vocab = GgufVocab::read(&meta)?;
        let chat_template = meta.str("tokenizer.chat_template")?.map(str::to_string);
        let bos_token = vocab.named(&meta, "bos")?.map(str::to_string);
        let eos_token = vocab.named(&meta, "eos")?.map(str::to_string);
        let mut eos_ids = Vec::new();
        for key in ["eos", "eot", "eom"] {
            if let Some(id) = meta.id(&format!("tokenizer.ggml.{key}_token_id"))? {
                push_unique(&mut eos_ids, id);
            }
        }
        let add_bos = vocab.add_bos(&meta)? && bos_token.is_some();
        Ok(TextAssets {
            tokenizer,
            chat_template,
            bos_token,
            eos_token,
            eos_ids,
            add_bos,
        })
    }
}

fn read_json_if_exists(path: &Path) -> Result<Option<Json>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let json =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(Some(json))
}

/// A special token in tokenizer_config.json is a string or an AddedToken dict `{"content": ..}`.
fn token_string(v: Option<&Json>) -> Option<String> {
    match v? {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// `chat_template` is a string, or a list of `{name, template}` from which "default" is used
/// (the first one if none is called that).
fn config_template(v: Option<&Json>) -> Result<Option<String>> {
    match v {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(Json::Array(list)) => {
            let named = |want: Option<&str>| {
                list.iter()
                    .find(|e| want.is_none_or(|w| e.get("name").and_then(Json::as_str) == Some(w)))
            };
            let entry = named(Some("default")).or_else(|| named(None));
            match entry.map(|e| e.get("template")) {
                None => Ok(None),
                Some(Some(Json::String(s))) => Ok(Some(s.clone())),
                Some(_) => {
                    bail!("tokenizer_config.json chat_template entry has no template string")
                }
            }
        }
        Some(other) => {
            bail!("tokenizer_config.json chat_template should be a string or a list, found {other}")
        }
    }
}

/// transformers makes the config's added tokens and named special tokens (bos/eos/unk/pad/…) part of the
/// tokenizer when tokenizer.json does not already have them.
fn add_config_tokens(tokenizer: Tokenizer, config: &Json) -> Tokenizer {
    let mut inner = tokenizer.inner().clone();
    let have = |inner: &tokenizers::Tokenizer, s: &str| {
        inner
            .get_added_tokens_decoder()
            .values()
            .any(|t| t.content == s)
    };

    let mut from_decoder: Vec<(u64, AddedToken)> = Vec::new();
    if let Some(Json::Object(map)) = config.get("added_tokens_decoder") {
        for (id, entry) in map {
            let (Ok(id), Some(content)) = (
                id.parse::<u64>(),
                entry.get("content").and_then(Json::as_str),
            ) else {
                continue;
            };
            let flag = |k: &str, d: bool| entry.get(k).and_then(Json::as_bool).unwrap_or(d);
            let special = flag("special", false);
            let token = AddedToken::from(content, special)
                .normalized(flag("normalized", !special))
                .lstrip(flag("lstrip", false))
                .rstrip(flag("rstrip", false))
                .single_word(flag("single_word", false));
            from_decoder.push((id, token));
        }
    }
    from_decoder.sort_by_key(|(id, _)| *id);
    let missing: Vec<AddedToken> = from_decoder
        .into_iter()
        .map(|(_, t)| t)
        .filter(|t| !have(&inner, &t.content))
        .collect();
    inner.add_tokens(&missing);

    let names = [
        "bos_token",
        "eos_token",
        "unk_token",
        "sep_token",
        "pad_token",
        "cls_token",
        "mask_token",
    ];
    let named: Vec<AddedToken> = names
        .iter()
        .filter_map(|n| token_string(config.get(*n)))
        .filter(|t| !have(&inner, t))
        .map(|t| AddedToken::from(t, true).normalized(false))
        .collect();
    inner.add_tokens(&named);
    Tokenizer::from_inner(inner)
}

fn json_ids(v: Option<&Json>) -> Vec<u32> {
    match v {
        Some(Json::Number(n)) => n
            .as_u64()
            .and_then(|x| u32::try_from(x).ok())
            .into_iter()
            .collect(),
        Some(Json::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64())
            .filter_map(|x| u32::try_from(x).ok())
            .collect(),
        _ => Vec::new(),
    }
}

fn push_unique(ids: &mut Vec<u32>, id: u32) {
    if !ids.contains(&id) {
        ids.push(id);
    }
}

/// Whether the tokenizer's post-processor puts a special token in front of the text.
fn adds_bos(tok: &Tokenizer) -> Result<bool> {
    let with = tok
        .encode("a", true)
        .map_err(|e| anyhow!("probing the post-processor: {e}"))?;
    let without = tok.encode("a", false)?;
    Ok(with.len() > without.len() && with.first() != without.first() && tok.is_special(with[0]))
}
