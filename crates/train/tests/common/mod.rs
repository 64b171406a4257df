//! Shared by the training test files: the tiny chat model (nanbeige-tiny weights with the
//! synthetic Nanbeige-style tokenizer and chat template) as an HF directory.
#![allow(dead_code)]

use nanbeige_model::synth::vocab::Vocab;
use nanbeige_model::synth::NANBEIGE_CHAT_TEMPLATE;
use std::path::{Path, PathBuf};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nanbeige-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// nanbeige-tiny weights + a tokenizer and chat template, as an HF directory.
pub fn tiny_chat_model(dir: &Path) -> PathBuf {
    let m = dir.join("tiny-chat");
    std::fs::create_dir_all(&m).unwrap();
    let src = root().join("tests/fixtures/tiny/nanbeige-tiny");
    for f in ["config.json", "model.safetensors", "generation_config.json"] {
        std::fs::copy(src.join(f), m.join(f)).unwrap();
    }
    let v = Vocab::new(384).unwrap();
    std::fs::write(m.join("tokenizer.json"), serde_json::to_string(&v.tokenizer_json()).unwrap()).unwrap();
    std::fs::write(
        m.join("tokenizer_config.json"),
        serde_json::to_string(&v.tokenizer_config_json(NANBEIGE_CHAT_TEMPLATE, 4096)).unwrap(),
    )
    .unwrap();
    m
}

