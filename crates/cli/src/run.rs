//! `nanbeige run`: one prompt, one answer. Streams reasoning to stderr (dimmed on a terminal) and
//! the answer to stdout, or prints one JSON object with `--json`.

use crate::{GenArgs, ModelArgs};
use anyhow::{Context, Result};
use clap::Args;
use nanbeige_engine::prompt::{chat_prompt, parse_reply, raw_prompt, Prompt};
use nanbeige_engine::{generate, Generation, LoadedModel, Session};
use nanbeige_text::{StreamEvent, StreamParser, ToolCallItem};
use serde_json::{json, Value};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

#[derive(Args)]
pub struct RunArgs {
    /// The prompt (use `-` to read it from stdin).
    pub prompt: String,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub gen: GenArgs,
    /// System prompt.
    #[arg(long)]
    pub system: Option<String>,
    /// Plain completion of the prompt text: no chat template.
    #[arg(long)]
    pub raw: bool,
    /// Tools the model may call: a JSON file with an array of OpenAI-style tool definitions.
    #[arg(long)]
    pub tools: Option<PathBuf>,
    /// Print one JSON object (answer, reasoning, tool calls, token counts, timings) at the end.
    #[arg(long)]
    pub json: bool,
}

/// Ctrl-C sets this; generation loops check it between tokens.
pub fn install_cancel() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    // A second handler cannot be installed; ignore the error in that case.
    let _ = ctrlc::set_handler(move || f.store(true, Ordering::SeqCst));
    flag
}

pub fn read_json_file(path: &std::path::Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))
}

/// Prints streamed text: reasoning dimmed on stderr, answer and tool calls on stdout.
pub struct Printer {
    parser: StreamParser,
    color: bool,
    in_reasoning: bool,
}

impl Printer {
    pub fn new(opened_think: bool) -> Self {
        Self { parser: StreamParser::new(opened_think), color: std::io::stderr().is_terminal(), in_reasoning: false }
    }

    pub fn push(&mut self, text: &str) {
        let events = self.parser.push(text);
        self.show(events);
    }

    pub fn finish(&mut self) {
        let events = self.parser.finish();
        self.show(events);
        self.end_reasoning();
        let _ = std::io::stdout().flush();
    }

    fn end_reasoning(&mut self) {
        if self.in_reasoning {
            self.in_reasoning = false;
            let mut e = std::io::stderr();
            let _ = write!(e, "{}\n", if self.color { "\x1b[0m" } else { "" });
            let _ = e.flush();
        }
    }

    fn show(&mut self, events: Vec<StreamEvent>) {
        for ev in events {
            match ev {
                StreamEvent::Reasoning(t) => {
                    let mut e = std::io::stderr();
                    if !self.in_reasoning {
                        self.in_reasoning = true;
                        let _ = write!(e, "{}[thinking] ", if self.color { "\x1b[2m" } else { "" });
                    }
                    let _ = write!(e, "{t}");
                    let _ = e.flush();
                }
                StreamEvent::Content(t) => {
                    self.end_reasoning();
                    let mut o = std::io::stdout();
                    let _ = write!(o, "{t}");
                    let _ = o.flush();
                }
                StreamEvent::ToolCall(call) => {
                    self.end_reasoning();
                    println!("\n{}", tool_call_line(&call));
                }
                #[allow(unreachable_patterns)]
                _ => {}
            }
        }
    }
}

pub fn tool_call_line(call: &ToolCallItem) -> String {
    match call {
        ToolCallItem::Call { name, arguments } => format!("[tool call] {name} {arguments}"),
        ToolCallItem::Invalid { raw, error } => format!("[invalid tool call: {error}] {raw}"),
    }
}

pub fn build_prompt(lm: &LoadedModel, messages: &Value, tools: Option<&Value>) -> Result<Prompt> {
    chat_prompt(&lm.text, lm.template.as_ref(), messages, tools, true)
}

pub fn run(a: RunArgs) -> Result<()> {
    let prompt_text = if a.prompt == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).context("reading the prompt from stdin")?;
        s
    } else {
        a.prompt.clone()
    };
    let tools = a.tools.as_deref().map(read_json_file).transpose()?;
    let t_load = Instant::now();
    let lm = a.model.load()?;
    let load_ms = t_load.elapsed().as_secs_f64() * 1e3;
    let prompt = if a.raw {
        raw_prompt(&lm.text, &prompt_text)?
    } else {
        let mut messages = vec![];
        if let Some(s) = &a.system {
            messages.push(json!({"role": "system", "content": s}));
        }
        messages.push(json!({"role": "user", "content": prompt_text}));
        build_prompt(&lm, &Value::Array(messages), tools.as_ref())?
    };
    let params = a.gen.params(&lm);
    let cancel = install_cancel();
    let mut session = Session::new(&lm);
    let mut printer = Printer::new(prompt.opened_think);
    let gen: Generation = if a.json {
        generate(&lm, &mut session, &prompt.ids, prompt.opened_think, &params, Some(&cancel), &mut |_| {})?
    } else if a.raw && !prompt.opened_think {
        let g = generate(&lm, &mut session, &prompt.ids, false, &params, Some(&cancel), &mut |t| {
            print!("{t}");
            let _ = std::io::stdout().flush();
        })?;
        println!();
        g
    } else {
        let g = generate(&lm, &mut session, &prompt.ids, prompt.opened_think, &params, Some(&cancel), &mut |t| {
            printer.push(t)
        })?;
        printer.finish();
        println!();
        g
    };
    if a.json {
        let parsed = parse_reply(&gen.text, prompt.opened_think, tools.is_some());
        let (answer, reasoning, calls) = (parsed.content, parsed.reasoning, parsed.tool_calls);
        let out = json!({
            "model": lm.path.display().to_string(),
            "answer": answer,
            "reasoning": reasoning,
            "tool_calls": Value::Array(calls.iter().map(ToolCallItem::to_json).collect()),
            "text": gen.text,
            "finish_reason": gen.finish_reason,
            "stop_string": gen.stop_string,
            "thinking_budget_hit": gen.thinking_budget_hit,
            "context_full": gen.context_full,
            "seed": gen.seed,
            "usage": {
                "prompt_tokens": gen.prompt_tokens,
                "completion_tokens": gen.completion_tokens,
                "reasoning_tokens": gen.reasoning_tokens,
            },
            "timings": {
                "load_ms": load_ms,
                "prefill_ms": gen.prefill_ms,
                "time_to_first_token_ms": gen.time_to_first_token_ms,
                "decode_ms": gen.decode_ms,
                "prefill_tokens_per_sec": gen.prefill_tokens_per_sec(),
                "decode_tokens_per_sec": gen.decode_tokens_per_sec(),
            },
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else if std::io::stderr().is_terminal() {
        eprintln!(
            "[{} prompt + {} generated tokens, {:.1} tok/s, finish: {:?}]",
            gen.prompt_tokens,
            gen.completion_tokens,
            gen.decode_tokens_per_sec(),
            gen.finish_reason
        );
    }
    Ok(())
}
