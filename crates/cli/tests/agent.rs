//! End-to-end tests of `nanbeige mcp` (driven over stdio like an MCP client would) and
//! `nanbeige research` (its errors, and one short real run with the smallest test model), over a
//! tiny index built with `nanbeige index`.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nanbeige"))
}

fn tiny_index(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nanbeige-agent-cli-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    let docs = d.join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("walrus.md"), "# Assignment expressions\n\nThe walrus operator := assigns a value to a name inside an expression. It was added in Python 3.8 by PEP 572.\n").unwrap();
    std::fs::write(
        docs.join("lambda.md"),
        "# Lambdas\n\nA lambda expression creates an anonymous function: lambda x: x + 1.\n",
    )
    .unwrap();
    let idx = d.join("idx");
    let o = bin().args(["index", docs.to_str().unwrap(), "--out", idx.to_str().unwrap(), "--json"]).output().unwrap();
    assert!(o.status.success(), "index failed: {}", String::from_utf8_lossy(&o.stderr));
    idx
}

struct Mcp {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Mcp {
    fn start(idx: &Path) -> Self {
        let mut child = bin()
            .args(["mcp", "--index", idx.to_str().unwrap()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        Self { child, out }
    }
    fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }
    fn recv(&mut self) -> Value {
        let mut l = String::new();
        self.out.read_line(&mut l).unwrap();
        serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l:?}"))
    }
    fn ask(&mut self, v: Value) -> Value {
        self.send(&v.to_string());
        self.recv()
    }
}

#[test]
fn mcp_serves_the_tools_over_stdio_and_survives_bad_input() {
    let idx = tiny_index("mcp");
    let mut m = Mcp::start(&idx);
    let r = m.ask(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "test", "version": "0"}}}));
    assert_eq!(r["id"], 1);
    assert_eq!(r["result"]["protocolVersion"], "2025-03-26");
    assert_eq!(r["result"]["serverInfo"]["name"], "nanbeige");
    assert!(r["result"]["capabilities"]["tools"].is_object());
    // Notifications get no answer: the next line read belongs to the ping.
    m.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string());
    assert_eq!(
        m.ask(json!({"jsonrpc": "2.0", "id": "p", "method": "ping"})),
        json!({"jsonrpc": "2.0", "id": "p", "result": {}})
    );

    let r = m.ask(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}));
    let names: Vec<&str> =
        r["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["search", "visit", "python"]);
    assert_eq!(r["result"]["tools"][0]["inputSchema"]["required"], json!(["query"]));

    let r = m.ask(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "search", "arguments": {"query": "walrus operator"}}}));
    assert_eq!(r["result"]["isError"], false);
    let text = r["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("Assignment expressions") && text.contains("id: walrus.md"), "{text}");
    assert_eq!(r["result"]["structuredContent"]["results"][0]["id"], "walrus.md");

    let r = m.ask(json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "visit", "arguments": {"id": "walrus.md", "goal": "which Python version"}}}));
    assert!(r["result"]["content"][0]["text"].as_str().unwrap().contains("added in Python 3.8"), "{r}");

    let r = m.ask(json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "python", "arguments": {"code": "print(6 * 7)"}}}));
    assert!(r["result"]["content"][0]["text"].as_str().unwrap().contains("42"), "{r}");

    // Tool failures are results with isError; protocol mistakes are JSON-RPC errors.
    let r = m.ask(json!({"jsonrpc": "2.0", "id": 6, "method": "tools/call", "params": {"name": "visit", "arguments": {"id": "nope.md", "goal": "x"}}}));
    assert_eq!(r["result"]["isError"], true);
    let r = m
        .ask(json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "browse", "arguments": {}}}));
    assert_eq!(r["error"]["code"], -32602);
    let r = m.ask(json!({"jsonrpc": "2.0", "id": 8, "method": "resources/list"}));
    assert_eq!(r["error"]["code"], -32601);
    m.send("{this is not json");
    assert_eq!(m.recv()["error"]["code"], -32700);
    m.send("[1, 2]");
    assert_eq!(m.recv()["error"]["code"], -32600);
    m.send(&json!({"id": 9, "method": "ping"}).to_string());
    assert_eq!(m.recv()["error"]["code"], -32600);
    m.send("\u{0}\u{1}binary");
    assert_eq!(m.recv()["error"]["code"], -32700);
    // Still alive after all that.
    assert_eq!(m.ask(json!({"jsonrpc": "2.0", "id": 10, "method": "ping"}))["result"], json!({}));
    drop(m.child.stdin.take());
    let status = m.child.wait().unwrap();
    assert!(status.success(), "the server should exit cleanly at end of input");
    let _ = std::fs::remove_dir_all(idx.parent().unwrap());
}

#[test]
fn research_and_mcp_flag_errors_are_one_clear_line() {
    for (args, needle) in [
        (vec!["research", "q", "--no-python"], "no tools"),
        (vec!["research", "q", "--index", "/nonexistent/idx"], "does not exist"),
        (vec!["research", "q", "--web", "bing"], "unknown web backend"),
        (vec!["research", "q", "--index", "/x", "--web", "brave"], "not both"),
        (vec!["research", "", "--no-python", "--web", "searxng:http://127.0.0.1:9"], "question is empty"),
        (vec!["research", "q", "--web", "searxng:http://127.0.0.1:9", "--max-turns", "0"], "max-turns"),
        (vec!["research", "q", "--web", "searxng:http://127.0.0.1:9", "--endpoint", "localhost:1"], "http(s) URL"),
        (vec!["mcp", "--index", "/nonexistent/idx"], "does not exist"),
    ] {
        let o = bin().args(&args).env_remove("BRAVE_API_KEY").stdin(Stdio::null()).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?}: {err}");
        assert!(lines[0].starts_with("error: ") && lines[0].contains(needle), "{args:?}: {err}");
    }
}

/// The in-process engine as the brain (SmolLM2-135M, the fastest test model): a real run of a few
/// turns ends with an answer and a well-formed JSON report and trajectory, whatever the tiny model
/// decides to do.
#[test]
fn research_runs_end_to_end_with_the_engine() {
    let idx = tiny_index("research");
    let log = idx.parent().unwrap().join("log.jsonl");
    let o = bin()
        .args([
            "research",
            "When was the walrus operator added?",
            "--index",
            idx.to_str().unwrap(),
            "--model",
            "smollm2",
            "--no-python",
        ])
        .args([
            "--max-turns",
            "3",
            "--max-tokens",
            "96",
            "--temperature",
            "0",
            "--ctx",
            "4096",
            "--json",
            "--log",
            log.to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("[turn 1/3]"), "progress lines expected: {err}");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["stats"]["turns"].as_u64().unwrap() >= 1 && v["stats"]["turns"].as_u64().unwrap() <= 3);
    assert!(v["stats"]["max_prompt_tokens"].as_u64().unwrap() + 96 <= 4096);
    assert!(v["answer"].is_string() && v["citations"].is_array());
    let lines: Vec<Value> =
        std::fs::read_to_string(&log).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[0]["type"], "run_start");
    assert_eq!(lines.last().unwrap()["type"], "final");
    assert!(lines.iter().any(|l| l["type"] == "prompt" && l["messages"][0]["role"] == "system"));
    let _ = std::fs::remove_dir_all(idx.parent().unwrap());
}
