//! The two real test models (SmolLM2-135M-Instruct Q4_1, Qwen2.5-Coder-0.5B-Instruct mixed
//! Q5_0/Q4_K/Q6_K/Q8_0) against transformers loading the same GGUF dequantized to f32
//! (fixtures from scripts/reference/make_gguf_fixtures.py). The models come from the cache that
//! `nanbeige pull all` fills (scripts/test.sh runs it).
//!
//! Two paths are checked:
//! - dequantized (`LoadOptions::dequantize`): the same f32 math as the reference, so logits agree to
//!   float rounding and greedy continuations agree token for token up to the first near-tie;
//! - quantized (what `run` uses): candle multiplies quantized weights by activations quantized to
//!   8 bits (as llama.cpp does), which moves logits by a few tenths; we require the same top token
//!   at every prompt and a bounded logit error.

use nanbeige_model::{load_gguf, open_gguf, Llama, LoadOptions};
use serde_json::Value;
use std::path::PathBuf;

fn model_path(file: &str) -> PathBuf {
    let cache = std::env::var_os("NANBEIGE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/nanbeige"));
    let p = cache.join("models").join(file);
    assert!(p.exists(), "{} missing: run `nanbeige pull all` (scripts/test.sh does) first", p.display());
    p
}

fn fixture(name: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../../tests/fixtures/gguf/{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn load(fix: &Value, dequantize: bool) -> Llama {
    let path = model_path(fix["model_file"].as_str().unwrap());
    let (file, content) = open_gguf(&path).unwrap();
    load_gguf(&path, file, content, LoadOptions { dequantize, progress: false, dtype: None }).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn argmax(l: &[f32]) -> u32 {
    l.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 as u32
}

/// Max |diff| over the reference's top-64 and 256 sampled logits of the last prompt position.
fn last_logit_diff(logits: &[f32], case: &Value) -> f32 {
    let mut m = 0f32;
    for pair in case["last_logits_top"].as_array().unwrap() {
        let (id, v) = (pair[0].as_u64().unwrap() as usize, pair[1].as_f64().unwrap() as f32);
        m = m.max((logits[id] - v).abs());
    }
    let s = &case["last_logits_sample"];
    for (id, v) in s["ids"].as_array().unwrap().iter().zip(s["values"].as_array().unwrap()) {
        m = m.max((logits[id.as_u64().unwrap() as usize] - v.as_f64().unwrap() as f32).abs());
    }
    m
}

/// Returns the number of prompts whose greedy continuation matched for >= 32 tokens.
fn check_dequantized(name: &str) -> usize {
    let fix = fixture(name);
    let model = load(&fix, true);
    let mut long_matches = 0;
    for case in fix["cases"].as_array().unwrap() {
        let prompt = ids(&case["input_ids"]);
        let want = ids(&case["greedy"]);
        let mut cache = model.new_cache(prompt.len() + want.len() + 1);
        let mut logits = model.forward_last(&prompt, &mut cache).unwrap();
        let d = last_logit_diff(&logits, case);
        // f32 vs f32 through 24-30 layers: only summation order differs.
        assert!(d < 2e-3, "{name}/{}: dequantized max |logit diff| {d}", case["name"]);
        // Up to the first near-tie (top-2 gap < 0.05 in the reference) tokens must agree exactly;
        // past it, float rounding may legitimately pick the other token.
        let must = case["first_near_tie"].as_u64().map(|x| x as usize).unwrap_or(want.len());
        let mut matched = 0;
        for (i, &w) in want.iter().enumerate() {
            let t = argmax(&logits);
            if t != w {
                assert!(i >= must, "{name}/{}: greedy token {i} is {t}, transformers {w}", case["name"]);
                break;
            }
            matched += 1;
            logits = model.forward_last(&[t], &mut cache).unwrap();
        }
        eprintln!("{name}/{}: max |logit diff| {d:.2e}, greedy match {matched}/{}", case["name"], want.len());
        if matched >= 32 {
            long_matches += 1;
        }
    }
    long_matches
}

fn check_quantized(name: &str, bound: f32) {
    let fix = fixture(name);
    let model = load(&fix, false);
    for case in fix["cases"].as_array().unwrap() {
        let prompt = ids(&case["input_ids"]);
        let mut cache = model.new_cache(prompt.len() + 1);
        let logits = model.forward_last(&prompt, &mut cache).unwrap();
        let d = last_logit_diff(&logits, case);
        eprintln!("{name}/{} quantized: max |logit diff| {d:.3}", case["name"]);
        assert!(d < bound, "{name}/{}: quantized max |logit diff| {d} >= {bound}", case["name"]);
        let gaps = case["greedy_gaps"].as_array().unwrap();
        if gaps[0].as_f64().unwrap() > 2.0 * bound as f64 {
            assert_eq!(argmax(&logits), ids(&case["greedy"])[0], "{name}/{}: top token differs", case["name"]);
        }
    }
}

#[test]
fn smollm2_dequantized_matches_transformers() {
    assert!(check_dequantized("smollm2") >= 5, "fewer than 5 prompts with 32 identical greedy tokens");
}

#[test]
fn qwen2_dequantized_matches_transformers() {
    assert!(check_dequantized("qwen2") >= 5, "fewer than 5 prompts with 32 identical greedy tokens");
}

#[test]
fn smollm2_quantized_is_close_to_transformers() {
    check_quantized("smollm2", 1.5);
}

#[test]
fn qwen2_quantized_is_close_to_transformers() {
    check_quantized("qwen2", 1.5);
}

/// A prompt split anywhere (a prefix-cache hit, a chunked prefill, the last token decoded alone)
/// gives the same last-position logits as one prefill: the server's reuse of cached prefixes
/// must not change what a seeded request samples.
#[test]
fn split_prefill_gives_the_same_logits() {
    for (name, deq) in [("smollm2", true), ("smollm2", false), ("qwen2", false)] {
        let fix = fixture(name);
        let model = load(&fix, deq);
        for case in fix["cases"].as_array().unwrap().iter().take(3) {
            let prompt = ids(&case["input_ids"]);
            let n = prompt.len();
            let mut cache = model.new_cache(n + 1);
            let whole = model.forward_last(&prompt, &mut cache).unwrap();
            for split in [1, n / 2, n - 1] {
                let mut cache = model.new_cache(n + 1);
                model.forward_last(&prompt[..split], &mut cache).unwrap();
                let parts = model.forward_last(&prompt[split..], &mut cache).unwrap();
                let d = whole.iter().zip(&parts).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                // Quantized (what run and serve use): bit for bit. f32 weights go through candle's
                // GEMM, whose blocking depends on the row count: rounding-level differences.
                let bound = if deq { 1e-3 } else { 0.0 };
                assert!(
                    d <= bound,
                    "{name} (dequantized: {deq}) {}: split at {split} of {n} moves logits by {d}",
                    case["name"]
                );
            }
        }
    }
}
