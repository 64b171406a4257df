//! The conversation the agent keeps for its model, held inside the context window over hundreds of
//! turns: the last few turns' tool results stay whole; when the prompt would pass the high-water
//! mark, older results are condensed to a line (their full text is freed), then the oldest turns are
//! dropped into a running summary of notes (queries made, sources seen, what was found), and when
//! those notes pass their own budget the oldest notes go too. Compaction goes down to a low-water
//! mark so it happens rarely, which keeps the engine's cached prompt prefix valid between turns.
//!
//! Not here: token counting (the brain does it exactly), deciding to force the final answer
//! (agent.rs).

use crate::tools::approx_tokens;
use anyhow::Result;
use serde_json::{json, Value};
use std::collections::VecDeque;

pub struct ToolMsg {
    pub call_id: String,
    pub name: String,
    /// Full result text; emptied once condensed.
    pub text: String,
    pub condensed: String,
}

pub struct Turn {
    pub n: usize,
    /// The assistant message as it goes back to the model (content and tool_calls).
    pub assistant: Value,
    pub results: Vec<ToolMsg>,
    /// Error text for a reply whose tool calls could not be read (sent as a user message).
    pub feedback: Option<String>,
    /// One line for the running summary when the turn is dropped.
    pub note: String,
    condensed: bool,
}

impl Turn {
    pub fn new(n: usize, assistant: Value, results: Vec<ToolMsg>, feedback: Option<String>, note: String) -> Self {
        Self { n, assistant, results, feedback, note, condensed: false }
    }
}

#[derive(Default, Debug, Clone, Copy, serde::Serialize)]
pub struct CompactStats {
    pub compactions: usize,
    pub turns_condensed: usize,
    pub turns_dropped: usize,
    pub notes_dropped: usize,
}

pub struct Context {
    pub system: String,
    pub question: String,
    turns: VecDeque<Turn>,
    notes: VecDeque<String>,
    notes_tokens: usize,
    /// Turns whose results are never condensed while older ones remain.
    pub keep_whole: usize,
    /// Token budget of the running summary.
    pub notes_budget: usize,
    pub stats: CompactStats,
}

impl Context {
    pub fn new(system: String, question: String, keep_whole: usize, notes_budget: usize) -> Self {
        Self {
            system,
            question,
            turns: VecDeque::new(),
            notes: VecDeque::new(),
            notes_tokens: 0,
            keep_whole,
            notes_budget,
            stats: CompactStats::default(),
        }
    }

    pub fn push(&mut self, turn: Turn) {
        self.turns.push_back(turn);
    }

    pub fn turns_held(&self) -> usize {
        self.turns.len()
    }

    /// Bytes of text held (for memory-boundedness checks).
    pub fn held_bytes(&self) -> usize {
        let t: usize = self
            .turns
            .iter()
            .map(|t| {
                t.assistant.to_string().len()
                    + t.results.iter().map(|r| r.text.len() + r.condensed.len()).sum::<usize>()
                    + t.note.len()
            })
            .sum();
        t + self.notes.iter().map(String::len).sum::<usize>() + self.question.len() + self.system.len()
    }

    /// The messages for the next prompt, plus an optional closing user message.
    pub fn messages(&self, closing: Option<&str>) -> Value {
        let mut msgs = vec![json!({"role": "system", "content": self.system})];
        let mut first = self.question.clone();
        if !self.notes.is_empty() {
            first.push_str("\n\nNotes on your earlier turns (their full results were removed to save space):\n");
            for n in &self.notes {
                first.push_str("- ");
                first.push_str(n);
                first.push('\n');
            }
        }
        msgs.push(json!({"role": "user", "content": first.trim_end()}));
        for t in &self.turns {
            msgs.push(t.assistant.clone());
            for r in &t.results {
                let content = if t.condensed { format!("[condensed] {}", r.condensed) } else { r.text.clone() };
                msgs.push(json!({"role": "tool", "tool_call_id": r.call_id, "name": r.name, "content": content}));
            }
            if let Some(f) = &t.feedback {
                msgs.push(json!({"role": "user", "content": f}));
            }
        }
        if let Some(c) = closing {
            msgs.push(json!({"role": "user", "content": c}));
        }
        Value::Array(msgs)
    }

    /// Make the prompt fit: if `count(messages)` is over `limit`, condense and drop down to `target`
    /// (or as far as possible). Returns the final token count; above `limit` means even the most
    /// compact form does not fit.
    pub fn fit(
        &mut self,
        limit: usize,
        target: usize,
        closing: Option<&str>,
        count: &mut dyn FnMut(&Value) -> Result<usize>,
    ) -> Result<usize> {
        let mut n = count(&self.messages(closing))?;
        if n <= limit {
            return Ok(n);
        }
        self.stats.compactions += 1;
        while n > target {
            if !self.shrink_once() {
                break;
            }
            n = count(&self.messages(closing))?;
        }
        Ok(n)
    }

    /// One step of compaction; false when nothing is left to shrink.
    fn shrink_once(&mut self) -> bool {
        let len = self.turns.len();
        // 1. Condense the oldest whole turn outside the protected tail; if only the tail is left,
        //    condense it too except the newest turn.
        let protected = self.keep_whole.min(len.saturating_sub(1)).max(1);
        for pass_limit in [len.saturating_sub(protected), len.saturating_sub(1)] {
            if let Some(t) = self.turns.iter_mut().take(pass_limit).find(|t| !t.condensed) {
                t.condensed = true;
                for r in &mut t.results {
                    r.text = String::new();
                }
                self.stats.turns_condensed += 1;
                return true;
            }
        }
        // 2. Drop the oldest turn into the notes.
        if len > 1 {
            let t = self.turns.pop_front().expect("len > 1");
            self.add_note(format!("turn {}: {}", t.n, t.note));
            self.stats.turns_dropped += 1;
            return true;
        }
        // 3. Drop the oldest notes.
        if let Some(old) = self.notes.pop_front() {
            self.notes_tokens -= approx_tokens(&old);
            self.stats.notes_dropped += 1;
            return true;
        }
        false
    }

    fn add_note(&mut self, note: String) {
        self.notes_tokens += approx_tokens(&note);
        self.notes.push_back(note);
        while self.notes_tokens > self.notes_budget && self.notes.len() > 1 {
            let old = self.notes.pop_front().expect("len > 1");
            self.notes_tokens -= approx_tokens(&old);
            self.stats.notes_dropped += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(n: usize, size: usize) -> Turn {
        let assistant = json!({"role": "assistant", "content": "", "tool_calls": [{"id": format!("c{n}"), "type": "function", "function": {"name": "search", "arguments": {"query": format!("q{n}")}}}]});
        let results = vec![ToolMsg {
            call_id: format!("c{n}"),
            name: "search".into(),
            text: "word ".repeat(size),
            condensed: format!("result {n}"),
        }];
        Turn::new(n, assistant, results, None, format!("search q{n}"))
    }

    fn count(m: &Value) -> Result<usize> {
        Ok(approx_tokens(&m.to_string()))
    }

    #[test]
    fn compaction_condenses_old_turns_first_then_drops_into_notes() {
        let mut c = Context::new("sys".into(), "question?".into(), 2, 200);
        for n in 1..=6 {
            c.push(turn(n, 200));
        }
        let full = count(&c.messages(None)).unwrap();
        let limit = full - 10;
        let got = c.fit(limit, limit * 8 / 10, None, &mut count).unwrap();
        assert!(got <= limit * 8 / 10, "{got} > target");
        let m = c.messages(None);
        let s = m.to_string();
        // The newest two turns stay whole.
        assert!(s.contains(&"word ".repeat(200)));
        assert!(s.contains("[condensed] result 1") || s.contains("turn 1: search q1"), "{s}");
        assert_eq!(c.stats.compactions, 1);
        assert!(c.stats.turns_condensed >= 1);
        // Condensing freed the text.
        assert!(c.held_bytes() < 6 * 1000);
    }

    #[test]
    fn when_even_condensed_turns_do_not_fit_they_become_notes() {
        let mut c = Context::new("sys".into(), "question?".into(), 3, 40);
        for n in 1..=30 {
            c.push(turn(n, 50));
        }
        let got = c.fit(300, 250, Some("answer now"), &mut count).unwrap();
        assert!(got <= 250, "{got}");
        assert!(c.turns_held() < 30);
        let s = c.messages(Some("answer now")).to_string();
        assert!(s.contains("Notes on your earlier turns"));
        assert!(s.ends_with("{\"content\":\"answer now\",\"role\":\"user\"}]") || s.contains("answer now"));
        assert!(c.stats.notes_dropped > 0, "the note budget is small");
    }
}
