//! Where completions come from: our engine in this process, or any OpenAI-compatible endpoint
//! (`nanbeige serve`, vLLM, llama.cpp's server, …) over HTTP. Either way a reply comes back as the
//! raw text (reasoning re-wrapped in `<think>…</think>`, so scorers see one format) plus parsed
//! tool calls.

use anyhow::{bail, Context, Result};
use nanbeige_engine::prompt::{chat_prompt, parse_reply};
use nanbeige_engine::{generate, generate_batch, BatchRequest, GenParams, Generation, LoadedModel, Session};
use nanbeige_text::ToolCallItem;
use serde_json::{json, Value};
use std::time::Duration;

#[derive(Clone, Debug, Default)]
pub struct Reply {
    pub text: String,
    /// (function name, arguments) of each well-formed call.
    pub tool_calls: Vec<(String, Value)>,
    pub completion_tokens: usize,
    pub finish_reason: String,
}

#[derive(Clone, Debug)]
pub struct Sampling {
    pub max_tokens: usize,
    pub temperature: f32,
    pub top_p: f32,
}

/// One chat completion to make.
#[derive(Clone, Debug)]
pub struct ChatRequest {
    pub messages: Value,
    pub tools: Option<Value>,
    pub seed: u64,
}

pub trait Backend: Sync {
    fn chat(&self, messages: &Value, tools: Option<&Value>, sampling: &Sampling, seed: u64) -> Result<Reply>;
    /// Whether several requests may run at once on threads (an endpoint batches them).
    fn parallel_ok(&self) -> bool;
    /// How many requests `chat_many` completes together (our engine batches them itself).
    fn batch_size(&self) -> usize {
        1
    }
    /// Several completions, in request order; by default one after another.
    fn chat_many(&self, reqs: &[ChatRequest], sampling: &Sampling) -> Vec<Result<Reply>> {
        reqs.iter().map(|r| self.chat(&r.messages, r.tools.as_ref(), sampling, r.seed)).collect()
    }
}

/// Our engine in this process. With `batch` > 1, `chat_many` decodes that many sequences in one
/// batched forward per step, which multiplies throughput on a CPU (weights are read once per step).
pub struct Engine {
    pub lm: LoadedModel,
    pub batch: usize,
}

impl Engine {
    fn request(&self, messages: &Value, tools: Option<&Value>, sampling: &Sampling, seed: u64) -> Result<(BatchRequest, bool)> {
        let lm = &self.lm;
        let prompt = chat_prompt(&lm.text, lm.template.as_ref(), messages, tools, true)?;
        let mut params = GenParams { max_tokens: Some(sampling.max_tokens), ..Default::default() };
        params.sampling = lm.sampling_defaults.clone().unwrap_or_default();
        params.sampling.temperature = sampling.temperature;
        params.sampling.top_p = sampling.top_p;
        params.sampling.seed = Some(seed);
        Ok((BatchRequest { prompt: prompt.ids, opened_think: prompt.opened_think, params }, tools.is_some()))
    }
}

/// The reply as scorers see it: reasoning re-wrapped in `<think>`, tool calls parsed.
pub fn reply_from_generation(gen: &Generation, opened_think: bool, with_tools: bool) -> Result<Reply> {
    let parsed = parse_reply(&gen.text, opened_think, with_tools);
    let text = if opened_think { format!("<think>{}", gen.text) } else { gen.text.clone() };
    let tool_calls = parsed
        .tool_calls
        .into_iter()
        .filter_map(|c| match c {
            ToolCallItem::Call { name, arguments } => Some((name, arguments)),
            ToolCallItem::Invalid { .. } => None,
        })
        .collect();
    let finish_reason = serde_json::to_value(gen.finish_reason)?.as_str().unwrap_or("").to_string();
    Ok(Reply { text, tool_calls, completion_tokens: gen.completion_tokens, finish_reason })
}

impl Backend for Engine {
    fn chat(&self, messages: &Value, tools: Option<&Value>, sampling: &Sampling, seed: u64) -> Result<Reply> {
        let (r, with_tools) = self.request(messages, tools, sampling, seed)?;
        let mut session = Session::new(&self.lm);
        let gen = generate(&self.lm, &mut session, &r.prompt, r.opened_think, &r.params, None, &mut |_| {})?;
        reply_from_generation(&gen, r.opened_think, with_tools)
    }

    fn parallel_ok(&self) -> bool {
        false
    }

    fn batch_size(&self) -> usize {
        self.batch.max(1)
    }

    fn chat_many(&self, reqs: &[ChatRequest], sampling: &Sampling) -> Vec<Result<Reply>> {
        let built: Vec<Result<(BatchRequest, bool)>> =
            reqs.iter().map(|r| self.request(&r.messages, r.tools.as_ref(), sampling, r.seed)).collect();
        let ok: Vec<BatchRequest> = built.iter().filter_map(|b| b.as_ref().ok().map(|(r, _)| r.clone())).collect();
        let mut gens = generate_batch(&self.lm, &ok, self.batch_size(), &mut |_, _| {}).into_iter();
        built
            .into_iter()
            .map(|b| {
                let (r, with_tools) = b?;
                let gen = gens.next().expect("one generation per request")?;
                reply_from_generation(&gen, r.opened_think, with_tools)
            })
            .collect()
    }
}

pub struct Endpoint {
    /// `…/v1/chat/completions`.
    pub url: String,
    pub model: String,
    pub api_key: Option<String>,
    agent: ureq::Agent,
}

impl Endpoint {
    /// `base` may be the server root (`http://host:8080`), its `/v1`, or the full chat URL.
    pub fn new(base: &str, model: Option<String>, api_key: Option<String>, timeout: Duration) -> Result<Endpoint> {
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--endpoint must be an http:// or https:// URL, got {base:?}");
        }
        let b = base.trim_end_matches('/');
        let url = if b.ends_with("/chat/completions") {
            b.to_string()
        } else if b.ends_with("/v1") {
            format!("{b}/chat/completions")
        } else {
            format!("{b}/v1/chat/completions")
        };
        let agent: ureq::Agent =
            ureq::Agent::config_builder().timeout_global(Some(timeout)).http_status_as_error(false).build().into();
        let mut ep = Endpoint { url, model: model.clone().unwrap_or_default(), api_key, agent };
        if model.is_none() {
            ep.model = ep.first_model()?;
        }
        Ok(ep)
    }

    /// The first model the server lists (GET …/v1/models), used when no --api-model is given.
    fn first_model(&self) -> Result<String> {
        let url = self.url.trim_end_matches("/chat/completions").to_string() + "/models";
        let mut req = self.agent.get(&url);
        if let Some(k) = &self.api_key {
            req = req.header("Authorization", &format!("Bearer {k}"));
        }
        let mut resp = req.call().with_context(|| format!("GET {url}"))?;
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        match v.pointer("/data/0/id").and_then(Value::as_str) {
            Some(id) => Ok(id.to_string()),
            None => bail!("{url} lists no model ({}); name one with --api-model", resp.status()),
        }
    }
}

impl Backend for Endpoint {
    fn chat(&self, messages: &Value, tools: Option<&Value>, sampling: &Sampling, seed: u64) -> Result<Reply> {
        let mut body = json!({
            "model": self.model,
            "messages": messages,
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "seed": seed,
        });
        if let Some(t) = tools {
            body["tools"] = t.clone();
        }
        let mut req = self.agent.post(&self.url).header("Content-Type", "application/json");
        if let Some(k) = &self.api_key {
            req = req.header("Authorization", &format!("Bearer {k}"));
        }
        let mut resp = req.send(body.to_string()).with_context(|| format!("POST {}", self.url))?;
        let status = resp.status();
        let text = resp.body_mut().read_to_string().with_context(|| format!("reading the reply of {}", self.url))?;
        if !status.is_success() {
            bail!("{} answered {status}: {}", self.url, text.chars().take(300).collect::<String>());
        }
        let v: Value = serde_json::from_str(&text).with_context(|| format!("{} did not answer JSON", self.url))?;
        reply_from_json(&v)
    }

    fn parallel_ok(&self) -> bool {
        true
    }
}

/// An OpenAI chat completion response → Reply.
pub fn reply_from_json(v: &Value) -> Result<Reply> {
    let choice = v.get("choices").and_then(|c| c.get(0)).context("the response has no choices")?;
    let msg = choice.get("message").context("the response has no message")?;
    let content = msg.get("content").and_then(Value::as_str).unwrap_or("");
    let reasoning =
        msg.get("reasoning_content").or_else(|| msg.get("reasoning")).and_then(Value::as_str).filter(|r| !r.is_empty());
    // An answer after the reasoning means the server saw `</think>`; without one the think block
    // may never have closed, so it is not closed here either.
    let text = match reasoning {
        Some(r) if !content.trim().is_empty() => format!("<think>\n{r}\n</think>\n\n{content}"),
        Some(r) => format!("<think>\n{r}"),
        None => content.to_string(),
    };
    let tool_calls = msg
        .get("tool_calls")
        .and_then(Value::as_array)
        .map(|calls| {
            calls
                .iter()
                .filter_map(|c| {
                    let f = c.get("function")?;
                    let name = f.get("name")?.as_str()?.to_string();
                    let args = match f.get("arguments")? {
                        Value::String(s) => serde_json::from_str(s).ok()?,
                        other => other.clone(),
                    };
                    Some((name, args))
                })
                .collect()
        })
        .unwrap_or_default();
    let completion_tokens = v.pointer("/usage/completion_tokens").and_then(Value::as_u64).unwrap_or(0) as usize;
    let finish_reason = choice.get("finish_reason").and_then(Value::as_str).unwrap_or("").to_string();
    Ok(Reply { text, tool_calls, completion_tokens, finish_reason })
}
