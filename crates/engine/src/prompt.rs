//! Turning a conversation (OpenAI-style messages, optional tools) into prompt token ids with the
//! model's chat template, or plain text into ids for raw completion. Shared by CLI, server, agent.

use anyhow::{bail, Result};
use nanbeige_text::{ChatTemplate, TextAssets};
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
