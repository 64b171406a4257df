//! How a byte-level (GPT-2 style) GGUF vocabulary splits text before BPE, chosen by `tokenizer.ggml.pre`,
//! plus the GPT-2 byte alphabet.
//!
//! The regexes are those of the models' own `tokenizer.json` files, which transformers' GGUF loader and
//! llama.cpp (llama-vocab.cpp) also use. Where transformers knows the name we do what it does; `smollm`,
//! `starcoder`, `refact` and `command-r` are split like their tokenizer.json and llama.cpp (each digit
//! alone, then the GPT-2 rules). Transformers splits those with the GPT-2 rules only; for the SmolLM2
//! vocabulary this gives the same ids, since it has no token joining a digit to anything.
//! An unknown name is an error: guessing would tokenize silently differently from the model's training.

use std::collections::HashSet;

use anyhow::{anyhow, bail, Result};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{PreTokenizerWrapper, SplitDelimiterBehavior};

const LLAMA3: &str = concat!(
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}",
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);

const QWEN2: &str = concat!(
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}",
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);

const QWEN35: &str = concat!(
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}",
    r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);

const TEKKEN: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*",
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);

const GPT4O: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);

/// `tokenizer.ggml.pre` values whose split is one regex (transformers' GGUF_PRE_TOKENIZER_SPLITS).
const SPLITS: &[(&str, &str)] = &[
    ("llama3", LLAMA3),
    ("llama-v3", LLAMA3),
    ("llama-bpe", LLAMA3),
    ("falcon3", LLAMA3),
    ("falcon-h1", LLAMA3),
    ("pixtral", LLAMA3),
    ("midm-2.0", LLAMA3),
    ("lfm2", LLAMA3),
    ("jina-v5-nano", LLAMA3),
    ("dbrx", LLAMA3),
    ("smaug-bpe", LLAMA3),
    ("tekken", TEKKEN),
    ("qwen2", QWEN2),
    ("deepseek-r1-qwen", QWEN2),
    ("kormo", QWEN2),
    ("f2llmv2", QWEN2),
    ("megrez", QWEN2),
    ("qwen35", QWEN35),
    ("gpt-4o", GPT4O),
    ("llama4", GPT4O),
    ("kanana2", GPT4O),
    ("talkie", GPT4O),
    ("minimax-m2", GPT4O),
];

/// Split by the GPT-2 rules only (GPT-2's own tokenizer.json; what transformers falls back to).
const GPT2_LIKE: &[&str] = &["default", "gpt2", "mpt", "olmo", "jais"];

/// Each digit alone, then the GPT-2 rules.
const DIGITS_THEN_GPT2: &[&str] = &["smollm", "starcoder", "refact", "command-r"];

/// The pre-tokenizer for a byte-level vocabulary. A file without `tokenizer.ggml.pre` predates the key
/// and was GPT-2 style.
pub(crate) fn byte_level(pre: Option<&str>) -> Result<PreTokenizerWrapper> {
    let pre = pre.unwrap_or("default");
    let gpt2 = || ByteLevel::new(false, true, true);
    if GPT2_LIKE.contains(&pre) {
        return Ok(gpt2().into());
    }
    if DIGITS_THEN_GPT2.contains(&pre) {
        return Ok(Sequence::new(vec![Digits::new(true).into(), gpt2().into()]).into());
    }
    if let Some((_, regex)) = SPLITS.iter().find(|(name, _)| *name == pre) {
        let split = Split::new(
            SplitPattern::Regex(regex.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| anyhow!("compiling the '{pre}' split regex: {e}"))?;
        return Ok(Sequence::new(vec![
            split.into(),
            ByteLevel::new(false, true, false).into(),
        ])
        .into());
    }
    let mut known: Vec<&str> = GPT2_LIKE.iter().chain(DIGITS_THEN_GPT2).copied().collect();
    known.extend(SPLITS.iter().map(|(n, _)| *n));
    bail!(
        "unsupported GGUF pre-tokenizer tokenizer.ggml.pre = '{pre}' (supported: {})",
        known.join(", ")
    )
}

/// GPT-2's printable stand-in for each byte (`bytes_to_unicode`).
pub(crate) fn byte_char(b: u8) -> char {
    let printable = |b: u8| {
        (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b)
    };
    if printable(b) {
        return char::from(b);
    }
    // The others are numbered from 256 in byte order.
    let rank = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + rank).expect("256..324 are valid chars")
}

pub(crate) fn byte_alphabet() -> HashSet<char> {
    (0..=255u8).map(byte_char).collect()
}
