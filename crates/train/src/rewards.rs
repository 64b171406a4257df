//! Rewards for RL, scored per group of replies to one prompt:
//! - verifiable: the task's own checker from nanbeige-eval (math answer, countdown expression,
//!   share of code tests passed) plus a small bonus for the `<think>…</think>` answer format;
//! - code stage two: the same, plus an efficiency term that counts only when every test passes
//!   (the candidate's measured run time against the reference solution's on large inputs);
//! - pair-wise: each reply's win rate against the others in its group under a preference function
//!   (a Bradley-Terry reward model from rm.rs, or an LLM judge behind an endpoint).
//!
//! Not here: advantages and losses (rl.rs), the loop (grpo.rs).

use crate::rl;
use anyhow::Result;
use nanbeige_eval::backend::Reply;
use nanbeige_eval::items::{Gold, Item};
use nanbeige_eval::{runner, score};
use serde_json::{json, Value};
use std::time::Duration;

/// One reply's reward and what went into it.
#[derive(Clone, Debug)]
pub struct Scored {
    pub reward: f64,
    /// Fully correct (every test, the exact answer); what the pass-rate filter and metrics count.
    pub passed: bool,
    pub extra: Value,
}

pub trait GroupReward: Sync {
    fn score(&self, item: &Item, replies: &[Reply]) -> Result<Vec<Scored>>;
    /// Whether the pass-rate filter applies (pair-wise rewards have no notion of passing).
    fn has_pass(&self) -> bool {
        true
    }
    /// Extra metrics gathered while scoring this step's groups, merged into its log line.
    fn step_stats(&self) -> Option<Value> {
        None
    }
}

/// The task's checker plus `format_weight` for the answer format; for numeric answers that are
/// wrong, optionally `digit_weight` × the share of digits right (`score::digit_credit`).
#[derive(Clone)]
pub struct Verifiable {
    pub format_weight: f64,
    pub digit_weight: f64,
    pub code_timeout: Duration,
}

impl Verifiable {
    fn one(&self, item: &Item, r: &Reply) -> Result<Scored> {
        let (s, mut extra) = runner::score_reply(item, r, self.code_timeout)?;
        let fmt = score::format_ok(&r.text);
        let mut reward = s + self.format_weight * f64::from(u8::from(fmt));
        if let (Gold::Number(g), true) = (&item.gold, s < 1.0 && self.digit_weight > 0.0) {
            let d = score::digit_credit(&r.text, g);
            reward += self.digit_weight * d;
            extra["digit_credit"] = json!(d);
        }
        Ok(Scored { reward, passed: s >= 1.0, extra })
    }
}

impl GroupReward for Verifiable {
    fn score(&self, item: &Item, replies: &[Reply]) -> Result<Vec<Scored>> {
        replies.iter().map(|r| self.one(item, r)).collect()
    }
}

/// Code RL stage two: verifiable reward + `weight` × efficiency for replies that pass every test.
/// Efficiency = clamp(t_reference / t_candidate, 0, 2) / 2, so matching the reference earns half
/// the bonus and twice as fast earns all of it; times are medians of `repeats` runs of the item's
/// large-input benchmark in the sandbox.
pub struct CodeEfficiency {
    pub base: Verifiable,
    pub weight: f64,
    pub repeats: usize,
}

impl GroupReward for CodeEfficiency {
    fn score(&self, item: &Item, replies: &[Reply]) -> Result<Vec<Scored>> {
        let mut out = self.base.score(item, replies)?;
        let Gold::Code(tests) = &item.gold else { return Ok(out) };
        let Some(mut timer) = score::SpeedTimer::new(tests, self.repeats, self.base.code_timeout) else { return Ok(out) };
        for (s, r) in out.iter_mut().zip(replies) {
            if !s.passed {
                continue;
            }
            let sp = timer.time(&r.text)?;
            let eff = sp.speedup.map_or(0.0, |x| x.clamp(0.0, 2.0) / 2.0);
            s.reward += self.weight * eff;
            if let Value::Object(m) = &mut s.extra {
                m.insert("efficiency".into(), json!(eff));
                m.insert("bench_s".into(), json!(sp.reply_s));
                m.insert("reference_bench_s".into(), json!(sp.reference_s));
            }
        }
        Ok(out)
    }
}

/// A preference between two replies to the same prompt: P(a beats b).
pub trait Preference: Sync {
    fn prefer(&self, item: &Item, a: &Reply, b: &Reply) -> Result<f64>;
    /// A Bradley-Terry scorer gives one scalar per reply, with P(i beats j) = σ(r_i - r_j);
    /// judges that only compare return None.
    fn rewards(&self, _item: &Item, _replies: &[Reply]) -> Result<Option<Vec<f64>>> {
        Ok(None)
    }
    /// Learn from an annotator's labels (right or not; None: no label) of replies it has just
    /// scored; a frozen preference ignores them.
    fn learn(&self, _item: &Item, _replies: &[Reply], _labels: &[Option<bool>]) -> Result<()> {
        Ok(())
    }
    /// What `learn` saw since the last call, for the step's log line.
    fn drain_stats(&self) -> Option<Value> {
        None
    }
}

/// Pair-wise rewards: win rates inside the group. With `watch`, the task's checker also scores
/// every reply, for the logged pass rate: how a held-out judge sees the policy while it trains,
/// which is where reward hacking shows first. It never enters this group's reward; with `annotate`
/// its labels go to `judge.learn` after the group is scored (online reward-model refresh: the
/// checker as the annotator of the policy's own samples).
pub struct Pairwise<P: Preference> {
    pub judge: P,
    pub watch: Option<Verifiable>,
    pub annotate: bool,
}

impl<P: Preference> GroupReward for Pairwise<P> {
    fn score(&self, item: &Item, replies: &[Reply]) -> Result<Vec<Scored>> {
        let w = match self.judge.rewards(item, replies)? {
            Some(r) => rl::win_rates(replies.len(), |i, j| Ok(1.0 / (1.0 + (r[j] - r[i]).exp())))?,
            None => rl::win_rates(replies.len(), |i, j| self.judge.prefer(item, &replies[i], &replies[j]))?,
        };
        let mut out: Vec<Scored> =
            w.into_iter().map(|r| Scored { reward: r, passed: false, extra: json!({"win_rate": r}) }).collect();
        if let Some(checker) = &self.watch {
            for (s, r) in out.iter_mut().zip(replies) {
                let c = checker.one(item, r)?;
                s.passed = c.passed;
                s.extra["checker"] = c.extra;
            }
            if self.annotate {
                // A reply cut at the token limit gets no label, as in pairs_from_eval.py.
                let labels: Vec<Option<bool>> =
                    out.iter().zip(replies).map(|(s, r)| (r.finish_reason != "length").then_some(s.passed)).collect();
                self.judge.learn(item, replies, &labels)?;
            }
        }
        Ok(out)
    }

    fn has_pass(&self) -> bool {
        false
    }

    fn step_stats(&self) -> Option<Value> {
        self.judge.drain_stats()
    }
}

/// An LLM judge behind any backend (usually an endpoint): shown the prompt and two replies, it
/// answers A or B. Each pair is judged in both orders and averaged, which cancels position bias;
/// an answer naming neither counts as a tie.
pub struct Judge<'a> {
    pub backend: &'a dyn nanbeige_eval::backend::Backend,
    pub max_tokens: usize,
}

/// The judge's verdict: 1.0 for A, 0.0 for B, 0.5 when it names neither or both.
pub fn parse_verdict(text: &str) -> f64 {
    let t = score::answer_part(text);
    let words: Vec<&str> = t.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).collect();
    let a = words.iter().any(|w| *w == "A");
    let b = words.iter().any(|w| *w == "B");
    match (a, b) {
        (true, false) => 1.0,
        (false, true) => 0.0,
        _ => 0.5,
    }
}

impl Judge<'_> {
    fn ask(&self, question: &str, first: &str, second: &str, seed: u64) -> Result<f64> {
        let prompt = format!(
            "You are judging two answers to the same question. Pick the better one: correct first, then clear and concise.\n\n\
             Question:\n{question}\n\nAnswer A:\n{first}\n\nAnswer B:\n{second}\n\nReply with exactly one letter: A or B."
        );
        let sampling = nanbeige_eval::backend::Sampling { max_tokens: self.max_tokens, temperature: 0.0, top_p: 1.0 };
        let r = self.backend.chat(&json!([{"role": "user", "content": prompt}]), None, &sampling, seed)?;
        Ok(parse_verdict(&r.text))
    }
}

/// The question of an item as plain text (its last user message).
pub fn question_text(item: &Item) -> String {
    item.messages
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_string()
}

impl Preference for Judge<'_> {
    fn prefer(&self, item: &Item, a: &Reply, b: &Reply) -> Result<f64> {
        let q = question_text(item);
        let (ta, tb) = (score::answer_part(&a.text), score::answer_part(&b.text));
        let ab = self.ask(&q, ta, tb, 0)?;
        let ba = self.ask(&q, tb, ta, 1)?;
        Ok((ab + (1.0 - ba)) / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        assert_eq!(parse_verdict("A"), 1.0);
        assert_eq!(parse_verdict("<think>A looks wrong, B</think>\n\nB"), 0.0);
        assert_eq!(parse_verdict("Answer B is better."), 0.0);
        assert_eq!(parse_verdict("Both A and B"), 0.5);
        assert_eq!(parse_verdict("neither"), 0.5);
    }
}
