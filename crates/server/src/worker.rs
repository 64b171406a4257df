//! The continuous-batching scheduler: one thread owns the model and runs a loop of steps. New
//! requests are admitted between steps (reusing a cached prefix when one matches); each step is one
//! batched forward pass in which every decoding sequence advances by one token and admitted prompts
//! are fed in chunks (`nanbeige_engine::plan_feeds`: at most 512 tokens a step in all), so weights
//! are read once per step for the whole batch, several prompts arriving together are prefilled
//! together, and a long prompt does not stall the streams already running.
//!
//! A request whose client went away (its event channel closed) or whose deadline passed is dropped
//! at the next step, freeing its slot at once. Not here: HTTP, JSON, prompt rendering.

use crate::metrics::Metrics;
use crate::prefix_cache::PrefixCache;
use nanbeige_engine::generate::SeqDecode;
use nanbeige_engine::{plan_feeds, GenParams, Generation, LoadedModel, Session};
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
    /// Tokens to feed the model: the rest of the prompt, or tokens decided but not yet fed.
    pending: Vec<u32>,
    /// `pending` is (the rest of) the prompt: no token has been decided yet.
    prefilling: bool,
    events: UnboundedSender<Event>,
    deadline: Instant,
    submitted: Instant,
    prompt_tokens: usize,
    cached_prompt_tokens: usize,
    /// Time of the steps that fed the prompt.
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

/// Take a request into the batch: its prompt, minus a cached prefix, becomes its first feed.
fn admit<'a>(lm: &'a LoadedModel, job: Job, cache: &mut PrefixCache, metrics: &Metrics) -> Option<Active<'a>> {
    if job.events.is_closed() {
        return None;
    }
    let fail = |e: String| {
        let _ = job.events.send(Event::Error(e));
        None
    };
    let seq = match SeqDecode::new(lm, &job.prompt, job.opened_think, &job.params) {
        Ok(s) => s,
        Err(e) => return fail(e.to_string()),
    };
    if job.prompt.is_empty() {
        return fail("the prompt is empty".into());
    }
    let mut session = cache.take(&job.prompt, lm);
    if job.prompt.len() >= session.cache.max_len() {
        return fail(format!(
            "context overflow: the prompt has {} tokens but the context holds {}",
            job.prompt.len(),
            session.cache.max_len()
        ));
    }
    let kept = session.reuse_prefix(&job.prompt);
    metrics.prompt_tokens.fetch_add(job.prompt.len() as u64, Ordering::Relaxed);
    metrics.cached_prompt_tokens.fetch_add(kept as u64, Ordering::Relaxed);
    Some(Active {
        pending: job.prompt[kept..].to_vec(),
        prefilling: true,
        events: job.events,
        deadline: job.deadline,
        submitted: job.submitted,
        prompt_tokens: job.prompt.len(),
        cached_prompt_tokens: kept,
        prefill_ms: 0.0,
        seq,
        session,
    })
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

/// One batched forward pass: every decoding sequence feeds its pending token(s), prompts feed
/// chunks in admission order while the step has room; then each sequence whose feed is complete
/// decides its next token.
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
    let take = plan_feeds(&active.iter().map(|a| (a.pending.len(), a.prefilling)).collect::<Vec<_>>());
    let fed: Vec<usize> = (0..active.len()).filter(|&i| take[i] > 0).collect();
    let t0 = Instant::now();
    let logits = {
        let mut feeds: Vec<&[u32]> = Vec::with_capacity(fed.len());
        let mut caches: Vec<&mut nanbeige_model::Cache> = Vec::with_capacity(fed.len());
        for (a, &n) in active.iter_mut().zip(&take).filter(|(_, &n)| n > 0) {
            feeds.push(&a.pending[..n]);
            caches.push(&mut a.session.cache);
        }
        lm.model.forward_batch(&feeds, &mut caches)
    };
    let secs = t0.elapsed().as_secs_f64();
    let decoding = fed.iter().filter(|&&i| !active[i].prefilling).count();
    if decoding > 0 {
        metrics.observe_step(decoding, secs);
    }
    let mut done = vec![];
    match logits {
        Ok(all) => {
            for (&i, mut logits) in fed.iter().zip(all) {
                let a = &mut active[i];
                let n = take[i];
                a.session.tokens.extend(a.pending.drain(..n));
                if a.prefilling {
                    a.prefill_ms += secs * 1e3;
                    if !a.pending.is_empty() {
                        continue; // more of the prompt next step
                    }
                    a.prefilling = false;
                }
                let room = a.session.cache.max_len() - a.session.cache.len();
                let ev = a.events.clone();
                let first = a.seq.completion_tokens() == 0;
                match a.seq.step(&mut logits, room, &mut |t| send(&ev, t)) {
                    Ok(feed) => {
                        if first {
                            metrics.observe_ttft(a.submitted.elapsed().as_secs_f64());
                        }
                        if feed.is_empty() {
                            done.push(i);
                        } else {
                            a.pending = feed;
                        }
                    }
                    Err(e) => {
                        let _ = a.events.send(Event::Error(e.to_string()));
                        a.seq.cancel();
                        done.push(i);
                    }
                }
            }
        }
        Err(e) => {
            // A failed batched forward is a model-level error: every sequence in it gets it.
            let msg = format!("batched forward failed: {e}");
            for &i in &fed {
                let _ = active[i].events.send(Event::Error(msg.clone()));
                active[i].seq.cancel();
                done.push(i);
            }
        }
    }
    // The gauge drops before the clients hear they are done, so a client that reads /metrics
    // right after its response never sees its own finished sequence still counted.
    done.sort_unstable();
    let finished: Vec<Active> = done.into_iter().rev().map(|i| active.swap_remove(i)).collect();
    metrics.active.store(active.len(), Ordering::Relaxed);
    for a in finished {
        finish(a, cache, metrics);
    }
}
