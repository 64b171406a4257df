//! End-to-end tests of the `nanbeige` binary on the real test models (cached by `nanbeige pull
//! all`, which scripts/test.sh runs first): what a user sees — answers, JSON fields, seeds, stop
//! strings, the thinking budget, the chat REPL and Ctrl-C — and one clear error line with a non-zero
//! exit for every kind of bad input.

use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nanbeige"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).stdin(Stdio::null()).output().unwrap()
}

fn ok_json(args: &[&str]) -> Value {
    let o = run(args);
    assert!(o.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}

/// Exactly one `error:` line on stderr, exit code 1, no panic.
fn assert_clean_error(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "exit status {:?}, stderr: {err}", o.status);
    assert!(!err.contains("panicked"), "panic: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(lines[0].contains(needle), "expected `{needle}` in: {err}");
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nanbeige-cli-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

#[test]
fn run_answers_a_question_with_the_default_model() {
    let v = ok_json(&["run", "--json", "--temperature", "0", "-n", "40", "What is the capital of France? Answer in one sentence."]);
    assert_eq!(v["answer"], "The capital of France is Paris.");
    assert_eq!(v["finish_reason"], "stop");
    // 7 answer tokens; the EOS that ended generation is not part of the output.
    assert_eq!(v["usage"]["completion_tokens"], 7);
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 20);
    assert!(v["timings"]["decode_tokens_per_sec"].as_f64().unwrap() > 0.0);
}

#[test]
fn same_seed_same_text_and_seed_is_reported() {
    let args = ["run", "--json", "--seed", "42", "--temperature", "1.0", "-n", "24", "Tell me a story about a cat."];
    let a = ok_json(&args);
    let b = ok_json(&args);
    assert_eq!(a["text"], b["text"]);
    assert_eq!(a["seed"], 42);
    let c = ok_json(&["run", "--json", "--seed", "43", "--temperature", "1.0", "-n", "24", "Tell me a story about a cat."]);
    assert_ne!(a["text"], c["text"], "different seeds gave the same 24 sampled tokens");
    let d = ok_json(&["run", "--json", "--temperature", "1.0", "-n", "4", "Hi"]);
    assert!(d["seed"].as_u64().is_some(), "a random seed is reported so the run can be repeated");
}

#[test]
fn stop_strings_and_max_tokens_end_generation() {
    let v = ok_json(&["run", "--json", "--temperature", "0", "--stop", "Paris", "What is the capital of France? Answer in one sentence."]);
    assert_eq!(v["answer"], "The capital of France is");
    assert_eq!(v["stop_string"], "Paris");
    assert_eq!(v["finish_reason"], "stop");
    let v = ok_json(&["run", "--json", "--temperature", "0", "-n", "3", "--raw", "The quick brown fox"]);
    assert_eq!(v["usage"]["completion_tokens"], 3);
    assert_eq!(v["finish_reason"], "length");
}

#[test]
fn thinking_budget_closes_the_reasoning_and_the_model_answers() {
    // A raw prompt that leaves the model inside <think>: it would reason on; the budget cuts it.
    let prompt = "<|im_start|>user\nWhat is 17 * 23?<|im_end|>\n<|im_start|>assistant\n<think>\n";
    let v = ok_json(&[
        "run", "-m", "qwen2.5-coder", "--raw", "--json", "--temperature", "0", "-n", "60",
        "--max-thinking-tokens", "10", prompt,
    ]);
    assert_eq!(v["thinking_budget_hit"], true, "{v}");
    let text = v["text"].as_str().unwrap();
    assert_eq!(text.matches("</think>").count(), 1, "{text}");
    let reasoning = v["reasoning"].as_str().unwrap();
    assert!(!reasoning.is_empty() && !reasoning.contains("</think>"), "{v}");
    // 10 reasoning tokens plus the tokens of the inserted "\n</think>\n\n".
    let r = v["usage"]["reasoning_tokens"].as_u64().unwrap();
    assert!((11..=16).contains(&r), "reasoning_tokens {r}");
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() > r, "no answer after the budget: {v}");
}

#[test]
fn tool_calls_are_parsed_from_the_model_output() {
    let d = tmpdir("tools");
    let tools = r#"[{"type":"function","function":{"name":"get_weather","description":"Current weather for a city",
        "parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}]"#;
    std::fs::write(d.join("tools.json"), tools).unwrap();
    let v = ok_json(&[
        "run", "-m", "qwen2.5-coder", "--json", "--temperature", "0", "-n", "60",
        "--tools", d.join("tools.json").to_str().unwrap(), "What's the weather like in Paris right now?",
    ]);
    let calls = v["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{v}");
    assert_eq!(calls[0]["name"], "get_weather");
    assert_eq!(calls[0]["arguments"]["city"], "Paris");
}

#[test]
fn chat_repl_keeps_history_and_obeys_commands() {
    let mut child = bin()
        .args(["chat", "--temperature", "0", "-n", "40"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"What is the capital of France? Answer in one sentence.\n/reset\n/system You are terse.\n/bogus\n/exit\nnot read\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(out.contains("The capital of France is Paris."), "{out}");
    assert!(err.contains("(conversation reset)") && err.contains("system prompt set") && err.contains("commands:"), "{err}");
}

#[test]
fn ctrl_c_stops_the_reply_not_the_chat() {
    let mut child = bin()
        .args(["chat", "--ignore-eos", "-n", "100000", "--temperature", "1", "--seed", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"Write a very long essay about the sea.\n").unwrap();
    std::thread::sleep(std::time::Duration::from_secs(4));
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    std::thread::sleep(std::time::Duration::from_millis(500));
    stdin.write_all(b"/exit\n").unwrap();
    drop(stdin);
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "chat died on Ctrl-C: {:?} {err}", o.status);
    assert!(err.contains("(stopped)"), "{err}");
}

#[test]
fn info_prompt_and_tokenize_describe_the_model() {
    let v = ok_json(&["info", "--json"]);
    assert_eq!(v["architecture"], "llama");
    assert_eq!(v["layers"], 30);
    assert_eq!(v["kv_heads"], 3);
    assert_eq!(v["tensor_types"]["Q4_1"], 210);
    assert!(v["chat_template"].as_str().unwrap().contains("<|im_start|>"));
    let v = ok_json(&["info", "qwen2.5-coder", "--json"]);
    assert_eq!(v["architecture"], "qwen2");
    assert_eq!(v["qkv_bias"], true);

    // `prompt --ids` prints the rendered prompt, then its ids; the ids are what `tokenize` gives.
    let d = tmpdir("prompt");
    std::fs::write(d.join("m.json"), r#"[{"role":"user","content":"Hi there"}]"#).unwrap();
    let o = run(&["prompt", "qwen2.5-coder", "--messages", d.join("m.json").to_str().unwrap(), "--ids"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8(o.stdout).unwrap();
    let (text, ids) = out.trim_end().rsplit_once('\n').unwrap();
    assert!(text.ends_with("<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"), "{text}");
    let ids: Value = serde_json::from_str(ids).unwrap();
    let tok = ok_json(&["tokenize", "qwen2.5-coder", text]);
    assert_eq!(ids, tok);
}

#[test]
fn bad_model_paths_and_files_are_one_line_errors() {
    assert_clean_error(&run(&["run", "-m", "/nonexistent/model.gguf", "hi"]), "not found");
    assert_clean_error(&run(&["info", "no-such-model"]), "not found");
    let d = tmpdir("bad");
    std::fs::write(d.join("junk.gguf"), b"GGUF\x03\x00\x00\x00garbage").unwrap();
    assert_clean_error(&run(&["run", "-m", d.join("junk.gguf").to_str().unwrap(), "hi"]), "not a valid GGUF file");
    let small = fixtures().join("quant/all-types.gguf");
    assert_clean_error(&run(&["run", "-m", small.to_str().unwrap(), "hi"]), "unsupported architecture `nanbeige-test`");
    std::fs::create_dir_all(d.join("emptydir")).unwrap();
    assert_clean_error(&run(&["run", "-m", d.join("emptydir").to_str().unwrap(), "hi"]), "no config.json");
}

#[test]
fn truncated_model_file_is_a_one_line_error() {
    let d = tmpdir("trunc");
    let src = std::fs::read(
        PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/nanbeige/models/SmolLM2-135M-Instruct.Q4_1.gguf"),
    )
    .unwrap();
    std::fs::write(d.join("cut.gguf"), &src[..src.len() / 3]).unwrap();
    assert_clean_error(&run(&["run", "-m", d.join("cut.gguf").to_str().unwrap(), "hi"]), "truncated");
}

#[test]
fn prompt_longer_than_the_context_is_an_error() {
    let long = "word ".repeat(200);
    assert_clean_error(&run(&["run", "--ctx", "64", &long]), "context overflow");
}

#[test]
fn a_template_that_raises_is_an_error_with_its_message() {
    // An HF dir whose template raises for a system message, as some real templates do.
    let d = tmpdir("raise");
    let tiny = fixtures().join("tiny/nanbeige-tiny");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(tiny.join(f), d.join(f)).unwrap();
    }
    std::fs::copy(fixtures().join("spm/tokenizer.json"), d.join("tokenizer.json")).unwrap();
    let cfg = r#"{"bos_token": "<s>", "eos_token": "</s>", "chat_template": "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{{ m.content }}{% endfor %}"}"#;
    std::fs::write(d.join("tokenizer_config.json"), cfg).unwrap();
    let o = run(&["run", "-m", d.to_str().unwrap(), "--system", "be nice", "hi"]);
    assert_clean_error(&o, "System role not supported");
    // Invalid sampling values are refused the same way.
    assert_clean_error(&run(&["run", "--top-p", "0", "hi"]), "top_p");
    // Bad messages files for `prompt`.
    std::fs::write(d.join("bad.json"), "{not json").unwrap();
    assert_clean_error(&run(&["prompt", "--messages", d.join("bad.json").to_str().unwrap()]), "invalid JSON");
    std::fs::write(d.join("empty.json"), "[]").unwrap();
    assert_clean_error(&run(&["prompt", "--messages", d.join("empty.json").to_str().unwrap()]), "non-empty");
}
