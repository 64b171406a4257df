//! Rebuilds a `tokenizers::Tokenizer` from a GGUF file's `tokenizer.ggml.*` metadata, the way
//! transformers' GGUF loader does (integrations/gguf/gguf_tokenizer_mapping.py), so ids match
//! `AutoTokenizer.from_pretrained(dir, gguf_file=...)`.
//!
//! Supported: `tokenizer.ggml.model` = `gpt2` (byte-level BPE; split rules by `tokenizer.ggml.pre`, see
//! pretok.rs) and `llama` (SentencePiece vocabulary as BPE with byte fallback; merges recovered from the
//! scores, see merges.rs). Everything else (unigram/T5, WordPiece, Gemma/Phi-3 SentencePiece variants) is
//! refused with an error rather than tokenized subtly wrong.
//!
//! One deliberate difference from transformers: a `llama` vocabulary whose file says
//! `tokenizer.ggml.add_space_prefix = false` gets no "▁" prefix (as llama.cpp does); transformers ignores
//! that flag and always prepends. Files that say `true` or nothing behave identically.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::replace::Replace;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, DecoderWrapper};

use super::{merges, pretok};

// llama.cpp token types (gguf-py TokenType).
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

/// Typed access to GGUF metadata: missing keys are `None`, present keys of the wrong type are errors.
pub(crate) struct Meta<'a>(pub &'a HashMap<String, Value>);

impl<'a> Meta<'a> {
    pub fn str(&self, key: &str) -> Result<Option<&'a str>> {
        match self.0.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(v) => bail!(
                "GGUF metadata {key} should be a string, found {:?}",
                v.value_type()
            ),
        }
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.0.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => bail!(
                "GGUF metadata {key} should be a bool, found {:?}",
                v.value_type()
            ),
        }
    }

    /// Token ids are written as u32 by llama.cpp, but other writers use other integer widths.
    pub fn id(&self, key: &str) -> Result<Option<u32>> {
        match self.0.get(key) {
            None => Ok(None),
            Some(v) => {
                let n = int_value(v).with_context(|| format!("GGUF metadata {key}"))?;
                u32::try_from(n)
                    .map(Some)
                    .map_err(|_| anyhow!("GGUF metadata {key} = {n} is not a token id"))
            }
        }
    }

    pub fn strings(&self, key: &str) -> Result<Option<Vec<&'a str>>> {
        let Some(items) = self.array(key)? else {
            return Ok(None);
        };
        items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.as_str()),
                v => bail!(
                    "GGUF metadata {key} should hold strings, found {:?}",
                    v.value_type()
                ),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    pub fn ints(&self, key: &str) -> Result<Option<Vec<i64>>> {
        let Some(items) = self.array(key)? else {
            return Ok(None);
        };
        items
            .iter()
            .map(|v| int_value(v).with_context(|| format!("GGUF metadata {key}")))
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    pub fn floats(&self, key: &str) -> Result<Option<Vec<f32>>> {
        let Some(items) = self.array(key)? else {
            return Ok(None);
        };
        items
            .iter()
            .map(|v| match v {
                Value::F32(x) => Ok(*x),
                Value::F64(x) => Ok(*x as f32),
                v => bail!(
                    "GGUF metadata {key} should hold floats, found {:?}",
                    v.value_type()
                ),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    fn array(&self, key: &str) -> Result<Option<&'a Vec<Value>>> {
        match self.0.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => Ok(Some(items)),
            Some(v) => bail!(
                "GGUF metadata {key} should be an array, found {:?}",
                v.value_type()
            ),
        }
    }
}

fn int_value(v: &Value) -> Result<i64> {
    Ok(match v {
        Value::U8(x) => *x as i64,
        Value::I8(x) => *x as i64,
        Value::U16(x) => *x as i64,
        Value::I16(x) => *x as i64,
        Value::U32(x) => *x as i64,
        Value::I32(x) => *x as i64,
        Value::U64(x) => i64::try_from(*x).map_err(|_| anyhow!("integer {x} out of range"))?,
        Value::I64(x) => *x,
        v => bail!("expected an integer, found {:?}", v.value_type()),
    })
}

/// The pieces of tokenizer metadata every model type needs.
pub(crate) struct GgufVocab<'a> {
    pub model: &'a str,
    pub tokens: Vec<&'a str>,
    pub token_types: Vec<i64>,
}

impl<'a> GgufVocab<'a> {
    pub fn read(meta: &Meta<'a>) -> Result<GgufVocab<'a>> {
        let model = meta.str("tokenizer.ggml.model")?.ok_or_else(|| {
            anyhow!("GGUF file has no tokenizer metadata (tokenizer.ggml.model is missing)")
        })?;
        let tokens = meta.strings("tokenizer.ggml.tokens")?.ok_or_else(|| {
            anyhow!("GGUF file has no tokenizer vocabulary (tokenizer.ggml.tokens is missing)")
        })?;
        let token_types = meta.ints("tokenizer.ggml.token_type")?.unwrap_or_default();
        Ok(GgufVocab {
            model,
            tokens,
            token_types,
        })
    }

    /// The token a `tokenizer.ggml.<name>_token_id` key points at.
    pub fn named(&self, meta: &Meta<'a>, name: &str) -> Result<Option<&'a str>> {
        let key = format!("tokenizer.ggml.{name}_token_id");
        match meta.id(&key)? {
            None => Ok(None),
            Some(id) => match self.tokens.get(id as usize) {
                Some(t) => Ok(Some(*t)),
                None => bail!(
                    "GGUF metadata {key} = {id} is outside the vocabulary of {}",
                    self.tokens.len()
                ),
            },
        }
    }

    /// Whether encode(.., add_special_tokens = true) puts BOS first. Old SentencePiece files lack the
    /// flag and llama.cpp (and transformers) then add BOS.
    pub fn add_bos(&self, meta: &Meta<'a>) -> Result<bool> {
        Ok(meta
            .bool("tokenizer.ggml.add_bos_token")?
            .unwrap_or(self.model == "llama"))
    }
}

pub(crate) fn build(content: &Content) -> Result<tokenizers::Tokenizer> {
    let meta = Meta(&content.metadata);
    let vocab = GgufVocab::read(&meta)?;
    let arch = meta.str("general.architecture")?.unwrap_or("");

    let mut tok = match vocab.model {
        "gpt2" => byte_level(&meta, &vocab)?,
        "llama" if arch.starts_with("gemma") || arch == "phi3" => {
            bail!("the SentencePiece tokenizer of GGUF architecture '{arch}' is not supported")
        }
        "llama" => sentencepiece(&meta, &vocab)?,
        other => bail!("unsupported GGUF tokenizer model '{other}' (supported: gpt2, llama)"),
    };

    add_special_tokens(&mut tok, &vocab);

    // transformers adds the named special tokens (bos/eos/unk/pad) as special when they are not yet.
    let added: Vec<String> = tok
        .get_added_tokens_decoder()
        .into_values()
        .map(|t| t.content)
        .collect();
    let mut named = Vec::new();
    for name in ["bos", "eos", "unknown", "padding"] {
        if let Some(t) = vocab.named(&meta, name)? {
            if !added.iter().any(|a| a == t) && !named.iter().any(|n: &AddedToken| n.content == t) {
                named.push(AddedToken::from(t, true).normalized(false));
            }
        }
    }
    tok.add_tokens(&named);

    let bos = if vocab.add_bos(&meta)? {
        vocab.named(&meta, "bos")?
    } else {
        None
    };
    let eos = if meta.bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false) {
        vocab.named(&meta, "eos")?
    } else {
        None
    };
    let processor = post_processor(&tok, bos, eos)?;
    tok.with_post_processor(Some(processor));
    Ok(tok)
}

/// Byte-level BPE (GPT-2 style), as transformers' `byte_level_tokenizer`.
fn byte_level(meta: &Meta, vocab: &GgufVocab) -> Result<tokenizers::Tokenizer> {
    let pre = meta.str("tokenizer.ggml.pre")?;
    let pre_tokenizer = pretok::byte_level(pre)?;

    // Tokens are stored in the byte alphabet; one that uses other characters is stored as plain text and
    // is respelled byte by byte, as transformers does.
    let alphabet = pretok::byte_alphabet();
    let spelled: Vec<String> = vocab
        .tokens
        .iter()
        .map(|t| {
            if t.chars().all(|c| alphabet.contains(&c)) {
                t.to_string()
            } else {
                t.bytes().map(pretok::byte_char).collect()
            }
        })
        .collect();
    let bpe_vocab: Vocab = spelled
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let merges = match meta.strings("tokenizer.ggml.merges")? {
        Some(m) => split_merges(&m)?,
        None => {
            let scores = meta.floats("tokenizer.ggml.scores")?.ok_or_else(|| {
                anyhow!("GGUF byte-level vocabulary has neither merges nor scores")
            })?;
            let spelled: Vec<&str> = spelled.iter().map(String::as_str).collect();
            merges::from_scores(&spelled, &scores)?
        }
    };
    let bpe = BPE::builder()
        .vocab_and_merges(bpe_vocab, merges)
        .continuing_subword_prefix(String::new())
        .end_of_word_suffix(String::new())
        .fuse_unk(false)
        .build()
        .map_err(|e| anyhow!("building byte-level BPE from GGUF: {e}"))?;
    let mut tok = tokenizers::Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(pre_tokenizer));
    tok.with_decoder(Some(ByteLevel::default()));
    Ok(tok)
}

/// SentencePiece vocabulary as BPE with byte fallback, as transformers' `LlamaTokenizer` built from a GGUF.
fn sentencepiece(meta: &Meta, vocab: &GgufVocab) -> Result<tokenizers::Tokenizer> {
    let merges = match meta.strings("tokenizer.ggml.merges")? {
        Some(m) => split_merges(&m)?,
        None => {
            let scores = meta.floats("tokenizer.ggml.scores")?.ok_or_else(|| {
                anyhow!("GGUF SentencePiece vocabulary has neither merges nor scores")
            })?;
            merges::from_scores(&vocab.tokens, &scores)?
        }
    };
    let bpe_vocab: Vocab = vocab
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(bpe_vocab, merges)
        .fuse_unk(true)
        .byte_fallback(true)
        .build()
        .map_err(|e| anyhow!("building SentencePiece BPE from GGUF: {e}"))?;

    let add_prefix = meta
        .bool("tokenizer.ggml.add_space_prefix")?
        .unwrap_or(true);
    let scheme = if add_prefix {
        PrependScheme::First
    } else {
        PrependScheme::Never
    };
    let mut decoders: Vec<DecoderWrapper> = vec![
        Replace::new("▁", " ").map_err(|e| anyhow!("{e}"))?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if add_prefix {
        // The prefix space the pre-tokenizer added is not part of the text.
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    let mut tok = tokenizers::Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(Metaspace::new('▁', scheme, false)));
    tok.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(tok)
}

/// `"a b"` merge lines into pairs.
fn split_merges(lines: &[&str]) -> Result<Vec<(String, String)>> {
    lines
        .iter()
        .map(|m| match m.split_once(' ') {
            Some((a, b)) if !b.contains(' ') => Ok((a.to_string(), b.to_string())),
            _ => bail!("malformed GGUF merge {m:?} (expected two tokens separated by one space)"),
        })
        .collect()
}

/// Control tokens become special added tokens, user-defined ones plain added tokens, so that both are
/// matched whole in text (transformers' `add_gguf_special_tokens`).
fn add_special_tokens(tok: &mut tokenizers::Tokenizer, vocab: &GgufVocab) {
    let byte_level = vocab.model == "gpt2";
    let alphabet = pretok::byte_alphabet();
    let pairs = || vocab.tokens.iter().zip(vocab.token_types.iter());

    // In a byte-level vocabulary a control token written outside the byte alphabet is a converter
    // mislabel; transformers skips those (adding them would grow the vocabulary).
    let control: Vec<AddedToken> = pairs()
        .filter(|(t, &ty)| {
            ty == CONTROL && (!byte_level || t.chars().all(|c| alphabet.contains(&c)))
        })
        .map(|(t, _)| AddedToken::from(*t, true).normalized(false))
        .collect();
    tok.add_special_tokens(&control);

    let known = tok.get_vocab(true);
    let user: Vec<AddedToken> = pairs()
        .filter(|(t, &ty)| ty == USER_DEFINED && known.contains_key(**t))
        .map(|(t, _)| AddedToken::from(*t, false).normalized(false))
        .collect();
    tok.add_tokens(&user);
}

/// `[bos] $A [eos]`, as transformers' `update_post_processor`.
fn post_processor(
    tok: &tokenizers::Tokenizer,
    bos: Option<&str>,
    eos: Option<&str>,
) -> Result<TemplateProcessing> {
    let mut single = Vec::new();
    let mut pair = Vec::new();
    let mut specials = Vec::new();
    for t in bos.iter().chain(eos.iter()) {
        let id = tok
            .token_to_id(t)
            .ok_or_else(|| anyhow!("special token {t:?} is not in the vocabulary"))?;
        if !specials.iter().any(|(s, _): &(String, u32)| s == t) {
            specials.push((t.to_string(), id));
        }
    }
    if let Some(b) = bos {
        single.push(format!("{b}:0"));
    }
    single.push("$A:0".to_string());
    if let Some(e) = eos {
        single.push(format!("{e}:0"));
    }
    pair.extend(single.iter().cloned());
    if let Some(b) = bos {
        pair.push(format!("{b}:1"));
    }
    pair.push("$B:1".to_string());
    if let Some(e) = eos {
        pair.push(format!("{e}:1"));
    }
    TemplateProcessing::builder()
        .try_single(single)
        .map_err(|e| anyhow!("post-processor template: {e}"))?
        .try_pair(pair)
        .map_err(|e| anyhow!("post-processor template: {e}"))?
        .special_tokens(specials)
        .build()
        .map_err(|e| anyhow!("post-processor template: {e}"))
}
