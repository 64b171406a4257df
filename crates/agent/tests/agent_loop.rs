//! The agent loop driven by scripted brains (fixed replies decided from what the loop sends them):
//! tool dispatch, malformed calls, unknown tools, tool errors and timeouts, the turn and context
//! limits forcing a final answer, citations, the trajectory log, and a 600-turn run that never
//! lets the prompt pass the window while the memory it holds stays bounded.

use anyhow::Result;
use nanbeige_agent::agent::{Agent, AgentConfig, FINAL_INSTRUCTION};
use nanbeige_agent::brain::{Brain, Reply};
use nanbeige_agent::tools::{approx_tokens, Budgets, Corpus, MemoryCorpus, Page, SearchHit, Toolbox};
use nanbeige_agent::trajectory::Trajectory;
use nanbeige_agent::Limits;
use nanbeige_text::ToolCallItem;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Script = Box<dyn FnMut(usize, &Value, bool) -> Reply>;

/// Counts tokens as approx_tokens of the JSON (deterministic), checks every prompt against the
/// window, and lets a closure decide each reply.
struct Scripted {
    window: usize,
    reserve: usize,
    turn: usize,
    script: Script,
    max_prompt: usize,
    max_message_bytes: usize,
}

impl Scripted {
    fn new(window: usize, reserve: usize, script: impl FnMut(usize, &Value, bool) -> Reply + 'static) -> Self {
        Self { window, reserve, turn: 0, script: Box::new(script), max_prompt: 0, max_message_bytes: 0 }
    }
}

fn count(messages: &Value, tools: Option<&Value>) -> usize {
    approx_tokens(&messages.to_string()) + tools.map(|t| approx_tokens(&t.to_string())).unwrap_or(0)
}

impl Brain for Scripted {
    fn describe(&self) -> String {
        "scripted".into()
    }
    fn window(&self) -> usize {
        self.window
    }
    fn count_tokens(&mut self, messages: &Value, tools: Option<&Value>) -> Result<usize> {
        Ok(count(messages, tools))
    }
    fn reply(
        &mut self,
        messages: &Value,
        tools: Option<&Value>,
        max_tokens: usize,
        require_tool: bool,
    ) -> Result<Reply> {
        assert_eq!(require_tool, self.turn == 0 && tools.is_some(), "only the first reply is required to call a tool");
        self.turn += 1;
        let n = count(messages, tools);
        assert!(
            n + max_tokens <= self.window,
            "turn {}: prompt {n} + reply {max_tokens} > window {}",
            self.turn,
            self.window
        );
        assert_eq!(max_tokens, self.reserve);
        self.max_prompt = self.max_prompt.max(n);
        self.max_message_bytes = self.max_message_bytes.max(messages.to_string().len());
        let mut r = (self.script)(self.turn, messages, tools.is_some());
        r.prompt_tokens = n;
        Ok(r)
    }
}

fn say(text: &str) -> Reply {
    Reply {
        text: text.into(),
        content: text.into(),
        reasoning: None,
        tool_calls: vec![],
        prompt_tokens: 0,
        completion_tokens: 5,
        finish: "stop".into(),
    }
}

fn call(name: &str, args: Value) -> Reply {
    Reply {
        tool_calls: vec![ToolCallItem::Call { name: name.into(), arguments: args }],
        finish: "tool_calls".into(),
        ..say("")
    }
}

fn last_content(messages: &Value) -> String {
    messages.as_array().unwrap().last().unwrap()["content"].as_str().unwrap_or("").to_string()
}

fn corpus() -> Arc<dyn Corpus> {
    let mut pages = vec![Page {
        id: "library/walrus.html".into(),
        title: "Assignment expressions".into(),
        source: "/docs/library/walrus.html".into(),
        text: "Intro.\n\nThe walrus operator := assigns to a variable inside an expression. It was added in Python 3.8 (PEP 572).\n\nOther details.".into(),
    }];
    for i in 0..40 {
        pages.push(Page {
            id: format!("library/mod{i}.html"),
            title: format!("Module {i}"),
            source: format!("/docs/library/mod{i}.html"),
            text: format!("Module {i} is about topic{i} and the operator table. {}", "filler words here. ".repeat(400)),
        });
    }
    Arc::new(MemoryCorpus { pages })
}

fn toolbox(python: bool) -> Arc<Toolbox> {
    Arc::new(Toolbox { corpus: Some(corpus()), python: python.then(Limits::default), budgets: Budgets::default() })
}

fn cfg(max_turns: usize, reserve: usize) -> AgentConfig {
    AgentConfig { max_turns, max_reply_tokens: reserve, ..AgentConfig::default() }
}

#[test]
fn dispatches_tools_and_checks_citations() {
    let mut brain = Scripted::new(8192, 512, |turn, m, _| match turn {
        1 => call("search", json!({"query": "walrus operator"})),
        2 => {
            let results = last_content(m);
            assert!(results.starts_with("[1] Assignment expressions\nid: library/walrus.html"), "{results}");
            call("visit", json!({"id": "library/walrus.html", "goal": "when was the walrus operator added"}))
        }
        3 => {
            assert!(last_content(m).contains("added in Python 3.8"));
            call("python", json!({"code": "print(sum(range(10)))"}))
        }
        4 => {
            assert!(last_content(m).contains("stdout:\n45"), "{}", last_content(m));
            say("The walrus operator := was added in Python 3.8 [1]. See also [9].")
        }
        _ => panic!("no turn {turn}"),
    });
    let log_path = std::env::temp_dir().join(format!("nanbeige-agent-log-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&log_path);
    let mut agent = Agent {
        brain: &mut brain,
        tools: toolbox(true),
        cfg: cfg(10, 512),
        log: Trajectory::open(Some(&log_path)).unwrap(),
    };
    let out = agent.run("When was the walrus operator added?").unwrap();
    assert_eq!(out.stats.turns, 4);
    assert_eq!(out.stats.tool_calls.get("search"), Some(&1));
    assert_eq!(out.stats.tool_calls.get("visit"), Some(&1));
    assert_eq!(out.stats.tool_calls.get("python"), Some(&1));
    assert_eq!(out.stats.forced_final, None);
    assert_eq!(out.citations.len(), 1);
    assert_eq!(out.citations[0].id, "library/walrus.html");
    assert!(out.citations[0].visited);
    assert_eq!(out.invalid_citations, vec![9]);
    let shown = out.display();
    assert!(
        shown.ends_with("Sources:\n[1] Assignment expressions — library/walrus.html (/docs/library/walrus.html)"),
        "{shown}"
    );

    // The log: every prompt, output, call and result, each line valid JSON of one run.
    let log = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let kinds: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"run_start"));
    assert_eq!(kinds.last(), Some(&"final"));
    assert_eq!(kinds.iter().filter(|k| **k == "prompt").count(), 4);
    assert_eq!(kinds.iter().filter(|k| **k == "model_output").count(), 4);
    assert_eq!(kinds.iter().filter(|k| **k == "tool_call").count(), 3);
    assert_eq!(kinds.iter().filter(|k| **k == "tool_result").count(), 3);
    let run = lines[0]["run"].as_str().unwrap();
    assert!(lines.iter().all(|l| l["run"] == run && l["t_ms"].is_number()));
    let prompt2 = lines.iter().filter(|l| l["type"] == "prompt").nth(1).unwrap();
    assert_eq!(prompt2["messages"].as_array().unwrap().last().unwrap()["role"], "tool");
    assert_eq!(lines.last().unwrap()["citations"][0]["id"], "library/walrus.html");
    let _ = std::fs::remove_file(&log_path);
}

#[test]
fn malformed_calls_unknown_tools_and_errors_go_back_to_the_model() {
    let mut brain = Scripted::new(8192, 256, |turn, m, _| match turn {
        1 => Reply {
            tool_calls: vec![
                ToolCallItem::Invalid {
                    raw: "{\"name\": \"search\", \"arguments\": {\"query\": ".into(),
                    error: "unexpected end of JSON".into(),
                },
                ToolCallItem::Call { name: "browse".into(), arguments: json!({"url": "x"}) },
                ToolCallItem::Call { name: "search".into(), arguments: json!({"q": "walrus"}) },
                ToolCallItem::Call { name: "visit".into(), arguments: json!({"id": "nope.html", "goal": "x"}) },
            ],
            ..say("")
        },
        2 => {
            let s = m.to_string();
            assert!(s.contains("unknown tool 'browse'"), "{s}");
            assert!(s.contains("missing argument 'query'"));
            assert!(s.contains("no document with id 'nope.html'"));
            assert!(last_content(m).contains("could not be read (unexpected end of JSON)"));
            say("")
        }
        3 => {
            assert!(last_content(m).contains("Your reply was empty"));
            say("I could not find it.")
        }
        _ => panic!(),
    });
    let mut agent =
        Agent { brain: &mut brain, tools: toolbox(false), cfg: cfg(10, 256), log: Trajectory::open(None).unwrap() };
    let out = agent.run("q").unwrap();
    assert_eq!(out.answer, "I could not find it.");
    assert_eq!(out.stats.malformed_calls, 1);
    assert_eq!(out.stats.tool_errors, 3);
    assert_eq!(out.stats.turns, 3);
    assert!(out.citations.is_empty());
}

struct SlowCorpus;
impl Corpus for SlowCorpus {
    fn describe(&self) -> String {
        "slow".into()
    }
    fn search(&self, _: &str, _: usize) -> Result<Vec<SearchHit>> {
        std::thread::sleep(Duration::from_secs(3));
        Ok(vec![])
    }
    fn open(&self, _: &str) -> Result<Page> {
        anyhow::bail!("backend down: connection refused")
    }
}

#[test]
fn tool_timeouts_are_results_and_the_loop_goes_on() {
    let tools = Arc::new(Toolbox {
        corpus: Some(Arc::new(SlowCorpus)),
        python: None,
        budgets: Budgets { tool_timeout: Duration::from_millis(300), ..Budgets::default() },
    });
    let mut brain = Scripted::new(4096, 256, |turn, m, _| match turn {
        1 => call("search", json!({"query": "x"})),
        2 => {
            assert_eq!(last_content(m), "error: tool 'search' timed out after 0 s");
            call("visit", json!({"id": "a", "goal": "b"}))
        }
        3 => {
            assert_eq!(last_content(m), "error: backend down: connection refused");
            say("done")
        }
        _ => panic!(),
    });
    let t = Instant::now();
    let mut agent = Agent { brain: &mut brain, tools, cfg: cfg(10, 256), log: Trajectory::open(None).unwrap() };
    let out = agent.run("q").unwrap();
    assert!(t.elapsed() < Duration::from_secs(2), "the loop waited for the slow tool: {:?}", t.elapsed());
    assert_eq!((out.stats.tool_timeouts, out.stats.tool_errors), (1, 2));
}

#[test]
fn the_turn_limit_forces_a_final_answer_without_tools() {
    let mut offered = vec![];
    let mut brain = Scripted::new(8192, 256, move |turn, m, tools| {
        offered.push(tools);
        if !tools {
            assert_eq!(turn, 5);
            assert_eq!(last_content(m), FINAL_INSTRUCTION);
            assert_eq!(offered, [true, true, true, true, false]);
            return say("Final: walrus [1]");
        }
        call("search", json!({"query": "walrus operator"}))
    });
    let mut agent =
        Agent { brain: &mut brain, tools: toolbox(false), cfg: cfg(5, 256), log: Trajectory::open(None).unwrap() };
    let out = agent.run("q").unwrap();
    assert_eq!(out.stats.turns, 5);
    assert_eq!(out.stats.forced_final.as_deref(), Some("turn limit"));
    assert_eq!(out.answer, "Final: walrus [1]");
    assert_eq!(out.citations[0].id, "library/walrus.html");
    // A model that keeps calling tools when told to answer still ends the run.
    let mut brain = Scripted::new(8192, 256, |_, _, _| call("search", json!({"query": "walrus"})));
    let mut agent =
        Agent { brain: &mut brain, tools: toolbox(false), cfg: cfg(3, 256), log: Trajectory::open(None).unwrap() };
    let out = agent.run("q").unwrap();
    assert_eq!((out.stats.turns, out.answer.as_str()), (3, ""));
}

#[test]
fn the_context_limit_forces_a_final_answer_before_overflow() {
    // A question so long that with the tool definitions it cannot fit, without them it can.
    let tools = toolbox(false);
    let schema_tokens = approx_tokens(&tools.schemas().to_string());
    let question = "why? ".repeat(600);
    let base = count(
        &json!([{"role": "system", "content": AgentConfig::default().system}, {"role": "user", "content": question.trim()}, {"role": "user", "content": FINAL_INSTRUCTION}]),
        None,
    );
    let window = base + schema_tokens / 2 + 256;
    let mut brain = Scripted::new(window, 256, |_, m, tools| {
        assert!(!tools);
        assert_eq!(last_content(m), FINAL_INSTRUCTION);
        say("cannot tell")
    });
    let mut agent = Agent { brain: &mut brain, tools, cfg: cfg(100, 256), log: Trajectory::open(None).unwrap() };
    let out = agent.run(&question).unwrap();
    assert_eq!(out.stats.forced_final.as_deref(), Some("context limit"));
    assert_eq!(out.stats.turns, 1);
    // Too long even for that: one clear error, no overflow.
    let mut brain = Scripted::new(window, 256, |_, _, _| panic!("must not be called"));
    let mut agent =
        Agent { brain: &mut brain, tools: toolbox(false), cfg: cfg(100, 256), log: Trajectory::open(None).unwrap() };
    let e = agent.run(&"why? ".repeat(2000)).unwrap_err().to_string();
    assert!(e.contains("more than the"), "{e}");
}

#[test]
fn six_hundred_turns_stay_inside_the_window_with_bounded_memory() {
    let window = 6144;
    let reserve = 512;
    let mut brain = Scripted::new(window, reserve, |turn, m, tools| {
        if !tools {
            assert_eq!(turn, 600);
            assert!(m.to_string().contains("Notes on your earlier turns"));
            return say("After 599 tool calls: the walrus operator [1].");
        }
        match turn % 3 {
            0 => call(
                "visit",
                json!({"id": format!("library/mod{}.html", turn % 40), "goal": format!("topic{} operator", turn % 40)}),
            ),
            1 => call("search", json!({"query": format!("topic{} operator walrus", turn % 40)})),
            _ => Reply {
                content: "Let me look further. ".repeat(20),
                ..call("search", json!({"query": format!("module {}", turn % 40)}))
            },
        }
    });
    let log_path = std::env::temp_dir().join(format!("nanbeige-agent-600-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&log_path);
    let mut agent = Agent {
        brain: &mut brain,
        tools: toolbox(false),
        cfg: cfg(600, reserve),
        log: Trajectory::open(Some(&log_path)).unwrap(),
    };
    let t = Instant::now();
    let out = agent.run("What does the walrus operator do?").unwrap();
    let took = t.elapsed();
    assert_eq!(out.stats.turns, 600);
    assert_eq!(out.stats.forced_final.as_deref(), Some("turn limit"));
    assert_eq!(out.stats.tool_calls.values().sum::<usize>(), 599);
    assert!(out.stats.max_prompt_tokens + reserve <= window, "{:?}", out.stats);
    assert!(brain.max_prompt + reserve <= window);
    assert!(out.stats.context.turns_dropped > 500, "{:?}", out.stats.context);
    assert!(out.stats.context.compactions < 200, "compaction should be rare (low-water mark): {:?}", out.stats.context);
    // Memory: what is sent (and held) is bounded by the window, not by the number of turns.
    assert!(brain.max_message_bytes < window * 6, "{} bytes", brain.max_message_bytes);
    assert!(out.stats.context_bytes_max < window * 8, "{} bytes held", out.stats.context_bytes_max);
    assert_eq!(out.citations[0].id, "library/walrus.html");
    let lines = std::fs::read_to_string(&log_path).unwrap().lines().count();
    assert_eq!(lines, 1 + 600 * 2 + 599 * 2 + out.stats.context.compactions + 1);
    eprintln!("600 turns in {took:?}; {:?}", out.stats.context);
    let _ = std::fs::remove_file(&log_path);
}
