//! `nanbeige train` end to end on a tiny chat model (nanbeige-tiny weights + the synthetic
//! Nanbeige tokenizer and template): bad data lines are reported with their line numbers and
//! skipped, the run finishes and saves a model `nanbeige run` can use; bad invocations give one
//! `error:` line and exit 1.

use nanbeige_model::synth::vocab::Vocab;
use nanbeige_model::synth::NANBEIGE_CHAT_TEMPLATE;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nanbeige")).args(args).stdin(Stdio::null()).output().unwrap()
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nanbeige-train-cli-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tiny_chat_model(dir: &Path) -> PathBuf {
    let m = dir.join("tiny-chat");
    std::fs::create_dir_all(&m).unwrap();
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny/nanbeige-tiny");
    for f in ["config.json", "model.safetensors", "generation_config.json"] {
        std::fs::copy(src.join(f), m.join(f)).unwrap();
    }
    let v = Vocab::new(384).unwrap();
    std::fs::write(m.join("tokenizer.json"), v.tokenizer_json().to_string()).unwrap();
    std::fs::write(m.join("tokenizer_config.json"), v.tokenizer_config_json(NANBEIGE_CHAT_TEMPLATE, 4096).to_string())
        .unwrap();
    m
}

fn assert_clean_error(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line: {err}");
    assert!(lines[0].starts_with("error: ") && lines[0].contains(needle), "expected `{needle}`: {err}");
}

#[test]
fn sft_reports_bad_lines_and_trains_on_the_rest() {
    let d = tmpdir("sft");
    let model = tiny_chat_model(&d);
    let good = r#"{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}"#;
    let long = format!(
        r#"{{"messages": [{{"role": "user", "content": "{}"}}, {{"role": "assistant", "content": "x"}}]}}"#,
        "a ".repeat(300)
    );
    let lines = [good, "{broken", r#"{"msgs": []}"#, &long, good];
    let data = d.join("data.jsonl");
    std::fs::write(&data, lines.join("\n")).unwrap();
    let out = d.join("out");
    let o = run(&[
        "train",
        "sft",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--steps",
        "2",
        "--batch-tokens",
        "128",
        "--lr",
        "1e-3",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    for (line, what) in [(2, "invalid JSON"), (3, "missing field `messages`"), (4, "too long")] {
        let needle = format!("data.jsonl:{line}: {what}");
        assert!(err.contains(&needle), "missing `{needle}` in: {err}");
    }
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("trained 2 steps") && stdout.contains("3 bad lines skipped"), "{stdout}");
    for f in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "metrics.jsonl",
        "loss.svg",
        "checkpoint/trainer_state.json",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    // The saved model runs.
    let r = run(&["run", "--model", out.to_str().unwrap(), "-n", "4", "--temperature", "0", "hello"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
}

#[test]
fn train_errors_are_one_line() {
    let d = tmpdir("errors");
    let model = tiny_chat_model(&d);
    let m = model.to_str().unwrap();
    let out = d.join("out");
    let o = out.to_str().unwrap();
    assert_clean_error(
        &run(&["train", "sft", "--model", m, "--data", "/nonexistent.jsonl", "--out", o]),
        "nonexistent.jsonl",
    );
    let empty = d.join("empty.jsonl");
    std::fs::write(&empty, "{\"messages\": 1}\n").unwrap();
    let o2 = run(&["train", "sft", "--model", m, "--data", empty.to_str().unwrap(), "--out", o]);
    assert_eq!(o2.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o2.stderr).contains("no usable examples"));
    assert_clean_error(
        &run(&["train", "sft", "--model", m, "--data", empty.to_str().unwrap(), "--out", o, "--dtype", "f64"]),
        "--dtype",
    );
    assert_clean_error(
        &run(&[
            "train",
            "sft",
            "--model",
            m,
            "--data",
            empty.to_str().unwrap(),
            "--out",
            o,
            "--schedule",
            "/no/such.json",
        ]),
        "such.json",
    );
    assert_clean_error(
        &run(&[
            "train",
            "distill",
            "--teacher",
            m,
            "--student",
            m,
            "--data",
            empty.to_str().unwrap(),
            "--out",
            o,
            "--mode",
            "magic",
        ]),
        "unknown --mode",
    );
    assert_clean_error(
        &run(&["train", "sft", "--model", "/no/model", "--data", empty.to_str().unwrap(), "--out", o]),
        "/no/model",
    );
    // RL and preference commands.
    assert_clean_error(&run(&["train", "grpo", "--model", m, "--out", o]), "no prompts");
    assert_clean_error(&run(&["train", "grpo", "--model", m, "--out", o, "--gen", "add", "--group", "1"]), "--group");
    assert_clean_error(&run(&["train", "grpo", "--model", m, "--out", o, "--gen", "poetry"]), "unknown generator");
    assert_clean_error(&run(&["train", "grpo", "--model", m, "--out", o, "--gen", "add", "--temperature", "0"]), "temperature");
    assert_clean_error(&run(&["train", "grpo", "--model", m, "--out", o, "--data", "/no/items.jsonl"]), "--task");
    assert_clean_error(&run(&["train", "pairwise", "--model", m, "--out", o, "--gen", "add"]), "--rm DIR");
    assert_clean_error(&run(&["train", "pairwise", "--model", m, "--out", o, "--gen", "add", "--rm", m]), "not a reward model");
    let blank = d.join("blank.jsonl");
    std::fs::write(&blank, "\n").unwrap();
    assert_clean_error(&run(&["train", "rm", "--model", m, "--out", o, "--data", blank.to_str().unwrap()]), "no usable preference pairs");
    assert_clean_error(&run(&["train", "dpo", "--model", m, "--out", o, "--data", "/no/pairs.jsonl"]), "pairs.jsonl");
    let b = blank.to_str().unwrap();
    assert_clean_error(&run(&["train", "rm", "--eval", "--model", m, "--data", b]), "not a reward model");
    assert_clean_error(&run(&["train", "dpo", "--eval", "--model", m, "--out", o, "--data", b]), "use it with `train rm`");
    assert!(!run(&["train", "rm", "--model", m, "--data", b]).status.success(), "train rm without --out or --eval");
    assert_clean_error(&run(&["train", "trajectories", "--log", blank.to_str().unwrap()]), "no runs");
}
