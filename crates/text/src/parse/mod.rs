//! Splits what the model generated into reasoning (`<think>…</think>`), the answer, and tool calls
//! (`<tool_call>{json}</tool_call>` blocks in the answer), for Nanbeige4.1 and Qwen-style output.
//!
//! Rules (shared by `parse_output` and the incremental `StreamParser`):
//! - Reasoning is the text of a `<think>` block that opens the output (leading whitespace allowed), or,
//!   when the prompt already ended with `<think>`, everything up to the first `</think>`. Without a
//!   `</think>` all of it is reasoning. Tags elsewhere are left in the text as written.
//! - Tool calls are parsed only from the answer. A block that is not a JSON object with a string
//!   `name` and object `arguments` (or a string holding one) becomes `ToolCallItem::Invalid`, as does
//!   a block that never closes. Nothing here panics on model output.
//! - Reasoning and answer are trimmed of surrounding whitespace; an empty reasoning is `None`.

mod stream;
mod tool_call;

pub use stream::{StreamEvent, StreamParser};

pub(crate) const THINK_OPEN: &str = "<think>";
pub(crate) const THINK_CLOSE: &str = "</think>";
pub(crate) const CALL_OPEN: &str = "<tool_call>";
pub(crate) const CALL_CLOSE: &str = "</tool_call>";

#[derive(Debug, Clone, PartialEq)]
pub struct ParsedOutput {
    pub reasoning: Option<String>,
    pub content: String,
    pub tool_calls: Vec<ToolCallItem>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ToolCallItem {
    Call {
        name: String,
        arguments: serde_json::Value,
    },
    /// A block that could not be read as a call: its text (between the tags, or to the end when
    /// unclosed) and why.
    Invalid { raw: String, error: String },
}

impl ToolCallItem {
    /// `{"name", "arguments"}` for a call, `{"error", "raw"}` for an unreadable block: how the CLI's
    /// `--json` output and the agent's trajectory log show a reply's calls.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            ToolCallItem::Call { name, arguments } => serde_json::json!({"name": name, "arguments": arguments}),
            ToolCallItem::Invalid { raw, error } => serde_json::json!({"error": error, "raw": raw}),
        }
    }
}

/// Parses a complete output. `prompt_opened_think`: the prompt already ended with `<think>`, so the
/// text starts inside the reasoning.
pub fn parse_output(text: &str, prompt_opened_think: bool) -> ParsedOutput {
    let (reasoning, answer) = split_reasoning(text, prompt_opened_think);
    let reasoning = reasoning
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_string);

    let mut content = String::new();
    let mut tool_calls = Vec::new();
    let mut rest = answer;
    while let Some(open) = rest.find(CALL_OPEN) {
        content.push_str(&rest[..open]);
        let body = &rest[open + CALL_OPEN.len()..];
        match body.find(CALL_CLOSE) {
            Some(close) => {
                tool_calls.push(tool_call::parse(&body[..close]));
                rest = &body[close + CALL_CLOSE.len()..];
            }
            None => {
                tool_calls.push(tool_call::unclosed(body));
                rest = "";
            }
        }
    }
    content.push_str(rest);
    ParsedOutput {
        reasoning,
        content: content.trim().to_string(),
        tool_calls,
    }
}

/// (reasoning, answer) before trimming.
fn split_reasoning(text: &str, prompt_opened_think: bool) -> (Option<&str>, &str) {
    let inside = if prompt_opened_think {
        text
    } else if let Some(after) = text.trim_start().strip_prefix(THINK_OPEN) {
        after
    } else {
        return (None, text);
    };
    match inside.find(THINK_CLOSE) {
        Some(end) => (Some(&inside[..end]), &inside[end + THINK_CLOSE.len()..]),
        None => (Some(inside), ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call(name: &str, arguments: serde_json::Value) -> ToolCallItem {
        ToolCallItem::Call {
            name: name.to_string(),
            arguments,
        }
    }

    #[test]
    fn think_then_answer() {
        let p = parse_output("<think>\nLet me see.\n</think>\n\nThe answer is 4.", false);
        assert_eq!(p.reasoning.as_deref(), Some("Let me see."));
        assert_eq!(p.content, "The answer is 4.");
        assert!(p.tool_calls.is_empty());
    }

    #[test]
    fn prompt_opened_think() {
        let p = parse_output("\nhmm\n</think>\n\nok", true);
        assert_eq!(p.reasoning.as_deref(), Some("hmm"));
        assert_eq!(p.content, "ok");
        // Without the flag, a bare </think> is just text.
        let p = parse_output("hmm</think>ok", false);
        assert_eq!((p.reasoning, p.content.as_str()), (None, "hmm</think>ok"));
    }

    #[test]
    fn unclosed_think_is_all_reasoning() {
        let p = parse_output("  <think>\nstill thinking <tool_call>", false);
        assert_eq!(p.reasoning.as_deref(), Some("still thinking <tool_call>"));
        assert_eq!(p.content, "");
        assert!(p.tool_calls.is_empty());
        let p = parse_output("thinking", true);
        assert_eq!(
            (p.reasoning.as_deref(), p.content.as_str()),
            (Some("thinking"), "")
        );
    }

    #[test]
    fn no_think_and_empty_think() {
        let p = parse_output("  Hello <think> there  ", false);
        assert_eq!(
            (p.reasoning, p.content.as_str()),
            (None, "Hello <think> there")
        );
        let p = parse_output("<think>\n\n</think>\n\nHi", false);
        assert_eq!((p.reasoning, p.content.as_str()), (None, "Hi"));
        assert_eq!(
            parse_output("", false),
            ParsedOutput {
                reasoning: None,
                content: String::new(),
                tool_calls: vec![]
            }
        );
    }

    #[test]
    fn multiple_tool_calls() {
        let text = "<think>need weather</think>\n\nChecking.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"北京\"}}\n</tool_call>";
        let p = parse_output(text, false);
        assert_eq!(p.reasoning.as_deref(), Some("need weather"));
        assert_eq!(p.content, "Checking.");
        assert_eq!(
            p.tool_calls,
            vec![
                call("get_weather", json!({"city": "Paris"})),
                call("get_weather", json!({"city": "北京"}))
            ]
        );
    }

    #[test]
    fn string_arguments() {
        let p = parse_output(
            "<tool_call>{\"name\": \"f\", \"arguments\": \"{\\\"a\\\": 1}\"}</tool_call>",
            false,
        );
        assert_eq!(p.tool_calls, vec![call("f", json!({"a": 1}))]);
        let p = parse_output("<tool_call>{\"name\": \"f\"}</tool_call>", false);
        assert_eq!(p.tool_calls, vec![call("f", json!({}))]);
    }

    #[test]
    fn malformed_and_unclosed_calls() {
        let p = parse_output("a <tool_call>{\"name\": \"f\", \"arguments\": {</tool_call> b <tool_call>{\"name\": \"g\"", false);
        assert_eq!(p.content, "a  b");
        assert_eq!(p.tool_calls.len(), 2);
        assert!(
            matches!(&p.tool_calls[0], ToolCallItem::Invalid { raw, .. } if raw == "{\"name\": \"f\", \"arguments\": {")
        );
        match &p.tool_calls[1] {
            ToolCallItem::Invalid { raw, error } => {
                assert_eq!(raw, "{\"name\": \"g\"");
                assert!(error.contains("unclosed"), "{error}");
            }
            other => panic!("{other:?}"),
        }
        // Output that ends right after a complete call (EOS instead of </tool_call>) is a call.
        let p = parse_output("<tool_call>\n{\"name\": \"g\", \"arguments\": {\"x\": 1}}\n", false);
        assert_eq!(p.tool_calls, vec![call("g", json!({"x": 1}))]);
        for bad in [
            "[1]",
            "{\"arguments\": {}}",
            "{\"name\": 3}",
            "{\"name\": \"f\", \"arguments\": [1]}",
            "{\"name\": \"f\", \"arguments\": \"nope\"}",
            "",
        ] {
            let p = parse_output(&format!("<tool_call>{bad}</tool_call>"), false);
            assert!(
                matches!(p.tool_calls[..], [ToolCallItem::Invalid { .. }]),
                "{bad}: {:?}",
                p.tool_calls
            );
        }
    }
}
