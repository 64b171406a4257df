//! The model behind the agent, as a `Brain`: given the messages and the tools, reply with text
//! and/or tool calls, and count a prompt's tokens exactly. Two kinds: the in-process engine
//! (`EngineBrain`, the chat template renders the tools in the model's native format and the reply is
//! parsed back into calls), and any OpenAI-compatible chat-completions endpoint (`EndpointBrain`,
//! e.g. `nanbeige serve`, or the real Nanbeige4.1-3B served elsewhere).
//!
//! Not here: the loop (agent.rs). Scripted brains for tests live in the tests.

use anyhow::{anyhow, bail, Context, Result};
use nanbeige_engine::prompt::{chat_prompt, parse_reply};
use nanbeige_engine::{generate, GenParams, LoadedModel, Session};
use nanbeige_text::ToolCallItem;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Reply {
    /// The raw generated text (engine) or the message content (endpoint).
    pub text: String,
    pub content: String,
    pub reasoning: Option<String>,
    pub tool_calls: Vec<ToolCallItem>,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// "stop", "length", "tool_calls"…
    pub finish: String,
}

/// The name of the first tool offered (the one a required first call goes to).
fn first_tool(tools: Option<&Value>) -> Option<&str> {
    tools?.get(0)?.pointer("/function/name")?.as_str()
}

pub trait Brain {
    fn describe(&self) -> String;
    /// Context window in tokens (prompt + reply).
    fn window(&self) -> usize;
    /// Tokens the prompt for these messages and tools takes.
    fn count_tokens(&mut self, messages: &Value, tools: Option<&Value>) -> Result<usize>;
    /// `require_tool`: the reply must call the first tool offered (a named OpenAI `tool_choice`).
    fn reply(
        &mut self,
        messages: &Value,
        tools: Option<&Value>,
        max_tokens: usize,
        require_tool: bool,
    ) -> Result<Reply>;
}

/// A model loaded in this process. Keeps one KV-cache session, so each turn only prefills what was
/// added since the last one (as long as compaction did not rewrite the history).
pub struct EngineBrain<'a> {
    pub lm: &'a LoadedModel,
    pub params: GenParams,
    session: Session,
    pub cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl<'a> EngineBrain<'a> {
    pub fn new(lm: &'a LoadedModel, params: GenParams) -> Self {
        Self { session: Session::new(lm), lm, params, cancel: None }
    }
}

impl Brain for EngineBrain<'_> {
    fn describe(&self) -> String {
        format!("in-process {}", self.lm.path.display())
    }

    fn window(&self) -> usize {
        self.lm.context_len
    }

    fn count_tokens(&mut self, messages: &Value, tools: Option<&Value>) -> Result<usize> {
        Ok(chat_prompt(&self.lm.text, self.lm.template.as_ref(), messages, tools, true)?.ids.len())
    }

    fn reply(
        &mut self,
        messages: &Value,
        tools: Option<&Value>,
        max_tokens: usize,
        require_tool: bool,
    ) -> Result<Reply> {
        let mut prompt = chat_prompt(&self.lm.text, self.lm.template.as_ref(), messages, tools, true)?;
        // A required call: the reply starts inside the Hermes `<tool_call>` block with the name and
        // an open arguments object (Qwen2.5, Nanbeige4.1), as the server does for a named tool_choice.
        let forced = match first_tool(tools) {
            Some(name) if require_tool => format!("<tool_call>\n{{\"name\": {}, \"arguments\": {{", json!(name)),
            _ => String::new(),
        };
        if !forced.is_empty() {
            prompt.ids.extend(self.lm.text.tokenizer.encode(&forced, false)?);
        }
        let mut params = self.params.clone();
        params.max_tokens = Some(max_tokens);
        let cancel = self.cancel.as_deref();
        let g = generate(self.lm, &mut self.session, &prompt.ids, prompt.opened_think, &params, cancel, &mut |_| {})?;
        let text = format!("{forced}{}", g.text);
        let parsed = parse_reply(&text, prompt.opened_think, tools.is_some());
        let finish = match g.finish_reason {
            nanbeige_engine::FinishReason::Stop if !parsed.tool_calls.is_empty() => "tool_calls",
            nanbeige_engine::FinishReason::Stop => "stop",
            nanbeige_engine::FinishReason::Length => "length",
            nanbeige_engine::FinishReason::Cancelled => "cancelled",
        };
        Ok(Reply {
            text,
            content: parsed.content,
            reasoning: parsed.reasoning,
            tool_calls: parsed.tool_calls,
            prompt_tokens: g.prompt_tokens,
            completion_tokens: g.completion_tokens,
            finish: finish.into(),
        })
    }
}

/// An OpenAI-compatible `/v1/chat/completions` endpoint.
pub struct EndpointBrain {
    pub url: String,
    pub model: String,
    pub api_key: Option<String>,
    pub window: usize,
    pub temperature: Option<f32>,
    http: ureq::Agent,
    /// Tokens per byte of request JSON, learned from the server's `usage` (starts conservative).
    tokens_per_byte: f64,
}

impl EndpointBrain {
    /// `url`: the server root (`http://host:8080`), its `/v1`, or the full chat-completions URL.
    pub fn new(url: &str, model: &str, window: usize) -> Result<Self> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            bail!("--endpoint must be an http(s) URL, got '{url}'");
        }
        let u = url.trim_end_matches('/');
        let url = if u.ends_with("/chat/completions") {
            u.to_string()
        } else if u.ends_with("/v1") {
            format!("{u}/chat/completions")
        } else {
            format!("{u}/v1/chat/completions")
        };
        let api_key = std::env::var("NANBEIGE_API_KEY")
            .or_else(|_| std::env::var("OPENAI_API_KEY"))
            .ok()
            .filter(|k| !k.is_empty());
        let http = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(1800)))
            .http_status_as_error(false)
            .build()
            .into();
        Ok(Self { url, model: model.to_string(), api_key, window, temperature: None, http, tokens_per_byte: 0.34 })
    }

    /// OpenAI wants tool-call arguments as a JSON string; our history keeps them as objects.
    fn wire_messages(messages: &Value) -> Value {
        let mut m = messages.clone();
        if let Some(list) = m.as_array_mut() {
            for msg in list {
                if let Some(calls) = msg.get_mut("tool_calls").and_then(Value::as_array_mut) {
                    for c in calls {
                        if let Some(a) = c.pointer_mut("/function/arguments") {
                            if !a.is_string() {
                                *a = Value::String(a.to_string());
                            }
                        }
                    }
                }
            }
        }
        m
    }

    fn body(&self, messages: &Value, tools: Option<&Value>, max_tokens: usize) -> Value {
        let mut body =
            json!({"model": self.model, "messages": Self::wire_messages(messages), "max_tokens": max_tokens});
        if let Some(t) = tools {
            body["tools"] = t.clone();
        }
        if let Some(t) = self.temperature {
            body["temperature"] = json!(t);
        }
        body
    }
}

impl Brain for EndpointBrain {
    fn describe(&self) -> String {
        format!("{} at {}", self.model, self.url)
    }

    fn window(&self) -> usize {
        self.window
    }

    fn count_tokens(&mut self, messages: &Value, tools: Option<&Value>) -> Result<usize> {
        // No tokenizer here: estimate from the request size, calibrated by the last reply's usage.
        let bytes = self.body(messages, tools, 1).to_string().len();
        Ok((bytes as f64 * self.tokens_per_byte).ceil() as usize)
    }

    fn reply(
        &mut self,
        messages: &Value,
        tools: Option<&Value>,
        max_tokens: usize,
        require_tool: bool,
    ) -> Result<Reply> {
        let mut body = self.body(messages, tools, max_tokens);
        if let Some(name) = first_tool(tools).filter(|_| require_tool) {
            body["tool_choice"] = json!({"type": "function", "function": {"name": name}});
        }
        let mut req = self.http.post(&self.url).header("Content-Type", "application/json");
        if let Some(k) = &self.api_key {
            req = req.header("Authorization", &format!("Bearer {k}"));
        }
        let mut resp = req.send(body.to_string()).with_context(|| format!("calling {}", self.url))?;
        let status = resp.status();
        let text =
            resp.body_mut().with_config().limit(64 << 20).read_to_string().context("reading the endpoint's reply")?;
        if !status.is_success() {
            bail!("the endpoint answered HTTP {status}: {}", text.chars().take(300).collect::<String>());
        }
        let v: Value = serde_json::from_str(&text).context("the endpoint's reply is not JSON")?;
        let msg =
            v.pointer("/choices/0/message").ok_or_else(|| anyhow!("the endpoint's reply has no choices[0].message"))?;
        let content = msg.get("content").and_then(Value::as_str).unwrap_or("").to_string();
        let reasoning =
            msg.get("reasoning_content").or_else(|| msg.get("reasoning")).and_then(Value::as_str).map(str::to_string);
        let mut tool_calls = vec![];
        for c in msg.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
            let name = c.pointer("/function/name").and_then(Value::as_str).unwrap_or("").to_string();
            let raw = c.pointer("/function/arguments").cloned().unwrap_or(Value::Null);
            let parsed = match &raw {
                Value::String(s) => serde_json::from_str::<Value>(s).map_err(|e| e.to_string()),
                v @ Value::Object(_) => Ok(v.clone()),
                other => Err(format!("arguments must be a JSON object, got {other}")),
            };
            match parsed {
                Ok(arguments) if !name.is_empty() => tool_calls.push(ToolCallItem::Call { name, arguments }),
                Ok(_) => tool_calls
                    .push(ToolCallItem::Invalid { raw: c.to_string(), error: "tool call without a name".into() }),
                Err(e) => tool_calls.push(ToolCallItem::Invalid {
                    raw: c.to_string(),
                    error: format!("arguments are not valid JSON: {e}"),
                }),
            }
        }
        let prompt_tokens = v.pointer("/usage/prompt_tokens").and_then(Value::as_u64).unwrap_or(0) as usize;
        if prompt_tokens > 0 {
            let bytes = self.body(messages, tools, 1).to_string().len().max(1);
            // Keep a 10% margin over the observed ratio.
            self.tokens_per_byte = prompt_tokens as f64 / bytes as f64 * 1.1;
        }
        Ok(Reply {
            text: content.clone(),
            content,
            reasoning,
            tool_calls,
            prompt_tokens,
            completion_tokens: v.pointer("/usage/completion_tokens").and_then(Value::as_u64).unwrap_or(0) as usize,
            finish: v.pointer("/choices/0/finish_reason").and_then(Value::as_str).unwrap_or("").to_string(),
        })
    }
}

/// Milliseconds since `t`.
pub fn since_ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}
