//! Batched generation gives every request exactly what generating it alone gives (same tokens,
//! same finish reason), while requests join and leave the batch; a bad request fails alone.

use nanbeige_engine::prompt::raw_prompt;
use nanbeige_engine::{generate, generate_batch, load, BatchRequest, EngineOptions, GenParams, SamplingParams, Session};
use nanbeige_model::synth::{self, Format, Quant, SynthOptions};
use nanbeige_model::LoadOptions;

#[test]
fn batched_generation_equals_one_at_a_time() {
    let d = std::env::temp_dir().join(format!("nanbeige-batch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    let config = serde_json::json!({
        "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 1e4,
        "tie_word_embeddings": false, "vocab_size": 400
    });
    let path = d.join("m.gguf");
    synth::synthesize(&SynthOptions {
        config,
        name: "test".into(),
        out: path.clone(),
        format: Format::Gguf,
        quant: Quant::Q8_0,
        layers: None,
        seed: 5,
        shard_bytes: synth::DEFAULT_SHARD_BYTES,
        progress: false,
    })
    .unwrap();
    let opts = EngineOptions { load: LoadOptions { progress: false, ..Default::default() }, ..Default::default() };
    let lm = load(&path, &opts).unwrap();
    let texts = ["hi", "a longer prompt with several words", "xyz", "", "hello there", "1 2 3 4", "end"];
    let mut reqs = vec![];
    for (i, t) in texts.iter().enumerate() {
        let ids = if t.is_empty() { vec![] } else { raw_prompt(&lm.text, t).unwrap().ids };
        let sampling =
            SamplingParams { temperature: if i % 2 == 0 { 0.0 } else { 0.9 }, seed: Some(i as u64), ..Default::default() };
        // Different lengths, so sequences leave the batch at different steps and others join.
        let params = GenParams { sampling, max_tokens: Some(3 + 4 * i), ignore_eos: i != 2, ..Default::default() };
        reqs.push(BatchRequest { prompt: ids, opened_think: false, params });
    }
    let mut finished = vec![];
    let got = generate_batch(&lm, &reqs, 3, &mut |i, _| finished.push(i));
    assert_eq!(got.len(), reqs.len());
    for (i, (r, g)) in reqs.iter().zip(&got).enumerate() {
        if r.prompt.is_empty() {
            assert!(g.as_ref().unwrap_err().to_string().contains("empty"), "request {i}");
            continue;
        }
        let g = g.as_ref().unwrap();
        let mut session = Session::new(&lm);
        let alone = generate(&lm, &mut session, &r.prompt, false, &r.params, None, &mut |_| {}).unwrap();
        assert_eq!(g.tokens, alone.tokens, "request {i}");
        assert_eq!(g.text, alone.text, "request {i}");
        assert_eq!(g.finish_reason, alone.finish_reason, "request {i}");
        assert_eq!(g.prompt_tokens, r.prompt.len());
        if r.params.ignore_eos {
            assert_eq!(g.completion_tokens, r.params.max_tokens.unwrap(), "request {i}");
        }
    }
    finished.sort();
    assert_eq!(finished, vec![0, 1, 2, 4, 5, 6], "every good request reported once");
    std::fs::remove_dir_all(&d).unwrap();
}
