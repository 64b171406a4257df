//! Saving a real model: SmolLM2-135M-Instruct (GGUF Q4_1, arch llama, q/k rows permuted by
//! llama.cpp) written as an HF directory must be the same model: the engine loads it and gives the
//! dequantized GGUF's logits, and its tokenizer and chat template give the same prompt and ids as
//! the transformers fixture. (scripts/reference/check_export.py checks the same directory in
//! transformers.) Needs the cached model (`nanbeige pull all`, which scripts/test.sh runs).

use candle_core::{DType, Device, Tensor};
use nanbeige_engine::{hub, EngineOptions};
use nanbeige_model::LoadOptions;
use serde_json::Value;
use std::path::PathBuf;

#[test]
fn smollm2_gguf_exports_to_an_equivalent_hf_directory() {
    let gguf = hub::resolve(Some("smollm2")).expect("SmolLM2 is cached by `nanbeige pull all`");
    let out = std::env::temp_dir().join(format!("nanbeige-export-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    nanbeige_train::checkpoint::export(&gguf, &out, DType::F32).unwrap();
    let fx: Value = serde_json::from_str(
        &std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/gguf/smollm2.json"))
            .unwrap(),
    )
    .unwrap();
    let opts = EngineOptions { load: LoadOptions { dequantize: true, progress: false, ..Default::default() }, context_len: Some(512), ..Default::default() };
    let a = nanbeige_engine::load(&gguf, &opts).unwrap();
    let b = nanbeige_engine::load(&out, &opts).unwrap();
    assert!(!b.model.cfg.rope_interleaved, "the HF directory uses the half-split layout");
    for case in fx["cases"].as_array().unwrap().iter().take(3) {
        let ids: Vec<u32> = case["input_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        let prompt = case["prompt"].as_str().unwrap();
        assert_eq!(b.text.tokenizer.encode(prompt, false).unwrap(), ids, "{}: tokenizer", case["name"]);
        if case["kind"] == "chat" {
            let p = nanbeige_engine::prompt::chat_prompt(&b.text, b.template.as_ref(), &case["messages"], case.get("tools"), true)
                .unwrap();
            assert_eq!(p.text, prompt, "{}: chat template", case["name"]);
        }
        let t = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let la = a.model.forward(&t, None).unwrap();
        let lb = b.model.forward(&t, None).unwrap();
        let d = (la - lb).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(d < 1e-3, "{}: logits differ by {d}", case["name"]);
    }
    let _ = std::fs::remove_dir_all(&out);
}
