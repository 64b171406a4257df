//! Turning a conversation (OpenAI-style messages, optional tools) into prompt token ids with the
//! model's chat template, or plain text into ids for raw completion. Shared by CLI, server, agent.

use anyhow::{bail, Result};
use nanbeige_text::{parse_output, ChatTemplate, ParsedOutput, TextAssets, ToolCallItem};
use serde_json::Value;

pub struct Prompt {
    pub text: String,
    pub ids: Vec<u32>,
    /// The rendered prompt leaves the model inside `<think>`.
    pub opened_think: bool,
}

/// Render and tokenize a chat. Templates carry their own BOS/special tokens, so no BOS is added
/// (as transformers' apply_chat_template(tokenize=True) does).
pub fn chat_prompt(
    text: &TextAssets,
    template: Option<&ChatTemplate>,
    messages: &Value,
    tools: Option<&Value>,
    add_generation_prompt: bool,
) -> Result<Prompt> {
    let Some(template) = template else {
        bail!("this model has no chat template; use raw completion (--raw) instead");
    };
    if !messages.as_array().is_some_and(|m| !m.is_empty()) {
        bail!("messages must be a non-empty array");
    }
    let tools = tools.filter(|t| t.as_array().is_some_and(|a| !a.is_empty()));
    let rendered = template.render(messages, tools, add_generation_prompt, None)?;
    let ids = text.tokenizer.encode(&rendered, false)?;
    Ok(Prompt { opened_think: crate::generate::prompt_opens_think(&rendered), text: rendered, ids })
}

/// Plain completion: the text as given, with BOS if the tokenizer adds one.
pub fn raw_prompt(text: &TextAssets, prompt: &str) -> Result<Prompt> {
    let ids = text.tokenizer.encode(prompt, true)?;
    if ids.is_empty() {
        bail!("the prompt is empty");
    }
    Ok(Prompt { opened_think: crate::generate::prompt_opens_think(prompt), text: prompt.to_string(), ids })
}

/// Split a reply into reasoning, answer and tool calls. When tools were offered and the model
/// answered with nothing but a bare `{"name": …, "arguments": …}` object (small models often drop
/// the `<tool_call>` tags), that object is taken as the call rather than left in the content.
pub fn parse_reply(text: &str, opened_think: bool, tools_offered: bool) -> ParsedOutput {
    let mut parsed = parse_output(text, opened_think);
    if tools_offered && parsed.tool_calls.is_empty() {
        if let Ok(Value::Object(o)) = serde_json::from_str::<Value>(parsed.content.trim()) {
            let name = o.get("name").and_then(Value::as_str);
            let args = match o.get("arguments") {
                Some(Value::String(s)) => serde_json::from_str(s).ok(),
                Some(v @ Value::Object(_)) => Some(v.clone()),
                _ => None,
            };
            if let (Some(name), Some(arguments)) = (name, args) {
                parsed.tool_calls.push(ToolCallItem::Call { name: name.to_string(), arguments });
                parsed.content.clear();
            }
        }
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_json_call_is_taken_only_when_tools_were_offered() {
        let text = "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}";
        let p = parse_reply(text, false, true);
        assert!(p.content.is_empty());
        assert!(matches!(&p.tool_calls[..], [ToolCallItem::Call { name, arguments }]
            if name == "get_weather" && arguments["city"] == "Paris"));
        assert!(parse_reply(text, false, false).tool_calls.is_empty());
        let p = parse_reply("{\"name\": \"x\"}", false, true);
        assert!(p.tool_calls.is_empty(), "no arguments, not a call");
        let p = parse_reply("{\"name\": \"f\", \"arguments\": \"{\\\"a\\\": 1}\"}", false, true);
        assert_eq!(p.tool_calls.len(), 1);
    }
}
