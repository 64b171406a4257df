//! The agent loop: the model plans, calls tools in its native format, reads the results and goes
//! on until it answers (a reply without tool calls) or the turn/context limit forces a final answer
//! (tools withdrawn, an instruction to answer from what it has). Malformed calls, unknown tools,
//! tool errors and timeouts go back to the model as results and the loop continues. The answer's
//! numbered citations [n] are checked against the sources the tools actually showed, and those
//! cited are listed at the end.
//!
//! Not here: keeping the prompt inside the window (context.rs), the tools (tools.rs), the model
//! (brain.rs), the log format (trajectory.rs).

use crate::brain::{since_ms, Brain, Reply};
use crate::context::{CompactStats, Context, ToolMsg, Turn};
use crate::tools::{render, Source, Sources, ToolResult, Toolbox};
use crate::trajectory::Trajectory;
use anyhow::{bail, Result};
use nanbeige_text::ToolCallItem;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

pub const DEFAULT_SYSTEM: &str = "You are a research assistant. Do not answer from memory: first call the search tool, then answer from what the tools return. Search for relevant documents, visit the most promising ones with a clear goal, and search again with other keywords when the results are not enough. Sources are numbered [1], [2], … in the tool results. When you know the answer, reply without calling a tool: give a concise answer and cite the sources you used with their numbers, like [1].";

pub const FINAL_INSTRUCTION: &str = "Stop searching now: no more tool calls. Answer the original question with what you found, concisely, citing the numbered sources you used like [1]. If you did not find the answer, say so.";

#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub max_turns: usize,
    /// Most tokens the model may write in one turn (reserved in the window).
    pub max_reply_tokens: usize,
    /// Turns whose tool results stay whole while older ones are condensed.
    pub keep_whole: usize,
    pub system: String,
    /// Progress lines on stderr.
    pub progress: bool,
    /// The first reply must call the first tool, search (small models otherwise answer from memory).
    pub search_first: bool,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            max_turns: 100,
            max_reply_tokens: 1024,
            keep_whole: 3,
            system: DEFAULT_SYSTEM.into(),
            progress: false,
            search_first: true,
        }
    }
}

#[derive(Default, Debug, Clone, Serialize)]
pub struct Stats {
    pub turns: usize,
    pub tool_calls: BTreeMap<String, usize>,
    pub tool_errors: usize,
    pub tool_timeouts: usize,
    pub malformed_calls: usize,
    /// Why the final answer was forced: "turn limit" or "context limit"; None when the model chose to answer.
    pub forced_final: Option<String>,
    pub window: usize,
    pub max_prompt_tokens: usize,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub context: CompactStats,
    /// Most bytes of conversation text the context held at once (bounded by the window, not by the turns).
    pub context_bytes_max: usize,
    pub model_ms: f64,
    pub tool_ms: f64,
    pub wall_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub question: String,
    pub answer: String,
    /// Sources the answer cites that the tools did show, in order of first citation.
    pub citations: Vec<Source>,
    /// Citation numbers in the answer that match no source.
    pub invalid_citations: Vec<usize>,
    /// Every source the tools showed.
    pub sources_seen: usize,
    pub stats: Stats,
}

impl Outcome {
    /// The answer with its cited sources listed below it.
    pub fn display(&self) -> String {
        let mut s = self.answer.trim().to_string();
        if !self.citations.is_empty() {
            s.push_str("\n\nSources:\n");
            for c in &self.citations {
                let loc = if c.source.is_empty() || c.source == c.id {
                    c.id.clone()
                } else {
                    format!("{} ({})", c.id, c.source)
                };
                s.push_str(&format!("[{}] {} — {}\n", c.n, c.title, loc));
            }
        }
        s.trim_end().to_string()
    }
}

pub struct Agent<'a> {
    pub brain: &'a mut dyn Brain,
    pub tools: Arc<Toolbox>,
    pub cfg: AgentConfig,
    pub log: Trajectory,
}

impl Agent<'_> {
    pub fn run(&mut self, question: &str) -> Result<Outcome> {
        let question = question.trim();
        if question.is_empty() {
            bail!("the question is empty");
        }
        if self.cfg.max_turns == 0 {
            bail!("--max-turns must be at least 1");
        }
        let t0 = Instant::now();
        let window = self.brain.window();
        let reserve = self.cfg.max_reply_tokens.min(window / 2);
        let limit = window - reserve;
        // Compaction goes down to here, so it happens rarely.
        let target = limit * 3 / 4;
        let schemas = self.tools.schemas();
        let mut ctx = Context::new(self.cfg.system.clone(), question.to_string(), self.cfg.keep_whole, limit / 8);
        let mut sources = Sources::default();
        let mut stats = Stats { window, ..Stats::default() };
        self.log.event(
            "run_start",
            0,
            json!({"schema": crate::trajectory::SCHEMA_VERSION, "question": question, "brain": self.brain.describe(), "tools": schemas,
                   "config": {"max_turns": self.cfg.max_turns, "max_reply_tokens": self.cfg.max_reply_tokens, "keep_whole": self.cfg.keep_whole, "window": window, "system": self.cfg.system},
                   "unix_time": Trajectory::unix_time()}),
        )?;

        let mut answer: Option<String> = None;
        for turn in 1..=self.cfg.max_turns {
            stats.turns = turn;
            let mut forced = (turn == self.cfg.max_turns).then(|| "turn limit".to_string());
            let (messages, prompt_tokens) = loop {
                let tools = if forced.is_some() { None } else { Some(&schemas) };
                let closing = forced.as_ref().map(|_| FINAL_INSTRUCTION);
                let before = ctx.stats;
                let brain = &mut *self.brain;
                let n = ctx.fit(limit, target, closing, &mut |m| brain.count_tokens(m, tools))?;
                if ctx.stats.compactions != before.compactions {
                    self.log.event("context", turn, json!({"action": "compact", "prompt_tokens_after": n, "limit": limit, "target": target,
                        "turns_condensed": ctx.stats.turns_condensed - before.turns_condensed, "turns_dropped": ctx.stats.turns_dropped - before.turns_dropped,
                        "notes_dropped": ctx.stats.notes_dropped - before.notes_dropped, "turns_held": ctx.turns_held()}))?;
                }
                if n <= limit {
                    break (ctx.messages(closing), n);
                }
                if forced.is_some() {
                    bail!("the question and the final instruction alone take {n} tokens, more than the {limit} the context leaves for a prompt");
                }
                // Not even the most compact history fits with the tool definitions: answer now.
                forced = Some("context limit".into());
            };
            stats.max_prompt_tokens = stats.max_prompt_tokens.max(prompt_tokens);
            let tools = if forced.is_some() { None } else { Some(&schemas) };
            self.log.event("prompt", turn, json!({"messages": messages, "tools_offered": tools.is_some(), "prompt_tokens": prompt_tokens, "forced_final": forced}))?;
            if self.cfg.progress {
                let what = forced.as_ref().map(|f| format!(" (final answer forced: {f})")).unwrap_or_default();
                eprintln!("[turn {turn}/{}] thinking on {prompt_tokens} prompt tokens{what}…", self.cfg.max_turns);
            }
            let t = Instant::now();
            let reply = self.brain.reply(
                &messages,
                tools,
                self.cfg.max_reply_tokens,
                turn == 1 && self.cfg.search_first && tools.is_some(),
            )?;
            let model_ms = since_ms(t);
            stats.model_ms += model_ms;
            stats.prompt_tokens += reply.prompt_tokens;
            stats.completion_tokens += reply.completion_tokens;
            self.log.event("model_output", turn, json!({"text": reply.text, "content": reply.content, "reasoning": reply.reasoning,
                "tool_calls": Value::Array(reply.tool_calls.iter().map(ToolCallItem::to_json).collect()), "prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
                "finish_reason": reply.finish, "ms": model_ms}))?;

            if forced.is_some() || reply.tool_calls.is_empty() {
                if forced.is_none() && reply.content.trim().is_empty() {
                    // An empty reply is neither an answer nor a call: say so and go on.
                    let fb = "Your reply was empty. Call a tool, or answer the question citing sources like [1].";
                    ctx.push(Turn::new(
                        turn,
                        json!({"role": "assistant", "content": ""}),
                        vec![],
                        Some(fb.into()),
                        "empty reply".into(),
                    ));
                    continue;
                }
                stats.forced_final = forced;
                answer = Some(reply.content.trim().to_string());
                if self.cfg.progress {
                    eprintln!(
                        "[turn {turn}/{}] answered ({} tokens, {:.1} s)",
                        self.cfg.max_turns,
                        reply.completion_tokens,
                        model_ms / 1e3
                    );
                }
                break;
            }
            let turn_rec = self.act(turn, &reply, &mut sources, &mut stats)?;
            ctx.push(turn_rec);
            stats.context_bytes_max = stats.context_bytes_max.max(ctx.held_bytes());
        }
        let answer = answer.unwrap_or_default();
        let (citations, invalid_citations) = check_citations(&answer, &sources);
        stats.context = ctx.stats;
        stats.wall_ms = since_ms(t0);
        let out = Outcome {
            question: question.into(),
            answer,
            citations,
            invalid_citations,
            sources_seen: sources.list.len(),
            stats,
        };
        self.log.event(
            "final",
            out.stats.turns,
            json!({"answer": out.answer, "citations": out.citations, "invalid_citations": out.invalid_citations,
            "sources": sources.list, "stats": out.stats}),
        )?;
        Ok(out)
    }

    /// Run the reply's tool calls and build the turn that records them.
    fn act(&mut self, turn: usize, reply: &Reply, sources: &mut Sources, stats: &mut Stats) -> Result<Turn> {
        let mut calls = vec![];
        let mut results = vec![];
        let mut errors = vec![];
        let mut notes = vec![];
        for (i, call) in reply.tool_calls.iter().enumerate() {
            let (name, args) = match call {
                ToolCallItem::Call { name, arguments } => (name, arguments),
                ToolCallItem::Invalid { raw, error } => {
                    stats.malformed_calls += 1;
                    errors.push(format!(
                        "Your tool call could not be read ({error}): {}",
                        raw.chars().take(300).collect::<String>()
                    ));
                    self.log.event(
                        "tool_call",
                        turn,
                        json!({"index": i, "malformed": true, "error": error, "raw": raw}),
                    )?;
                    notes.push("a malformed tool call".to_string());
                    continue;
                }
            };
            let id = format!("call_{turn}_{i}");
            calls.push(json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}}));
            *stats.tool_calls.entry(name.clone()).or_default() += 1;
            self.log.event("tool_call", turn, json!({"id": id, "name": name, "arguments": args}))?;
            if self.cfg.progress {
                eprintln!("[turn {turn}/{}] {name} {}", self.cfg.max_turns, brief_args(args));
            }
            let t = Instant::now();
            let res = self.tools.execute_with_timeout(name, args);
            let ms = since_ms(t);
            stats.tool_ms += ms;
            let (text, condensed, cited, error) = match &res {
                Ok(r) => {
                    let out = render(r, &self.tools.budgets, Some(&mut *sources));
                    (out.text, out.condensed, out.cited, None)
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    stats.tool_errors += 1;
                    if msg.contains("timed out") {
                        stats.tool_timeouts += 1;
                    }
                    let text = format!("error: {msg}");
                    (text.clone(), text, vec![], Some(msg))
                }
            };
            if self.cfg.progress {
                let summary = match (&res, &error) {
                    (Ok(ToolResult::Search { hits, .. }), _) => format!("{} results", hits.len()),
                    (Ok(ToolResult::Visit { page, shown_sections, total_sections, .. }), _) => {
                        format!("{} ({shown_sections}/{total_sections} sections)", page.title)
                    }
                    (Ok(ToolResult::Python(o)), _) => format!(
                        "exit {:?}{}",
                        o.exit_code,
                        o.killed_reason.as_ref().map(|r| format!(", {r}")).unwrap_or_default()
                    ),
                    (_, Some(e)) => format!("error: {}", e.chars().take(120).collect::<String>()),
                    _ => String::new(),
                };
                eprintln!("    → {summary} ({ms:.0} ms)");
            }
            self.log.event("tool_result", turn, json!({"id": id, "name": name, "ok": error.is_none(), "error": error, "content": text, "cited": cited, "ms": ms}))?;
            notes.push(condensed.clone());
            results.push(ToolMsg { call_id: id, name: name.clone(), text, condensed });
        }
        // What the model said besides the calls stays (cut: it is often long reasoning).
        let content: String = reply.content.chars().take(1500).collect();
        let mut assistant = json!({"role": "assistant", "content": content});
        if !calls.is_empty() {
            assistant["tool_calls"] = Value::Array(calls);
        }
        let feedback = (!errors.is_empty()).then(|| {
            format!(
                "{}\nWrite one <tool_call> block holding a JSON object with \"name\" and \"arguments\".",
                errors.join("\n")
            )
        });
        Ok(Turn::new(turn, assistant, results, feedback, notes.join(" | ")))
    }
}

fn brief_args(args: &Value) -> String {
    let s = match args {
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().map(|s| format!("{s:?}")).unwrap_or_else(|| v.to_string())))
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    };
    let s = s.replace('\n', "\\n");
    if s.chars().count() > 160 {
        format!("{}…", s.chars().take(160).collect::<String>())
    } else {
        s
    }
}

/// Citation numbers in the text: `[3]`, `[1, 2]`, `[1][4]`, `[2-4]`.
pub fn citation_numbers(text: &str) -> Vec<usize> {
    let mut out = vec![];
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'[' {
            if let Some(end) = text[i + 1..].find(']') {
                let inner = &text[i + 1..i + 1 + end];
                let valid = !inner.is_empty()
                    && inner.len() < 40
                    && inner.chars().all(|c| c.is_ascii_digit() || matches!(c, ',' | ' ' | '-' | '–'));
                if valid {
                    for part in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                        let range: Vec<&str> = part.split(['-', '–']).map(str::trim).collect();
                        match range[..] {
                            [a] => out.extend(a.parse::<usize>().ok()),
                            [a, z] => {
                                if let (Ok(a), Ok(z)) = (a.parse::<usize>(), z.parse::<usize>()) {
                                    if a <= z && z - a < 20 {
                                        out.extend(a..=z);
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                    i += end + 2;
                    continue;
                }
            }
        }
        i += 1;
    }
    out
}

fn check_citations(answer: &str, sources: &Sources) -> (Vec<Source>, Vec<usize>) {
    let (mut ok, mut bad): (Vec<Source>, Vec<usize>) = (vec![], vec![]);
    for n in citation_numbers(answer) {
        match sources.get(n) {
            Some(s) if !ok.iter().any(|o| o.n == n) => ok.push(s.clone()),
            Some(_) => {}
            None if !bad.contains(&n) => bad.push(n),
            None => {}
        }
    }
    (ok, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn citation_forms() {
        assert_eq!(citation_numbers("a [1] b [2, 3] c [4][5] d [6-8] e [x] [] [9"), vec![1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            citation_numbers("list[0] and arr[12]"),
            vec![0, 12],
            "digits in brackets are read; unknown numbers are flagged later"
        );
    }
}
