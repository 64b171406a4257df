//! Learning from the agent's JSONL trajectories (`nanbeige research --log`, schema in
//! docs/AGENT.md): each run becomes its turns (the messages the model saw, what it replied, what
//! its tool calls returned) and its final answer.
//!
//! - A turn-level rule filter keeps the useful turns: the reply was complete (not cut at the
//!   token limit), every tool call was well-formed and succeeded, and it did not repeat an earlier
//!   call (no progress); the final turn is kept when it answered with valid citations.
//! - `sft_records`: kept turns of runs whose reward reaches a threshold, as chat JSONL for
//!   `train sft` (earlier assistant turns carry `"weight": 0`, so only the turn itself is trained).
//! - `credit`: the agentic RL signal. A run's final reward (a gold answer found in it, else the rule
//!   "answered with valid citations") minus the mean over runs of the same question, spread over
//!   its kept turns with turn_credit's discount; grpo::policy_step then trains each turn's reply
//!   with that advantage.
//!
//! Not here: running the agent (crates/agent), the update itself (grpo.rs).

use crate::rl;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// One model turn of a run.
#[derive(Clone, Debug)]
pub struct Turn {
    /// The messages as sent (OpenAI style).
    pub messages: Value,
    /// The reply as an assistant message (content, reasoning_content, tool_calls).
    pub reply: Value,
    pub finish_reason: String,
    /// (name, arguments) of each call, in order; None for a malformed one.
    pub calls: Vec<Option<(String, Value)>>,
    /// Each call's tool result was ok.
    pub results_ok: Vec<bool>,
}

#[derive(Clone, Debug)]
pub struct Run {
    pub id: String,
    pub question: String,
    pub tools: Option<Value>,
    pub turns: Vec<Turn>,
    pub answer: Option<String>,
    pub citations: usize,
    pub invalid_citations: usize,
}

/// Read every run of a trajectory log (several runs may share a file). Lines that are not JSON
/// or lack `run`/`type` are reported with their line numbers and skipped; runs without a
/// `run_start` are dropped.
pub fn read_runs(path: &Path) -> Result<Vec<Run>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut runs: BTreeMap<String, (usize, Vec<Value>)> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("warning: {}:{}: invalid JSON: {e} (skipped)", path.display(), i + 1);
                continue;
            }
        };
        let (Some(run), Some(_)) = (v.get("run").map(|r| r.to_string()), v.get("type").and_then(Value::as_str)) else {
            eprintln!("warning: {}:{}: not a trajectory line (no `run`/`type`) (skipped)", path.display(), i + 1);
            continue;
        };
        let n = runs.len();
        runs.entry(run).or_insert((n, vec![])).1.push(v);
    }
    let mut out: Vec<(usize, Run)> = vec![];
    for (id, (order, lines)) in runs {
        let Some(start) = lines.iter().find(|l| l["type"] == "run_start") else { continue };
        let mut run = Run {
            id,
            question: start["question"].as_str().unwrap_or("").to_string(),
            tools: start.get("tools").cloned().filter(|t| t.as_array().is_some_and(|a| !a.is_empty())),
            turns: vec![],
            answer: None,
            citations: 0,
            invalid_citations: 0,
        };
        let mut prompt: Option<Value> = None;
        for l in &lines {
            match l["type"].as_str().unwrap_or("") {
                "prompt" => prompt = l.get("messages").cloned(),
                "model_output" => {
                    let Some(messages) = prompt.take() else { continue };
                    let mut calls = vec![];
                    let mut tool_calls = vec![];
                    for (k, c) in l["tool_calls"].as_array().cloned().unwrap_or_default().iter().enumerate() {
                        match (c["name"].as_str(), c.get("arguments")) {
                            (Some(name), Some(args)) => {
                                calls.push(Some((name.to_string(), args.clone())));
                                tool_calls.push(json!({"id": format!("call_{}_{k}", run.turns.len() + 1), "type": "function",
                                    "function": {"name": name, "arguments": args}}));
                            }
                            _ => calls.push(None),
                        }
                    }
                    let mut reply = json!({"role": "assistant", "content": l["content"].as_str().unwrap_or("")});
                    if let Some(r) = l["reasoning"].as_str().filter(|r| !r.trim().is_empty()) {
                        reply["reasoning_content"] = json!(r);
                    }
                    if !tool_calls.is_empty() {
                        reply["tool_calls"] = Value::Array(tool_calls);
                    }
                    run.turns.push(Turn {
                        messages,
                        reply,
                        finish_reason: l["finish_reason"].as_str().unwrap_or("").to_string(),
                        calls,
                        results_ok: vec![],
                    });
                }
                "tool_result" => {
                    if let Some(t) = run.turns.last_mut() {
                        t.results_ok.push(l["ok"].as_bool().unwrap_or(false));
                    }
                }
                "final" => {
                    run.answer = l["answer"].as_str().map(String::from);
                    run.citations = l["citations"].as_array().map_or(0, Vec::len);
                    run.invalid_citations = l["invalid_citations"].as_array().map_or(0, Vec::len);
                }
                _ => {}
            }
        }
        if !run.turns.is_empty() {
            out.push((order, run));
        }
    }
    out.sort_by_key(|(o, _)| *o);
    if out.is_empty() {
        bail!("{}: no runs with model turns", path.display());
    }
    Ok(out.into_iter().map(|(_, r)| r).collect())
}

/// The rule filter: which turns are worth learning from.
pub fn keep_turns(run: &Run) -> Vec<bool> {
    let mut seen: Vec<(String, String)> = vec![];
    let last = run.turns.len().saturating_sub(1);
    run.turns
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if t.finish_reason == "length" {
                return false;
            }
            if t.calls.is_empty() {
                // A final answer: useful when it answered and cited only real sources.
                return i == last && run.answer.as_deref().is_some_and(|a| !a.trim().is_empty()) && run.invalid_citations == 0;
            }
            let well_formed = t.calls.iter().all(Option::is_some);
            let succeeded = t.results_ok.len() == t.calls.len() && t.results_ok.iter().all(|&ok| ok);
            let mut fresh = true;
            for (name, args) in t.calls.iter().flatten() {
                let key = (name.clone(), args.to_string());
                fresh &= !seen.contains(&key);
                seen.push(key);
            }
            well_formed && succeeded && fresh
        })
        .collect()
}

/// A run's final reward: with a gold answer, 1 if the answer contains it (case-insensitive);
/// without, 1 for an answer with at least one valid citation and no invalid ones.
pub fn run_reward(run: &Run, gold: Option<&str>) -> f64 {
    let Some(answer) = run.answer.as_deref().filter(|a| !a.trim().is_empty()) else { return 0.0 };
    match gold {
        Some(g) => f64::from(u8::from(answer.to_lowercase().contains(&g.trim().to_lowercase()))),
        None => f64::from(u8::from(run.citations > 0 && run.invalid_citations == 0)),
    }
}

/// Gold answers by question, from JSONL lines {"question": ..., "answer": ...}.
pub fn read_gold(path: &Path) -> Result<HashMap<String, String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).with_context(|| format!("{}:{}", path.display(), i + 1))?;
        match (v["question"].as_str(), v["answer"].as_str()) {
            (Some(q), Some(a)) => {
                out.insert(q.trim().to_string(), a.to_string());
            }
            _ => eprintln!("warning: {}:{}: needs `question` and `answer` (skipped)", path.display(), i + 1),
        }
    }
    Ok(out)
}

/// One chat example per kept turn of the runs with reward ≥ `min_reward`: the messages the model
/// saw (earlier assistant turns weighted 0) plus its reply.
pub fn sft_records(runs: &[Run], gold: &HashMap<String, String>, min_reward: f64) -> Vec<Value> {
    let mut out = vec![];
    for run in runs {
        if run_reward(run, gold.get(run.question.trim()).map(String::as_str)) < min_reward {
            continue;
        }
        for (t, keep) in run.turns.iter().zip(keep_turns(run)) {
            if keep {
                out.push(turn_record(run, t));
            }
        }
    }
    out
}

/// The chat record of one turn: history (assistant turns weight 0) + the reply.
pub fn turn_record(run: &Run, t: &Turn) -> Value {
    let mut msgs: Vec<Value> = t.messages.as_array().cloned().unwrap_or_default();
    for m in msgs.iter_mut().filter(|m| m["role"] == "assistant") {
        m["weight"] = json!(0);
    }
    msgs.push(t.reply.clone());
    let mut rec = json!({"messages": msgs});
    if let Some(tools) = &run.tools {
        rec["tools"] = tools.clone();
    }
    rec
}

/// Agentic RL: (run index, turn index, advantage) for every kept turn. A run's advantage is its
/// reward minus the mean reward of the runs with the same question (a group baseline), credited
/// to its kept turns with discount `gamma` toward the start.
pub fn credit(runs: &[Run], gold: &HashMap<String, String>, gamma: f64) -> Vec<(usize, usize, f64)> {
    let rewards: Vec<f64> = runs.iter().map(|r| run_reward(r, gold.get(r.question.trim()).map(String::as_str))).collect();
    let mut by_q: HashMap<&str, Vec<f64>> = HashMap::new();
    for (r, &x) in runs.iter().zip(&rewards) {
        by_q.entry(r.question.trim()).or_default().push(x);
    }
    let mut out = vec![];
    for (i, run) in runs.iter().enumerate() {
        let g = &by_q[run.question.trim()];
        let baseline = g.iter().sum::<f64>() / g.len() as f64;
        let adv = rewards[i] - baseline;
        if adv == 0.0 {
            continue;
        }
        for (j, c) in rl::turn_credit(adv, &keep_turns(run), gamma).into_iter().enumerate() {
            if c != 0.0 {
                out.push((i, j, c));
            }
        }
    }
    out
}

/// Agentic RL on logged trajectories: every kept turn's reply is trained with its credited
/// advantage (`credit`), `turns_per_step` turns per optimizer step, for `epochs` passes.
/// Returns the number of steps taken.
pub fn train_agentic(
    lm: &mut nanbeige_engine::LoadedModel,
    origin: &crate::checkpoint::Origin,
    runs: &[Run],
    credits: &[(usize, usize, f64)],
    o: &crate::grpo::GrpoOptions,
    turns_per_step: usize,
    epochs: usize,
) -> Result<u64> {
    use crate::grpo::{policy_step, Seq};
    if credits.is_empty() {
        bail!("no turn has a non-zero advantage: every run of each question got the same reward");
    }
    let template = lm.template.as_ref().context("the model has no chat template")?;
    let mut seqs = vec![];
    for &(r, t, adv) in credits {
        let rec = turn_record(&runs[r], &runs[r].turns[t]);
        match crate::data::tokenize_chat(&lm.text, template, &rec["messages"], rec.get("tools")) {
            Ok((ids, mask)) => seqs.push(Seq { ids, mask, adv: adv as f32, weight: 1.0 }),
            Err(e) => eprintln!("warning: run {} turn {}: {e:#} (skipped)", runs[r].id, t + 1),
        }
    }
    let vars = lm.model.trainable_vars()?;
    let mut opt = crate::optim::AdamW::new(vars, 0.0)?;
    std::fs::create_dir_all(&o.out)?;
    let mut log = crate::metrics::MetricsLog::open(&o.out.join("metrics.jsonl"), 0)?;
    let mut step = 0u64;
    for epoch in 0..epochs.max(1) {
        let order = crate::data::epoch_order(seqs.len(), o.seed, epoch as u64);
        for chunk in order.chunks(turns_per_step.max(1)) {
            let batch: Vec<Seq> = chunk
                .iter()
                .map(|&i| Seq { ids: seqs[i].ids.clone(), mask: seqs[i].mask.clone(), adv: seqs[i].adv, weight: 1.0 })
                .collect();
            let st = policy_step(&lm.model, &mut opt, None, &batch, o, o.lr)?;
            log.write(&json!({"step": step, "epoch": epoch, "loss": st.loss, "trained_tokens": st.trained_tokens,
                "grad_norm": st.grad_norm, "mean_advantage": batch.iter().map(|s| s.adv as f64).sum::<f64>() / batch.len() as f64}))?;
            step += 1;
        }
    }
    crate::checkpoint::save_model_dir(&o.out, &lm.model, origin, o.dtype)?;
    Ok(step)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two runs of one question in the research log format: run 1 searches, repeats the same
    /// search, then answers with a citation and the gold answer; run 2 makes a malformed call and
    /// answers wrongly.
    fn log() -> String {
        let q = "What is the answer?";
        let msgs = |n: usize| json!([{"role": "user", "content": q}, {"role": "assistant", "content": "", "tool_calls": []}, {"role": "tool", "content": format!("r{n}")}]);
        let lines = vec![
            json!({"type": "run_start", "run": "a", "turn": 0, "question": q, "tools": [{"type": "function", "function": {"name": "search"}}]}),
            json!({"type": "prompt", "run": "a", "turn": 1, "messages": [{"role": "user", "content": q}]}),
            json!({"type": "model_output", "run": "a", "turn": 1, "content": "", "reasoning": "look it up", "tool_calls": [{"name": "search", "arguments": {"query": "answer"}}], "finish_reason": "stop"}),
            json!({"type": "tool_result", "run": "a", "turn": 1, "ok": true}),
            json!({"type": "prompt", "run": "a", "turn": 2, "messages": msgs(1)}),
            json!({"type": "model_output", "run": "a", "turn": 2, "content": "", "tool_calls": [{"name": "search", "arguments": {"query": "answer"}}], "finish_reason": "stop"}),
            json!({"type": "tool_result", "run": "a", "turn": 2, "ok": true}),
            json!({"type": "prompt", "run": "a", "turn": 3, "messages": msgs(2)}),
            json!({"type": "model_output", "run": "a", "turn": 3, "content": "It is 42 [1].", "tool_calls": [], "finish_reason": "stop"}),
            json!({"type": "final", "run": "a", "turn": 3, "answer": "It is 42 [1].", "citations": [{"n": 1}], "invalid_citations": []}),
            json!({"type": "run_start", "run": "b", "turn": 0, "question": q, "tools": []}),
            json!({"type": "prompt", "run": "b", "turn": 1, "messages": [{"role": "user", "content": q}]}),
            json!({"type": "model_output", "run": "b", "turn": 1, "content": "", "tool_calls": [{"error": "bad", "raw": "{"}], "finish_reason": "stop"}),
            json!({"type": "tool_result", "run": "b", "turn": 1, "ok": false}),
            json!({"type": "prompt", "run": "b", "turn": 2, "messages": msgs(1)}),
            json!({"type": "model_output", "run": "b", "turn": 2, "content": "It is 7.", "tool_calls": [], "finish_reason": "stop"}),
            json!({"type": "final", "run": "b", "turn": 2, "answer": "It is 7.", "citations": [], "invalid_citations": []}),
        ];
        let mut s: String = lines.iter().map(|l| format!("{l}\n")).collect();
        s.push_str("not json\n{\"no\": \"run\"}\n");
        s
    }

    #[test]
    fn runs_filter_rewards_sft_and_credit() {
        let p = std::env::temp_dir().join(format!("nanbeige-traj-{}.jsonl", std::process::id()));
        std::fs::write(&p, log()).unwrap();
        let runs = read_runs(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!((runs[0].turns.len(), runs[1].turns.len()), (3, 2));
        assert!(runs[0].tools.is_some() && runs[1].tools.is_none());
        // Run a: search kept, the repeated search dropped, the cited answer kept.
        assert_eq!(keep_turns(&runs[0]), vec![true, false, true]);
        // Run b: malformed call dropped; an uncited answer is still an answer (no invalid citation).
        assert_eq!(keep_turns(&runs[1]), vec![false, true]);
        let gold: HashMap<String, String> = [("What is the answer?".to_string(), "42".to_string())].into();
        assert_eq!((run_reward(&runs[0], Some("42")), run_reward(&runs[1], Some("42"))), (1.0, 0.0));
        // Without gold: valid citations decide.
        assert_eq!((run_reward(&runs[0], None), run_reward(&runs[1], None)), (1.0, 0.0));
        let sft = sft_records(&runs, &gold, 1.0);
        assert_eq!(sft.len(), 2, "the two kept turns of the rewarded run");
        let last = sft[1]["messages"].as_array().unwrap();
        assert_eq!(last.last().unwrap()["content"], "It is 42 [1].");
        assert_eq!(last[1]["weight"], 0, "history turns are context only");
        assert_eq!(sft[0]["messages"].as_array().unwrap().last().unwrap()["tool_calls"][0]["function"]["name"], "search");
        assert_eq!(sft[0]["messages"].as_array().unwrap().last().unwrap()["reasoning_content"], "look it up");
        // Credit: baseline 0.5, so run a's kept turns get +0.5 discounted, run b's -0.5.
        let c = credit(&runs, &gold, 0.5);
        assert_eq!(c, vec![(0, 0, 0.125), (0, 2, 0.5), (1, 1, -0.5)]);
    }
}
