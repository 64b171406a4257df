//! `nanbeige synth` and `nanbeige bench` end to end on tiny configs: a synthesized model runs with
//! `nanbeige run`, bench reports every field the comparison script reads, and bad input gives one
//! `error:` line. (The full Nanbeige4.1-3B shape is only benchmarked by hand: docs/PERFORMANCE.md.)

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nanbeige")).args(args).stdin(Stdio::null()).output().unwrap()
}

fn ok(args: &[&str]) -> Output {
    let o = run(args);
    assert!(o.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    o
}

fn assert_clean_error(args: &[&str], needle: &str) {
    let o = run(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: expected one error line, got: {err}");
    assert!(lines[0].starts_with("error: ") && lines[0].contains(needle), "{args:?}: {err}");
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nanbeige-cli-synth-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tiny_config(dir: &std::path::Path) -> String {
    let p = dir.join("config.json");
    let cfg = serde_json::json!({
        "model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 1024,
        "rms_norm_eps": 1e-5, "rope_theta": 7e7, "vocab_size": 512
    });
    std::fs::write(&p, cfg.to_string()).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn synthesized_models_run_and_bench() {
    let d = tmpdir("run");
    let cfg = tiny_config(&d);
    let hf = d.join("hf");
    let gguf = d.join("tiny-q4_0.gguf");
    ok(&["synth", "--config", &cfg, "--out", hf.to_str().unwrap(), "--layers", "2"]);
    ok(&["synth", "--config", &cfg, "--out", gguf.to_str().unwrap(), "--quant", "q4_0", "--seed", "3"]);
    for m in [hf.to_str().unwrap(), gguf.to_str().unwrap()] {
        let o = ok(&["run", "--model", m, "--ignore-eos", "-n", "8", "--raw", "--json", "hi"]);
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["usage"]["completion_tokens"].as_u64().or(v["completion_tokens"].as_u64()), Some(8), "{v}");
    }
    let o = ok(&[
        "bench",
        "--model",
        gguf.to_str().unwrap(),
        "-p",
        "16",
        "-n",
        "4",
        "--threads",
        "1",
        "--ctx-depths",
        "0,32",
        "--json",
    ]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["model"]["quant"], "Q4_0");
    assert_eq!(v["machine"]["threads"], 1);
    assert_eq!(v["machine"]["amx_used"], false);
    assert!(v["prefill"]["tokens_per_sec"].as_f64().unwrap() > 0.0);
    assert!(v["prefill"]["time_to_first_token_ms"].as_f64().unwrap() > 0.0);
    assert!(v["decode"]["tokens_per_sec"].as_f64().unwrap() > 0.0);
    assert!(v["decode"]["fraction_of_ceiling"].as_f64().unwrap() > 0.0);
    assert!(v["machine"]["read_bandwidth_bytes_per_sec"].as_f64().unwrap() > 1e8);
    assert!(v["peak_rss_bytes"].as_u64().unwrap() > 0);
    let depths: Vec<u64> =
        v["decode_at_depths"].as_array().unwrap().iter().map(|d| d["depth"].as_u64().unwrap()).collect();
    assert_eq!(depths, vec![0, 32]);
    // Weight bytes per token: every matrix but the embedding table, as stored (Q4_0 with a Q6_K
    // or Q8_0 output matrix), so between the Q4_0 size and the f32 size of those weights.
    let per_token = v["model"]["weight_bytes_per_token"].as_u64().unwrap() as f64;
    let params_read = (4 * (64 * 64 * 2 + 64 * 32 * 2 + 3 * 64 * 128) + 512 * 64) as f64;
    assert!(per_token > params_read * 0.5 && per_token < params_read * 1.2, "{per_token} vs {params_read}");
    // The human-readable table.
    let o = ok(&["bench", "--model", hf.to_str().unwrap(), "-p", "8", "-n", "2"]);
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("pp8") && table.contains("tg2 @ d0") && table.contains("AMX never used"), "{table}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn bad_synth_and_bench_arguments_are_one_line_errors() {
    let d = tmpdir("bad");
    let cfg = tiny_config(&d);
    let out = d.join("x").to_string_lossy().into_owned();
    assert_clean_error(&["synth", "--config", &cfg, "--out", &out, "--quant", "Q5_K"], "unknown quantization `Q5_K`");
    assert_clean_error(
        &["synth", "--config", &cfg, "--out", &out, "--quant", "Q4_0"],
        "HF directories are written in bf16",
    );
    assert_clean_error(&["synth", "--config", &cfg, "--out", &out, "--format", "onnx"], "unknown format `onnx`");
    assert_clean_error(&["synth", "--config", "/no/such.json", "--out", &out], "/no/such.json");
    assert_clean_error(&["synth", "--config", &cfg, "--out", &out, "--layers", "0"], "--layers must be at least 1");
    let gguf = d.join("m.gguf");
    ok(&["synth", "--config", &cfg, "--out", gguf.to_str().unwrap(), "--quant", "q8_0", "--layers", "1"]);
    let m = gguf.to_str().unwrap();
    assert_clean_error(&["bench", "--model", m, "--ctx-depths", "0,8k"], "`8k` is not a token count");
    assert_clean_error(&["bench", "--model", m, "-p", "0"], "--prompt-tokens must be at least 1");
    assert_clean_error(&["bench", "--model", m, "--threads", "0"], "--threads must be at least 1");
    assert_clean_error(&["bench", "--model", m, "--ctx-depths", "4000"], "needs 4128 tokens of context");
    std::fs::remove_dir_all(&d).unwrap();
}
