//! Logits and greedy tokens of random-weight tiny models against Python transformers
//! (fixtures from scripts/reference/make_tiny_models.py): Nanbeige's shape ratios, a Qwen2-style
//! variant (bias, tied), the three RoPE scalings, bf16 and sharded checkpoints.

use candle_core::{Device, Tensor};
use nanbeige_model::{Config, Llama, LoadOptions};
use serde_json::Value;
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny")
}

fn load(name: &str) -> (Llama, Value) {
    let dir = fixtures().join(name);
    let cfg = Config::from_hf_file(&dir.join("config.json")).unwrap();
    let model = Llama::load_safetensors(cfg, &dir, LoadOptions { progress: false, ..Default::default() }).unwrap();
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join(format!("{name}.json"))).unwrap()).unwrap();
    (model, reference)
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// Max |ours - reference| over all positions and vocab entries of a full forward pass.
fn max_logit_diff(model: &Llama, reference: &Value) -> f32 {
    let input = ids(&reference["input_ids"]);
    let t = Tensor::new(input.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let logits = model.forward(&t, None).unwrap().squeeze(0).unwrap().to_vec2::<f32>().unwrap();
    let want = reference["logits"].as_array().unwrap();
    assert_eq!(logits.len(), want.len());
    let mut max = 0f32;
    for (row, wrow) in logits.iter().zip(want) {
        let wrow = wrow.as_array().unwrap();
        assert_eq!(row.len(), wrow.len());
        for (a, b) in row.iter().zip(wrow) {
            max = max.max((a - b.as_f64().unwrap() as f32).abs());
        }
    }
    max
}

/// Greedy decode with the KV cache: prefill the prompt, then one token at a time.
fn greedy(model: &Llama, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut cache = model.new_cache(prompt.len() + n);
    let mut logits = model.forward_last(prompt, &mut cache).unwrap();
    let mut out = vec![];
    for _ in 0..n {
        let t = nanbeige_model_argmax(&logits);
        out.push(t);
        logits = model.forward_last(&[t], &mut cache).unwrap();
    }
    out
}

fn nanbeige_model_argmax(l: &[f32]) -> u32 {
    l.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 as u32
}

fn check(name: &str, tol: f32) {
    let (model, reference) = load(name);
    let d = max_logit_diff(&model, &reference);
    assert!(d <= tol, "{name}: max |logit diff| = {d} > {tol}");
    let want = ids(&reference["greedy"]);
    let got = greedy(&model, &ids(&reference["input_ids"]), want.len());
    assert_eq!(got, want, "{name}: greedy tokens differ");
}

#[test]
fn nanbeige_shape_matches_transformers() {
    check("nanbeige-tiny", 1e-4);
}

#[test]
fn qwen2_bias_and_tied_embeddings_match_transformers() {
    check("qwen2-tiny", 1e-4);
}

#[test]
fn llama3_rope_scaling_matches_transformers() {
    check("llama3-rope-tiny", 1e-4);
}

#[test]
fn linear_rope_scaling_matches_transformers() {
    check("linear-rope-tiny", 1e-4);
}

#[test]
fn yarn_rope_scaling_matches_transformers() {
    check("yarn-rope-tiny", 1e-4);
}

#[test]
fn sharded_checkpoint_loads_through_its_index() {
    check("nanbeige-tiny-sharded", 1e-4);
}

#[test]
fn bf16_checkpoint_is_used_in_bf16_and_is_as_close_to_f32_as_transformers_bf16() {
    // Both we and transformers round weights to bf16; transformers also rounds every activation,
    // while we keep activations in f32 between matmuls. So the honest bound: our distance to the
    // exact f32 logits is no larger than transformers-bf16's own distance to them.
    let (model, bf16_ref) = load("nanbeige-tiny-bf16");
    let (_, f32_ref) = load("nanbeige-tiny");
    assert_eq!(model.weight_types()[0].1, "bf16");
    let ours = max_logit_diff(&model, &f32_ref);
    let theirs = {
        let a = bf16_ref["logits"].as_array().unwrap();
        let b = f32_ref["logits"].as_array().unwrap();
        let mut m = 0f64;
        for (ra, rb) in a.iter().zip(b) {
            for (x, y) in ra.as_array().unwrap().iter().zip(rb.as_array().unwrap()) {
                m = m.max((x.as_f64().unwrap() - y.as_f64().unwrap()).abs());
            }
        }
        m as f32
    };
    assert!(ours <= theirs, "bf16: ours {ours} vs f32, transformers-bf16 {theirs} vs f32");
}

#[test]
fn kv_cache_decode_equals_full_forward() {
    let (model, reference) = load("nanbeige-tiny");
    let input = ids(&reference["input_ids"]);
    let t = Tensor::new(input.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let full = model.forward(&t, None).unwrap().squeeze(0).unwrap().to_vec2::<f32>().unwrap();
    let mut cache = model.new_cache(64);
    // Prefill in uneven chunks, then token by token.
    let mut pos = 0;
    for chunk in [7usize, 1, 20, 3] {
        model.forward_last(&input[pos..pos + chunk], &mut cache).unwrap();
        pos += chunk;
    }
    while pos < input.len() {
        let l = model.forward_last(&input[pos..pos + 1], &mut cache).unwrap();
        let d = l.iter().zip(&full[pos]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(d < 1e-4, "position {pos}: cached decode differs by {d}");
        pos += 1;
    }
}

#[test]
fn context_overflow_and_bad_token_ids_are_errors() {
    let (model, _) = load("nanbeige-tiny");
    let mut cache = model.new_cache(4);
    let e = model.forward_last(&[1, 2, 3, 4, 5], &mut cache).unwrap_err().to_string();
    assert!(e.contains("context overflow"), "{e}");
    let mut cache = model.new_cache(16);
    let e = model.forward_last(&[1, 100000], &mut cache).unwrap_err().to_string();
    assert!(e.contains("outside the vocabulary"), "{e}");
}

#[test]
fn differentiable_path_gives_the_same_logits() {
    let (mut model, reference) = load("qwen2-tiny");
    model.differentiable = true;
    assert!(max_logit_diff(&model, &reference) <= 1e-4);
}

/// A copy of a fixture model dir in a temp folder, with `edit` applied, for bad-input tests.
fn broken_copy(tag: &str, edit: impl Fn(&std::path::Path)) -> PathBuf {
    let src = fixtures().join("nanbeige-tiny");
    let dst = std::env::temp_dir().join(format!("nanbeige-broken-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    edit(&dst);
    dst
}

fn load_err(dir: &std::path::Path) -> String {
    let r = Config::from_hf_file(&dir.join("config.json"))
        .and_then(|cfg| Llama::load_safetensors(cfg, dir, LoadOptions { progress: false, ..Default::default() }));
    match r {
        Ok(_) => panic!("{} loaded although it is broken", dir.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn wrong_tensor_shape_is_a_clear_error() {
    let d = broken_copy("shape", |d| {
        let c = std::fs::read_to_string(d.join("config.json"))
            .unwrap()
            .replace("\"intermediate_size\": 328", "\"intermediate_size\": 320");
        std::fs::write(d.join("config.json"), c).unwrap();
    });
    let e = load_err(&d);
    assert!(e.contains("has shape") && e.contains("expected"), "{e}");
}

#[test]
fn missing_truncated_or_corrupt_files_are_clear_errors() {
    let d = broken_copy("missing", |d| std::fs::remove_file(d.join("model.safetensors")).unwrap());
    assert!(load_err(&d).contains("no model.safetensors"));
    let d = broken_copy("trunc", |d| {
        let b = std::fs::read(d.join("model.safetensors")).unwrap();
        std::fs::write(d.join("model.safetensors"), &b[..b.len() / 2]).unwrap();
    });
    assert!(load_err(&d).contains("not a valid safetensors file"), "{}", load_err(&d));
    let d = broken_copy("garbage", |d| {
        std::fs::write(d.join("model.safetensors"), b"\xff\xff\xff\xff\xff\xff\xff\x7fjunk").unwrap()
    });
    assert!(load_err(&d).contains("not a valid safetensors file"));
    let d = broken_copy("config", |d| std::fs::write(d.join("config.json"), "{\"model_type\": \"llama\",").unwrap());
    assert!(load_err(&d).contains("parsing"), "{}", load_err(&d));
    let d = broken_copy("arch", |d| {
        let c = std::fs::read_to_string(d.join("config.json"))
            .unwrap()
            .replace("\"model_type\": \"llama\"", "\"model_type\": \"mamba\"");
        std::fs::write(d.join("config.json"), c).unwrap();
    });
    assert!(load_err(&d).contains("unsupported architecture `mamba`"));
}

#[test]
fn batched_decode_equals_one_sequence_at_a_time() {
    for kv in [nanbeige_model::KvType::F32, nanbeige_model::KvType::Q8] {
        batched_decode_matches(kv);
    }
}

fn batched_decode_matches(kv: nanbeige_model::KvType) {
    let (mut model, reference) = load("qwen2-tiny");
    model.kv_type = kv;
    let input = ids(&reference["input_ids"]);
    // Three sequences at different depths, decoded together for a few steps.
    let lens = [5usize, 17, 40];
    let mut caches: Vec<_> = lens.iter().map(|_| model.new_cache(64)).collect();
    let mut solo: Vec<_> = lens.iter().map(|_| model.new_cache(64)).collect();
    for (i, &n) in lens.iter().enumerate() {
        model.forward_last(&input[..n], &mut caches[i]).unwrap();
        model.forward_last(&input[..n], &mut solo[i]).unwrap();
    }
    for step in 0..4 {
        let toks: Vec<u32> = lens.iter().map(|&n| input[n + step]).collect();
        let mut refs: Vec<&mut nanbeige_model::Cache> = caches.iter_mut().collect();
        let batch = model.forward_decode_batch(&toks, &mut refs).unwrap();
        for i in 0..lens.len() {
            let one = model.forward_last(&[toks[i]], &mut solo[i]).unwrap();
            let d = one.iter().zip(&batch[i]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(d < 1e-4, "{kv:?} sequence {i} step {step}: batch differs by {d}");
        }
    }
}

#[test]
fn int8_kv_cache_stays_close_to_the_exact_cache() {
    let (mut model, reference) = load("nanbeige-tiny");
    let input = ids(&reference["input_ids"]);
    let t = Tensor::new(input.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let full = model.forward(&t, None).unwrap().squeeze(0).unwrap().to_vec2::<f32>().unwrap();
    let scale = full.iter().flatten().fold(0f32, |m, x| m.max(x.abs()));
    model.kv_type = nanbeige_model::KvType::Q8;
    let mut cache = model.new_cache(64);
    assert_eq!(cache.kind(), nanbeige_model::KvType::Q8);
    // Chunked prefill reads the int8 cache back dequantized; decode reads it directly.
    let mut pos = 0;
    for chunk in [9usize, 1, 14] {
        model.forward_last(&input[pos..pos + chunk], &mut cache).unwrap();
        pos += chunk;
    }
    // Prefix reuse: drop the last positions and write them again.
    cache.truncate(pos - 4);
    pos -= 4;
    let mut worst = 0f32;
    while pos < input.len() {
        let l = model.forward_last(&input[pos..pos + 1], &mut cache).unwrap();
        worst = worst.max(l.iter().zip(&full[pos]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max));
        pos += 1;
    }
    assert!(worst > 0.0, "an int8 cache cannot be exact");
    assert!(worst < 0.02 * scale, "int8 cache: logits differ by {worst} (logit scale {scale})");
}
