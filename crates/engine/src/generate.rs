//! The generation loop for one sequence: prefill (reusing whatever prefix the session's KV cache
//! already holds), then sample token by token until EOS, a stop string, max tokens, the end of the
//! context, or cancellation. Streams text that never splits a UTF-8 character and never shows a
//! stop string. Enforces the thinking budget by closing `<think>` itself.
//!
//! Not here: chat templates and output parsing (nanbeige-text), batching several sequences.

use crate::load::LoadedModel;
use crate::json_constraint::JsonState;
use crate::sampler::{Sampler, SamplingParams};
use anyhow::{bail, Result};
use nanbeige_model::Cache;
use nanbeige_text::StreamDecoder;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Text the engine inserts to end reasoning when the thinking budget runs out.
pub const THINK_CLOSE: &str = "\n</think>\n\n";

#[derive(Clone, Debug, Default)]
pub struct GenParams {
    pub sampling: SamplingParams,
    /// None: until EOS or the end of the context.
    pub max_tokens: Option<usize>,
    pub stop: Vec<String>,
    /// Keep going past EOS tokens (benchmarks on random weights).
    pub ignore_eos: bool,
    /// After this many reasoning tokens the engine closes the thinking section.
    pub max_thinking_tokens: Option<usize>,
    /// Record each sampled token's log-probability and this many top alternatives.
    pub logprobs: Option<usize>,
    /// Constrain the output to JSON matching this schema (response_format).
    pub json_schema: Option<std::sync::Arc<crate::json_constraint::Schema>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// EOS token or stop string.
    Stop,
    /// max_tokens reached, or the context is full.
    Length,
    Cancelled,
}

#[derive(Clone, Debug, Serialize)]
pub struct Generation {
    /// Generated text, special tokens removed, cut before any stop string.
    pub text: String,
    pub tokens: Vec<u32>,
    pub finish_reason: FinishReason,
    pub stop_string: Option<String>,
    /// The end-of-sequence token that stopped generation (not in `tokens`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eos_token: Option<u32>,
    pub prompt_tokens: usize,
    /// Prompt tokens whose KV came from the session cache instead of a new prefill.
    pub cached_prompt_tokens: usize,
    pub completion_tokens: usize,
    pub reasoning_tokens: usize,
    pub thinking_budget_hit: bool,
    pub context_full: bool,
    pub seed: u64,
    pub prefill_ms: f64,
    pub time_to_first_token_ms: f64,
    pub decode_ms: f64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub logprobs: Vec<TokenLogprob>,
}

impl Generation {
    pub fn decode_tokens_per_sec(&self) -> f64 {
        if self.completion_tokens > 1 && self.decode_ms > 0.0 {
            (self.completion_tokens - 1) as f64 / (self.decode_ms / 1000.0)
        } else {
            0.0
        }
    }
    pub fn prefill_tokens_per_sec(&self) -> f64 {
        let n = self.prompt_tokens - self.cached_prompt_tokens;
        if self.prefill_ms > 0.0 {
            n as f64 / (self.prefill_ms / 1000.0)
        } else {
            0.0
        }
    }
}

/// One conversation's KV cache plus the tokens it holds, so a follow-up prompt that extends the
/// previous one only prefills what is new.
pub struct Session {
    pub cache: Cache,
    pub tokens: Vec<u32>,
}

impl Session {
    pub fn new(lm: &LoadedModel) -> Self {
        Self { cache: lm.model.new_cache(lm.context_len), tokens: vec![] }
    }

    pub fn reset(&mut self) {
        self.cache.reset();
        self.tokens.clear();
    }

    /// A new session holding a copy of this one's first `n` tokens and their cache.
    pub fn copy_prefix(&self, lm: &LoadedModel, n: usize) -> anyhow::Result<Session> {
        let n = n.min(self.tokens.len()).min(self.cache.len());
        Ok(Session { cache: lm.model.copy_cache_prefix(&self.cache, n)?, tokens: self.tokens[..n].to_vec() })
    }

    /// Keep the longest cached prefix of `prompt` (at least one token is always recomputed, to get
    /// fresh logits) and return how many tokens were kept.
    pub fn reuse_prefix(&mut self, prompt: &[u32]) -> usize {
        let common = self.tokens.iter().zip(prompt).take_while(|(a, b)| a == b).count();
        let keep = common.min(prompt.len().saturating_sub(1));
        self.cache.truncate(keep);
        self.tokens.truncate(keep);
        keep
    }
}

/// Decides how much of the text produced so far can be shown: everything except a tail that could
/// still turn into a stop string.
struct StopScanner {
    stops: Vec<String>,
    text: String,
    shown: usize,
}

impl StopScanner {
    /// Add text; returns (text now safe to show, the stop string if one appeared).
    fn push(&mut self, delta: &str) -> (String, Option<String>) {
        let scan_from = self.shown.saturating_sub(self.stops.iter().map(|s| s.len()).max().unwrap_or(0));
        self.text.push_str(delta);
        let scan_from = floor_char_boundary(&self.text, scan_from);
        let mut hit: Option<(usize, &String)> = None;
        for s in self.stops.iter().filter(|s| !s.is_empty()) {
            if let Some(i) = self.text[scan_from..].find(s.as_str()) {
                let at = scan_from + i;
                if hit.is_none_or(|(h, _)| at < h) {
                    hit = Some((at, s));
                }
            }
        }
        if let Some((at, s)) = hit {
            let (out, s) = (self.text[self.shown.min(at)..at].to_string(), s.clone());
            self.text.truncate(at);
            self.shown = at;
            return (out, Some(s));
        }
        // Hold back the longest tail that is a proper prefix of some stop string.
        let mut safe = self.text.len();
        for s in &self.stops {
            for (i, _) in s.char_indices().skip(1) {
                if self.text.ends_with(&s[..i]) {
                    safe = safe.min(self.text.len() - i);
                }
            }
        }
        let safe = safe.max(self.shown);
        let out = self.text[self.shown..safe].to_string();
        self.shown = safe;
        (out, None)
    }

    fn flush(&mut self) -> String {
        let out = self.text[self.shown..].to_string();
        self.shown = self.text.len();
        out
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Tracks whether generation is inside `<think>…</think>`.
struct ThinkState {
    inside: bool,
    text: String,
}

impl ThinkState {
    fn update(&mut self, delta: &str) {
        self.text.push_str(delta);
        // Only the tail can hold a tag that just completed.
        let tail_start = floor_char_boundary(&self.text, self.text.len().saturating_sub(delta.len() + 8));
        let tail = &self.text[tail_start..];
        let open = tail.rfind("<think>");
        let close = tail.rfind("</think>");
        match (open, close) {
            (Some(o), Some(c)) => self.inside = o > c,
            (Some(_), None) => self.inside = true,
            (None, Some(_)) => self.inside = false,
            (None, None) => {}
        }
        if self.text.len() > 64 {
            let cut = floor_char_boundary(&self.text, self.text.len() - 32);
            self.text.drain(..cut);
        }
    }
}

/// Does the rendered prompt leave the model inside an open `<think>` section?
pub fn prompt_opens_think(prompt_text: &str) -> bool {
    let t = prompt_text.trim_end();
    t.ends_with("<think>")
}

/// Log-probability of a generated token and of the most likely alternatives at that step.
#[derive(Clone, Debug, Serialize)]
pub struct TokenLogprob {
    pub token: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

/// One sequence's decoding state: from "here are the next-token logits" to "feed these tokens
/// next", whether the model runs this sequence alone or in a batch with others. Applies sampling,
/// EOS, max tokens, stop strings, the thinking budget and the context limit, and streams text.
pub struct SeqDecode<'a> {
    lm: &'a LoadedModel,
    params: GenParams,
    sampler: Sampler,
    decoder: StreamDecoder<'a>,
    stops: StopScanner,
    think: ThinkState,
    think_close_ids: Vec<u32>,
    pub out_tokens: Vec<u32>,
    pub reasoning_tokens: usize,
    pub budget_hit: bool,
    pub context_full: bool,
    pub logprobs: Vec<TokenLogprob>,
    finish: Option<FinishReason>,
    stop_string: Option<String>,
    eos_token: Option<u32>,
    json: Option<JsonState>,
    started: Instant,
    first_token: Option<Instant>,
}

impl<'a> SeqDecode<'a> {
    pub fn new(lm: &'a LoadedModel, prompt: &[u32], prompt_opened_think: bool, params: &GenParams) -> Result<Self> {
        params.sampling.validate()?;
        let tok = &lm.text.tokenizer;
        Ok(Self {
            lm,
            params: params.clone(),
            sampler: Sampler::new(params.sampling.clone(), prompt),
            decoder: StreamDecoder::new(tok, true),
            stops: StopScanner { stops: params.stop.clone(), text: String::new(), shown: 0 },
            think: ThinkState { inside: prompt_opened_think, text: String::new() },
            think_close_ids: tok.encode(THINK_CLOSE, false)?,
            out_tokens: vec![],
            reasoning_tokens: 0,
            budget_hit: false,
            context_full: false,
            logprobs: vec![],
            finish: None,
            stop_string: None,
            eos_token: None,
            json: params.json_schema.clone().map(JsonState::new),
            started: Instant::now(),
            first_token: None,
        })
    }

    pub fn is_done(&self) -> bool {
        self.finish.is_some()
    }

    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.finish
    }

    pub fn seed(&self) -> u64 {
        self.sampler.seed
    }

    /// Text produced so far (stop strings cut).
    pub fn text(&self) -> &str {
        &self.stops.text
    }

    /// Tokens decided so far.
    pub fn completion_tokens(&self) -> usize {
        self.out_tokens.len()
    }

    pub fn cancel(&mut self) {
        if self.finish.is_none() {
            self.finish = Some(FinishReason::Cancelled);
        }
    }

    /// Decide what to feed the model next from its logits; `room` is how many more tokens the
    /// context holds. Returns the tokens to feed (one sampled token, or the forced `</think>`
    /// sequence), or nothing when the sequence has finished.
    pub fn step(&mut self, logits: &mut [f32], room: usize, on_text: &mut dyn FnMut(&str)) -> Result<Vec<u32>> {
        if self.finish.is_some() {
            return Ok(vec![]);
        }
        if self.out_tokens.len() >= self.params.max_tokens.unwrap_or(usize::MAX) {
            self.finish = Some(FinishReason::Length);
            return Ok(vec![]);
        }
        // Thinking budget: past it, feed the closing tag instead of sampling.
        let forced: Vec<u32> = match self.params.max_thinking_tokens {
            Some(budget) if self.think.inside && self.reasoning_tokens >= budget && !self.budget_hit => {
                self.budget_hit = true;
                self.think_close_ids.clone()
            }
            _ => {
                let top = self.params.logprobs;
                let lp = top.map(|n| log_softmax_top(logits, n));
                let t = match self.json.clone() {
                    Some(js) => self.pick_json(logits, &js)?,
                    None => self.sampler.sample(logits),
                };
                if let Some((lse, top)) = lp {
                    self.logprobs.push(TokenLogprob { token: t, logprob: lse.logprob_of(t), top });
                }
                self.first_token.get_or_insert_with(Instant::now);
                if !self.params.ignore_eos && self.lm.eos_ids.contains(&t) {
                    self.finish = Some(FinishReason::Stop);
                    self.eos_token = Some(t);
                    return Ok(vec![]);
                }
                vec![t]
            }
        };
        if forced.len() > room {
            self.context_full = true;
            self.finish = Some(FinishReason::Length);
            return Ok(vec![]);
        }
        for &t in &forced {
            let was_inside = self.think.inside;
            self.sampler.accept(t);
            self.out_tokens.push(t);
            let hit = match self.decoder.push(t)? {
                Some(delta) => {
                    self.think.update(&delta);
                    let (show, hit) = self.stops.push(&delta);
                    if !show.is_empty() {
                        on_text(&show);
                    }
                    hit
                }
                None => None,
            };
            if was_inside || self.think.inside {
                self.reasoning_tokens += 1;
            }
            if let Some(js) = self.json.as_mut() {
                js.feed(&self.lm.token_texts()[t as usize]);
                if js.is_complete() {
                    self.finish = Some(FinishReason::Stop);
                    return Ok(vec![]);
                }
            }
            if let Some(s) = hit {
                self.stop_string = Some(s);
                self.finish = Some(FinishReason::Stop);
                // The model need not see tokens of a finished sequence.
                return Ok(vec![]);
            }
        }
        Ok(forced)
    }

    /// Choose a token that keeps the output valid JSON for the schema. Rejection sampling (draw,
    /// refuse invalid, draw again) samples exactly from the distribution restricted to valid
    /// tokens without scoring the whole vocabulary; a full scan in logit order backs it up.
    fn pick_json(&mut self, logits: &mut [f32], js: &JsonState) -> Result<u32> {
        let lm = self.lm;
        let texts = lm.token_texts();
        let valid = |t: u32| {
            let s = &texts[t as usize];
            !s.is_empty() && !s.contains('\u{FFFD}') && js.accepts(s)
        };
        self.sampler.apply_penalties(logits);
        for _ in 0..32 {
            let t = self.sampler.pick(logits);
            if valid(t) {
                return Ok(t);
            }
            logits[t as usize] = f32::NEG_INFINITY;
        }
        let mut order: Vec<u32> = (0..logits.len() as u32).filter(|&t| logits[t as usize] > f32::NEG_INFINITY).collect();
        order.sort_unstable_by(|a, b| logits[*b as usize].total_cmp(&logits[*a as usize]));
        order.into_iter().find(|&t| valid(t)).ok_or_else(|| anyhow::anyhow!("no token can continue the JSON output"))
    }

    /// Flush text held back (a partial character or a possible stop-string start) once finished.
    pub fn flush(&mut self, on_text: &mut dyn FnMut(&str)) -> Result<()> {
        if self.stop_string.is_some() {
            return Ok(());
        }
        if let Some(rest) = self.decoder.finish()? {
            let (show, hit) = self.stops.push(&rest);
            if !show.is_empty() {
                on_text(&show);
            }
            if let Some(s) = hit {
                self.stop_string = Some(s);
                self.finish = Some(FinishReason::Stop);
                return Ok(());
            }
        }
        let rest = self.stops.flush();
        if !rest.is_empty() {
            on_text(&rest);
        }
        Ok(())
    }

    pub fn time_to_first_token_ms(&self) -> f64 {
        self.first_token.map(|t| (t - self.started).as_secs_f64() * 1e3).unwrap_or(0.0)
    }

    /// The summary once the sequence is done.
    pub fn into_generation(self, prompt_tokens: usize, cached_prompt_tokens: usize, prefill_ms: f64) -> Generation {
        let ttft = self.time_to_first_token_ms();
        let total = self.started.elapsed().as_secs_f64() * 1e3;
        Generation {
            text: self.stops.text,
            completion_tokens: self.out_tokens.len(),
            tokens: self.out_tokens,
            finish_reason: self.finish.unwrap_or(FinishReason::Length),
            stop_string: self.stop_string,
            eos_token: self.eos_token,
            prompt_tokens,
            cached_prompt_tokens,
            reasoning_tokens: self.reasoning_tokens,
            thinking_budget_hit: self.budget_hit,
            context_full: self.context_full,
            seed: self.sampler.seed,
            prefill_ms,
            time_to_first_token_ms: ttft,
            decode_ms: (total - ttft).max(0.0),
            logprobs: self.logprobs,
        }
    }
}

/// Log-sum-exp of the logits plus the `n` most likely tokens with their log-probabilities.
struct LogSumExp(f32, Vec<f32>);

impl LogSumExp {
    fn logprob_of(&self, t: u32) -> f32 {
        self.1.get(t as usize).map(|l| l - self.0).unwrap_or(f32::NEG_INFINITY)
    }
}

fn log_softmax_top(logits: &[f32], n: usize) -> (LogSumExp, Vec<(u32, f32)>) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|l| (l - max).exp()).sum();
    let lse = max + sum.ln();
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    let n = n.min(idx.len());
    if n > 0 {
        idx.select_nth_unstable_by(n - 1, |a, b| logits[*b as usize].total_cmp(&logits[*a as usize]));
    }
    let mut top: Vec<(u32, f32)> = idx[..n].iter().map(|&i| (i, logits[i as usize] - lse)).collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1));
    (LogSumExp(lse, logits.to_vec()), top)
}

/// Run generation for one sequence. `on_text` receives displayable text as it is produced.
pub fn generate(
    lm: &LoadedModel,
    session: &mut Session,
    prompt: &[u32],
    prompt_opened_think: bool,
    params: &GenParams,
    cancel: Option<&AtomicBool>,
    on_text: &mut dyn FnMut(&str),
) -> Result<Generation> {
    if prompt.is_empty() {
        bail!("the prompt is empty");
    }
    let ctx = session.cache.max_len();
    if prompt.len() >= ctx {
        bail!("context overflow: the prompt has {} tokens but the context holds {ctx}", prompt.len());
    }
    let mut seq = SeqDecode::new(lm, prompt, prompt_opened_think, params)?;
    let kept = session.reuse_prefix(prompt);
    let t0 = Instant::now();
    let mut logits = lm.model.forward_last(&prompt[kept..], &mut session.cache)?;
    session.tokens.extend_from_slice(&prompt[kept..]);
    let prefill_ms = t0.elapsed().as_secs_f64() * 1e3;
    loop {
        if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            seq.cancel();
            break;
        }
        let room = ctx - session.cache.len();
        let feed = seq.step(&mut logits, room, on_text)?;
        if feed.is_empty() {
            break;
        }
        logits = lm.model.forward_last(&feed, &mut session.cache)?;
        session.tokens.extend_from_slice(&feed);
    }
    seq.flush(on_text)?;
    Ok(seq.into_generation(prompt.len(), kept, prefill_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], chunks: &[&str]) -> (String, String, Option<String>) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut sc = StopScanner { stops, text: String::new(), shown: 0 };
        let mut shown = String::new();
        for c in chunks {
            let (s, hit) = sc.push(c);
            shown.push_str(&s);
            if let Some(h) = hit {
                return (shown, sc.text.clone(), Some(h));
            }
        }
        shown.push_str(&sc.flush());
        (shown, sc.text.clone(), None)
    }

    #[test]
    fn stop_string_split_across_chunks_is_never_shown() {
        let (shown, text, hit) = run(&["STOP"], &["hello S", "T", "OP world"]);
        assert_eq!(shown, "hello ");
        assert_eq!(text, "hello ");
        assert_eq!(hit.as_deref(), Some("STOP"));
    }

    #[test]
    fn false_start_of_stop_string_is_released() {
        let (shown, _, hit) = run(&["STOP"], &["a ST", "x", "b"]);
        assert_eq!(shown, "a STxb");
        assert!(hit.is_none());
    }

    #[test]
    fn earliest_of_several_stops_wins_and_multibyte_is_safe() {
        let (shown, _, hit) = run(&["é!", "xyz"], &["ab", "cé", "!xyz"]);
        assert_eq!(shown, "abc");
        assert_eq!(hit.as_deref(), Some("é!"));
    }

    #[test]
    fn think_state_follows_tags() {
        let mut t = ThinkState { inside: false, text: String::new() };
        t.update("<thi");
        assert!(!t.inside);
        t.update("nk>\nreasoning");
        assert!(t.inside);
        t.update(" more </th");
        assert!(t.inside);
        t.update("ink>\n\nanswer");
        assert!(!t.inside);
        assert!(prompt_opens_think("<|im_start|>assistant\n<think>\n"));
        assert!(!prompt_opens_think("<|im_start|>assistant\n"));
    }
}
