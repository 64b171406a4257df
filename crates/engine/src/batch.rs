//! Offline batched generation: many independent prompts (RL rollouts, local evaluation, teacher
//! answers for distillation) run together, so each decode step reads the weights once for every
//! active sequence. Up to `max_batch` sequences are active; when one finishes the next prompt is
//! prefilled and joins (continuous batching, as the server does, without the HTTP side).
//!
//! Each sequence is decided by its own `SeqDecode` (sampling, stop strings, thinking budget), so a
//! batched sequence gives the same text as `generate` with the same seed.
//! Not here: streaming, cancellation, prefix caching across requests (the server has those).

use crate::generate::{GenParams, Generation, SeqDecode, Session};
use crate::load::LoadedModel;
use anyhow::{bail, Result};
use std::time::Instant;

/// One prompt to complete.
#[derive(Clone, Debug)]
pub struct BatchRequest {
    pub prompt: Vec<u32>,
    /// The rendered prompt ends inside `<think>` (see `prompt_opens_think`).
    pub opened_think: bool,
    pub params: GenParams,
}

struct Active<'a> {
    index: usize,
    seq: SeqDecode<'a>,
    session: Session,
    feed: Vec<u32>,
    prompt_tokens: usize,
    prefill_ms: f64,
}

/// Complete every request; results come back in request order. A request that fails (empty or
/// over-long prompt, invalid sampling parameters) gets its error without stopping the others.
/// `on_done(i, &generation)` is called as each one finishes (progress bars).
pub fn generate_batch(
    lm: &LoadedModel,
    reqs: &[BatchRequest],
    max_batch: usize,
    on_done: &mut dyn FnMut(usize, &Generation),
) -> Vec<Result<Generation>> {
    let mut out: Vec<Option<Result<Generation>>> = (0..reqs.len()).map(|_| None).collect();
    let mut active: Vec<Active> = Vec::new();
    let mut next = 0;
    let max_batch = max_batch.max(1);
    while next < reqs.len() || !active.is_empty() {
        // Admit new sequences: prefill alone, then decide the first token.
        while active.len() < max_batch && next < reqs.len() {
            let i = next;
            next += 1;
            match admit(lm, i, &reqs[i]) {
                Ok(a) => active.push(a),
                Err(e) => out[i] = Some(Err(e)),
            }
            // A sequence that finished at its first token is done already.
            if let Some(pos) = active.iter().position(|a| a.feed.is_empty()) {
                let a = active.swap_remove(pos);
                let idx = a.index;
                let g = a.finish();
                on_done(idx, &g);
                out[idx] = Some(Ok(g));
            }
        }
        if active.is_empty() {
            continue;
        }
        if let Err(e) = step(lm, &mut active) {
            // A failed batched forward is a model-level error: every active sequence gets it.
            let msg = e.to_string();
            for a in active.drain(..) {
                out[a.index] = Some(Err(anyhow::anyhow!("{msg}")));
            }
            continue;
        }
        let mut i = 0;
        while i < active.len() {
            if active[i].feed.is_empty() {
                let a = active.swap_remove(i);
                let idx = a.index;
                let g = a.finish();
                on_done(idx, &g);
                out[idx] = Some(Ok(g));
            } else {
                i += 1;
            }
        }
    }
    out.into_iter().map(|r| r.unwrap_or_else(|| Err(anyhow::anyhow!("request was not run")))).collect()
}

fn admit<'a>(lm: &'a LoadedModel, index: usize, r: &BatchRequest) -> Result<Active<'a>> {
    if r.prompt.is_empty() {
        bail!("the prompt is empty");
    }
    let ctx = lm.context_len;
    if r.prompt.len() >= ctx {
        bail!("context overflow: the prompt has {} tokens but the context holds {ctx}", r.prompt.len());
    }
    let mut seq = SeqDecode::new(lm, &r.prompt, r.opened_think, &r.params)?;
    let mut session = Session::new(lm);
    let t0 = Instant::now();
    let mut logits = lm.model.forward_last(&r.prompt, &mut session.cache)?;
    session.tokens.extend_from_slice(&r.prompt);
    let prefill_ms = t0.elapsed().as_secs_f64() * 1e3;
    let room = ctx - session.cache.len();
    let feed = seq.step(&mut logits, room, &mut |_| {})?;
    Ok(Active { index, seq, session, feed, prompt_tokens: r.prompt.len(), prefill_ms })
}

/// One decode step for every active sequence: single-token feeds in one batched forward,
/// multi-token feeds (the forced `</think>`) alone.
fn step(lm: &LoadedModel, active: &mut [Active]) -> Result<()> {
    let singles: Vec<usize> = (0..active.len()).filter(|&i| active[i].feed.len() == 1).collect();
    let mut logits: Vec<Option<Vec<f32>>> = vec![None; active.len()];
    if !singles.is_empty() {
        let tokens: Vec<u32> = singles.iter().map(|&i| active[i].feed[0]).collect();
        let mut caches: Vec<&mut nanbeige_model::Cache> =
            active.iter_mut().filter(|a| a.feed.len() == 1).map(|a| &mut a.session.cache).collect();
        for (&i, l) in singles.iter().zip(lm.model.forward_decode_batch(&tokens, &mut caches)?) {
            logits[i] = Some(l);
        }
    }
    for (a, l) in active.iter_mut().zip(logits) {
        let mut l = match l {
            Some(l) => l,
            None => lm.model.forward_last(&a.feed, &mut a.session.cache)?,
        };
        let fed = std::mem::take(&mut a.feed);
        a.session.tokens.extend_from_slice(&fed);
        let room = a.session.cache.max_len() - a.session.cache.len();
        a.feed = a.seq.step(&mut l, room, &mut |_| {})?;
    }
    Ok(())
}

impl Active<'_> {
    fn finish(mut self) -> Generation {
        // flush only fails on a broken UTF-8 tail, which the decoder already replaced.
        let _ = self.seq.flush(&mut |_| {});
        self.seq.into_generation(self.prompt_tokens, 0, self.prefill_ms)
    }
}
