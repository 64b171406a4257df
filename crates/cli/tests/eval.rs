//! End-to-end tests of `nanbeige data gen` and `nanbeige eval`: deterministic data with disjoint
//! splits; evaluation with the real test model (it runs, logs every item, and resumes without
//! redoing logged items; its accuracy is not asserted); endpoint mode against a fake
//! OpenAI-compatible server on loopback whose right and wrong answers are known, so the scores and
//! intervals can be checked exactly; run comparison; one clear error for bad input.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nanbeige")).args(args).stdin(Stdio::null()).output().unwrap()
}

fn ok(args: &[&str]) -> Output {
    let o = run(args);
    assert!(o.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    o
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nanbeige-eval-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn lines(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn data_gen_is_deterministic_with_disjoint_splits() {
    let d = tmpdir("gen");
    let (a, b, t) = (d.join("a.jsonl"), d.join("b.jsonl"), d.join("t.jsonl"));
    ok(&["data", "gen", "arith", "--n", "50", "--seed", "3", "--reasoning", "--out", s(&a)]);
    ok(&["data", "gen", "arith", "--n", "50", "--seed", "3", "--reasoning", "--out", s(&b)]);
    ok(&["data", "gen", "arith", "--n", "50", "--seed", "3", "--split", "test", "--out", s(&t)]);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let train = lines(&a);
    assert_eq!(train.len(), 50);
    let r = &train[0]["messages"][1];
    assert_eq!(r["role"], "assistant");
    assert!(r["reasoning_content"].as_str().unwrap().contains("So "));
    assert!(r["content"].as_str().unwrap().starts_with("Answer: "));
    let test = lines(&t);
    assert!(test[0]["messages"][1].get("reasoning_content").is_none());
    for x in &test {
        assert!(train.iter().all(|y| y["messages"][0] != x["messages"][0]));
    }
    let o = run(&["data", "gen", "poems", "--n", "5"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("error: unknown task"));
}

#[test]
fn eval_with_the_real_model_logs_and_resumes() {
    let d = tmpdir("real");
    let log = d.join("log.jsonl");
    let args = |n: &'static str| {
        ["eval", "math", "--gen", "arith", "--n", n, "--seed", "1", "--max-tokens", "32", "--out", s(&log), "--json"]
            .map(String::from)
    };
    let first = args("2");
    let o = ok(&first.iter().map(String::as_str).collect::<Vec<_>>());
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["items"], 2);
    let p = summary["pass@1"]["mean"].as_f64().unwrap();
    let ci = summary["pass@1"]["ci95"].as_array().unwrap();
    assert!(ci[0].as_f64().unwrap() <= p && p <= ci[1].as_f64().unwrap());
    let logged = lines(&log);
    assert_eq!(logged.len(), 2);
    for rec in &logged {
        assert!(rec["id"].is_string() && rec["gold"].is_string());
        let sample = &rec["samples"][0];
        assert!(!sample["text"].as_str().unwrap().is_empty());
        assert!(sample["tokens"].as_u64().unwrap() <= 32);
    }
    // One more item: only that one runs.
    let more = args("3");
    let o = ok(&more.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(String::from_utf8_lossy(&o.stderr).contains("resuming: 2 of 3 items already in the log, 1 to run"));
    assert_eq!(lines(&log).len(), 3);
    assert_eq!(lines(&log)[..2], logged[..]);
    let o = ok(&more.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(String::from_utf8_lossy(&o.stderr).contains("0 to run"));
    assert_eq!(lines(&log).len(), 3);
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["items"], 3);

    // Code with two samples per item (pass@2) runs the tests of each sample.
    let clog = d.join("code.jsonl");
    ok(&["eval", "code", "--gen", "code", "--n", "1", "--samples", "2", "--max-tokens", "48", "--out", s(&clog)]);
    let rec = &lines(&clog)[0];
    assert_eq!(rec["samples"].as_array().unwrap().len(), 2);
    assert_eq!(rec["samples"][0]["tests_total"], 11);
    // Rescoring from the saved replies needs no model and gives the same scores.
    let mut edited = rec.clone();
    edited["pass1"] = json!(0.5);
    edited["samples"][0]["score"] = json!(-1.0);
    std::fs::write(&clog, format!("{edited}\n")).unwrap();
    let o = ok(&[
        "eval",
        "code",
        "--gen",
        "code",
        "--n",
        "1",
        "--samples",
        "2",
        "--out",
        s(&clog),
        "--rescore",
        "--model",
        "/nonexistent",
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("rescored 1 logged items"));
    let again = &lines(&clog)[0];
    assert_eq!(again["samples"][0]["score"], rec["samples"][0]["score"]);
    assert_eq!(again["pass1"], rec["pass1"]);
}

/// A fake OpenAI-compatible chat server: answers "What is a + b?" questions with the right sum
/// when a is even and a wrong one when a is odd, in the `<think>` format (reasoning_content) for
/// every second request id; calls `get_weather` for tool prompts. Returns its base URL.
fn fake_server(status: u16) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut r = BufReader::new(stream.try_clone().unwrap());
                let mut len = 0;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                if len == 0 {
                    // GET /v1/models
                    let out = json!({"object": "list", "data": [{"id": "fake-model", "object": "model"}]}).to_string();
                    let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{out}", out.len());
                    return;
                }
                let req: Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(req["model"], "fake-model");
                let q = req["messages"][0]["content"].as_str().unwrap_or("").to_string();
                let reply = if q.starts_with("You are judging") {
                    // A judge: prefers the answer that says "good" (A when both do, B when neither).
                    let a = q.split("Answer A:\n").nth(1).and_then(|t| t.split("\n\nAnswer B:").next()).unwrap_or("");
                    json!({"role": "assistant", "content": if a.contains("good") { "A" } else { "B" }})
                } else if req.get("tools").is_some() {
                    json!({"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                        "function": {"name": "get_weather", "arguments": if q.contains("Paris") { "{\"city\": \"Paris\"}" } else { "{\"city\": \"Rome\"}" }}}]})
                } else {
                    let nums: Vec<i64> = q
                        .split(|c: char| !c.is_ascii_digit())
                        .filter(|t| !t.is_empty())
                        .map(|t| t.parse().unwrap())
                        .collect();
                    let (a, b) = (nums[0], nums[1]);
                    let ans = if a % 2 == 0 { a + b } else { a + b + 1 };
                    let mut m = json!({"role": "assistant", "content": format!("Answer: {ans}")});
                    if b % 2 == 0 {
                        m["reasoning_content"] = json!(format!("{a} plus {b}"));
                    }
                    m
                };
                let out = json!({"choices": [{"index": 0, "message": reply, "finish_reason": "stop"}], "usage": {"completion_tokens": 5}}).to_string();
                let reason = if status == 200 { "OK" } else { "Internal Server Error" };
                let _ = write!(stream, "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{out}", out.len());
            });
        }
    });
    format!("http://{addr}")
}

#[test]
fn endpoint_mode_scores_exactly_and_compares_runs() {
    let d = tmpdir("endpoint");
    let data = d.join("sums.jsonl");
    let mut f = std::fs::File::create(&data).unwrap();
    let (mut right, mut formatted) = (0, 0);
    for i in 0..40 {
        let (a, b) = (10 + i, 3 + 2 * (i % 3));
        right += (a % 2 == 0) as usize;
        formatted += (b % 2 == 0) as usize;
        writeln!(f, "{}", json!({"id": format!("q{i}"), "question": format!("What is {a} + {b}?"), "answer": format!("#### {}", a + b)})).unwrap();
    }
    writeln!(f, "not json").unwrap();
    writeln!(f, "{}", json!({"question": "no answer"})).unwrap();
    drop(f);
    let url = fake_server(200);
    let log = d.join("a.jsonl");
    let o =
        ok(&["eval", "math", "--endpoint", &url, "--data", s(&data), "--parallel", "4", "--out", s(&log), "--json"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("sums.jsonl:41: skipped: invalid JSON"), "{err}");
    assert!(err.contains("sums.jsonl:42: skipped: no numeric answer"), "{err}");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["items"], 40);
    assert_eq!(v["pass@1"]["mean"].as_f64().unwrap(), right as f64 / 40.0);
    // 20/40 right: the 95% Wilson interval is 0.3515–0.6485.
    let ci: Vec<f64> = v["pass@1"]["ci95"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    assert!((ci[0] - 0.351_5).abs() < 1e-3 && (ci[1] - 0.648_5).abs() < 1e-3, "{ci:?}");
    assert_eq!(v["format_compliance"]["mean"].as_f64().unwrap(), formatted as f64 / 40.0);
    assert_eq!(lines(&log).len(), 40);

    // B: the same items, the first 10 marked right by editing the log (as if a better model).
    let blog = d.join("b.jsonl");
    let mut out = String::new();
    for (i, mut rec) in lines(&log).into_iter().enumerate() {
        if i < 10 {
            rec["pass1"] = json!(1.0);
        }
        out += &format!("{rec}\n");
    }
    std::fs::write(&blog, out).unwrap();
    let wrong_in_first_10 = lines(&log)[..10].iter().filter(|r| r["pass1"] == 0.0).count();
    let o = ok(&["eval", "compare", s(&log), s(&blog)]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("40 items in both logs"), "{text}");
    assert!(text.contains(&format!("0 right only in A, {wrong_in_first_10} only in B")), "{text}");
    // The checker as judge: B wins the pairs only it got right, the other 40 - w are ties.
    let win = 100.0 * (wrong_in_first_10 as f64 + (40 - wrong_in_first_10) as f64 / 2.0) / 40.0;
    assert!(text.contains(&format!("the checker judging: {win:.1}%")), "{text}");

    // Tool calls: the right function and arguments for Paris, the wrong city for Rome.
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let tdata = d.join("tools.jsonl");
    let mut f = std::fs::File::create(&tdata).unwrap();
    for city in ["Paris", "Paris", "Rome"] {
        writeln!(f, "{}", json!({"question": format!("Weather in {city}?"), "tools": tools, "expected": {"name": "get_weather", "arguments": {"city": "Paris"}}})).unwrap();
    }
    drop(f);
    let o = ok(&["eval", "tool", "--endpoint", &url, "--data", s(&tdata), "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["items"], 2, "two identical items count once");
    assert_eq!(v["pass@1"]["mean"].as_f64().unwrap(), 0.5, "{v}");
    assert_eq!(v["tool_name_accuracy"]["mean"].as_f64().unwrap(), 1.0, "{v}");

    // A server error is one clear error line.
    let bad = fake_server(500);
    let o = run(&["eval", "math", "--endpoint", &bad, "--data", s(&data)]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.lines().last().unwrap().starts_with("error: ") && err.contains("500"), "{err}");
    assert!(!err.contains("panicked"));
}

#[test]
fn bad_eval_input_is_one_clear_error() {
    for (args, needle) in [
        (vec!["eval", "math", "--data", "/nonexistent.jsonl"], "reading /nonexistent.jsonl"),
        (vec!["eval", "poetry", "--gen", "arith"], "unknown eval task"),
        (vec!["eval", "math", "--gen", "code", "--n", "1"], "makes code items, not math"),
        (vec!["eval", "math"], "give the items"),
        (vec!["eval", "compare", "only-one.jsonl"], "usage: nanbeige eval compare"),
        (vec!["eval", "math", "--gen", "arith", "--endpoint", "localhost:1"], "must be an http"),
    ] {
        let o = run(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.lines().last().unwrap_or("").starts_with("error: ") && err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"));
    }
}

/// `eval winrate`: a judge behind an endpoint compares two logs item by item, in both orders.
#[test]
fn winrate_counts_wins_ties_and_losses() {
    let d = tmpdir("winrate");
    let url = fake_server(200);
    let (a, b) = (d.join("a.jsonl"), d.join("b.jsonl"));
    let rec = |id: &str, text: &str| json!({"id": id, "prompt": "Which is better?", "samples": [{"text": text}]}).to_string();
    let pairs = [("bad", "good"), ("good", "good"), ("bad", "bad"), ("good", "bad")];
    let la: Vec<String> = pairs.iter().enumerate().map(|(i, (x, _))| rec(&format!("q{i}"), &format!("<think>\nhm\n</think>\n\n{x}"))).collect();
    let lb: Vec<String> = pairs.iter().enumerate().map(|(i, (_, y))| rec(&format!("q{i}"), y)).collect();
    std::fs::write(&a, la.join("\n") + "\n").unwrap();
    std::fs::write(&b, lb.join("\n") + "\n").unwrap();
    let o = run(&["eval", "winrate", s(&a), s(&b), "--endpoint", &url, "--api-model", "fake-model"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("win rate 50.0%") && out.contains("on 4 items: 1 wins, 2 ties, 1 losses"), "{out}");
    let o = run(&["eval", "winrate", s(&a), s(&b)]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("--endpoint"));
    // --judge-solves belongs to winrate: elsewhere it is an error, not silently ignored.
    let o = run(&["eval", "math", "--gen", "add", "--n", "2", "--judge-solves"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--judge-solves is for"));
}
