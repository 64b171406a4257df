//! Built-in generators of verifiable tasks (arithmetic, word problems, countdown puzzles, small code
//! functions with hidden tests), so training and evaluation need nothing downloaded.
//!
//! Every generator is seeded and deterministic. Splits are disjoint by construction: a problem's
//! split is a function of its canonical key (a stable hash, 1 in 5 held out), so no seed can put
//! the same problem in both. Each example carries a real worked solution (`reasoning`) and a short
//! final answer (`content`) that the scorers in `score.rs` accept.

pub mod arith;
pub mod code;
pub mod countdown;
pub mod word;

use crate::rng::{stable_hash, Rng};
use anyhow::{bail, Result};
use serde_json::{json, Value};
use std::collections::HashSet;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

impl Split {
    pub fn parse(s: &str) -> Result<Split> {
        match s {
            "train" => Ok(Split::Train),
            "test" | "heldout" | "held-out" => Ok(Split::Test),
            _ => bail!("unknown split {s:?} (train or test)"),
        }
    }

    /// Which split a problem belongs to, from its canonical key alone.
    pub fn of(key: &str) -> Split {
        if stable_hash(key).is_multiple_of(5) {
            Split::Test
        } else {
            Split::Train
        }
    }
}

/// One generated problem with its solution.
#[derive(Clone, Debug)]
pub struct Example {
    pub task: &'static str,
    /// Canonical form of the problem; decides the split and deduplicates.
    pub key: String,
    pub prompt: String,
    /// Worked step-by-step solution (the `reasoning_content` of the assistant turn).
    pub reasoning: String,
    /// The final answer as the assistant writes it after reasoning.
    pub content: String,
    /// What the scorer checks against: a number string, a countdown target, or reference code.
    pub answer: Value,
    /// Extra fields for the scorer (countdown numbers/target; code tests and entry point).
    pub extra: Value,
}

impl Example {
    /// The common chat JSONL record. Without `reasoning` the assistant turn is the answer alone.
    pub fn to_json(&self, with_reasoning: bool) -> Value {
        let mut assistant = json!({"role": "assistant"});
        if with_reasoning {
            assistant["reasoning_content"] = json!(self.reasoning);
        }
        assistant["content"] = json!(self.content);
        let mut v = json!({
            "messages": [{"role": "user", "content": self.prompt}, assistant],
            "task": self.task,
            "answer": self.answer,
        });
        if let (Value::Object(dst), Value::Object(src)) = (&mut v, &self.extra) {
            for (k, x) in src {
                dst.insert(k.clone(), x.clone());
            }
        }
        v
    }
}

pub const TASKS: &[&str] = &["arith", "add", "add-compare", "word", "countdown", "code"];

/// One problem drawn at random (it may belong to either split).
fn draw(task: &str, rng: &mut Rng) -> Result<Example> {
    Ok(match task {
        "arith" => arith::draw(rng),
        "add" => arith::draw_easy(rng),
        "add-compare" => arith::draw_easy_compared(rng),
        "word" => word::draw(rng),
        "countdown" => countdown::draw(rng),
        "code" => code::draw(rng),
        _ => bail!("unknown task {task:?} (one of: {})", TASKS.join(", ")),
    })
}

/// `n` distinct problems of `split`, the same for the same (task, split, seed).
pub fn generate(task: &str, split: Split, n: usize, seed: u64) -> Result<Vec<Example>> {
    // `add-compare` draws exactly the problems of `add` (only the worked subtraction differs), so
    // models trained on either are evaluated on the same held-out set.
    let family = if task == "add-compare" { "add" } else { task };
    let mut rng = Rng::new(seed ^ stable_hash(family));
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(n);
    let mut tries = 0usize;
    while out.len() < n {
        tries += 1;
        if tries > 200 * n + 10_000 {
            bail!("the {task} generator ran out of distinct {split:?} problems after {} (asked for {n})", out.len());
        }
        let ex = draw(task, &mut rng)?;
        if Split::of(&ex.key) == split && seen.insert(ex.key.clone()) {
            out.push(ex);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_compare_is_add_with_both_digits_before_each_borrow_decision() {
        for split in [Split::Train, Split::Test] {
            let (a, c) = (generate("add", split, 200, 4).unwrap(), generate("add-compare", split, 200, 4).unwrap());
            for (a, c) in a.iter().zip(&c) {
                assert_eq!((&a.prompt, &a.answer, &a.content), (&c.prompt, &c.answer, &c.content));
                if a.prompt.contains('-') {
                    assert_ne!(a.reasoning, c.reasoning);
                    assert!(c.reasoning.contains(", against "), "{}", c.reasoning);
                } else {
                    assert_eq!(a.reasoning, c.reasoning);
                }
            }
        }
    }

    #[test]
    fn deterministic_and_splits_disjoint() {
        for task in TASKS {
            let a = generate(task, Split::Train, 300, 1).unwrap();
            let b = generate(task, Split::Train, 300, 1).unwrap();
            assert_eq!(
                a.iter().map(|e| e.to_json(true)).collect::<Vec<_>>(),
                b.iter().map(|e| e.to_json(true)).collect::<Vec<_>>(),
                "{task}: same seed, same data"
            );
            let c = generate(task, Split::Train, 300, 2).unwrap();
            assert_ne!(a[0].key, c[0].key, "{task}: another seed, other data");
            // Held-out sets from two different seeds never meet any training set.
            let train: HashSet<String> = a.iter().chain(&c).map(|e| e.key.clone()).collect();
            let prompts: HashSet<String> = a.iter().chain(&c).map(|e| e.prompt.clone()).collect();
            for seed in [1, 3] {
                for t in generate(task, Split::Test, 100, seed).unwrap() {
                    assert!(!train.contains(&t.key), "{task}: {} in both splits", t.key);
                    assert!(!prompts.contains(&t.prompt), "{task}: prompt in both splits");
                }
            }
            let keys: HashSet<_> = a.iter().map(|e| &e.key).collect();
            assert_eq!(keys.len(), 300, "{task}: no duplicates");
        }
        assert!(generate("nope", Split::Train, 1, 0).is_err());
        assert!(Split::parse("dev").is_err());
    }
}
