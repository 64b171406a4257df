//! The `Tokenizer`: a thin wrapper over the `tokenizers` crate that loads a `tokenizer.json` or rebuilds
//! the tokenizer a GGUF file describes (see `gguf.rs`), and answers the questions the engine asks
//! (ids, special tokens, vocabulary size).
//!
//! It does not know about chat templates or which token ends a turn; that is `TextAssets` (assets.rs).

mod assets;
mod gguf;
mod merges;
mod pretok;

use std::collections::HashSet;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use candle_core::quantized::gguf_file;

pub use assets::TextAssets;

/// A loaded tokenizer. Encoding always recognises added tokens written in the text (like
/// `<|im_start|>`), as Hugging Face tokenizers do by default.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Ids of added tokens flagged special; cached because the engine asks per generated token.
    special: HashSet<u32>,
    vocab_size: usize,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("special_tokens", &self.special.len())
            .finish()
    }
}

impl Tokenizer {
    /// Loads a Hugging Face `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Tokenizer> {
        let bytes =
            std::fs::read(path).with_context(|| format!("reading tokenizer {}", path.display()))?;
        let inner = tokenizers::Tokenizer::from_bytes(&bytes)
            .map_err(|e| anyhow!("parsing tokenizer {}: {e}", path.display()))?;
        Ok(Tokenizer::from_inner(inner))
    }

    /// Rebuilds the tokenizer from a GGUF file's `tokenizer.ggml.*` metadata, as transformers does.
    pub fn from_gguf(content: &gguf_file::Content) -> Result<Tokenizer> {
        Ok(Tokenizer::from_inner(gguf::build(content)?))
    }

    pub(crate) fn from_inner(inner: tokenizers::Tokenizer) -> Tokenizer {
        let special = inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| id)
            .collect();
        let vocab_size = inner
            .get_vocab(true)
            .values()
            .map(|&id| id as usize + 1)
            .max()
            .unwrap_or(0);
        Tokenizer {
            inner,
            special,
            vocab_size,
        }
    }

    pub(crate) fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// `add_special_tokens` applies the tokenizer's post-processor (e.g. a BOS in front).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode_fast(text, add_special_tokens)
            .map_err(|e| anyhow!("tokenizing failed: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Ids the tokenizer does not know are left out, as in transformers.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| anyhow!("detokenizing failed: {e}"))
    }

    /// The tokenizer as `tokenizer.json` text (for saving a model directory, e.g. one converted
    /// from GGUF).
    pub fn to_json(&self) -> Result<String> {
        self.inner.to_string(false).map_err(|e| anyhow!("serializing the tokenizer: {e}"))
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// One past the largest id the tokenizer can produce or decode (base vocabulary and added tokens).
    /// For the usual dense vocabularies this equals transformers' `len(tokenizer)`.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Added tokens flagged special, sorted by id.
    pub fn special_tokens(&self) -> Vec<(u32, String)> {
        let mut out: Vec<(u32, String)> = self
            .inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, t)| (id, t.content))
            .collect();
        out.sort();
        out
    }

    pub fn is_special(&self, id: u32) -> bool {
        self.special.contains(&id)
    }
}
