//! `nanbeige chat`: a multi-turn REPL. The whole conversation is re-rendered with the chat
//! template each turn; the session's KV cache keeps the shared prefix, so only the new turn is
//! prefilled. Ctrl-C stops the reply being generated; Ctrl-D or /exit leaves.

use crate::run::{build_prompt, install_cancel, Printer};
use crate::{GenArgs, ModelArgs};
use anyhow::Result;
use clap::Args;
use nanbeige_engine::{generate, FinishReason, Session};
use nanbeige_engine::prompt::parse_reply;
use nanbeige_text::ToolCallItem;
use serde_json::{json, Value};
use std::io::{BufRead, IsTerminal, Write};
use std::sync::atomic::Ordering;

#[derive(Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub gen: GenArgs,
    /// Initial system prompt.
    #[arg(long)]
    pub system: Option<String>,
}

const HELP: &str = "commands: /reset (forget the conversation), /system TEXT (set the system prompt and reset), /exit";

pub fn chat(a: ChatArgs) -> Result<()> {
    let lm = a.model.load()?;
    if lm.template.is_none() {
        anyhow::bail!("this model has no chat template; use `nanbeige run --raw`");
    }
    let params = a.gen.params(&lm);
    let cancel = install_cancel();
    let mut session = Session::new(&lm);
    let mut system = a.system.clone();
    let mut history: Vec<Value> = vec![];
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!("chatting with {} — {HELP}; Ctrl-C stops a reply, Ctrl-D exits", lm.path.display());
    }
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            eprint!("> ");
            let _ = std::io::stderr().flush();
        }
        let Some(line) = lines.next() else { break };
        let line = line?;
        let input = line.trim();
        if input.is_empty() {
            continue;
        }
        if let Some(cmd) = input.strip_prefix('/') {
            let (name, arg) = cmd.split_once(' ').unwrap_or((cmd, ""));
            match name {
                "exit" | "quit" => break,
                "reset" => {
                    history.clear();
                    session.reset();
                    eprintln!("(conversation reset)");
                }
                "system" => {
                    system = if arg.trim().is_empty() { None } else { Some(arg.trim().to_string()) };
                    history.clear();
                    session.reset();
                    eprintln!("(system prompt set; conversation reset)");
                }
                _ => eprintln!("{HELP}"),
            }
            continue;
        }
        history.push(json!({"role": "user", "content": input}));
        let mut messages = vec![];
        if let Some(s) = &system {
            messages.push(json!({"role": "system", "content": s}));
        }
        messages.extend(history.iter().cloned());
        let prompt = match build_prompt(&lm, &Value::Array(messages), None) {
            Ok(p) => p,
            Err(e) => {
                history.pop();
                eprintln!("error: {e:#}");
                continue;
            }
        };
        cancel.store(false, Ordering::SeqCst);
        let mut printer = Printer::new(prompt.opened_think);
        let result = generate(&lm, &mut session, &prompt.ids, prompt.opened_think, &params, Some(&cancel), &mut |t| {
            printer.push(t)
        });
        printer.finish();
        println!();
        match result {
            Ok(g) => {
                if g.finish_reason == FinishReason::Cancelled {
                    eprintln!("(stopped)");
                }
                let parsed = parse_reply(&g.text, prompt.opened_think, false);
                let mut msg = json!({"role": "assistant", "content": parsed.content});
                if let Some(r) = parsed.reasoning {
                    msg["reasoning_content"] = json!(r);
                }
                let calls: Vec<Value> = parsed
                    .tool_calls
                    .iter()
                    .filter_map(|c| match c {
                        ToolCallItem::Call { name, arguments } => {
                            Some(json!({"type": "function", "function": {"name": name, "arguments": arguments}}))
                        }
                        ToolCallItem::Invalid { .. } => None,
                    })
                    .collect();
                if !calls.is_empty() {
                    msg["tool_calls"] = Value::Array(calls);
                }
                history.push(msg);
            }
            Err(e) => {
                history.pop();
                eprintln!("error: {e:#}");
            }
        }
    }
    Ok(())
}
