//! A synthetic SentencePiece-style vocabulary of exactly `vocab_size` entries, laid out like
//! Nanbeige4.1's: `<unk>`, `<s>`, `</s>`, the 256 byte tokens `<0x00>`..`<0xFF>` at ids 3..258,
//! filler pieces (`▁`, printable ASCII, then lowercase words with and without the `▁` word prefix,
//! shortest first), Nanbeige's seven added tokens at their real ids 166100..166106 (or the last
//! seven ids of a smaller vocabulary), and `[PAD<id>]` for any ids after them (what llama.cpp's
//! converter writes for unused ids).
//!
//! It renders the vocabulary as an HF `tokenizer.json` (BPE with byte fallback and a Metaspace
//! pre-tokenizer, merges derived from the scores exactly as transformers' GGUF loader derives them,
//! so the HF and GGUF tokenizers of one synthetic model agree) plus `tokenizer_config.json`, and as
//! the token/score/type arrays of GGUF metadata. It does not tokenize anything.

use anyhow::{bail, Result};
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// llama.cpp / gguf-py token types.
pub const NORMAL: i32 = 1;
pub const UNKNOWN: i32 = 2;
pub const CONTROL: i32 = 3;
pub const USER_DEFINED: i32 = 4;
pub const UNUSED: i32 = 5;
pub const BYTE: i32 = 6;

/// Nanbeige4.1's added tokens (MODEL.md) in id order, with whether each is special.
pub const NANBEIGE_ADDED: [(&str, bool); 7] = [
    ("<|im_start|>", true),
    ("<|im_end|>", true),
    ("<|endoftext|>", true),
    ("<think>", false),
    ("</think>", false),
    ("<tool_call>", false),
    ("</tool_call>", false),
];
const NANBEIGE_ADDED_BASE: usize = 166_100;
/// Fewer ids than this leave too few filler pieces to spell ordinary ASCII text.
pub const MIN_VOCAB: usize = 300;

pub struct Vocab {
    pub tokens: Vec<String>,
    pub scores: Vec<f32>,
    pub types: Vec<i32>,
    /// Id of `<|im_start|>`; the other added tokens follow it.
    pub added_base: u32,
}

impl Vocab {
    pub fn new(vocab_size: usize) -> Result<Self> {
        if vocab_size < MIN_VOCAB {
            bail!("vocab_size {vocab_size} is too small for the synthetic tokenizer (at least {MIN_VOCAB})");
        }
        let added_base = if vocab_size >= NANBEIGE_ADDED_BASE + NANBEIGE_ADDED.len() {
            NANBEIGE_ADDED_BASE
        } else {
            vocab_size - NANBEIGE_ADDED.len()
        };
        let mut tokens = Vec::with_capacity(vocab_size);
        let mut scores = Vec::with_capacity(vocab_size);
        let mut types = Vec::with_capacity(vocab_size);
        let mut push = |t: String, s: f32, ty: i32| {
            tokens.push(t);
            scores.push(s);
            types.push(ty);
        };
        push("<unk>".into(), 0.0, UNKNOWN);
        push("<s>".into(), 0.0, CONTROL);
        push("</s>".into(), 0.0, CONTROL);
        for b in 0..=255u8 {
            push(format!("<0x{b:02X}>"), 0.0, BYTE);
        }
        let n_fill = added_base - 259;
        for (rank, piece) in filler_pieces(n_fill).into_iter().enumerate() {
            // SentencePiece BPE scores: earlier (more frequent) pieces score higher.
            push(piece, -(rank as f32), NORMAL);
        }
        for (t, special) in NANBEIGE_ADDED {
            push(t.into(), -1000.0, if special { CONTROL } else { USER_DEFINED });
        }
        for id in added_base + NANBEIGE_ADDED.len()..vocab_size {
            push(format!("[PAD{id}]"), -1000.0, UNUSED);
        }
        debug_assert_eq!(tokens.len(), vocab_size);
        Ok(Self { tokens, scores, types, added_base: added_base as u32 })
    }

    pub fn bos_id(&self) -> u32 {
        self.added_base
    }

    pub fn eos_id(&self) -> u32 {
        self.added_base + 1
    }

    /// BPE merges implied by the scores, in rank order — the same rule (and order) as transformers'
    /// `generate_merges` for GGUF SentencePiece vocabularies: every cut of a token into two known
    /// tokens is a merge; higher token score first, then longer left piece, then longer right piece.
    pub fn merges(&self) -> Vec<(String, String)> {
        let id: HashMap<&str, usize> = self.tokens.iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();
        struct M<'a> {
            left: &'a str,
            right: &'a str,
            score: f32,
            left_len: usize,
            right_len: usize,
        }
        let mut merges: Vec<M> = Vec::new();
        for (tok, &score) in self.tokens.iter().zip(&self.scores) {
            let mut local: Vec<M> = tok
                .char_indices()
                .skip(1)
                .map(|(cut, _)| (&tok[..cut], &tok[cut..]))
                .filter(|(l, r)| id.contains_key(l) && id.contains_key(r))
                .map(|(left, right)| M {
                    left,
                    right,
                    score,
                    left_len: left.chars().count(),
                    right_len: right.chars().count(),
                })
                .collect();
            local.sort_by_key(|m| (id[m.left], id[m.right]));
            merges.extend(local);
        }
        merges.sort_by(|a, b| {
            b.score.total_cmp(&a.score).then(b.left_len.cmp(&a.left_len)).then(b.right_len.cmp(&a.right_len))
        });
        merges.into_iter().map(|m| (m.left.to_string(), m.right.to_string())).collect()
    }

    fn added_entries(&self) -> Vec<(u32, &str, bool)> {
        let mut v: Vec<(u32, &str, bool)> = vec![(0, "<unk>", true), (1, "<s>", true), (2, "</s>", true)];
        for (k, (t, special)) in NANBEIGE_ADDED.iter().enumerate() {
            v.push((self.added_base + k as u32, t, *special));
        }
        v
    }

    /// HF `tokenizer.json` (tokenizers 0.2x schema), as transformers saves a Llama SentencePiece
    /// tokenizer. No post-processor: prompts start with the template's `<|im_start|>`, not a BOS.
    pub fn tokenizer_json(&self) -> Value {
        let added: Vec<Value> = self
            .added_entries()
            .into_iter()
            .map(|(id, content, special)| {
                json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                       "rstrip": false, "normalized": false, "special": special})
            })
            .collect();
        let mut vocab = Map::with_capacity(self.tokens.len());
        for (i, t) in self.tokens.iter().enumerate() {
            vocab.insert(t.clone(), json!(i));
        }
        let merges: Vec<Value> = self.merges().into_iter().map(|(a, b)| json!([a, b])).collect();
        json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false},
            "post_processor": null,
            "decoder": {"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                {"type": "ByteFallback"},
                {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0}
            ]},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                "vocab": vocab, "merges": merges
            }
        })
    }

    /// HF `tokenizer_config.json` in the shape of Nanbeige4.1's: `<|im_start|>` is BOS, `<|im_end|>`
    /// EOS, `<unk>` pads; the chat template inside.
    pub fn tokenizer_config_json(&self, chat_template: &str, model_max_length: usize) -> Value {
        let mut decoder = Map::new();
        for (id, content, special) in self.added_entries() {
            decoder.insert(
                id.to_string(),
                json!({"content": content, "lstrip": false, "normalized": false, "rstrip": false,
                       "single_word": false, "special": special}),
            );
        }
        json!({
            "add_bos_token": false,
            "add_eos_token": false,
            "added_tokens_decoder": decoder,
            "bos_token": "<|im_start|>",
            "chat_template": chat_template,
            "clean_up_tokenization_spaces": false,
            "eos_token": "<|im_end|>",
            "legacy": false,
            "model_max_length": model_max_length,
            "pad_token": "<unk>",
            "tokenizer_class": "LlamaTokenizer",
            "unk_token": "<unk>"
        })
    }
}

/// `n` filler pieces: `▁`, the printable ASCII characters, then lowercase words of growing length,
/// each as a word start (`▁w`) and, from two letters on, as a word continuation (`w`).
fn filler_pieces(n: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(n);
    out.push("▁".into());
    out.extend((0x21u8..=0x7e).map(|c| (c as char).to_string()));
    let mut len = 1u32;
    while out.len() < n {
        for index in 0..26usize.pow(len) {
            let mut word = vec![b'a'; len as usize];
            let mut x = index;
            for slot in word.iter_mut().rev() {
                *slot = b'a' + (x % 26) as u8;
                x /= 26;
            }
            let word = String::from_utf8(word).expect("ASCII");
            out.push(format!("▁{word}"));
            if len >= 2 {
                out.push(word);
            }
            if out.len() >= n {
                break;
            }
        }
        len += 1;
    }
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_nanbeige() {
        let v = Vocab::new(166_144).unwrap();
        assert_eq!(v.tokens.len(), 166_144);
        assert_eq!(v.tokens[3], "<0x00>");
        assert_eq!(v.tokens[258], "<0xFF>");
        assert_eq!(v.tokens[166_100], "<|im_start|>");
        assert_eq!(v.tokens[166_101], "<|im_end|>");
        assert_eq!(v.tokens[166_106], "</tool_call>");
        assert_eq!(v.types[166_103], USER_DEFINED);
        assert_eq!(v.tokens[166_143], "[PAD166143]");
        let distinct: std::collections::HashSet<&String> = v.tokens.iter().collect();
        assert_eq!(distinct.len(), v.tokens.len(), "tokens must be unique");
    }

    #[test]
    fn small_vocab_puts_added_tokens_last() {
        let v = Vocab::new(400).unwrap();
        assert_eq!(v.tokens.len(), 400);
        assert_eq!((v.bos_id(), v.eos_id()), (393, 394));
        assert!(Vocab::new(100).is_err());
        // Every merge produces a token of the vocabulary.
        let known: std::collections::HashSet<&String> = v.tokens.iter().collect();
        for (a, b) in v.merges() {
            assert!(known.contains(&format!("{a}{b}")));
        }
    }
}
