//! Tokenizers rebuilt from small hand-written GGUF vocabularies: every supported pre-tokenizer name
//! builds and encodes, and a SentencePiece vocabulary honours `tokenizer.ggml.add_space_prefix`.

mod common;

use std::io::Cursor;

use candle_core::quantized::gguf_file::{self, Value};
use nanbeige_text::{TextAssets, Tokenizer};

fn gguf(meta: &[(&str, Value)]) -> gguf_file::Content {
    let mut buf = Cursor::new(Vec::new());
    let refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    gguf_file::write(&mut buf, &refs, &[]).unwrap();
    buf.set_position(0);
    gguf_file::Content::read(&mut buf).unwrap()
}

fn strings(items: &[&str]) -> Value {
    Value::Array(items.iter().map(|s| Value::String(s.to_string())).collect())
}

#[test]
fn byte_level_vocabulary_with_every_pre_tokenizer() {
    let pres = [
        "default",
        "gpt2",
        "smollm",
        "starcoder",
        "llama-bpe",
        "llama3",
        "qwen2",
        "qwen35",
        "tekken",
        "gpt-4o",
        "deepseek-r1-qwen",
    ];
    for pre in pres {
        let meta = [
            ("tokenizer.ggml.model", Value::String("gpt2".into())),
            ("tokenizer.ggml.pre", Value::String(pre.into())),
            (
                "tokenizer.ggml.tokens",
                strings(&["<|end|>", "a", "b", "ab", "Ġ", "Ġab", "<x>"]),
            ),
            (
                "tokenizer.ggml.token_type",
                Value::Array([3, 1, 1, 1, 1, 1, 4].map(Value::I32).to_vec()),
            ),
            ("tokenizer.ggml.merges", strings(&["a b", "Ġ ab"])),
            ("tokenizer.ggml.eos_token_id", Value::U32(0)),
        ];
        let assets = TextAssets::from_gguf(&gguf(&meta)).unwrap();
        let tok = &assets.tokenizer;
        assert_eq!(
            tok.encode("ab ab<|end|><x>", false).unwrap(),
            vec![3, 5, 0, 6],
            "{pre}"
        );
        assert_eq!(
            tok.decode(&[3, 5, 0, 6], true).unwrap(),
            "ab ab<x>",
            "{pre}"
        );
        assert!(tok.is_special(0) && !tok.is_special(6) && !tok.is_special(3));
        assert_eq!(tok.special_tokens(), vec![(0, "<|end|>".to_string())]);
        assert_eq!(assets.eos_ids, vec![0]);
        assert!(!assets.add_bos);
        assert_eq!(assets.chat_template, None);
        assert_eq!(tok.vocab_size(), 7);
    }
}

fn spm_meta(add_space_prefix: Option<bool>) -> Vec<(&'static str, Value)> {
    let tokens = ["<unk>", "<s>", "</s>", "▁", "h", "i", "hi", "▁hi"];
    let mut meta = vec![
        ("general.architecture", Value::String("llama".into())),
        ("tokenizer.ggml.model", Value::String("llama".into())),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        (
            "tokenizer.ggml.scores",
            Value::Array(
                [0., 0., 0., -1., -2., -3., -4., -5.]
                    .map(Value::F32)
                    .to_vec(),
            ),
        ),
        (
            "tokenizer.ggml.token_type",
            Value::Array([2, 3, 3, 1, 1, 1, 1, 1].map(Value::I32).to_vec()),
        ),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ("tokenizer.ggml.unknown_token_id", Value::U32(0)),
    ];
    if let Some(flag) = add_space_prefix {
        meta.push(("tokenizer.ggml.add_space_prefix", Value::Bool(flag)));
    }
    meta
}

#[test]
fn sentencepiece_prefix_space_and_bos() {
    // No flags: llama.cpp and transformers add BOS and a "▁" prefix.
    let assets = TextAssets::from_gguf(&gguf(&spm_meta(None))).unwrap();
    let tok = &assets.tokenizer;
    assert!(assets.add_bos);
    assert_eq!(tok.encode("hi hi", true).unwrap(), vec![1, 7, 7]);
    assert_eq!(tok.encode("hi", false).unwrap(), vec![7]);
    assert_eq!(tok.decode(&[1, 7, 7], true).unwrap(), "hi hi");
    assert!(tok.is_special(0), "<unk> is a named special token");

    // add_space_prefix = false: no prefix, and no leading space stripped on decode.
    let tok = Tokenizer::from_gguf(&gguf(&spm_meta(Some(false)))).unwrap();
    assert_eq!(tok.encode("hi hi", false).unwrap(), vec![6, 7]);
    assert_eq!(tok.decode(&[7, 7], false).unwrap(), " hi hi");
}
