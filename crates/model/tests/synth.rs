//! Synthetic models round-trip through our own loaders: a tiny config written as an HF bf16
//! directory (single and sharded) and as GGUF (F32, Q4_0, Q8_0, Q4_K_M) loads with the right shapes
//! and metadata, and the HF and F32-GGUF files of one seed give the same logits — which checks the
//! llama.cpp q/k permutation against the loader's interleaved RoPE.

use candle_core::quantized::gguf_file::Value;
use candle_core::{Device, Tensor};
use nanbeige_model::synth::{self, Format, Quant, SynthOptions};
use nanbeige_model::{load_gguf, open_gguf, Config, Llama, LoadOptions};
use std::path::{Path, PathBuf};

fn tiny_config() -> serde_json::Value {
    serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
        "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 70000000.0,
        "tie_word_embeddings": false, "vocab_size": 400
    })
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nanbeige-synth-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(out: &Path, format: Format, quant: Quant, seed: u64, shard_bytes: u64) -> synth::SynthSummary {
    let opts = SynthOptions {
        config: tiny_config(),
        name: "tiny".into(),
        out: out.to_path_buf(),
        format,
        quant,
        layers: None,
        seed,
        shard_bytes,
        progress: false,
    };
    synth::synthesize(&opts).unwrap()
}

fn no_bar() -> LoadOptions {
    LoadOptions { progress: false, ..Default::default() }
}

fn load_hf(dir: &Path) -> Llama {
    let cfg = Config::from_hf_file(&dir.join("config.json")).unwrap();
    Llama::load_safetensors(cfg, dir, no_bar()).unwrap()
}

fn load_gguf_file(path: &Path) -> Llama {
    let (file, content) = open_gguf(path).unwrap();
    load_gguf(path, file, content, no_bar()).unwrap()
}

fn logits(m: &Llama, ids: &[u32]) -> Vec<Vec<f32>> {
    let t = Tensor::new(ids, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    m.forward(&t, None).unwrap().squeeze(0).unwrap().to_vec2::<f32>().unwrap()
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

const IDS: [u32; 12] = [393, 5, 300, 17, 259, 42, 100, 394, 7, 8, 9, 399];

#[test]
fn hf_and_f32_gguf_of_one_seed_give_the_same_logits() {
    let d = tmp("same");
    let hf = d.join("hf");
    let gguf = d.join("tiny-f32.gguf");
    write(&hf, Format::Hf, Quant::Bf16, 7, synth::DEFAULT_SHARD_BYTES);
    write(&gguf, Format::Gguf, Quant::F32, 7, 0);
    let a = logits(&load_hf(&hf), &IDS);
    let g = load_gguf_file(&gguf);
    assert!(g.cfg.rope_interleaved, "a llama GGUF uses the permuted layout");
    let b = logits(&g, &IDS);
    let diff = max_diff(&a, &b);
    assert!(diff < 1e-4, "HF vs GGUF logits differ by {diff}");
    // The random weights give non-trivial, finite logits.
    let spread = a[0].iter().fold(f32::MIN, |m, &x| m.max(x)) - a[0].iter().fold(f32::MAX, |m, &x| m.min(x));
    assert!(spread.is_finite() && spread > 0.1, "{spread}");
    // Another seed is another model.
    let other = d.join("other.gguf");
    write(&other, Format::Gguf, Quant::F32, 8, 0);
    assert!(max_diff(&b, &logits(&load_gguf_file(&other), &IDS)) > 1e-2);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn hf_directory_has_config_tokenizer_and_shards() {
    let d = tmp("hf");
    let single = d.join("single");
    let s = write(&single, Format::Hf, Quant::Bf16, 1, synth::DEFAULT_SHARD_BYTES);
    assert!(single.join("model.safetensors").is_file());
    assert!(!single.join("model.safetensors.index.json").exists());
    for f in ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"] {
        assert!(single.join(f).is_file(), "{f}");
    }
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(single.join("config.json")).unwrap()).unwrap();
    assert_eq!((cfg["bos_token_id"].as_u64(), cfg["eos_token_id"].as_u64()), (Some(393), Some(394)));
    assert_eq!(cfg["torch_dtype"], "bfloat16");
    let tc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(single.join("tokenizer_config.json")).unwrap()).unwrap();
    assert_eq!(tc["bos_token"], "<|im_start|>");
    assert!(tc["chat_template"].as_str().unwrap().contains("<|im_start|>assistant"));
    assert_eq!(s.config.num_params(), Config::from_hf_json(&tiny_config()).unwrap().num_params());

    // Shards of at most ~60 KB: several files, an index, and the same model.
    let sharded = d.join("sharded");
    write(&sharded, Format::Hf, Quant::Bf16, 1, 60_000);
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sharded.join("model.safetensors.index.json")).unwrap()).unwrap();
    let shards: std::collections::BTreeSet<&str> =
        index["weight_map"].as_object().unwrap().values().map(|v| v.as_str().unwrap()).collect();
    assert!(shards.len() > 2, "{shards:?}");
    assert!(shards.iter().all(|s| s.ends_with(&format!("-of-{:05}.safetensors", shards.len()))));
    assert_eq!(max_diff(&logits(&load_hf(&single), &IDS), &logits(&load_hf(&sharded), &IDS)), 0.0);
    // Writing a single-file model over the sharded one leaves no stale index behind.
    write(&sharded, Format::Hf, Quant::Bf16, 1, synth::DEFAULT_SHARD_BYTES);
    assert!(!sharded.join("model.safetensors.index.json").exists());
    let names: Vec<String> =
        std::fs::read_dir(&sharded).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(!names.iter().any(|n| n.contains("-of-")), "{names:?}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn gguf_metadata_is_what_llama_cpp_writes() {
    let d = tmp("meta");
    let path = d.join("tiny-q4km.gguf");
    write(&path, Format::Gguf, Quant::Q4KM, 3, 0);
    let (_, content) = open_gguf(&path).unwrap();
    let md = &content.metadata;
    let s = |k: &str| md.get(k).unwrap_or_else(|| panic!("{k}")).to_string().unwrap().clone();
    let u = |k: &str| md.get(k).unwrap_or_else(|| panic!("{k}")).to_u32().unwrap();
    assert_eq!(s("general.architecture"), "llama");
    assert_eq!(s("tokenizer.ggml.model"), "llama");
    assert_eq!(u("general.file_type"), 15);
    assert_eq!(u("llama.block_count"), 3);
    assert_eq!(u("llama.attention.head_count_kv"), 2);
    assert_eq!(u("llama.rope.dimension_count"), 16);
    assert_eq!(u("llama.attention.key_length"), 16);
    assert_eq!(md["llama.rope.freq_base"].to_f32().unwrap(), 7e7);
    assert_eq!((u("tokenizer.ggml.bos_token_id"), u("tokenizer.ggml.eos_token_id")), (393, 394));
    assert!(s("tokenizer.chat_template").contains("<tool_call>"));
    let Value::Array(tokens) = &md["tokenizer.ggml.tokens"] else { panic!() };
    assert_eq!(tokens.len(), 400);
    assert_eq!(tokens[3].to_string().unwrap(), "<0x00>");
    // Tensor types: 64/128-wide rows cannot hold Q4_K/Q6_K blocks, so llama.cpp's fallbacks apply.
    let ty = |n: &str| format!("{:?}", content.tensor_infos[n].ggml_dtype);
    assert_eq!(ty("blk.0.attn_q.weight"), "Q5_0");
    assert_eq!(ty("output.weight"), "Q8_0");
    assert_eq!(ty("output_norm.weight"), "F32");
    assert_eq!(content.tensor_infos["token_embd.weight"].shape.dims(), &[400, 64]);
    // Loads quantized and runs.
    let m = load_gguf_file(&path);
    let cfg_hf = Config::from_hf_json(&tiny_config()).unwrap();
    assert_eq!((m.cfg.hidden_size, m.cfg.num_layers, m.cfg.head_dim, m.cfg.vocab_size), (64, 3, 16, 400));
    assert_eq!(m.cfg.num_params(), cfg_hf.num_params());
    assert!(logits(&m, &IDS).iter().flatten().all(|x| x.is_finite()));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn quantized_ggufs_stay_close_to_the_float_model() {
    let d = tmp("quant");
    let f32_path = d.join("f32.gguf");
    write(&f32_path, Format::Gguf, Quant::F32, 5, 0);
    let reference = logits(&load_gguf_file(&f32_path), &IDS);
    for (q, tol) in [(Quant::Q8_0, 0.05), (Quant::Q4_0, 0.5), (Quant::Bf16, 1e-4)] {
        let p = d.join(format!("{}.gguf", q.name()));
        write(&p, Format::Gguf, q, 5, 0);
        let diff = max_diff(&reference, &logits(&load_gguf_file(&p), &IDS));
        assert!(diff < tol, "{}: {diff}", q.name());
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn bad_requests_are_clear_errors() {
    let d = tmp("bad");
    let mut opts = SynthOptions {
        config: tiny_config(),
        name: "tiny".into(),
        out: d.join("x"),
        format: Format::Hf,
        quant: Quant::Q4_0,
        layers: None,
        seed: 0,
        shard_bytes: synth::DEFAULT_SHARD_BYTES,
        progress: false,
    };
    let err = |o: &SynthOptions| synth::synthesize(o).err().map(|e| format!("{e:#}")).unwrap_or_default();
    assert!(err(&opts).contains("HF directories are written in bf16"), "{}", err(&opts));
    opts.format = Format::Gguf;
    assert!(err(&opts).contains("must end in .gguf"), "{}", err(&opts));
    opts.out = d.join("x.gguf");
    opts.layers = Some(0);
    assert!(err(&opts).contains("--layers must be at least 1"));
    opts.layers = None;
    opts.config["vocab_size"] = serde_json::json!(50);
    assert!(err(&opts).contains("too small"), "{}", err(&opts));
    opts.config["model_type"] = serde_json::json!("gpt2");
    assert!(err(&opts).contains("unsupported architecture"));
    assert!(Quant::parse("Q5_K").unwrap_err().to_string().contains("unknown quantization"));
    assert!(synth::read_config("/no/such/config.json").is_err());
    let (v, name) = synth::read_config(synth::NANBEIGE_3B).unwrap();
    assert_eq!((v["vocab_size"].as_u64(), name.as_str()), (Some(166_144), "Nanbeige4.1-3B"));
    std::fs::remove_dir_all(&d).unwrap();
}

/// Prompts, prompt chunks and decode steps of different sequences in one `forward_batch` give
/// each sequence the logits `forward_last` gives it alone: bit for bit with quantized weights
/// (each row is quantized and multiplied on its own), for both KV cache kinds.
#[test]
fn mixed_batch_equals_each_sequence_alone() {
    let d = tmp("batch");
    let p = d.join("q4_0.gguf");
    write(&p, Format::Gguf, Quant::Q4_0, 9, 0);
    for kv in [nanbeige_model::KvType::F32, nanbeige_model::KvType::Q8] {
        let mut m = load_gguf_file(&p);
        m.kv_type = kv;
        // Sequence 0: a fresh 7-token prompt. 1: one decode step after 5 tokens. 2: a 6-token
        // chunk after 4 tokens. 3: a fresh single token.
        let before: [&[u32]; 4] = [&[], &IDS[..5], &IDS[2..6], &[]];
        let now: [&[u32]; 4] = [&IDS[..7], &IDS[5..6], &IDS[6..12], &IDS[3..4]];
        let mut batch: Vec<_> = before.iter().map(|_| m.new_cache(64)).collect();
        let mut solo: Vec<_> = before.iter().map(|_| m.new_cache(64)).collect();
        for (i, b) in before.iter().enumerate() {
            if !b.is_empty() {
                m.forward_last(b, &mut batch[i]).unwrap();
                m.forward_last(b, &mut solo[i]).unwrap();
            }
        }
        let mut refs: Vec<&mut nanbeige_model::Cache> = batch.iter_mut().collect();
        let got = m.forward_batch(&now, &mut refs).unwrap();
        for i in 0..now.len() {
            let want = m.forward_last(now[i], &mut solo[i]).unwrap();
            assert!(
                want.iter().zip(&got[i]).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{kv:?} sequence {i}: the batch differs from the sequence alone"
            );
            assert_eq!(batch[i].len(), solo[i].len());
        }
        // The caches hold the same keys and values: the next decode step agrees too.
        let next: [&[u32]; 4] = [&IDS[7..8], &IDS[6..7], &IDS[..1], &IDS[4..5]];
        let mut refs: Vec<&mut nanbeige_model::Cache> = batch.iter_mut().collect();
        let got = m.forward_batch(&next, &mut refs).unwrap();
        for i in 0..next.len() {
            let want = m.forward_last(next[i], &mut solo[i]).unwrap();
            assert!(want.iter().zip(&got[i]).all(|(a, b)| a.to_bits() == b.to_bits()), "{kv:?} next step, sequence {i}");
        }
        // Bad batches are errors, not panics.
        let mut refs: Vec<&mut nanbeige_model::Cache> = batch.iter_mut().collect();
        assert!(m.forward_batch(&[&IDS[..1], &[], &IDS[..1], &IDS[..1]], &mut refs).is_err());
        assert!(m.forward_batch(&[&[400], &IDS[..1], &IDS[..1], &IDS[..1]], &mut refs).is_err());
        let long = vec![5u32; 64];
        assert!(m.forward_batch(&[&long, &IDS[..1], &IDS[..1], &IDS[..1]], &mut refs).unwrap_err().to_string().contains("context"));
    }
    std::fs::remove_dir_all(&d).unwrap();
}

/// A copied cache prefix continues exactly like the original, and the two never share storage.
#[test]
fn copied_cache_prefix_is_independent_and_exact() {
    let d = tmp("copy");
    let p = d.join("q4_0.gguf");
    write(&p, Format::Gguf, Quant::Q4_0, 11, 0);
    for kv in [nanbeige_model::KvType::F32, nanbeige_model::KvType::Q8] {
        let mut m = load_gguf_file(&p);
        m.kv_type = kv;
        let mut a = m.new_cache(64);
        m.forward_last(&IDS[..10], &mut a).unwrap();
        let mut b = m.copy_cache_prefix(&a, 6).unwrap();
        assert_eq!(b.len(), 6);
        // b continues with other tokens than a had: its logits are those of a fresh prefill...
        let other = [7u32, 7, 7];
        let got = m.forward_last(&other, &mut b).unwrap();
        let mut fresh = m.new_cache(64);
        let want = m.forward_last(&[&IDS[..6], &other[..]].concat(), &mut fresh).unwrap();
        assert!(got.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits()), "{kv:?}: copy continues differently");
        // ...and a is untouched: its next step equals a fresh prefill of all 11 tokens.
        let got = m.forward_last(&IDS[10..11], &mut a).unwrap();
        let mut fresh = m.new_cache(64);
        let want = m.forward_last(&IDS[..11], &mut fresh).unwrap();
        assert!(got.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits()), "{kv:?}: writing the copy changed the original");
    }
    std::fs::remove_dir_all(&d).unwrap();
}

/// A single-token `forward_last` (the slice path, llama/decode.rs) gives the logits of the tensor
/// path (`forward` with the cache) bit for bit, step after step, for every weight kind the kernels
/// cover, Qwen2's q/k/v biases and tied head, and both KV cache kinds.
#[test]
fn slice_decode_equals_tensor_path() {
    let d = tmp("slices");
    let mut qwen = tiny_config();
    qwen["model_type"] = serde_json::json!("qwen2");
    qwen["architectures"] = serde_json::json!(["Qwen2ForCausalLM"]);
    qwen["tie_word_embeddings"] = serde_json::json!(true);
    let mut models = vec![];
    for (name, config, format, quant) in [
        ("hf", tiny_config(), Format::Hf, Quant::Bf16),
        ("q4_0.gguf", tiny_config(), Format::Gguf, Quant::Q4_0),
        ("q8_0.gguf", tiny_config(), Format::Gguf, Quant::Q8_0),
        ("q4_k_m.gguf", tiny_config(), Format::Gguf, Quant::Q4KM),
        ("f32.gguf", tiny_config(), Format::Gguf, Quant::F32),
        ("qwen-q4_0.gguf", qwen, Format::Gguf, Quant::Q4_0),
    ] {
        let out = d.join(name);
        let opts = SynthOptions {
            config,
            name: "tiny".into(),
            out: out.clone(),
            format,
            quant,
            layers: None,
            seed: 13,
            shard_bytes: synth::DEFAULT_SHARD_BYTES,
            progress: false,
        };
        synth::synthesize(&opts).unwrap();
        models.push((name, if format == Format::Hf { load_hf(&out) } else { load_gguf_file(&out) }));
    }
    for (name, mut m) in models {
        for kv in [nanbeige_model::KvType::F32, nanbeige_model::KvType::Q8] {
            m.kv_type = kv;
            let (mut slices, mut tensors, mut batch) = (m.new_cache(64), m.new_cache(64), m.new_cache(64));
            m.forward_last(&IDS[..5], &mut slices).unwrap();
            m.forward_last(&IDS[..5], &mut tensors).unwrap();
            m.forward_last(&IDS[..5], &mut batch).unwrap();
            for (step, &tok) in IDS[5..].iter().enumerate() {
                let got = m.forward_last(&[tok], &mut slices).unwrap();
                // A batch of one sequence decoding (the server with one client) takes it too.
                let one = m.forward_batch(&[&[tok]], &mut [&mut batch]).unwrap();
                assert!(one[0].iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()), "{name} {kv:?} batch of one");
                let t = Tensor::new(&[[tok]], &Device::Cpu).unwrap();
                let want = m.forward(&t, Some(&mut tensors)).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert_eq!(got.len(), want.len());
                assert!(
                    got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{name} {kv:?} step {step}: the slice path differs from the tensor path"
                );
                assert_eq!(slices.len(), tensors.len());
            }
            // Past the cache's end: an error, as on the tensor path, and nothing is appended.
            let mut full = m.new_cache(5);
            m.forward_last(&IDS[..5], &mut full).unwrap();
            assert!(m.forward_last(&[1], &mut full).unwrap_err().to_string().contains("context"));
            assert_eq!(full.len(), 5);
            assert!(m.forward_last(&[400], &mut slices).unwrap_err().to_string().contains("vocabulary"));
        }
    }
    std::fs::remove_dir_all(&d).unwrap();
}
