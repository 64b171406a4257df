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

/// Most tokens one forward pass feeds: every decoding sequence's token, then prompt chunks.
/// The size of a prefill chunk (long prompts go through in pieces of this size anyway).
pub const STEP_TOKENS: usize = 512;

/// How many of its pending tokens each sequence feeds this step, given (pending tokens, whether
/// they are the prompt) per sequence in admission order: decoding sequences all of theirs (one
/// token, or a forced `</think>`), then prompts while the step has room (`STEP_TOKENS` in all).
pub fn plan_feeds(seqs: &[(usize, bool)]) -> Vec<usize> {
    let mut take = vec![0usize; seqs.len()];
    let mut room = STEP_TOKENS;
    for prompts in [false, true] {
        for (t, &(pending, prefilling)) in take.iter_mut().zip(seqs).filter(|(_, s)| s.1 == prompts) {
            *t = if prefilling { pending.min(room) } else { pending };
            room = room.saturating_sub(*t);
        }
    }
    take
}

struct Active<'a> {
    index: usize,
    seq: SeqDecode<'a>,
    session: Session,
    /// Tokens to feed: the rest of the prompt, or the tokens decided last step.
    feed: Vec<u32>,
    prefilling: bool,
    prompt_tokens: usize,
    prefill_ms: f64,
    /// Finished (a decided EOS, a stop string, the token limit).
    done: bool,
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
        while active.len() < max_batch && next < reqs.len() {
            let i = next;
            next += 1;
            match admit(lm, i, &reqs[i]) {
                Ok(a) => active.push(a),
                Err(e) => out[i] = Some(Err(e)),
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
            if active[i].done {
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
    let seq = SeqDecode::new(lm, &r.prompt, r.opened_think, &r.params)?;
    let session = Session::new(lm);
    Ok(Active {
        index,
        seq,
        session,
        feed: r.prompt.clone(),
        prefilling: true,
        prompt_tokens: r.prompt.len(),
        prefill_ms: 0.0,
        done: false,
    })
}

/// One forward pass: every decoding sequence's feed, then prompt chunks while there is room;
/// each sequence whose feed is complete decides its next token.
fn step(lm: &LoadedModel, active: &mut [Active]) -> Result<()> {
    let take = plan_feeds(&active.iter().map(|a| (a.feed.len(), a.prefilling)).collect::<Vec<_>>());
    let t0 = Instant::now();
    let logits = {
        let mut feeds: Vec<&[u32]> = vec![];
        let mut caches: Vec<&mut nanbeige_model::Cache> = vec![];
        for (a, &n) in active.iter_mut().zip(&take).filter(|(_, &n)| n > 0) {
            feeds.push(&a.feed[..n]);
            caches.push(&mut a.session.cache);
        }
        lm.model.forward_batch(&feeds, &mut caches)?
    };
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let fed = active.iter_mut().zip(&take).filter(|(_, &n)| n > 0);
    for ((a, &n), mut l) in fed.zip(logits) {
        a.session.tokens.extend(a.feed.drain(..n));
        if a.prefilling {
            a.prefill_ms += ms;
            if !a.feed.is_empty() {
                continue;
            }
            a.prefilling = false;
        }
        let room = a.session.cache.max_len() - a.session.cache.len();
        a.feed = a.seq.step(&mut l, room, &mut |_| {})?;
        a.done = a.feed.is_empty();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_sequences_feed_first_and_prompts_share_the_rest() {
        assert_eq!(plan_feeds(&[(300, true), (1, false), (400, true), (3, false)]), vec![300, 1, 208, 3]);
        assert_eq!(plan_feeds(&[(600, true), (1, false)]), vec![511, 1]);
        // More decoding tokens than the budget: they all go, prompts wait.
        let many: Vec<(usize, bool)> = (0..520).map(|_| (1, false)).chain([(10, true)]).collect();
        let t = plan_feeds(&many);
        assert!(t[..520].iter().all(|&n| n == 1) && t[520] == 0);
    }
}

impl Active<'_> {
    fn finish(mut self) -> Generation {
        // flush only fails on a broken UTF-8 tail, which the decoder already replaced.
        let _ = self.seq.flush(&mut |_| {});
        self.seq.into_generation(self.prompt_tokens, 0, self.prefill_ms)
    }
}
