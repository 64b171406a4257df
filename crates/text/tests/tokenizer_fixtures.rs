//! Token ids, decoded text and special tokens must match transformers exactly for every fixture text
//! (tests/fixtures/tokenizer/*.json), for a tokenizer.json directory, a SentencePiece GGUF and the two
//! real byte-level GGUF models.

mod common;

use common::*;
use nanbeige_text::{TextAssets, Tokenizer};
use serde_json::Value;

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn check(name: &str, assets: &TextAssets) {
    let fx = read_json(&fixtures().join(format!("tokenizer/{name}.json")));
    let tok: &Tokenizer = &assets.tokenizer;
    let texts = fx["texts"].as_array().unwrap();
    assert!(texts.len() >= 25);
    let mut failures = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let text = text.as_str().unwrap();
        let want = ids(&fx["ids"][i]);
        let got = tok.encode(text, false).unwrap();
        if got != want {
            failures.push(format!("encode {text:?}\n  want {want:?}\n  got  {got:?}"));
        }
        for (key, skip) in [("decoded", false), ("decoded_skip_special", true)] {
            let want_text = fx[key][i].as_str().unwrap();
            let got_text = tok.decode(&want, skip).unwrap();
            if got_text != want_text {
                failures.push(format!(
                    "{key} of {text:?}: want {want_text:?} got {got_text:?}"
                ));
            }
        }
    }
    for (i, want) in fx["ids_add_special"].as_array().unwrap().iter().enumerate() {
        let text = texts[i].as_str().unwrap();
        let got = tok.encode(text, true).unwrap();
        if got != ids(want) {
            failures.push(format!(
                "encode with special tokens {text:?}: want {:?} got {got:?}",
                ids(want)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );

    assert_eq!(
        tok.vocab_size(),
        fx["vocab_size"].as_u64().unwrap() as usize,
        "{name} vocab size"
    );
    let added = fx["added_tokens"].as_array().unwrap();
    let want_special: Vec<(u32, String)> = added
        .iter()
        .filter(|t| t[2].as_bool().unwrap())
        .map(|t| {
            (
                t[0].as_u64().unwrap() as u32,
                t[1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(tok.special_tokens(), want_special, "{name} special tokens");
    for t in added {
        let (id, content, special) = (
            t[0].as_u64().unwrap() as u32,
            t[1].as_str().unwrap(),
            t[2].as_bool().unwrap(),
        );
        assert_eq!(
            tok.is_special(id),
            special,
            "{name}: is_special({id} {content})"
        );
        assert_eq!(
            tok.token_to_id(content),
            Some(id),
            "{name}: token_to_id({content})"
        );
        assert_eq!(
            tok.id_to_token(id).as_deref(),
            Some(content),
            "{name}: id_to_token({id})"
        );
    }
    assert_eq!(
        assets.bos_token.as_deref(),
        fx["bos_token"].as_str(),
        "{name} bos"
    );
    assert_eq!(
        assets.eos_token.as_deref(),
        fx["eos_token"].as_str(),
        "{name} eos"
    );
}

#[test]
fn spm_tokenizer_json_dir() {
    let assets = TextAssets::from_hf_dir(&fixtures().join("spm")).unwrap();
    check("spm", &assets);
    // The post-processor of tokenizer.json adds <s>, as transformers does.
    assert!(assets.add_bos);
    assert_eq!(
        assets.eos_ids,
        vec![assets.tokenizer.token_to_id("<|im_end|>").unwrap()]
    );
    let template = std::fs::read_to_string(fixtures().join("templates/nanbeige.jinja")).unwrap();
    assert_eq!(assets.chat_template.as_deref(), Some(template.as_str()));
    // Non-special added tokens survive skip_special_tokens; special ones do not.
    let ids = assets
        .tokenizer
        .encode("<|im_start|>a<think>b</think><tool_call>", false)
        .unwrap();
    assert_eq!(
        assets.tokenizer.decode(&ids, true).unwrap(),
        "a<think>b</think><tool_call>"
    );
}

#[test]
fn spm_gguf() {
    let content = read_gguf(&fixtures().join("spm/spm-vocab.gguf"));
    let assets = TextAssets::from_gguf(&content).unwrap();
    check("spm_gguf", &assets);
    assert!(assets.add_bos);
    assert_eq!(assets.eos_ids, vec![1201]);
    assert!(assets
        .chat_template
        .as_deref()
        .unwrap()
        .contains("<tool_call>"));
}

#[test]
fn smollm2_gguf() {
    let content = read_gguf(&model_path(SMOLLM2));
    let assets = TextAssets::from_gguf(&content).unwrap();
    check("smollm2", &assets);
    assert!(!assets.add_bos);
    assert_eq!(assets.eos_ids, vec![2]);
    let template = std::fs::read_to_string(fixtures().join("templates/smollm2.jinja")).unwrap();
    assert_eq!(assets.chat_template.as_deref(), Some(template.as_str()));
}

#[test]
fn qwen2_gguf() {
    let content = read_gguf(&model_path(QWEN2));
    let assets = TextAssets::from_gguf(&content).unwrap();
    check("qwen2", &assets);
    assert!(!assets.add_bos);
    assert_eq!(assets.eos_ids, vec![151645]);
    // <tool_call> is user-defined in this file: matched whole, but not special.
    assert_eq!(
        assets.tokenizer.encode("<tool_call>", false).unwrap(),
        vec![151657]
    );
    assert!(!assets.tokenizer.is_special(151657));
}
