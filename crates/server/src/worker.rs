//! The continuous-batching scheduler: one thread owns the model and runs a loop in which new
//! requests are admitted (prefilled, reusing a cached prefix when one matches) and then every active
//! sequence advances by one token in a single batched forward pass, so weights are read once per
//! step for the whole batch. Requests join and leave between steps.
//!
//! A request whose client went away (its event channel closed) or whose deadline passed is dropped
//! at the next step, freeing its slot at once. Not here: HTTP, JSON, prompt rendering.

use crate::metrics::Metrics;
use crate::prefix_cache::PrefixCache;
use nanbeige_engine::generate::SeqDecode;
use nanbeige_engine::{GenParams, Generation, LoadedModel, Session};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

pub enum Event {
    Text(String),
    Done(Box<Generation>),
    Error(String),
}

pub struct Job {
    pub prompt: Vec<u32>,
    pub opened_think: bool,
    pub params: GenParams,
    pub events: UnboundedSender<Event>,
    pub deadline: Instant,
    pub submitted: Instant,
}

pub struct WorkerConfig {
    pub max_batch: usize,
    pub prefix_cache_tokens: usize,
}

struct Active<'a> {
    seq: SeqDecode<'a>,
    session: Session,
    /// Tokens decided but not yet fed to the model.
    pending: Vec<u32>,
    events: UnboundedSender<Event>,
    deadline: Instant,
    prompt_tokens: usize,
    cached_prompt_tokens: usize,
    prefill_ms: f64,
}

fn send(events: &UnboundedSender<Event>, text: &str) {
    if !text.is_empty() {
        let _ = events.send(Event::Text(text.to_string()));
    }
}

/// Run until the job channel closes and every admitted request has finished.
pub fn run(lm: Arc<LoadedModel>, jobs: Receiver<Job>, cfg: WorkerConfig, metrics: Arc<Metrics>) {
    let lm: &LoadedModel = &lm;
    let mut cache = PrefixCache::new(cfg.prefix_cache_tokens);
    let mut active: Vec<Active> = Vec::new();
    let mut closed = false;
    loop {
        // Admit new requests between steps; sleep only when there is nothing to do.
        while !closed && active.len() < cfg.max_batch {
            let next = if active.is_empty() {
                match jobs.recv_timeout(Duration::from_millis(200)) {
                    Ok(j) => Some(j),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => {
                        closed = true;
                        None
                    }
                }
            } else {
                match jobs.try_recv() {
                    Ok(j) => Some(j),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => {
                        closed = true;
                        None
                    }
                }
            };
            let Some(job) = next else { break };
            metrics.queued.fetch_sub(1, Ordering::Relaxed);
            if let Some(a) = admit(lm, job, &mut cache, &metrics) {
                active.push(a);
            }
        }
        if active.is_empty() {
            if closed {
                return;
            }
            metrics.active.store(0, Ordering::Relaxed);
            continue;
        }
        metrics.active.store(active.len(), Ordering::Relaxed);
        step(lm, &mut active, &mut cache, &metrics);
        metrics.active.store(active.len(), Ordering::Relaxed);
    }
}

/// Prefill a request and decide its first token. Returns None when it is already finished.
fn admit<'a>(lm: &'a LoadedModel, job: Job, cache: &mut PrefixCache, metrics: &Metrics) -> Option<Active<'a>> {
    if job.events.is_closed() {
        return None;
    }
    let seq = match SeqDecode::new(lm, &job.prompt, job.opened_think, &job.params) {
        Ok(s) => s,
        Err(e) => {
            let _ = job.events.send(Event::Error(e.to_string()));
            return None;
        }
    };
    let mut session = cache.take(&job.prompt, lm);
    let kept = session.reuse_prefix(&job.prompt);
    let t0 = Instant::now();
    let logits = lm.model.forward_last(&job.prompt[kept..], &mut session.cache);
    let mut logits = match logits {
        Ok(l) => l,
        Err(e) => {
            let _ = job.events.send(Event::Error(e.to_string()));
            return None;
        }
    };
    session.tokens.extend_from_slice(&job.prompt[kept..]);
    let prefill_ms = t0.elapsed().as_secs_f64() * 1e3;
    metrics.prompt_tokens.fetch_add(job.prompt.len() as u64, Ordering::Relaxed);
    metrics.cached_prompt_tokens.fetch_add(kept as u64, Ordering::Relaxed);
    let mut a = Active {
        pending: vec![],
        events: job.events,
        deadline: job.deadline,
        prompt_tokens: job.prompt.len(),
        cached_prompt_tokens: kept,
        prefill_ms,
        seq,
        session,
    };
    let room = a.session.cache.max_len() - a.session.cache.len();
    let ev = a.events.clone();
    match a.seq.step(&mut logits, room, &mut |t| send(&ev, t)) {
        Ok(feed) => a.pending = feed,
        Err(e) => {
            let _ = a.events.send(Event::Error(e.to_string()));
            return None;
        }
    }
    metrics.observe_ttft(job.submitted.elapsed().as_secs_f64());
    if a.pending.is_empty() {
        finish(a, cache, metrics);
        return None;
    }
    Some(a)
}

fn finish(mut a: Active, cache: &mut PrefixCache, metrics: &Metrics) {
    let ev = a.events.clone();
    if let Err(e) = a.seq.flush(&mut |t| send(&ev, t)) {
        let _ = a.events.send(Event::Error(e.to_string()));
    }
    let g = a.seq.into_generation(a.prompt_tokens, a.cached_prompt_tokens, a.prefill_ms);
    metrics.completion_tokens.fetch_add(g.completion_tokens as u64, Ordering::Relaxed);
    let _ = a.events.send(Event::Done(Box::new(g)));
    cache.put(a.session);
    metrics.prefix_entries.store(cache.len(), Ordering::Relaxed);
    metrics.prefix_tokens.store(cache.tokens(), Ordering::Relaxed);
}

/// Advance every active sequence by one step.
fn step<'a>(lm: &'a LoadedModel, active: &mut Vec<Active<'a>>, cache: &mut PrefixCache, metrics: &Metrics) {
    let now = Instant::now();
    // Drop sequences whose client left or whose time is up.
    let mut i = 0;
    while i < active.len() {
        if active[i].events.is_closed() || now > active[i].deadline {
            let mut a = active.swap_remove(i);
            a.seq.cancel();
            metrics.cancelled.fetch_add(1, Ordering::Relaxed);
            metrics.active.store(active.len(), Ordering::Relaxed);
            finish(a, cache, metrics);
        } else {
            i += 1;
        }
    }
    if active.is_empty() {
        return;
    }
    let t0 = Instant::now();
    // Multi-token feeds (the forced `</think>`) are rare: run those sequences alone.
    let mut results: Vec<anyhow::Result<Vec<f32>>> = Vec::with_capacity(active.len());
    let single: Vec<usize> = (0..active.len()).filter(|&i| active[i].pending.len() == 1).collect();
    let mut batch_logits = if single.is_empty() {
        Ok(vec![])
    } else {
        let tokens: Vec<u32> = single.iter().map(|&i| active[i].pending[0]).collect();
        let mut caches: Vec<&mut nanbeige_model::Cache> =
            active.iter_mut().filter(|a| a.pending.len() == 1).map(|a| &mut a.session.cache).collect();
        lm.model.forward_decode_batch(&tokens, &mut caches)
    };
    let mut batch_iter = match &mut batch_logits {
        Ok(v) => Some(std::mem::take(v).into_iter()),
        Err(_) => None,
    };
    for a in active.iter_mut() {
        let r = if a.pending.len() == 1 {
            match batch_iter.as_mut().and_then(|it| it.next()) {
                Some(l) => Ok(l),
                None => Err(anyhow::anyhow!(
                    "batched decode failed: {}",
                    batch_logits.as_ref().err().map(|e| e.to_string()).unwrap_or_default()
                )),
            }
        } else {
            lm.model.forward_last(&a.pending, &mut a.session.cache)
        };
        results.push(r);
    }
    let n = active.len();
    metrics.observe_step(n, t0.elapsed().as_secs_f64());
    let mut done = vec![];
    for (i, (a, r)) in active.iter_mut().zip(results).enumerate() {
        let fed = std::mem::take(&mut a.pending);
        match r {
            Ok(mut logits) => {
                a.session.tokens.extend_from_slice(&fed);
                let room = a.session.cache.max_len() - a.session.cache.len();
                let ev = a.events.clone();
                match a.seq.step(&mut logits, room, &mut |t| send(&ev, t)) {
                    Ok(feed) if !feed.is_empty() => a.pending = feed,
                    Ok(_) => done.push(i),
                    Err(e) => {
                        let _ = a.events.send(Event::Error(e.to_string()));
                        a.seq.cancel();
                        done.push(i);
                    }
                }
            }
            Err(e) => {
                let _ = a.events.send(Event::Error(e.to_string()));
                a.seq.cancel();
                done.push(i);
            }
        }
    }
    // The gauge drops before the clients hear they are done, so a client that reads /metrics
    // right after its response never sees its own finished sequence still counted.
    let finished: Vec<Active> = done.into_iter().rev().map(|i| active.swap_remove(i)).collect();
    metrics.active.store(active.len(), Ordering::Relaxed);
    for a in finished {
        finish(a, cache, metrics);
    }
}
