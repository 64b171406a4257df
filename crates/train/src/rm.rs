//! Pairwise reward models (`nanbeige train rm`): the Llama backbone plus a scalar head on the
//! final hidden state of a reply's last token, trained on preference pairs with the Bradley-Terry
//! loss. Saved as the backbone's HF directory plus `reward_head.safetensors`; loaded back as a
//! `Preference` (P(a beats b) = σ(r_a - r_b)) for the pair-wise RL stage.
//!
//! With `enable_refresh`, the reward model also keeps learning during pair-wise RL: after it has
//! scored a group, an annotator's labels of those same replies (the task's checker standing in for
//! a person) become Bradley-Terry pairs for one more step, so it follows the policy to where its
//! first training pairs never reached (a frozen one is gamed there, TRAINING.md).
//!
//! Also here: reading preference pairs from JSONL, shared with offline DPO.
//! Not here: the losses (rl.rs, loss.rs), the RL loop (grpo.rs).

use crate::checkpoint::{self, Origin};
use crate::data::{self, Packed};
use crate::distill::{self, Pair};
use crate::metrics::{self, MetricsLog};
use crate::optim::{AdamW, GradAccum};
use crate::rewards::Preference;
use crate::rl;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use nanbeige_engine::LoadedModel;
use nanbeige_eval::backend::Reply;
use nanbeige_eval::items::Item;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

/// A preference pair as read from JSONL: the prompt messages, tools, and both replies as
/// assistant messages. Lines: {"prompt": [messages] | "text", "chosen": msg | "text",
/// "rejected": msg | "text", "tools": [...]?} (what `train distill --mode dpo` writes).
pub struct PairRecord {
    pub prompt: Value,
    pub tools: Option<Value>,
    pub chosen: Value,
    pub rejected: Value,
}

fn as_assistant(v: &Value) -> Option<Value> {
    match v {
        Value::String(s) => Some(json!({"role": "assistant", "content": s})),
        Value::Object(_) if v.get("content").is_some() => {
            let mut m = v.clone();
            m["role"] = json!("assistant");
            Some(m)
        }
        _ => None,
    }
}

/// Read preference pairs; bad lines are reported with their line numbers and skipped.
pub fn read_pairs(path: &Path) -> Result<Vec<PairRecord>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = vec![];
    let mut bad = vec![];
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let r = serde_json::from_str::<Value>(line).map_err(|e| format!("invalid JSON: {e}")).and_then(|v| {
            let prompt = match v.get("prompt") {
                Some(Value::String(s)) => json!([{"role": "user", "content": s}]),
                Some(Value::Array(a)) if !a.is_empty() => Value::Array(a.clone()),
                _ => return Err("missing `prompt` (messages or text)".to_string()),
            };
            let chosen = v.get("chosen").and_then(as_assistant).ok_or("missing `chosen`")?;
            let rejected = v.get("rejected").and_then(as_assistant).ok_or("missing `rejected`")?;
            Ok(PairRecord { prompt, tools: v.get("tools").cloned(), chosen, rejected })
        });
        match r {
            Ok(p) => out.push(p),
            Err(reason) => bad.push(data::BadLine { line: i + 1, reason }),
        }
    }
    crate::sft::report_bad_lines(path, &bad);
    if out.is_empty() {
        bail!("{}: no usable preference pairs", path.display());
    }
    Ok(out)
}

/// Tokenize pairs for `lm` (the reply tokens masked in); pairs that fail are reported and skipped.
pub fn tokenize_pairs(lm: &LoadedModel, recs: &[PairRecord]) -> Vec<Pair> {
    let mut pairs = vec![];
    for (i, r) in recs.iter().enumerate() {
        let c = distill::reply_example(lm, &r.prompt, r.tools.as_ref(), &r.chosen, i + 1);
        let j = distill::reply_example(lm, &r.prompt, r.tools.as_ref(), &r.rejected, i + 1);
        match (c, j) {
            (Ok(chosen), Ok(rejected)) => pairs.push(Pair { chosen, rejected }),
            (Err(e), _) | (_, Err(e)) => eprintln!("warning: pair {}: {e:#} (skipped)", i + 1),
        }
    }
    pairs
}

/// A reward model: backbone + head (hidden,) + bias.
pub struct RewardModel {
    pub lm: LoadedModel,
    pub head: Var,
    pub bias: Var,
    /// Scoring runs the model; one at a time (pairwise rewards call it from one thread anyway).
    lock: Mutex<()>,
    refresh: Option<Refresh>,
}

/// Online learning during RL: an optimizer over the whole reward model, and what it saw.
struct Refresh {
    opt: Mutex<AdamW>,
    lr: f64,
    pairs_per_group: usize,
    clip: f64,
    /// (pairs seen, ranked right before their update) since the last `drain_stats`.
    stats: Mutex<(usize, usize)>,
}

/// Up to `max` distinct (right, wrong) index pairs of a labelled group (None: left out), spread so
/// that each right reply is used once before any is used twice.
pub fn labelled_pairs(labels: &[Option<bool>], max: usize) -> Vec<(usize, usize)> {
    let right: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == Some(true)).collect();
    let wrong: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == Some(false)).collect();
    if right.is_empty() || wrong.is_empty() {
        return vec![];
    }
    // Diagonal d pairs right[i] with wrong[(i + d) % W]: all R × W pairs, each once, in this order.
    let (nr, nw) = (right.len(), wrong.len());
    (0..nr * nw).take(max).map(|k| (right[k % nr], wrong[(k % nr + k / nr) % nw])).collect()
}

impl RewardModel {
    /// A fresh head (zero: every reply starts at reward 0) on `lm`.
    pub fn new(lm: LoadedModel) -> Result<Self> {
        let h = lm.model.cfg.hidden_size;
        Ok(Self {
            head: Var::zeros(h, DType::F32, &Device::Cpu)?,
            bias: Var::zeros(1, DType::F32, &Device::Cpu)?,
            lm,
            lock: Mutex::new(()),
            refresh: None,
        })
    }

    /// Load a reward model saved by `train_rm`.
    pub fn load(dir: &Path) -> Result<Self> {
        let head_path = dir.join("reward_head.safetensors");
        if !head_path.is_file() {
            bail!("{} is not a reward model (no reward_head.safetensors)", dir.display());
        }
        let lm = crate::sft::load_model(dir, DType::F32, false)?;
        let t = checkpoint::read_safetensors(&head_path)?;
        let head = Var::from_tensor(t.get("score.weight").context("reward head: no score.weight")?)?;
        let bias = Var::from_tensor(t.get("score.bias").context("reward head: no score.bias")?)?;
        if head.dims1()? != lm.model.cfg.hidden_size {
            bail!("reward head has {} inputs, the backbone {}", head.dims1()?, lm.model.cfg.hidden_size);
        }
        Ok(Self { lm, head, bias, lock: Mutex::new(()), refresh: None })
    }

    /// Keep training on labelled groups during RL (`Preference::learn`): one Bradley-Terry step
    /// at `lr` per group, on up to `pairs_per_group` (right, wrong) pairs.
    pub fn enable_refresh(&mut self, lr: f64, pairs_per_group: usize) -> Result<()> {
        let mut vars = self.lm.model.trainable_vars()?;
        vars.push(("score.weight".into(), self.head.clone()));
        vars.push(("score.bias".into(), self.bias.clone()));
        let opt = Mutex::new(AdamW::new(vars, 0.0)?);
        self.refresh =
            Some(Refresh { opt, lr, pairs_per_group: pairs_per_group.max(1), clip: 1.0, stats: Mutex::new((0, 0)) });
        Ok(())
    }

    /// Rewards (one per segment) of a packed row: the head on each segment's last token.
    pub fn row_rewards(&self, row: &Packed) -> Result<Tensor> {
        let h = self.lm.model.hidden_packed(&row.ids, &row.positions, &row.segments)?.squeeze(0)?;
        let mut last = vec![];
        for i in 0..row.segments.len() {
            if i + 1 == row.segments.len() || row.segments[i + 1] != row.segments[i] {
                last.push(i as u32);
            }
        }
        let idx = Tensor::new(last.as_slice(), &Device::Cpu)?;
        let hl = h.index_select(&idx, 0)?; // (segments, hidden)
        Ok(hl.matmul(&self.head.as_tensor().unsqueeze(1)?)?.squeeze(1)?.broadcast_add(self.bias.as_tensor())?)
    }

    /// Reward of one reply to a prompt.
    pub fn score(&self, messages: &Value, tools: Option<&Value>, reply: &Value) -> Result<f32> {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let ex = distill::reply_example(&self.lm, messages, tools, reply, 0)?;
        let mut row = Packed::default();
        row.push(&ex);
        Ok(self.row_rewards(&row)?.detach().to_vec1::<f32>()?[0])
    }

    pub fn save(&self, dir: &Path, origin: &Origin) -> Result<()> {
        checkpoint::save_model_dir(dir, &self.lm.model, origin, DType::F32)?;
        let t = vec![
            ("score.weight".to_string(), self.head.as_tensor().detach()),
            ("score.bias".to_string(), self.bias.as_tensor().detach()),
        ];
        checkpoint::write_safetensors(&dir.join("reward_head.safetensors"), &t)
    }
}

/// The reply of an eval `Reply` as an assistant message (reasoning folded back in).
pub fn reply_message(r: &Reply) -> Value {
    json!({"role": "assistant", "content": r.text})
}

impl Preference for RewardModel {
    fn prefer(&self, item: &Item, a: &Reply, b: &Reply) -> Result<f64> {
        let ra = self.score(&item.messages, item.tools.as_ref(), &reply_message(a))?;
        let rb = self.score(&item.messages, item.tools.as_ref(), &reply_message(b))?;
        Ok(1.0 / (1.0 + (-(ra - rb) as f64).exp()))
    }

    /// One scalar per reply: P(i beats j) = σ(r_i - r_j) needs no pair-by-pair forward.
    fn rewards(&self, item: &Item, replies: &[Reply]) -> Result<Option<Vec<f64>>> {
        replies
            .iter()
            .map(|r| Ok(self.score(&item.messages, item.tools.as_ref(), &reply_message(r))? as f64))
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    fn learn(&self, item: &Item, replies: &[Reply], labels: &[Option<bool>]) -> Result<()> {
        let Some(rf) = &self.refresh else { return Ok(()) };
        let idx = labelled_pairs(labels, rf.pairs_per_group);
        if idx.is_empty() {
            return Ok(());
        }
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut opt = rf.opt.lock().unwrap_or_else(|e| e.into_inner());
        let example = |i: usize| {
            distill::reply_example(&self.lm, &item.messages, item.tools.as_ref(), &reply_message(&replies[i]), 0)
        };
        let mut grads = GradAccum::new(&opt);
        let mut right = 0.0;
        for &(c, j) in &idx {
            let r = self.row_rewards(&pair_row(&Pair { chosen: example(c)?, rejected: example(j)? }))?;
            let (l, acc) = rl::bradley_terry_loss(&r.narrow(0, 0, 1)?, &r.narrow(0, 1, 1)?)?;
            right += acc;
            grads.add(&opt, &(l / idx.len() as f64)?.backward()?)?;
        }
        grads.clip(rf.clip);
        opt.step(&grads.grads, rf.lr)?;
        let mut st = rf.stats.lock().unwrap_or_else(|e| e.into_inner());
        st.0 += idx.len();
        st.1 += right as usize;
        Ok(())
    }

    fn drain_stats(&self) -> Option<Value> {
        let rf = self.refresh.as_ref()?;
        let mut st = rf.stats.lock().unwrap_or_else(|e| e.into_inner());
        let (n, right) = std::mem::take(&mut *st);
        Some(json!({"rm_pairs": n, "rm_accuracy": if n > 0 { right as f64 / n as f64 } else { f64::NAN }}))
    }
}

#[derive(Clone, Debug)]
pub struct RmOptions {
    pub out: PathBuf,
    pub steps: u64,
    pub pairs_per_step: usize,
    pub lr: f64,
    pub clip: f64,
    pub seed: u64,
    pub quiet: bool,
}

pub struct RmSummary {
    pub steps: u64,
    pub first_loss: f64,
    pub last_loss: f64,
    /// Share of training pairs ranked right at the end.
    pub train_accuracy: f64,
    pub seconds: f64,
}

/// Chosen and rejected of a pair in one row (two segments).
fn pair_row(p: &Pair) -> Packed {
    let mut row = Packed::default();
    row.push(&p.chosen);
    row.push(&p.rejected);
    row
}

/// Share of `pairs` whose chosen reply gets the higher reward.
pub fn accuracy(rm: &RewardModel, pairs: &[Pair]) -> Result<f64> {
    let mut right = 0;
    for p in pairs {
        let r = rm.row_rewards(&pair_row(p))?.detach().to_vec1::<f32>()?;
        right += usize::from(r[0] > r[1]);
    }
    Ok(right as f64 / pairs.len().max(1) as f64)
}

/// Train the backbone and head with the Bradley-Terry loss.
pub fn train_rm(rm: &mut RewardModel, origin: &Origin, pairs: &[Pair], o: &RmOptions) -> Result<RmSummary> {
    if pairs.is_empty() {
        bail!("no preference pairs to train on");
    }
    let mut vars = rm.lm.model.trainable_vars()?;
    vars.push(("score.weight".into(), rm.head.clone()));
    vars.push(("score.bias".into(), rm.bias.clone()));
    let mut opt = AdamW::new(vars, 0.0)?;
    std::fs::create_dir_all(&o.out)?;
    let log_path = o.out.join("metrics.jsonl");
    let mut log = MetricsLog::open(&log_path, 0)?;
    let t0 = Instant::now();
    let n = o.pairs_per_step.max(1);
    let mut order = data::Shuffled::new(pairs.len(), o.seed);
    let (mut first, mut last) = (f64::NAN, f64::NAN);
    for step in 0..o.steps {
        let mut grads = GradAccum::new(&opt);
        let (mut total, mut right) = (0.0, 0.0);
        for _ in 0..n {
            let r = rm.row_rewards(&pair_row(&pairs[order.next_index()]))?;
            let (l, acc) = rl::bradley_terry_loss(&r.narrow(0, 0, 1)?, &r.narrow(0, 1, 1)?)?;
            let l = (l / n as f64)?;
            total += l.to_scalar::<f32>()? as f64;
            right += acc;
            grads.add(&opt, &l.backward()?)?;
        }
        let gnorm = grads.clip(o.clip);
        opt.step(&grads.grads, o.lr)?;
        if first.is_nan() {
            first = total;
        }
        last = total;
        log.write(&json!({"step": step, "loss": total, "accuracy": right / n as f64, "grad_norm": gnorm,
            "elapsed_s": t0.elapsed().as_secs_f64()}))?;
        if !o.quiet {
            eprint!("\rrm step {}/{} loss {total:.4} acc {:.2}", step + 1, o.steps, right / n as f64);
        }
    }
    if !o.quiet {
        eprintln!();
    }
    let train_accuracy = accuracy(rm, pairs)?;
    rm.save(&o.out, origin)?;
    metrics::write_plot(&log_path, "loss", &o.out.join("loss.svg"), "Bradley-Terry loss")?;
    Ok(RmSummary { steps: o.steps, first_loss: first, last_loss: last, train_accuracy, seconds: t0.elapsed().as_secs_f64() })
}

/// A test split: every `k`-th pair held out.
pub fn split_pairs(pairs: Vec<Pair>, k: usize) -> (Vec<Pair>, Vec<Pair>) {
    let (mut train, mut test) = (vec![], vec![]);
    for (i, p) in pairs.into_iter().enumerate() {
        if k > 0 && i % k == k - 1 {
            test.push(p);
        } else {
            train.push(p);
        }
    }
    (train, test)
}

#[cfg(test)]
mod tests {
    use super::labelled_pairs;

    #[test]
    fn labelled_pairs_spread_and_stay_distinct() {
        // Replies 0, 3 right; 1, 2, 4 wrong; 5 unlabelled.
        let l = [Some(true), Some(false), Some(false), Some(true), Some(false), None];
        assert_eq!(labelled_pairs(&l, 2), vec![(0, 1), (3, 2)]);
        let all = labelled_pairs(&l, 100);
        assert_eq!(all.len(), 6);
        let mut sorted = all.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 6, "pairs repeat: {all:?}");
        assert!(labelled_pairs(&[Some(true), Some(true), None], 4).is_empty());
        assert!(labelled_pairs(&[Some(false), Some(false), Some(false)], 4).is_empty());
    }
}
