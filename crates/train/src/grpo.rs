//! Point-wise RL (`nanbeige train grpo`) and, with a pair-wise reward, the pair-wise stage
//! (`nanbeige train pairwise`): each step samples a group of replies per prompt, scores them
//! (rewards.rs), turns rewards into group-normalized advantages, drops groups with no signal (all
//! pass or all fail), masks truncated replies, and takes one AdamW step on the clipped surrogate
//! loss normalized per token, with an optional k3 KL penalty to the frozen starting policy.
//!
//! Rollouts come from the policy itself through the engine's batched generator (the model being
//! trained samples, so the update is on-policy), or from any OpenAI-compatible endpoint (rollouts
//! on other machines/engines; the policy is saved to OUT/policy every `sync_every` steps for that
//! server to reload, and the clip bounds the drift while it lags).
//!
//! OUT/metrics.jsonl has a line per step, OUT/rollouts.jsonl every scored reply.
//! Not here: the arithmetic (rl.rs), rewards (rewards.rs), held-out evaluation (`nanbeige eval`).

use crate::checkpoint::{self, Origin};
use crate::data::Packed;
use crate::loss;
use crate::metrics::{self, MetricsLog};
use crate::optim::{AdamW, GradAccum};
use crate::rewards::{GroupReward, Scored};
use crate::rl;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use nanbeige_engine::prompt::chat_prompt;
use nanbeige_engine::{generate_batch, BatchRequest, FinishReason, GenParams, LoadedModel, SamplingParams};
use nanbeige_eval::backend::{reply_from_generation, Backend, Reply, Sampling};
use nanbeige_eval::items::Item;
use nanbeige_model::Llama;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct GrpoOptions {
    pub out: PathBuf,
    pub steps: u64,
    pub prompts_per_step: usize,
    pub group: usize,
    pub lr: f64,
    pub warmup: u64,
    pub max_tokens: usize,
    pub temperature: f32,
    pub eps_low: f64,
    pub eps_high: f64,
    /// Weight of the k3 KL penalty to the starting policy (0: no reference model is kept).
    pub kl: f64,
    /// Divide advantages by the group's std (GRPO) or only center them (Dr. GRPO).
    pub scale_std: bool,
    /// Drop groups that all pass or all fail (pass-rate filter).
    pub filter: bool,
    /// Exclude replies cut at max_tokens from the loss.
    pub mask_overlong: bool,
    /// Tokens per packed row in the update (memory bound; rows are accumulated).
    pub batch_tokens: usize,
    /// Sequences decoded together in local rollouts.
    pub rollout_batch: usize,
    pub clip: f64,
    pub seed: u64,
    pub dtype: DType,
    pub save_every: u64,
    pub sync_every: u64,
    pub quiet: bool,
    /// Train LoRA adapters instead of every weight (the saved model holds the merged weights).
    pub lora: Option<crate::lora::LoraSpec>,
    /// The first reply of every group is the greedy one (temperature 0), scored and trained like
    /// the samples. Sampled rollouts only show RL what T = 1 decoding gets wrong; the greedy reply
    /// puts the answer a user gets by default into every group, so a wrong one is pushed down
    /// where its tokens were uncertain (a token of probability ~1 has a gradient ~0). An
    /// off-policy sample: the estimate is biased toward the greedy path, which is the point.
    pub greedy_first: bool,
    /// Process credit where a worked solution is known (arithmetic prompts, `arith::solve`): a
    /// failing reply's tokens that match the worked solution from its start are right, so they
    /// get no negative advantage; the negative falls on the first token that leaves the method and
    /// on what follows. Without it a failing reply pushes down the correct steps before its error
    /// too. (On `add` it did not stop RL's borrow collapse, which has another cause: TRAINING.md.)
    pub process_credit: bool,
    /// First-step credit (uses process credit's worked solutions): a reply passes only when it is
    /// the worked solution token for token, and a failing reply trains only the line where it
    /// first leaves it. Outcome reward alone pushes down a closing line that faithfully reads
    /// back a wrong column and pushes up one that ignores the columns and lands on the right
    /// answer; from the `add-compare` SFT model that taught the policy to stop reading back its
    /// own digits (GRPO run 9, TRAINING.md). Here only the first wrong step is blamed, and a
    /// right answer reached through a wrong step earns nothing for its answer (with a pass/fail
    /// reward; a pair-wise one keeps its rewards and only the blame is confined).
    pub step_credit: bool,
    /// A negative advantage trains only the tokens that were the policy's greedy choice (argmax)
    /// at their position: the errors greedy decoding would make. A T = 1 failure is mostly an
    /// unlikely token, and pushing one down moves probability to other tokens through the shared
    /// weights (on `add` the greedy answer fell in every run); gated tokens count in the
    /// normalization as zero-gradient ones, like clipped tokens. Positive advantages train as before.
    /// With `step_credit` a failing reply is blamed on its first wrong token alone, when that token
    /// was the argmax: a greedy error, not a sampling accident or what follows from one.
    pub greedy_negatives: bool,
}

impl GrpoOptions {
    /// Settings for updates on logged data (no rollouts): the clip and loss as GRPO's defaults.
    pub fn for_offline(out: PathBuf, lr: f64, seed: u64) -> Self {
        GrpoOptions {
            out,
            steps: 0,
            prompts_per_step: 0,
            group: 0,
            lr,
            warmup: 0,
            max_tokens: 0,
            temperature: 1.0,
            eps_low: 0.2,
            eps_high: 0.28,
            kl: 0.0,
            scale_std: true,
            filter: true,
            mask_overlong: true,
            batch_tokens: 4096,
            rollout_batch: 1,
            clip: 1.0,
            seed,
            dtype: DType::F32,
            save_every: 0,
            sync_every: 0,
            quiet: false,
            lora: None,
            greedy_first: false,
            process_credit: false,
            step_credit: false,
            greedy_negatives: false,
        }
    }
}

/// One sampled reply with the tokens the update trains on.
pub struct Rollout {
    pub prompt_ids: Vec<u32>,
    pub completion_ids: Vec<u32>,
    pub reply: Reply,
    pub truncated: bool,
}

pub struct GrpoSummary {
    pub steps: u64,
    pub first_reward: f64,
    pub last_reward: f64,
    pub seconds: f64,
}

/// Where rollouts come from.
pub enum Sampler<'a> {
    /// The policy itself, batched in process.
    Local,
    /// An OpenAI-compatible server; `parallel` requests at once.
    Remote { backend: &'a dyn Backend, parallel: usize },
}

/// Whether reply `j` of a group is decoded greedily (`GrpoOptions::greedy_first`).
fn is_greedy(o: &GrpoOptions, j: usize) -> bool {
    o.greedy_first && j == 0
}

/// The sampling seed of reply `j` to item `i` in a step seeded `seed` (local and remote alike).
fn reply_seed(seed: u64, i: usize, j: usize) -> u64 {
    seed ^ ((i as u64) << 32) ^ (j as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn gen_params(o: &GrpoOptions, j: usize, seed: u64) -> GenParams {
    // Pure samples from the policy (no top-p/top-k truncation): the policy gradient assumes them.
    let temperature = if is_greedy(o, j) { 0.0 } else { o.temperature };
    let sampling = SamplingParams { temperature, top_p: 1.0, top_k: 0, seed: Some(seed), ..Default::default() };
    GenParams { sampling, max_tokens: Some(o.max_tokens), ..Default::default() }
}

/// `group` replies to each item, sampled by the policy in one batched generation.
pub fn rollouts_local(lm: &mut LoadedModel, items: &[&Item], o: &GrpoOptions, seed: u64) -> Result<Vec<Vec<Rollout>>> {
    let mut reqs = vec![];
    let mut prompts = vec![];
    for (i, it) in items.iter().enumerate() {
        let p = chat_prompt(&lm.text, lm.template.as_ref(), &it.messages, it.tools.as_ref(), true)?;
        for j in 0..o.group {
            let params = gen_params(o, j, reply_seed(seed, i, j));
            reqs.push(BatchRequest { prompt: p.ids.clone(), opened_think: p.opened_think, params });
        }
        prompts.push(p);
    }
    // Sampling uses the fused inference kernels; the update needs the differentiable path.
    let was = lm.model.differentiable;
    lm.model.differentiable = false;
    let gens = generate_batch(lm, &reqs, o.rollout_batch, &mut |_, _| {});
    lm.model.differentiable = was;
    let mut out: Vec<Vec<Rollout>> = (0..items.len()).map(|_| Vec::with_capacity(o.group)).collect();
    for (k, g) in gens.into_iter().enumerate() {
        let g = g?;
        let (i, p) = (k / o.group, &prompts[k / o.group]);
        let reply = reply_from_generation(&g, p.opened_think, items[i].tools.is_some())?;
        let mut completion_ids = g.tokens.clone();
        completion_ids.extend(g.eos_token);
        out[i].push(Rollout {
            prompt_ids: p.ids.clone(),
            completion_ids,
            reply,
            truncated: g.finish_reason == FinishReason::Length,
        });
    }
    Ok(out)
}

/// `group` replies to each item from an endpoint; their text is tokenized for the policy.
pub fn rollouts_remote(
    lm: &LoadedModel,
    backend: &dyn Backend,
    parallel: usize,
    items: &[&Item],
    o: &GrpoOptions,
    seed: u64,
) -> Result<Vec<Vec<Rollout>>> {
    let sampling = |j| Sampling {
        max_tokens: o.max_tokens,
        temperature: if is_greedy(o, j) { 0.0 } else { o.temperature },
        top_p: 1.0,
    };
    let jobs: Vec<(usize, usize, u64)> =
        (0..items.len()).flat_map(|i| (0..o.group).map(move |j| (i, j, reply_seed(seed, i, j)))).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<Result<Reply>>>> = jobs.iter().map(|_| Default::default()).collect();
    std::thread::scope(|sc| {
        for _ in 0..parallel.max(1).min(jobs.len()) {
            sc.spawn(|| loop {
                let k = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(&(i, j, s)) = jobs.get(k) else { break };
                let r = backend.chat(&items[i].messages, items[i].tools.as_ref(), &sampling(j), s);
                *results[k].lock().unwrap() = Some(r);
            });
        }
    });
    let end = lm.text.tokenizer.token_to_id("<|im_end|>").or(lm.eos_ids.first().copied());
    let mut out: Vec<Vec<Rollout>> = (0..items.len()).map(|_| vec![]).collect();
    for ((i, _, _), r) in jobs.iter().zip(results) {
        let reply = r.into_inner().unwrap().context("rollout was not run")??;
        let p = chat_prompt(&lm.text, lm.template.as_ref(), &items[*i].messages, items[*i].tools.as_ref(), true)?;
        // The prompt may open `<think>` itself; the reply's text then repeats it.
        let body = if p.opened_think { reply.text.strip_prefix("<think>").unwrap_or(&reply.text) } else { &reply.text };
        let mut completion_ids = lm.text.tokenizer.encode(body, false)?;
        let truncated = reply.finish_reason == "length";
        if !truncated {
            completion_ids.extend(end);
        }
        out[*i].push(Rollout { prompt_ids: p.ids, completion_ids, reply, truncated });
    }
    Ok(out)
}

/// The tokens the policy should write after the prompt of `item` when its worked solution is known
/// (`arith::solve` of the last user message), in each written form the generators have (`add` and
/// `add-compare` write subtractions differently): the assistant turn of the SFT data, tokenized as
/// SFT tokenized it (after the template's generation prompt, so a prompt that opens `<think>` is
/// handled). Empty for other prompts or a model without a chat template.
pub fn reference_completions(lm: &LoadedModel, item: &Item) -> Result<Vec<Vec<u32>>> {
    let Some(template) = lm.template.as_ref() else { return Ok(vec![]) };
    let Some(msgs) = item.messages.as_array() else { return Ok(vec![]) };
    let Some(last) = msgs.last().filter(|m| m["role"] == "user").and_then(|m| m["content"].as_str()) else {
        return Ok(vec![]);
    };
    let mut out: Vec<Vec<u32>> = vec![];
    for compared in [false, true] {
        let Some(ex) = nanbeige_eval::tasks::arith::solve(last, compared) else { continue };
        let mut conv = msgs.clone();
        conv.push(json!({"role": "assistant", "reasoning_content": ex.reasoning, "content": ex.content}));
        let (ids, mask) = crate::data::tokenize_chat(&lm.text, template, &Value::Array(conv), item.tools.as_ref())?;
        let reply: Vec<u32> = ids.into_iter().zip(mask).filter(|(_, m)| *m).map(|(t, _)| t).collect();
        if !out.contains(&reply) {
            out.push(reply);
        }
    }
    Ok(out)
}

/// Process credit for one failing reply: untrain (clear `mask` on) the completion tokens that
/// equal one of `references` from the start (the longest such run); `mask` covers prompt +
/// completion. Returns how many.
pub fn clear_verified_prefix(mask: &mut [bool], prompt_len: usize, completion: &[u32], references: &[Vec<u32>]) -> usize {
    let shared = |r: &Vec<u32>| completion.iter().zip(r).take_while(|(a, b)| a == b).count();
    let n = references.iter().map(shared).max().unwrap_or(0);
    for m in &mut mask[prompt_len..prompt_len + n] {
        *m = false;
    }
    n
}

/// First-step credit for one failing reply: train only the line where it first leaves the
/// worked solution (`references`), from that token through the end of its line (`ends_line`);
/// clear `mask` (prompt + completion) on the rest of the completion: the verified steps before and
/// what follows, which is written from a wrong state (a faithful read-back of a wrong column is
/// not the error). Returns how many completion tokens stay trained.
pub fn keep_first_wrong_step(
    mask: &mut [bool],
    prompt_len: usize,
    completion: &[u32],
    references: &[Vec<u32>],
    ends_line: impl Fn(u32) -> bool,
) -> usize {
    let start = clear_verified_prefix(mask, prompt_len, completion, references);
    let end = completion[start..].iter().position(|&t| ends_line(t)).map_or(completion.len(), |p| start + p + 1);
    for m in &mut mask[prompt_len + end..] {
        *m = false;
    }
    end - start
}

/// A training sequence: its tokens, which of them are the reply (trained), and its advantage.
pub struct Seq {
    pub ids: Vec<u32>,
    pub mask: Vec<bool>,
    pub adv: f32,
    /// 0 excludes the sequence from the loss (a masked overlong reply).
    pub weight: f32,
}

/// Rows of at most `batch_tokens` tokens (a longer sequence gets a row of its own), with the
/// advantage of each position's prediction.
fn pack(seqs: &[Seq], batch_tokens: usize) -> Vec<(Packed, Vec<f32>)> {
    let mut rows: Vec<(Packed, Vec<f32>)> = vec![];
    let mut cur = (Packed::default(), vec![]);
    for s in seqs {
        if !cur.0.is_empty() && cur.0.len() + s.ids.len() > batch_tokens {
            rows.push(std::mem::take(&mut cur));
        }
        let ex = crate::data::Example { ids: s.ids.clone(), mask: s.mask.clone(), line: 0 };
        let start = cur.0.len();
        cur.0.push(&ex);
        for w in &mut cur.0.weights[start..] {
            *w *= s.weight;
        }
        cur.1.extend(std::iter::repeat_n(s.adv, s.ids.len()));
    }
    if !cur.0.is_empty() {
        rows.push(cur);
    }
    rows
}

/// What one policy update did.
#[derive(Default)]
pub struct StepStats {
    pub trained_tokens: f64,
    pub loss: f64,
    /// Mean k3 KL per trained token (0 without a reference).
    pub kl: f64,
    pub grad_norm: f64,
    /// `--greedy-negatives`: trained positions with a negative advantage, and of them those gated.
    pub negative_tokens: f64,
    pub gated_tokens: f64,
}

/// One optimizer step of the clipped policy-gradient loss over `seqs`, normalized by their total
/// trained tokens, plus `kl` × the k3 KL to `reference`. Rows are accumulated, so memory is bounded
/// by `batch_tokens`. Nothing happens when no token is trained.
#[allow(clippy::too_many_arguments)]
pub fn policy_step(
    model: &Llama,
    opt: &mut AdamW,
    reference: Option<&Llama>,
    seqs: &[Seq],
    o: &GrpoOptions,
    lr: f64,
) -> Result<StepStats> {
    let rows = pack(seqs, o.batch_tokens);
    let total: f64 = rows.iter().map(|(r, _)| r.weights.iter().map(|&w| w as f64).sum::<f64>()).sum();
    let mut st = StepStats { trained_tokens: total, ..Default::default() };
    if total == 0.0 {
        return Ok(st);
    }
    let mut grads = GradAccum::new(opt);
    let mut kl_sum = 0.0;
    for (row, adv) in &rows {
        let logits = tempered(model.forward_packed(&row.ids, &row.positions, &row.segments)?, o.temperature)?;
        let logp = loss::token_logprobs(&logits, &row.targets)?;
        // One update per batch: the sampling policy is the current one, so old = logp.
        let old = logp.detach().to_vec1::<f32>()?;
        let weights = if o.greedy_negatives {
            let argmax = logits.argmax(candle_core::D::Minus1)?.flatten_all()?.to_vec1::<u32>()?;
            let gated = greedy_negative_weights(&row.weights, adv, &argmax, &row.targets);
            st.gated_tokens += row.weights.iter().zip(&gated).map(|(&a, &b)| (a - b) as f64).sum::<f64>();
            let negative = row.weights.iter().zip(adv).filter(|(_, &a)| a < 0.0);
            st.negative_tokens += negative.map(|(&w, _)| w as f64).sum::<f64>();
            gated
        } else {
            row.weights.clone()
        };
        let mut l = rl::clipped_policy_loss(&logp, &old, adv, &weights, o.eps_low, o.eps_high)?;
        if let (Some(r), true) = (reference, o.kl > 0.0) {
            let ref_lp = row_logprobs(r, row, o.temperature)?;
            let kl = rl::kl_k3_sum(&logp, &ref_lp, &row.weights)?;
            kl_sum += kl.to_scalar::<f32>()? as f64;
            l = (l + (kl * o.kl)?)?;
        }
        let l = (l / total)?;
        st.loss += l.to_scalar::<f32>()? as f64;
        grads.add(opt, &l.backward()?)?;
    }
    st.grad_norm = grads.clip(o.clip);
    opt.step(&grads.grads, lr)?;
    st.kl = kl_sum / total;
    Ok(st)
}

/// `--greedy-negatives`: the loss weights of a packed row with every negative-advantage position
/// whose target is not the policy's argmax there set to 0.
pub fn greedy_negative_weights(weights: &[f32], adv: &[f32], argmax: &[u32], targets: &[u32]) -> Vec<f32> {
    (0..weights.len()).map(|i| if adv[i] < 0.0 && argmax[i] != targets[i] { 0.0 } else { weights[i] }).collect()
}

/// Logits of the policy that sampled the rollouts: at temperature T the sampler draws from
/// softmax(z / T), so the update must score and differentiate that distribution, or replies drawn
/// at T < 1 are treated as if the T = 1 policy had produced them.
fn tempered(logits: Tensor, temperature: f32) -> Result<Tensor> {
    if temperature == 1.0 {
        return Ok(logits);
    }
    Ok((logits / temperature as f64)?)
}

/// Log-probs of a packed row's targets under `model` at the sampling temperature, without a graph
/// (reference policy).
fn row_logprobs(model: &Llama, row: &Packed, temperature: f32) -> Result<Vec<f32>> {
    let logits = tempered(model.forward_packed(&row.ids, &row.positions, &row.segments)?, temperature)?;
    Ok(loss::token_logprobs(&logits, &row.targets)?.detach().to_vec1::<f32>()?)
}

/// Run RL on `items` (drawn in a seeded order, reshuffled each epoch). The policy is `lm`, made
/// trainable here; `reference` (a second copy of the starting model) is needed when `o.kl > 0`.
pub fn train(
    lm: &mut LoadedModel,
    reference: Option<&LoadedModel>,
    origin: &Origin,
    items: &[Item],
    reward: &dyn GroupReward,
    sampler: Sampler,
    o: &GrpoOptions,
) -> Result<GrpoSummary> {
    if items.is_empty() {
        bail!("no prompts to train on");
    }
    if o.group < 2 {
        bail!("--group must be at least 2 (advantages compare replies to the same prompt)");
    }
    if o.kl > 0.0 && reference.is_none() {
        bail!("a KL penalty needs the reference model");
    }
    // RL learns little information per rollout; LoRA confines the update (and its noise) to a
    // low-rank subspace. Rollouts run through the adapters too, so they stay on-policy.
    let vars = match &o.lora {
        Some(spec) => spec.attach(&mut lm.model, o.seed)?,
        None => lm.model.trainable_vars()?,
    };
    let mut opt = AdamW::new(vars, 0.0)?;
    std::fs::create_dir_all(&o.out).with_context(|| format!("creating {}", o.out.display()))?;
    let log_path = o.out.join("metrics.jsonl");
    let mut log = MetricsLog::open(&log_path, 0)?;
    // Every reply with its reward and what went into it, one line per group: what the policy
    // wrote at each step, and what the reward made of it.
    let mut rollout_log = MetricsLog::open(&o.out.join("rollouts.jsonl"), 0)?;
    let t0 = Instant::now();
    let mut order = crate::data::Shuffled::new(items.len(), o.seed);
    let (mut first_reward, mut last_reward) = (f64::NAN, f64::NAN);
    for step in 0..o.steps {
        let ts = Instant::now();
        let mut batch = Vec::with_capacity(o.prompts_per_step);
        for _ in 0..o.prompts_per_step.max(1) {
            batch.push(&items[order.next_index()]);
        }
        let seed = o.seed ^ step.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let groups = match &sampler {
            Sampler::Local => rollouts_local(lm, &batch, o, seed)?,
            Sampler::Remote { backend, parallel } => rollouts_remote(lm, *backend, *parallel, &batch, o, seed)?,
        };
        let rollout_s = ts.elapsed().as_secs_f64();
        // Score, normalize within groups, filter.
        let mut seqs = vec![];
        let (mut rewards_all, mut passed, mut lens, mut truncated, mut kept) = (vec![], 0usize, vec![], 0usize, 0usize);
        let mut greedy_passed = 0usize;
        // Process credit: negative-advantage tokens trained and cleared; passing replies that are
        // exactly the worked solution (how well the reference matches what the policy writes).
        let (mut negative_tokens, mut cleared, mut passed_checked, mut passed_exact) = (0usize, 0usize, 0usize, 0usize);
        // First-step credit: right answers demoted for leaving the worked solution.
        let mut off_method = 0usize;
        let mut samples = vec![];
        for (it, group) in batch.iter().zip(&groups) {
            let replies: Vec<Reply> = group.iter().map(|r| r.reply.clone()).collect();
            let mut scored: Vec<Scored> = reward.score(it, &replies)?;
            let references =
                if o.process_credit || o.step_credit { reference_completions(lm, it)? } else { vec![] };
            // Only a pass/fail reward can fail a reply; under a pair-wise reward `passed` is the
            // watching checker's label, and step credit keeps only its blame on one line.
            if o.step_credit && reward.has_pass() && !references.is_empty() {
                for (s, r) in scored.iter_mut().zip(group) {
                    if s.passed && !references.iter().any(|x| x.starts_with(&r.completion_ids)) {
                        // The task's score of a fully correct reply is 1; the format part stays.
                        s.passed = false;
                        s.reward -= 1.0;
                        if let Some(m) = s.extra.as_object_mut() {
                            m.insert("off_method".into(), json!(true));
                        }
                        off_method += 1;
                    }
                }
            }
            let rewards: Vec<f64> = scored.iter().map(|s| s.reward).collect();
            rewards_all.extend(&rewards);
            passed += scored.iter().filter(|s| s.passed).count();
            greedy_passed += usize::from(o.greedy_first && scored.first().is_some_and(|s| s.passed));
            for r in group {
                lens.push(r.completion_ids.len() as f64);
                truncated += usize::from(r.truncated);
            }
            if samples.len() < 2 {
                samples.push(json!({"prompt": it.messages, "reply": group[0].reply.text, "reward": rewards[0]}));
            }
            let logged: Vec<Value> = group
                .iter()
                .zip(&scored)
                .map(|(r, s)| {
                    json!({"text": r.reply.text, "reward": s.reward, "passed": s.passed, "truncated": r.truncated,
                        "tokens": r.completion_ids.len(), "extra": s.extra})
                })
                .collect();
            rollout_log
                .write(&json!({"step": step, "id": it.id, "prompt": it.messages, "greedy_first": o.greedy_first,
                    "replies": logged}))?;
            let pass_flags: Vec<f64> = scored.iter().map(|s| f64::from(u8::from(s.passed))).collect();
            let useful = if !o.filter {
                true
            } else if reward.has_pass() {
                rl::informative(&pass_flags, 1.0)
            } else {
                rewards.iter().any(|r| (r - rewards[0]).abs() > 1e-9)
            };
            if !useful {
                continue;
            }
            kept += 1;
            for ((r, a), s) in group.iter().zip(rl::group_advantages(&rewards, o.scale_std)).zip(&scored) {
                let weight = if o.mask_overlong && r.truncated { 0.0 } else { 1.0 };
                let mut ids = r.prompt_ids.clone();
                ids.extend(&r.completion_ids);
                let mut mask: Vec<bool> = (0..ids.len()).map(|i| i >= r.prompt_ids.len()).collect();
                if !references.is_empty() {
                    let (prompt_len, completion) = (r.prompt_ids.len(), &r.completion_ids);
                    if a < 0.0 && weight > 0.0 {
                        negative_tokens += completion.len();
                        cleared += if o.step_credit {
                            // With greedy negatives only the first wrong token is blamed (when it was
                            // the argmax): the rest of its line follows from it, as the read-back does.
                            let ends_line = |t: u32| {
                                o.greedy_negatives
                                    || lm.text.tokenizer.decode(&[t], false).is_ok_and(|piece| piece.contains('\n'))
                            };
                            let trained =
                                keep_first_wrong_step(&mut mask, prompt_len, completion, &references, ends_line);
                            completion.len() - trained
                        } else {
                            clear_verified_prefix(&mut mask, prompt_len, completion, &references)
                        };
                    } else if s.passed {
                        passed_checked += 1;
                        passed_exact += usize::from(references.iter().any(|x| x.starts_with(&r.completion_ids)));
                    }
                }
                seqs.push(Seq { ids, mask, adv: a as f32, weight });
            }
        }
        let mean_reward = rewards_all.iter().sum::<f64>() / rewards_all.len().max(1) as f64;
        if first_reward.is_nan() {
            first_reward = mean_reward;
        }
        last_reward = mean_reward;
        // The update: one optimizer step over every kept sequence.
        let tu = Instant::now();
        let lr = if step < o.warmup { o.lr * (step + 1) as f64 / o.warmup as f64 } else { o.lr };
        let st = policy_step(&lm.model, &mut opt, reference.map(|r| &r.model), &seqs, o, lr)?;
        let update_s = tu.elapsed().as_secs_f64();
        let n = rewards_all.len().max(1) as f64;
        let mut rec = json!({
            "step": step, "reward": mean_reward, "pass_rate": passed as f64 / n,
            "length": lens.iter().sum::<f64>() / lens.len().max(1) as f64, "truncated": truncated as f64 / n,
            "groups": batch.len(), "groups_kept": kept, "trained_tokens": st.trained_tokens, "loss": st.loss,
            "kl": st.kl, "grad_norm": st.grad_norm,
            "rollout_s": rollout_s, "update_s": update_s, "elapsed_s": t0.elapsed().as_secs_f64(), "samples": samples,
        });
        if let (Some(Value::Object(m)), Value::Object(r)) = (reward.step_stats(), &mut rec) {
            r.extend(m);
        }
        if o.greedy_first {
            // What the policy answers by default on this step's prompts (the pass rate mixes it in).
            rec["greedy_pass_rate"] = json!(greedy_passed as f64 / batch.len() as f64);
        }
        if o.step_credit {
            rec["off_method"] = json!(off_method);
        }
        if o.greedy_negatives {
            rec["negatives_gated"] = json!(st.gated_tokens / st.negative_tokens.max(1.0));
        }
        if o.process_credit || o.step_credit {
            rec["process_cleared"] = json!(cleared as f64 / negative_tokens.max(1) as f64);
            rec["passed_exact"] = json!(passed_exact as f64 / passed_checked.max(1) as f64);
        }
        log.write(&rec)?;
        if !o.quiet {
            eprintln!(
                "step {}/{}  reward {mean_reward:.3}  pass {:.2}  len {:.0}  kept {kept}/{}  kl {:.4}  rollout {rollout_s:.0}s update {update_s:.0}s",
                step + 1,
                o.steps,
                passed as f64 / n,
                rec["length"].as_f64().unwrap_or(0.0),
                batch.len(),
                rec["kl"].as_f64().unwrap_or(0.0),
            );
            if let Some(g) = rec["greedy_pass_rate"].as_f64() {
                eprintln!("  greedy replies right: {g:.2}");
            }
            if let Some(c) = rec["process_cleared"].as_f64() {
                let exact = rec["passed_exact"].as_f64().unwrap_or(0.0);
                eprintln!("  process credit: {c:.2} of failing tokens untrained; passing replies exact {exact:.2}");
            }
            if let Some(g) = rec["negatives_gated"].as_f64() {
                eprintln!("  greedy negatives: {g:.2} of negative-advantage tokens were not the argmax, untrained");
            }
            if let Some(n) = rec["off_method"].as_u64() {
                eprintln!("  step credit: {n} right answers off the worked solution, failed");
            }
            if let Some(n) = rec["checked_pairs"].as_u64().filter(|&n| n > 0) {
                let pooled = rec["pooled_ranked"].as_f64().map(|p| format!(", pooled {p:.2}")).unwrap_or_default();
                let judged = rec["judge_ranked"].as_f64().unwrap_or(0.0);
                eprintln!("  checker's (right, wrong) pairs: {n}, judge ranked {judged:.2} right{pooled}");
            }
            if let Some(n) = rec["rm_pairs"].as_u64().filter(|&n| n > 0) {
                let acc = rec["rm_accuracy"].as_f64().unwrap_or(0.0);
                eprintln!("  reward model refreshed on {n} pairs, ranked {acc:.2} right before");
            }
        }
        if o.save_every > 0 && (step + 1) % o.save_every == 0 && step + 1 < o.steps {
            checkpoint::save_model_dir(&o.out, &lm.model, origin, o.dtype)?;
        }
        if matches!(sampler, Sampler::Remote { .. }) && o.sync_every > 0 && (step + 1) % o.sync_every == 0 {
            checkpoint::save_model_dir(&o.out.join("policy"), &lm.model, origin, o.dtype)?;
        }
    }
    checkpoint::save_model_dir(&o.out, &lm.model, origin, o.dtype)?;
    for (key, file, title) in [
        ("reward", "reward.svg", "mean reward"),
        ("pass_rate", "pass_rate.svg", "pass rate"),
        ("length", "length.svg", "reply length (tokens)"),
        ("kl", "kl.svg", "KL to the start"),
    ] {
        metrics::write_plot(&log_path, key, &o.out.join(file), title)?;
    }
    Ok(GrpoSummary { steps: o.steps, first_reward, last_reward, seconds: t0.elapsed().as_secs_f64() })
}
