//! Synthetic models load through the engine like real ones: tokenizer, chat template, special tokens
//! and generation, from the HF directory and from the GGUF of the same vocabulary — and the two
//! tokenizers agree, including on the full 166,144-entry Nanbeige-shaped vocabulary.

use nanbeige_engine::prompt::raw_prompt;
use nanbeige_engine::{generate, load, EngineOptions, GenParams, LoadedModel, Session};
use nanbeige_model::synth::{self, Format, Quant, SynthOptions};
use nanbeige_model::LoadOptions;
use std::path::{Path, PathBuf};

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nanbeige-synth-engine-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn config(vocab: usize, hidden: usize, layers: usize) -> serde_json::Value {
    serde_json::json!({
        "model_type": "llama", "hidden_size": hidden, "intermediate_size": 2 * hidden,
        "num_hidden_layers": layers, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 1e4,
        "tie_word_embeddings": false, "vocab_size": vocab
    })
}

fn write(cfg: &serde_json::Value, out: &Path, format: Format, quant: Quant) {
    let opts = SynthOptions {
        config: cfg.clone(),
        name: "test".into(),
        out: out.to_path_buf(),
        format,
        quant,
        layers: None,
        seed: 11,
        shard_bytes: synth::DEFAULT_SHARD_BYTES,
        progress: false,
    };
    synth::synthesize(&opts).unwrap();
}

fn engine_load(p: &Path) -> LoadedModel {
    let opts = EngineOptions {
        load: LoadOptions { progress: false, ..Default::default() },
        context_len: None,
        ..Default::default()
    };
    load(p, &opts).unwrap()
}

const TEXTS: [&str; 6] = [
    "hello world",
    "The quick brown fox jumps over the lazy dog.",
    "  two  spaces and\nnewlines\t tabs",
    "数字 123 and ünïcödé → bytes",
    "<|im_start|>user\nhi<|im_end|>\n<think>\nhmm\n</think>\n\n<tool_call>{}</tool_call>",
    "abcdefghijklmnopqrstuvwxyz zyxwvutsrqponmlkjihgfedcba",
];

fn assert_same_tokenizers(a: &LoadedModel, b: &LoadedModel) {
    for t in TEXTS {
        let ia = a.text.tokenizer.encode(t, false).unwrap();
        let ib = b.text.tokenizer.encode(t, false).unwrap();
        assert_eq!(ia, ib, "{t:?}");
        // (Leading spaces are where SentencePiece's Metaspace rules lose one, exactly as transformers does.)
        if !t.starts_with(' ') {
            assert_eq!(a.text.tokenizer.decode(&ia, false).unwrap(), t, "round trip of {t:?}");
        }
    }
}

#[test]
fn tiny_synth_loads_tokenizes_and_generates_in_both_formats() {
    let d = tmp("tiny");
    let cfg = config(400, 64, 2);
    write(&cfg, &d.join("hf"), Format::Hf, Quant::Bf16);
    write(&cfg, &d.join("m.gguf"), Format::Gguf, Quant::Q8_0);
    let hf = engine_load(&d.join("hf"));
    let gg = engine_load(&d.join("m.gguf"));
    assert_same_tokenizers(&hf, &gg);
    for lm in [&hf, &gg] {
        let tok = &lm.text.tokenizer;
        assert_eq!(tok.token_to_id("<|im_start|>"), Some(393));
        assert_eq!(tok.token_to_id("</tool_call>"), Some(399));
        assert!(lm.eos_ids.contains(&394), "{:?}", lm.eos_ids);
        assert!(lm.template.is_some());
        assert_eq!(tok.encode("hi", true).unwrap(), tok.encode("hi", false).unwrap(), "no BOS is added");
        // Random weights, so the text is noise; what matters is that 8 tokens come out.
        let prompt = raw_prompt(&lm.text, "hi").unwrap();
        let mut session = Session::new(lm);
        let params = GenParams { max_tokens: Some(8), ignore_eos: true, ..Default::default() };
        let g = generate(lm, &mut session, &prompt.ids, false, &params, None, &mut |_| {}).unwrap();
        assert_eq!(g.completion_tokens, 8);
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn full_nanbeige_vocabulary_agrees_between_hf_and_gguf() {
    let d = tmp("vocab");
    let cfg = config(166_144, 32, 1);
    write(&cfg, &d.join("hf"), Format::Hf, Quant::Bf16);
    write(&cfg, &d.join("m.gguf"), Format::Gguf, Quant::F32);
    let hf = engine_load(&d.join("hf"));
    let gg = engine_load(&d.join("m.gguf"));
    assert_same_tokenizers(&hf, &gg);
    for lm in [&hf, &gg] {
        let tok = &lm.text.tokenizer;
        assert_eq!(tok.token_to_id("<|im_start|>"), Some(166_100));
        assert_eq!(tok.token_to_id("<|im_end|>"), Some(166_101));
        assert_eq!(tok.token_to_id("<think>"), Some(166_103));
        assert_eq!(tok.token_to_id("<0x0A>"), Some(13));
        // Common words are single pieces, as in a real vocabulary.
        assert_eq!(tok.encode("hi", false).unwrap().len(), 1);
        // Non-special added tokens survive skip_special_tokens, special ones do not.
        let ids = tok.encode("<|im_end|><think>", false).unwrap();
        assert_eq!(tok.decode(&ids, true).unwrap(), "<think>");
    }
    std::fs::remove_dir_all(&d).unwrap();
}
