//! Shared helpers for the fixture-driven tests: where the committed fixtures and the real GGUF test
//! models live, and small loaders. Fixtures come from scripts/reference/make_text_fixtures.py.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use serde_json::Value;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

pub fn read_json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// A real GGUF test model. Missing models fail the test: CI fetches them first.
pub fn model_path(name: &str) -> PathBuf {
    let cache = std::env::var_os("NANBEIGE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/nanbeige")
        });
    let path = cache.join("models").join(name);
    assert!(
        path.is_file(),
        "test model {} is missing: run `nanbeige pull all` (scripts/test.sh does; it downloads the GGUF \
         test models into ${{NANBEIGE_CACHE:-$HOME/.cache/nanbeige}}/models)",
        path.display()
    );
    path
}

pub fn read_gguf(path: &Path) -> gguf_file::Content {
    let mut f =
        std::fs::File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    gguf_file::Content::read(&mut f)
        .unwrap_or_else(|e| panic!("reading GGUF {}: {e}", path.display()))
}

pub const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const QWEN2: &str = "Qwen2.5-Coder-0.5B-Instruct.gguf";

/// A fresh empty directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "nanbeige-text-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
