//! Streaming detokenization: token by token, the pieces must add up to the full decode and never
//! contain a U+FFFD that the full text does not have, for byte-fallback (SentencePiece) and byte-level
//! vocabularies alike.

mod common;

use common::*;
use nanbeige_text::{StreamDecoder, TextAssets, Tokenizer};

fn stream(tok: &Tokenizer, ids: &[u32], skip: bool) -> Vec<String> {
    let mut dec = StreamDecoder::new(tok, skip);
    let mut pieces = Vec::new();
    for &id in ids {
        if let Some(p) = dec.push(id).unwrap() {
            pieces.push(p);
        }
    }
    if let Some(p) = dec.finish().unwrap() {
        pieces.push(p);
    }
    pieces
}

fn check_all_fixture_texts(name: &str, tok: &Tokenizer) {
    let fx = read_json(&fixtures().join(format!("tokenizer/{name}.json")));
    for (i, text) in fx["texts"].as_array().unwrap().iter().enumerate() {
        let ids: Vec<u32> = fx["ids"][i]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        for skip in [false, true] {
            let whole = tok.decode(&ids, skip).unwrap();
            let pieces = stream(tok, &ids, skip);
            assert_eq!(
                pieces.concat(),
                whole,
                "{name}: streaming {text} (skip={skip}) pieces {pieces:?}"
            );
            if !whole.contains('\u{FFFD}') {
                assert!(
                    pieces.iter().all(|p| !p.contains('\u{FFFD}')),
                    "{name}: U+FFFD in {pieces:?}"
                );
            }
        }
    }
}

fn spm() -> Tokenizer {
    TextAssets::from_hf_dir(&fixtures().join("spm"))
        .unwrap()
        .tokenizer
}

#[test]
fn spm_fixture_texts() {
    check_all_fixture_texts("spm", &spm());
}

#[test]
fn qwen2_fixture_texts() {
    let tok = Tokenizer::from_gguf(&read_gguf(&model_path(QWEN2))).unwrap();
    check_all_fixture_texts("qwen2", &tok);
}

#[test]
fn smollm2_fixture_texts() {
    let tok = Tokenizer::from_gguf(&read_gguf(&model_path(SMOLLM2))).unwrap();
    check_all_fixture_texts("smollm2", &tok);
}

#[test]
fn emoji_and_cjk_split_over_byte_tokens() {
    let tok = spm();
    let text = "家庭 👨\u{200d}👩\u{200d}👧\u{200d}👦 ok";
    let ids = tok.encode(text, false).unwrap();
    // The tiny vocabulary has no piece for the emoji, so they come as <0xXX> byte tokens.
    let bytes = ids
        .iter()
        .filter(|&&id| tok.id_to_token(id).is_some_and(|t| t.starts_with("<0x")))
        .count();
    assert!(bytes >= 16, "expected byte-fallback tokens, got {ids:?}");
    let pieces = stream(&tok, &ids, false);
    assert_eq!(pieces.concat(), text);
    assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')), "{pieces:?}");
    // Each emoji comes out whole: no piece ends inside a character (guaranteed by &str) and the
    // man emoji arrives in one piece, not four.
    assert!(pieces.iter().any(|p| p.contains('👨')), "{pieces:?}");
}

#[test]
fn leading_space_of_sentencepiece_tokens_is_kept() {
    let tok = spm();
    let ids = tok.encode("Hello world, this is a test.", false).unwrap();
    let pieces = stream(&tok, &ids, false);
    assert!(pieces.len() > 3);
    assert_eq!(pieces.concat(), "Hello world, this is a test.");
}

#[test]
fn invalid_bytes_do_not_stall_the_stream() {
    let tok = spm();
    let ff = tok.token_to_id("<0xFF>").unwrap();
    let a = tok.encode("a", false).unwrap();
    let ids: Vec<u32> = a
        .iter()
        .copied()
        .chain(std::iter::repeat_n(ff, 20))
        .chain(a.iter().copied())
        .collect();
    let mut dec = StreamDecoder::new(&tok, false);
    let mut out = String::new();
    let mut released_early = false;
    for (i, &id) in ids.iter().enumerate() {
        if let Some(p) = dec.push(id).unwrap() {
            out.push_str(&p);
            released_early |= i < ids.len() - 1 && p.contains('\u{FFFD}');
        }
    }
    out.push_str(&dec.finish().unwrap().unwrap_or_default());
    assert!(released_early, "invalid bytes were held until the end");
    assert_eq!(out, tok.decode(&ids, false).unwrap());
}

#[test]
fn special_tokens_skipped_or_kept() {
    let tok = spm();
    let ids = tok
        .encode(
            "<|im_start|>assistant\n<think>\nhi\n</think>\n\nyo<|im_end|>",
            false,
        )
        .unwrap();
    assert_eq!(
        stream(&tok, &ids, true).concat(),
        "assistant\n<think>\nhi\n</think>\n\nyo"
    );
    assert_eq!(
        stream(&tok, &ids, false).concat(),
        tok.decode(&ids, false).unwrap()
    );
}
