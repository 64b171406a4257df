//! Evaluation items: read from JSONL files in the common public layouts, or made by the built-in
//! generators, and turned into a chat prompt plus what the scorer needs.
//!
//! Accepted layouts, per task:
//! - math: GSM8K `{"question", "answer": "… #### 42"}`, or `{"problem"|"prompt", "answer"}`, or our
//!   chat records (`messages` with the user turn, `answer`);
//! - countdown: our records (`messages`, `numbers`, `target`);
//! - code: HumanEval `{"task_id", "prompt", "test", "entry_point"}`, MBPP `{"text", "test_list"}`,
//!   or our records (`messages`, `tests`, `entry_point`);
//! - mc: `{"question", "choices"|"options": [...], "answer": "B" | 1}`;
//! - tool: `{"messages"|"question", "tools": [OpenAI tool definitions], "expected": {"name",
//!   "arguments"}}` (also `answer` for `expected`).
//!
//! A line that is not valid JSON or lacks what its task needs is reported with its line number and
//! skipped; a file with no usable item is an error.

use crate::rng::stable_hash;
use crate::score::{gold_choice, gold_number, CodeTests};
use crate::tasks;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Math,
    Countdown,
    Code,
    Choice,
    Tool,
}

impl Kind {
    pub fn parse(s: &str) -> Result<Kind> {
        Ok(match s {
            "math" | "gsm8k" | "arith" | "add" | "add-compare" | "word" => Kind::Math,
            "countdown" => Kind::Countdown,
            "code" | "humaneval" | "mbpp" => Kind::Code,
            "mc" | "choice" | "multiple-choice" => Kind::Choice,
            "tool" | "tools" | "tool-call" => Kind::Tool,
            _ => bail!("unknown eval task {s:?} (math, countdown, code, mc, tool)"),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Math => "math",
            Kind::Countdown => "countdown",
            Kind::Code => "code",
            Kind::Choice => "mc",
            Kind::Tool => "tool",
        }
    }
}

/// What a generated task is scored as.
pub fn kind_of_generator(task: &str) -> Result<Kind> {
    Ok(match task {
        "arith" | "add" | "add-compare" | "word" => Kind::Math,
        "countdown" => Kind::Countdown,
        "code" => Kind::Code,
        _ => bail!("unknown generator {task:?} (one of: {})", tasks::TASKS.join(", ")),
    })
}

#[derive(Clone, Debug)]
pub struct Item {
    /// Stable id: the item's own `task_id`/`id`, else a hash of its prompt. The log is keyed by it.
    pub id: String,
    pub kind: Kind,
    /// The conversation to send (everything before the reference answer).
    pub messages: Value,
    pub tools: Option<Value>,
    pub gold: Gold,
}

#[derive(Clone, Debug)]
pub enum Gold {
    Number(String),
    Countdown { numbers: Vec<i64>, target: i64 },
    Code(CodeTests),
    Choice { letter: char, n: usize },
    Tool(Value),
}

pub fn load_file(path: &Path, kind: Kind) -> Result<Vec<Item>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut items = vec![];
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<Value>(line)
            .map_err(|e| anyhow::anyhow!("invalid JSON: {e}"))
            .and_then(|v| item(&v, kind));
        match parsed {
            Ok(it) => items.push(it),
            Err(e) => eprintln!("warning: {}:{}: skipped: {e:#}", path.display(), i + 1),
        }
    }
    if items.is_empty() {
        bail!("{}: no usable {} items", path.display(), kind.name());
    }
    Ok(items)
}

/// Held-out items from a built-in generator.
pub fn generated(task: &str, n: usize, seed: u64) -> Result<(Kind, Vec<Item>)> {
    generated_split(task, tasks::Split::Test, n, seed)
}

/// Items of either split from a built-in generator (RL trains on the train split).
pub fn generated_split(task: &str, split: tasks::Split, n: usize, seed: u64) -> Result<(Kind, Vec<Item>)> {
    let kind = kind_of_generator(task)?;
    let exs = tasks::generate(task, split, n, seed)?;
    let items = exs.iter().map(|e| item(&e.to_json(false), kind)).collect::<Result<Vec<_>>>()?;
    Ok((kind, items))
}

fn s<'a>(v: &'a Value, keys: &[&str]) -> Option<&'a str> {
    keys.iter().find_map(|k| v.get(*k).and_then(Value::as_str))
}

/// The prompt turns of a chat record: every message before the first assistant turn.
fn chat_prefix(v: &Value) -> Option<Value> {
    let msgs = v.get("messages")?.as_array()?;
    let prefix: Vec<Value> =
        msgs.iter().take_while(|m| m.get("role").and_then(Value::as_str) != Some("assistant")).cloned().collect();
    (!prefix.is_empty()).then_some(Value::Array(prefix))
}

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

pub fn item(v: &Value, kind: Kind) -> Result<Item> {
    let (messages, gold, tools) = match kind {
        Kind::Math => {
            let msgs =
                chat_prefix(v).or_else(|| s(v, &["question", "problem", "prompt"]).map(user)).context("no question")?;
            let gold = v.get("answer").and_then(gold_number).context("no numeric answer")?;
            (msgs, Gold::Number(gold), None)
        }
        Kind::Countdown => {
            let msgs = chat_prefix(v).context("no messages")?;
            let numbers: Vec<i64> =
                serde_json::from_value(v.get("numbers").cloned().context("no numbers")?).context("numbers")?;
            let target = v.get("target").and_then(Value::as_i64).context("no target")?;
            (msgs, Gold::Countdown { numbers, target }, None)
        }
        Kind::Code => {
            let tests =
                CodeTests::from_item(v).context("no tests (tests/test_list with asserts, or test + entry_point)")?;
            let msgs = if let Some(m) = chat_prefix(v) {
                m
            } else if let Some(text) = s(v, &["text"]) {
                // MBPP: the task plus the first test shows the expected name and signature.
                user(&format!("{text}\nYour code should pass this test:\n{}\nWrite the Python function in a ```python code block.", tests.tests[0]))
            } else if let Some(p) = s(v, &["prompt"]) {
                user(&format!("Complete this Python function. Reply with the whole function in a ```python code block.\n```python\n{p}```"))
            } else {
                bail!("no prompt")
            };
            (msgs, Gold::Code(tests), None)
        }
        Kind::Choice => {
            let q = s(v, &["question", "prompt"]).context("no question")?;
            let choices: Vec<String> = v
                .get("choices")
                .or_else(|| v.get("options"))
                .and_then(Value::as_array)
                .context("no choices")?
                .iter()
                .map(|c| c.as_str().map(String::from).unwrap_or_else(|| c.to_string()))
                .collect();
            if choices.len() < 2 || choices.len() > 26 {
                bail!("need 2 to 26 choices");
            }
            let letter = v.get("answer").and_then(gold_choice).context("answer is not a letter or index")?;
            if (letter as u8 - b'A') as usize >= choices.len() {
                bail!("answer {letter} is not one of the choices");
            }
            let opts: String =
                choices.iter().enumerate().map(|(i, c)| format!("{}. {c}\n", (b'A' + i as u8) as char)).collect();
            let msgs = user(&format!("{q}\n\n{opts}\nAnswer with the letter of the correct option."));
            (msgs, Gold::Choice { letter, n: choices.len() }, None)
        }
        Kind::Tool => {
            let msgs = chat_prefix(v)
                .or_else(|| s(v, &["question", "query", "prompt"]).map(user))
                .context("no messages or question")?;
            let tools =
                v.get("tools").filter(|t| t.as_array().is_some_and(|a| !a.is_empty())).cloned().context("no tools")?;
            let expected = v.get("expected").or_else(|| v.get("answer")).cloned().context("no expected call")?;
            if expected.get("name").and_then(Value::as_str).is_none() {
                bail!("the expected call has no name");
            }
            (msgs, Gold::Tool(expected), Some(tools))
        }
    };
    let id = ["task_id", "id"]
        .iter()
        .find_map(|k| match v.get(*k) {
            Some(Value::String(x)) => Some(x.clone()),
            Some(x @ Value::Number(_)) => Some(x.to_string()),
            _ => None,
        })
        .unwrap_or_else(|| format!("{:016x}", stable_hash(&messages.to_string())));
    Ok(Item { id, kind, messages, tools, gold })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_layouts_parse_and_bad_ones_are_rejected() {
        let gsm = json!({"question": "Q?", "answer": "blah\n#### 1,200"});
        let it = item(&gsm, Kind::Math).unwrap();
        assert!(matches!(&it.gold, Gold::Number(n) if n == "1200"));
        assert_eq!(it.messages[0]["content"], "Q?");
        let he = json!({"task_id": "HumanEval/0", "prompt": "def f(x):\n", "test": "def check(c):\n    assert c(1) == 1\n", "entry_point": "f"});
        let it = item(&he, Kind::Code).unwrap();
        assert_eq!(it.id, "HumanEval/0");
        let mbpp = json!({"task_id": 2, "text": "Write f.", "test_list": ["assert f(1) == 1"]});
        assert_eq!(item(&mbpp, Kind::Code).unwrap().id, "2");
        let mc = json!({"question": "2+2?", "choices": ["3", "4"], "answer": 1});
        assert!(matches!(item(&mc, Kind::Choice).unwrap().gold, Gold::Choice { letter: 'B', n: 2 }));
        assert!(item(&json!({"question": "x", "choices": ["a", "b"], "answer": "D"}), Kind::Choice).is_err());
        assert!(item(&json!({"question": "x"}), Kind::Math).is_err());
        assert!(item(&json!({"prompt": "x", "tools": [], "expected": {"name": "f"}}), Kind::Tool).is_err());
        let (k, items) = generated("code", 3, 1).unwrap();
        assert_eq!(k, Kind::Code);
        assert_eq!(items[0].messages.as_array().unwrap().len(), 1, "the reference answer is not sent");
    }
}
