//! The OpenAI wire format: validating request bodies into generation jobs (with a clear 4xx for
//! every kind of bad input) and building responses and stream chunks from the engine's results.
//! Not here: routing, auth, scheduling.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use nanbeige_engine::generate::TokenLogprob;
use nanbeige_engine::{FinishReason, GenParams, Generation, SamplingParams};
use nanbeige_text::{ParsedOutput, ToolCallItem, Tokenizer};
use serde_json::{json, Map, Value};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub code: Option<&'static str>,
    pub param: Option<String>,
    pub message: String,
}

impl ApiError {
    pub fn bad(message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, kind: "invalid_request_error", code: None, param: None, message: message.into() }
    }
    pub fn param(param: &str, message: impl Into<String>) -> Self {
        Self { param: Some(param.to_string()), ..Self::bad(message) }
    }
    pub fn new(status: StatusCode, kind: &'static str, code: Option<&'static str>, message: impl Into<String>) -> Self {
        Self { status, kind, code, param: None, message: message.into() }
    }
    pub fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

/// How the request constrains tool use.
#[derive(Clone, Debug, PartialEq)]
pub enum ToolChoice {
    Auto,
    None,
    Required,
    Named(String),
}

/// A validated chat request, before rendering.
pub struct ChatRequest {
    pub messages: Value,
    pub tools: Option<Value>,
    pub tool_choice: ToolChoice,
    pub params: GenParams,
    pub n: usize,
    pub stream: bool,
    pub include_usage: bool,
    pub logprobs: bool,
}

/// A validated text-completion request.
pub struct CompletionRequest {
    pub prompt: String,
    pub params: GenParams,
    pub n: usize,
    pub stream: bool,
    pub include_usage: bool,
}

fn num(v: &Map<String, Value>, key: &str, lo: f64, hi: f64) -> Result<Option<f32>, ApiError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if !(lo..=hi).contains(&x) {
                return Err(ApiError::param(key, format!("'{key}' must be between {lo} and {hi}, got {x}")));
            }
            Ok(Some(x as f32))
        }
        Some(_) => Err(ApiError::param(key, format!("'{key}' must be a number"))),
    }
}

fn int(v: &Map<String, Value>, key: &str, lo: u64, hi: u64) -> Result<Option<u64>, ApiError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(x) if (lo..=hi).contains(&x) => Ok(Some(x)),
            _ => Err(ApiError::param(key, format!("'{key}' must be an integer between {lo} and {hi}, got {n}"))),
        },
        Some(_) => Err(ApiError::param(key, format!("'{key}' must be an integer"))),
    }
}

fn boolean(v: &Map<String, Value>, key: &str) -> Result<bool, ApiError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::param(key, format!("'{key}' must be a boolean"))),
    }
}

/// Fields shared by chat and text completions: sampling, stopping, n, streaming.
fn common(
    o: &Map<String, Value>,
    defaults: &SamplingParams,
) -> Result<(GenParams, usize, bool, bool), ApiError> {
    let mut s = defaults.clone();
    if let Some(t) = num(o, "temperature", 0.0, 2.0)? {
        s.temperature = t;
    }
    if let Some(p) = num(o, "top_p", 0.0, 1.0)? {
        if p == 0.0 {
            return Err(ApiError::param("top_p", "'top_p' must be greater than 0"));
        }
        s.top_p = p;
    }
    if let Some(k) = int(o, "top_k", 0, 1 << 20)? {
        s.top_k = k as usize;
    }
    if let Some(m) = num(o, "min_p", 0.0, 1.0)? {
        s.min_p = m;
    }
    if let Some(p) = num(o, "presence_penalty", -2.0, 2.0)? {
        s.presence_penalty = p;
    }
    if let Some(f) = num(o, "frequency_penalty", -2.0, 2.0)? {
        s.frequency_penalty = f;
    }
    if let Some(r) = num(o, "repetition_penalty", 0.01, 10.0)? {
        s.repetition_penalty = r;
    }
    s.seed = int(o, "seed", 0, u64::MAX)?;
    let max_tokens = match int(o, "max_completion_tokens", 1, u32::MAX as u64)? {
        Some(m) => Some(m),
        None => int(o, "max_tokens", 1, u32::MAX as u64)?,
    };
    let stop = match o.get("stop") {
        None | Some(Value::Null) => vec![],
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if a.len() <= 16 => a
            .iter()
            .map(|x| x.as_str().map(String::from).ok_or_else(|| ApiError::param("stop", "'stop' entries must be strings")))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(ApiError::param("stop", "'stop' must be a string or an array of at most 16 strings")),
    };
    if stop.iter().any(|s: &String| s.is_empty()) {
        return Err(ApiError::param("stop", "'stop' strings must not be empty"));
    }
    let thinking = match int(o, "max_thinking_tokens", 0, u32::MAX as u64)? {
        Some(t) => Some(t),
        None => int(o, "thinking_budget", 0, u32::MAX as u64)?,
    };
    let n = int(o, "n", 1, 8)?.unwrap_or(1) as usize;
    let stream = boolean(o, "stream")?;
    let include_usage = match o.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(so)) => boolean(so, "include_usage")?,
        Some(_) => return Err(ApiError::param("stream_options", "'stream_options' must be an object")),
    };
    let params = GenParams {
        sampling: s,
        max_tokens: max_tokens.map(|m| m as usize),
        stop,
        ignore_eos: boolean(o, "ignore_eos")?,
        max_thinking_tokens: thinking.map(|t| t as usize),
        logprobs: None,
        json_schema: None,
    };
    Ok((params, n, stream, include_usage))
}

fn object(body: &Value) -> Result<&Map<String, Value>, ApiError> {
    body.as_object().ok_or_else(|| ApiError::bad("the request body must be a JSON object"))
}

/// Content as the templates expect it: a string (text parts joined) or null.
fn normalize_content(content: Option<&Value>, i: usize) -> Result<Value, ApiError> {
    match content {
        None | Some(Value::Null) => Ok(Value::Null),
        Some(Value::String(s)) => Ok(Value::String(s.clone())),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for p in parts {
                match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    (Some(other), _) => {
                        return Err(ApiError::param(
                            &format!("messages[{i}].content"),
                            format!("content part type '{other}' is not supported (text only)"),
                        ))
                    }
                    _ => return Err(ApiError::param(&format!("messages[{i}].content"), "invalid content part")),
                }
            }
            Ok(Value::String(text))
        }
        Some(_) => Err(ApiError::param(&format!("messages[{i}].content"), "content must be a string, an array of text parts, or null")),
    }
}

pub fn parse_chat(body: &Value, defaults: &SamplingParams) -> Result<ChatRequest, ApiError> {
    let o = object(body)?;
    let msgs = match o.get("messages") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) => return Err(ApiError::param("messages", "'messages' must not be empty")),
        None => return Err(ApiError::param("messages", "'messages' is required")),
        Some(_) => return Err(ApiError::param("messages", "'messages' must be an array")),
    };
    let mut messages = Vec::with_capacity(msgs.len());
    for (i, m) in msgs.iter().enumerate() {
        let Some(mo) = m.as_object() else {
            return Err(ApiError::param(&format!("messages[{i}]"), "each message must be an object"));
        };
        let role = match mo.get("role").and_then(Value::as_str) {
            Some(r @ ("system" | "user" | "assistant" | "tool")) => r,
            Some("developer") => "system",
            Some(r) => return Err(ApiError::param(&format!("messages[{i}].role"), format!("unknown role '{r}'"))),
            None => return Err(ApiError::param(&format!("messages[{i}].role"), "'role' is required")),
        };
        let mut out = mo.clone();
        out.insert("role".into(), Value::String(role.into()));
        out.insert("content".into(), normalize_content(mo.get("content"), i)?);
        if role != "assistant" && out["content"].is_null() {
            return Err(ApiError::param(&format!("messages[{i}].content"), format!("a {role} message needs content")));
        }
        if let Some(tc) = mo.get("tool_calls") {
            if !tc.is_array() && !tc.is_null() {
                return Err(ApiError::param(&format!("messages[{i}].tool_calls"), "'tool_calls' must be an array"));
            }
        }
        messages.push(Value::Object(out));
    }
    let tools = match o.get("tools") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => {
            for (i, t) in a.iter().enumerate() {
                let ok = t.get("type").and_then(Value::as_str) == Some("function")
                    && t.pointer("/function/name").and_then(Value::as_str).is_some_and(|n| !n.is_empty());
                if !ok {
                    return Err(ApiError::param(&format!("tools[{i}]"), "each tool must be {\"type\": \"function\", \"function\": {\"name\": …}}"));
                }
            }
            if a.is_empty() { None } else { Some(Value::Array(a.clone())) }
        }
        Some(_) => return Err(ApiError::param("tools", "'tools' must be an array")),
    };
    let names: Vec<&str> = tools
        .as_ref()
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|t| t.pointer("/function/name").and_then(Value::as_str)).collect())
        .unwrap_or_default();
    let tool_choice = match o.get("tool_choice") {
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => return Err(ApiError::param("tool_choice", format!("unknown tool_choice '{other}'"))),
        },
        Some(v) => match v.pointer("/function/name").and_then(Value::as_str) {
            Some(n) => ToolChoice::Named(n.to_string()),
            None => return Err(ApiError::param("tool_choice", "tool_choice must be a string or {\"type\": \"function\", \"function\": {\"name\": …}}")),
        },
    };
    match &tool_choice {
        ToolChoice::Required if names.is_empty() => return Err(ApiError::param("tool_choice", "tool_choice 'required' needs tools")),
        ToolChoice::Named(n) if !names.contains(&n.as_str()) => {
            return Err(ApiError::param("tool_choice", format!("tool_choice names '{n}', which is not among the tools")))
        }
        _ => {}
    }
    let json_schema = match o.get("response_format") {
        None | Some(Value::Null) => None,
        Some(rf) => nanbeige_engine::json_constraint::from_response_format(rf)
            .map_err(|e| ApiError::param("response_format", e.to_string()))?,
    };
    let (mut params, n, stream, include_usage) = common(o, defaults)?;
    params.json_schema = json_schema;
    let logprobs = boolean(o, "logprobs")?;
    let top = int(o, "top_logprobs", 0, 20)?;
    if top.is_some() && !logprobs {
        return Err(ApiError::param("top_logprobs", "'top_logprobs' requires 'logprobs': true"));
    }
    if logprobs {
        params.logprobs = Some(top.unwrap_or(0) as usize);
    }
    Ok(ChatRequest { messages: Value::Array(messages), tools, tool_choice, params, n, stream, include_usage, logprobs })
}

pub fn parse_completion(body: &Value, defaults: &SamplingParams) -> Result<CompletionRequest, ApiError> {
    let o = object(body)?;
    let prompt = match o.get("prompt") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Array(a)) if a.len() == 1 && a[0].as_str().is_some_and(|s| !s.is_empty()) => a[0].as_str().unwrap().to_string(),
        Some(Value::Array(a)) if a.len() > 1 => return Err(ApiError::param("prompt", "only one prompt per request is supported")),
        None => return Err(ApiError::param("prompt", "'prompt' is required")),
        _ => return Err(ApiError::param("prompt", "'prompt' must be a non-empty string")),
    };
    let (params, n, stream, include_usage) = common(o, defaults)?;
    Ok(CompletionRequest { prompt, params, n, stream, include_usage })
}

/// The text the model is made to start with when a tool call is required, so that it cannot
/// answer otherwise (the Hermes `<tool_call>` format of Qwen2.5 and Nanbeige4.1).
pub fn forced_prefix(choice: &ToolChoice) -> Option<String> {
    match choice {
        ToolChoice::Required => Some("<tool_call>\n".into()),
        ToolChoice::Named(n) => Some(format!("<tool_call>\n{{\"name\": {}, \"arguments\": {{", json!(n))),
        _ => None,
    }
}

pub fn finish_reason(g: &Generation, tool_calls: usize) -> &'static str {
    match g.finish_reason {
        FinishReason::Stop if tool_calls > 0 => "tool_calls",
        FinishReason::Stop => "stop",
        FinishReason::Length | FinishReason::Cancelled => "length",
    }
}

pub fn tool_call_json(name: &str, arguments: &Value, id: &str, index: Option<usize>) -> Value {
    let mut v = json!({
        "id": id,
        "type": "function",
        "function": {"name": name, "arguments": serde_json::to_string(arguments).unwrap_or_default()},
    });
    if let Some(i) = index {
        v["index"] = json!(i);
    }
    v
}

/// The assistant message of a finished choice. Malformed tool calls are given back as text so
/// nothing the model wrote is lost.
pub fn message_json(parsed: &ParsedOutput, call_id: &mut dyn FnMut() -> String) -> (Value, usize) {
    let mut content = parsed.content.clone();
    let mut calls = vec![];
    for c in &parsed.tool_calls {
        match c {
            ToolCallItem::Call { name, arguments } => calls.push(tool_call_json(name, arguments, &call_id(), None)),
            ToolCallItem::Invalid { raw, .. } => {
                if !content.is_empty() {
                    content.push('\n');
                }
                content.push_str(raw);
            }
        }
    }
    let mut m = json!({"role": "assistant", "content": if content.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(content) }});
    if let Some(r) = &parsed.reasoning {
        m["reasoning_content"] = json!(r);
    }
    let n = calls.len();
    if n > 0 {
        m["tool_calls"] = Value::Array(calls);
    }
    (m, n)
}

pub fn logprobs_json(tok: &Tokenizer, lps: &[TokenLogprob]) -> Value {
    let piece = |id: u32| tok.decode(&[id], false).unwrap_or_default();
    let entry = |id: u32, lp: f32| {
        let t = piece(id);
        json!({"token": t, "logprob": lp, "bytes": t.as_bytes()})
    };
    let content: Vec<Value> = lps
        .iter()
        .map(|l| {
            let mut e = entry(l.token, l.logprob);
            e["top_logprobs"] = Value::Array(l.top.iter().map(|&(id, lp)| entry(id, lp)).collect());
            e
        })
        .collect();
    json!({"content": content})
}

pub fn usage_json(gens: &[&Generation]) -> Value {
    // n choices share one prompt: count it once, as OpenAI does.
    let prompt = gens.first().map(|g| g.prompt_tokens).unwrap_or(0);
    let cached = gens.first().map(|g| g.cached_prompt_tokens).unwrap_or(0);
    let completion: usize = gens.iter().map(|g| g.completion_tokens).sum();
    let reasoning: usize = gens.iter().map(|g| g.reasoning_tokens).sum();
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> SamplingParams {
        SamplingParams::default()
    }

    #[test]
    fn bad_fields_name_the_parameter() {
        let cases = [
            (json!({"messages": []}), "messages"),
            (json!({"messages": "hi"}), "messages"),
            (json!({"messages": [{"role": "wizard", "content": "x"}]}), "messages[0].role"),
            (json!({"messages": [{"role": "user", "content": 5}]}), "messages[0].content"),
            (json!({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}), "temperature"),
            (json!({"messages": [{"role": "user", "content": "x"}], "temperature": 9}), "temperature"),
            (json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}), "max_tokens"),
            (json!({"messages": [{"role": "user", "content": "x"}], "n": 100}), "n"),
            (json!({"messages": [{"role": "user", "content": "x"}], "stop": [1]}), "stop"),
            (json!({"messages": [{"role": "user", "content": "x"}], "tool_choice": "required"}), "tool_choice"),
            (json!({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 3}), "top_logprobs"),
            (json!({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "yaml"}}), "response_format"),
            (json!({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema"}}), "response_format"),
        ];
        for (body, param) in cases {
            let e = parse_chat(&body, &defaults()).err().unwrap_or_else(|| panic!("{body} accepted"));
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
        }
        assert!(parse_chat(&json!([1]), &defaults()).is_err());
    }

    #[test]
    fn good_request_maps_every_field() {
        let body = json!({
            "model": "m", "messages": [{"role": "developer", "content": [{"type": "text", "text": "be "}, {"type": "text", "text": "brief"}]},
                                       {"role": "user", "content": "hi"}],
            "temperature": 0.5, "top_p": 0.9, "top_k": 40, "min_p": 0.05, "max_completion_tokens": 12, "stop": "END",
            "seed": 7, "n": 2, "presence_penalty": 0.5, "frequency_penalty": 0.25, "logprobs": true, "top_logprobs": 3,
            "stream": true, "stream_options": {"include_usage": true}, "max_thinking_tokens": 64,
            "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function", "function": {"name": "f"}}
        });
        let r = parse_chat(&body, &defaults()).unwrap();
        assert_eq!(r.messages[0]["role"], "system");
        assert_eq!(r.messages[0]["content"], "be brief");
        let s = &r.params.sampling;
        assert_eq!((s.temperature, s.top_p, s.top_k, s.min_p, s.seed), (0.5, 0.9, 40, 0.05, Some(7)));
        assert_eq!((s.presence_penalty, s.frequency_penalty), (0.5, 0.25));
        assert_eq!(r.params.max_tokens, Some(12));
        assert_eq!(r.params.stop, vec!["END".to_string()]);
        assert_eq!(r.params.max_thinking_tokens, Some(64));
        assert_eq!(r.params.logprobs, Some(3));
        assert_eq!((r.n, r.stream, r.include_usage), (2, true, true));
        assert_eq!(r.tool_choice, ToolChoice::Named("f".into()));
        assert_eq!(forced_prefix(&r.tool_choice).unwrap(), "<tool_call>\n{\"name\": \"f\", \"arguments\": {");
    }
}
