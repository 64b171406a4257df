//! Distillation (`nanbeige train distill`), three ways:
//! - token-level KD: the SFT loop with KL to the teacher's next-token distribution (sft.rs with
//!   `KdOptions`); teacher and student must share the vocabulary, checked up front;
//! - sequence-level: the teacher answers the prompts (generated with nanbeige-engine), the answers
//!   are written as chat JSONL, and the student is fine-tuned on them; works across vocabularies;
//! - dual preference distillation: for each prompt, a DPO loss prefers the teacher's answer over the
//!   student's own sample, against the frozen starting student as the reference.
//!
//! `pair_logprobs` and loss::dpo_loss are the pieces offline DPO / pair-wise RL reuse.

use crate::checkpoint::{self, Origin};
use crate::data::{self, Example, Packed, Rng};
use crate::loss;
use crate::metrics::{self, MetricsLog};
use crate::optim::{AdamW, GradAccum};
use crate::sft;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use nanbeige_engine::{generate_batch, prompt, BatchRequest, GenParams, LoadedModel, SamplingParams, Session};
use nanbeige_model::Llama;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The prompt part of each chat JSONL line: its messages up to (not including) the last assistant
/// turn, with the tools if any. Bad lines are reported and skipped.
pub fn read_prompts(path: &Path) -> Result<Vec<(Value, Option<Value>)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<Value>(line).map_err(|e| format!("invalid JSON: {e}")).and_then(|v| {
            let msgs = v.get("messages").and_then(Value::as_array).ok_or("missing field `messages`")?;
            let cut = msgs.iter().rposition(|m| m["role"] == "assistant").unwrap_or(msgs.len());
            if cut == 0 || msgs[..cut].iter().any(|m| m.get("role").and_then(Value::as_str).is_none()) {
                return Err("no prompt before the assistant turn".to_string());
            }
            Ok((Value::Array(msgs[..cut].to_vec()), v.get("tools").cloned()))
        });
        match parsed {
            Ok(p) => out.push(p),
            Err(reason) => bad.push(data::BadLine { line: i + 1, reason }),
        }
    }
    sft::report_bad_lines(path, &bad);
    if out.is_empty() {
        bail!("{}: no usable prompts", path.display());
    }
    Ok(out)
}

/// Sample one reply to a prompt; returns the assistant message (content, and reasoning_content
/// when the model thought).
pub fn sample_reply(lm: &LoadedModel, messages: &Value, tools: Option<&Value>, params: &GenParams) -> Result<Value> {
    let p = prompt::chat_prompt(&lm.text, lm.template.as_ref(), messages, tools, true)?;
    let mut session = Session::new(lm);
    let g = nanbeige_engine::generate(lm, &mut session, &p.ids, p.opened_think, params, None, &mut |_| {})?;
    Ok(reply_message(&g.text, p.opened_think, false))
}

pub fn gen_params(max_tokens: usize, temperature: f32, seed: u64) -> GenParams {
    GenParams {
        sampling: SamplingParams { temperature, top_p: 1.0, top_k: 0, seed: Some(seed), ..Default::default() },
        max_tokens: Some(max_tokens),
        stop: vec![],
        ignore_eos: false,
        max_thinking_tokens: None,
        logprobs: None,
        json_schema: None,
    }
}

/// Sequence-level distillation data: the teacher answers every prompt (`batch` sequences decoded
/// together); writes chat JSONL to `out`. Returns the number of lines written.
pub fn teacher_data(
    teacher: &LoadedModel,
    prompts: &[(Value, Option<Value>)],
    out: &Path,
    params: &GenParams,
    batch: usize,
) -> Result<usize> {
    let mut f = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let t0 = Instant::now();
    let mut done = 0;
    // Chunks keep the file growing (and progress visible) while the batch stays full.
    for (c, chunk) in prompts.chunks(4 * batch.max(1)).enumerate() {
        let mut reqs = vec![];
        for (k, (msgs, tools)) in chunk.iter().enumerate() {
            let i = c * 4 * batch.max(1) + k;
            let p = prompt::chat_prompt(&teacher.text, teacher.template.as_ref(), msgs, tools.as_ref(), true)?;
            let mut gp = params.clone();
            gp.sampling.seed = params.sampling.seed.map(|s| s.wrapping_add(i as u64));
            reqs.push(BatchRequest { prompt: p.ids, opened_think: p.opened_think, params: gp });
        }
        let gens = generate_batch(teacher, &reqs, batch, &mut |_, _| {});
        for (((msgs, tools), r), g) in chunk.iter().zip(&reqs).zip(gens) {
            let g = g?;
            let mut all = msgs.as_array().cloned().unwrap_or_default();
            all.push(reply_message(&g.text, r.opened_think, tools.is_some()));
            let mut line = json!({"messages": all});
            if let Some(t) = tools {
                line["tools"] = t.clone();
            }
            writeln!(f, "{}", serde_json::to_string(&line)?)?;
            done += 1;
        }
        eprint!("\rteacher answered {done}/{} prompts ({:.0}s)", prompts.len(), t0.elapsed().as_secs_f64());
    }
    eprintln!();
    Ok(prompts.len())
}

/// A generated text as the assistant message (reasoning apart when the model thought).
fn reply_message(text: &str, opened_think: bool, with_tools: bool) -> Value {
    let parsed = prompt::parse_reply(text, opened_think, with_tools);
    let mut msg = json!({"role": "assistant", "content": parsed.content.trim()});
    if let Some(r) = parsed.reasoning.as_deref().map(str::trim).filter(|r| !r.is_empty()) {
        msg["reasoning_content"] = json!(r);
    }
    msg
}

/// A preference pair: the same prompt with a preferred and a dispreferred reply, tokenized with
/// the policy's template (masks on the reply).
pub struct Pair {
    pub chosen: Example,
    pub rejected: Example,
}

/// Tokenize prompt + reply for the policy model.
pub fn reply_example(
    lm: &LoadedModel,
    msgs: &Value,
    tools: Option<&Value>,
    reply: &Value,
    line: usize,
) -> Result<Example> {
    let template = lm.template.as_ref().context("the model has no chat template")?;
    let mut all = msgs.as_array().cloned().unwrap_or_default();
    all.push(reply.clone());
    let (ids, mask) = data::tokenize_chat(&lm.text, template, &Value::Array(all), tools)?;
    Ok(Example { ids, mask, line })
}

/// Chosen and rejected packed into one row (two segments) and their sequence log-probs (sums of
/// the reply tokens' log-probs) under `model`: differentiable when the model's weights are Vars.
pub fn pair_logprobs(model: &Llama, pair: &Pair) -> Result<(Tensor, Tensor)> {
    let mut row = Packed::default();
    row.push(&pair.chosen);
    row.push(&pair.rejected);
    let logits = model.forward_packed(&row.ids, &row.positions, &row.segments)?;
    let only = |seg: u32| -> Vec<f32> {
        row.weights.iter().zip(&row.segments).map(|(w, s)| if *s == seg { *w } else { 0.0 }).collect()
    };
    let c = loss::sequence_logprob(&logits, &row.targets, &only(0))?;
    let r = loss::sequence_logprob(&logits, &row.targets, &only(1))?;
    Ok((c, r))
}

#[derive(Clone, Debug)]
pub struct DpoOptions {
    pub out: PathBuf,
    pub steps: u64,
    pub pairs_per_step: usize,
    pub lr: f64,
    pub beta: f64,
    /// RPO: weight of the chosen reply's per-token NLL added to the DPO loss (0: plain DPO). DPO
    /// alone only widens the margin, and can do so by lowering both replies' likelihood.
    pub nll: f64,
    pub clip: f64,
    pub seed: u64,
    pub dtype: DType,
}

pub struct DpoSummary {
    pub steps: u64,
    pub first_loss: f64,
    pub last_loss: f64,
    /// Share of pairs whose implicit reward prefers the chosen reply, at the last step.
    pub last_accuracy: f64,
    /// Mean per-token change of the chosen replies' log-prob from the reference, at the last step.
    pub last_chosen_shift: f64,
    pub seconds: f64,
}

/// Trained (reply) tokens of an example, at least 1.
fn reply_tokens(e: &Example) -> f64 {
    e.mask.iter().filter(|&&m| m).count().max(1) as f64
}

/// DPO on `pairs`: the policy is `lm` (made trainable here), the reference its starting state.
pub fn train_dpo(lm: &mut LoadedModel, origin: &Origin, pairs: &[Pair], o: &DpoOptions) -> Result<DpoSummary> {
    if pairs.is_empty() {
        bail!("no preference pairs to train on");
    }
    let vars = lm.model.trainable_vars()?;
    let mut opt = AdamW::new(vars, 0.0)?;
    // The reference model is the policy before any update: its log-probs are constants.
    let mut refs = Vec::with_capacity(pairs.len());
    for p in pairs {
        let (c, r) = pair_logprobs(&lm.model, p)?;
        refs.push((c.detach(), r.detach()));
    }
    std::fs::create_dir_all(&o.out)?;
    let log_path = o.out.join("metrics.jsonl");
    let mut log = MetricsLog::open(&log_path, 0)?;
    let t0 = Instant::now();
    let mut order = data::Shuffled::new(pairs.len(), o.seed);
    let (mut first, mut last, mut acc, mut shift) = (f64::NAN, f64::NAN, 0.0, 0.0);
    let n = o.pairs_per_step.max(1);
    for step in 0..o.steps {
        let mut batch = Vec::with_capacity(n);
        for _ in 0..n {
            batch.push(order.next_index());
        }
        let mut grads = GradAccum::new(&opt);
        let mut total = 0.0;
        let mut wins = 0;
        // Mean change of the chosen / rejected replies' log-probs from the reference, per token:
        // a falling chosen shift is DPO's likelihood displacement.
        let (mut chosen_shift, mut rejected_shift) = (0.0, 0.0);
        for &i in &batch {
            let (c, r) = pair_logprobs(&lm.model, &pairs[i])?;
            let (l, margin) = loss::dpo_loss(
                &c.unsqueeze(0)?,
                &r.unsqueeze(0)?,
                &refs[i].0.unsqueeze(0)?,
                &refs[i].1.unsqueeze(0)?,
                o.beta,
            )?;
            let (nc, nr) = (reply_tokens(&pairs[i].chosen), reply_tokens(&pairs[i].rejected));
            chosen_shift += ((&c - &refs[i].0)?.to_scalar::<f32>()? as f64) / nc / n as f64;
            rejected_shift += ((&r - &refs[i].1)?.to_scalar::<f32>()? as f64) / nr / n as f64;
            let l = if o.nll > 0.0 { (l - (c * (o.nll / nc))?)? } else { l };
            let l = (l / n as f64)?;
            total += l.to_scalar::<f32>()? as f64;
            wins += usize::from(margin > 0.0);
            grads.add(&opt, &l.backward()?)?;
        }
        let gnorm = grads.clip(o.clip);
        opt.step(&grads.grads, o.lr)?;
        if first.is_nan() {
            first = total;
        }
        last = total;
        acc = wins as f64 / n as f64;
        shift = chosen_shift;
        log.write(&json!({"step": step, "loss": total, "reward_accuracy": acc, "grad_norm": gnorm, "lr": o.lr,
            "chosen_logp_shift": chosen_shift, "rejected_logp_shift": rejected_shift,
            "elapsed_s": t0.elapsed().as_secs_f64()}))?;
        eprint!("\rdpo step {}/{} loss {total:.4} reward acc {acc:.2}", step + 1, o.steps);
    }
    eprintln!();
    checkpoint::save_model_dir(&o.out, &lm.model, origin, o.dtype)?;
    metrics::write_plot(&log_path, "loss", &o.out.join("loss.svg"), "DPO loss")?;
    Ok(DpoSummary {
        steps: o.steps,
        first_loss: first,
        last_loss: last,
        last_accuracy: acc,
        last_chosen_shift: shift,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Dual preference distillation data: for each prompt, the teacher's reply (chosen) and the
/// student's own sample (rejected), tokenized for the student. Writes the pairs as JSONL too.
pub fn preference_pairs(
    teacher: &LoadedModel,
    student: &LoadedModel,
    prompts: &[(Value, Option<Value>)],
    params: &GenParams,
    out: &Path,
) -> Result<Vec<Pair>> {
    let mut f = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut pairs = Vec::new();
    let mut rng = Rng::new(params.sampling.seed.unwrap_or(0));
    for (i, (msgs, tools)) in prompts.iter().enumerate() {
        let mut p = params.clone();
        p.sampling.seed = Some(rng.next_u64());
        let chosen = sample_reply(teacher, msgs, tools.as_ref(), &p)?;
        let rejected = sample_reply(student, msgs, tools.as_ref(), &p)?;
        if chosen["content"] == rejected["content"]
            && chosen.get("reasoning_content") == rejected.get("reasoning_content")
        {
            continue; // no preference to learn
        }
        writeln!(f, "{}", serde_json::to_string(&json!({"prompt": msgs, "chosen": chosen, "rejected": rejected}))?)?;
        let c = reply_example(student, msgs, tools.as_ref(), &chosen, i + 1);
        let r = reply_example(student, msgs, tools.as_ref(), &rejected, i + 1);
        match (c, r) {
            (Ok(chosen), Ok(rejected)) => pairs.push(Pair { chosen, rejected }),
            (Err(e), _) | (_, Err(e)) => eprintln!("warning: prompt {}: {e:#} (skipped)", i + 1),
        }
        eprint!("\rpairs {}/{}", i + 1, prompts.len());
    }
    eprintln!();
    Ok(pairs)
}
