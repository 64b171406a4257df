//! nanbeige-server: an OpenAI-compatible HTTP API (`/v1/chat/completions`, `/v1/completions`,
//! `/v1/models`, `/health`, `/metrics`) over one loaded model, with continuous batching
//! (worker.rs), a prefix cache, streaming, tools and reasoning, an optional API key and graceful
//! shutdown on SIGTERM. Request validation and the wire format live in api.rs.

pub mod api;
pub mod metrics;
pub mod prefix_cache;
pub mod worker;

use api::{ApiError, ToolChoice};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{SelectAll, StreamExt};
use metrics::Metrics;
use nanbeige_engine::prompt::{chat_prompt, parse_reply, raw_prompt};
use nanbeige_engine::{GenParams, Generation, LoadedModel, SamplingParams};
use nanbeige_text::{StreamEvent, StreamParser, ToolCallItem};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use subtle::ConstantTimeEq;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio_stream::wrappers::UnboundedReceiverStream;
use worker::{Event, Job};

pub struct ServeOptions {
    pub host: String,
    pub port: u16,
    /// Names clients may use in `model` (the first is reported by /v1/models).
    pub model_names: Vec<String>,
    pub api_key: Option<String>,
    pub max_batch: usize,
    pub max_queue: usize,
    pub prefix_cache_tokens: usize,
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
}

struct App {
    lm: Arc<LoadedModel>,
    names: Vec<String>,
    jobs: std::sync::mpsc::Sender<Job>,
    metrics: Arc<Metrics>,
    max_queue: usize,
    api_key: Option<String>,
    timeout: Duration,
    defaults: SamplingParams,
    ids: AtomicU64,
    created: u64,
}

type Shared = Arc<App>;

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl App {
    fn next_id(&self, prefix: &str) -> String {
        format!("{prefix}-{:x}{:06x}", self.created, self.ids.fetch_add(1, Ordering::Relaxed))
    }

    fn check_model(&self, body: &Value) -> Result<(), ApiError> {
        match body.get("model") {
            None | Some(Value::Null) => Ok(()),
            Some(Value::String(m)) if self.names.iter().any(|n| n == m) => Ok(()),
            Some(Value::String(m)) => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("model_not_found"),
                format!("model '{m}' is not served here (available: {})", self.names.join(", ")),
            )),
            Some(_) => Err(ApiError::param("model", "'model' must be a string")),
        }
    }

    /// Queue `n` generations of one prompt; each gets its own event channel.
    fn submit(&self, prompt: &[u32], opened_think: bool, params: &GenParams, n: usize) -> Result<Vec<UnboundedReceiver<Event>>, ApiError> {
        let ctx = self.lm.context_len;
        if prompt.len() >= ctx {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("context_length_exceeded"),
                format!("the prompt has {} tokens but the context holds {ctx}", prompt.len()),
            ));
        }
        if let Some(m) = params.max_tokens {
            if prompt.len() + m > ctx {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    Some("context_length_exceeded"),
                    format!("max_tokens {m} plus the prompt's {} tokens exceed the context of {ctx}", prompt.len()),
                ));
            }
        }
        let queued = self.metrics.queued.load(Ordering::Relaxed);
        if queued + n > self.max_queue {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                Some("queue_full"),
                format!("the server is busy ({queued} requests waiting); retry later"),
            ));
        }
        let mut rxs = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx) = unbounded_channel();
            let mut params = params.clone();
            // n choices from one seed must differ yet stay reproducible.
            params.sampling.seed = params.sampling.seed.map(|s| s.wrapping_add(i as u64));
            self.metrics.queued.fetch_add(1, Ordering::Relaxed);
            let job = Job {
                prompt: prompt.to_vec(),
                opened_think,
                params,
                events: tx,
                deadline: Instant::now() + self.timeout,
                submitted: Instant::now(),
            };
            if self.jobs.send(job).is_err() {
                self.metrics.queued.fetch_sub(1, Ordering::Relaxed);
                return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", None, "the server is shutting down"));
            }
            rxs.push(rx);
        }
        Ok(rxs)
    }
}

/// Parse the body ourselves so that every failure is an OpenAI-style JSON error.
fn json_body(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let bytes = body.map_err(|e| {
        let status = e.status();
        ApiError::new(status, "invalid_request_error", None, format!("could not read the request body: {}", e.body_text()))
    })?;
    let text = std::str::from_utf8(&bytes).map_err(|_| ApiError::bad("the request body is not valid UTF-8"))?;
    serde_json::from_str(text).map_err(|e| ApiError::bad(format!("the request body is not valid JSON: {e}")))
}

fn count(app: &App, r: &Result<Response, ApiError>) {
    let m = &app.metrics;
    match r {
        Ok(_) => m.requests_ok.fetch_add(1, Ordering::Relaxed),
        Err(e) if e.status == StatusCode::TOO_MANY_REQUESTS => m.requests_rejected.fetch_add(1, Ordering::Relaxed),
        Err(e) if e.status.is_client_error() => m.requests_client_error.fetch_add(1, Ordering::Relaxed),
        Err(_) => m.requests_server_error.fetch_add(1, Ordering::Relaxed),
    };
}

async fn chat_completions(State(app): State<Shared>, body: Result<Bytes, BytesRejection>) -> Response {
    app.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
    let r = chat_inner(&app, body).await;
    app.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
    count(&app, &r);
    r.unwrap_or_else(IntoResponse::into_response)
}

async fn chat_inner(app: &Shared, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let body = json_body(body)?;
    app.check_model(&body)?;
    let req = api::parse_chat(&body, &app.defaults)?;
    let lm = &app.lm;
    let tools = if req.tool_choice == ToolChoice::None { None } else { req.tools.as_ref() };
    let mut prompt = chat_prompt(&lm.text, lm.template.as_ref(), &req.messages, tools, true)
        .map_err(|e| ApiError::bad(format!("{e:#}")))?;
    let prefix = api::forced_prefix(&req.tool_choice);
    if let Some(p) = &prefix {
        let ids = lm.text.tokenizer.encode(p, false).map_err(|e| ApiError::bad(e.to_string()))?;
        prompt.ids.extend(ids);
    }
    let rxs = app.submit(&prompt.ids, prompt.opened_think, &req.params, req.n)?;
    let id = app.next_id("chatcmpl");
    let name = app.names[0].clone();
    let tools_offered = tools.is_some();
    if req.stream {
        let stream = chat_stream(app.clone(), rxs, id, name, prompt.opened_think, prefix, req.include_usage, req.logprobs);
        return Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response());
    }
    let gens = collect(rxs).await?;
    let mut choices = vec![];
    for (i, g) in gens.iter().enumerate() {
        let text = format!("{}{}", prefix.as_deref().unwrap_or(""), g.text);
        let parsed = parse_reply(&text, prompt.opened_think, tools_offered);
        let (message, ncalls) = api::message_json(&parsed, &mut || app.next_id("call"));
        let logprobs = if req.logprobs { api::logprobs_json(&lm.text.tokenizer, &g.logprobs) } else { Value::Null };
        choices.push(json!({"index": i, "message": message, "logprobs": logprobs, "finish_reason": api::finish_reason(g, ncalls)}));
    }
    let refs: Vec<&Generation> = gens.iter().collect();
    Ok(Json(json!({
        "id": id, "object": "chat.completion", "created": now_secs(), "model": name,
        "choices": choices, "usage": api::usage_json(&refs), "system_fingerprint": null,
    }))
    .into_response())
}

/// Wait for every choice's final result.
async fn collect(rxs: Vec<UnboundedReceiver<Event>>) -> Result<Vec<Generation>, ApiError> {
    let mut out = Vec::with_capacity(rxs.len());
    for mut rx in rxs {
        loop {
            match rx.recv().await {
                Some(Event::Text(_)) => {}
                Some(Event::Done(g)) => {
                    out.push(*g);
                    break;
                }
                Some(Event::Error(e)) => return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", None, e)),
                None => return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", None, "generation ended unexpectedly")),
            }
        }
    }
    Ok(out)
}

fn sse(v: Value) -> Result<SseEvent, std::convert::Infallible> {
    Ok(SseEvent::default().data(v.to_string()))
}

fn merged(rxs: Vec<UnboundedReceiver<Event>>) -> SelectAll<futures_util::stream::BoxStream<'static, (usize, Event)>> {
    futures_util::stream::select_all(
        rxs.into_iter().enumerate().map(|(i, rx)| UnboundedReceiverStream::new(rx).map(move |e| (i, e)).boxed()),
    )
}

#[allow(clippy::too_many_arguments)]
fn chat_stream(
    app: Shared,
    rxs: Vec<UnboundedReceiver<Event>>,
    id: String,
    model: String,
    opened_think: bool,
    prefix: Option<String>,
    include_usage: bool,
    logprobs: bool,
) -> impl futures_util::Stream<Item = Result<SseEvent, std::convert::Infallible>> {
    let n = rxs.len();
    let created = now_secs();
    let chunk = {
        let (id, model) = (id.clone(), model.clone());
        move |i: usize, delta: Value, finish: Option<&str>| {
            json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                   "choices": [{"index": i, "delta": delta, "logprobs": null, "finish_reason": finish}]})
        }
    };
    let (tx, rx) = unbounded_channel::<Result<SseEvent, std::convert::Infallible>>();
    tokio::spawn(async move {
        let mut parsers: Vec<StreamParser> = (0..n)
            .map(|_| {
                let mut p = StreamParser::new(opened_think);
                if let Some(pre) = &prefix {
                    // The forced start of a tool call is part of the reply the client sees.
                    let _ = p.push(pre);
                }
                p
            })
            .collect();
        let mut calls = vec![0usize; n];
        let mut gens: Vec<Option<Generation>> = (0..n).map(|_| None).collect();
        for i in 0..n {
            if tx.send(sse(chunk(i, json!({"role": "assistant", "content": ""}), None))).is_err() {
                return;
            }
        }
        let mut events = merged(rxs);
        while let Some((i, ev)) = events.next().await {
            let mut deltas = vec![];
            match ev {
                Event::Text(t) => deltas = parsers[i].push(&t),
                Event::Done(g) => {
                    deltas = parsers[i].finish();
                    gens[i] = Some(*g);
                }
                Event::Error(e) => {
                    let err = ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", None, e);
                    let _ = tx.send(sse(err.body()));
                    return;
                }
            }
            for d in deltas {
                let delta = match d {
                    StreamEvent::Reasoning(r) => json!({"reasoning_content": r}),
                    StreamEvent::Content(c) => json!({"content": c}),
                    StreamEvent::ToolCall(ToolCallItem::Call { name, arguments }) => {
                        let call = api::tool_call_json(&name, &arguments, &app.next_id("call"), Some(calls[i]));
                        calls[i] += 1;
                        json!({"tool_calls": [call]})
                    }
                    StreamEvent::ToolCall(ToolCallItem::Invalid { raw, .. }) => json!({"content": raw}),
                    #[allow(unreachable_patterns)]
                    _ => continue,
                };
                if tx.send(sse(chunk(i, delta, None))).is_err() {
                    return; // client gone: dropping the receivers cancels the generations
                }
            }
            if let Some(g) = &gens[i] {
                let mut last = chunk(i, json!({}), Some(api::finish_reason(g, calls[i])));
                if logprobs {
                    last["choices"][0]["logprobs"] = api::logprobs_json(&app.lm.text.tokenizer, &g.logprobs);
                }
                if tx.send(sse(last)).is_err() {
                    return;
                }
            }
        }
        if include_usage {
            let refs: Vec<&Generation> = gens.iter().flatten().collect();
            let u = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                           "choices": [], "usage": api::usage_json(&refs)});
            let _ = tx.send(sse(u));
        }
        let _ = tx.send(Ok(SseEvent::default().data("[DONE]")));
    });
    UnboundedReceiverStream::new(rx)
}

async fn completions(State(app): State<Shared>, body: Result<Bytes, BytesRejection>) -> Response {
    app.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
    let r = completions_inner(&app, body).await;
    app.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
    count(&app, &r);
    r.unwrap_or_else(IntoResponse::into_response)
}

async fn completions_inner(app: &Shared, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let body = json_body(body)?;
    app.check_model(&body)?;
    let req = api::parse_completion(&body, &app.defaults)?;
    let prompt = raw_prompt(&app.lm.text, &req.prompt).map_err(|e| ApiError::bad(e.to_string()))?;
    let rxs = app.submit(&prompt.ids, false, &req.params, req.n)?;
    let id = app.next_id("cmpl");
    let name = app.names[0].clone();
    let created = now_secs();
    if req.stream {
        let (tx, rx) = unbounded_channel::<Result<SseEvent, std::convert::Infallible>>();
        let include_usage = req.include_usage;
        tokio::spawn(async move {
            let mut events = merged(rxs);
            let mut gens = vec![];
            let chunk = |i: usize, text: &str, finish: Option<&str>| {
                json!({"id": id, "object": "text_completion", "created": created, "model": name,
                       "choices": [{"index": i, "text": text, "logprobs": null, "finish_reason": finish}]})
            };
            while let Some((i, ev)) = events.next().await {
                let c = match ev {
                    Event::Text(t) => chunk(i, &t, None),
                    Event::Done(g) => {
                        let c = chunk(i, "", Some(api::finish_reason(&g, 0)));
                        gens.push(*g);
                        c
                    }
                    Event::Error(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", None, e).body(),
                };
                if tx.send(sse(c)).is_err() {
                    return;
                }
            }
            if include_usage {
                let refs: Vec<&Generation> = gens.iter().collect();
                let _ = tx.send(sse(json!({"id": id, "object": "text_completion", "created": created, "model": name,
                                           "choices": [], "usage": api::usage_json(&refs)})));
            }
            let _ = tx.send(Ok(SseEvent::default().data("[DONE]")));
        });
        return Ok(Sse::new(UnboundedReceiverStream::new(rx)).keep_alive(KeepAlive::default()).into_response());
    }
    let gens = collect(rxs).await?;
    let choices: Vec<Value> = gens
        .iter()
        .enumerate()
        .map(|(i, g)| json!({"index": i, "text": g.text, "logprobs": null, "finish_reason": api::finish_reason(g, 0)}))
        .collect();
    let refs: Vec<&Generation> = gens.iter().collect();
    Ok(Json(json!({"id": id, "object": "text_completion", "created": created, "model": name,
                   "choices": choices, "usage": api::usage_json(&refs)}))
    .into_response())
}

async fn models(State(app): State<Shared>) -> Json<Value> {
    let data: Vec<Value> = app.names[..1]
        .iter()
        .map(|n| json!({"id": n, "object": "model", "created": app.created, "owned_by": "nanbeige",
                        "context_length": app.lm.context_len}))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

async fn health(State(app): State<Shared>) -> Json<Value> {
    let m = &app.metrics;
    Json(json!({"status": "ok", "model": app.names[0],
                "active": m.active.load(Ordering::Relaxed), "queued": m.queued.load(Ordering::Relaxed)}))
}

async fn metrics_text(State(app): State<Shared>) -> Response {
    ([("content-type", "text/plain; version=0.0.4")], app.metrics.render()).into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", Some("not_found"), "no such endpoint")
}

/// `Authorization: Bearer KEY`, compared in constant time (over digests, so the length is hidden too).
async fn auth(State(app): State<Shared>, headers: HeaderMap, req: Request, next: Next) -> Response {
    if let Some(key) = &app.api_key {
        let given = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let ok: bool = digest(given.as_bytes()).ct_eq(&digest(key.as_bytes())).into();
        if !ok {
            return ApiError::new(StatusCode::UNAUTHORIZED, "invalid_request_error", Some("invalid_api_key"), "missing or wrong API key")
                .into_response();
        }
    }
    next.run(req).await
}

fn digest(b: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(b).into()
}

/// Serve until SIGTERM or Ctrl-C, then stop accepting, let running requests finish, and return.
pub async fn serve(lm: Arc<LoadedModel>, opts: ServeOptions) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let (jobs_tx, jobs_rx) = std::sync::mpsc::channel::<Job>();
    let worker = {
        let (lm, metrics) = (lm.clone(), metrics.clone());
        let cfg = worker::WorkerConfig { max_batch: opts.max_batch.max(1), prefix_cache_tokens: opts.prefix_cache_tokens };
        std::thread::Builder::new().name("nanbeige-worker".into()).spawn(move || worker::run(lm, jobs_rx, cfg, metrics))?
    };
    let defaults = lm.sampling_defaults.clone().unwrap_or_default();
    let app = Arc::new(App {
        lm,
        names: opts.model_names.clone(),
        jobs: jobs_tx,
        metrics,
        max_queue: opts.max_queue,
        api_key: opts.api_key.clone(),
        timeout: opts.request_timeout,
        defaults,
        ids: AtomicU64::new(0),
        created: now_secs(),
    });
    let v1 = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/metrics", get(metrics_text))
        .route_layer(middleware::from_fn_with_state(app.clone(), auth));
    let router = Router::new()
        .merge(v1)
        .route("/health", get(health))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(opts.max_body_bytes))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind((opts.host.as_str(), opts.port)).await?;
    eprintln!("serving {} on http://{}", opts.model_names[0], listener.local_addr()?);
    axum::serve(listener, router).with_graceful_shutdown(shutdown_signal()).await?;
    eprintln!("shutting down: waiting for running generations");
    // The router (and with it the job sender) is gone; the worker drains and exits.
    let _ = tokio::task::spawn_blocking(move || worker.join()).await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} },
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
