//! The generation loop for one sequence: prefill (reusing whatever prefix the session's KV cache
//! already holds), then sample token by token until EOS, a stop string, max tokens, the end of the
//! context, or cancellation. Streams text that never splits a UTF-8 character and never shows a
//! stop string. Enforces the thinking budget by closing `<think>` itself.
//!
//! Not here: chat templates and output parsing (nanbeige-text), batching several sequences.

use crate::load::LoadedModel;
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

    /// Keep the longest cached prefix of `prompt` (at least one token is always recomputed, to get
    /// fresh logits) and return how many tokens were kept.
    fn reuse_prefix(&mut self, prompt: &[u32]) -> usize {
        let common = self.tokens.iter().zip(prompt).take_while(|(a, b)| a == b).count();
        let keep = common.min(prompt.len().saturating_sub(1));
        self.cache.truncate(keep);
        self.tokens.truncate(keep);
        keep
    }
}

/// Decides how much of the text produced so far can be shown: everything except a tail that could
/// still turn into a stop string.
struct StopScanner<'a> {
    stops: &'a [String],
    text: String,
    shown: usize,
}

impl<'a> StopScanner<'a> {
    /// Add text; returns (text now safe to show, the stop string if one appeared).
    fn push(&mut self, delta: &str) -> (String, Option<&'a String>) {
        let scan_from = self.shown.saturating_sub(self.stops.iter().map(|s| s.len()).max().unwrap_or(0));
        self.text.push_str(delta);
        let scan_from = floor_char_boundary(&self.text, scan_from);
        let mut hit: Option<(usize, &'a String)> = None;
        for s in self.stops.iter().filter(|s| !s.is_empty()) {
            if let Some(i) = self.text[scan_from..].find(s.as_str()) {
                let at = scan_from + i;
                if hit.is_none_or(|(h, _)| at < h) {
                    hit = Some((at, s));
                }
            }
        }
        if let Some((at, s)) = hit {
            let out = self.text[self.shown.min(at)..at].to_string();
            self.text.truncate(at);
            self.shown = at;
            return (out, Some(s));
        }
        // Hold back the longest tail that is a proper prefix of some stop string.
        let mut safe = self.text.len();
        for s in self.stops {
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

/// Run generation. `on_text` receives displayable text as it is produced.
pub fn generate(
    lm: &LoadedModel,
    session: &mut Session,
    prompt: &[u32],
    prompt_opened_think: bool,
    params: &GenParams,
    cancel: Option<&AtomicBool>,
    on_text: &mut dyn FnMut(&str),
) -> Result<Generation> {
    params.sampling.validate()?;
    if prompt.is_empty() {
        bail!("the prompt is empty");
    }
    let ctx = session.cache.max_len();
    if prompt.len() >= ctx {
        bail!("context overflow: the prompt has {} tokens but the context holds {ctx}", prompt.len());
    }
    let tok = &lm.text.tokenizer;
    let think_close_ids = tok.encode(THINK_CLOSE, false)?;
    let kept = session.reuse_prefix(prompt);
    let mut sampler = Sampler::new(params.sampling.clone(), prompt);
    let mut decoder = StreamDecoder::new(tok, true);
    let mut stops = StopScanner { stops: &params.stop, text: String::new(), shown: 0 };
    let mut think = ThinkState { inside: prompt_opened_think, text: String::new() };
    let max_tokens = params.max_tokens.unwrap_or(usize::MAX);

    let t0 = Instant::now();
    let mut logits = lm.model.forward_last(&prompt[kept..], &mut session.cache)?;
    session.tokens.extend_from_slice(&prompt[kept..]);
    let prefill_ms = t0.elapsed().as_secs_f64() * 1e3;
    let mut ttft_ms = 0.0;
    let t_decode = Instant::now();

    let mut out_tokens: Vec<u32> = vec![];
    let mut reasoning_tokens = 0usize;
    let mut budget_hit = false;
    let mut context_full = false;
    let mut finish = FinishReason::Length;
    let mut stop_string = None;

    'outer: while out_tokens.len() < max_tokens {
        if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            finish = FinishReason::Cancelled;
            break;
        }
        // Thinking budget: past it, feed the closing tag instead of sampling.
        let forced: Vec<u32> = match params.max_thinking_tokens {
            Some(budget) if think.inside && reasoning_tokens >= budget && !budget_hit => {
                budget_hit = true;
                think_close_ids.clone()
            }
            _ => {
                let t = sampler.sample(&mut logits);
                if out_tokens.is_empty() {
                    ttft_ms = prefill_ms + t_decode.elapsed().as_secs_f64() * 1e3;
                }
                if !params.ignore_eos && lm.eos_ids.contains(&t) {
                    finish = FinishReason::Stop;
                    break;
                }
                vec![t]
            }
        };
        if session.cache.len() + forced.len() > ctx {
            context_full = true;
            break;
        }
        for &t in &forced {
            let was_inside = think.inside;
            sampler.accept(t);
            out_tokens.push(t);
            let hit = match decoder.push(t)? {
                Some(delta) => {
                    think.update(&delta);
                    let (show, hit) = stops.push(&delta);
                    if !show.is_empty() {
                        on_text(&show);
                    }
                    hit
                }
                None => None,
            };
            if was_inside || think.inside {
                reasoning_tokens += 1;
            }
            if let Some(s) = hit {
                // Tokens not yet fed to the model stay out of the session, which mirrors the cache.
                stop_string = Some(s.clone());
                finish = FinishReason::Stop;
                break 'outer;
            }
        }
        logits = lm.model.forward_last(&forced, &mut session.cache)?;
        session.tokens.extend_from_slice(&forced);
    }
    if finish != FinishReason::Stop || stop_string.is_none() {
        if let Some(rest) = decoder.finish()? {
            let (show, hit) = stops.push(&rest);
            if !show.is_empty() {
                on_text(&show);
            }
            if let Some(s) = hit {
                stop_string = Some(s.clone());
                finish = FinishReason::Stop;
            }
        }
        if stop_string.is_none() {
            let rest = stops.flush();
            if !rest.is_empty() {
                on_text(&rest);
            }
        }
    }
    if context_full {
        finish = FinishReason::Length;
    }
    Ok(Generation {
        text: stops.text.clone(),
        completion_tokens: out_tokens.len(),
        tokens: out_tokens,
        finish_reason: finish,
        stop_string,
        prompt_tokens: prompt.len(),
        cached_prompt_tokens: kept,
        reasoning_tokens,
        thinking_budget_hit: budget_hit,
        context_full,
        seed: sampler.seed,
        prefill_ms,
        time_to_first_token_ms: ttft_ms,
        decode_ms: t_decode.elapsed().as_secs_f64() * 1e3,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], chunks: &[&str]) -> (String, String, Option<String>) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut sc = StopScanner { stops: &stops, text: String::new(), shown: 0 };
        let mut shown = String::new();
        for c in chunks {
            let (s, hit) = sc.push(c);
            shown.push_str(&s);
            if let Some(h) = hit {
                return (shown, sc.text.clone(), Some(h.clone()));
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
